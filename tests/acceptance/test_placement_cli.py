"""Placement acceptance: the openstack CLI with osc-placement against `onestack up` and against
`onestack serve placement` on PostgreSQL."""

from __future__ import annotations

import uuid

from tests.acceptance.conftest import Deployment, unique


def test_resource_providers_inventories_traits_aggregates(all_in_one: Deployment) -> None:
    cloud = all_in_one
    name = unique("compute")
    created = cloud.json("resource", "provider", "create", name)
    rp = created["uuid"]
    assert (created["name"], created["generation"]) == (name, 0)
    assert name in {p["name"] for p in cloud.json("resource", "provider", "list")}
    assert cloud.json("resource", "provider", "show", rp)["name"] == name

    inventory = cloud.json(
        "resource", "provider", "inventory", "set", rp,
        "--resource", "VCPU=8", "--resource", "VCPU:allocation_ratio=4.0",
        "--resource", "MEMORY_MB=4096", "--resource", "DISK_GB=100",
    )  # fmt: skip
    by_class = {row["resource_class"]: row for row in inventory}
    assert by_class["VCPU"]["allocation_ratio"] == 4.0 and by_class["MEMORY_MB"]["total"] == 4096
    listed = cloud.json("resource", "provider", "inventory", "list", rp)
    assert {row["resource_class"] for row in listed} == {"VCPU", "MEMORY_MB", "DISK_GB"}

    trait = f"CUSTOM_{uuid.uuid4().hex[:8].upper()}"
    cloud.openstack("trait", "create", trait)
    assert trait in {row["name"] for row in cloud.json("trait", "list")}
    cloud.json("resource", "provider", "trait", "set", "--trait", trait,
               "--trait", "HW_CPU_X86_AVX2", rp)  # fmt: skip
    traits = {row["name"] for row in cloud.json("resource", "provider", "trait", "list", rp)}
    assert traits == {trait, "HW_CPU_X86_AVX2"}

    aggregate = str(uuid.uuid4())
    generation = cloud.json("resource", "provider", "show", rp)["generation"]
    cloud.json("resource", "provider", "aggregate", "set", "--aggregate", aggregate,
               "--generation", str(generation), rp)  # fmt: skip
    aggregates = cloud.json("resource", "provider", "aggregate", "list", rp)
    assert [row["uuid"] for row in aggregates] == [aggregate]

    rows = cloud.json(
        "allocation", "candidate", "list", "--resource", "VCPU=1", "--required", trait
    )
    assert [row["resource provider"] for row in rows] == [rp]
    assert rows[0]["allocation"] == "VCPU=1"
    assert "VCPU=0/32" in rows[0]["inventory used/capacity"]

    consumer = str(uuid.uuid4())
    project = cloud.json("token", "issue")["project_id"]
    cloud.json("resource", "provider", "allocation", "set", consumer,
               "--allocation", f"rp={rp},VCPU=2,MEMORY_MB=512",
               "--project-id", project, "--user-id", "u1")  # fmt: skip
    usage = {row["resource_class"]: row["usage"]
             for row in cloud.json("resource", "provider", "usage", "show", rp)}  # fmt: skip
    assert usage["VCPU"] == 2 and usage["MEMORY_MB"] == 512
    per_project = {row["resource_class"]: row["usage"]
                   for row in cloud.json("resource", "usage", "show", project)}  # fmt: skip
    assert per_project["VCPU"] >= 2
    refused = cloud.openstack("resource", "provider", "delete", rp, check=False)
    assert refused.returncode != 0 and "allocations" in refused.stderr
    cloud.openstack("resource", "provider", "allocation", "delete", consumer)
    cloud.openstack("resource", "provider", "delete", rp)
    assert rp not in {p["uuid"] for p in cloud.json("resource", "provider", "list")}
    cloud.openstack("trait", "delete", trait)


def test_resource_classes(all_in_one: Deployment) -> None:
    name = f"CUSTOM_{uuid.uuid4().hex[:8].upper()}"
    cloud = all_in_one
    cloud.openstack("resource", "class", "create", name)
    classes = [row["name"] for row in cloud.json("resource", "class", "list")]
    assert classes[:3] == ["VCPU", "MEMORY_MB", "DISK_GB"] and name in classes
    assert cloud.json("resource", "class", "show", name)["name"] == name
    duplicate = cloud.openstack("resource", "class", "create", name, check=False)
    assert duplicate.returncode != 0
    cloud.openstack("resource", "class", "delete", name)


def test_placement_only_for_admins(all_in_one: Deployment) -> None:
    cloud = all_in_one
    project = unique("plp")
    cloud.json("project", "create", project)
    cloud.json("user", "create", "--password", "pw", f"{project}-user")
    cloud.openstack("role", "add", "--user", f"{project}-user", "--project", project, "member")
    denied = cloud.openstack(
        "resource", "provider", "list", env=cloud.env_for(f"{project}-user", "pw", project),
        check=False,
    )  # fmt: skip
    assert denied.returncode != 0 and "403" in denied.stderr


def test_placement_served_apart(scale_out: Deployment) -> None:
    """``onestack serve placement`` on PostgreSQL, found through the catalog."""
    cloud = scale_out
    rp = cloud.json("resource", "provider", "create", unique("apart"))["uuid"]
    cloud.json("resource", "provider", "inventory", "set", rp, "--resource", "VCPU=4")
    rows = cloud.json("allocation", "candidate", "list", "--resource", "VCPU=3")
    assert rp in {row["resource provider"] for row in rows}
    cloud.openstack("resource", "provider", "delete", rp)
