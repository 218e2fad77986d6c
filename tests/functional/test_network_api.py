"""The Neutron v2.0 API in-process: networks, subnets, ports, IPAM under concurrency, tenancy."""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any

from tests.conftest import CloudClient

NET = "/network/v2.0"


async def create(cloud: CloudClient, token: str, kind: str, body: dict[str, Any]) -> dict[str, Any]:
    path = kind.replace("_", "-")
    response = await cloud.call("POST", f"{NET}/{path}s", token, json={kind: body})
    assert response.status_code == 201, response.text
    return response.json()[kind]


async def error(
    cloud: CloudClient, token: str, method: str, path: str, **kwargs: Any
) -> tuple[int, str]:
    response = await cloud.call(method, f"{NET}{path}", token, **kwargs)
    body = response.json()
    assert set(body["NeutronError"]) == {"type", "message", "detail"}, body
    return response.status_code, body["NeutronError"]["type"]


async def test_discovery(cloud: CloudClient) -> None:
    versions = await cloud.http.get("/network/")
    assert versions.json()["versions"][0]["id"] == "v2.0"
    token = await cloud.token()
    aliases = {
        e["alias"]
        for e in (await cloud.call("GET", f"{NET}/extensions", token)).json()["extensions"]
    }
    assert {"external-net", "provider", "binding", "quotas"} <= aliases
    assert "dhcp_agent_scheduler" not in aliases  # only what is implemented is advertised


async def test_network_subnet_port_lifecycle(cloud: CloudClient) -> None:
    token = await cloud.token()
    network = await create(cloud, token, "network", {"name": "intnet"})
    assert (network["status"], network["admin_state_up"], network["mtu"]) == ("ACTIVE", True, 1500)
    subnet = await create(
        cloud,
        token,
        "subnet",
        {"network_id": network["id"], "cidr": "10.5.5.0/24", "ip_version": 4, "name": "intsub"},
    )
    assert subnet["gateway_ip"] == "10.5.5.1"
    assert subnet["allocation_pools"] == [{"start": "10.5.5.2", "end": "10.5.5.254"}]
    shown = (await cloud.call("GET", f"{NET}/networks/{network['id']}", token)).json()["network"]
    assert shown["subnets"] == [subnet["id"]]
    port = await create(cloud, token, "port", {"network_id": network["id"], "name": "p1"})
    assert port["status"] == "ACTIVE" and port["mac_address"].startswith("fa:16:3e:")
    [fixed] = port["fixed_ips"]
    assert fixed["subnet_id"] == subnet["id"]
    assert ipaddress.ip_address(fixed["ip_address"]) in ipaddress.ip_network("10.5.5.0/24")
    assert fixed["ip_address"] != "10.5.5.1"
    assert await error(cloud, token, "DELETE", f"/subnets/{subnet['id']}") == (409, "SubnetInUse")
    assert await error(cloud, token, "DELETE", f"/networks/{network['id']}") == (
        409,
        "NetworkInUse",
    )
    updated = await cloud.call(
        "PUT",
        f"{NET}/ports/{port['id']}",
        token,
        json={"port": {"name": "renamed", "binding:host_id": "host1"}},
    )
    assert updated.json()["port"]["binding:host_id"] == "host1"
    for path in (f"/ports/{port['id']}", f"/subnets/{subnet['id']}", f"/networks/{network['id']}"):
        assert (await cloud.call("DELETE", f"{NET}{path}", token)).status_code == 204
    assert await error(cloud, token, "GET", f"/networks/{network['id']}") == (
        404,
        "NetworkNotFound",
    )


