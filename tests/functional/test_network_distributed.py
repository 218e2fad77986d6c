"""Where the data plane puts things across hosts, from the desired state (no kernel needed):
a vxlan network floods only between the agents with guests on it (following ports that
move), and each agent's router holds only the floating IPs of its own guests (DVR)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from onestack.network.agent import NetworkAgent
from onestack.network.drivers.linuxbridge import routers
from onestack.network.topology import NetworkReports, desired_state
from tests.conftest import CloudClient

NET = "/network/v2.0"
ENDPOINTS = {"h1": "192.0.2.1", "h2": "192.0.2.2", "h3": "192.0.2.3"}


async def create(cloud: CloudClient, token: str, kind: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await cloud.call("POST", f"{NET}/{kind}s", token, json={kind: body})
    assert response.status_code == 201, response.text
    return response.json()[kind]


async def update(cloud: CloudClient, token: str, kind: str, ident: str, body: Any) -> Any:
    response = await cloud.call("PUT", f"{NET}/{kind}s/{ident}", token, json={kind: body})
    assert response.status_code == 200, response.text
    return response.json()[kind]


@pytest.fixture
async def agents(cloud: CloudClient) -> AsyncIterator[dict[str, NetworkAgent]]:
    """Agents h1 (also wiring compute host c1), h2 and h3 heard by the service (not started:
    only their placement logic is used)."""
    service: Any = cloud.cloud.units["network"].service  # type: ignore[attr-defined]
    reports = NetworkReports(service)
    made = {}
    for host, address in ENDPOINTS.items():
        agent = NetworkAgent(service.settings, service.bus, host=host)
        agent.tunnel_ip = address
        if host == "h1":
            agent.guest_hosts.add("c1")
        made[host] = agent
        await reports.agent_heartbeat(host, {"driver": "linuxbridge", **agent.configurations()})
    yield made
    for agent in made.values():
        await agent.metadata.close()


def service_of(cloud: CloudClient) -> Any:
    return cloud.cloud.units["network"].service  # type: ignore[attr-defined]


def flood_lists(state: dict[str, Any], agents: dict[str, NetworkAgent], network_id: str) -> Any:
    """Each agent's flood list for the network, as its ``apply`` computes it."""
    hosts = set(state["guest_agents"].get(network_id, []))
    return {
        host: agent._flood_peers(network_id, hosts, state["tunnel_endpoints"], True)
        for host, agent in agents.items()
    }


async def test_vxlan_floods_only_to_hosts_with_guests(
    cloud: CloudClient, agents: dict[str, NetworkAgent]
) -> None:
    admin = await cloud.token()
    service = service_of(cloud)
    network = await create(cloud, admin, "network", {"provider:network_type": "vxlan"})
    await create(cloud, admin, "subnet", {"network_id": network["id"], "cidr": "10.60.0.0/24"})
    ident = network["id"]
    state = await desired_state(service)
    # Only the DHCP port so far: it is built alike on every host and floods nowhere.
    assert state["guest_agents"].get(ident) is None
    assert flood_lists(state, agents, ident) == {"h1": [], "h2": [], "h3": []}

    def guest(host: str) -> dict[str, Any]:
        return {"network_id": ident, "binding:host_id": host, "device_owner": "compute:nova"}

    on_c1 = await create(cloud, admin, "port", guest("c1"))
    on_h2 = await create(cloud, admin, "port", guest("h2"))
    await create(cloud, admin, "port", guest("no-agent-here"))
    await create(cloud, admin, "port", {"network_id": ident})  # unbound
    state = await desired_state(service)
    assert state["guest_agents"][ident] == ["h1", "h2"]
    assert flood_lists(state, agents, ident) == {
        "h1": ["192.0.2.2"],
        "h2": ["192.0.2.1"],
        "h3": [],
    }
    # The guest on h2 moves to h3: h2 drops out, h3 joins.
    await update(cloud, admin, "port", on_h2["id"], {"binding:host_id": "h3"})
    state = await desired_state(service)
    assert state["guest_agents"][ident] == ["h1", "h3"]
    assert flood_lists(state, agents, ident) == {
        "h1": ["192.0.2.3"],
        "h2": [],
        "h3": ["192.0.2.1"],
    }
    # While the service has not heard from every agent, a host keeps its flood list.
    await update(cloud, admin, "port", on_c1["id"], {"binding:host_id": "h3"})
    state = await desired_state(service)
    hosts = set(state["guest_agents"][ident])
    assert hosts == {"h3"}
    assert agents["h1"]._flood_peers(ident, hosts, {}, False) == ["192.0.2.3"]
    assert agents["h1"]._flood_peers(ident, hosts, state["tunnel_endpoints"], True) == []


async def test_floating_ips_live_on_their_guests_host(
    cloud: CloudClient, agents: dict[str, NetworkAgent]
) -> None:
    admin = await cloud.token()
    service = service_of(cloud)
    public = await create(
        cloud, admin, "network",
        {"router:external": True, "provider:network_type": "flat",
         "provider:physical_network": "public"},
    )  # fmt: skip
    await create(
        cloud, admin, "subnet",
        {"network_id": public["id"], "cidr": "203.0.113.0/24", "enable_dhcp": False},
    )  # fmt: skip
    internal = await create(cloud, admin, "network", {"name": "in"})
    subnet = await create(
        cloud, admin, "subnet", {"network_id": internal["id"], "cidr": "10.61.0.0/24"}
    )
    router = await create(
        cloud, admin, "router", {"external_gateway_info": {"network_id": public["id"]}}
    )
    added = await cloud.call(
        "PUT", f"{NET}/routers/{router['id']}/add_router_interface", admin,
        json={"subnet_id": subnet["id"]},
    )  # fmt: skip
    assert added.status_code == 200, added.text
    fips: dict[str, dict[str, Any]] = {}
    for host in ("c1", "h2", ""):
        port = await create(
            cloud, admin, "port",
            {"network_id": internal["id"], "binding:host_id": host, "device_owner": "compute:x"},
        )  # fmt: skip
        fips[host] = await create(
            cloud, admin, "floatingip",
            {"floating_network_id": public["id"], "port_id": port["id"]},
        )  # fmt: skip
    state = await desired_state(service)
    [shown] = [r for r in state["routers"] if r["id"] == router["id"]]
    assert sorted(f["host"] for f in shown["floating_ips"]) == ["", "c1", "h2"]
    gateway = next(
        p
        for p in state["ports"]
        if p["device_id"] == router["id"] and p["network_id"] == public["id"]
    )

    def ruleset(host: str) -> str:
        held = agents[host].hosted(shown)["floating_ips"]
        return routers.nat_ruleset(
            "qg-x", gateway["fixed_ips"][0]["ip_address"], ["10.61.0.0/24"], held, True
        )

    def held_by(host: str) -> set[str]:
        return {
            name
            for name, fip in fips.items()
            if f"ip daddr {fip['floating_ip_address']} dnat" in ruleset(host)
        }

    # h1 wires c1's guests; the unbound port's address stays on every host.
    assert held_by("h1") == {"c1", ""}
    assert held_by("h2") == {"h2", ""}
    assert held_by("h3") == {""}
    fixed = fips["c1"]["fixed_ip_address"]
    assert f"ip saddr {fixed} snat to {fips['c1']['floating_ip_address']}" in ruleset("h1")
    assert f"ip saddr {fixed} snat" not in ruleset("h2")
