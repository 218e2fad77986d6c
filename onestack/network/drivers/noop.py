"""The ``noop`` driver: API and IPAM only, for machines where the data plane cannot run."""

from __future__ import annotations

from typing import Any

from onestack.network.drivers.base import NetworkDriver


class NoopDriver(NetworkDriver):
    """Ports are ACTIVE at once and bound to nothing; any network type is accepted."""

    name = "noop"
    network_types = frozenset({"local", "flat", "vlan", "vxlan", "geneve"})

    async def bind_port(self, port: dict[str, Any], host: str) -> tuple[str, dict[str, Any]]:
        return "noop", {}

    async def port_status(self, port: dict[str, Any]) -> str:
        return "ACTIVE" if port.get("admin_state_up", True) else "DOWN"