async def test_subnet_validation(cloud: CloudClient) -> None:
    token = await cloud.token()
    network = await create(cloud, token, "network", {"name": "v"})
    base = {"network_id": network["id"], "ip_version": 4}
    await create(cloud, token, "subnet", {**base, "cidr": "10.1.0.0/24"})
    cases = [
        {**base, "cidr": "10.1.0.128/25"},  # overlaps
        {**base, "cidr": "10.2.0.0/24", "gateway_ip": "10.9.9.1"},  # gateway outside
        {**base, "cidr": "not-a-cidr"},
        {**base, "cidr": "10.3.0.5/24"},  # host bits set
        {
            **base,
            "cidr": "10.4.0.0/24",
            "allocation_pools": [{"start": "10.4.1.2", "end": "10.4.1.9"}],
        },
        {
            **base,
            "cidr": "10.5.0.0/24",
            "allocation_pools": [{"start": "10.5.0.1", "end": "10.5.0.9"}],
        },  # has gw
        {**base, "cidr": "fd00::/64"},  # version mismatch
        {"ip_version": 4, "cidr": "10.6.0.0/24"},  # no network
    ]
    for body in cases:
        response = await cloud.call("POST", f"{NET}/subnets", token, json={"subnet": body})
        assert response.status_code == 400, (body, response.text)
    no_gateway = await create(
        cloud, token, "subnet", {**base, "cidr": "10.7.0.0/29", "gateway_ip": None}
    )
    assert no_gateway["gateway_ip"] is None
    assert no_gateway["allocation_pools"] == [{"start": "10.7.0.1", "end": "10.7.0.6"}]
    v6 = await create(cloud, token, "subnet", {**base, "ip_version": 6, "cidr": "fd00:1::/64"})
    assert v6["gateway_ip"] == "fd00:1::1"


async def test_fixed_ips_macs_and_exhaustion(cloud: CloudClient) -> None:
    token = await cloud.token()
    network = await create(cloud, token, "network", {"name": "small"})
    subnet = await create(
        cloud, token, "subnet", {"network_id": network["id"], "cidr": "192.168.9.0/29"}
    )
    wanted = [{"subnet_id": subnet["id"], "ip_address": "192.168.9.5"}]
    chosen = await create(
        cloud,
        token,
        "port",
        {"network_id": network["id"], "fixed_ips": wanted, "mac_address": "fa:16:3e:00:00:01"},
    )
    assert chosen["fixed_ips"][0]["ip_address"] == "192.168.9.5"
    again = {
        "network_id": network["id"],
        "fixed_ips": [{"subnet_id": subnet["id"], "ip_address": "192.168.9.5"}],
    }
    assert await error(cloud, token, "POST", "/ports", json={"port": again}) == (
        409,
        "IpAddressAlreadyAllocated",
    )
    same_mac = {"network_id": network["id"], "mac_address": "fa:16:3e:00:00:01"}
    assert await error(cloud, token, "POST", "/ports", json={"port": same_mac}) == (
        409,
        "MacAddressInUse",
    )
    outside = {
        "network_id": network["id"],
        "fixed_ips": [{"subnet_id": subnet["id"], "ip_address": "10.0.0.1"}],
    }
    assert (
        await cloud.call("POST", f"{NET}/ports", token, json={"port": outside})
    ).status_code == 400
    for _ in range(4):  # .2 .3 .4 .6 remain
        await create(cloud, token, "port", {"network_id": network["id"]})
    exhausted = await error(
        cloud, token, "POST", "/ports", json={"port": {"network_id": network["id"]}}
    )
    assert exhausted == (409, "IpAddressGenerationFailure")
    usage = (
        await cloud.call("GET", f"{NET}/quotas/{network['project_id']}/details", token)
    ).json()["quota"]
    assert usage["port"]["used"] == 5  # the refused ones took nothing


