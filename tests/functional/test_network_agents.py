"""The network service's side of the data plane, in-process with no agent: the state it
hands agents, their wiring reports (ports go ACTIVE, compute hears network-vif-plugged),
heartbeats in /v2.0/agents, and a 400 for a network type the host cannot build."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from onestack.cloud import Cloud
from onestack.network.drivers.linuxbridge import LinuxBridgeDriver
from onestack.network.drivers.linuxbridge.features import HostFeatures
from onestack.network.topology import DHCP_OWNER, NetworkReports
from tests.conftest import ADMIN_PASSWORD, CloudClient, make_settings

NET = "/network/v2.0"
FEATURES = HostFeatures(True, True, True, vxlan=False, vlan=False, bridge_netfilter=True)


@pytest.fixture
async def linuxbridge(tmp_path: Path) -> AsyncIterator[CloudClient]:
    settings = make_settings(tmp_path, port=8000)
    settings.services = ["identity", "network"]
    settings.network.driver = "linuxbridge"
    settings.network.local_agent = False
    instance = Cloud(settings)
    await instance.start(admin_password=ADMIN_PASSWORD)
    service = instance.units["network"].service  # type: ignore[attr-defined]
    service.driver = LinuxBridgeDriver(FEATURES, service.agent_hosts)
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=instance.app), base_url="http://127.0.0.1:8000"
    )
    try:
        yield CloudClient(instance, client)
    finally:
        await client.aclose()
        await instance.stop()


async def post(cloud: CloudClient, token: str, kind: str, body: dict[str, Any]) -> Any:
    response = await cloud.call("POST", f"{NET}/{kind}s", token, json={kind: body})
    assert response.status_code == 201, response.text
    return response.json()[kind]


async def test_wiring_reports_activate_ports_and_tell_compute(linuxbridge: CloudClient) -> None:
    cloud = linuxbridge
    token = await cloud.token()
    service: Any = cloud.cloud.units["network"].service  # type: ignore[attr-defined]
    events: list[dict[str, Any]] = []

    async def record(batch: list[dict[str, Any]]) -> None:
        events.extend(batch)

    service.notify_compute = record
    refused = await cloud.call(
        "POST", f"{NET}/networks", token,
        json={"network": {"name": "v", "provider:network_type": "vlan",
                          "provider:physical_network": "physnet1"}},
    )  # fmt: skip
    assert refused.status_code == 400
    assert refused.json()["NeutronError"]["type"] == "InvalidInput"
    assert "vlan" in refused.json()["NeutronError"]["message"]

    reports = NetworkReports(service)
    await reports.agent_heartbeat("h1", {"driver": "linuxbridge", "features": {"vxlan": False}})
    network = await post(cloud, token, "network", {"name": "n1"})
    await post(cloud, token, "subnet", {"network_id": network["id"], "cidr": "10.9.0.0/24",
                                        "ip_version": 4})  # fmt: skip
    server = "8c5e0d55-5a3c-4b65-9d7a-6a0f1d2e3f40"
    port = await post(cloud, token, "port", {
        "network_id": network["id"], "binding:host_id": "h1", "device_id": server,
        "device_owner": "compute:nova"})  # fmt: skip
    assert port["binding:vif_type"] == "bridge"
    assert port["binding:vif_details"] == {
        "bridge_name": "brq" + network["id"][:11],
        "port_filter": True,
    }
    assert port["status"] == "DOWN"
    simulated = await post(cloud, token, "port", {"network_id": network["id"],
                                                  "binding:host_id": "fake-host-7"})  # fmt: skip
    assert (simulated["binding:vif_type"], simulated["status"]) == ("noop", "ACTIVE")
    await cloud.call("DELETE", f"{NET}/ports/{simulated['id']}", token)

    state = await reports.get_state("h1")
    dhcp = [p for p in state["ports"] if p["device_owner"] == DHCP_OWNER]
    assert len(dhcp) == 1 and dhcp[0]["fixed_ips"][0]["cidr"] == "10.9.0.0/24"
    assert (await reports.get_state("h1"))["ports"] == state["ports"]  # one DHCP port only
    [group] = port["security_groups"]
    assert port["fixed_ips"][0]["ip_address"] in state["security_groups"][group]["members"]

    await reports.ports_wired("h1", active=[port["id"]], down=[])
    await reports.ports_wired("h1", active=[port["id"]], down=[])  # no second event
    shown = await cloud.call("GET", f"{NET}/ports/{port['id']}", token)
    assert shown.json()["port"]["status"] == "ACTIVE"
    renamed = await cloud.call("PUT", f"{NET}/ports/{port['id']}", token,
                               json={"port": {"name": "still-wired"}})  # fmt: skip
    assert renamed.json()["port"]["status"] == "ACTIVE"
    await reports.ports_wired("h1", active=[], down=[port["id"]])
    await asyncio.sleep(0.05)  # the events are posted in the background
    assert [(e["name"], e["server_uuid"], e["tag"], e["status"]) for e in events] == [
        ("network-vif-plugged", server, port["id"], "completed"),
        ("network-vif-unplugged", server, port["id"], "completed"),
    ]

    agents = (await cloud.call("GET", f"{NET}/agents", token)).json()["agents"]
    [agent] = [a for a in agents if a["host"] == "h1"]
    assert agent["alive"] is True and agent["agent_type"] == "Linux bridge agent"
    assert agent["configurations"]["features"] == {"vxlan": False}

    # Deleting the subnet and network takes the DHCP port along.
    assert (await cloud.call("DELETE", f"{NET}/ports/{port['id']}", token)).status_code == 204
    gone = await cloud.call("DELETE", f"{NET}/networks/{network['id']}", token)
    assert gone.status_code == 204, gone.text
    assert (await reports.get_state("h1"))["ports"] == []
