"""The backup agent: volumes into object storage in compressed, hashed chunks, and back."""