async def test_concurrent_port_creates_never_share_an_address(cloud: CloudClient) -> None:
    token = await cloud.token()
    network = await create(cloud, token, "network", {"name": "busy"})
    await create(cloud, token, "subnet", {"network_id": network["id"], "cidr": "172.16.0.0/26"})

    async def new_port() -> str:
        port = await create(cloud, token, "port", {"network_id": network["id"]})
        return str(port["fixed_ips"][0]["ip_address"])

    addresses = await asyncio.gather(*(new_port() for _ in range(40)))
    assert len(set(addresses)) == 40
    listed = (
        await cloud.call("GET", f"{NET}/ports?network_id={network['id']}&limit=15", token)
    ).json()
    assert len(listed["ports"]) == 15 and listed["ports_links"][0]["rel"] == "next"


async def test_tenancy_shared_and_provider_attributes(cloud: CloudClient) -> None:
    admin = await cloud.token()
    _, alice = await cloud.project_member(admin, "net-a")
    _, bob = await cloud.project_member(admin, "net-b")
    private = await create(cloud, alice, "network", {"name": "alice-net"})
    await create(cloud, alice, "subnet", {"network_id": private["id"], "cidr": "10.10.0.0/24"})
    assert await error(cloud, bob, "GET", f"/networks/{private['id']}") == (404, "NetworkNotFound")
    names = [
        n["name"] for n in (await cloud.call("GET", f"{NET}/networks", bob)).json()["networks"]
    ]
    assert "alice-net" not in names
    assert (
        await cloud.call("POST", f"{NET}/ports", bob, json={"port": {"network_id": private["id"]}})
    ).status_code == 404
    for attrs in ({"shared": True}, {"router:external": True}, {"provider:network_type": "flat"}):
        status, _ = await error(
            cloud, alice, "POST", "/networks", json={"network": {"name": "x", **attrs}}
        )
        assert status == 403
    shared = await create(cloud, admin, "network", {"name": "shared-net", "shared": True})
    await create(cloud, admin, "subnet", {"network_id": shared["id"], "cidr": "10.20.0.0/24"})
    port = await create(cloud, bob, "port", {"network_id": shared["id"]})
    assert port["project_id"] != shared["project_id"]
    external = await create(
        cloud, admin, "network",
        {"name": "public", "router:external": True, "provider:network_type": "flat",
         "provider:physical_network": "public"},
    )  # fmt: skip
    assert external["provider:network_type"] == "flat" and external["router:external"] is True
    bad_type = await cloud.call(
        "POST",
        f"{NET}/networks",
        admin,
        json={"network": {"provider:network_type": "carrier-pigeon"}},
    )
    assert bad_type.status_code == 400
    member_view = (await cloud.call("GET", f"{NET}/networks/{external['id']}", alice)).json()[
        "network"
    ]
    assert "provider:network_type" not in member_view


async def test_quotas_and_filters(cloud: CloudClient) -> None:
    admin = await cloud.token()
    project, alice = await cloud.project_member(admin, "net-q")
    put = await cloud.call("PUT", f"{NET}/quotas/{project}", admin, json={"quota": {"network": 1}})
    assert put.json()["quota"]["network"] == 1
    assert (
        await cloud.call("PUT", f"{NET}/quotas/{project}", alice, json={"quota": {"network": 9}})
    ).status_code == 403
    await create(cloud, alice, "network", {"name": "only"})
    assert await error(cloud, alice, "POST", "/networks", json={"network": {"name": "two"}}) == (
        409,
        "OverQuota",
    )
    below = {"quota": {"network": 0, "check_limit": True}}
    assert await error(cloud, admin, "PUT", f"/quotas/{project}", json=below) == (
        400,
        "InvalidQuotaValue",
    )
    by_name = await cloud.call("GET", f"{NET}/networks?name=only&fields=id&fields=name", alice)
    [item] = by_name.json()["networks"]
    assert set(item) == {"id", "name"}
    assert (await cloud.call("GET", f"{NET}/networks?name=nothing", alice)).json()["networks"] == []
    assert (await cloud.call("POST", f"{NET}/networks", alice, content=b"{")).status_code == 400


