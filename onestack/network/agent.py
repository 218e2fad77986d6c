"""The network agent of one host: builds the linuxbridge data plane the service describes.

It consumes ``sync`` (fanned out on ``network-agents``, or sent to
``network-agent.<host>``), asks ``network-reports`` for the desired state and
reconciles the host to it: bridges, the external uplink, DHCP namespaces with
dnsmasq and the metadata proxy, router namespaces with NAT, and the security-group
tables; whatever carries our names but is no longer wanted is removed. It watches
its bridges for taps and reports ports wired (ACTIVE) or gone (DOWN), and sends a
heartbeat with what it detected on the host. It never touches the database.
Runs inside ``onestack up`` or alone: ``onestack agent network --host H``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import json
import logging
import shutil
import socket
import time
from typing import Any
from urllib.parse import urlsplit

from onestack.core.asgi.errors import APIError
from onestack.core.bus.base import Bus, Consumer
from onestack.core.client import ServiceClient
from onestack.core.config import Settings
from onestack.core.heartbeat import PeriodicTask
from onestack.network.drivers.linuxbridge import (
    bridges,
    commands,
    conntrack,
    dhcp,
    firewall,
    routers,
)
from onestack.network.drivers.linuxbridge.features import detect
from onestack.network.drivers.linuxbridge.metadata import MetadataProxy
from onestack.network.topology import AGENTS, DHCP_OWNER, REPORTS, agent_topic

log = logging.getLogger(__name__)

ROUTER_OWNERS = (routers.GATEWAY_OWNER, routers.INTERFACE_OWNER)
COALESCE = 0.02
FULL_RESYNC = 300.0
SLOW_SYNC = 1.0


def metadata_secret(settings: Settings) -> str:
    """The secret shared with compute's metadata service (see the contract)."""
    given = str(getattr(settings, "metadata_secret", "") or "")
    if given:
        return given
    from onestack.cloud import read_or_create_secret

    return read_or_create_secret(settings.data_dir / "metadata-secret")


