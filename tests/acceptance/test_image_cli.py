"""Image acceptance: the openstack CLI and openstacksdk against a real `onestack up`."""

from __future__ import annotations

import hashlib
import re
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx
import openstack
import pytest

from tests.acceptance.conftest import ADMIN_PASSWORD, Deployment, issue_token, unique

pytestmark = pytest.mark.skipif(
    shutil.which("qemu-img") is None, reason="qemu-img (qemu-utils) is needed to make test images"
)


@pytest.fixture(scope="module")
def disk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("images") / "cirros6.qcow2"
    subprocess.run(["qemu-img", "create", "-f", "qcow2", str(path), "112M"], check=True)
    return path


def test_image_sequence_of_the_seed(all_in_one: Deployment, disk: Path, tmp_path: Path) -> None:
    cloud = all_in_one
    name = unique("cirros6")
    created = cloud.json(
        "image", "create", "--file", str(disk), "--disk-format", "qcow2",
        "--container-format", "bare", "--public", name,
    )  # fmt: skip
    assert created["status"] == "active"
    assert name in [i["Name"] for i in cloud.json("image", "list")]
    shown = cloud.json("image", "show", name)
    for field in (
        "checksum", "container_format", "disk_format", "file", "id", "min_disk", "min_ram",
        "name", "owner", "properties", "protected", "schema", "size", "status", "tags",
        "virtual_size", "visibility",
    ):  # fmt: skip
        assert field in shown, field
    assert shown["checksum"] == hashlib.md5(disk.read_bytes()).hexdigest()
    assert shown["properties"]["os_hash_algo"] == "sha512"
    assert shown["properties"]["os_hash_value"] == hashlib.sha512(disk.read_bytes()).hexdigest()
    assert shown["virtual_size"] == 112 * 1024 * 1024
    assert (shown["visibility"], shown["disk_format"], shown["size"]) == (
        "public",
        "qcow2",
        disk.stat().st_size,
    )

    cloud.openstack("image", "set", "--property", "hw_disk_bus=virtio", name)
    assert cloud.json("image", "show", name)["properties"]["hw_disk_bus"] == "virtio"

    saved = tmp_path / "out.qcow2"
    cloud.openstack("image", "save", "--file", str(saved), name)
    assert saved.read_bytes() == disk.read_bytes()

    cloud.openstack("image", "delete", name)
    assert name not in [i["Name"] for i in cloud.json("image", "list")]


def test_sharing_with_another_project(all_in_one: Deployment, disk: Path) -> None:
    cloud = all_in_one
    owner, other = unique("own"), unique("oth")
    for project in (owner, other):
        cloud.json("project", "create", project)
        cloud.json("user", "create", "--password", "pw", f"{project}-user")
        cloud.openstack("role", "add", "--user", f"{project}-user", "--project", project, "member")
    owner_env = cloud.env_for(f"{owner}-user", "pw", owner)
    other_env = cloud.env_for(f"{other}-user", "pw", other)
    name = unique("shared")
    cloud.json(
        "image", "create", "--file", str(disk), "--disk-format", "qcow2", "--shared", name,
        env=owner_env,
    )  # fmt: skip
    assert name not in [i["Name"] for i in cloud.json("image", "list", env=other_env)]
    public = cloud.openstack("image", "create", "--public", unique("p"), env=owner_env, check=False)
    assert public.returncode != 0 and "403" in public.stderr + public.stdout
    other_id = cloud.json("project", "show", other)["id"]
    cloud.openstack("image", "add", "project", name, other_id, env=owner_env)
    image_id = cloud.json("image", "show", name, env=owner_env)["id"]
    cloud.openstack("image", "set", "--accept", image_id, env=other_env)
    assert name in [i["Name"] for i in cloud.json("image", "list", env=other_env)]
    refused = cloud.openstack("image", "delete", image_id, env=other_env, check=False)
    assert refused.returncode != 0
    cloud.openstack("image", "delete", name, env=owner_env)


def test_openstacksdk_downloads_and_verifies(all_in_one: Deployment, disk: Path) -> None:
    conn = openstack.connect(
        auth_url=all_in_one.auth_url,
        username="admin",
        password=ADMIN_PASSWORD,
        project_name="admin",
        user_domain_name="Default",
        project_domain_name="Default",
    )
    try:
        image = conn.image.create_image(
            name=unique("sdk"),
            filename=str(disk),
            disk_format="qcow2",
            container_format="bare",
            wait=True,
        )
        image = conn.image.get_image(image.id)  # the SDK returns the record from before upload
        assert image.status == "active"
        downloaded = conn.image.download_image(image)  # the SDK checks the MD5 itself
        assert hashlib.sha512(downloaded.content).hexdigest() == image.hash_value
        conn.image.delete_image(image)
    finally:
        conn.close()


def _rss_kib(pid: int) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", text).group(1))  # type: ignore[union-attr]


