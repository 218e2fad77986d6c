"""The qemu driver on its own, with the real guest image: one guest through its life.

Boots the image ``onestack guest-image build`` makes (TCG here; KVM where the probe
says it works), waits for the guest's marker on the serial console, and checks
power off/on, pause, hard reboot, suspend/resume, a snapshot that boots, the config
drive the guest read, typing into the serial shell, and that destroy leaves nothing.
Needs root and qemu-system-x86, qemu-utils, busybox-static, syslinux, mtools,
dosfstools, genisoimage (under CI=true: fails, never skips).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from onestack.compute.drivers.base import (
    BlockDevice,
    GuestAgentNotEnabled,
    InstanceSpec,
    PowerState,
    Vif,
)
from onestack.compute.guest_image import MARKER, build
from onestack.core.config import Settings
from tests.system.requirements import require

TOOLS = (
    "qemu-system-x86_64",
    "qemu-img",
    "busybox",
    "mkfs.fat",
    "mcopy",
    "syslinux",
    "genisoimage",
)
BOOT_TIMEOUT = 120.0
KEY = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx2JEGcc4xGVtvJkgYG+OWDwXF1cNxF0rxCcn6Ce+Nz test@onestack"
)


require(*TOOLS)

pytestmark = pytest.mark.asyncio(loop_scope="module")


def _spec(name: str, image_id: str = "guest") -> InstanceSpec:
    server = str(uuid.uuid4())
    return InstanceSpec(
        uuid=server, name=f"instance-{name}", hostname=name, display_name=name,
        project_id="p1", user_id="u1", vcpus=1, memory_mb=192, root_gb=1,
        image_id=image_id, public_keys={"k": KEY}, availability_zone="nova",
    )  # fmt: skip


def _fingerprint(key: str) -> str:
    import base64
    import hashlib

    digest = hashlib.md5(base64.b64decode(key.split()[1])).hexdigest()
    return ":".join(digest[i : i + 2] for i in range(0, 32, 2))


async def _marker(driver, spec: InstanceSpec, count: int = 1, timeout: float = BOOT_TIMEOUT) -> str:
    """The guest's ``count``-th marker line (waits for it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = [x for x in (await driver.console_output(spec)).splitlines() if MARKER in x]
        if len(lines) >= count:
            return lines[count - 1]
        await asyncio.sleep(1)
    tail = await driver.console_output(spec, 30)
    raise AssertionError(f"no marker #{count} within {timeout:g} s; console:\n{tail}")


async def _markers(driver, spec: InstanceSpec) -> int:
    return sum(MARKER in line for line in (await driver.console_output(spec)).splitlines())


def _serial(driver, spec: InstanceSpec, command: str, expect: str, timeout: float = 20) -> str:
    """Type ``command`` into the guest's serial shell; the output up to ``expect``."""
    path = driver._machine(spec).serial_socket
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(path))
        sock.settimeout(0.5)
        sock.sendall(b"\n" + command.encode() + b"\n")
        seen = b""
        deadline = time.monotonic() + timeout
        # The terminal echoes the command: the answer is the occurrence after it.
        wanted = command.count(expect) + 1
        while time.monotonic() < deadline and seen.count(expect.encode()) < wanted:
            try:
                seen += sock.recv(4096)
            except TimeoutError:
                continue
    return seen.decode(errors="replace")


@pytest.fixture(scope="module")
def guest_image(tmp_path_factory) -> Path:
    return build(tmp_path_factory.mktemp("image") / "guest.qcow2")


