"""Cinder's front-end QoS specs as QEMU throttle limits, and the block graph they make."""

from __future__ import annotations

import json
import logging

from onestack.compute.drivers.base import BlockDevice
from onestack.compute.drivers.qemu import volumes


def test_every_front_end_key_maps_to_its_qemu_limit():
    specs = {
        "total_bytes_sec": "1000",
        "read_bytes_sec": "1001",
        "write_bytes_sec": "1002",
        "total_iops_sec": "10",
        "read_iops_sec": "11",
        "write_iops_sec": "12",
        "total_bytes_sec_max": "2000",
        "read_iops_sec_max": "20",
        "write_bytes_sec_max_length": "3",
        "total_iops_sec_max_length": "4",
        "size_iops_sec": "4096",
    }
    assert volumes.throttle_limits(specs) == {
        "bps-total": 1000,
        "bps-read": 1001,
        "bps-write": 1002,
        "iops-total": 10,
        "iops-read": 11,
        "iops-write": 12,
        "bps-total-max": 2000,
        "iops-read-max": 20,
        "bps-write-max-length": 3,
        "iops-total-max-length": 4,
        "iops-size": 4096,
    }
    assert len(volumes.THROTTLE_LIMITS) == 19


def test_unknown_keys_and_bad_values_are_logged_and_left_out(caplog):
    specs = {
        "total_iops_sec": "100",
        "total_iops_sec_per_gb": "5",
        "read_bytes_sec": "fast",
        "write_iops_sec": "-1",
        "read_iops_sec": "0",
    }
    with caplog.at_level(logging.INFO, logger=volumes.__name__):
        assert volumes.throttle_limits(specs, "v1") == {"iops-total": 100}
    logged = caplog.text
    for key in ("total_iops_sec_per_gb", "read_bytes_sec", "write_iops_sec"):
        assert f"QoS spec {key}=" in logged
    assert "read_iops_sec=" not in logged  # zero is Cinder's "no limit", not an error


def _device(qos: dict[str, str], access_mode: str = "rw") -> BlockDevice:
    data = {"path": "/v/vol", "format": "qcow2", "access_mode": access_mode, "qos_specs": qos}
    info = {"driver_volume_type": "file", "data": data}
    return BlockDevice(
        volume_id="0123456789abcdef0123", mountpoint="/dev/vdb", connection_info=info
    )


def test_a_volume_with_limits_sits_under_a_throttle_filter_on_the_command_line():
    plugged = volumes.Plugged.fresh(_device({"total_iops_sec": "50"}, access_mode="ro"))
    args = plugged.command_args()
    node = plugged.node
    assert args[0::2][:3] == ["-object", "-blockdev", "-blockdev"]
    group, fmt, throttle = (json.loads(a) for a in args[1:6:2])
    assert group == {"qom-type": "throttle-group", "id": f"{node}-qos",
                     "limits": {"iops-total": 50}}  # fmt: skip
    assert (fmt["node-name"], fmt["driver"], fmt["read-only"]) == (f"{node}-fmt", "qcow2", True)
    assert throttle == {"driver": "throttle", "node-name": node, "throttle-group": f"{node}-qos",
                        "file": f"{node}-fmt", "read-only": True}  # fmt: skip
    assert args[6] == "-device" and f"drive={node}," in args[7]


def test_a_volume_without_limits_is_its_format_node_alone():
    plugged = volumes.Plugged.fresh(_device({"total_iops_sec_per_gb": "5"}))
    args = plugged.command_args()
    assert args[0::2] == ["-blockdev", "-device"]
    assert json.loads(args[1])["node-name"] == plugged.node
