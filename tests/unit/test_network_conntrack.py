"""Which ports' tracked connections the agent cuts when the security groups change, and the
conntrack commands that cut them."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import pytest

from onestack.network.drivers.linuxbridge import commands, conntrack

ICMP = {"direction": "ingress", "ethertype": "IPv4", "protocol": "icmp"}
FROM_WEB = {"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
            "port_range_min": 22, "port_range_max": 22, "remote_group_id": "web"}  # fmt: skip


def port(ident: str, address: str, groups: list[str], secured: bool = True) -> dict[str, Any]:
    return {
        "id": ident, "fixed_ips": [{"ip_address": address}], "security_groups": groups,
        "port_security_enabled": secured, "device_owner": "compute:nova",
    }  # fmt: skip


def cut(before: tuple[list[Any], dict[str, Any]], after: tuple[list[Any], dict[str, Any]]) -> Any:
    return conntrack.narrowed(conntrack.allowances(*before), conntrack.allowances(*after))


def test_a_removed_rule_cuts_the_ports_of_its_group() -> None:
    ports = [port("a", "10.0.0.5", ["sg"]), port("b", "10.0.0.6", ["other"])]
    groups = {"sg": {"rules": [ICMP]}, "other": {"rules": [ICMP]}}
    assert cut((ports, groups), (ports, {**groups, "sg": {"rules": []}})) == ["10.0.0.5"]


def test_added_rules_and_new_ports_cut_nothing() -> None:
    ports = [port("a", "10.0.0.5", ["sg"])]
    before = {"sg": {"rules": [ICMP]}}
    after = {"sg": {"rules": [ICMP, FROM_WEB]}, "web": {"members": ["10.0.0.9"]}}
    assert cut((ports, before), (ports, after)) == []
    assert cut(([], before), (ports, before)) == []


def test_a_group_taken_off_the_port_or_port_security_turned_on_cuts_it() -> None:
    groups = {"sg": {"rules": [ICMP]}}
    with_group = [port("a", "10.0.0.5", ["sg"])]
    assert cut((with_group, groups), ([port("a", "10.0.0.5", [])], groups)) == ["10.0.0.5"]
    unsecured = [port("a", "10.0.0.5", ["sg"], secured=False)]
    assert cut((unsecured, groups), (with_group, groups)) == ["10.0.0.5"]
    # Turning it off only widens what passes.
    assert cut((with_group, groups), (unsecured, groups)) == []


def test_an_address_leaving_a_remote_group_cuts_the_ports_that_referred_to_it() -> None:
    ports = [port("a", "10.0.0.5", ["sg"]), port("b", "10.0.0.6", ["plain"])]
    groups = {
        "sg": {"rules": [FROM_WEB]},
        "plain": {"rules": [ICMP]},
        "web": {"members": ["10.0.0.9", "10.0.0.10"]},
    }
    grown = {**groups, "web": {"members": ["10.0.0.9", "10.0.0.10", "10.0.0.11"]}}
    shrunk = {**groups, "web": {"members": ["10.0.0.10"]}}
    assert cut((ports, groups), (ports, grown)) == []
    assert cut((ports, groups), (ports, shrunk)) == ["10.0.0.5"]


def test_forget_deletes_both_directions_per_family_and_namespace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ran: list[tuple[str, ...]] = []

    async def run(*argv: str, stdin: str | None = None, check: bool = True) -> str:
        assert not check  # no entry to delete is not an error
        ran.append(argv)
        return ""

    monkeypatch.setattr(commands, "run", run)
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/sbin/{name}")
    asyncio.run(conntrack.forget(["2001:db8::5", "10.0.0.5", "10.0.0.5"]))
    assert ran == [
        ("conntrack", "-D", "-f", "ipv4", "--orig-src", "10.0.0.5"),
        ("conntrack", "-D", "-f", "ipv4", "--orig-dst", "10.0.0.5"),
        ("conntrack", "-D", "-f", "ipv6", "--orig-src", "2001:db8::5"),
        ("conntrack", "-D", "-f", "ipv6", "--orig-dst", "2001:db8::5"),
    ]
    ran.clear()
    # A router's floating IP: connections DNATed to it, and those SNATed to it (replies).
    asyncio.run(conntrack.forget_floating({"203.0.113.7"}, "qrouter-r1"))
    inside = ("ip", "netns", "exec", "qrouter-r1", "conntrack", "-D", "-f", "ipv4")
    assert ran == [(*inside, "--orig-dst", "203.0.113.7"), (*inside, "--reply-dst", "203.0.113.7")]


def test_allowances_survive_a_restart(tmp_path: Path) -> None:
    ports = [port("a", "10.0.0.5", ["sg"]), port("b", "10.0.0.6", ["sg"], secured=False)]
    groups = {"sg": {"rules": [ICMP, FROM_WEB]}, "web": {"members": ["10.0.0.9"]}}
    kept = conntrack.allowances(ports, groups)
    kept.save(tmp_path / "network" / "allowances.json")
    loaded = conntrack.Allowances.load(tmp_path / "network" / "allowances.json")
    assert loaded == kept
    # A rule removed while the agent was down still cuts the flows once it is back.
    assert conntrack.narrowed(
        loaded, conntrack.allowances(ports, {**groups, "sg": {"rules": [ICMP]}})
    ) == ["10.0.0.5"]
    assert conntrack.Allowances.load(tmp_path / "missing.json") == conntrack.Allowances()