def _gone(pid: int, timeout: float = 5) -> bool:
    """Whether the process ended (a zombie not reaped yet by init counts as ended)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if "\nState:\tZ" in Path(f"/proc/{pid}/status").read_text():
                return True
        except FileNotFoundError:
            return True
        time.sleep(0.1)
    return False


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def driver(tmp_path_factory, guest_image) -> AsyncIterator:
    from onestack.compute.drivers.qemu import QemuDriver

    data = tmp_path_factory.mktemp("data")
    qemu = QemuDriver(Settings(data_dir=data))
    qemu.soft_reboot_timeout = 20
    await qemu.init_host("qemu-test")
    yield qemu
    for server in await qemu.list_instances():
        await qemu.destroy(_spec_of(server), [])


def _spec_of(server: str) -> InstanceSpec:
    return InstanceSpec(server, server, server, server, "", "", 1, 1, 0)


async def _fetch_from(image: Path):
    async def fetch(image_id: str, path: Path) -> None:
        shutil.copyfile(image, path)

    return fetch


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def guest(driver, guest_image) -> AsyncIterator[InstanceSpec]:
    spec = _spec("vm1")
    noop = Vif(port_id=str(uuid.uuid4()), mac_address="fa:16:3e:00:00:01",
               network_id=str(uuid.uuid4()), vif_type="noop")  # fmt: skip
    started = time.monotonic()
    await driver.spawn(spec, [noop], [], await _fetch_from(guest_image))
    await _marker(driver, spec)
    print(f"boot to marker: {time.monotonic() - started:.1f} s ({driver.acceleration.accel})")
    yield spec
    await driver.destroy(spec, [])


async def test_host_reports_acceleration(driver):
    assert driver._probe is not None
    await driver._probe
    capacity = await driver.host_capacity()
    assert capacity.hypervisor_type == "QEMU" and capacity.hypervisor_version > 0
    accel = capacity.cpu_info["accel"]
    assert accel in ("kvm", "tcg") and f"CUSTOM_QEMU_ACCEL_{accel.upper()}" in capacity.traits


async def test_boot_reads_config_drive(driver, guest):
    line = await _marker(driver, guest)
    assert f"id={guest.uuid}" in line and "name=vm1" in line
    assert "source=configdrive" in line
    assert f"key={_fingerprint(KEY)}" in line
    assert re.search(r"ip=10\.0\.2\.\d+", line), line
    assert await driver.power_state(guest) == PowerState.RUNNING
    assert list(await driver.list_instances()) == [guest.uuid]
    tail = await driver.console_output(guest, 2)
    assert len(tail.splitlines()) <= 2
    host, port = await driver.vnc_address(guest)
    assert host == "127.0.0.1" and port >= 5900


async def test_serial_shell_answers(driver, guest):
    output = _serial(
        driver,
        guest,
        "echo sum=$((40+2)); cat /mnt/config/openstack/latest/meta_data.json | grep -c public_keys",
        "sum=42",
    )
    assert "sum=42" in output


async def test_pause_and_unpause_from_a_restarted_agent(driver, guest):
    """A new driver instance (an agent restarted while its guests run) finds and drives them."""
    from onestack.compute.drivers.qemu import QemuDriver

    restarted = QemuDriver(driver.settings)
    await restarted.init_host("qemu-test")
    assert (await restarted.list_instances()).get(guest.uuid) == PowerState.RUNNING
    await restarted.pause(guest)
    assert await driver.power_state(guest) == PowerState.PAUSED
    await restarted.unpause(guest)
    assert await restarted.power_state(guest) == PowerState.RUNNING
    assert restarted._probe is not None
    restarted._probe.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await restarted._probe


async def test_hard_reboot_boots_again(driver, guest):
    before = await _markers(driver, guest)
    await driver.reboot(guest, hard=True)
    await _marker(driver, guest, before + 1)
    assert await driver.power_state(guest) == PowerState.RUNNING


async def test_power_off_is_clean_and_power_on_boots(driver, guest):
    before = await _markers(driver, guest)
    started = time.monotonic()
    await driver.power_off(guest, timeout=30)
    # The guest's acpid powered it off: well before the timeout would have forced it.
    assert time.monotonic() - started < 30
    assert await driver.power_state(guest) == PowerState.SHUTDOWN
    await driver.power_on(guest, [], [])
    await _marker(driver, guest, before + 1)


async def test_suspend_and_resume_keep_the_guest(driver, guest):
    _serial(driver, guest, "echo remembered > /tmp/mark; echo written", "written")
    await driver.suspend(guest)
    assert await driver.power_state(guest) == PowerState.SUSPENDED
    assert not driver._machine(guest).running()
    await driver.resume(guest, [], [])
    assert await driver.power_state(guest) == PowerState.RUNNING
    assert "remembered" in _serial(driver, guest, "cat /tmp/mark", "remembered")


async def test_snapshot_is_a_bootable_image(driver, guest, tmp_path):
    uploaded: dict[str, Path] = {}

    async def upload(path: Path, disk_format: str) -> None:
        assert disk_format == "qcow2"
        uploaded["path"] = tmp_path / "snap.qcow2"
        shutil.copyfile(path, uploaded["path"])

    started = time.monotonic()
    await driver.snapshot(guest, upload)
    print(f"snapshot: {time.monotonic() - started:.1f} s")
    assert await driver.power_state(guest) == PowerState.RUNNING
    clone = _spec("vm2", image_id="snap")
    await driver.spawn(clone, [], [], await _fetch_from(uploaded["path"]))
    try:
        line = await _marker(driver, clone)
        assert f"id={clone.uuid}" in line and "source=configdrive" in line
    finally:
        await driver.destroy(clone, [])


async def test_volume_hot_plug(driver, guest, tmp_path):
    volume = tmp_path / "volume.raw"
    volume.write_bytes(b"\0" * (16 << 20))
    info = {"driver_volume_type": "file", "data": {"path": str(volume), "format": "raw"}}
    device = BlockDevice(volume_id=str(uuid.uuid4()), mountpoint="/dev/vdb", connection_info=info)
    await driver.attach_volume(guest, device)
    seen = _serial(driver, guest, "sleep 2; cat /sys/block/vdb/size", "32768")
    assert "32768" in seen, seen
    await driver.detach_volume(guest, device)
    gone = _serial(driver, guest, "sleep 1; ls /sys/block; echo listed", "listed")
    assert "vdb" not in gone.split("listed")[-2], gone


async def _throttle_of(driver, spec: InstanceSpec, node: str) -> dict:
    """The limits of the throttle filter that is the guest's disk ``node`` (asked over QMP)."""
    machine = driver._machine(spec)
    nodes = {n["node-name"]: n for n in await machine.qmp("query-named-block-nodes", flat=True)}
    assert nodes.get(node, {}).get("drv") == "throttle", sorted(nodes)
    assert nodes[f"{node}-fmt"]["drv"] == "raw"
    devices = [d for d in await machine.qmp("query-block") if d.get("inserted")]
    assert node in {d["inserted"]["node-name"] for d in devices}
    return await machine.qmp("qom-get", path=f"/objects/{node}-qos", property="limits")


