"""Subnet pools acceptance: `openstack subnet pool ...` and subnets carved from a pool."""

from __future__ import annotations

import ipaddress

from tests.acceptance.conftest import Deployment, unique


def test_subnet_pool_create_allocate_set_delete(all_in_one: Deployment) -> None:
    cloud = all_in_one
    pool, network = unique("pool1"), unique("pooled-net")
    created = cloud.json(
        "subnet", "pool", "create", "--pool-prefix", "10.200.0.0/16",
        "--default-prefix-length", "24", pool,
    )  # fmt: skip
    assert created["prefixes"] == ["10.200.0.0/16"] and created["default_prefixlen"] == 24
    cloud.json("network", "create", network)
    first, second = unique("s1"), unique("s2")
    carved = cloud.json(
        "subnet", "create", "--network", network, "--subnet-pool", pool,
        "--prefix-length", "26", first,
    )  # fmt: skip
    cidr = ipaddress.IPv4Network(carved["cidr"])
    assert cidr.prefixlen == 26 and cidr.subnet_of(ipaddress.IPv4Network("10.200.0.0/16"))
    assert carved["subnetpool_id"] == created["id"]
    by_default = cloud.json("subnet", "create", "--network", network, "--subnet-pool", pool, second)
    other = ipaddress.IPv4Network(by_default["cidr"])
    assert other.prefixlen == 24 and not other.overlaps(cidr)
    assert pool in [p["Name"] for p in cloud.json("subnet", "pool", "list")]
    cloud.openstack("subnet", "pool", "set", "--pool-prefix", "10.201.0.0/16", pool)
    shown = cloud.json("subnet", "pool", "show", pool)
    assert set(shown["prefixes"]) == {"10.200.0.0/15"}
    refused = cloud.openstack("subnet", "pool", "delete", pool, check=False)
    assert refused.returncode != 0
    cloud.openstack("subnet", "delete", first, second)
    cloud.openstack("subnet", "pool", "delete", pool)
    listed = [p["Name"] for p in cloud.json("subnet", "pool", "list")]
    assert pool not in listed
    cloud.openstack("network", "delete", network)
    quota = {row["Resource"]: row["Limit"] for row in cloud.json("quota", "show", "--network")}
    assert quota["subnet_pools"] == -1
