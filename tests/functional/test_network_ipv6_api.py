"""IPv6 in the Neutron API in-process: address modes, EUI-64 addresses, router interfaces."""

from __future__ import annotations

from typing import Any

from onestack.network import ipam
from tests.conftest import CloudClient
from tests.functional.test_network_api import NET, create, error


async def test_ipv6_modes_are_checked_as_neutron_does(cloud: CloudClient) -> None:
    token = await cloud.token()
    network = await create(cloud, token, "network", {"name": "v6modes"})
    base = {"network_id": network["id"], "ip_version": 6, "cidr": "fd00:10::/64"}
    cases = [
        {**base, "ipv6_ra_mode": "slaac", "ipv6_address_mode": "dhcpv6-stateful"},
        {**base, "ipv6_address_mode": "slaac", "enable_dhcp": False},
        {**base, "cidr": "fd00:10::/80", "ipv6_address_mode": "slaac"},
        {**base, "ipv6_ra_mode": "bogus"},
        {**base, "ip_version": 4, "cidr": "10.9.0.0/24", "ipv6_ra_mode": "slaac"},
    ]
    for body in cases:
        status, _ = await error(cloud, token, "POST", "/subnets", json={"subnet": body})
        assert status == 400, body
    # Stateful DHCPv6 needs no /64, and one mode alone is fine.
    await create(cloud, token, "subnet", {**base, "cidr": "fd00:11::/80",
                                          "ipv6_address_mode": "dhcpv6-stateful"})  # fmt: skip
    await create(cloud, token, "subnet", {**base, "ipv6_ra_mode": "slaac"})


async def test_ports_get_eui64_addresses_on_slaac_subnets(cloud: CloudClient) -> None:
    token = await cloud.token()
    network = await create(cloud, token, "network", {"name": "dualstack"})
    ident = network["id"]
    v4 = await create(cloud, token, "subnet", {"network_id": ident, "cidr": "10.8.0.0/24"})
    subnets = {}
    for index, mode in enumerate(("slaac", "dhcpv6-stateful", "dhcpv6-stateless")):
        body = {"network_id": ident, "ip_version": 6, "cidr": f"fd00:8:{index}::/64"}
        body |= {"ipv6_ra_mode": mode, "ipv6_address_mode": mode}
        subnets[mode] = await create(cloud, token, "subnet", body)
    mac = "fa:16:3e:aa:bb:cc"
    port = await create(cloud, token, "port", {"network_id": ident, "mac_address": mac})
    held = {ip["subnet_id"]: ip["ip_address"] for ip in port["fixed_ips"]}
    # As Neutron: one IPv4, one stateful IPv6, and the EUI-64 address in each SLAAC subnet.
    assert set(held) == {v4["id"], *(s["id"] for s in subnets.values())}
    assert held[subnets["slaac"]["id"]] == "fd00:8::f816:3eff:feaa:bbcc"
    assert held[subnets["dhcpv6-stateless"]["id"]] == "fd00:8:2:0:f816:3eff:feaa:bbcc"
    assert held[subnets["dhcpv6-stateful"]["id"]].startswith("fd00:8:1::")

    # Asking for the SLAAC subnet gives the EUI-64 address; naming an address there is refused.
    slaac = subnets["slaac"]["id"]
    asked = await create(cloud, token, "port", {"network_id": ident,
                                                "fixed_ips": [{"subnet_id": slaac}]})  # fmt: skip
    [fixed] = asked["fixed_ips"]
    assert fixed["ip_address"] == ipam.eui64("fd00:8::/64", asked["mac_address"])
    body = {"port": {"network_id": ident,
                     "fixed_ips": [{"subnet_id": slaac, "ip_address": "fd00:8::5"}]}}  # fmt: skip
    assert await error(cloud, token, "POST", "/ports", json=body) == (400, "InvalidInput")

    # A router's interface on a SLAAC subnet holds the subnet's gateway.
    router = await create(cloud, token, "router", {"name": "r6"})
    response = await cloud.call(
        "PUT", f"{NET}/routers/{router['id']}/add_router_interface", token,
        json={"subnet_id": slaac},
    )  # fmt: skip
    assert response.status_code == 200, response.text
    leg = (await cloud.call("GET", f"{NET}/ports/{response.json()['port_id']}", token)).json()
    assert leg["port"]["fixed_ips"] == [{"subnet_id": slaac, "ip_address": "fd00:8::1"}]