async def test_volume_qos_specs_throttle_the_guest_disk(driver, guest, tmp_path):
    volume = tmp_path / "throttled.raw"
    volume.write_bytes(os.urandom(4 << 20))
    qos = {"read_bytes_sec": str(1 << 20), "write_iops_sec": "200", "total_iops_sec_per_gb": "9"}
    info = {"driver_volume_type": "file", "data": {"path": str(volume), "format": "raw",
                                                   "qos_specs": qos}}  # fmt: skip
    device = BlockDevice(volume_id=str(uuid.uuid4()), mountpoint="/dev/vdb", connection_info=info)
    node = f"vol-{device.volume_id[:18]}"
    await driver.attach_volume(guest, device)
    limits = await _throttle_of(driver, guest, node)
    assert (limits["bps-read"], limits["iops-write"], limits["iops-total"]) == (1 << 20, 200, 0)
    # 3 MiB read at 1 MiB/s: the guest waits close to 3 s (1 s resolution of date).
    command = ("sleep 2; a=$(date +%s); dd if=/dev/vdb of=/dev/null bs=64k count=48; "
               "echo took=$(( $(date +%s) - a ))s; echo read$((1 + 1))")  # fmt: skip
    seen = _serial(driver, guest, command, "read2", timeout=30)
    took = re.findall(r"took=(\d+)s", seen)
    assert took and int(took[-1]) >= 2, seen
    await driver.suspend(guest)
    await driver.resume(guest, [], [device])  # the command line opens it throttled again
    assert (await _throttle_of(driver, guest, node))["bps-read"] == 1 << 20
    await driver.detach_volume(guest, device)
    machine = driver._machine(guest)
    left = {n["node-name"] for n in await machine.qmp("query-named-block-nodes", flat=True)}
    assert not {node, f"{node}-fmt"} & left, left
    objects = {o["name"] for o in await machine.qmp("qom-list", path="/objects")}
    assert f"{node}-qos" not in objects, objects