async def test_security_groups(cloud: CloudClient) -> None:
    admin = await cloud.token()
    _, alice = await cloud.project_member(admin, "sg-a")
    _, bob = await cloud.project_member(admin, "sg-b")
    groups = (await cloud.call("GET", f"{NET}/security-groups", alice)).json()["security_groups"]
    [default] = [g for g in groups if g["name"] == "default"]
    rules = {
        (r["direction"], r["ethertype"], r["remote_group_id"])
        for r in default["security_group_rules"]
    }
    assert rules == {
        ("egress", "IPv4", None),
        ("egress", "IPv6", None),
        ("ingress", "IPv4", default["id"]),
        ("ingress", "IPv6", default["id"]),
    }
    network = await create(cloud, alice, "network", {"name": "sgnet"})
    await create(cloud, alice, "subnet", {"network_id": network["id"], "cidr": "10.30.0.0/24"})
    port = await create(cloud, alice, "port", {"network_id": network["id"]})
    assert port["security_groups"] == [default["id"]]
    web = await create(cloud, alice, "security_group", {"name": "web"})
    rule = {
        "security_group_id": web["id"],
        "direction": "ingress",
        "protocol": "tcp",
        "port_range_min": 80,
        "port_range_max": 80,
        "remote_ip_prefix": "0.0.0.0/0",
    }
    created = await create(cloud, alice, "security_group_rule", rule)
    assert created["protocol"] == "tcp" and created["port_range_min"] == 80
    duplicate = await error(
        cloud, alice, "POST", "/security-group-rules", json={"security_group_rule": rule}
    )
    assert duplicate == (409, "SecurityGroupRuleExists")
    bad_rules = [
        {**rule, "port_range_min": 90, "port_range_max": 80},
        {**rule, "direction": "sideways"},
        {**rule, "protocol": "carrier-pigeon"},
        {**rule, "remote_ip_prefix": "::/0"},
        {**rule, "remote_ip_prefix": "nope"},
        {**rule, "protocol": "icmp", "port_range_min": 300, "port_range_max": None},
        {**rule, "remote_group_id": default["id"]},
    ]
    for bad in bad_rules:
        response = await cloud.call(
            "POST", f"{NET}/security-group-rules", alice, json={"security_group_rule": bad}
        )
        assert response.status_code == 400, (bad, response.text)
    ping = {"security_group_id": default["id"], "direction": "ingress", "protocol": "icmp"}
    icmp = await create(cloud, alice, "security_group_rule", ping)
    assert icmp["port_range_min"] is None
    listed = await cloud.call(
        "GET", f"{NET}/security-group-rules?security_group_id={default['id']}", alice
    )
    assert len(listed.json()["security_group_rules"]) == 5
    foreign = await cloud.call(
        "POST", f"{NET}/ports", bob, json={"port": {"network_id": network["id"]}}
    )
    assert foreign.status_code == 404
    assert await error(cloud, bob, "GET", f"/security-groups/{web['id']}") == (
        404,
        "SecurityGroupNotFound",
    )
    updated = await cloud.call(
        "PUT", f"{NET}/ports/{port['id']}", alice, json={"port": {"security_groups": [web["id"]]}}
    )
    assert updated.json()["port"]["security_groups"] == [web["id"]]
    assert await error(cloud, alice, "DELETE", f"/security-groups/{web['id']}") == (
        409,
        "SecurityGroupInUse",
    )
    assert await error(cloud, alice, "DELETE", f"/security-groups/{default['id']}") == (
        409,
        "SecurityGroupCannotRemoveDefault",
    )
    await cloud.call("DELETE", f"{NET}/ports/{port['id']}", alice)
    assert (
        await cloud.call("DELETE", f"{NET}/security-groups/{web['id']}", alice)
    ).status_code == 204
    assert (
        await cloud.call("DELETE", f"{NET}/security-group-rules/{icmp['id']}", alice)
    ).status_code == 204


