"""What the data plane should look like, as the service tells its agents, and their reports.

Agents never read the database: on every change they receive ``sync`` on
``network-agent.<host>`` (fanned out to all of them) and ask ``network-reports``
for :func:`desired_state`, then report back which ports they have wired.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from onestack.core.asgi.errors import APIError
from onestack.network.models import (
    FloatingIP,
    IPAllocation,
    Network,
    Port,
    Router,
    SecurityGroup,
    SecurityGroupRule,
    Subnet,
)

if TYPE_CHECKING:
    from onestack.network.service import NetworkService

log = logging.getLogger(__name__)

REPORTS = "network-reports"
AGENTS = "network-agents"
DHCP_OWNER = "network:dhcp"


def agent_topic(host: str) -> str:
    """The bus topic one host's network agent consumes."""
    return f"network-agent.{host}"


async def ensure_dhcp_ports(service: NetworkService) -> None:
    """Every network with a DHCP subnet has one ``network:dhcp`` port with an address in each."""
    from onestack.network.api.ports import _allocate, random_mac

    async with service.db.session() as session:
        subnets = await _rows(session, Subnet)
        ports = list(
            (await session.execute(select(Port).where(Port.device_owner == DHCP_OWNER))).scalars()
        )
        held = {
            (a.port_id, a.subnet_id)
            for a in (
                await session.execute(
                    select(IPAllocation).where(IPAllocation.port_id.in_([p.id for p in ports]))
                )
            ).scalars()
        }
    wanted: dict[str, list[Subnet]] = {}
    for subnet in subnets:
        if subnet.enable_dhcp:
            wanted.setdefault(subnet.network_id, []).append(subnet)
    by_network = {p.network_id: p for p in ports}
    for unneeded in ports:
        if unneeded.network_id not in wanted:
            async with service.db.session() as session:
                await session.execute(
                    delete(IPAllocation).where(IPAllocation.port_id == unneeded.id)
                )
                await session.execute(delete(Port).where(Port.id == unneeded.id))
    for network_id, dhcp_subnets in wanted.items():
        existing = by_network.get(network_id)
        missing = [s for s in dhcp_subnets if existing is None or (existing.id, s.id) not in held]
        if not missing:
            continue
        for _attempt in range(10):
            try:
                async with service.db.session() as session:
                    network = await session.get(Network, network_id)
                    if network is None:
                        break
                    port: Port | None = existing
                    if port is None:
                        port = Port(
                            network_id=network_id,
                            project_id=network.project_id,
                            name="",
                            description="",
                            tags=[],
                            revision_number=1,
                            mac_address=random_mac(),
                            device_id=f"dhcp-{network_id}",
                            device_owner=DHCP_OWNER,
                            security_groups=[],
                            allowed_address_pairs=[],
                            admin_state_up=True,
                            port_security_enabled=False,
                            binding_host_id="",
                            binding_vnic_type="normal",
                            binding_profile={},
                        )
                        session.add(port)
                        await session.flush()
                    else:
                        port = await session.merge(port)
                    await _allocate(session, network, port, [{"subnet_id": s.id} for s in missing])
                break
            except IntegrityError:
                continue
            except APIError as exc:
                log.warning("no DHCP address on network %s: %s", network_id, exc)
                break