async def test_diagnostics_password_and_a_nic_plugged_while_stopped(driver, guest):
    # A resumed guest runs in a new QEMU process whose uptime and counters start at zero: let
    # a second pass and read the root disk past the page cache so that its read counter moves.
    command = ("sleep 1; echo 3 > /proc/sys/vm/drop_caches; "
               "dd if=/dev/vda of=/dev/null bs=64k count=8; echo dd$((1 + 1))")  # fmt: skip
    seen = _serial(driver, guest, command, "dd2", timeout=30)
    assert "dd2" in seen, seen
    found = await driver.diagnostics(guest)
    assert (found.state, found.driver, len(found.cpu_details)) == ("running", "qemu", 1)
    assert found.uptime >= 1 and found.cpu_details[0]["time"] > 0
    assert found.memory_details["maximum"] == guest.memory_mb
    assert [n["mac_address"] for n in found.nic_details] == ["fa:16:3e:00:00:01"]
    assert any(d["read_bytes"] > 0 for d in found.disk_details), found.disk_details
    with pytest.raises(GuestAgentNotEnabled):
        await driver.set_admin_password(guest, "secret")

    # A NIC attached while the guest is off is there when it starts again.
    markers = await _markers(driver, guest)
    await driver.power_off(guest, timeout=30)
    extra = Vif(port_id=str(uuid.uuid4()), mac_address="fa:16:3e:00:00:05",
                network_id=str(uuid.uuid4()), vif_type="noop")  # fmt: skip
    await driver.attach_interface(guest, extra)
    await driver.power_on(guest, [], [])
    await _marker(driver, guest, markers + 1)
    seen = _serial(driver, guest, "cat /sys/class/net/eth1/address", "fa:16:3e:00:00:05")
    assert "fa:16:3e:00:00:05" in seen, seen
    await driver.detach_interface(guest, extra)
    assert len((await driver.diagnostics(guest)).nic_details) == 1


async def test_rescue_boots_the_rescue_image_with_the_root_disk_second(driver, guest, guest_image):
    markers = await _markers(driver, guest)
    await driver.rescue(guest, [], await _fetch_from(guest_image), "rescue-image")
    await _marker(driver, guest, markers + 1)
    assert "vdb" in _serial(driver, guest, "ls /sys/block; echo listed", "listed")
    await driver.unrescue(guest, [])
    await _marker(driver, guest, markers + 2)
    after = _serial(driver, guest, "ls /sys/block; echo listed", "listed")
    assert "vdb" not in after.split("listed")[-2], after
    assert not (driver._machine(guest).dir / "disk.rescue").exists()


async def test_killed_guest_shows_shutdown(driver, guest):
    pid = driver._machine(guest).pid()
    assert pid
    os.kill(pid, 9)
    await asyncio.sleep(0.5)
    assert await driver.power_state(guest) == PowerState.SHUTDOWN
    assert (await driver.list_instances())[guest.uuid] == PowerState.SHUTDOWN


