"""A server's ports through the network API: created or bound for the host it lands on,
turned into the driver's ``Vif``s, unbound or deleted when it leaves."""

from __future__ import annotations

import logging
from typing import Any

from onestack.compute.drivers.base import Vif
from onestack.core.client import ServiceClient

log = logging.getLogger(__name__)


class PortError(Exception):
    """The network service refused a port operation; the message says why."""


def tap_name(port_id: str) -> str:
    """The tap device the data plane expects for a port."""
    return f"tap{port_id[:11]}"


def vif_of(record: dict[str, Any]) -> Vif:
    """The driver's view of a port record."""
    return Vif(
        port_id=record["port_id"],
        mac_address=record["mac_address"],
        network_id=record["network_id"],
        vif_type=record.get("vif_type") or "noop",
        details=record.get("vif_details") or {},
        fixed_ips=record.get("fixed_ips") or [],
        mtu=int(record.get("mtu") or 1500),
        devname=tap_name(record["port_id"]),
    )


class PortBinder:
    """Creates, binds, unbinds and deletes a server's ports with the service account."""

    def __init__(self, client: ServiceClient):
        self.client = client
        self._network_names: dict[str, tuple[str, int]] = {}

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self.client.request("network", method, path, **kwargs)
        if response.status_code >= 400:
            try:
                message = response.json()["NeutronError"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text[:200]
            raise PortError(f"{method} {path}: {message}")
        return response.json() if response.content else None

    async def _network(self, network_id: str) -> tuple[str, int]:
        if network_id not in self._network_names:
            net = (await self._call("GET", f"/v2.0/networks/{network_id}"))["network"]
            self._network_names[network_id] = (net.get("name") or network_id, net.get("mtu", 1500))
        return self._network_names[network_id]

    async def _record(self, port: dict[str, Any], created: bool) -> dict[str, Any]:
        name, mtu = await self._network(port["network_id"])
        return {
            "port_id": port["id"],
            "network_id": port["network_id"],
            "network_name": name,
            "mac_address": port["mac_address"],
            "fixed_ips": port.get("fixed_ips", []),
            "vif_type": port.get("binding:vif_type", "noop"),
            "vif_details": port.get("binding:vif_details", {}),
            "mtu": mtu,
            "created": created,
        }

    async def _security_group_ids(self, names: list[str], project_id: str) -> list[str] | None:
        if not names or names == ["default"]:
            return None
        ids = []
        for name in names:
            found = await self._call(
                "GET", "/v2.0/security-groups", params={"name": name, "project_id": project_id}
            )
            groups = found["security_groups"]
            if not groups:
                raise PortError(f"Security group {name} not found for project {project_id}.")
            ids.append(groups[0]["id"])
        return ids

    async def allocate(
        self,
        server_uuid: str,
        project_id: str,
        host: str,
        zone: str,
        requested: Any,
        security_groups: list[str],
        existing: list[dict[str, Any]],
    ) -> list[dict[str, Any]]:
        """Ports for a server on ``host``: existing ones rebound, requested ones created or
        bound. On failure the ports made here are removed again before raising."""
        if existing:
            return [await self.bind(record, server_uuid, host, zone) for record in existing]
        if not isinstance(requested, list):
            return []
        made: list[dict[str, Any]] = []
        try:
            sg_ids = await self._security_group_ids(security_groups, project_id)
            for item in requested:
                if item.get("port"):
                    record = {"port_id": item["port"], "created": False}
                    made.append(await self.bind(record, server_uuid, host, zone))
                    continue
                body: dict[str, Any] = {
                    "network_id": item["uuid"],
                    "device_id": server_uuid,
                    "device_owner": f"compute:{zone}",
                    "binding:host_id": host,
                    "tenant_id": project_id,
                }
                if item.get("fixed_ip"):
                    body["fixed_ips"] = [{"ip_address": item["fixed_ip"]}]
                if sg_ids:
                    body["security_groups"] = sg_ids
                port = (await self._call("POST", "/v2.0/ports", json={"port": body}))["port"]
                made.append(await self._record(port, created=True))
        except Exception:
            await self.release(made, server_uuid)
            raise
        return made

    async def bind(
        self, record: dict[str, Any], server_uuid: str, host: str, zone: str
    ) -> dict[str, Any]:
        """Bind a port to the server on ``host``; its refreshed record."""
        body = {
            "device_id": server_uuid,
            "device_owner": f"compute:{zone}",
            "binding:host_id": host,
        }
        port = (await self._call("PUT", f"/v2.0/ports/{record['port_id']}", json={"port": body}))[
            "port"
        ]
        return await self._record(port, created=bool(record.get("created")))

    async def unbind(self, record: dict[str, Any]) -> None:
        """Clear the port's binding (a port the user passed in, or a shelved server's)."""
        body = {"device_id": "", "device_owner": "", "binding:host_id": ""}
        await self._call("PUT", f"/v2.0/ports/{record['port_id']}", json={"port": body})

    async def release(self, records: list[dict[str, Any]], server_uuid: str) -> None:
        """Delete the ports compute created and unbind the ones passed in; a port already
        gone is fine."""
        for record in records:
            try:
                if record.get("created"):
                    await self._call("DELETE", f"/v2.0/ports/{record['port_id']}")
                else:
                    await self.unbind(record)
            except PortError as exc:
                log.info("port %s of %s: %s", record["port_id"], server_uuid, exc)

    async def unbind_host(self, records: list[dict[str, Any]]) -> None:
        """Keep the ports but bound to no host (a shelved-offloaded server)."""
        for record in records:
            body = {"binding:host_id": ""}
            try:
                await self._call("PUT", f"/v2.0/ports/{record['port_id']}", json={"port": body})
            except PortError as exc:
                log.info("port %s: %s", record["port_id"], exc)