class NetworkAgent:
    """Reconciles this host's data plane; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        bus: Bus,
        *,
        host: str | None = None,
        client: ServiceClient | None = None,
    ):
        self.settings = settings
        self.bus = bus
        self.host = host or settings.network.host or socket.gethostname()
        # The compute hosts whose guests' ports are bound here (their taps are on our bridges).
        self.guest_hosts = {self.host, *settings.network.guest_hosts}
        self.client = client
        self.features = detect()
        self.tunnel_ip = settings.network.tunnel_ip or default_tunnel_ip(settings.bus_url)
        self.dhcp_root = settings.data_dir / "network" / "dhcp"
        self.router_root = settings.data_dir / "network" / "routers"
        # Names this deployment built on the host (several clouds may share one host:
        # only our own leftovers are ours to remove), and the tag of our nft tables.
        self.owned_file = settings.data_dir / "network" / "owned.json"
        self.tag = hashlib.sha256(str(settings.data_dir.resolve()).encode()).hexdigest()[:8]
        self.metadata = MetadataProxy(metadata_secret(settings), self._metadata_upstream)
        # Ports of the latest state, and which of them this agent last reported wired.
        self.ports: dict[str, dict[str, Any]] = {}
        self.reported: dict[str, bool] = {}
        self.synced = asyncio.Event()
        self._dirty = asyncio.Event()
        self._consumers: list[Consumer] = []
        self._worker: asyncio.Task[None] | None = None
        self._monitor: asyncio.Task[None] | None = None
        self._heartbeat = PeriodicTask(
            f"network-agent-{self.host}", settings.network.report_interval, self.report_alive
        )
        self._scanner = PeriodicTask(
            f"network-agent-scan-{self.host}", settings.network.scan_interval, self.scan
        )
        self._upstream: str | None = None
        # What each part of the data plane was last built from (see ``apply``).
        self._fingerprints: dict[str, str] = {}
        # The agents' tunnel endpoints and each vxlan network's flood list, of the latest state.
        self._endpoints: dict[str, str] = {}
        self._flood: dict[str, list[str]] = {}
        # What the security groups allowed each port here when last loaded (kept across
        # restarts, so that rules removed meanwhile still cut their flows).
        self.allowances_file = settings.data_dir / "network" / "allowances.json"
        self._allowances = conntrack.Allowances.load(self.allowances_file)
        # Names recorded in ``owned_file`` (see ``_claim``).
        self._claimed: set[str] = set()
        # The floating IPs each router here holds.
        self._held: dict[str, set[str]] = {}
        self._full_pass = time.monotonic()

    async def start(self) -> None:
        """Report in, take messages, and reconcile once from the service's state."""
        if not (self.features.root and self.features.tools):
            raise RuntimeError("the linuxbridge agent needs root and ip, nft and dnsmasq")
        self.dhcp_root.mkdir(parents=True, exist_ok=True)
        inbox = AgentInbox(self)
        self._consumers = [
            await self.bus.consume(AGENTS, inbox, fanout=True),
            await self.bus.consume(agent_topic(self.host), inbox),
        ]
        await self.report_alive()
        self._heartbeat.start()
        self._worker = asyncio.get_running_loop().create_task(self._work())
        self._dirty.set()
        self._scanner.start()
        self._monitor = asyncio.get_running_loop().create_task(self._watch_links())

    async def _watch_links(self) -> None:
        """Scan as soon as the kernel announces a link change (``ip monitor link``).

        The periodic scan stays as the fallback; this only makes wiring quicker to see.
        """
        process = await asyncio.create_subprocess_exec(
            "ip", "-o", "monitor", "link", stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        assert process.stdout is not None
        try:
            while await process.stdout.readline():
                await asyncio.sleep(COALESCE)  # a plug is several announcements
                with contextlib.suppress(TimeoutError):
                    while await asyncio.wait_for(process.stdout.readline(), 0.001):
                        pass
                try:
                    await self.scan()
                except Exception:
                    log.exception("scan after a link change failed")
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()

    async def stop(self) -> None:
        """Stop taking work; the data plane stays up (guests keep their network)."""
        if self._monitor is not None:
            self._monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor
        await self._scanner.stop()
        await self._heartbeat.stop()
        for consumer in self._consumers:
            await consumer.stop()
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        await self.metadata.close()

    # Messages -------------------------------------------------------------------------

    async def sync(self) -> None:
        """Something changed: reconcile soon (requests arriving together coalesce)."""
        self.synced.clear()
        self._dirty.set()

    async def report_alive(self) -> None:
        await self.bus.cast(
            REPORTS, "agent_heartbeat", host=self.host, configurations=self.configurations()
        )

    def configurations(self) -> dict[str, Any]:
        """What ``network agent show`` lists under configurations."""
        return {
            "driver": "linuxbridge",
            "network_types": sorted(self.features.network_types()),
            "features": self.features.as_dict(),
            "devices": sum(1 for wired in self.reported.values() if wired),
            "tunneling_ip": self.tunnel_ip,
            "tunnel_types": ["vxlan"] if self.features.vxlan else [],
            "guest_hosts": sorted(self.guest_hosts - {self.host}),
        }

    # Reconciling ------------------------------------------------------------------------

    async def _work(self) -> None:
        while True:
            await self._dirty.wait()
            # Writes usually come in bursts (a server boot is several): take them together.
            await asyncio.sleep(COALESCE)
            self._dirty.clear()
            if time.monotonic() - self._full_pass > FULL_RESYNC:
                # Now and then rebuild everything, repairing what was changed behind our back.
                self._fingerprints.clear()
                self._full_pass = time.monotonic()
            started = time.monotonic()
            try:
                state = await self.bus.call(REPORTS, "get_state", host=self.host, timeout=60)
                fetched = time.monotonic()
                await self.apply(state)
                await self.scan()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("network agent %s could not reconcile; retrying", self.host)
                self._fingerprints.clear()
                await asyncio.sleep(2)
                self._dirty.set()
                continue
            took = time.monotonic() - started
            if took > SLOW_SYNC:
                fetch_s = fetched - started
                log.info("slow sync on %s: state %.2f s, apply %.2f s (%d ports)",
                         self.host, fetch_s, took - fetch_s, len(state["ports"]))  # fmt: skip
            if not self._dirty.is_set():
                self.synced.set()

    def _unchanged(self, key: str, inputs: Any) -> bool:
        """Whether ``key`` was applied from these very inputs (then there is nothing to do)."""
        fingerprint = json.dumps(inputs, sort_keys=True, default=str)
        return self._fingerprints.get(key) == fingerprint

    def _applied(self, key: str, inputs: Any) -> None:
        self._fingerprints[key] = json.dumps(inputs, sort_keys=True, default=str)

    async def apply(self, state: dict[str, Any]) -> None:
        """Make the host match ``state``, removing our leftovers of deleted resources.

        Parts whose inputs did not change since they were last applied are skipped (each
        sync would otherwise redo every network); a full pass runs at start and every
        few minutes.
        """
        networks = {n["id"]: n for n in state["networks"]}
        ports = state["ports"]
        self.ports = {p["id"]: p for p in ports}
        by_network: dict[str, list[dict[str, Any]]] = {}
        for port in ports:
            by_network.setdefault(port["network_id"], []).append(port)
        mappings = self.settings.network.physical_interfaces
        host_links = set()
        endpoints = state.get("tunnel_endpoints", {})
        complete = state.get("tunnel_endpoints_complete", True)
        if not complete:
            # The service (just restarted) has not heard from every agent: drop no peer yet.
            endpoints = {**self._endpoints, **endpoints}
        self._endpoints = endpoints
        for network in networks.values():
            bridge = bridges.bridge_name(network["id"])
            physical = None
            if network["network_type"] == "flat":
                physical = mappings.get(network.get("physical_network") or "")
            vni = _vni(network) if self.features.vxlan else None
            inputs: Any = (network["mtu"], network["external"], _gateways(network), physical)
            links = {bridge}
            if vni is not None:
                links.add(bridges.vxlan_name(vni))
                hosts = set(state.get("guest_agents", {}).get(network["id"], []))
                peers = self._flood_peers(network["id"], hosts, endpoints, complete)
                inputs = (*inputs, vni, self.tunnel_ip, peers)
            if not physical and network["external"]:
                links.add(bridges.uplink_names(network["id"])[0])
            host_links |= links
            if self._unchanged(f"bridge:{network['id']}", inputs):
                continue
            self._claim(links)
            await bridges.ensure_bridge(bridge, network["mtu"])
            if physical:
                await bridges.enslave(physical, bridge, network["mtu"])
            elif network["external"]:
                await bridges.ensure_uplink(
                    network["id"], bridge, _gateways(network), network["mtu"]
                )
            if vni is not None:
                device = await bridges.ensure_vxlan(vni, self.tunnel_ip, bridge, network["mtu"])
                await bridges.set_flood_peers(device, peers)
            self._applied(f"bridge:{network['id']}", inputs)
        self._flood = {ident: peers for ident, peers in self._flood.items() if ident in networks}
        wanted_dhcp = set()
        for network_id, members in by_network.items():
            network = networks.get(network_id)
            dhcp_port = next((p for p in members if p["device_owner"] == DHCP_OWNER), None)
            if network is None or dhcp_port is None or not dhcp_port["fixed_ips"]:
                continue
            wanted_dhcp.add(dhcp.namespace(network_id))
            inputs = (network, [(p["id"], p["mac_address"], p["fixed_ips"]) for p in members])
            if self._unchanged(f"dhcp:{network_id}", inputs):
                continue
            self._claim({dhcp.namespace(network_id)})
            await dhcp.DhcpServer(self.dhcp_root, network_id).ensure(network, dhcp_port, members)
            await self.metadata.serve(network_id, dhcp.namespace(network_id), dhcp.METADATA_ADDRESS)
            self._applied(f"dhcp:{network_id}", inputs)
        self.metadata.ports = {
            (p["network_id"], ip["ip_address"]): p for p in ports for ip in p["fixed_ips"]
        }
        wanted_routers = set()
        for router in state["routers"]:
            legs = [
                p for p in ports if p["device_id"] == router["id"] and p["device_owner"] in
                ROUTER_OWNERS
            ]  # fmt: skip
            wanted_routers.add(routers.namespace(router["id"]))
            router = self.hosted(router)
            inputs = (router, legs, [networks.get(p["network_id"]) for p in legs])
            if self._unchanged(f"router:{router['id']}", inputs):
                continue
            self._claim({routers.namespace(router["id"])})
            await routers.ensure(router, legs, networks, self.router_root)
            held = {f["floating_ip_address"] for f in router["floating_ips"]}
            gone = self._held.get(router["id"], set()) - held
            await conntrack.forget_floating(gone, routers.namespace(router["id"]))
            self._held[router["id"]] = held
            self._applied(f"router:{router['id']}", inputs)
        # Guests' ports are filtered on the host they are bound to (where their tap appears).
        here = [p for p in ports if p["binding_host_id"] in self.guest_hosts]
        ruleset = await asyncio.to_thread(
            firewall.ruleset, here, state["security_groups"], self.tag
        )
        allowed = conntrack.allowances(here, state["security_groups"])
        if not self._unchanged("firewall", ruleset):
            await commands.nft(ruleset)
            self._applied("firewall", ruleset)
            # Connections the narrowed rules no longer allow stop now, not when they end.
            await conntrack.forget(conntrack.narrowed(self._allowances, allowed))
        if allowed != self._allowances:
            self._allowances = allowed
            await asyncio.to_thread(allowed.save, self.allowances_file)
        overlay = firewall.overlay_ruleset(
            [
                p["mac_address"]
                for p in ports
                if p["device_owner"].startswith("network:")
                and _vni(networks.get(p["network_id"]) or {"network_type": ""}) is not None
            ],
            self.tag,
        )
        if not self._unchanged("overlay", overlay):
            await commands.nft(overlay)
            self._applied("overlay", overlay)
        wanted = wanted_dhcp | wanted_routers | host_links
        if self._unchanged("names", sorted(wanted)):
            return
        owned = self._owned() | wanted
        self._save_owned(owned)
        await self._remove_leftovers(owned - wanted)
        self._save_owned(wanted)
        self._claimed = wanted
        alive = set(networks) | {r["id"] for r in state["routers"]}
        self._held = {ident: held for ident, held in self._held.items() if ident in alive}
        for key in list(self._fingerprints):
            ident = key.partition(":")[2]
            if ident and ident not in alive:
                del self._fingerprints[key]
        self._applied("names", sorted(wanted))

    def _flood_peers(
        self, network_id: str, hosts: set[str], endpoints: dict[str, str], complete: bool
    ) -> list[str]:
        """Where a vxlan network's broadcasts and unknown unicasts go from here.

        As Neutron's l2population: only to the endpoints of the other agents with guests
        on the network, and nowhere while this host has none (the network's own ports,
        alike on every host, stay off the tunnels).
        """
        found = set()
        if self.host in hosts:
            found = {endpoints[h] for h in hosts - {self.host} if h in endpoints}
        if not complete:
            found |= set(self._flood.get(network_id, []))
        peers = sorted(found - {self.tunnel_ip})
        self._flood[network_id] = peers
        return peers

    def hosted(self, router: dict[str, Any]) -> dict[str, Any]:
        """``router`` as this host builds it: with the floating IPs of its own guests.

        Floating IPs are distributed (as Neutron's DVR): each is held, answered and
        translated only on the host its port is bound to, so its traffic enters and
        leaves there; one whose port no agent wires is held on every host.
        """
        local = [f for f in router["floating_ips"] if f.get("host", "") in {"", *self.guest_hosts}]
        return {**router, "floating_ips": local}

    def _claim(self, names: set[str]) -> None:
        """Record ``names`` as ours before building them: an agent stopped halfway through
        still knows, once restarted, to remove them when they are no longer wanted."""
        if names <= self._claimed:
            return
        self._claimed |= self._owned() | names
        self._save_owned(self._claimed)

    def _owned(self) -> set[str]:
        try:
            return set(json.loads(self.owned_file.read_text()))
        except (OSError, ValueError):
            return set()

    def _save_owned(self, names: set[str]) -> None:
        self.owned_file.parent.mkdir(parents=True, exist_ok=True)
        self.owned_file.write_text(json.dumps(sorted(names)))

    async def _remove_leftovers(self, names: set[str]) -> None:
        """Remove namespaces, bridges and uplinks we built whose resources are gone."""
        namespaces = await commands.namespaces()
        links = {link["ifname"] for link in await commands.links()}
        for name in sorted(names):
            if name.startswith(dhcp.NAMESPACE_PREFIX):
                network_id = name.removeprefix(dhcp.NAMESPACE_PREFIX)
                await self.metadata.forget(network_id)
                await dhcp.DhcpServer(self.dhcp_root, network_id).remove()
            elif name.startswith(routers.NAMESPACE_PREFIX) and name in namespaces:
                await routers.remove(name.removeprefix(routers.NAMESPACE_PREFIX), self.router_root)
            elif name in links:
                await commands.delete_link(name)

    async def teardown(self) -> None:
        """Remove everything this data plane built on the host (tests, decommissioning)."""
        await self.apply({"networks": [], "ports": [], "routers": [], "security_groups": {}})
        await commands.nft(firewall.teardown(self.tag))
        await commands.nft(firewall.overlay_ruleset([], self.tag))
        shutil.rmtree(self.dhcp_root, ignore_errors=True)

    # Wiring -------------------------------------------------------------------------------

    async def scan(self) -> None:
        """Report ports whose device appeared on (or left) their bridge."""
        if not self.ports:
            return
        masters = {link["ifname"]: link.get("master") for link in await commands.links()}
        active: list[str] = []
        down: list[str] = []
        for port in self.ports.values():
            ours = port["device_owner"].startswith("network:") or (
                port["binding_host_id"] in self.guest_hosts
            )
            wired = masters.get(bridges.tap_name(port["id"])) == bridges.bridge_name(
                port["network_id"]
            )
            if not wired and not ours:
                continue
            self.reported[port["id"]] = wired
            if (port["status"] == "ACTIVE") == wired:
                continue
            port["status"] = "ACTIVE" if wired else "DOWN"
            (active if wired else down).append(port["id"])
        if active or down:
            await self.bus.cast(REPORTS, "ports_wired", host=self.host, active=active, down=down)

    async def _metadata_upstream(self) -> str | None:
        if self._upstream is None and self.client is not None:
            try:
                compute = await self.client.endpoint("compute")
            except APIError:
                return None
            self._upstream = compute.rstrip("/").removesuffix("/v2.1") + "/metadata"
        return self._upstream


class AgentInbox:
    """What the bus may ask of the agent: only to resync."""

    def __init__(self, agent: NetworkAgent):
        self.agent = agent

    async def sync(self) -> None:
        await self.agent.sync()


def _vni(network: dict[str, Any]) -> int | None:
    """A vxlan network's VNI (its segmentation id), else None."""
    if network["network_type"] != "vxlan" or network.get("segmentation_id") is None:
        return None
    return int(network["segmentation_id"])


def default_tunnel_ip(bus_url: str) -> str:
    """The address this host reaches the bus from; with a local bus, its default route's.

    A connected UDP socket only looks the route up: nothing is sent.
    """
    host = urlsplit(bus_url).hostname or ""
    targets = [host] if host and not host.startswith("127.") and host != "localhost" else []
    for target in [*targets, "192.0.2.1"]:
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                probe.connect((target, bridges.VXLAN_PORT))
                address: str = probe.getsockname()[0]
                return address
        except OSError:
            continue
    return "127.0.0.1"


def _gateways(network: dict[str, Any]) -> list[str]:
    """The host's addresses on an external network: its subnets' gateways."""
    return [
        f"{s['gateway_ip']}/{ipaddress.ip_network(s['cidr']).prefixlen}"
        for s in network["subnets"]
        if s.get("gateway_ip")
    ]
