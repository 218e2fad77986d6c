"""Hypervisor drivers behind the compute driver contract (``base.py``)."""
