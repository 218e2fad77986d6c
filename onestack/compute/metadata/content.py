"""What a guest learns about itself: the OpenStack and EC2 metadata trees.

One builder for both ways a guest reads it: the metadata HTTP service
(``/openstack/<version>/...``, ``/<ec2 version>/meta-data/...``) and the
config drive (the same files under ``openstack/`` and ``ec2/`` on an ISO 9660
disk labelled ``config-2``).

The instance is a plain dict (what compute knows of the server):
``uuid``, ``name`` (display name), ``hostname``, ``project_id``,
``availability_zone``, ``launch_index``, ``metadata`` (server properties),
``public_keys`` (key name → OpenSSH key), ``user_data`` (base64 or None),
``instance_name`` (instance-0000002a), ``flavor_name``, ``reservation_id``,
``security_groups`` (names) and ``ports``: [{``id``, ``mac_address``,
``network_id``, ``mtu``, ``fixed_ips``: [{``ip_address``}], ``floating_ips``:
[addresses], ``vif_type``}].
"""

from __future__ import annotations

import base64
import json
import os
from typing import Any

OPENSTACK_VERSIONS = (
    "2012-08-10",
    "2013-04-04",
    "2013-10-17",
    "2015-10-15",
    "2016-06-30",
    "2016-10-06",
    "2017-02-22",
    "2018-08-27",
    "2020-10-14",
    "latest",
)
EC2_VERSIONS = (
    "1.0",
    "2007-01-19",
    "2007-03-01",
    "2007-08-29",
    "2007-10-10",
    "2007-12-15",
    "2008-02-01",
    "2008-09-01",
    "2009-04-04",
    "latest",
)


def user_data(instance: dict[str, Any]) -> bytes | None:
    """The decoded user data, or None when the server has none."""
    encoded = instance.get("user_data")
    if not encoded:
        return None
    try:
        return base64.b64decode(encoded)
    except ValueError:
        return str(encoded).encode()


def meta_data(instance: dict[str, Any]) -> dict[str, Any]:
    """``openstack/<version>/meta_data.json``."""
    keys = instance.get("public_keys") or {}
    return {
        "uuid": instance["uuid"],
        "meta": dict(instance.get("metadata") or {}),
        "public_keys": dict(keys),
        "keys": [{"name": name, "type": "ssh", "data": key} for name, key in keys.items()],
        "hostname": instance.get("hostname") or instance.get("name") or instance["uuid"],
        "name": instance.get("name") or "",
        "launch_index": int(instance.get("launch_index") or 0),
        "availability_zone": instance.get("availability_zone") or "nova",
        "random_seed": base64.b64encode(os.urandom(512)).decode(),
        "project_id": instance.get("project_id") or "",
        "devices": [],
        "dedicated_cpus": [],
    }


def network_data(instance: dict[str, Any]) -> dict[str, Any]:
    """``openstack/<version>/network_data.json``: links (the NICs) and their DHCP networks."""
    links: list[dict[str, Any]] = []
    networks: list[dict[str, Any]] = []
    for port in instance.get("ports") or []:
        link = "tap" + str(port["id"])[:11]
        links.append(
            {
                "id": link,
                "vif_id": port["id"],
                "type": port.get("vif_type") or "bridge",
                "mtu": port.get("mtu") or 1500,
                "ethernet_mac_address": port.get("mac_address"),
            }
        )
        for fixed in port.get("fixed_ips") or []:
            version = 6 if ":" in str(fixed.get("ip_address", "")) else 4
            networks.append(
                {
                    "id": f"network{len(networks)}",
                    "type": f"ipv{version}_dhcp",
                    "link": link,
                    "network_id": port.get("network_id"),
                }
            )
    return {"links": links, "networks": networks, "services": []}


def _first_ip(instance: dict[str, Any], key: str) -> str:
    for port in instance.get("ports") or []:
        if key == "floating_ips":
            for address in port.get("floating_ips") or []:
                return str(address)
        else:
            for fixed in port.get("fixed_ips") or []:
                address = str(fixed.get("ip_address", ""))
                if "." in address:
                    return address
    return ""


def ec2_metadata(instance: dict[str, Any]) -> dict[str, Any]:
    """The EC2 ``meta-data`` tree as nested dicts (leaves are strings)."""
    name = str(instance.get("instance_name") or "")
    number = name.rsplit("-", 1)[-1] if name.startswith("instance-") else "00000000"
    hostname = str(instance.get("hostname") or instance["uuid"])
    keys = instance.get("public_keys") or {}
    tree: dict[str, Any] = {
        "ami-id": "ami-00000001",
        "ami-launch-index": str(int(instance.get("launch_index") or 0)),
        "ami-manifest-path": "FIXME",
        "block-device-mapping": {"ami": "vda", "root": "/dev/vda"},
        "hostname": hostname,
        "instance-action": "none",
        "instance-id": f"i-{number}",
        "instance-type": str(instance.get("flavor_name") or ""),
        "local-hostname": hostname,
        "local-ipv4": _first_ip(instance, "fixed_ips"),
        "placement": {"availability-zone": instance.get("availability_zone") or "nova"},
        "public-hostname": hostname,
        "public-ipv4": _first_ip(instance, "floating_ips"),
        "reservation-id": str(instance.get("reservation_id") or ""),
        "security-groups": "\n".join(instance.get("security_groups") or ["default"]),
    }
    if keys:
        tree["public-keys"] = {
            f"{index}={name}": {"openssh-key": key}
            for index, (name, key) in enumerate(keys.items())
        }
    return tree


def openstack_files(instance: dict[str, Any]) -> dict[str, bytes]:
    """The files of one ``openstack/<version>/`` directory, by name."""
    files = {
        "meta_data.json": json.dumps(meta_data(instance)).encode(),
        "network_data.json": json.dumps(network_data(instance)).encode(),
        "vendor_data.json": b"{}",
        "vendor_data2.json": b"{}",
    }
    data = user_data(instance)
    if data is not None:
        files["user_data"] = data
    return files


def config_drive_files(instance: dict[str, Any]) -> dict[str, bytes]:
    """Every file of the config drive, by path relative to the drive's root."""
    files: dict[str, bytes] = {}
    openstack = openstack_files(instance)
    for version in OPENSTACK_VERSIONS:
        for name, data in openstack.items():
            files[f"openstack/{version}/{name}"] = data
    ec2 = json.dumps(ec2_metadata(instance)).encode()
    raw_user_data = user_data(instance)
    for version in ("2009-04-04", "latest"):
        files[f"ec2/{version}/meta-data.json"] = ec2
        if raw_user_data is not None:
            files[f"ec2/{version}/user-data"] = raw_user_data
    return files
