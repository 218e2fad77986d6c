"""The proxy: Swift's API (and an S3 view) in front of the ring's storage nodes."""
