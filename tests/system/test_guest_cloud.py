"""A real guest on ``onestack up`` (root, qemu driver) driven by the real ``openstack`` CLI.

One guest is shared by most checks: it boots the image ``onestack guest-image build``
makes, gets its address from the cloud's DHCP and its key from the metadata service
(or the config drive when the network has no data plane), and shows the marker in
``console log show``; the noVNC URL's page and websocket answer; stop/start show in
power state and console; a snapshot becomes an active image; a second guest pings it,
and once killed from outside shows SHUTOFF within the power sync; delete leaves no QEMU
process and no tap. Needs root and QEMU (under CI=true: fails, never skips).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import websockets
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from onestack.compute.guest_image import MARKER
from tests.acceptance.conftest import ADMIN_PASSWORD, BIN, Deployment, Process, free_port
from tests.system.requirements import require

TOOLS = ("qemu-system-x86_64", "qemu-img", "busybox", "mkfs.fat", "mcopy", "syslinux",
         "genisoimage")  # fmt: skip
BOOT_TIMEOUT = 150.0
SYNC_INTERVAL = 5
# The external network's prefix, random so that clouds of concurrent runs do not collide.
EXTERNAL = f"10.{random.randint(100, 199)}.{random.randint(0, 255)}"


def openssh_public_key() -> bytes:
    """A new ed25519 public key in OpenSSH format (what ``keypair create --public-key`` takes)."""
    public = ed25519.Ed25519PrivateKey.generate().public_key()
    return public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)


require(*TOOLS)


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    data_dir = tmp_path_factory.mktemp("guestcloud")
    port = free_port()
    process = Process(
        ["up", "--port", str(port), "--data-dir", str(data_dir),
         "--admin-password", ADMIN_PASSWORD],
        data_dir / "onestack.out",
        env={"ONESTACK_COMPUTE__POWER_SYNC_INTERVAL": str(SYNC_INTERVAL)},
    )  # fmt: skip
    auth_url = f"http://127.0.0.1:{port}/identity/v3"
    deployment = Deployment("guest-cloud", auth_url, [process])
    deployment.extra_env = {"data_dir": str(data_dir)}
    try:
        process.wait_ready(auth_url)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            hypervisors = deployment.json("hypervisor", "list")
            if any(h["Hypervisor Type"] == "QEMU" and h["State"] == "up" for h in hypervisors):
                break
            time.sleep(1)
        else:
            pytest.fail(f"no QEMU hypervisor came up: {hypervisors}")
        yield deployment
        _delete_everything(deployment)
    finally:
        assert process.stop() == 0, process.log.read_text()[-2000:]
    _assert_nothing_left(deployment)


def _delete_everything(cloud: Deployment) -> None:
    """Delete, through the API, what the tests made, noting what must vanish from the host."""
    left = cloud.extra_env
    for server in cloud.json("server", "list"):
        cloud.openstack("server", "delete", "--wait", server["ID"])
    for fip in cloud.json("floating", "ip", "list"):
        cloud.openstack("floating", "ip", "delete", fip["ID"])
    ports = cloud.json("port", "list")
    left["taps"] = " ".join(f"tap{p['ID'][:11]}" for p in ports)
    for router in cloud.json("router", "list"):
        for port in cloud.json("port", "list", "--router", router["ID"]):
            for fixed in port["Fixed IP Addresses"]:
                cloud.openstack("router", "remove", "subnet", router["ID"], fixed["subnet_id"],
                                check=False)  # fmt: skip
        cloud.openstack("router", "unset", "--external-gateway", router["ID"], check=False)
        cloud.openstack("router", "delete", router["ID"])
    networks = cloud.json("network", "list")
    left["networks"] = " ".join(n["ID"] for n in networks)
    for network in networks:
        cloud.openstack("network", "delete", network["ID"])


def _assert_nothing_left(cloud: Deployment) -> None:
    """No QEMU process, tap, namespace, dnsmasq or instance file of this cloud is left."""
    data_dir = cloud.extra_env["data_dir"]
    processes = subprocess.run(["pgrep", "-af", data_dir], capture_output=True, text=True).stdout
    assert not processes.strip(), f"processes left behind:\n{processes}"
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    for tap in cloud.extra_env.get("taps", "").split():
        assert tap not in links, f"{tap} left behind"
    for network in cloud.extra_env.get("networks", "").split():
        assert network not in namespaces, f"a namespace of {network} left behind"
        assert network[:11] not in links, f"a link of {network} left behind"
    assert not list(Path(data_dir).glob("compute/*/instances/*")), "instance files left behind"


@pytest.fixture(scope="module")
def server(cloud: Deployment, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    work = tmp_path_factory.mktemp("guest")
    image = work / "guest.qcow2"
    subprocess.run([str(BIN / "onestack"), "guest-image", "build", "--output", str(image)],
                   check=True, capture_output=True)  # fmt: skip
    cloud.openstack("image", "create", "--file", str(image), "--disk-format", "qcow2",
                    "--container-format", "bare", "guest")  # fmt: skip
    cloud.openstack("network", "create", "guestnet")
    cloud.openstack("subnet", "create", "--network", "guestnet", "--subnet-range",
                    "10.77.0.0/24", "guestsub")  # fmt: skip
    # The external network (its gateway on a host-side veth) and the router, before the
    # guest's DHCP lease, so that its default route leads out and floating IPs reach it.
    cloud.openstack("network", "create", "--external", "--provider-network-type", "flat",
                    "--provider-physical-network", "public", "public")  # fmt: skip
    cloud.openstack("subnet", "create", "--network", "public", "--no-dhcp", "--subnet-range",
                    f"{EXTERNAL}.0/24", "--gateway", f"{EXTERNAL}.1", "--allocation-pool",
                    f"start={EXTERNAL}.10,end={EXTERNAL}.50", "publicsub")  # fmt: skip
    cloud.openstack("router", "create", "r1")
    cloud.openstack("router", "set", "--external-gateway", "public", "r1")
    cloud.openstack("router", "add", "subnet", "r1", "guestsub")
    key = work / "key"
    Path(f"{key}.pub").write_bytes(openssh_public_key())
    keypair = cloud.json("keypair", "create", "--public-key", f"{key}.pub", "guestkey")
    started = time.monotonic()
    created = cloud.json("server", "create", "--image", "guest", "--flavor", "m1.tiny", "--network",
                         "guestnet", "--key-name", "guestkey", "--wait", "vm1")  # fmt: skip
    active = time.monotonic() - started
    line = _marker(cloud, "vm1")
    print(f"create → ACTIVE {active:.1f} s, → marker {time.monotonic() - started:.1f} s")
    yield {"created": created, "marker": line, "keypair": keypair, "public_key": key}
    cloud.openstack("server", "delete", "--wait", "vm1", check=False)


def _console(cloud: Deployment, name: str, *args: str) -> str:
    return cloud.openstack("console", "log", "show", *args, name).stdout


def _marker(cloud: Deployment, name: str, count: int = 1) -> str:
    deadline = time.monotonic() + BOOT_TIMEOUT
    while time.monotonic() < deadline:
        lines = [x for x in _console(cloud, name).splitlines() if MARKER in x]
        if len(lines) >= count:
            return lines[count - 1]
        time.sleep(2)
    pytest.fail(f"no marker #{count} on {name}'s console:\n{_console(cloud, name)[-2000:]}")


def _md5(public_key: Path) -> str:
    body = base64.b64decode(public_key.with_suffix(".pub").read_text().split()[1])
    digest = hashlib.md5(body).hexdigest()
    return ":".join(digest[i : i + 2] for i in range(0, 32, 2))


def test_guest_boots_with_its_address_and_key(cloud: Deployment, server: dict) -> None:
    shown = cloud.json("server", "show", "vm1")
    assert shown["status"] == "ACTIVE" and shown["OS-EXT-STS:power_state"] in (1, "Running")
    address = shown["addresses"]["guestnet"][0]
    line = server["marker"]
    assert f"id={shown['id']}" in line and "name=vm1" in line, line
    assert f"ip={address}" in line, line
    assert f"key={_md5(server['public_key'])}" in line, line
    assert "source=metadata" in line or "source=configdrive" in line, line
    tail = _console(cloud, "vm1", "--lines", "3")
    assert 0 < len(tail.strip().splitlines()) <= 3


def test_floating_ip_answers_from_the_host(cloud: Deployment, server: dict) -> None:
    port = cloud.json("port", "list", "--server", server["created"]["id"])[0]
    group = cloud.json("port", "show", port["ID"])["security_group_ids"][0]
    cloud.openstack("security", "group", "rule", "create", "--ingress", "--protocol", "icmp",
                    group)  # fmt: skip
    address = cloud.json("floating", "ip", "create", "public")["floating_ip_address"]
    cloud.openstack("floating", "ip", "set", "--port", port["ID"], address)
    deadline = time.monotonic() + 30
    while subprocess.run(["ping", "-c", "1", "-W", "1", address], capture_output=True).returncode:
        assert time.monotonic() < deadline, f"the host gets no answer from {address}"
    shown = cloud.json("server", "show", server["created"]["id"])
    assert address in shown["addresses"]["guestnet"], shown["addresses"]


def test_novnc_url_page_and_websocket(cloud: Deployment, server: dict) -> None:
    url = cloud.json("console", "url", "show", "--novnc", "vm1")["url"]
    page = httpx.get(url)
    assert page.status_code == 200 and "core/rfb.js" in page.text
    parts = urllib.parse.urlparse(url)
    assert httpx.get(f"{parts.scheme}://{parts.netloc}{parts.path.rsplit('/', 1)[0]}"
                     "/core/rfb.js").status_code == 200  # fmt: skip
    token = urllib.parse.parse_qs(parts.query)["token"][0]
    socket_url = f"ws://{parts.netloc}{parts.path.rsplit('/', 1)[0]}/websockify?token={token}"

    async def handshake() -> bytes:
        async with websockets.connect(socket_url, subprotocols=["binary"]) as ws:
            greeting = await asyncio.wait_for(ws.recv(), 10)
            return greeting if isinstance(greeting, bytes) else greeting.encode()

    assert asyncio.run(handshake()).startswith(b"RFB 003.")


# Counts the pixels of noVNC's canvas that are not black (a blank canvas has none).
CANVAS_PIXELS = """(() => {
  const canvas = document.querySelector("#screen canvas");
  if (!canvas || !canvas.width) return -1;
  const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let lit = 0;
  for (let i = 0; i < data.length; i += 4) if (data[i] | data[i + 1] | data[i + 2]) lit++;
  return lit;
})()"""


async def _canvas_pixels(devtools: str, url: str, timeout: float = 30) -> int:
    """Open ``url`` in the browser's first tab and poll the canvas until something is drawn.

    Chromium's DevTools protocol (a websocket) reads the canvas itself: a screenshot
    would need an image decoder and a guess at when drawing is done.
    """
    async with httpx.AsyncClient() as client:
        tabs = (await client.get(f"{devtools}/json/list")).json()
    page = next(t for t in tabs if t["type"] == "page")["webSocketDebuggerUrl"]
    async with websockets.connect(page, max_size=None) as ws:
        ids = iter(range(1, 10_000))

        async def call(method: str, **params: object) -> dict:
            number = next(ids)
            await ws.send(json.dumps({"id": number, "method": method, "params": params}))
            while True:
                answer = json.loads(await asyncio.wait_for(ws.recv(), 10))
                if answer.get("id") == number:
                    return answer.get("result", {})

        await call("Page.navigate", url=url)
        deadline = time.monotonic() + timeout
        lit = -1
        while time.monotonic() < deadline:
            result = await call("Runtime.evaluate", expression=CANVAS_PIXELS)
            lit = result.get("result", {}).get("value", -1)
            if lit > 0:
                break
            await asyncio.sleep(0.5)
        return lit


def test_novnc_page_draws_the_guest_screen_in_headless_chromium(
    cloud: Deployment, server: dict, tmp_path: Path
) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        if os.environ.get("CI") == "true":
            pytest.fail("needs chromium (scripts/setup-runtime.sh installs it)")
        pytest.skip("needs chromium")
    url = cloud.json("console", "url", "show", "--novnc", "vm1")["url"]
    port = free_port()
    chromium = subprocess.Popen(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path}",
         f"--remote-debugging-port={port}", "--window-size=1024,768", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        devtools = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{devtools}/json/version").status_code == 200:
                    break
            assert time.monotonic() < deadline, "chromium's DevTools endpoint did not come up"
            time.sleep(0.3)
        lit = asyncio.run(_canvas_pixels(devtools, url))
        assert lit > 0, f"the noVNC canvas stays blank ({lit})"
    finally:
        chromium.terminate()
        chromium.wait(10)


def _serial(cloud: Deployment, server: str, command: str, expect: str, timeout: float = 30) -> str:
    """Type into a guest's serial shell (its socket, as the qemu driver left it)."""
    from onestack.compute.drivers.qemu.machine import Machine

    found = list((Path(cloud.extra_env["data_dir"]) / "compute").glob(f"*/instances/{server}"))
    assert found, f"no state directory of {server}"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(Machine(found[0]).serial_socket))
        sock.settimeout(0.5)
        sock.sendall(b"\n" + command.encode() + b"\n")
        seen = b""
        deadline = time.monotonic() + timeout
        # The terminal echoes the command: the answer is the occurrence after it.
        wanted = command.count(expect) + 1
        while time.monotonic() < deadline and seen.count(expect.encode()) < wanted:
            with contextlib.suppress(TimeoutError):
                seen += sock.recv(4096)
    return seen.decode(errors="replace")


