"""What crosses projects or belongs to the operator: quotas (per type too), quota classes,
transfers, private volume types, services, and requests no backend can take."""

from __future__ import annotations

import pytest

from tests.functional.volume.conftest import VolumeCloud

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_quotas_overall_and_per_type(volume_cloud: VolumeCloud) -> None:
    cloud = volume_cloud
    project, token = await cloud.project_member(cloud.admin, "quota-p")
    quota_path = f"/os-quota-sets/{project}"
    assert (
        await cloud.v3("PUT", quota_path, token, json={"quota_set": {"volumes": 1}})
    ).status_code == 403
    set_two = await cloud.v3("PUT", quota_path, json={"quota_set": {"volumes": 2, "gigabytes": 5}})
    assert set_two.status_code == 200 and set_two.json()["quota_set"]["volumes"] == 2
    first = await cloud.volume(token, size=2)
    too_big = await cloud.v3("POST", "/volumes", token, json={"volume": {"size": 4}})
    assert too_big.status_code == 413
    assert "gigabytes quota" in too_big.json()["overLimit"]["message"]
    second = await cloud.volume(token, size=1)
    third = await cloud.v3("POST", "/volumes", token, json={"volume": {"size": 1}})
    assert third.status_code == 413
    assert third.json() == {
        "overLimit": {
            "code": 413,
            "message": (
                "VolumeLimitExceeded: Maximum number of volumes allowed (2) exceeded for quota "
                "'volumes'."
            ),
        }
    }
    usage = (await cloud.v3("GET", f"{quota_path}?usage=true", token)).json()["quota_set"]
    assert usage["volumes"] == {"limit": 2, "in_use": 2, "reserved": 0, "allocated": 0}
    assert usage["gigabytes"]["in_use"] == 3
    below = await cloud.v3("PUT", quota_path, json={"quota_set": {"volumes": 1}})
    assert below.status_code == 400
    bad_key = await cloud.v3("PUT", quota_path, json={"quota_set": {"cores": 1}})
    assert bad_key.status_code == 400
    # Per type: volumes___DEFAULT__ limits only volumes of that type.
    await cloud.v3("PUT", quota_path, json={"quota_set": {"volumes": 10, "volumes___DEFAULT__": 2}})
    per_type = await cloud.v3("POST", "/volumes", token, json={"volume": {"size": 1}})
    assert per_type.status_code == 413 and "volumes___DEFAULT__" in per_type.text
    for volume in (first, second):
        await cloud.v3("DELETE", f"/volumes/{volume['id']}", token)
        await cloud.gone("volume", volume["id"], token)
    after = (await cloud.v3("GET", f"{quota_path}?usage=true", token)).json()["quota_set"]
    assert after["volumes"]["in_use"] == 0 and after["gigabytes"]["in_use"] == 0
    assert (await cloud.v3("DELETE", quota_path)).status_code == 200
    defaults = (await cloud.v3("GET", f"{quota_path}/defaults", token)).json()["quota_set"]
    assert defaults["volumes"] == 10
    limits = (await cloud.v3("GET", "/limits", token)).json()["limits"]
    assert limits["rate"] == [] and limits["absolute"]["maxTotalVolumes"] == 10


async def test_quota_class_default(volume_cloud: VolumeCloud) -> None:
    cloud = volume_cloud
    project, token = await cloud.project_member(cloud.admin, "class-p")
    changed = await cloud.v3(
        "PUT", "/os-quota-class-sets/default", json={"quota_class_set": {"snapshots": 7}}
    )
    assert changed.status_code == 200 and changed.json()["quota_class_set"]["snapshots"] == 7
    shown = (await cloud.v3("GET", f"/os-quota-sets/{project}", token)).json()["quota_set"]
    assert shown["snapshots"] == 7
    await cloud.v3(
        "PUT", "/os-quota-class-sets/default", json={"quota_class_set": {"snapshots": 10}}
    )


async def test_transfer_to_another_project(volume_cloud: VolumeCloud) -> None:
    cloud = volume_cloud
    giver, giver_token = await cloud.project_member(cloud.admin, "giver")
    taker, taker_token = await cloud.project_member(cloud.admin, "taker")
    volume = await cloud.volume(giver_token, size=1, name="gift")
    snap = await cloud.v3(
        "POST", "/snapshots", giver_token, json={"snapshot": {"volume_id": volume["id"]}}
    )
    snapshot = await cloud.wait(
        "snapshot", snap.json()["snapshot"]["id"], ("available",), giver_token
    )
    offered = await cloud.v3(
        "POST",
        "/volume-transfers",
        giver_token,
        json={"transfer": {"volume_id": volume["id"], "name": "t1"}},
    )
    assert offered.status_code == 202
    transfer = offered.json()["transfer"]
    assert len(transfer["auth_key"]) == 16
    shown = (await cloud.v3("GET", f"/volumes/{volume['id']}", giver_token)).json()["volume"]
    assert shown["status"] == "awaiting-transfer"
    assert (await cloud.v3("DELETE", f"/volumes/{volume['id']}", giver_token)).status_code == 400
    wrong = await cloud.v3(
        "POST",
        f"/volume-transfers/{transfer['id']}/accept",
        taker_token,
        json={"accept": {"auth_key": "0" * 16}},
    )
    assert wrong.status_code == 400 and "Invalid auth key" in wrong.text
    accepted = await cloud.v3(
        "POST",
        f"/os-volume-transfer/{transfer['id']}/accept",
        taker_token,
        json={"accept": {"auth_key": transfer["auth_key"]}},
    )
    assert accepted.status_code == 202
    mine = (await cloud.v3("GET", f"/volumes/{volume['id']}", taker_token)).json()["volume"]
    assert (mine["status"], mine["os-vol-tenant-attr:tenant_id"]) == ("available", taker)
    assert (await cloud.v3("GET", f"/snapshots/{snapshot['id']}", taker_token)).status_code == 200
    assert (await cloud.v3("GET", f"/volumes/{volume['id']}", giver_token)).status_code == 404
    giver_usage = (await cloud.v3("GET", f"/os-quota-sets/{giver}?usage=true", giver_token)).json()
    assert giver_usage["quota_set"]["volumes"]["in_use"] == 0
    taker_usage = (await cloud.v3("GET", f"/os-quota-sets/{taker}?usage=true", taker_token)).json()
    assert taker_usage["quota_set"]["snapshots"]["in_use"] == 1
    await cloud.v3("DELETE", f"/volumes/{volume['id']}?cascade=true", taker_token)


