"""The metadata service (signatures, OpenStack and EC2 trees, the config drive's files) and the
noVNC websocket proxy (single-use tokens, bytes both ways), in process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import uvicorn
import websockets

from onestack.compute.console import novnc_app
from onestack.compute.metadata import content, metadata_app, signature

SECRET = "s3cret"
SERVER = {
    "uuid": "6f6b2c1e-1111-4222-8333-444455556666",
    "name": "vm1",
    "hostname": "vm1",
    "project_id": "p1",
    "availability_zone": "nova",
    "launch_index": 0,
    "metadata": {"role": "web"},
    "public_keys": {"k1": "ssh-ed25519 AAAAC3Nza test"},
    "user_data": "I2Nsb3VkLWNvbmZpZw==",
    "instance_name": "instance-0000002a",
    "flavor_name": "m1.tiny",
    "ports": [
        {
            "id": "0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9",
            "mac_address": "fa:16:3e:11:22:33",
            "network_id": "net-1",
            "mtu": 1450,
            "fixed_ips": [{"ip_address": "10.0.0.5"}],
            "floating_ips": ["172.24.4.10"],
        }
    ],
}


async def _lookup(uuid: str) -> dict | None:
    return SERVER if uuid == SERVER["uuid"] else None


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=metadata_app(_lookup, SECRET))
    async with httpx.AsyncClient(transport=transport, base_url="http://meta") as http:
        yield http


def _headers(uuid: str = SERVER["uuid"], secret: str = SECRET, tenant: str = "p1") -> dict:
    return {
        "X-Instance-ID": uuid,
        "X-Tenant-ID": tenant,
        "X-Instance-ID-Signature": signature(secret, uuid),
        "X-Forwarded-For": "10.0.0.5",
    }


async def test_bad_or_missing_signature_is_refused(client):
    assert (await client.get("/openstack/latest/meta_data.json")).status_code == 403
    bad = await client.get("/openstack/latest/meta_data.json", headers=_headers(secret="other"))
    assert bad.status_code == 403
    wrong_tenant = await client.get(
        "/openstack/latest/meta_data.json", headers=_headers(tenant="p2")
    )
    assert wrong_tenant.status_code == 404
    unknown = await client.get("/latest/meta-data/", headers=_headers(uuid="nope"))
    assert unknown.status_code == 404


async def test_openstack_tree(client):
    meta = (await client.get("/openstack/latest/meta_data.json", headers=_headers())).json()
    assert meta["uuid"] == SERVER["uuid"] and meta["hostname"] == "vm1"
    assert meta["public_keys"] == {"k1": "ssh-ed25519 AAAAC3Nza test"}
    assert meta["meta"] == {"role": "web"} and meta["availability_zone"] == "nova"
    assert meta["project_id"] == "p1" and meta["launch_index"] == 0
    network = (
        await client.get("/openstack/2018-08-27/network_data.json", headers=_headers())
    ).json()
    assert network["links"][0]["ethernet_mac_address"] == "fa:16:3e:11:22:33"
    assert network["links"][0]["mtu"] == 1450
    assert network["networks"][0]["type"] == "ipv4_dhcp"
    assert (
        await client.get("/openstack/latest/user_data", headers=_headers())
    ).text == "#cloud-config"
    assert (await client.get("/openstack/latest/vendor_data.json", headers=_headers())).json() == {}
    listing = (await client.get("/openstack/latest/", headers=_headers())).text.split("\n")
    assert "meta_data.json" in listing and "user_data" in listing
    versions = (await client.get("/openstack", headers=_headers())).text.split("\n")
    assert "latest" in versions and "2012-08-10" in versions
    assert (await client.get("/openstack/latest/nothing", headers=_headers())).status_code == 404


async def test_ec2_tree(client):
    async def get(path: str) -> str:
        answer = await client.get(path, headers=_headers())
        assert answer.status_code == 200, path
        return answer.text

    assert await get("/latest/meta-data/instance-id") == "i-0000002a"
    assert await get("/latest/meta-data/hostname") == "vm1"
    assert await get("/latest/meta-data/local-ipv4") == "10.0.0.5"
    assert await get("/latest/meta-data/public-ipv4") == "172.24.4.10"
    assert await get("/latest/meta-data/placement/availability-zone") == "nova"
    assert await get("/latest/meta-data/public-keys/") == "0=k1"
    assert await get("/latest/meta-data/public-keys/0/openssh-key") == "ssh-ed25519 AAAAC3Nza test"
    assert "instance-id" in (await get("/2009-04-04/meta-data/")).split("\n")
    assert await get("/latest/user-data") == "#cloud-config"
    assert (await client.get("/latest/meta-data/nothing", headers=_headers())).status_code == 404


def test_config_drive_has_the_same_files():
    files = content.config_drive_files(SERVER)
    meta = json.loads(files["openstack/latest/meta_data.json"])
    assert meta["uuid"] == SERVER["uuid"] and meta["public_keys"]["k1"]
    assert files["openstack/2012-08-10/user_data"] == b"#cloud-config"
    ec2 = json.loads(files["ec2/latest/meta-data.json"])
    assert ec2["instance-id"] == "i-0000002a"
    assert ec2["public-keys"]["0=k1"]["openssh-key"].startswith("ssh-ed25519")


class _Tokens:
    def __init__(self, port: int):
        self.port = port

    def resolve(self, token: str) -> tuple[str, str, int] | None:
        return ("server", "127.0.0.1", self.port) if token == "good" else None


def _fake_vnc_server() -> tuple[socket.socket, threading.Thread]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.sendall(b"RFB 003.008\n")
            conn.sendall(b"echo:" + conn.recv(64))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener, thread


@contextlib.asynccontextmanager
async def _serve(app) -> AsyncIterator[str]:
    """Run ``app`` under uvicorn on a free port; yields its base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def test_novnc_proxy_relays_and_tokens_are_single_use(tmp_path: Path):
    listener, thread = _fake_vnc_server()
    static = tmp_path / "novnc"
    (static / "core").mkdir(parents=True)
    (static / "vendor").mkdir()
    (static / "core" / "rfb.js").write_text("export default class RFB {}")
    app = novnc_app(_Tokens(listener.getsockname()[1]), static)
    async with _serve(app) as address, httpx.AsyncClient(base_url=f"http://{address}") as http:
        page = await http.get("/vnc_lite.html?token=good")
        assert page.status_code == 200 and "core/rfb.js" in page.text
        assert (await http.get("/core/rfb.js")).status_code == 200
        url = f"ws://{address}/websockify?token=good"
        async with websockets.connect(url, subprotocols=["binary"]) as ws:
            assert ws.subprotocol == "binary"
            assert await ws.recv() == b"RFB 003.008\n"
            await ws.send(b"RFB 003.008\n")
            assert await ws.recv() == b"echo:RFB 003.008\n"
        for token in ("good", "bad"):
            with pytest.raises(websockets.exceptions.WebSocketException):
                async with websockets.connect(f"ws://{address}/websockify?token={token}") as ws:
                    await ws.recv()
    thread.join(5)
    listener.close()


async def test_novnc_page_says_when_the_client_is_missing():
    transport = httpx.ASGITransport(app=novnc_app(_Tokens(1), None))
    async with httpx.AsyncClient(transport=transport, base_url="http://console") as http:
        assert (await http.get("/vnc_lite.html?token=x")).status_code == 503