async def test_routers_and_floating_ips(cloud: CloudClient) -> None:
    admin = await cloud.token()
    _, alice = await cloud.project_member(admin, "l3-a")
    _, bob = await cloud.project_member(admin, "l3-b")
    public = await create(
        cloud, admin, "network",
        {"name": "ext", "router:external": True, "provider:network_type": "flat",
         "provider:physical_network": "public"},
    )  # fmt: skip
    await create(
        cloud, admin, "subnet",
        {"network_id": public["id"], "cidr": "203.0.113.0/24", "enable_dhcp": False,
         "allocation_pools": [{"start": "203.0.113.100", "end": "203.0.113.200"}]},
    )  # fmt: skip
    internal = await create(cloud, alice, "network", {"name": "in"})
    subnet = await create(
        cloud, alice, "subnet", {"network_id": internal["id"], "cidr": "10.40.0.0/24"}
    )
    router = await create(cloud, alice, "router", {"name": "r1"})
    assert router["external_gateway_info"] is None
    gateway = await cloud.call(
        "PUT", f"{NET}/routers/{router['id']}", alice,
        json={"router": {"external_gateway_info": {"network_id": public["id"]}}},
    )  # fmt: skip
    info = gateway.json()["router"]["external_gateway_info"]
    assert info["network_id"] == public["id"] and info["enable_snat"] is True
    assert info["external_fixed_ips"][0]["ip_address"].startswith("203.0.113.")
    added = await cloud.call(
        "PUT",
        f"{NET}/routers/{router['id']}/add_router_interface",
        alice,
        json={"subnet_id": subnet["id"]},
    )
    assert added.status_code == 200 and added.json()["subnet_id"] == subnet["id"]
    interface = added.json()["port_id"]
    shown_port = (await cloud.call("GET", f"{NET}/ports/{interface}", alice)).json()["port"]
    assert shown_port["fixed_ips"][0]["ip_address"] == "10.40.0.1"
    assert shown_port["device_owner"] == "network:router_interface"
    assert await error(cloud, alice, "DELETE", f"/ports/{interface}") == (409, "ServicePortInUse")
    overlapping = await create(cloud, alice, "network", {"name": "in2"})
    clash = await create(
        cloud, alice, "subnet", {"network_id": overlapping["id"], "cidr": "10.40.0.0/25"}
    )
    status, _ = await error(
        cloud,
        alice,
        "PUT",
        f"/routers/{router['id']}/add_router_interface",
        json={"subnet_id": clash["id"]},
    )
    assert status == 400
    routes_ok = await cloud.call(
        "PUT", f"{NET}/routers/{router['id']}", alice,
        json={"router": {"routes": [{"destination": "192.168.0.0/16", "nexthop": "10.40.0.254"}]}},
    )  # fmt: skip
    assert routes_ok.json()["router"]["routes"][0]["nexthop"] == "10.40.0.254"
    bad_route = await cloud.call(
        "PUT", f"{NET}/routers/{router['id']}", alice,
        json={"router": {"routes": [{"destination": "192.168.0.0/16", "nexthop": "172.31.0.1"}]}},
    )  # fmt: skip
    assert bad_route.status_code == 400

    vm_port = await create(cloud, alice, "port", {"network_id": internal["id"]})
    fip = await create(cloud, alice, "floatingip", {"floating_network_id": public["id"]})
    assert fip["status"] == "DOWN" and fip["floating_ip_address"].startswith("203.0.113.")
    associated = await cloud.call(
        "PUT",
        f"{NET}/floatingips/{fip['id']}",
        alice,
        json={"floatingip": {"port_id": vm_port["id"]}},
    )
    body = associated.json()["floatingip"]
    assert (body["port_id"], body["router_id"], body["status"]) == (
        vm_port["id"],
        router["id"],
        "ACTIVE",
    )
    assert body["fixed_ip_address"] == vm_port["fixed_ips"][0]["ip_address"]
    bob_fip = await create(cloud, bob, "floatingip", {"floating_network_id": public["id"]})
    stolen = await cloud.call(
        "PUT",
        f"{NET}/floatingips/{bob_fip['id']}",
        bob,
        json={"floatingip": {"port_id": vm_port["id"]}},
    )
    assert stolen.status_code == 404
    unrouted = await create(cloud, alice, "port", {"network_id": overlapping["id"]})
    no_route = await error(
        cloud,
        alice,
        "PUT",
        f"/floatingips/{fip['id']}",
        json={"floatingip": {"port_id": unrouted["id"]}},
    )
    assert no_route == (404, "ExternalGatewayForFloatingIPNotFound")
    await cloud.call("DELETE", f"{NET}/ports/{vm_port['id']}", alice)
    after = (await cloud.call("GET", f"{NET}/floatingips/{fip['id']}", alice)).json()["floatingip"]
    assert after["port_id"] is None and after["status"] == "DOWN"
    assert await error(cloud, alice, "DELETE", f"/routers/{router['id']}") == (409, "RouterInUse")
    removed = await cloud.call(
        "PUT",
        f"{NET}/routers/{router['id']}/remove_router_interface",
        alice,
        json={"subnet_id": subnet["id"]},
    )
    assert removed.status_code == 200
    for path in (f"/floatingips/{fip['id']}", f"/routers/{router['id']}"):
        assert (await cloud.call("DELETE", f"{NET}{path}", alice)).status_code == 204
    leftovers = (await cloud.call("GET", f"{NET}/ports?network_id={public['id']}", admin)).json()[
        "ports"
    ]
    assert [p["device_owner"] for p in leftovers] == ["network:floatingip"]  # bob's


