"""What Tempest's network API tests found, kept as tests (CI does not run Tempest)."""

from __future__ import annotations

from tests.conftest import CloudClient
from tests.functional.test_network_api import NET, create


async def test_bulk_create_is_all_or_nothing(cloud: CloudClient) -> None:
    token = await cloud.token()
    made = await cloud.call(
        "POST", f"{NET}/networks", token, json={"networks": [{"name": "n1"}, {"name": "n2"}]}
    )
    assert made.status_code == 201, made.text
    networks = made.json()["networks"]
    assert [n["name"] for n in networks] == ["n1", "n2"]
    subnets = await cloud.call(
        "POST",
        f"{NET}/subnets",
        token,
        json={
            "subnets": [
                {"network_id": n["id"], "cidr": f"10.9.{i}.0/24", "ip_version": 4}
                for i, n in enumerate(networks)
            ]
        },
    )
    assert subnets.status_code == 201, subnets.text
    assert len(subnets.json()["subnets"]) == 2
    ports = await cloud.call(
        "POST", f"{NET}/ports", token, json={"ports": [{"network_id": n["id"]} for n in networks]}
    )
    assert ports.status_code == 201, ports.text
    assert {p["network_id"] for p in ports.json()["ports"]} == {n["id"] for n in networks}
    # The second item fails: the first is taken back and the error is the item's.
    before = (await cloud.call("GET", f"{NET}/networks", token)).json()["networks"]
    failed = await cloud.call(
        "POST",
        f"{NET}/ports",
        token,
        json={"ports": [{"network_id": networks[0]["id"]}, {"network_id": "no-such-network"}]},
    )
    assert failed.status_code == 404
    listed = (await cloud.call("GET", f"{NET}/ports", token)).json()["ports"]
    assert len(listed) == 2
    after = (await cloud.call("GET", f"{NET}/networks", token)).json()["networks"]
    assert len(after) == len(before)


async def test_security_group_messages_and_default_name(cloud: CloudClient) -> None:
    token = await cloud.token()
    group = await create(cloud, token, "security_group", {"name": "web"})
    rule = {"security_group_id": group["id"], "direction": "ingress", "protocol": "tcp"}
    cases = [
        (-16, 80, "Invalid value for port -16"),
        (80, 79, "port_range_min must be <= port_range_max"),
        (80, 65536, "Invalid value for port 65536"),
        (None, 6, "port_range_min must be <= port_range_max"),
    ]
    icmp = {**rule, "protocol": "icmp"}
    icmp_cases = [
        (1, 256, "Invalid value for ICMP code"),
        (None, 6, "ICMP type (port-range-min) is missing"),
        (300, 1, "Invalid value for ICMP type"),
    ]
    for body, (low, high, message) in [(rule, c) for c in cases] + [(icmp, c) for c in icmp_cases]:
        response = await cloud.call(
            "POST",
            f"{NET}/security-group-rules",
            token,
            json={"security_group_rule": {**body, "port_range_min": low, "port_range_max": high}},
        )
        assert response.status_code == 400
        assert message in response.json()["NeutronError"]["message"]
    renamed = await cloud.call(
        "PUT",
        f"{NET}/security-groups/{group['id']}",
        token,
        json={"security_group": {"name": "default"}},
    )
    assert renamed.status_code == 409
    assert renamed.json()["NeutronError"]["type"] == "SecurityGroupDefaultAlreadyExists"


async def test_router_routes_null_clears_them(cloud: CloudClient) -> None:
    token = await cloud.token()
    router = await create(cloud, token, "router", {"name": "r"})
    cleared = await cloud.call(
        "PUT", f"{NET}/routers/{router['id']}", token, json={"router": {"routes": None}}
    )
    assert cleared.status_code == 200, cleared.text
    assert cleared.json()["router"]["routes"] == []


async def test_agents_list_is_empty_for_projects(cloud: CloudClient) -> None:
    admin = await cloud.token()
    _, member = await cloud.project_member(admin, "agents")
    response = await cloud.call("GET", f"{NET}/agents", member)
    assert response.status_code == 200
    assert response.json() == {"agents": []}
    extensions = (await cloud.call("GET", f"{NET}/extensions", member)).json()["extensions"]
    assert "subnet-external-network" in {e["alias"] for e in extensions}


async def test_external_network_deleted_with_its_floating_ips(cloud: CloudClient) -> None:
    admin = await cloud.token()
    public = await create(cloud, admin, "network", {"name": "ext", "router:external": True})
    await create(
        cloud,
        admin,
        "subnet",
        {"network_id": public["id"], "cidr": "172.30.0.0/24", "ip_version": 4},
    )
    fip = await create(cloud, admin, "floatingip", {"floating_network_id": public["id"]})
    deleted = await cloud.call("DELETE", f"{NET}/networks/{public['id']}", admin)
    assert deleted.status_code == 204, deleted.text
    assert (await cloud.call("GET", f"{NET}/floatingips/{fip['id']}", admin)).status_code == 404
    ports = (await cloud.call("GET", f"{NET}/ports", admin)).json()["ports"]
    assert fip["port_id"] is None and not [p for p in ports if p["network_id"] == public["id"]]
