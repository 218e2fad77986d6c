"""The issue's "bad input and safety" list, each answered with a 4xx in Cinder's error shape
(``{"badRequest": {"code": 400, "message": ...}}``, ``itemNotFound``, ``overLimit``) and
nothing changed: sizes below a snapshot's, an image's or a backup's, deleting an attached
volume or one with snapshots, a second attach of a single-attach volume, extending to the
same or a smaller size, state rules for snapshots, backups and transfers."""

from __future__ import annotations

from typing import Any

import httpx

from tests.functional.volume.conftest import VolumeCloud
from tests.functional.volume.test_backups import backup
from tests.functional.volume.test_images import upload_image

ATTACHED_SERVER = "0f0e0d0c-0b0a-4909-8807-060504030201"


def refused(response: httpx.Response, status: int = 400) -> str:
    """The message of a Cinder error answer with exactly Cinder's fields."""
    assert response.status_code == status, response.text
    ((kind, body),) = response.json().items()
    assert kind == {400: "badRequest", 404: "itemNotFound", 413: "overLimit"}[status]
    assert set(body) == {"code", "message"} and body["code"] == status, body
    message: str = body["message"]
    return message


async def attached(cloud: VolumeCloud, volume_id: str) -> str:
    """Attach the volume to a (pretend) server on another host; the attachment id."""
    reserved = await cloud.v3("POST", "/attachments", json={"attachment": {
        "volume_uuid": volume_id, "instance_uuid": ATTACHED_SERVER,
        "connector": {"host": "elsewhere"}}})  # fmt: skip
    assert reserved.status_code == 200, reserved.text
    attachment_id: str = reserved.json()["attachment"]["id"]
    done = await cloud.v3("POST", f"/attachments/{attachment_id}/action",
                          json={"os-complete": None})  # fmt: skip
    assert done.status_code == 204, done.text
    return attachment_id


async def test_sizes_below_the_source(volume_cloud: VolumeCloud) -> None:
    cloud = volume_cloud
    big = await cloud.volume(size=2, name="big")
    taken = await cloud.v3("POST", "/snapshots", json={"snapshot": {"volume_id": big["id"]}})
    snapshot = await cloud.wait("snapshot", taken.json()["snapshot"]["id"], ("available",))
    from_snapshot = await cloud.v3("POST", "/volumes", json={"volume": {
        "size": 1, "snapshot_id": snapshot["id"]}})  # fmt: skip
    assert "cannot be smaller than the snapshot size" in refused(from_snapshot)
    negative = await cloud.v3("POST", "/volumes", json={"volume": {
        "size": -1, "snapshot_id": snapshot["id"]}})  # fmt: skip
    refused(negative)

    image = await upload_image(cloud, "needs-two", b"\0" * 4096, "raw")
    patched = await cloud.call(
        "PATCH", f"/image/v2/images/{image['id']}", cloud.admin,
        json=[{"op": "replace", "path": "/min_disk", "value": 2}],
        headers={"Content-Type": "application/openstack-images-v2.1-json-patch"},
    )  # fmt: skip
    assert patched.status_code == 200, patched.text
    from_image = await cloud.v3("POST", "/volumes", json={"volume": {
        "size": 1, "imageRef": image["id"]}})  # fmt: skip
    assert "at least 2GB" in refused(from_image)

    saved = await backup(cloud, big["id"])
    from_backup = await cloud.v3("POST", "/volumes", json={"volume": {
        "size": 1, "backup_id": saved["id"]}})  # fmt: skip
    assert "cannot be smaller than the backup size" in refused(from_backup)
    small = await cloud.volume(size=1, name="small")
    onto_small = await cloud.v3("POST", f"/backups/{saved['id']}/restore",
                                json={"restore": {"volume_id": small["id"]}})  # fmt: skip
    assert "too small" in refused(onto_small)
    assert (await cloud.wait("volume", small["id"], ("available",)))["size"] == 1

    missing = await cloud.v3("POST", "/volumes", json={"volume": {
        "size": 1, "snapshot_id": "00000000-0000-4000-8000-000000000000"}})  # fmt: skip
    refused(missing, 404)

    with_snapshot = await cloud.v3("DELETE", f"/volumes/{big['id']}")
    assert "dependent snapshots" in refused(with_snapshot)
    await cloud.wait("volume", big["id"], ("available",))
    assert (await cloud.v3("DELETE", f"/backups/{saved['id']}")).status_code == 202
    await cloud.gone("backup", saved["id"])
    assert (await cloud.v3("DELETE", f"/volumes/{big['id']}?cascade=true")).status_code == 202
    await cloud.v3("DELETE", f"/volumes/{small['id']}")
    await cloud.call("DELETE", f"/image/v2/images/{image['id']}", cloud.admin)
    await cloud.gone("volume", big["id"])


