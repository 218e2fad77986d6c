"""What this host's kernel and tools offer the linuxbridge data plane, found by trying."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path

TOOLS = ("ip", "nft", "dnsmasq")


@dataclass(frozen=True)
class HostFeatures:
    """Results of the probes; reported in the agent's ``configurations``."""

    root: bool
    tools: bool
    bridges: bool
    vxlan: bool
    vlan: bool
    bridge_netfilter: bool

    def network_types(self) -> frozenset[str]:
        """The provider network types this host can build."""
        types = {"local", "flat"} if self.bridges else set()
        if self.vxlan:
            types.add("vxlan")
        if self.vlan:
            types.add("vlan")
        return frozenset(types)

    def as_dict(self) -> dict[str, bool]:
        return asdict(self)


def _quiet(*argv: str) -> bool:
    result = subprocess.run(argv, capture_output=True, check=False)
    return result.returncode == 0


def _try_link(kind_args: list[str], parent: str | None = None) -> bool:
    """Whether the kernel lets us create a link of this kind (removed again at once)."""
    name = f"osprobe{uuid.uuid4().hex[:6]}"
    argv = ["ip", "link", "add"]
    if parent:
        argv += ["link", parent]
    made = _quiet(*argv, "name", name, "type", *kind_args)
    if made:
        _quiet("ip", "link", "del", name)
    return made


@cache
def detect() -> HostFeatures:
    """Probe once per process: root, the tools, bridges, VXLAN, VLAN, bridge netfilter."""
    root = os.geteuid() == 0
    tools = all(shutil.which(tool) for tool in TOOLS)
    if not (root and tools):
        return HostFeatures(root, tools, False, False, False, False)
    bridges = _try_link(["bridge"])
    vxlan = _try_link(["vxlan", "id", "4242", "dstport", "4789"])
    vlan = False
    if bridges:
        parent = f"osprobe{uuid.uuid4().hex[:6]}"
        if _quiet("ip", "link", "add", "name", parent, "type", "bridge"):
            vlan = _try_link(["vlan", "id", "42"], parent=parent)
            _quiet("ip", "link", "del", parent)
    netfilter = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")
    return HostFeatures(root, tools, bridges, vxlan, vlan, netfilter.exists())


def linuxbridge_possible() -> bool:
    """Whether the linuxbridge driver can run here (the automatic choice of driver)."""
    return os.geteuid() == 0 and all(shutil.which(tool) for tool in TOOLS)