async def test_destroy_leaves_nothing(driver, guest):
    machine = driver._machine(guest)
    await driver.power_on(guest, [], [])
    pid = machine.pid()
    await driver.destroy(guest, [])
    assert not machine.dir.exists()
    assert pid is not None and _gone(pid)
    assert await driver.power_state(guest) == PowerState.NOSTATE
    assert guest.uuid not in await driver.list_instances()


BRIDGE = "brqqemutest"


async def test_live_migration_between_two_hosts_keeps_the_guest(driver, guest_image, tmp_path):
    """Two agents of one machine: the guest moves with its memory and keeps its tap."""
    from onestack.compute.drivers.qemu import QemuDriver

    # Its own data directory: the hosts share no path, disks travel over NBD.
    other = QemuDriver(driver.settings, state_dir=tmp_path / "other")
    await other.init_host("qemu-test-b")
    driver.fetch_image = other.fetch_image = await _fetch_from(guest_image)
    spec = _spec("vm3")
    spec.config_drive = True
    port = str(uuid.uuid4())
    vif = Vif(port_id=port, mac_address="fa:16:3e:00:00:03", network_id=str(uuid.uuid4()),
              vif_type="bridge", details={"bridge_name": BRIDGE})  # fmt: skip
    tap = "tap" + port[:11]
    try:
        await driver.spawn(spec, [vif], [], await _fetch_from(guest_image))
        await _marker(driver, spec)
        _serial(driver, spec, "echo travelled > /tmp/mark; echo written", "written")
        started = time.monotonic()
        destination = await other.prepare_live_migration(spec, [vif], [])
        await driver.live_migrate(spec, destination)
        print(f"live migration: {time.monotonic() - started:.1f} s")
        assert spec.uuid not in await driver.list_instances()
        assert await other.power_state(spec) == PowerState.RUNNING
        assert "travelled" in _serial(other, spec, "cat /tmp/mark", "travelled")
        link = subprocess.run(["ip", "-o", "link", "show", tap], capture_output=True, text=True)
        assert f"master {BRIDGE}" in link.stdout, link

        # Cold migration back with a bigger disk, as a resize to the first host does it.
        markers = await _markers(other, spec)
        await other.power_off(spec, timeout=30)
        source = await other.export_disks(spec)
        await driver.import_disks(spec, source)
        bigger = _spec("vm3")
        bigger.uuid, bigger.root_gb, bigger.memory_mb = spec.uuid, 2, 256
        await driver.resize_disks(spec, bigger)
        await driver.power_on(bigger, [vif], [])
        await other.destroy(spec, [])  # the source goes at confirm; the tap is the new host's
        assert Path(f"/sys/class/net/{tap}").exists()
        await _marker(driver, spec, markers + 1)
        assert "size=2147483648" in _serial(
            driver, spec, "echo size=$(($(cat /sys/block/vda/size) * 512))", "size=2147483648"
        )

        # A second NIC hot-plugged on the same bridge, then unplugged.
        extra = Vif(port_id=str(uuid.uuid4()), mac_address="fa:16:3e:00:00:04",
                    network_id=vif.network_id, vif_type="bridge",
                    details={"bridge_name": BRIDGE})  # fmt: skip
        await driver.attach_interface(spec, extra)
        assert "fa:16:3e:00:00:04" in _serial(
            driver, spec, "sleep 2; cat /sys/class/net/eth1/address", "fa:16:3e:00:00:04"
        )
        await driver.detach_interface(spec, extra)
        after = _serial(driver, spec, "sleep 1; ls /sys/class/net; echo listed", "listed")
        assert "eth1" not in after.split("listed")[-2], after
        assert not Path(f"/sys/class/net/tap{extra.port_id[:11]}").exists()
    finally:
        await driver.destroy(spec, [vif])
        await other.destroy(spec, [vif])
        subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True)
    assert not Path(f"/sys/class/net/{tap}").exists()
