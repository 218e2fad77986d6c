"""vxlan networks in the API: a VNI from the configured range when none is given, a taken
VNI refused, the MTU 50 below the physical one, and the agents told each other's tunnel
endpoints (from their heartbeats) in the state they fetch, marked incomplete while a live
agent has not reported since the service started; concurrent creates never share a VNI
(on SQLite, PostgreSQL and MariaDB)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.exc import IntegrityError

from onestack.cloud import Cloud
from onestack.network.models import Network
from onestack.network.service import AGENT_BINARY
from onestack.network.topology import NetworkReports, desired_state
from tests.backends import database_url
from tests.conftest import ADMIN_PASSWORD, CloudClient, make_settings

NET = "/network/v2.0"


async def network(cloud: CloudClient, token: str, body: dict[str, Any], status: int = 201) -> Any:
    response = await cloud.call("POST", f"{NET}/networks", token, json={"network": body})
    assert response.status_code == status, response.text
    return response.json()["network" if status == 201 else "NeutronError"]


async def test_vni_allocation_and_mtu(cloud: CloudClient) -> None:
    admin = await cloud.token()
    service: Any = cloud.cloud.units["network"].service  # type: ignore[attr-defined]
    service.settings.network.vni_range = (7, 8)
    vxlan = {"provider:network_type": "vxlan"}
    first = await network(cloud, admin, {"name": "a", **vxlan})
    assert (first["provider:segmentation_id"], first["mtu"]) == (7, 1450)
    given = await network(cloud, admin, {"name": "b", **vxlan, "provider:segmentation_id": 900})
    assert given["provider:segmentation_id"] == 900
    taken = await network(cloud, admin, {**vxlan, "provider:segmentation_id": 7}, status=409)
    assert taken["type"] == "TunnelIdInUse"
    assert (await network(cloud, admin, vxlan))["provider:segmentation_id"] == 8
    exhausted = await network(cloud, admin, vxlan, status=503)
    assert exhausted["type"] == "NoNetworkAvailable"
    too_big = await network(cloud, admin, {**vxlan, "mtu": 1500}, status=400)
    assert "1450" in too_big["message"]
    assert (await network(cloud, admin, {**vxlan, "mtu": 1400, "provider:segmentation_id": 5}))[
        "mtu"
    ] == 1400
    # Other types keep the physical MTU and take no VNI.
    local = await network(cloud, admin, {"name": "l"})
    assert (local["mtu"], local["provider:segmentation_id"]) == (1500, None)
    renamed = await cloud.call(
        "PUT", f"{NET}/networks/{first['id']}", admin, json={"network": {"name": "a2"}}
    )
    assert renamed.status_code == 200 and renamed.json()["network"]["mtu"] == 1450

    reports = NetworkReports(service)
    await reports.agent_heartbeat("h1", {"driver": "linuxbridge", "tunneling_ip": "192.0.2.1"})
    await reports.agent_heartbeat("h2", {"driver": "linuxbridge", "tunneling_ip": "192.0.2.2"})
    await reports.agent_heartbeat("h3", {"driver": "linuxbridge"})
    await reports.agent_heartbeat(service.host, {"driver": "noop"})  # the noop stand-in
    state = await desired_state(service)
    assert state["tunnel_endpoints"] == {"h1": "192.0.2.1", "h2": "192.0.2.2"}
    assert state["tunnel_endpoints_complete"] is True
    # An agent alive in the registry the service has not heard from since it started.
    await service.agents.record("h4", AGENT_BINARY)
    assert (await desired_state(service))["tunnel_endpoints_complete"] is False
    await reports.agent_heartbeat("h4", {"driver": "linuxbridge", "tunneling_ip": "192.0.2.4"})
    state = await desired_state(service)
    assert state["tunnel_endpoints_complete"] is True
    assert state["tunnel_endpoints"]["h4"] == "192.0.2.4"
    [shown] = [n for n in state["networks"] if n["id"] == first["id"]]
    assert (shown["network_type"], shown["segmentation_id"], shown["mtu"]) == ("vxlan", 7, 1450)


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
async def cloud_on(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[CloudClient]:
    """Identity and network in one process on a fresh database of each backend."""
    settings = make_settings(tmp_path, port=8000)
    settings.services = ["identity", "network"]
    settings.database.default = database_url(request.param, tmp_path)
    settings.network.vni_range = (100, 199)
    instance = Cloud(settings)
    await instance.start(admin_password=ADMIN_PASSWORD)
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=instance.app), base_url="http://127.0.0.1:8000"
    )
    try:
        yield CloudClient(instance, client)
    finally:
        await client.aclose()
        await instance.stop()


async def test_concurrent_creates_never_share_a_vni(cloud_on: CloudClient) -> None:
    admin = await cloud_on.token()
    vxlan = {"provider:network_type": "vxlan"}

    async def create(body: dict[str, Any]) -> Any:
        return await cloud_on.call("POST", f"{NET}/networks", admin, json={"network": body})

    made = await asyncio.gather(*(create({"name": f"n{i}", **vxlan}) for i in range(12)))
    assert [r.status_code for r in made] == [201] * 12, [r.text for r in made]
    vnis = [r.json()["network"]["provider:segmentation_id"] for r in made]
    assert sorted(vnis) == list(range(100, 112))
    # An explicit VNI wanted by several at once: one gets it, the others a 409.
    wanted = {**vxlan, "provider:segmentation_id": 5000}
    raced = await asyncio.gather(*(create(wanted) for _ in range(4)))
    assert sorted(r.status_code for r in raced) == [201, 409, 409, 409], [r.text for r in raced]
    assert {r.json()["NeutronError"]["type"] for r in raced if r.status_code == 409} == {
        "TunnelIdInUse"
    }
    # A VLAN id too (here unique across physical networks).
    vlan = {"provider:network_type": "vlan", "provider:segmentation_id": 42}
    assert (await create({**vlan, "provider:physical_network": "a"})).status_code == 201
    again = await create({**vlan, "provider:physical_network": "b"})
    assert (again.status_code, again.json()["NeutronError"]["type"]) == (409, "VlanIdInUse")
    # The migrated schema itself refuses a second network on a segment.
    service: Any = cloud_on.cloud.units["network"].service  # type: ignore[attr-defined]
    with pytest.raises(IntegrityError):
        async with service.db.session() as session:
            session.add(
                Network(project_id="p", network_type="vxlan", segmentation_id=vnis[0], tags=[])
            )
    listed = await cloud_on.call("GET", f"{NET}/networks?provider:network_type=vxlan", admin)
    assert len(listed.json()["networks"]) == 13
