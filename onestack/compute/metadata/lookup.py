"""The metadata service's view of a server, read from the compute database."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from onestack.compute.metadata import InstanceLookup
from onestack.compute.models import Instance, InstanceMetadata
from onestack.core.db import Database


def instance_dict(inst: Instance, metadata: dict[str, str]) -> dict[str, Any]:
    """The instance dict of ``metadata.content`` for a server row."""
    return {
        "uuid": inst.uuid,
        "name": inst.display_name,
        "hostname": inst.hostname or inst.display_name,
        "project_id": inst.project_id,
        "availability_zone": inst.availability_zone,
        "launch_index": inst.launch_index,
        "metadata": metadata,
        "public_keys": {inst.key_name: inst.key_data} if inst.key_name and inst.key_data else {},
        "user_data": inst.user_data,
        "instance_name": inst.instance_name,
        "flavor_name": (inst.flavor or {}).get("name", ""),
        "reservation_id": inst.reservation_id,
        "security_groups": list(inst.security_groups or []),
        "ports": [
            {
                "id": port["port_id"],
                "mac_address": port.get("mac_address"),
                "network_id": port.get("network_id"),
                "mtu": port.get("mtu"),
                "vif_type": port.get("vif_type"),
                "fixed_ips": port.get("fixed_ips") or [],
                "floating_ips": port.get("floating_ips") or [],
            }
            for port in inst.ports or []
        ],
    }


def database_lookup(db: Database) -> InstanceLookup:
    """Looks servers up (not deleted ones) in the compute database ``db``."""

    async def lookup(uuid: str) -> dict[str, Any] | None:
        async with db.session() as session:
            inst = (
                await session.execute(
                    select(Instance).where(Instance.uuid == uuid, Instance.deleted.is_(False))
                )
            ).scalar_one_or_none()
            if inst is None:
                return None
            rows = (
                await session.execute(
                    select(InstanceMetadata).where(InstanceMetadata.instance_uuid == uuid)
                )
            ).scalars()
            return instance_dict(inst, {row.key: row.value for row in rows})

    return lookup
