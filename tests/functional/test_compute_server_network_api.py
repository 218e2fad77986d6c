"""A server's networking and lifecycle extras in process (three fake hosts, soft delete on):
``os-interface`` hot-plug with its port bindings and rollback, ``ips``, floating addresses
in lists, ``os-security-groups`` and add/remove, soft delete with restore, forceDelete and
the reclaim, diagnostics and changePassword."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import update

from onestack.compute.agent import ComputeAgent
from onestack.compute.drivers.fake import FakeDriver
from onestack.compute.models import Instance
from onestack.compute.reclaim import reclaim_soft_deleted
from onestack.compute.unit import ComputeUnit
from tests.functional.test_compute_api import ComputeCloud, compute_cloud, error

pytestmark = pytest.mark.asyncio(loop_scope="module")

NET = "/network/v2.0"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def cloud(tmp_path_factory: Any) -> AsyncIterator[ComputeCloud]:
    async with compute_cloud(
        tmp_path_factory.mktemp("servernet"), reclaim_instance_interval=3600.0
    ) as running:
        yield running


def unit(cloud: ComputeCloud) -> ComputeUnit:
    found = cloud.cloud.units["compute"]
    assert isinstance(found, ComputeUnit)
    return found


async def fake_driver(cloud: ComputeCloud, server_id: str) -> FakeDriver:
    """The fake driver of the host the server runs on."""
    shown = (await cloud.nova("GET", f"/servers/{server_id}")).json()["server"]
    agent: ComputeAgent = next(
        a for a in unit(cloud).agents if a.host == shown["OS-EXT-SRV-ATTR:host"]
    )
    assert isinstance(agent.driver, FakeDriver)
    return agent.driver


async def active_server(cloud: ComputeCloud, token: str | None = None, **server: Any) -> str:
    created = await cloud.boot(token=token or cloud.member, **server)
    assert created.status_code == 202, created.text
    server_id: str = created.json()["server"]["id"]
    assert (await cloud.wait(server_id, token=token or cloud.member))["status"] == "ACTIVE"
    return server_id


async def port(cloud: ComputeCloud, port_id: str) -> dict[str, Any]:
    found = await cloud.call("GET", f"{NET}/ports/{port_id}", cloud.admin)
    assert found.status_code == 200, found.text
    body: dict[str, Any] = found.json()["port"]
    return body


async def test_interface_attach_by_network_and_detach(cloud: ComputeCloud) -> None:
    server_id = await active_server(cloud)
    path = f"/servers/{server_id}/os-interface"
    listed = (await cloud.nova("GET", path, token=cloud.member)).json()["interfaceAttachments"]
    assert len(listed) == 1 and listed[0]["net_id"] == cloud.net_id
    assert set(listed[0]) == {"net_id", "port_id", "mac_addr", "port_state", "fixed_ips", "tag"}

    body = {"interfaceAttachment": {"net_id": cloud.net_id,
                                    "fixed_ips": [{"ip_address": "10.9.0.77"}]}}  # fmt: skip
    attached = await cloud.nova("POST", path, token=cloud.member, json=body)
    assert attached.status_code == 200, attached.text
    view = attached.json()["interfaceAttachment"]
    assert view["fixed_ips"][0]["ip_address"] == "10.9.0.77"
    assert view["port_state"] == "ACTIVE"  # bound to a host (noop binding: no agent to wait for)
    new_port = await port(cloud, view["port_id"])
    shown = (await cloud.nova("GET", f"/servers/{server_id}")).json()["server"]
    assert new_port["device_id"] == server_id
    assert new_port["device_owner"].startswith("compute:")
    assert new_port["binding:host_id"] == shown["OS-EXT-SRV-ATTR:host"]
    driver = await fake_driver(cloud, server_id)
    assert view["port_id"] in driver.guests[server_id].vifs
    addresses = [a["addr"] for a in shown["addresses"]["net"]]
    assert "10.9.0.77" in addresses and len(addresses) == 2
    one = await cloud.nova("GET", f"{path}/{view['port_id']}", token=cloud.member)
    assert one.json()["interfaceAttachment"]["mac_addr"] == new_port["mac_address"]
    actions = (await cloud.nova("GET", f"/servers/{server_id}/os-instance-actions")).json()
    assert "attach_interface" in [a["action"] for a in actions["instanceActions"]]

    detached = await cloud.nova("DELETE", f"{path}/{view['port_id']}", token=cloud.member)
    assert detached.status_code == 202, detached.text
    gone = await cloud.call("GET", f"{NET}/ports/{view['port_id']}", cloud.admin)
    assert gone.status_code == 404  # compute made it, so compute deleted it
    assert view["port_id"] not in driver.guests[server_id].vifs
    listed = (await cloud.nova("GET", path, token=cloud.member)).json()["interfaceAttachments"]
    assert len(listed) == 1
    error(await cloud.nova("DELETE", f"{path}/{view['port_id']}", token=cloud.member),
          404, "itemNotFound")  # fmt: skip
    error(await cloud.nova("GET", f"{path}/{view['port_id']}", token=cloud.member),
          404, "itemNotFound")  # fmt: skip


async def test_interface_attach_user_port_and_tag(cloud: ComputeCloud) -> None:
    server_id = await active_server(cloud)
    made = await cloud.call("POST", f"{NET}/ports", cloud.member,
                            json={"port": {"network_id": cloud.net_id}})  # fmt: skip
    port_id = made.json()["port"]["id"]
    path = f"/servers/{server_id}/os-interface"
    body = {"interfaceAttachment": {"port_id": port_id, "tag": "data"}}
    attached = await cloud.nova("POST", path, version="2.70", token=cloud.member, json=body)
    assert attached.status_code == 200, attached.text
    assert attached.json()["interfaceAttachment"]["tag"] == "data"
    listed = await cloud.nova("GET", path, version="2.70", token=cloud.member)
    assert {"data", None} == {i["tag"] for i in listed.json()["interfaceAttachments"]}
    # The port is in use now.
    other = await active_server(cloud)
    error(await cloud.nova("POST", f"/servers/{other}/os-interface", token=cloud.member,
                           json=body), 409, "conflictingRequest")  # fmt: skip
    detached = await cloud.nova("DELETE", f"{path}/{port_id}", token=cloud.member)
    assert detached.status_code == 202
    kept = await port(cloud, port_id)  # the user's port stays, unbound
    assert kept["device_id"] == "" and kept["binding:host_id"] == ""
    # Tags need 2.49.
    error(await cloud.nova("POST", path, version="2.48", token=cloud.member, json=body),
          400, "badRequest")  # fmt: skip


async def test_interface_attach_errors(cloud: ComputeCloud) -> None:
    server_id = await active_server(cloud)
    path = f"/servers/{server_id}/os-interface"

    async def attach(body: Any, token: str | None = None) -> Any:
        return await cloud.nova("POST", path, token=token or cloud.member, json=body)

    both = {"interfaceAttachment": {"net_id": cloud.net_id, "port_id": "p"}}
    assert "both" in error(await attach(both), 400, "badRequest")
    no_net = {"interfaceAttachment": {"fixed_ips": [{"ip_address": "10.9.0.9"}]}}
    assert "network_id" in error(await attach(no_net), 400, "badRequest")
    error(await attach({"interfaceAttachment": {"net_id": "nope"}}), 404, "itemNotFound")
    error(await attach({"interfaceAttachment": {"port_id": "nope"}}), 404, "itemNotFound")
    error(await attach({"interfaceAttachment": {"bogus": 1}}), 400, "badRequest")
    outside = {"interfaceAttachment": {"net_id": cloud.net_id,
                                       "fixed_ips": [{"ip_address": "10.99.0.9"}]}}  # fmt: skip
    error(await attach(outside), 400, "badRequest")
    error(await attach({"interfaceAttachment": {"net_id": cloud.net_id}}, cloud.other),
          404, "itemNotFound")  # fmt: skip
    error(await cloud.nova("GET", path, token=cloud.other), 404, "itemNotFound")
    # Stopped servers take NICs; locked ones and soft-deleted ones do not.
    stop = await cloud.nova("POST", f"/servers/{server_id}/action", token=cloud.member,
                            json={"os-stop": None})  # fmt: skip
    assert stop.status_code == 202
    assert (await cloud.wait(server_id))["status"] == "SHUTOFF"
    attached = await attach({"interfaceAttachment": {"net_id": cloud.net_id}})
    assert attached.status_code == 200, attached.text
    await cloud.nova("POST", f"/servers/{server_id}/action", json={"lock": None})
    error(await attach({}), 409, "conflictingRequest")
    await cloud.nova("POST", f"/servers/{server_id}/action", json={"unlock": None})
    assert (await cloud.nova("DELETE", f"/servers/{server_id}")).status_code == 204
    assert (await cloud.wait(server_id))["status"] == "SOFT_DELETED"
    assert "vm_state soft-delete" in error(await attach({}), 409, "conflictingRequest")


async def test_interface_attach_failure_rolls_back(cloud: ComputeCloud) -> None:
    flavor = await cloud.nova("POST", "/flavors", json={"flavor": {
        "name": "nic-fails", "ram": 64, "vcpus": 1, "disk": 1}})  # fmt: skip
    flavor_id = flavor.json()["flavor"]["id"]
    await cloud.nova("POST", f"/flavors/{flavor_id}/os-extra_specs",
                     json={"extra_specs": {"fake:fail_interface_attach": "true"}})  # fmt: skip
    server_id = await active_server(cloud, flavorRef=flavor_id)
    before = (await cloud.call("GET", f"{NET}/ports", cloud.admin)).json()["ports"]
    attached = await cloud.nova("POST", f"/servers/{server_id}/os-interface", token=cloud.member,
                                json={"interfaceAttachment": {"net_id": cloud.net_id}})  # fmt: skip
    assert "told to fail" in error(attached, 409, "conflictingRequest")
    after = (await cloud.call("GET", f"{NET}/ports", cloud.admin)).json()["ports"]
    assert {p["id"] for p in after} == {p["id"] for p in before}
    shown = (await cloud.nova("GET", f"/servers/{server_id}")).json()["server"]
    assert len(shown["addresses"]["net"]) == 1


async def test_server_ips(cloud: ComputeCloud) -> None:
    server_id = await active_server(cloud)
    ips = await cloud.nova("GET", f"/servers/{server_id}/ips", token=cloud.member)
    assert ips.status_code == 200, ips.text
    (entry,) = ips.json()["addresses"]["net"]
    assert set(entry) == {"version", "addr"} and entry["version"] == 4
    one = await cloud.nova("GET", f"/servers/{server_id}/ips/net", token=cloud.member)
    assert one.json() == {"net": [entry]}
    error(await cloud.nova("GET", f"/servers/{server_id}/ips/nope", token=cloud.member),
          404, "itemNotFound")  # fmt: skip
    error(await cloud.nova("GET", f"/servers/{server_id}/ips", token=cloud.other),
          404, "itemNotFound")  # fmt: skip


async def test_floating_addresses_in_lists(cloud: ComputeCloud) -> None:
    public = {"network": {"name": "public", "router:external": True}}
    ext = await cloud.call("POST", f"{NET}/networks", cloud.admin, json=public)
    ext_id = ext.json()["network"]["id"]
    await cloud.call("POST", f"{NET}/subnets", cloud.admin, json={"subnet": {
        "network_id": ext_id, "cidr": "172.24.9.0/24", "ip_version": 4}})  # fmt: skip
    router = await cloud.call("POST", f"{NET}/routers", cloud.admin, json={"router": {
        "name": "r", "external_gateway_info": {"network_id": ext_id}}})  # fmt: skip
    subnet_id = (await cloud.call("GET", f"{NET}/subnets?network_id={cloud.net_id}",
                                  cloud.admin)).json()["subnets"][0]["id"]  # fmt: skip
    router_id = router.json()["router"]["id"]
    added = await cloud.call("PUT", f"{NET}/routers/{router_id}/add_router_interface",
                             cloud.admin, json={"subnet_id": subnet_id})  # fmt: skip
    assert added.status_code == 200, added.text
    server_id = await active_server(cloud)
    ports = await cloud.nova("GET", f"/servers/{server_id}/os-interface", token=cloud.member)
    port_id = ports.json()["interfaceAttachments"][0]["port_id"]
    fip = await cloud.call("POST", f"{NET}/floatingips", cloud.member, json={"floatingip": {
        "floating_network_id": ext_id, "port_id": port_id}})  # fmt: skip
    assert fip.status_code == 201, fip.text
    address = fip.json()["floatingip"]["floating_ip_address"]
    listed = await cloud.nova("GET", "/servers/detail", token=cloud.member)
    (server,) = [s for s in listed.json()["servers"] if s["id"] == server_id]
    floating = [a for a in server["addresses"]["net"] if a["OS-EXT-IPS:type"] == "floating"]
    assert [a["addr"] for a in floating] == [address]
    ips = await cloud.nova("GET", f"/servers/{server_id}/ips/net", token=cloud.member)
    assert address in [a["addr"] for a in ips.json()["net"]]


async def test_server_security_groups(cloud: ComputeCloud) -> None:
    server_id = await active_server(cloud)
    group = await cloud.call("POST", f"{NET}/security-groups", cloud.member,
                             json={"security_group": {"name": "web"}})  # fmt: skip
    group_id = group.json()["security_group"]["id"]
    await cloud.call("POST", f"{NET}/security-group-rules", cloud.member, json={
        "security_group_rule": {"security_group_id": group_id, "direction": "ingress",
                                "protocol": "tcp", "port_range_min": 80, "port_range_max": 80,
                                "remote_ip_prefix": "0.0.0.0/0"}})  # fmt: skip
    action = f"/servers/{server_id}/action"

    async def act(body: Any, token: str | None = None) -> Any:
        return await cloud.nova("POST", action, token=token or cloud.member, json=body)

    added = await act({"addSecurityGroup": {"name": "web"}})
    assert added.status_code == 202, added.text
    port_id = (await cloud.nova("GET", f"/servers/{server_id}/os-interface", token=cloud.member)
               ).json()["interfaceAttachments"][0]["port_id"]  # fmt: skip
    assert group_id in (await port(cloud, port_id))["security_groups"]
    listed = await cloud.nova("GET", f"/servers/{server_id}/os-security-groups", token=cloud.member)
    groups = {g["name"]: g for g in listed.json()["security_groups"]}
    assert set(groups) == {"default", "web"}
    (rule,) = groups["web"]["rules"]
    assert (rule["ip_protocol"], rule["from_port"], rule["to_port"]) == ("tcp", 80, 80)
    assert rule["ip_range"] == {"cidr": "0.0.0.0/0"} and rule["parent_group_id"] == group_id
    shown = (await cloud.nova("GET", f"/servers/{server_id}")).json()["server"]
    assert {"name": "web"} in shown["security_groups"]

    assert "already associated" in error(await act({"addSecurityGroup": {"name": "web"}}),
                                         400, "badRequest")  # fmt: skip
    error(await act({"addSecurityGroup": {"name": "nope"}}), 404, "itemNotFound")
    error(await act({"addSecurityGroup": {}}), 400, "badRequest")
    error(await act({"addSecurityGroup": {"name": " "}}), 400, "badRequest")
    error(await act({"addSecurityGroup": {"name": "web"}}, cloud.other), 404, "itemNotFound")
    removed = await act({"removeSecurityGroup": {"name": group_id}})
    assert removed.status_code == 202, removed.text
    assert group_id not in (await port(cloud, port_id))["security_groups"]
    assert "not associated" in error(await act({"removeSecurityGroup": {"name": "web"}}),
                                     400, "badRequest")  # fmt: skip
    shown = (await cloud.nova("GET", f"/servers/{server_id}")).json()["server"]
    assert {"name": "web"} not in shown["security_groups"]


async def test_soft_delete_restore_and_force_delete(cloud: ComputeCloud) -> None:
    server_id = await active_server(cloud)
    action = f"/servers/{server_id}/action"
    error(await cloud.nova("POST", action, token=cloud.member, json={"restore": None}),
          409, "conflictingRequest")  # fmt: skip
    assert (
        await cloud.nova("DELETE", f"/servers/{server_id}", token=cloud.member)
    ).status_code == 204
    shown = await cloud.wait(server_id, token=cloud.member)
    assert (shown["status"], shown["OS-EXT-STS:power_state"]) == ("SOFT_DELETED", 4)
    listed = await cloud.nova("GET", "/servers", token=cloud.member)
    assert server_id not in [s["id"] for s in listed.json()["servers"]]
    asked = await cloud.nova("GET", "/servers?status=SOFT_DELETED", token=cloud.member)
    assert server_id in [s["id"] for s in asked.json()["servers"]]
    # Soft-deleted servers keep their quota.
    limits = (await cloud.nova("GET", "/limits", token=cloud.member)).json()["limits"]["absolute"]
    assert limits["totalInstancesUsed"] >= 1

    restored = await cloud.nova("POST", action, token=cloud.member, json={"restore": None})
    assert restored.status_code == 202, restored.text
    shown = await cloud.wait(server_id, token=cloud.member)
    assert (shown["status"], shown["OS-EXT-STS:power_state"]) == ("ACTIVE", 1)

    assert (
        await cloud.nova("DELETE", f"/servers/{server_id}", token=cloud.member)
    ).status_code == 204
    assert (await cloud.wait(server_id, token=cloud.member))["status"] == "SOFT_DELETED"
    forced = await cloud.nova("POST", action, token=cloud.member, json={"forceDelete": None})
    assert forced.status_code == 202, forced.text
    gone = await cloud.wait(server_id, token=cloud.member)
    assert gone == {}, gone


async def test_reclaim_of_soft_deleted_servers(cloud: ComputeCloud) -> None:
    server_id = await active_server(cloud)
    await cloud.nova("DELETE", f"/servers/{server_id}", token=cloud.member)
    assert (await cloud.wait(server_id, token=cloud.member))["status"] == "SOFT_DELETED"
    service = unit(cloud).service
    assert await reclaim_soft_deleted(service) == []  # not old enough yet
    async with service.db.session() as session:
        old = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
        await session.execute(update(Instance).where(Instance.uuid == server_id)
                              .values(deleted_at=old))  # fmt: skip
    assert await reclaim_soft_deleted(service) == [server_id]
    assert await cloud.wait(server_id, token=cloud.member) == {}
    ports = await cloud.call("GET", f"{NET}/ports?device_id={server_id}", cloud.admin)
    assert ports.json()["ports"] == []


async def test_diagnostics(cloud: ComputeCloud) -> None:
    server_id = await active_server(cloud)
    path = f"/servers/{server_id}/diagnostics"
    found = await cloud.nova("GET", path, version="2.48")
    assert found.status_code == 200, found.text
    body = found.json()
    assert (body["state"], body["driver"], body["num_cpus"], body["num_nics"]) == (
        "running", "fake", 1, 1)  # fmt: skip
    assert set(body["nic_details"][0]) >= {"mac_address", "rx_octets", "tx_packets"}
    assert set(body["disk_details"][0]) == {"read_bytes", "read_requests", "write_bytes",
                                            "write_requests", "errors_count"}  # fmt: skip
    assert body["memory_details"]["maximum"] == 512
    legacy = (await cloud.nova("GET", path, version="2.1")).json()
    assert {"cpu0_time", "vda_read", "memory"} <= set(legacy)
    error(await cloud.nova("GET", path, token=cloud.member), 403, "forbidden")


async def test_change_password(cloud: ComputeCloud, monkeypatch: pytest.MonkeyPatch) -> None:
    server_id = await active_server(cloud)
    action = f"/servers/{server_id}/action"
    changed = await cloud.nova("POST", action, token=cloud.member,
                               json={"changePassword": {"adminPass": "s3cret"}})  # fmt: skip
    assert changed.status_code == 202, changed.text
    driver = await fake_driver(cloud, server_id)
    assert driver.guests[server_id].admin_password == "s3cret"
    error(await cloud.nova("POST", action, token=cloud.member, json={"changePassword": {}}),
          400, "badRequest")  # fmt: skip

    async def unsupported(*args: Any) -> None:
        raise NotImplementedError("no")

    monkeypatch.setattr(driver, "set_admin_password", unsupported)
    refused = await cloud.nova("POST", action, token=cloud.member,
                               json={"changePassword": {"adminPass": "x"}})  # fmt: skip
    assert "Unable to set password" in error(refused, 501, "notImplemented")
    await cloud.nova("POST", action, token=cloud.member, json={"os-stop": None})
    assert (await cloud.wait(server_id))["status"] == "SHUTOFF"
    stopped = await cloud.nova("POST", action, token=cloud.member,
                               json={"changePassword": {"adminPass": "x"}})  # fmt: skip
    error(stopped, 409, "conflictingRequest")


async def test_per_user_quotas_within_the_project(cloud: ComputeCloud) -> None:
    users = await cloud.call("GET", "/identity/v3/users?name=tenant2-user", cloud.admin)
    user = users.json()["users"][0]["id"]
    projects = await cloud.call("GET", "/identity/v3/projects?name=tenant2", cloud.admin)
    project = projects.json()["projects"][0]["id"]
    path = f"/os-quota-sets/{project}?user_id={user}"
    over = await cloud.nova("PUT", path, json={"quota_set": {"instances": 1, "cores": 50}})
    assert "less than or equal to 20" in error(over, 400, "badRequest")
    updated = await cloud.nova("PUT", path, json={"quota_set": {"instances": 1}})
    assert updated.status_code == 200, updated.text
    assert updated.json()["quota_set"]["instances"] == 1
    assert (await cloud.nova("GET", path)).json()["quota_set"]["instances"] == 1
    project_set = (await cloud.nova("GET", f"/os-quota-sets/{project}")).json()["quota_set"]
    assert project_set["instances"] == 10

    await active_server(cloud, token=cloud.other)
    refused = await cloud.boot(token=cloud.other)
    assert "instances" in error(refused, 403, "forbidden")
    detail = (await cloud.nova("GET", f"/os-quota-sets/{project}/detail?user_id={user}")).json()
    assert detail["quota_set"]["instances"] == {"limit": 1, "in_use": 1, "reserved": 0}
    below = await cloud.nova("PUT", path, json={"quota_set": {"instances": 0}})
    assert "already used" in error(below, 400, "badRequest")

    affinity = {"server_group": {"name": "g", "policy": "affinity"}}
    none = {"quota_set": {"key_pairs": 0, "server_groups": 0}}
    assert (await cloud.nova("PUT", path, json=none)).status_code == 200
    pair = await cloud.nova("POST", "/os-keypairs", token=cloud.other,
                            json={"keypair": {"name": "k", "type": "ssh"}})  # fmt: skip
    assert "key pairs" in error(pair, 403, "forbidden")
    group = await cloud.nova("POST", "/os-server-groups", token=cloud.other, json=affinity)
    error(group, 403, "forbidden")

    assert (await cloud.nova("DELETE", path)).status_code == 202
    assert (await cloud.nova("GET", path)).json()["quota_set"]["instances"] == 10
    assert (await cloud.boot(token=cloud.other)).status_code == 202
    group = await cloud.nova("POST", "/os-server-groups", token=cloud.other, json=affinity)
    assert group.status_code == 200, group.text
