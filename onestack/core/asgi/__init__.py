"""ASGI helpers shared by every service's API."""
