"""An S3 view of the object store: buckets are containers, keys are objects."""
