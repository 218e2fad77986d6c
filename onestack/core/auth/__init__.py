"""Authentication context, token middleware and policy shared by every service."""
