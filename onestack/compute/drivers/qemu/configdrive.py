"""The config drive: an ISO 9660 disk labelled ``config-2`` with the metadata files.

The files are those of ``onestack.compute.metadata.content`` (the metadata
service serves the same ones), written with genisoimage as upstream does
(Rock Ridge and Joliet names, lower case and dots kept).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from onestack.compute.drivers.base import InstanceSpec, Vif
from onestack.compute.drivers.qemu.disks import run
from onestack.compute.metadata import content


def instance_dict(instance: InstanceSpec, vifs: list[Vif]) -> dict[str, Any]:
    """The metadata view of a server the driver knows (see ``metadata.content``)."""
    return {
        "uuid": instance.uuid,
        "name": instance.display_name,
        "hostname": instance.hostname,
        "project_id": instance.project_id,
        "availability_zone": instance.availability_zone,
        "launch_index": instance.launch_index,
        "metadata": instance.metadata,
        "public_keys": instance.public_keys,
        "user_data": instance.user_data,
        "instance_name": instance.name,
        "ports": [
            {
                "id": vif.port_id,
                "mac_address": vif.mac_address,
                "network_id": vif.network_id,
                "mtu": vif.mtu,
                "vif_type": vif.vif_type,
                "fixed_ips": vif.fixed_ips,
            }
            for vif in vifs
        ],
    }


async def build(instance: InstanceSpec, vifs: list[Vif], output: Path) -> None:
    """Write the config drive ISO of ``instance`` to ``output``."""
    files = content.config_drive_files(instance_dict(instance, vifs))
    with tempfile.TemporaryDirectory(prefix="configdrive-", dir=output.parent) as tmp:
        root = Path(tmp)
        for relative, data in files.items():
            path = root / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        await run(
            "genisoimage",
            "-o",
            str(output),
            "-ldots",
            "-allow-lowercase",
            "-allow-multidot",
            "-l",
            "-publisher",
            "onestack",
            "-quiet",
            "-J",
            "-r",
            "-V",
            "config-2",
            str(root),
        )
