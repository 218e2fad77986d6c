"""The ``linuxbridge`` data plane: bridges, namespaces, nftables and dnsmasq on each host.

The API side (:class:`LinuxBridgeDriver`) binds ports and says which network
types this host can build; the agent (onestack/network/agent.py) builds them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from onestack.network.drivers.base import NetworkDriver
from onestack.network.drivers.linuxbridge.bridges import bridge_name
from onestack.network.drivers.linuxbridge.features import HostFeatures, detect


class LinuxBridgeDriver(NetworkDriver):
    """Ports are bridged taps; they go ACTIVE when an agent sees them wired."""

    name = "linuxbridge"

    def __init__(
        self,
        features: HostFeatures | None = None,
        agent_hosts: Callable[[], Awaitable[set[str]]] | None = None,
    ):
        self.features = features or detect()
        self.network_types = self.features.network_types()
        self.agent_hosts = agent_hosts

    async def bind_port(self, port: dict[str, Any], host: str) -> tuple[str, dict[str, Any]]:
        if self.agent_hosts is not None and host not in await self.agent_hosts():
            # No agent wires that host (a simulated compute host): nothing to wait for.
            return "noop", {}
        return "bridge", {"bridge_name": bridge_name(port["network_id"]), "port_filter": True}

    async def port_status(self, port: dict[str, Any]) -> str:
        if port.get("binding:vif_type") == "noop":
            return "ACTIVE" if port.get("admin_state_up", True) else "DOWN"
        # Only the agent's report makes a port ACTIVE; a rebind keeps what it said.
        return str(port.get("status") or "DOWN")
