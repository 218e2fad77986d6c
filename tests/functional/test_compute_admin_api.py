"""Compute admin resources in process: aggregates, zones, services, hypervisors, server
groups, quotas, limits, usage, migrations and instance actions, with their error codes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from onestack.cloud import Cloud
from onestack.compute.host_aggregates import zone_member_of
from tests.conftest import ADMIN_PASSWORD, CloudClient, make_settings

pytestmark = pytest.mark.asyncio(loop_scope="module")

V21 = "/compute/v2.1"


class ComputeCloud(CloudClient):
    admin: str = ""
    member: str = ""
    member_project: str = ""
    image_id: str = ""

    async def nova(
        self, method: str, path: str, version: str = "2.90", token: str | None = None, **kw: Any
    ) -> httpx.Response:
        headers = {"OpenStack-API-Version": f"compute {version}", **kw.pop("headers", {})}
        return await self.call(method, f"{V21}{path}", token or self.admin, headers=headers, **kw)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def compute(tmp_path_factory: Any) -> AsyncIterator[ComputeCloud]:
    """Identity, image, placement and compute with three fake hosts."""
    settings = make_settings(tmp_path_factory.mktemp("compute-admin"), port=8000)
    settings.services = ["identity", "image", "placement", "compute"]
    settings.compute.fake_hosts = 3
    settings.compute.report_interval = 1.0
    instance = Cloud(settings)
    await instance.start(admin_password=ADMIN_PASSWORD)
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=instance.app), base_url="http://127.0.0.1:8000"
    )
    cloud = ComputeCloud(instance, client)
    cloud.admin = await cloud.token()
    cloud.member_project, cloud.member = await cloud.project_member(cloud.admin, "tenant1")
    image = await cloud.call("POST", "/image/v2/images", cloud.admin, json={
        "name": "img", "disk_format": "raw", "container_format": "bare", "visibility": "public",
    })  # fmt: skip
    cloud.image_id = image.json()["id"]
    uploaded = await cloud.call(
        "PUT", f"/image/v2/images/{cloud.image_id}/file", cloud.admin, content=b"\0" * 4096,
        headers={"Content-Type": "application/octet-stream"},
    )  # fmt: skip
    assert uploaded.status_code == 204, uploaded.text
    for _ in range(200):
        hypervisors = (await cloud.nova("GET", "/os-hypervisors")).json()["hypervisors"]
        providers = await cloud.call("GET", "/placement/resource_providers", cloud.admin)
        if len(hypervisors) == 3 and len(providers.json()["resource_providers"]) == 3:
            break
        await asyncio.sleep(0.05)
    try:
        yield cloud
    finally:
        await client.aclose()
        await instance.stop()


def error(response: httpx.Response, status: int, key: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert key in body, body
    message: str = body[key]["message"]
    return message


async def test_aggregate_lifecycle_and_errors(compute: ComputeCloud) -> None:
    created = await compute.nova(
        "POST", "/os-aggregates", json={"aggregate": {"name": "agg-a", "availability_zone": "za"}}
    )
    assert created.status_code == 200, created.text
    aggregate = created.json()["aggregate"]
    assert aggregate["availability_zone"] == "za" and aggregate["uuid"]
    agg_id = aggregate["id"]
    error(
        await compute.nova("POST", "/os-aggregates", json={"aggregate": {"name": "agg-a"}}),
        409,
        "conflictingRequest",
    )
    error(
        await compute.nova("POST", "/os-aggregates", json={"aggregate": {"name": ""}}),
        400,
        "badRequest",
    )
    error(await compute.nova("GET", "/os-aggregates/9999"), 404, "itemNotFound")
    action = f"/os-aggregates/{agg_id}/action"
    error(
        await compute.nova("POST", action, json={"add_host": {"host": "nohost"}}),
        404,
        "itemNotFound",
    )
    added = await compute.nova("POST", action, json={"add_host": {"host": "host1"}})
    assert added.status_code == 200, added.text
    assert added.json()["aggregate"]["hosts"] == ["host1"]
    error(
        await compute.nova("POST", action, json={"add_host": {"host": "host1"}}),
        409,
        "conflictingRequest",
    )
    # A second zone for host1 is refused; a zoneless aggregate is fine.
    other = await compute.nova(
        "POST", "/os-aggregates", json={"aggregate": {"name": "agg-b", "availability_zone": "zb"}}
    )
    other_id = other.json()["aggregate"]["id"]
    error(
        await compute.nova(
            "POST", f"/os-aggregates/{other_id}/action", json={"add_host": {"host": "host1"}}
        ),
        409,
        "conflictingRequest",
    )
    plain = await compute.nova("POST", "/os-aggregates", json={"aggregate": {"name": "agg-c"}})
    plain_id = plain.json()["aggregate"]["id"]
    assert (
        await compute.nova(
            "POST", f"/os-aggregates/{plain_id}/action", json={"add_host": {"host": "host1"}}
        )
    ).status_code == 200
    error(
        await compute.nova(
            "POST",
            f"/os-aggregates/{plain_id}/action",
            json={"set_metadata": {"metadata": {"availability_zone": "zc"}}},
        ),
        400,
        "badRequest",
    )
    metadata = await compute.nova(
        "POST", action, json={"set_metadata": {"metadata": {"SSD": "true", "gone": None}}}
    )
    assert metadata.json()["aggregate"]["metadata"] == {"availability_zone": "za", "SSD": "true"}
    # Placement sees host1's provider in the aggregate.
    hypervisors = await compute.nova("GET", "/os-hypervisors?hypervisor_hostname_pattern=host1")
    node_uuid = hypervisors.json()["hypervisors"][0]["id"]
    placement = await compute.call(
        "GET",
        f"/placement/resource_providers/{node_uuid}/aggregates",
        compute.admin,
        headers={"OpenStack-API-Version": "placement 1.19"},
    )
    assert aggregate["uuid"] in placement.json()["aggregates"]
    # The placement prefilter of a zone: the aggregates that make it.
    db = compute.cloud.units["compute"].service.db  # type: ignore[attr-defined]
    async with db.session() as session:
        assert await zone_member_of(session, "za", "nova") == [aggregate["uuid"]]
        assert await zone_member_of(session, "nova", "nova") == []
        assert await zone_member_of(session, "nowhere", "nova") == []
    error(await compute.nova("DELETE", f"/os-aggregates/{agg_id}"), 400, "badRequest")
    error(
        await compute.nova("POST", action, json={"remove_host": {"host": "host2"}}),
        404,
        "itemNotFound",
    )
    zones = (await compute.nova("GET", "/os-availability-zone")).json()["availabilityZoneInfo"]
    assert {"za", "nova"} <= {zone["zoneName"] for zone in zones}
    detail = (await compute.nova("GET", "/os-availability-zone/detail")).json()
    by_zone = {zone["zoneName"]: zone for zone in detail["availabilityZoneInfo"]}
    assert "host1" in by_zone["za"]["hosts"]
    assert "nova-conductor" in next(iter(by_zone["internal"]["hosts"].values()))
    for aggregate_id in (agg_id, plain_id):
        removed = await compute.nova(
            "POST",
            f"/os-aggregates/{aggregate_id}/action",
            json={"remove_host": {"host": "host1"}},
        )
        assert removed.status_code == 200, removed.text
    placement = await compute.call(
        "GET",
        f"/placement/resource_providers/{node_uuid}/aggregates",
        compute.admin,
        headers={"OpenStack-API-Version": "placement 1.19"},
    )
    assert placement.json()["aggregates"] == []
    for aggregate_id in (agg_id, other_id, plain_id):
        assert (await compute.nova("DELETE", f"/os-aggregates/{aggregate_id}")).status_code == 200
    error(await compute.nova("GET", "/os-aggregates", token=compute.member), 403, "forbidden")


async def test_services_disable_enable_and_force_down(compute: ComputeCloud) -> None:
    services = (await compute.nova("GET", "/os-services?binary=nova-compute")).json()["services"]
    assert sorted(s["host"] for s in services) == ["host1", "host2", "host3"]
    assert all(s["state"] == "up" and s["status"] == "enabled" for s in services)
    host3 = next(s for s in services if s["host"] == "host3")
    path = f"/os-services/{host3['id']}"
    disabled = await compute.nova(
        "PUT", path, json={"status": "disabled", "disabled_reason": "maintenance"}
    )
    assert disabled.status_code == 200, disabled.text
    assert disabled.json()["service"]["disabled_reason"] == "maintenance"
    error(await compute.nova("PUT", path, json={"status": "paused"}), 400, "badRequest")
    error(
        await compute.nova("PUT", path, json={"status": "enabled", "disabled_reason": "x"}),
        400,
        "badRequest",
    )
    error(
        await compute.nova("PUT", "/os-services/00000000-0000-0000-0000-000000000000",
                           json={"status": "enabled"}),
        404,
        "itemNotFound",
    )  # fmt: skip
    forced = await compute.nova("PUT", path, json={"forced_down": True})
    assert forced.json()["service"]["state"] == "down"
    await compute.nova("PUT", path, json={"forced_down": False, "status": "enabled"})
    # Before 2.53: by host and binary.
    old = await compute.nova(
        "PUT", "/os-services/disable", "2.11", json={"host": "host3", "binary": "nova-compute"}
    )
    assert old.json()["service"]["status"] == "disabled"
    enabled = await compute.nova(
        "PUT", "/os-services/enable", "2.11", json={"host": "host3", "binary": "nova-compute"}
    )
    assert enabled.json()["service"]["status"] == "enabled"
    listed = (await compute.nova("GET", "/os-services", "2.1")).json()["services"]
    assert all(isinstance(s["id"], int) for s in listed)
    # Deleting a service without servers takes its host out of its aggregates.
    aggregate = await compute.nova("POST", "/os-aggregates", json={"aggregate": {"name": "gone"}})
    gone_id = aggregate.json()["aggregate"]["id"]
    await compute.nova(
        "POST", f"/os-aggregates/{gone_id}/action", json={"add_host": {"host": "host3"}}
    )
    assert (await compute.nova("DELETE", path)).status_code == 204
    error(await compute.nova("DELETE", path), 404, "itemNotFound")
    shown = await compute.nova("GET", f"/os-aggregates/{gone_id}")
    assert shown.json()["aggregate"]["hosts"] == []
    await compute.nova("DELETE", f"/os-aggregates/{gone_id}")
    # The running agent registers again with its next heartbeat.
    for _ in range(200):
        hypervisors = (await compute.nova("GET", "/os-hypervisors")).json()["hypervisors"]
        if len(hypervisors) == 3 and all(h["state"] == "up" for h in hypervisors):
            break
        await asyncio.sleep(0.05)
    assert len(hypervisors) == 3
    error(await compute.nova("GET", "/os-services", token=compute.member), 403, "forbidden")


async def test_hypervisors(compute: ComputeCloud) -> None:
    listed = (await compute.nova("GET", "/os-hypervisors/detail", "2.87")).json()["hypervisors"]
    assert len(listed) == 3 and all(h["state"] == "up" for h in listed)
    assert listed[0]["vcpus"] > 0 and isinstance(listed[0]["cpu_info"], dict)
    shown = await compute.nova("GET", f"/os-hypervisors/{listed[0]['id']}", "2.87")
    assert shown.json()["hypervisor"]["hypervisor_hostname"] == listed[0]["hypervisor_hostname"]
    newest = await compute.nova("GET", f"/os-hypervisors/{listed[0]['id']}", "2.88")
    assert "vcpus" not in newest.json()["hypervisor"]
    stats = (await compute.nova("GET", "/os-hypervisors/statistics", "2.1")).json()
    assert stats["hypervisor_statistics"]["count"] == 3
    error(await compute.nova("GET", "/os-hypervisors/statistics", "2.88"), 404, "itemNotFound")
    error(await compute.nova("GET", "/os-hypervisors/nope", "2.53"), 404, "itemNotFound")
    old = (await compute.nova("GET", "/os-hypervisors", "2.1")).json()["hypervisors"]
    assert all(isinstance(h["id"], int) for h in old)
    servers = await compute.nova("GET", "/os-hypervisors/host2/servers", "2.1")
    assert servers.json()["hypervisors"][0]["hypervisor_hostname"] == "host2"
    error(await compute.nova("GET", "/os-hypervisors?with_servers=true", "2.52"), 400, "badRequest")


async def test_server_groups(compute: ComputeCloud) -> None:
    created = await compute.nova(
        "POST",
        "/os-server-groups",
        "2.64",
        token=compute.member,
        json={
            "server_group": {
                "name": "spread",
                "policy": "anti-affinity",
                "rules": {"max_server_per_host": 2},
            }
        },
    )
    assert created.status_code == 200, created.text
    group = created.json()["server_group"]
    assert group["policy"] == "anti-affinity" and group["rules"] == {"max_server_per_host": 2}
    old = await compute.nova("GET", f"/os-server-groups/{group['id']}", "2.1", token=compute.member)
    assert old.json()["server_group"]["policies"] == ["anti-affinity"]
    for body, version in (
        ({"name": "x", "policy": "affinity", "rules": {"max_server_per_host": 2}}, "2.64"),
        ({"name": "x", "policy": "clustered"}, "2.64"),
        ({"name": "x", "policies": ["soft-affinity"]}, "2.14"),
        ({"name": "x", "policies": ["affinity"]}, "2.64"),
        ({"name": "x", "policy": "anti-affinity", "rules": {"max_server_per_host": 0}}, "2.64"),
    ):
        error(
            await compute.nova("POST", "/os-server-groups", version, json={"server_group": body}),
            400,
            "badRequest",
        )
    error(await compute.nova("GET", "/os-server-groups/nope"), 404, "itemNotFound")
    # Another project sees none of it.
    assert (await compute.nova("GET", "/os-server-groups")).json()["server_groups"] == []
    everyone = await compute.nova("GET", "/os-server-groups?all_projects=true")
    assert [g["id"] for g in everyone.json()["server_groups"]] == [group["id"]]
    quota = await compute.nova(
        "PUT",
        f"/os-quota-sets/{compute.member_project}",
        json={"quota_set": {"server_groups": 1}},
    )
    assert quota.status_code == 200, quota.text
    error(
        await compute.nova(
            "POST",
            "/os-server-groups",
            token=compute.member,
            json={"server_group": {"name": "more", "policy": "affinity"}},
        ),
        403,
        "forbidden",
    )
    deleted = await compute.nova("DELETE", f"/os-server-groups/{group['id']}", token=compute.member)
    assert deleted.status_code == 204
    again = await compute.nova(
        "POST",
        "/os-server-groups",
        token=compute.member,
        json={"server_group": {"name": "more", "policy": "affinity"}},
    )
    assert again.status_code == 200, again.text
    await compute.nova("DELETE", f"/os-quota-sets/{compute.member_project}")


async def test_quota_sets_and_limits(compute: ComputeCloud) -> None:
    project = compute.member_project
    shown = (await compute.nova("GET", f"/os-quota-sets/{project}", token=compute.member)).json()
    assert shown["quota_set"]["instances"] == 10 and shown["quota_set"]["id"] == project
    assert "injected_files" not in shown["quota_set"]
    old = (await compute.nova("GET", f"/os-quota-sets/{project}", "2.1")).json()["quota_set"]
    assert old["injected_files"] == 5 and "floating_ips" in old
    error(
        await compute.nova(
            "PUT",
            f"/os-quota-sets/{project}",
            token=compute.member,
            json={"quota_set": {"instances": 2}},
        ),
        403,
        "forbidden",
    )
    error(
        await compute.nova(
            "PUT", f"/os-quota-sets/{project}", json={"quota_set": {"instances": -2}}
        ),
        400,
        "badRequest",
    )
    error(
        await compute.nova("PUT", f"/os-quota-sets/{project}", json={"quota_set": {"bogus": 1}}),
        400,
        "badRequest",
    )
    error(
        await compute.nova(
            "PUT", f"/os-quota-sets/{project}?user_id=x", json={"quota_set": {"instances": 11}}
        ),
        400,
        "badRequest",
    )
    updated = await compute.nova(
        "PUT", f"/os-quota-sets/{project}", json={"quota_set": {"instances": 2, "cores": 4}}
    )
    assert updated.json()["quota_set"]["instances"] == 2
    detail = (await compute.nova("GET", f"/os-quota-sets/{project}/detail")).json()
    assert detail["quota_set"]["instances"] == {"limit": 2, "in_use": 0, "reserved": 0}
    defaults = (await compute.nova("GET", f"/os-quota-sets/{project}/defaults")).json()
    assert defaults["quota_set"]["instances"] == 10
    limits = (await compute.nova("GET", "/limits", token=compute.member)).json()["limits"]
    assert limits["absolute"]["maxTotalInstances"] == 2
    assert limits["absolute"]["totalInstancesUsed"] == 0
    error(
        await compute.nova("GET", f"/limits?tenant_id={project}x", token=compute.member),
        403,
        "forbidden",
    )
    admin_view = await compute.nova("GET", f"/limits?tenant_id={project}")
    assert admin_view.json()["limits"]["absolute"]["maxTotalCores"] == 4
    reset = await compute.nova("DELETE", f"/os-quota-sets/{project}")
    assert reset.status_code == 202
    shown = (await compute.nova("GET", f"/os-quota-sets/{project}")).json()
    assert shown["quota_set"]["instances"] == 10


async def test_usage_migrations_and_actions(compute: ComputeCloud) -> None:
    usage = await compute.nova(
        "GET", "/os-simple-tenant-usage?start=2020-01-01T00:00:00&end=2030-01-01T00:00:00"
    )
    assert usage.status_code == 200 and "tenant_usages" in usage.json()
    error(
        await compute.nova(
            "GET", "/os-simple-tenant-usage?start=2030-01-01T00:00:00&end=2020-01-01T00:00:00"
        ),
        400,
        "badRequest",
    )
    error(await compute.nova("GET", "/os-simple-tenant-usage?start=yesterday"), 400, "badRequest")
    error(
        await compute.nova("GET", "/os-simple-tenant-usage", token=compute.member),
        403,
        "forbidden",
    )
    own = await compute.nova(
        "GET", f"/os-simple-tenant-usage/{compute.member_project}", token=compute.member
    )
    assert own.status_code == 200 and own.json() == {"tenant_usage": {}}
    migrations = await compute.nova("GET", "/os-migrations")
    assert migrations.status_code == 200 and migrations.json() == {"migrations": []}
    error(await compute.nova("GET", "/os-migrations", token=compute.member), 403, "forbidden")
    error(
        await compute.nova(
            "GET", "/servers/00000000-0000-0000-0000-000000000000/os-instance-actions"
        ),
        404,
        "itemNotFound",
    )


async def test_views_of_a_running_server(compute: ComputeCloud) -> None:
    """Actions, usage, hypervisor servers, limits and quota usage follow a real boot."""
    body = {"name": "viewed", "imageRef": compute.image_id, "flavorRef": "1", "networks": "none"}
    created = await compute.nova("POST", "/servers", token=compute.member, json={"server": body})
    assert created.status_code == 202, created.text
    server_id = created.json()["server"]["id"]
    for _ in range(400):
        server = (await compute.nova("GET", f"/servers/{server_id}")).json()["server"]
        if server["status"] != "BUILD":
            break
        await asyncio.sleep(0.02)
    assert server["status"] == "ACTIVE", server
    host = server["OS-EXT-SRV-ATTR:host"]

    actions = await compute.nova(
        "GET", f"/servers/{server_id}/os-instance-actions", token=compute.member
    )
    [create] = actions.json()["instanceActions"]
    assert create["action"] == "create" and create["project_id"] == compute.member_project
    shown = await compute.nova(
        "GET",
        f"/servers/{server_id}/os-instance-actions/{create['request_id']}",
        token=compute.member,
    )
    events = shown.json()["instanceAction"]["events"]
    assert events and all("traceback" not in event for event in events)
    assert all("host" not in event and isinstance(event["hostId"], str) for event in events)
    admin_view = await compute.nova(
        "GET", f"/servers/{server_id}/os-instance-actions/{create['request_id']}"
    )
    assert any(e["host"] == host for e in admin_view.json()["instanceAction"]["events"])
    error(
        await compute.nova(
            "GET", f"/servers/{server_id}/os-instance-actions/req-nope", token=compute.member
        ),
        404,
        "itemNotFound",
    )
    _, stranger = await compute.project_member(compute.admin, "stranger")
    error(
        await compute.nova("GET", f"/servers/{server_id}/os-instance-actions", token=stranger),
        404,
        "itemNotFound",
    )

    usage = await compute.nova(
        "GET", f"/os-simple-tenant-usage/{compute.member_project}", token=compute.member
    )
    [server_usage] = usage.json()["tenant_usage"]["server_usages"]
    assert server_usage["instance_id"] == server_id and server_usage["state"] == "active"
    everyone = await compute.nova("GET", "/os-simple-tenant-usage?detailed=1")
    assert compute.member_project in {u["tenant_id"] for u in everyone.json()["tenant_usages"]}

    on_host = await compute.nova(
        "GET", f"/os-hypervisors?hypervisor_hostname_pattern={host}&with_servers=true", "2.53"
    )
    assert {"uuid": server_id, "name": "viewed"} in on_host.json()["hypervisors"][0]["servers"]
    limits = (await compute.nova("GET", "/limits", token=compute.member)).json()["limits"]
    assert limits["absolute"]["totalInstancesUsed"] == 1
    detail = (await compute.nova("GET", f"/os-quota-sets/{compute.member_project}/detail")).json()
    assert detail["quota_set"]["instances"]["in_use"] == 1
    error(
        await compute.nova(
            "PUT", f"/os-quota-sets/{compute.member_project}", json={"quota_set": {"instances": 0}}
        ),
        400,
        "badRequest",
    )

    services = (await compute.nova("GET", f"/os-services?host={host}&binary=nova-compute")).json()
    service_id = services["services"][0]["id"]
    error(await compute.nova("DELETE", f"/os-services/{service_id}"), 409, "conflictingRequest")
    assert (await compute.nova("DELETE", f"/servers/{server_id}")).status_code == 204