async def test_ipv6_subnets_of_a_network_share_one_router_leg(cloud: CloudClient) -> None:
    token = await cloud.token()
    network = await create(cloud, token, "network", {"name": "twov6"})
    first, second = [
        await create(cloud, token, "subnet", {"network_id": network["id"], "ip_version": 6,
                                              "cidr": cidr, "ipv6_ra_mode": "slaac",
                                              "ipv6_address_mode": "slaac"})
        for cidr in ("fd00:20::/64", "fd00:21::/64")
    ]  # fmt: skip
    v4 = await create(cloud, token, "subnet", {"network_id": network["id"], "cidr": "10.20.0.0/24"})
    router = await create(cloud, token, "router", {"name": "shared"})
    path = f"{NET}/routers/{router['id']}"

    async def add(subnet: dict[str, Any]) -> str:
        response = await cloud.call(
            "PUT", f"{path}/add_router_interface", token, json={"subnet_id": subnet["id"]}
        )
        assert response.status_code == 200, response.text
        return str(response.json()["port_id"])

    async def fixed(port_id: str) -> list[str]:
        shown = (await cloud.call("GET", f"{NET}/ports/{port_id}", token)).json()["port"]
        return sorted(ip["ip_address"] for ip in shown["fixed_ips"])

    leg = await add(first)
    assert await add(second) == leg  # as Neutron: one leg for the network's IPv6 subnets
    assert await add(v4) != leg  # IPv4 gets a leg of its own
    assert await fixed(leg) == ["fd00:20::1", "fd00:21::1"]
    removed = await cloud.call(
        "PUT", f"{path}/remove_router_interface", token, json={"subnet_id": first["id"]}
    )
    assert removed.json()["subnet_ids"] == [first["id"]]
    assert await fixed(leg) == ["fd00:21::1"]
    await cloud.call(
        "PUT", f"{path}/remove_router_interface", token, json={"subnet_id": second["id"]}
    )
    gone = await cloud.call("GET", f"{NET}/ports/{leg}", token)
    assert gone.status_code == 404


async def test_a_slaac_subnet_addresses_existing_ports_and_leaves_with_them(
    cloud: CloudClient,
) -> None:
    token = await cloud.token()
    network = await create(cloud, token, "network", {"name": "later"})
    await create(cloud, token, "subnet", {"network_id": network["id"], "cidr": "10.30.0.0/24"})
    port = await create(cloud, token, "port", {"network_id": network["id"]})
    slaac = await create(cloud, token, "subnet", {"network_id": network["id"], "ip_version": 6,
                                                  "cidr": "fd00:30::/64", "ipv6_ra_mode": "slaac",
                                                  "ipv6_address_mode": "slaac"})  # fmt: skip

    async def addresses() -> dict[str, str]:
        shown = (await cloud.call("GET", f"{NET}/ports/{port['id']}", token)).json()["port"]
        return {ip["subnet_id"]: ip["ip_address"] for ip in shown["fixed_ips"]}

    assert (await addresses())[slaac["id"]] == ipam.eui64("fd00:30::/64", port["mac_address"])
    # Its EUI-64 addresses do not hold the subnet (a router interface would).
    response = await cloud.call("DELETE", f"{NET}/subnets/{slaac['id']}", token)
    assert response.status_code == 204, response.text
    assert slaac["id"] not in await addresses()


async def test_eui64_addresses_follow_the_mac_and_survive_fixed_ip_updates(
    cloud: CloudClient,
) -> None:
    token = await cloud.token()
    network = await create(cloud, token, "network", {"name": "macmove"})
    slaac = await create(cloud, token, "subnet", {"network_id": network["id"], "ip_version": 6,
                                                  "cidr": "fd00:40::/64", "ipv6_ra_mode": "slaac",
                                                  "ipv6_address_mode": "slaac"})  # fmt: skip
    v4 = await create(cloud, token, "subnet", {"network_id": network["id"], "cidr": "10.40.0.0/24"})
    port = await create(cloud, token, "port", {"network_id": network["id"]})
    path = f"{NET}/ports/{port['id']}"
    # A client sends the whole list back (as `port set --fixed-ip` does): the EUI-64 stays.
    wanted = [*port["fixed_ips"], {"subnet_id": v4["id"], "ip_address": "10.40.0.77"}]
    response = await cloud.call("PUT", path, token, json={"port": {"fixed_ips": wanted}})
    assert response.status_code == 200, response.text
    held = {ip["ip_address"] for ip in response.json()["port"]["fixed_ips"]}
    assert ipam.eui64("fd00:40::/64", port["mac_address"]) in held and "10.40.0.77" in held
    mac = "fa:16:3e:01:02:03"
    response = await cloud.call("PUT", path, token, json={"port": {"mac_address": mac}})
    assert response.status_code == 200, response.text
    fixed = {ip["subnet_id"]: ip["ip_address"] for ip in response.json()["port"]["fixed_ips"]}
    assert fixed[slaac["id"]] == "fd00:40::f816:3eff:fe01:203"