async def test_private_types_and_access(volume_cloud: VolumeCloud) -> None:
    cloud = volume_cloud
    project, token = await cloud.project_member(cloud.admin, "typed")
    created = await cloud.v3(
        "POST",
        "/types",
        json={"volume_type": {"name": "secret-type", "os-volume-type-access:is_public": False}},
    )
    type_id = created.json()["volume_type"]["id"]
    duplicate = await cloud.v3("POST", "/types", json={"volume_type": {"name": "secret-type"}})
    assert duplicate.status_code == 409
    names = [t["name"] for t in (await cloud.v3("GET", "/types", token)).json()["volume_types"]]
    assert "secret-type" not in names and "__DEFAULT__" in names
    refused = await cloud.v3(
        "POST", "/volumes", token, json={"volume": {"size": 1, "volume_type": "secret-type"}}
    )
    assert refused.status_code == 404
    assert (
        await cloud.v3("POST", "/types", token, json={"volume_type": {"name": "x"}})
    ).status_code == 403
    grant = {"addProjectAccess": {"project": project}}
    assert (await cloud.v3("POST", f"/types/{type_id}/action", json=grant)).status_code == 202
    access = (await cloud.v3("GET", f"/types/{type_id}/os-volume-type-access")).json()
    assert access["volume_type_access"] == [{"volume_type_id": type_id, "project_id": project}]
    volume = await cloud.volume(token, volume_type="secret-type")
    assert volume["volume_type"] == "secret-type"
    specs = await cloud.v3(
        "POST", f"/types/{type_id}/extra_specs", json={"extra_specs": {"k": "v"}}
    )
    assert specs.json() == {"extra_specs": {"k": "v"}}
    assert (await cloud.v3("GET", f"/types/{type_id}/extra_specs/k")).json() == {"k": "v"}
    in_use = await cloud.v3("DELETE", f"/types/{type_id}")
    assert in_use.status_code == 400 and "still in use" in in_use.text
    default = await cloud.v3("GET", "/types/default", token)
    assert default.json()["volume_type"]["name"] == "__DEFAULT__"
    await cloud.v3("DELETE", f"/volumes/{volume['id']}", token)
    await cloud.gone("volume", volume["id"], token)
    assert (await cloud.v3("DELETE", f"/types/{type_id}")).status_code == 202


async def test_services_and_no_valid_backend(volume_cloud: VolumeCloud) -> None:
    cloud = volume_cloud
    services = (await cloud.v3("GET", "/os-services")).json()["services"]
    binaries = {(s["binary"], s["state"]) for s in services}
    assert {
        ("cinder-scheduler", "up"),
        ("cinder-volume", "up"),
        ("cinder-backup", "up"),
    } <= binaries
    volume_hosts = [s["host"] for s in services if s["binary"] == "cinder-volume"]
    assert sorted(h.partition("@")[2] for h in volume_hosts) == ["file", "file2", "qcow"]
    pools = (await cloud.v3("GET", "/scheduler-stats/get_pools?detail=true")).json()["pools"]
    assert all(p["capabilities"]["thin_provisioning_support"] for p in pools)
    # A type no backend matches: the volume goes to error, with a message saying why.
    await cloud.v3(
        "POST",
        "/types",
        json={"volume_type": {"name": "lvm-only", "extra_specs": {"volume_backend_name": "lvm"}}},
    )
    created = await cloud.v3(
        "POST", "/volumes", json={"volume": {"size": 1, "volume_type": "lvm-only"}}
    )
    failed = await cloud.wait("volume", created.json()["volume"]["id"], ("error",))
    messages = (await cloud.v3("GET", f"/messages?resource_uuid={failed['id']}")).json()["messages"]
    assert "CapabilitiesFilter" in messages[0]["user_message"]
    await cloud.v3("DELETE", f"/volumes/{failed['id']}")
    # Disabled backends take no new volumes.
    for host in volume_hosts:
        body = {"host": host, "binary": "cinder-volume", "disabled_reason": "maintenance"}
        disabled = await cloud.v3("PUT", "/os-services/disable-log-reason", json=body)
        assert disabled.json()["status"] == "disabled"
    created = await cloud.v3("POST", "/volumes", json={"volume": {"size": 1}})
    await cloud.wait("volume", created.json()["volume"]["id"], ("error",))
    for host in volume_hosts:
        await cloud.v3("PUT", "/os-services/enable", json={"host": host, "binary": "cinder-volume"})
    await cloud.v3("DELETE", f"/volumes/{created.json()['volume']['id']}")
    zones = (await cloud.v3("GET", "/os-availability-zone")).json()["availabilityZoneInfo"]
    assert zones == [
        {"zoneName": "az-qcow", "zoneState": {"available": True}},
        {"zoneName": "nova", "zoneState": {"available": True}},
    ]
