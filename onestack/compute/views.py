"""Nova's JSON views of flavors and servers, per microversion."""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

from starlette.requests import Request

from onestack.compute.api.common import at_least, is_admin, version
from onestack.compute.models import Flavor, Instance
from onestack.compute.vm_states import status_of
from onestack.core.asgi.microversion import Version
from onestack.core.asgi.routing import service_root

# The microversions a server view depends on, parsed once.
VERSIONS = {
    text: Version.parse(text)
    for text in ("2.3", "2.9", "2.16", "2.19", "2.26", "2.47", "2.63", "2.73", "2.90", "2.96")
}


def iso_z(value: dt.datetime | None) -> str | None:
    """``2025-01-15T06:23:54Z`` (created/updated)."""
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value is not None else None


def iso_micro(value: dt.datetime | None) -> str | None:
    """``2025-01-15T06:24:03.000000`` (launched_at, terminated_at)."""
    return value.strftime("%Y-%m-%dT%H:%M:%S.%f") if value is not None else None


def links(request: Request, collection: str, ident: str) -> list[dict[str, str]]:
    root = service_root(request)
    return [
        {"rel": "self", "href": f"{root}/v2.1/{collection}/{ident}"},
        {"rel": "bookmark", "href": f"{root}/{collection}/{ident}"},
    ]


def embedded_flavor(flavor: Flavor, extra_specs: dict[str, str]) -> dict[str, Any]:
    """The copy of a flavor a server keeps (what it was booted or resized with)."""
    return {
        "original_id": flavor.flavorid,
        "original_name": flavor.name,
        "vcpus": flavor.vcpus,
        "ram": flavor.memory_mb,
        "disk": flavor.root_gb,
        "ephemeral": flavor.ephemeral_gb,
        "swap": flavor.swap,
        "rxtx_factor": flavor.rxtx_factor,
        "extra_specs": dict(extra_specs),
    }


def flavor_view(
    request: Request,
    flavor: Flavor,
    extra_specs: dict[str, str] | None = None,
    *,
    detail: bool = True,
) -> dict[str, Any]:
    """A flavor as ``/flavors`` shows it."""
    view: dict[str, Any] = {
        "id": flavor.flavorid,
        "name": flavor.name,
        "links": links(request, "flavors", flavor.flavorid),
    }
    if at_least(request, "2.55"):
        view["description"] = flavor.description
    if not detail:
        return view
    view.update(
        {
            "ram": flavor.memory_mb,
            "disk": flavor.root_gb,
            "vcpus": flavor.vcpus,
            "OS-FLV-EXT-DATA:ephemeral": flavor.ephemeral_gb,
            "OS-FLV-DISABLED:disabled": flavor.disabled,
            "os-flavor-access:is_public": flavor.is_public,
            "swap": flavor.swap if at_least(request, "2.75") else (flavor.swap or ""),
            "rxtx_factor": flavor.rxtx_factor,
        }
    )
    if at_least(request, "2.61") and extra_specs is not None:
        view["extra_specs"] = dict(extra_specs)
    return view


def host_id(project_id: str, host: str | None) -> str:
    """Nova's opaque host id: the same host looks the same only within one project."""
    if not host:
        return ""
    return hashlib.sha224((project_id + host).encode()).hexdigest()


def addresses(ports: list[dict[str, Any]], floating: dict[str, list[str]]) -> dict[str, Any]:
    """``{network name: [{version, addr, OS-EXT-IPS:type, OS-EXT-IPS-MAC:mac_addr}]}``."""
    found: dict[str, list[dict[str, Any]]] = {}
    for port in ports:
        entries = found.setdefault(port.get("network_name") or port["network_id"], [])
        for ip in port.get("fixed_ips", []):
            address = ip["ip_address"]
            entries.append(
                {
                    "version": 6 if ":" in address else 4,
                    "addr": address,
                    "OS-EXT-IPS:type": "fixed",
                    "OS-EXT-IPS-MAC:mac_addr": port["mac_address"],
                }
            )
        for address in floating.get(port["port_id"], []):
            entries.append(
                {
                    "version": 6 if ":" in address else 4,
                    "addr": address,
                    "OS-EXT-IPS:type": "floating",
                    "OS-EXT-IPS-MAC:mac_addr": port["mac_address"],
                }
            )
    return found


