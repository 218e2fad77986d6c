"""The compute API in process with three fake hosts: error codes in Nova's shape, tenancy,
quota and placement rollback when no host fits, reschedules on failing hosts, deletes
that give back ports and allocations."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from onestack.cloud import Cloud
from tests.conftest import ADMIN_PASSWORD, CloudClient, make_settings

pytestmark = pytest.mark.asyncio(loop_scope="module")

V21 = "/compute/v2.1"


class ComputeCloud(CloudClient):
    admin: str = ""
    member: str = ""
    member_project: str = ""
    other: str = ""
    image_id: str = ""
    net_id: str = ""

    async def nova(
        self, method: str, path: str, version: str = "2.90", token: str | None = None, **kw: Any
    ) -> httpx.Response:
        headers = {"OpenStack-API-Version": f"compute {version}", **kw.pop("headers", {})}
        return await self.call(method, f"{V21}{path}", token or self.admin, headers=headers, **kw)

    async def boot(self, token: str | None = None, **server: Any) -> httpx.Response:
        body = {"name": "s", "imageRef": self.image_id, "flavorRef": "1",
                "networks": [{"uuid": self.net_id}], **server}  # fmt: skip
        return await self.nova("POST", "/servers", token=token, json={"server": body})

    async def wait(self, server_id: str, token: str | None = None) -> dict[str, Any]:
        """The server once it left BUILD (and any task)."""
        for _ in range(400):
            found = await self.nova("GET", f"/servers/{server_id}", token=token)
            server: dict[str, Any] = found.json().get("server", {})
            if found.status_code == 404 or (
                server["status"] != "BUILD" and server["OS-EXT-STS:task_state"] is None
            ):
                return server
            await asyncio.sleep(0.02)
        raise AssertionError(f"server {server_id} still building")


@contextlib.asynccontextmanager
async def compute_cloud(tmp_path: Path, **compute_settings: Any) -> AsyncIterator[ComputeCloud]:
    """A cloud with three fake hosts, an admin, members of two projects, a public image
    and a shared network (``compute_settings``: overrides of ``[compute]``)."""
    settings = make_settings(tmp_path, port=8000)
    settings.services = ["identity", "image", "network", "placement", "compute"]
    settings.compute.fake_hosts = 3
    settings.compute.report_interval = 1.0
    for name, value in compute_settings.items():
        setattr(settings.compute, name, value)
    instance = Cloud(settings)
    await instance.start(admin_password=ADMIN_PASSWORD)
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=instance.app), base_url="http://127.0.0.1:8000"
    )
    cloud = ComputeCloud(instance, client)
    cloud.admin = await cloud.token()
    cloud.member_project, cloud.member = await cloud.project_member(cloud.admin, "tenant1")
    _, cloud.other = await cloud.project_member(cloud.admin, "tenant2")
    image = await cloud.call("POST", "/image/v2/images", cloud.admin, json={
        "name": "img", "disk_format": "raw", "container_format": "bare", "visibility": "public",
    })  # fmt: skip
    cloud.image_id = image.json()["id"]
    uploaded = await cloud.call(
        "PUT", f"/image/v2/images/{cloud.image_id}/file", cloud.admin, content=b"\0" * 4096,
        headers={"Content-Type": "application/octet-stream"},
    )  # fmt: skip
    assert uploaded.status_code == 204, uploaded.text
    net = await cloud.call("POST", "/network/v2.0/networks", cloud.admin,
                           json={"network": {"name": "net", "shared": True}})  # fmt: skip
    cloud.net_id = net.json()["network"]["id"]
    await cloud.call("POST", "/network/v2.0/subnets", cloud.admin, json={"subnet": {
        "network_id": cloud.net_id, "cidr": "10.9.0.0/24", "ip_version": 4}})  # fmt: skip
    for _ in range(200):
        providers = await cloud.call("GET", "/placement/resource_providers", cloud.admin)
        if len(providers.json()["resource_providers"]) == 3:
            break
        await asyncio.sleep(0.05)
    try:
        yield cloud
    finally:
        await client.aclose()
        await instance.stop()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def compute(tmp_path_factory: Any) -> AsyncIterator[ComputeCloud]:
    async with compute_cloud(tmp_path_factory.mktemp("compute")) as cloud:
        yield cloud


def error(response: httpx.Response, status: int, key: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert key in body, body
    message: str = body[key]["message"]
    return message


async def test_microversions(compute: ComputeCloud) -> None:
    root = await compute.call("GET", f"{V21}/", compute.admin)
    assert root.json()["version"]["version"] == "2.96"
    error(await compute.nova("GET", "/servers", version="2.999"), 406, "notAcceptable")
    error(await compute.nova("GET", "/servers", version="two"), 400, "badRequest")
    latest = await compute.nova("GET", "/flavors", version="latest")
    assert latest.headers["openstack-api-version"] == "compute 2.96"


async def test_bad_requests(compute: ComputeCloud) -> None:
    assert "Flavor 999" in error(await compute.boot(flavorRef="999"), 400, "badRequest")
    assert "Image" in error(await compute.boot(imageRef="nope"), 400, "badRequest")
    error(await compute.boot(networks=[{"uuid": "nope"}]), 400, "badRequest")
    error(await compute.boot(key_name="nope"), 400, "badRequest")
    error(await compute.boot(name=""), 400, "badRequest")
    error(await compute.boot(availability_zone="nozone"), 400, "badRequest")
    # Only the admin picks a host.
    error(await compute.boot(token=compute.member, availability_zone="nova:host1"), 403,
          "forbidden")  # fmt: skip
    filtered = await compute.nova("GET", "/servers?host=host1", token=compute.member)
    error(filtered, 403, "forbidden")
    error(await compute.nova("GET", "/servers/nope"), 404, "itemNotFound")


async def test_tenancy_and_wrong_state(compute: ComputeCloud) -> None:
    created = await compute.boot(token=compute.member)
    assert created.status_code == 202, created.text
    server_id = created.json()["server"]["id"]
    server = await compute.wait(server_id, compute.member)
    assert server["status"] == "ACTIVE"
    assert "OS-EXT-SRV-ATTR:host" not in server
    # Another project sees nothing of it.
    error(await compute.nova("GET", f"/servers/{server_id}", token=compute.other), 404,
          "itemNotFound")  # fmt: skip
    listed = await compute.nova("GET", "/servers", token=compute.other)
    assert listed.json()["servers"] == []
    stop = await compute.nova("POST", f"/servers/{server_id}/action", token=compute.other,
                              json={"os-stop": None})  # fmt: skip
    error(stop, 404, "itemNotFound")
    message = error(
        await compute.nova("POST", f"/servers/{server_id}/action", token=compute.member,
                           json={"os-start": None}),
        409, "conflictingRequest",
    )  # fmt: skip
    assert "vm_state active" in message
    # Admin actions are the admin's.
    error(await compute.nova("POST", f"/servers/{server_id}/action", token=compute.member,
                             json={"migrate": None}), 403, "forbidden")  # fmt: skip
    # Locked: the owner cannot delete it; the admin can.
    await compute.nova("POST", f"/servers/{server_id}/action", json={"lock": None})
    error(await compute.nova("DELETE", f"/servers/{server_id}", token=compute.member), 409,
          "conflictingRequest")  # fmt: skip
    ports = await compute.call("GET", f"/network/v2.0/ports?device_id={server_id}", compute.admin)
    assert len(ports.json()["ports"]) == 1
    assert (await compute.nova("DELETE", f"/servers/{server_id}")).status_code == 204
    assert (await compute.wait(server_id)) == {}
    ports = await compute.call("GET", f"/network/v2.0/ports?device_id={server_id}", compute.admin)
    assert ports.json()["ports"] == []
    allocations = await compute.call("GET", f"/placement/allocations/{server_id}", compute.admin)
    assert allocations.json()["allocations"] == {}


async def test_no_valid_host_returns_quota_and_allocations(compute: ComputeCloud) -> None:
    huge = await compute.nova("POST", "/flavors", json={"flavor": {
        "name": "huge", "ram": 1 << 30, "vcpus": 1, "disk": 1, "id": "huge"}})  # fmt: skip
    assert huge.status_code == 200, huge.text
    admin = await compute.call("GET", "/identity/v3/projects?name=admin", compute.admin)
    admin_project = admin.json()["projects"][0]["id"]
    unlimited = await compute.nova("PUT", f"/os-quota-sets/{admin_project}",
                                   json={"quota_set": {"ram": -1}})  # fmt: skip
    assert unlimited.status_code == 200, unlimited.text
    before = (await compute.nova("GET", "/limits")).json()["limits"]["absolute"]
    created = await compute.boot(flavorRef="huge")
    server_id = created.json()["server"]["id"]
    server = await compute.wait(server_id)
    assert server["status"] == "ERROR"
    assert server["fault"]["message"].startswith("No valid host was found")
    after = (await compute.nova("GET", "/limits")).json()["limits"]["absolute"]
    assert after["totalInstancesUsed"] == before["totalInstancesUsed"]
    assert after["totalRAMUsed"] == before["totalRAMUsed"]
    assert (await compute.nova("DELETE", f"/servers/{server_id}")).status_code == 204
    assert (await compute.wait(server_id)) == {}
    final = (await compute.nova("GET", "/limits")).json()["limits"]["absolute"]
    assert final["totalInstancesUsed"] == before["totalInstancesUsed"]


async def test_failing_hosts_reschedule_then_error(compute: ComputeCloud) -> None:
    flavor = await compute.nova("POST", "/flavors", json={"flavor": {
        "name": "doomed", "ram": 64, "vcpus": 1, "disk": 1, "id": "doomed"}})  # fmt: skip
    assert flavor.status_code == 200
    await compute.nova("POST", "/flavors/doomed/os-extra_specs",
                       json={"extra_specs": {"fake:fail_spawn": "true"}})  # fmt: skip
    created = await compute.boot(flavorRef="doomed")
    server_id = created.json()["server"]["id"]
    server = await compute.wait(server_id)
    assert server["status"] == "ERROR"
    assert "Exceeded maximum number of retries" in server["fault"]["message"]
    events = await compute.nova("GET", f"/servers/{server_id}/os-instance-actions/"
                                f"{created.headers['x-openstack-request-id']}")  # fmt: skip
    failed = [e for e in events.json()["instanceAction"]["events"]
              if e["event"] == "compute_build_and_run_instance"]  # fmt: skip
    assert len(failed) == 3 and {e["result"] for e in failed} == {"Error"}
    assert len({e["host"] for e in failed}) == 3
    ports = await compute.call("GET", f"/network/v2.0/ports?device_id={server_id}", compute.admin)
    assert ports.json()["ports"] == []
    await compute.nova("DELETE", f"/servers/{server_id}")


async def test_quota_exceeded_is_403(compute: ComputeCloud) -> None:
    project = compute.member_project
    assert (await compute.nova("PUT", f"/os-quota-sets/{project}",
                               json={"quota_set": {"cores": 0}})).status_code == 200  # fmt: skip
    message = error(await compute.boot(token=compute.member), 403, "forbidden")
    assert message.startswith("Quota exceeded for cores")
    await compute.nova("PUT", f"/os-quota-sets/{project}", json={"quota_set": {"cores": 20}})


async def test_keypairs_and_flavor_access(compute: ComputeCloud) -> None:
    made = await compute.nova("POST", "/os-keypairs", version="2.10", token=compute.member,
                              json={"keypair": {"name": "k1"}})  # fmt: skip
    assert made.status_code == 201, made.text
    assert "PRIVATE KEY" in made.json()["keypair"]["private_key"]
    again = await compute.nova("POST", "/os-keypairs", version="2.10", token=compute.member,
                               json={"keypair": {"name": "k1"}})  # fmt: skip
    error(again, 409, "conflictingRequest")
    error(await compute.nova("POST", "/os-keypairs", token=compute.member,
                             json={"keypair": {"name": "k2", "public_key": "ssh-rsa AAAA"}}),
          400, "badRequest")  # fmt: skip
    error(await compute.nova("GET", "/os-keypairs/k1", token=compute.other), 404, "itemNotFound")
    private = await compute.nova("POST", "/flavors", json={"flavor": {
        "name": "private", "ram": 64, "vcpus": 1, "disk": 1, "id": "private",
        "os-flavor-access:is_public": False}})  # fmt: skip
    assert private.status_code == 200
    error(await compute.nova("GET", "/flavors/private", token=compute.member), 404,
          "itemNotFound")  # fmt: skip
    error(await compute.boot(token=compute.member, flavorRef="private"), 400, "badRequest")
    access = {"addTenantAccess": {"tenant": compute.member_project}}
    granted = await compute.nova("POST", "/flavors/private/action", json=access)
    assert granted.status_code == 200
    assert (await compute.nova("GET", "/flavors/private", token=compute.member)).status_code == 200
    error(await compute.nova("POST", "/flavors", token=compute.member, json={"flavor": {
        "name": "mine", "ram": 64, "vcpus": 1, "disk": 1}}), 403, "forbidden")  # fmt: skip


async def act(compute: ComputeCloud, server_id: str, body: dict[str, Any]) -> httpx.Response:
    return await compute.nova("POST", f"/servers/{server_id}/action", json=body)


async def test_moves_shelve_rescue_rebuild_and_evacuate(compute: ComputeCloud) -> None:
    created = await compute.boot(name="mover")
    server_id = created.json()["server"]["id"]
    server = await compute.wait(server_id)
    first = server["OS-EXT-SRV-ATTR:host"]

    assert (await act(compute, server_id, {"os-migrateLive": {"host": None}})).status_code == 202
    server = await compute.wait(server_id)
    assert server["status"] == "ACTIVE" and server["OS-EXT-SRV-ATTR:host"] != first
    second = server["OS-EXT-SRV-ATTR:host"]
    allocations = await compute.call("GET", f"/placement/allocations/{server_id}", compute.admin)
    assert len(allocations.json()["allocations"]) == 1

    assert (await act(compute, server_id, {"resize": {"flavorRef": "2"}})).status_code == 202
    server = await compute.wait(server_id)
    assert server["status"] == "VERIFY_RESIZE"
    allocations = await compute.call("GET", f"/placement/allocations/{server_id}", compute.admin)
    assert len(allocations.json()["allocations"]) == 2
    assert (await act(compute, server_id, {"revertResize": None})).status_code == 202
    server = await compute.wait(server_id)
    assert server["status"] == "ACTIVE" and server["OS-EXT-SRV-ATTR:host"] == second
    assert server["flavor"]["original_name"] == "m1.tiny"
    allocations = await compute.call("GET", f"/placement/allocations/{server_id}", compute.admin)
    assert [a["resources"]["MEMORY_MB"] for a in allocations.json()["allocations"].values()] == [
        512
    ]

    assert (await act(compute, server_id, {"rescue": None})).status_code == 200
    assert (await compute.wait(server_id))["status"] == "RESCUE"
    assert (await act(compute, server_id, {"unrescue": None})).status_code == 202
    assert (await compute.wait(server_id))["status"] == "ACTIVE"
    rebuilt = await act(compute, server_id, {"rebuild": {"imageRef": compute.image_id,
                                                         "name": "rebuilt"}})  # fmt: skip
    assert rebuilt.status_code == 202, rebuilt.text
    server = await compute.wait(server_id)
    assert server["status"] == "ACTIVE" and server["name"] == "rebuilt"
    output = await act(compute, server_id, {"os-getConsoleOutput": {"length": 5}})
    assert "fake console" in output.json()["output"]
    novnc = {"remote_console": {"protocol": "vnc", "type": "novnc"}}
    console = await compute.nova("POST", f"/servers/{server_id}/remote-consoles", json=novnc)
    assert "/compute/novnc/" in console.json()["remote_console"]["url"]

    assert (await act(compute, server_id, {"shelve": None})).status_code == 202
    server = await compute.wait(server_id)
    assert server["status"] == "SHELVED_OFFLOADED" and server["OS-EXT-SRV-ATTR:host"] is None
    allocations = await compute.call("GET", f"/placement/allocations/{server_id}", compute.admin)
    assert allocations.json()["allocations"] == {}
    assert (await act(compute, server_id, {"unshelve": None})).status_code == 202
    server = await compute.wait(server_id)
    assert server["status"] == "ACTIVE" and server["OS-EXT-SRV-ATTR:host"]

    host = server["OS-EXT-SRV-ATTR:host"]
    refused = await act(compute, server_id, {"evacuate": {}})
    assert "still in use" in error(refused, 400, "badRequest")
    services = await compute.nova("GET", f"/os-services?host={host}&binary=nova-compute")
    service_id = services.json()["services"][0]["id"]
    down = await compute.nova("PUT", f"/os-services/{service_id}", json={"forced_down": True})
    assert down.status_code == 200, down.text
    try:
        assert (await act(compute, server_id, {"evacuate": {}})).status_code == 200
        server = await compute.wait(server_id)
        assert server["status"] == "ACTIVE" and server["OS-EXT-SRV-ATTR:host"] != host
    finally:
        await compute.nova("PUT", f"/os-services/{service_id}", json={"forced_down": False})
    actions = await compute.nova("GET", f"/servers/{server_id}/os-instance-actions")
    names = {a["action"] for a in actions.json()["instanceActions"]}
    assert {"create", "live-migration", "resize", "revertResize", "rescue", "unrescue",
            "rebuild", "shelve", "unshelve", "evacuate"} <= names  # fmt: skip
    assert (await compute.nova("DELETE", f"/servers/{server_id}")).status_code == 204


async def test_metadata_tags_and_external_events(compute: ComputeCloud) -> None:
    created = await compute.boot(name="tagged", metadata={"a": "1"}, tags=["x"])
    server_id = created.json()["server"]["id"]
    await compute.wait(server_id)
    base = f"/servers/{server_id}"
    updated = await compute.nova("POST", f"{base}/metadata", json={"metadata": {"b": "2"}})
    assert updated.json()["metadata"] == {"a": "1", "b": "2"}
    replaced = await compute.nova("PUT", f"{base}/metadata", json={"metadata": {"c": "3"}})
    assert replaced.json()["metadata"] == {"c": "3"}
    error(await compute.nova("GET", f"{base}/metadata/a"), 404, "itemNotFound")
    assert (await compute.nova("PUT", f"{base}/tags/y")).status_code == 201
    assert (await compute.nova("GET", f"{base}/tags")).json()["tags"] == ["x", "y"]
    found = await compute.nova("GET", "/servers?tags=x,y")
    assert [s["id"] for s in found.json()["servers"]] == [server_id]
    untagged = (await compute.nova("GET", "/servers?not-tags=x")).json()["servers"]
    assert all(s["id"] != server_id for s in untagged)
    events = {"events": [
        {"name": "network-vif-plugged", "server_uuid": server_id, "tag": "p",
         "status": "completed"},
        {"name": "volume-extended", "server_uuid": "nope", "tag": "v"},
    ]}  # fmt: skip
    answered = await compute.nova("POST", "/os-server-external-events", json=events)
    assert answered.status_code == 207, answered.text
    assert [e["code"] for e in answered.json()["events"]] == [200, 404]
    alone = {"events": [{"name": "volume-extended", "server_uuid": "nope", "tag": "v"}]}
    error(await compute.nova("POST", "/os-server-external-events", json=alone), 404,
          "itemNotFound")  # fmt: skip
    member_try = await compute.nova("POST", "/os-server-external-events", json=events,
                                    token=compute.member)  # fmt: skip
    error(member_try, 403, "forbidden")
    await compute.nova("DELETE", base)
