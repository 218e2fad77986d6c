"""What Tempest's volume API tests found, kept as tests (CI does not run Tempest)."""

from __future__ import annotations

from tests.functional.volume.conftest import VolumeCloud


async def test_attribute_extensions_only_in_get_views(volume_cloud: VolumeCloud) -> None:
    """Cinder's tenant/host/migration attributes extend GETs; create/update answers lack them."""
    cloud = volume_cloud
    created = (await cloud.v3("POST", "/volumes", json={"volume": {"size": 1}})).json()["volume"]
    assert not [key for key in created if key.startswith("os-vol-")]
    volume = await cloud.wait("volume", created["id"], ("available",))
    assert volume["os-vol-tenant-attr:tenant_id"] and volume["os-vol-host-attr:host"]
    updated = await cloud.v3("PUT", f"/volumes/{created['id']}", json={"volume": {"name": "v"}})
    assert "os-vol-tenant-attr:tenant_id" not in updated.json()["volume"]
    snap = await cloud.v3("POST", "/snapshots", json={"snapshot": {"volume_id": created["id"]}})
    assert not [key for key in snap.json()["snapshot"] if key.startswith("os-extended-")]
    snapshot = await cloud.wait("snapshot", snap.json()["snapshot"]["id"], ("available",))
    assert snapshot["os-extended-snapshot-attributes:project_id"]
    await cloud.v3("DELETE", f"/snapshots/{snapshot['id']}")
    await cloud.gone("snapshot", snapshot["id"])
    await cloud.v3("DELETE", f"/volumes/{created['id']}")


async def test_volume_type_and_qos_answers_as_cinder(volume_cloud: VolumeCloud) -> None:
    cloud = volume_cloud
    made = (await cloud.v3("POST", "/types", json={"volume_type": {"name": "shaped"}})).json()
    assert set(made["volume_type"]) == {
        "id",
        "name",
        "description",
        "is_public",
        "os-volume-type-access:is_public",
        "extra_specs",
    }
    type_id = made["volume_type"]["id"]
    shown = (await cloud.v3("GET", f"/types/{type_id}")).json()["volume_type"]
    assert "qos_specs_id" in shown
    updated = await cloud.v3("PUT", f"/types/{type_id}", json={"volume_type": {"description": "d"}})
    assert set(updated.json()["volume_type"]) == {
        "id",
        "name",
        "description",
        "is_public",
        "extra_specs",
    }
    qos = (await cloud.v3("POST", "/qos-specs", json={"qos_specs": {"name": "q"}})).json()
    assert set(qos["qos_specs"]) == {"id", "name", "consumer", "specs"} and qos["links"]


async def test_services_answers_and_capabilities(volume_cloud: VolumeCloud) -> None:
    cloud = volume_cloud
    services = (await cloud.v3("GET", "/os-services?binary=cinder-volume")).json()["services"]
    host = services[0]["host"]
    body = {"host": host, "binary": "cinder-volume", "disabled_reason": None}
    refused = await cloud.v3("PUT", "/os-services/disable-log-reason", json=body)
    assert refused.status_code == 400
    body["disabled_reason"] = "maintenance"
    disabled = (await cloud.v3("PUT", "/os-services/disable-log-reason", json=body)).json()
    assert (disabled["disabled"], disabled["disabled_reason"]) == (True, "maintenance")
    enable = {"host": host, "binary": "cinder-volume"}
    enabled = (await cloud.v3("PUT", "/os-services/enable", json=enable)).json()
    assert enabled["disabled"] is False
    capabilities = (await cloud.v3("GET", f"/capabilities/{host}")).json()
    assert "display_name" in capabilities