async def test_agents(cloud: CloudClient) -> None:
    admin = await cloud.token()
    _, member = await cloud.project_member(admin, "agents")
    [agent] = (await cloud.call("GET", f"{NET}/agents", admin)).json()["agents"]
    assert agent["alive"] is True and agent["binary"] == "onestack-network-agent"
    assert agent["configurations"]["driver"] == "noop"
    # Neutron filters agents out of a project's view: an empty list (Tempest checks it).
    assert (await cloud.call("GET", f"{NET}/agents", member)).json() == {"agents": []}
    disabled = await cloud.call(
        "PUT", f"{NET}/agents/{agent['id']}", admin, json={"agent": {"admin_state_up": False}}
    )
    assert disabled.json()["agent"]["admin_state_up"] is False
    assert await error(cloud, admin, "DELETE", f"/agents/{agent['id']}") == (409, "AgentInUse")
    assert await error(cloud, admin, "GET", "/agents/missing") == (404, "AgentNotFound")


async def test_tags_on_resources(cloud: CloudClient) -> None:
    token = await cloud.token()
    network = await create(cloud, token, "network", {"name": "tagged"})
    path = f"{NET}/networks/{network['id']}/tags"
    assert (await cloud.call("PUT", f"{path}/red", token)).status_code == 201
    replaced = await cloud.call("PUT", path, token, json={"tags": ["blue", "green"]})
    assert replaced.json()["tags"] == ["blue", "green"]
    assert (await cloud.call("GET", f"{path}/blue", token)).status_code == 204
    assert await error(cloud, token, "GET", f"/networks/{network['id']}/tags/red") == (
        404,
        "TagNotFound",
    )
    listed = await cloud.call("GET", f"{NET}/networks?tags=blue,green", token)
    assert [n["id"] for n in listed.json()["networks"]] == [network["id"]]
    excluded = await cloud.call("GET", f"{NET}/networks?not-tags=blue", token)
    assert network["id"] not in [n["id"] for n in excluded.json()["networks"]]
    assert (await cloud.call("DELETE", path, token)).status_code == 204
    assert (await cloud.call("GET", path, token)).json()["tags"] == []
    assert (
        await cloud.call("PUT", f"{NET}/gadgets/{network['id']}/tags/x", token)
    ).status_code == 404