async def desired_state(service: NetworkService) -> dict[str, Any]:
    """Networks, ports, security groups and routers, in the shape the agents expect."""
    await ensure_dhcp_ports(service)
    async with service.db.session() as session:
        networks = await _rows(session, Network)
        subnets = await _rows(session, Subnet)
        ports = await _rows(session, Port)
        allocations = await _rows(session, IPAllocation)
        groups = await _rows(session, SecurityGroup)
        rules = await _rows(session, SecurityGroupRule)
        routers = await _rows(session, Router)
        floating = await _rows(session, FloatingIP)
    from onestack.network.service import AGENT_BINARY

    agents = await service.agents.list(binary=AGENT_BINARY)
    heard = service.agent_configurations
    cidr_of = {s.id: s.cidr for s in subnets}
    fixed: dict[str, list[dict[str, str]]] = {}
    for allocation in allocations:
        fixed.setdefault(allocation.port_id, []).append(
            {
                "subnet_id": allocation.subnet_id,
                "ip_address": allocation.ip_address,
                "cidr": cidr_of.get(allocation.subnet_id, ""),
            }
        )
    serving = serving_agents(agents, heard)
    # Per network, the agents with guests on it (the hosts its VXLAN floods to), and the
    # binding host of each guest's port that some agent wires.
    guest_agents: dict[str, set[str]] = {}
    wired_host: dict[str, str] = {}
    for port in ports:
        agent = serving.get(port.binding_host_id)
        if agent and not port.device_owner.startswith("network:"):
            guest_agents.setdefault(port.network_id, set()).add(agent)
            wired_host[port.id] = port.binding_host_id
    members: dict[str, list[str]] = {}
    for port in ports:
        for group_id in port.security_groups or []:
            # As Neutron's remote-group sets: the fixed addresses and the allowed pairs.
            members.setdefault(group_id, []).extend(
                [ip["ip_address"] for ip in fixed.get(port.id, [])]
                + [pair["ip_address"] for pair in port.allowed_address_pairs or []]
            )
    return {
        "networks": [
            {
                "id": n.id,
                "mtu": n.mtu,
                "external": n.external,
                "admin_state_up": n.admin_state_up,
                "network_type": n.network_type,
                "physical_network": n.physical_network,
                "segmentation_id": n.segmentation_id,
                "subnets": [
                    {
                        "id": s.id,
                        "cidr": s.cidr,
                        "ip_version": s.ip_version,
                        "gateway_ip": s.gateway_ip,
                        "enable_dhcp": s.enable_dhcp,
                        "dns_nameservers": list(s.dns_nameservers or []),
                        "host_routes": list(s.host_routes or []),
                        "ipv6_ra_mode": s.ipv6_ra_mode,
                        "ipv6_address_mode": s.ipv6_address_mode,
                    }
                    for s in subnets
                    if s.network_id == n.id
                ],
            }
            for n in networks
        ],
        "ports": [
            {
                "id": p.id,
                "network_id": p.network_id,
                "project_id": p.project_id,
                "mac_address": p.mac_address,
                "fixed_ips": fixed.get(p.id, []),
                "device_id": p.device_id,
                "device_owner": p.device_owner,
                "admin_state_up": p.admin_state_up,
                "status": p.status,
                "port_security_enabled": p.port_security_enabled,
                "allowed_address_pairs": list(p.allowed_address_pairs or []),
                "security_groups": list(p.security_groups or []),
                "binding_host_id": p.binding_host_id,
            }
            for p in ports
        ],
        # Per network, the agents wiring guests' ports on it: where its VXLAN floods.
        "guest_agents": {ident: sorted(hosts) for ident, hosts in guest_agents.items()},
        # Each agent's VXLAN endpoint, from its heartbeat (see ``NetworkAgent.configurations``);
        # incomplete while a live agent has not reported since this service started.
        "tunnel_endpoints": {
            a.host: str(heard[a.host]["tunneling_ip"])
            for a in agents
            if heard.get(a.host, {}).get("tunneling_ip")
        },
        "tunnel_endpoints_complete": all(a.host in heard for a in agents if a.up),
        "security_groups": {
            g.id: {
                "rules": [
                    {
                        "id": r.id,
                        "direction": r.direction,
                        "ethertype": r.ethertype,
                        "protocol": r.protocol,
                        "port_range_min": r.port_range_min,
                        "port_range_max": r.port_range_max,
                        "remote_ip_prefix": r.remote_ip_prefix,
                        "remote_group_id": r.remote_group_id,
                    }
                    for r in rules
                    if r.security_group_id == g.id
                ],
                "members": sorted(set(members.get(g.id, []))),
            }
            for g in groups
        },
        "routers": [
            {
                "id": r.id,
                "admin_state_up": r.admin_state_up,
                "enable_snat": r.enable_snat,
                "gateway_network_id": r.gateway_network_id,
                "routes": list(r.routes or []),
                "floating_ips": [
                    {
                        "floating_ip_address": f.floating_ip_address,
                        "fixed_ip_address": f.fixed_ip_address,
                        # The port's binding host: floating IPs are distributed, only the
                        # router of the agent wiring that host holds the address. "" when
                        # no agent wires it: then every router holds it.
                        "host": wired_host.get(f.port_id or "", ""),
                    }
                    for f in floating
                    if f.router_id == r.id and f.fixed_ip_address
                ],
            }
            for r in routers
        ],
    }


def serving_agents(agents: list[Any], heard: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Which agent wires the guests of each binding host: an agent its own host, and the
    other compute hosts it said it serves (``guest_hosts`` in its heartbeat)."""
    serving: dict[str, str] = {}
    for agent in agents:
        for guest_host in heard.get(agent.host, {}).get("guest_hosts") or []:
            serving.setdefault(guest_host, agent.host)
    serving.update({agent.host: agent.host for agent in agents})
    return serving


async def _rows(session: AsyncSession, model: Any) -> list[Any]:
    """Every row of ``model``'s table as plain rows (no ORM objects: several times faster)."""
    return list((await session.execute(select(model.__table__))).all())


class NetworkReports:
    """Consumes ``network-reports``: state requests, heartbeats and wiring from the agents."""

    def __init__(self, service: NetworkService):
        self.service = service
        # Agents asking together must not each create a network's DHCP port.
        self._lock = asyncio.Lock()

    async def get_state(self, host: str) -> dict[str, Any]:
        """The desired state for ``host``'s agent."""
        async with self._lock:
            return await desired_state(self.service)

    async def agent_heartbeat(self, host: str, configurations: dict[str, Any]) -> None:
        """An agent is alive, with what it detected on its host."""
        await self.service.record_agent(host, configurations)

    async def ports_wired(self, host: str, active: list[str], down: list[str]) -> None:
        """Ports now wired (ACTIVE) or no longer wired (DOWN) on ``host``."""
        changed: dict[str, list[Port]] = {"ACTIVE": [], "DOWN": []}
        async with self.service.db.session() as session:
            for status, ids in (("ACTIVE", active), ("DOWN", down)):
                if not ids:
                    continue
                rows = (
                    await session.execute(
                        select(Port).where(Port.id.in_(ids), Port.status != status)
                    )
                ).scalars()
                for row in rows:
                    changed[status].append(row)
                stale = (Port.id.in_(ids), Port.status != status)
                await session.execute(update(Port).where(*stale).values(status=status))
        events = [
            {
                "name": "network-vif-plugged" if status == "ACTIVE" else "network-vif-unplugged",
                "server_uuid": row.device_id,
                "tag": row.id,
                "status": "completed",
            }
            for status, rows in changed.items()
            for row in rows
            if row.device_owner.startswith("compute:") and row.device_id
        ]
        if events:
            asyncio.get_running_loop().create_task(self.service.notify_compute(events))
