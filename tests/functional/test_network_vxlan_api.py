"""vxlan networks in the API: a VNI from the configured range when none is given, a taken
VNI refused, the MTU 50 below the physical one, and the agents told each other's tunnel
endpoints (from their heartbeats) in the state they fetch, marked incomplete while a live
agent has not reported since the service started."""

from __future__ import annotations

from typing import Any

from onestack.network.service import AGENT_BINARY
from onestack.network.topology import NetworkReports, desired_state
from tests.conftest import CloudClient

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
