"""The exact ip/bridge commands that build a vxlan network's device and its flood list."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from onestack.network.drivers.linuxbridge import bridges, commands, firewall


class Host:
    """Stands in for the tools: records each command, answers the show commands."""

    def __init__(self, links: list[dict[str, Any]], fdb: list[dict[str, Any]]):
        self.shown = {"link": json.dumps(links), "fdb": json.dumps(fdb)}
        self.ran: list[tuple[str, ...]] = []

    async def run(self, *argv: str, stdin: str | None = None, check: bool = True) -> str:
        if "show" in argv:
            return self.shown["fdb" if "fdb" in argv else "link"]
        self.ran.append(argv)
        return ""


@pytest.fixture
def host(monkeypatch: pytest.MonkeyPatch) -> Host:
    fake = Host([], [])
    monkeypatch.setattr(commands, "run", fake.run)
    return fake


def test_a_missing_device_is_created_without_learning_and_enslaved(host: Host) -> None:
    name = asyncio.run(bridges.ensure_vxlan(1001, "192.0.2.1", "brqx", 1450))
    assert name == "vxlan-1001" and len(name) <= 15
    assert host.ran == [
        ("ip", "link", "del", "vxlan-1001"),
        ("ip", "link", "add", "vxlan-1001", "type", "vxlan", "id", "1001", "local", "192.0.2.1",
         "dstport", "4789", "nolearning"),
        ("ip", "link", "set", "vxlan-1001", "mtu", "1450", "master", "brqx", "up"),
    ]  # fmt: skip


def test_a_device_with_another_local_address_is_rebuilt(host: Host) -> None:
    data = {"id": 5, "local": "192.0.2.1"}
    host.shown["link"] = json.dumps(
        [{"ifname": "vxlan-5", "linkinfo": {"info_kind": "vxlan", "info_data": data}}]
    )
    asyncio.run(bridges.ensure_vxlan(5, "192.0.2.1", "brqx", 1450, netns="h1"))
    assert host.ran == [("ip", "-n", "h1", "link", "set", "vxlan-5", "mtu", "1450", "master",
                         "brqx", "up")]  # fmt: skip
    host.ran.clear()
    asyncio.run(bridges.ensure_vxlan(5, "192.0.2.9", "brqx", 1450))
    assert host.ran[0] == ("ip", "link", "del", "vxlan-5")
    assert "192.0.2.9" in host.ran[1]


def test_flood_entries_follow_the_peers(host: Host) -> None:
    zero = bridges.FLOOD_MAC
    host.shown["fdb"] = json.dumps([
        {"mac": zero, "dst": "192.0.2.2", "flags": ["self"]},
        {"mac": zero, "dst": "192.0.2.3", "flags": ["self"]},
        {"mac": "fa:16:3e:00:00:01", "flags": ["master"]},
    ])  # fmt: skip
    asyncio.run(bridges.set_flood_peers("vxlan-5", ["192.0.2.3", "192.0.2.4"]))
    assert host.ran == [
        ("bridge", "fdb", "del", zero, "dev", "vxlan-5", "dst", "192.0.2.2"),
        ("bridge", "fdb", "append", zero, "dev", "vxlan-5", "dst", "192.0.2.4"),
    ]


def test_the_networks_own_ports_stay_off_the_tunnels() -> None:
    ruleset = firewall.overlay_ruleset(["fa:16:3e:00:00:02", "fa:16:3e:00:00:01"], "t1")
    macs = "{ fa:16:3e:00:00:01, fa:16:3e:00:00:02 }"
    assert f'iifname "vxlan-*" ether saddr {macs} drop' in ruleset
    assert f'oifname "vxlan-*" ether saddr {macs} drop' in ruleset
    assert firewall.overlay_ruleset([], "t1") == (
        "table bridge onestack_overlay_t1\ndelete table bridge onestack_overlay_t1\n"
    )