async def test_attached_volumes_are_guarded(volume_cloud: VolumeCloud) -> None:
    cloud = volume_cloud
    volume = await cloud.volume(name="guarded")
    attachment_id = await attached(cloud, volume["id"])

    again = await cloud.v3("POST", "/attachments", json={"attachment": {
        "volume_uuid": volume["id"], "instance_uuid": ATTACHED_SERVER[::-1]}})  # fmt: skip
    assert "in-use" in refused(again) or "attached" in refused(again)
    delete = await cloud.v3("DELETE", f"/volumes/{volume['id']}")
    assert "in-use" in refused(delete) or "attached" in refused(delete)
    # Before 3.66 an in-use volume's snapshot needs force.
    snapshot = await cloud.v3("POST", "/snapshots", json={"snapshot": {
        "volume_id": volume["id"]}}, headers={"OpenStack-API-Version": "volume 3.65"})  # fmt: skip
    assert "in-use" in refused(snapshot)
    saved = await cloud.v3("POST", "/backups", json={"backup": {"volume_id": volume["id"]}})
    assert "in-use" in refused(saved)
    transfer = await cloud.v3("POST", "/volume-transfers", json={"transfer": {
        "volume_id": volume["id"]}})  # fmt: skip
    assert "in-use" in refused(transfer) or "available" in refused(transfer)

    same = await cloud.v3("POST", f"/volumes/{volume['id']}/action",
                          json={"os-extend": {"new_size": 1}})  # fmt: skip
    assert "must be greater" in refused(same)
    smaller = await cloud.v3("POST", f"/volumes/{volume['id']}/action",
                             json={"os-extend": {"new_size": 0}})  # fmt: skip
    refused(smaller)

    shown: dict[str, Any] = (await cloud.v3("GET", f"/volumes/{volume['id']}")).json()["volume"]
    assert (shown["status"], shown["size"], len(shown["attachments"])) == ("in-use", 1, 1)
    assert (await cloud.v3("DELETE", f"/attachments/{attachment_id}")).status_code == 200
    await cloud.wait("volume", volume["id"], ("available",))
    assert (await cloud.v3("DELETE", f"/volumes/{volume['id']}")).status_code == 202


async def test_transfers_need_the_key_and_a_free_volume(volume_cloud: VolumeCloud) -> None:
    cloud = volume_cloud
    _, giver = await cloud.project_member(cloud.admin, "bad-giver")
    _, taker = await cloud.project_member(cloud.admin, "bad-taker")
    volume = await cloud.volume(giver, name="gift")
    offered = await cloud.v3("POST", "/volume-transfers", giver, json={"transfer": {
        "volume_id": volume["id"]}})  # fmt: skip
    assert offered.status_code == 202, offered.text
    transfer = offered.json()["transfer"]
    twice = await cloud.v3("POST", "/volume-transfers", giver, json={"transfer": {
        "volume_id": volume["id"]}})  # fmt: skip
    refused(twice)
    wrong_key = await cloud.v3("POST", f"/volume-transfers/{transfer['id']}/accept", taker,
                               json={"accept": {"auth_key": "not-the-key"}})  # fmt: skip
    assert "auth key" in refused(wrong_key).lower()
    no_key = await cloud.v3("POST", f"/volume-transfers/{transfer['id']}/accept", taker,
                            json={"accept": {}})  # fmt: skip
    refused(no_key)
    kept = (await cloud.v3("GET", f"/volumes/{volume['id']}", giver)).json()["volume"]
    assert kept["status"] == "awaiting-transfer"
    deleted = await cloud.v3("DELETE", f"/volume-transfers/{transfer['id']}", giver)
    assert deleted.status_code == 202, deleted.text
    await cloud.wait("volume", volume["id"], ("available",), giver)
    await cloud.v3("DELETE", f"/volumes/{volume['id']}", giver)
