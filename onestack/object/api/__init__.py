"""Swift's API v1: one module per resource, plus the features Swift builds as middleware."""