POWER_STATES = {1: "Running", 3: "Paused", 4: "Shutdown", 7: "Suspended"}


def _status(cloud: Deployment, name: str, wanted: str, power: str) -> None:
    deadline = time.monotonic() + 90
    while True:
        shown = cloud.json("server", "show", name)
        state = shown["OS-EXT-STS:power_state"]
        if shown["status"] == wanted and POWER_STATES.get(state, state) == power:
            return
        assert time.monotonic() < deadline, f"{name} is {shown['status']}/{state}, not {wanted}"
        time.sleep(1)


def test_reboot_pause_suspend_show_in_power_state_and_console(
    cloud: Deployment, server: dict
) -> None:
    uuid = server["created"]["id"]
    markers = sum(MARKER in x for x in _console(cloud, "vm1").splitlines())
    cloud.openstack("server", "reboot", "vm1")
    _marker(cloud, "vm1", markers + 1)
    _status(cloud, "vm1", "ACTIVE", "Running")

    cloud.openstack("server", "pause", "vm1")
    _status(cloud, "vm1", "PAUSED", "Paused")
    # A paused guest answers nothing typed at it; once unpaused, it answers on the console.
    answer = _serial(cloud, uuid, "echo paused-$((6*7))", "paused-42", timeout=3)
    assert "paused-42" not in answer.replace("echo paused-$((6*7))", ""), answer
    cloud.openstack("server", "unpause", "vm1")
    _status(cloud, "vm1", "ACTIVE", "Running")
    answer = _serial(cloud, uuid, "echo unpaused-$((6*7))", "unpaused-42")
    assert "unpaused-42" in answer.replace("echo unpaused-$((6*7))", ""), answer
    assert "unpaused-42" in _console(cloud, "vm1").replace("echo unpaused-$((6*7))", "")

    cloud.openstack("server", "suspend", "vm1")
    _status(cloud, "vm1", "SUSPENDED", "Suspended")
    qemus = subprocess.run(["pgrep", "-f", "--", f"-uuid {uuid}"], capture_output=True, text=True)
    assert not qemus.stdout.strip(), "a suspended guest keeps its QEMU process"
    cloud.openstack("server", "resume", "vm1")
    _status(cloud, "vm1", "ACTIVE", "Running")
    answer = _serial(cloud, uuid, "echo resumed-$((6*7))", "resumed-42")
    assert "resumed-42" in answer.replace("echo resumed-$((6*7))", ""), answer
    assert "resumed-42" in _console(cloud, "vm1").replace("echo resumed-$((6*7))", "")
    # Resumed, not rebooted: the console shows no new boot marker.
    assert sum(MARKER in x for x in _console(cloud, "vm1").splitlines()) == markers + 1


