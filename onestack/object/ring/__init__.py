"""Rings: where each partition of the account, container and object namespaces lives."""

from onestack.object.ring.builder import Device, RingBuilder
from onestack.object.ring.ring import Ring, RingSet

__all__ = ["Device", "Ring", "RingBuilder", "RingSet"]
