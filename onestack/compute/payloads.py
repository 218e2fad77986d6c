"""What the conductor sends agents about a server: the driver's ``InstanceSpec`` fields plus
the agent's own bookkeeping (ports, requested networks, security groups)."""

from __future__ import annotations

import dataclasses
from typing import Any

from onestack.compute.drivers.base import InstanceSpec
from onestack.compute.models import Instance

SPEC_FIELDS = {f.name for f in dataclasses.fields(InstanceSpec)}


def flavor_spec(flavor: dict[str, Any]) -> dict[str, Any]:
    """The sizes of an embedded flavor as ``InstanceSpec`` names them."""
    return {
        "vcpus": int(flavor["vcpus"]),
        "memory_mb": int(flavor["ram"]),
        "root_gb": int(flavor["disk"]),
        "ephemeral_gb": int(flavor.get("ephemeral", 0)),
        "swap_mb": int(flavor.get("swap") or 0),
        "flavor_extra_specs": dict(flavor.get("extra_specs", {})),
    }


def instance_payload(
    inst: Instance, metadata: dict[str, str] | None = None, flavor: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The bus form of a server for its agent (``flavor`` overrides the current one)."""
    spec = {
        "uuid": inst.uuid,
        "name": inst.instance_name,
        "hostname": inst.hostname,
        "display_name": inst.display_name,
        "project_id": inst.project_id,
        "user_id": inst.user_id,
        **flavor_spec(flavor or inst.flavor),
        "image_id": inst.image_ref or None,
        "image_meta": inst.image_meta or {},
        "availability_zone": inst.availability_zone,
        "key_name": inst.key_name,
        "public_keys": {inst.key_name: inst.key_data} if inst.key_name and inst.key_data else {},
        "user_data": inst.user_data,
        "metadata": metadata or {},
        "config_drive": inst.config_drive,
        "launch_index": inst.launch_index,
    }
    return {
        "spec": spec,
        "ports": list(inst.ports or []),
        "requested_networks": inst.requested_networks,
        "security_groups": list(inst.security_groups or []),
        "host": inst.host,
    }


def spec_of(payload: dict[str, Any]) -> InstanceSpec:
    """The driver's view of a bus payload."""
    return InstanceSpec(**{k: v for k, v in payload["spec"].items() if k in SPEC_FIELDS})
