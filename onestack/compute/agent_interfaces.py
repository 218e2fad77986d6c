"""The compute agent's NIC hot-plug (``os-interface``), answered as bus calls.

Attach: bind the port to this host for the server (the network service sets
``device_id``, ``device_owner`` and the binding) and plug it into the guest; when the
driver fails the port is unbound again and the error travels back to the API, which
deletes a port it created. Detach: unplug it from the guest, then delete the port when
compute created it or unbind it when the user brought it.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any

from onestack.compute.payloads import spec_of
from onestack.compute.ports import vif_of

if TYPE_CHECKING:
    from onestack.compute.agent import ComputeAgent

log = logging.getLogger(__name__)


class InterfaceCalls:
    """The bus face of NIC hot-plug (mixed into the agent's handler)."""

    agent: ComputeAgent

    async def attach_interface(
        self, instance: dict[str, Any], port: dict[str, Any]
    ) -> dict[str, Any]:
        """Bind ``port`` (``{port_id, created, tag}``) here and plug it; its port record."""
        agent = self.agent
        spec = spec_of(instance)
        zone = spec.availability_zone or agent.config.default_availability_zone
        record = await agent.ports.bind(port, spec.uuid, agent.host, zone)
        if port.get("tag"):
            record["tag"] = port["tag"]
        try:
            await agent.driver.attach_interface(spec, vif_of(record))
        except Exception as exc:
            log.warning("attaching port %s to %s failed: %s", record["port_id"], spec.uuid, exc)
            with contextlib.suppress(Exception):
                await agent.driver.detach_interface(spec, vif_of(record))
            with contextlib.suppress(Exception):
                await agent.ports.unbind(record)
            raise
        return record

    async def detach_interface(self, instance: dict[str, Any], port: dict[str, Any]) -> None:
        """Unplug ``port`` (a record of the server's ports) and give it back."""
        spec = spec_of(instance)
        await self.agent.driver.detach_interface(spec, vif_of(port))
        await self.agent.ports.release([port], spec.uuid)
