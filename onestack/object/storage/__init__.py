"""Storage nodes: object files, container and account databases, and the node API over them."""