def test_two_gib_round_trip_keeps_memory_flat(all_in_one: Deployment, tmp_path: Path) -> None:
    size = 2 * 1024**3
    source = tmp_path / "big.raw"
    with source.open("wb") as handle:
        handle.truncate(size)
    pid = all_in_one.processes[0].popen.pid
    base = all_in_one.auth_url.removesuffix("/identity/v3")
    token = issue_token(all_in_one.auth_url, "admin", ADMIN_PASSWORD, "admin")
    headers = {"X-Auth-Token": token.headers["x-subject-token"]}
    created = httpx.post(
        f"{base}/image/v2/images",
        json={"name": unique("big"), "disk_format": "raw", "container_format": "bare"},
        headers=headers,
    )
    image_id = created.json()["id"]
    baseline = _rss_kib(pid)
    peak = [baseline]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_kib(pid))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        with source.open("rb") as handle:
            uploaded = httpx.put(
                f"{base}/image/v2/images/{image_id}/file",
                content=iter(lambda: handle.read(1 << 20), b""),
                headers={**headers, "Content-Type": "application/octet-stream"},
                timeout=600,
            )
        assert uploaded.status_code == 204, uploaded.text
        digest = hashlib.md5()
        received = 0
        with httpx.stream(
            "GET", f"{base}/image/v2/images/{image_id}/file", headers=headers, timeout=600
        ) as response:
            assert response.status_code == 200
            for chunk in response.iter_bytes(1 << 20):
                digest.update(chunk)
                received += len(chunk)
    finally:
        done.set()
        sampler.join()
    shown = httpx.get(f"{base}/image/v2/images/{image_id}", headers=headers).json()
    assert received == size == shown["size"]
    assert digest.hexdigest() == shown["checksum"]
    growth_mib = (peak[0] - baseline) / 1024
    assert growth_mib < 64, f"resident memory grew by {growth_mib:.0f} MiB during 2 GiB of I/O"
    httpx.delete(f"{base}/image/v2/images/{image_id}", headers=headers)


def test_image_service_served_apart(scale_out: Deployment, disk: Path, tmp_path: Path) -> None:
    """`onestack serve image` on its own port and database registered itself in the catalog."""
    cloud = scale_out
    endpoints = cloud.json("endpoint", "list", "--service", "image")
    assert {e["Interface"] for e in endpoints} == {"public", "internal", "admin"}
    name = unique("apart")
    cloud.json("image", "create", "--file", str(disk), "--disk-format", "qcow2", name)
    assert cloud.json("image", "show", name)["status"] == "active"
    saved = tmp_path / "apart.qcow2"
    cloud.openstack("image", "save", "--file", str(saved), name)
    assert saved.read_bytes() == disk.read_bytes()
    token = cloud.json("token", "issue")["id"]
    image_url = next(e["URL"] for e in endpoints if e["Interface"] == "public")
    # Used once, the token sits in the image service's 30 s validation cache...
    assert httpx.get(f"{image_url}/v2/images", headers={"X-Auth-Token": token}).status_code == 200
    cloud.openstack("token", "revoke", token)
    # ...which identity's announcement over RabbitMQ clears well before then.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        status = httpx.get(f"{image_url}/v2/images", headers={"X-Auth-Token": token}).status_code
        if status == 401:
            break
        time.sleep(0.2)
    assert status == 401, "the image service stopped honouring a revoked token"
    cloud.openstack("image", "delete", name)


def test_broken_upload_is_killed_and_leaves_nothing(all_in_one: Deployment) -> None:
    base = all_in_one.auth_url.removesuffix("/identity/v3")
    token = issue_token(all_in_one.auth_url, "admin", ADMIN_PASSWORD, "admin")
    headers = {"X-Auth-Token": token.headers["x-subject-token"]}
    image = httpx.post(
        f"{base}/image/v2/images",
        json={"name": unique("broken"), "disk_format": "raw", "container_format": "bare"},
        headers=headers,
    ).json()
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as raw:
        raw.sendall(
            (
                f"PUT /image/v2/images/{image['id']}/file HTTP/1.1\r\nHost: {host}\r\n"
                f"X-Auth-Token: {headers['X-Auth-Token']}\r\n"
                "Content-Type: application/octet-stream\r\nContent-Length: 50000000\r\n\r\n"
            ).encode()
        )
        raw.sendall(b"\0" * 6_000_000)  # more than one 4 MiB batch, far less than promised
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        status = httpx.get(f"{base}/image/v2/images/{image['id']}", headers=headers).json()[
            "status"
        ]
        if status == "killed":
            break
        time.sleep(0.1)
    assert status == "killed"
    store = Path(all_in_one.extra_env["data_dir"]) / "images"
    assert not [p for p in store.iterdir() if image["id"] in p.name]
    assert httpx.delete(f"{base}/image/v2/images/{image['id']}", headers=headers).status_code == 204


def test_image_quota_set_with_unified_limits(all_in_one: Deployment, disk: Path) -> None:
    cloud = all_in_one
    project = unique("quota")
    cloud.json("project", "create", project)
    cloud.json("user", "create", "--password", "pw", f"{project}-user")
    cloud.openstack("role", "add", "--user", f"{project}-user", "--project", project, "member")
    existing = cloud.json("registered", "limit", "list", "--service", "glance")
    if not [r for r in existing if r["Resource Name"] == "image_count_total"]:
        cloud.json(
            "registered", "limit", "create", "--service", "glance", "--default-limit", "100",
            "image_count_total",
        )  # fmt: skip
    cloud.json(
        "limit", "create", "--project", project, "--service", "glance", "--resource-limit", "1",
        "image_count_total",
    )  # fmt: skip
    env = cloud.env_for(f"{project}-user", "pw", project)
    cloud.json(
        "image", "create", "--file", str(disk), "--disk-format", "qcow2", unique("one"), env=env
    )
    refused = cloud.openstack("image", "create", unique("two"), env=env, check=False)
    assert refused.returncode != 0 and "413" in refused.stderr + refused.stdout