def server_view(
    request: Request,
    inst: Instance,
    metadata: dict[str, str],
    tags: list[str],
    *,
    floating: dict[str, list[str]] | None = None,
    host_status: str | None = None,
    admin: bool | None = None,
) -> dict[str, Any]:
    """A server as ``GET /servers/{id}`` and ``/servers/detail`` show it (``admin``: the
    caller's policy answer, when a list already asked it once)."""
    if admin is None:
        admin = is_admin(request)
    asked = version(request)

    def at_least(text: str) -> bool:
        return asked >= VERSIONS[text]

    flavor = inst.flavor
    if at_least("2.47"):
        flavor_part: dict[str, Any] = {
            "vcpus": flavor["vcpus"],
            "ram": flavor["ram"],
            "disk": flavor["disk"],
            "ephemeral": flavor.get("ephemeral", 0),
            "swap": flavor.get("swap", 0),
            "original_name": flavor["original_name"],
            "extra_specs": dict(flavor.get("extra_specs", {})),
        }
    else:
        flavor_part = {
            "id": flavor["original_id"],
            "links": links(request, "flavors", flavor["original_id"])[1:],
        }
    image: Any = ""
    if inst.image_ref:
        image = {"id": inst.image_ref, "links": links(request, "images", inst.image_ref)[1:]}
    status = status_of(inst.vm_state, inst.task_state)
    view: dict[str, Any] = {
        "id": inst.uuid,
        "name": inst.display_name,
        "status": status,
        "tenant_id": inst.project_id,
        "user_id": inst.user_id,
        "metadata": metadata,
        "hostId": host_id(inst.project_id, inst.host),
        "image": image,
        "flavor": flavor_part,
        "created": iso_z(inst.created_at),
        "updated": iso_z(inst.updated_at),
        "addresses": addresses(inst.ports or [], floating or {}),
        "accessIPv4": inst.access_ip_v4 or "",
        "accessIPv6": inst.access_ip_v6 or "",
        "links": links(request, "servers", inst.uuid),
        "OS-DCF:diskConfig": "MANUAL",
        "OS-EXT-AZ:availability_zone": inst.availability_zone or "",
        "config_drive": "True" if inst.config_drive else "",
        "key_name": inst.key_name,
        "OS-SRV-USG:launched_at": iso_micro(inst.launched_at),
        "OS-SRV-USG:terminated_at": iso_micro(inst.terminated_at),
        "OS-EXT-STS:task_state": inst.task_state,
        "OS-EXT-STS:vm_state": inst.vm_state,
        "OS-EXT-STS:power_state": inst.power_state,
        "os-extended-volumes:volumes_attached": [],
        "security_groups": [{"name": name} for name in (inst.security_groups or ["default"])],
    }
    if status in ("ACTIVE", "BUILD", "REBUILD", "RESIZE", "VERIFY_RESIZE", "MIGRATING"):
        view["progress"] = inst.progress if status != "ACTIVE" else 0
    if inst.vm_state == "error" and inst.fault:
        shown = dict(inst.fault)
        if not admin:
            shown.pop("details", None)
        view["fault"] = shown
    if admin:
        view["OS-EXT-SRV-ATTR:host"] = inst.host
        view["OS-EXT-SRV-ATTR:hypervisor_hostname"] = inst.node
        view["OS-EXT-SRV-ATTR:instance_name"] = inst.instance_name
        if at_least("2.3"):
            view.update(
                {
                    "OS-EXT-SRV-ATTR:reservation_id": inst.reservation_id,
                    "OS-EXT-SRV-ATTR:launch_index": inst.launch_index,
                    "OS-EXT-SRV-ATTR:kernel_id": "",
                    "OS-EXT-SRV-ATTR:ramdisk_id": "",
                    "OS-EXT-SRV-ATTR:hostname": inst.hostname,
                    "OS-EXT-SRV-ATTR:root_device_name": "/dev/vda",
                    "OS-EXT-SRV-ATTR:user_data": inst.user_data,
                }
            )
        if at_least("2.16") and host_status is not None:
            view["host_status"] = host_status
    elif at_least("2.90"):
        view["OS-EXT-SRV-ATTR:hostname"] = inst.hostname
    if at_least("2.9"):
        view["locked"] = inst.locked
    if at_least("2.19"):
        view["description"] = inst.display_description
    if at_least("2.26"):
        view["tags"] = tags
    if at_least("2.73"):
        view["locked_reason"] = inst.locked_reason
    if at_least("2.96"):
        view["pinned_availability_zone"] = (inst.system_metadata or {}).get("requested_zone")
    if at_least("2.63"):
        view["trusted_image_certificates"] = None
    return view


def server_summary(request: Request, inst: Instance) -> dict[str, Any]:
    """A server as ``GET /servers`` lists it."""
    return {
        "id": inst.uuid,
        "name": inst.display_name,
        "links": links(request, "servers", inst.uuid),
    }
