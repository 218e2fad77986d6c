"""Network acceptance (networks, subnets, ports): the openstack CLI against `onestack up`."""

from __future__ import annotations

import ipaddress
import subprocess
import time

from tests.acceptance.conftest import Deployment, unique


def data_plane(cloud: Deployment) -> dict[str, object]:
    """The configurations the cloud's network agent reports (driver, detected features)."""
    [agent] = cloud.json("network", "agent", "list")
    configurations: dict[str, object] = cloud.json("network", "agent", "show", agent["ID"])[
        "configuration"
    ]
    return configurations


def host_leftovers(*ids: str) -> list[str]:
    """Namespaces and links of this host that still carry one of ``ids`` (or its prefix)."""
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    found = []
    for ident in ids:
        found += [line for line in namespaces.splitlines() if ident in line]
        found += [line for line in links.splitlines() if f"brq{ident[:11]}" in line]
    return found


def test_networks_subnets_ports_of_the_seed(all_in_one: Deployment) -> None:
    cloud = all_in_one
    intnet, intsub = unique("intnet"), unique("intsub")
    network = cloud.json("network", "create", "--tag", "seed", intnet)
    assert network["status"] == "ACTIVE"
    assert cloud.json("network", "show", intnet)["tags"] == ["seed"]
    subnet = cloud.json(
        "subnet", "create", "--network", intnet, "--subnet-range", "10.5.5.0/24", intsub
    )
    assert (subnet["cidr"], subnet["gateway_ip"]) == ("10.5.5.0/24", "10.5.5.1")
    external, external_subnet = unique("external_network"), unique("external_subnet")
    public = cloud.json(
        "network", "create", "--external", "--provider-network-type", "flat",
        "--provider-physical-network", "public", external,
    )  # fmt: skip
    assert public["router:external"] is True and public["provider:network_type"] == "flat"
    cloud.json(
        "subnet", "create", "--no-dhcp", "--network", external, "--subnet-range", "203.0.113.0/24",
        "--allocation-pool", "start=203.0.113.100,end=203.0.113.200", external_subnet,
    )  # fmt: skip
    router = unique("r1")
    cloud.json("router", "create", router)
    cloud.openstack("router", "set", "--external-gateway", external, router)
    cloud.openstack("router", "add", "subnet", router, intsub)
    gateway = cloud.json("router", "show", router)["external_gateway_info"]
    assert gateway["network_id"] == public["id"]
    port = cloud.json("port", "create", "--network", intnet, unique("p1"))
    address = port["fixed_ips"][0]["ip_address"]
    assert ipaddress.ip_address(address) in ipaddress.ip_network("10.5.5.0/24")
    fip = cloud.json("floating", "ip", "create", external)
    assert ipaddress.ip_address(fip["floating_ip_address"]) in ipaddress.ip_network(
        "203.0.113.0/24"
    )
    cloud.openstack("floating", "ip", "set", "--port", port["id"], fip["floating_ip_address"])
    shown = cloud.json("floating", "ip", "show", fip["floating_ip_address"])
    assert (shown["port_id"], shown["fixed_ip_address"]) == (port["id"], address)

    networks = {n["Name"]: n for n in cloud.json("network", "list")}
    assert networks[intnet]["Subnets"] == [subnet["id"]]
    subnets = {s["Name"]: s for s in cloud.json("subnet", "list")}
    assert subnets[intsub]["Subnet"] == "10.5.5.0/24"
    assert subnets[external_subnet]["Network"] == public["id"]

    in_use = cloud.openstack("network", "delete", intnet, check=False)
    assert in_use.returncode != 0
    cloud.openstack("floating", "ip", "delete", fip["floating_ip_address"])
    cloud.openstack("port", "delete", port["id"])
    cloud.openstack("router", "remove", "subnet", router, intsub)
    cloud.openstack("router", "delete", router)
    cloud.openstack("subnet", "delete", intsub)
    cloud.openstack("network", "delete", intnet)
    cloud.openstack("network", "delete", external)
    assert intnet not in [n["Name"] for n in cloud.json("network", "list")]
    if data_plane(cloud)["driver"] == "linuxbridge":
        # The agent removes the bridges and namespaces soon after the deletes.
        deadline = time.monotonic() + 20
        while host_leftovers(network["id"], public["id"], gateway["network_id"]):
            assert time.monotonic() < deadline, host_leftovers(network["id"], public["id"])
            time.sleep(0.3)


def test_security_group_rule_on_default(all_in_one: Deployment) -> None:
    cloud = all_in_one
    project = unique("sgp")
    cloud.json("project", "create", project)
    cloud.json("user", "create", "--password", "pw", f"{project}-user")
    cloud.openstack("role", "add", "--user", f"{project}-user", "--project", project, "member")
    env = cloud.env_for(f"{project}-user", "pw", project)
    rule = cloud.json(
        "security", "group", "rule", "create", "--protocol", "icmp", "default", env=env
    )
    assert rule["protocol"] == "icmp" and rule["direction"] == "ingress"
    groups = cloud.json("security", "group", "list", env=env)
    assert [g["Name"] for g in groups] == ["default"]
    rules = cloud.json("security", "group", "rule", "list", "default", env=env)
    assert len(rules) == 5  # four defaults and the new one


def test_network_agent_list(all_in_one: Deployment) -> None:
    [agent] = all_in_one.json("network", "agent", "list")
    assert agent["Alive"] is True and agent["Binary"] == "onestack-network-agent"
    configuration = data_plane(all_in_one)
    assert configuration["driver"] in ("noop", "linuxbridge")
    if configuration["driver"] == "linuxbridge":
        assert agent["Agent Type"] == "Linux bridge agent"
        features = configuration["features"]
        assert isinstance(features, dict) and {"vxlan", "vlan", "bridges"} <= set(features)


def test_network_type_the_host_cannot_build_is_refused(all_in_one: Deployment) -> None:
    configuration = data_plane(all_in_one)
    available = set(configuration.get("network_types") or ())  # type: ignore[call-overload]
    missing = [t for t in ("vlan", "vxlan") if t not in available]
    if not missing:
        return  # this host builds every type
    name = unique("net")
    refused = all_in_one.openstack(
        "network", "create", "--provider-network-type", missing[0],
        "--provider-physical-network", "physnet1", "--provider-segment", "42", name,
        check=False,
    )  # fmt: skip
    assert refused.returncode != 0 and "400" in refused.stderr + refused.stdout
    assert name not in [n["Name"] for n in all_in_one.json("network", "list")]
