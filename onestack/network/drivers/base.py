"""The network data-plane driver contract: what makes ports real on hosts.

``noop`` (API and IPAM only) implements it now; ``linuxbridge`` (bridges,
namespaces, nftables, dnsmasq) will implement the same calls.
"""

from __future__ import annotations

import abc
from typing import Any


class NetworkDriver(abc.ABC):
    """Wires networks and ports on this host."""

    name: str
    # Network types this driver can provide; an API request for another type is a 400.
    network_types: frozenset[str]

    @abc.abstractmethod
    async def bind_port(self, port: dict[str, Any], host: str) -> tuple[str, dict[str, Any]]:
        """Bind a port to ``host``; returns (vif_type, vif_details) for the compute agent."""

    @abc.abstractmethod
    async def port_status(self, port: dict[str, Any]) -> str:
        """The status a port has once the data plane knows it (ACTIVE or DOWN)."""