@pytest.fixture(scope="module")
def snapshot(cloud: Deployment, server: dict) -> dict:
    started = time.monotonic()
    image = cloud.json("server", "image", "create", "--wait", "--name", "vm1-snap", "vm1")
    print(f"snapshot {time.monotonic() - started:.1f} s")
    return image


def test_second_guest_from_the_snapshot_pings_the_first_and_dies_outside_the_cloud(
    cloud: Deployment, server: dict, snapshot: dict
) -> None:
    first = cloud.json("server", "show", "vm1")["addresses"]["guestnet"][0]
    second = cloud.json("server", "create", "--image", snapshot["id"], "--flavor", "m1.tiny",
                        "--network", "guestnet", "--wait", "vm2")  # fmt: skip
    try:
        _marker(cloud, "vm2")
        answer = _serial(cloud, second["id"], f"ping -c 3 -W 2 {first}", "packets received")
        assert re.search(r"3 packets transmitted, [1-3] packets received", answer), answer
        pids = subprocess.run(["pgrep", "-f", "--", f"-uuid {second['id']}"],
                              capture_output=True, text=True).stdout.split()  # fmt: skip
        assert pids
        os.kill(int(pids[0]), signal.SIGKILL)
        deadline = time.monotonic() + SYNC_INTERVAL * 3 + 10
        while cloud.json("server", "show", "vm2")["status"] != "SHUTOFF":
            assert time.monotonic() < deadline, "a guest killed outside the cloud stays ACTIVE"
            time.sleep(1)
    finally:
        cloud.openstack("server", "delete", "--wait", "vm2")


