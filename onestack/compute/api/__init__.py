"""The Nova v2.1 API, one module per resource."""