def test_stop_and_start_show_in_power_state_and_console(cloud: Deployment, server: dict) -> None:
    markers = sum(MARKER in x for x in _console(cloud, "vm1").splitlines())
    cloud.openstack("server", "stop", "vm1")
    deadline = time.monotonic() + 90
    while cloud.json("server", "show", "vm1")["status"] != "SHUTOFF":
        assert time.monotonic() < deadline, "vm1 did not stop"
        time.sleep(1)
    cloud.openstack("server", "start", "vm1")
    _marker(cloud, "vm1", markers + 1)
    assert cloud.json("server", "show", "vm1")["status"] == "ACTIVE"


def test_snapshot_becomes_an_active_image(cloud: Deployment, server: dict, snapshot: dict) -> None:
    shown = cloud.json("image", "show", snapshot["id"])
    assert shown["status"] == "active" and shown["disk_format"] == "qcow2"
    assert shown["properties"]["image_type"] == "snapshot"
    assert shown["properties"]["instance_uuid"] == server["created"]["id"]


def test_interface_hot_plug_through_the_cli(cloud: Deployment, server: dict) -> None:
    """``server add network``: the guest sees a second NIC, its tap joins the network's
    bridge (the port goes ACTIVE); ``server remove port`` takes NIC, tap and port away."""
    uuid = server["created"]["id"]
    before = {p["ID"] for p in cloud.json("port", "list", "--server", uuid)}
    cloud.openstack("server", "add", "network", "vm1", "guestnet")
    (port,) = [p for p in cloud.json("port", "list", "--server", uuid) if p["ID"] not in before]
    mac = port["MAC Address"]
    assert mac in _serial(cloud, uuid, "sleep 2; cat /sys/class/net/eth1/address", mac)
    deadline = time.monotonic() + 60
    while cloud.json("port", "show", port["ID"])["status"] != "ACTIVE":
        assert time.monotonic() < deadline, "the hot-plugged port never went ACTIVE"
        time.sleep(1)
    tap = f"tap{port['ID'][:11]}"
    link = subprocess.run(["ip", "-o", "link", "show", tap], capture_output=True, text=True)
    assert "master brq" in link.stdout, link
    fixed = cloud.json("port", "show", port["ID"])["fixed_ips"][0]["ip_address"]
    assert fixed in cloud.json("server", "show", "vm1")["addresses"]["guestnet"]

    cloud.openstack("server", "remove", "port", "vm1", port["ID"])
    after = _serial(cloud, uuid, "sleep 1; ls /sys/class/net; echo listed", "listed")
    assert "eth1" not in after.split("listed")[-2], after
    assert not Path(f"/sys/class/net/{tap}").exists()
    assert cloud.openstack("port", "show", port["ID"], check=False).returncode != 0


def test_delete_leaves_no_process_or_tap(cloud: Deployment, server: dict) -> None:
    uuid = server["created"]["id"]
    ports = cloud.json("port", "list", "--server", uuid)
    cloud.openstack("server", "delete", "--wait", "vm1")
    qemus = subprocess.run(["pgrep", "-af", uuid], capture_output=True, text=True).stdout
    assert "qemu-system" not in qemus
    links = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout
    for port in ports:
        assert f"tap{port['ID'][:11]}" not in links
    state = Path(cloud.extra_env["data_dir"]) / "compute"
    assert not list(state.glob(f"*/instances/{uuid}"))
