"""The compute agent's volume workflow against a fake driver, a recording conductor and a
scripted block storage: attach and detach in Cinder's order, rollback of a failed attach,
boot volumes, reconcile after a restart; device names and the attachment views."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from onestack.compute.agent_volumes import AgentVolumes
from onestack.compute.drivers.base import DriverError, PowerState
from onestack.compute.drivers.fake import FakeDriver
from onestack.compute.volumes import block_device, next_device
from onestack.core.config import Settings

SPEC = {
    "uuid": "server-1", "name": "instance-1", "hostname": "vm", "display_name": "vm",
    "project_id": "p", "user_id": "u", "vcpus": 1, "memory_mb": 64, "root_gb": 1,
}  # fmt: skip
INFO = {"driver_volume_type": "file", "data": {"path": "/tmp/vol", "format": "raw"}}


class Recorder:
    """Stands for the conductor (bus casts and calls) and block storage (Cinder)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.fail_complete = False
        self.mappings: list[dict[str, Any]] = []
        self.unsettled: list[dict[str, Any]] = []

    # conductor
    async def cast(self, method: str, **kwargs: Any) -> None:
        self.calls.append((method, kwargs))

    async def call(self, method: str, **kwargs: Any) -> Any:
        self.calls.append((method, kwargs))
        if method == "block_devices_of":
            return {"instance": {"spec": SPEC}, "block_devices": self.mappings}
        if method == "unsettled_block_devices":
            return self.unsettled
        return None

    # block storage
    async def connect(self, attachment_id: str, connector: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("connect", {"attachment_id": attachment_id, "connector": connector}))
        return INFO

    async def complete(self, attachment_id: str) -> None:
        self.calls.append(("complete", attachment_id))
        if self.fail_complete:
            raise RuntimeError("complete refused")

    async def delete_attachment(self, attachment_id: str) -> None:
        self.calls.append(("delete_attachment", attachment_id))

    async def wait_status(self, volume_id: str, wanted: Any, timeout: float) -> dict[str, Any]:
        return {"id": volume_id, "status": "available"}

    async def create_attachment(
        self, volume_id: str, instance_uuid: str, connector: Any = None
    ) -> dict[str, Any]:
        self.calls.append(("create_attachment", volume_id))
        return {"id": f"att-{volume_id}", "connection_info": INFO}

    async def volume(self, volume_id: str) -> dict[str, Any]:
        return {"id": volume_id, "size": 3}

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]


class Agent:
    def __init__(self, driver: FakeDriver, recorder: Recorder):
        self.host = "host1"
        self.driver = driver
        self.conductor = recorder
        self.client = None


def bdm(status: str = "attaching", **extra: Any) -> dict[str, Any]:
    return {"uuid": "bdm-1", "volume_id": "vol-1", "attachment_id": "att-1",
            "device_name": "/dev/vdb", "boot_index": None, "source_type": "volume",
            "delete_on_termination": False, "status": status, "connection_info": None,
            **extra}  # fmt: skip


@pytest.fixture
def setup(monkeypatch: pytest.MonkeyPatch) -> tuple[AgentVolumes, FakeDriver, Recorder]:
    driver = FakeDriver(Settings())
    recorder = Recorder()
    volumes = AgentVolumes(Agent(driver, recorder))  # type: ignore[arg-type]
    monkeypatch.setattr(AgentVolumes, "cinder", property(lambda self: recorder))
    asyncio.run(driver.init_host("host1"))
    return volumes, driver, recorder


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def boot(driver: FakeDriver) -> None:
    from onestack.compute.payloads import spec_of

    async def fetch(image: str, path: Any) -> None:
        return None

    run(driver.spawn(spec_of({"spec": SPEC}), [], [], fetch))


def test_attach_connects_plugs_then_completes(setup: Any) -> None:
    volumes, driver, recorder = setup
    boot(driver)
    run(volumes.attach({"spec": SPEC}, bdm(), "req-1"))
    assert recorder.names() == ["connect", "complete", "volume_attached"]
    assert recorder.calls[0][1]["connector"]["host"] == "host1"
    assert recorder.calls[0][1]["connector"]["mountpoint"] == "/dev/vdb"
    assert driver.guests["server-1"].volumes["vol-1"].connection_info == INFO


def test_failed_attach_gives_the_attachment_back(setup: Any) -> None:
    volumes, driver, recorder = setup
    boot(driver)
    recorder.fail_complete = True
    run(volumes.attach({"spec": SPEC}, bdm(), "req-1"))
    assert recorder.names() == ["connect", "complete", "delete_attachment",
                                "volume_attach_failed"]  # fmt: skip
    assert driver.guests["server-1"].volumes == {}


def test_attach_to_a_server_the_host_lost_fails_cleanly(setup: Any) -> None:
    volumes, _driver, recorder = setup
    run(volumes.attach({"spec": SPEC}, bdm(), "req-1"))
    # A stopped (here: absent) guest is not hot-plugged: it gets the volume when it starts.
    assert recorder.names() == ["connect", "complete", "volume_attached"]


def test_detach_unplugs_then_deletes_the_attachment(setup: Any) -> None:
    volumes, driver, recorder = setup
    boot(driver)
    run(driver.attach_volume(driver.guests["server-1"].spec, block_device(bdm(), INFO)))
    run(volumes.detach({"spec": SPEC}, bdm("detaching"), "req-2"))
    assert recorder.names() == ["delete_attachment", "volume_detached"]
    assert driver.guests["server-1"].volumes == {}


def test_extend_tells_the_driver_the_new_size(setup: Any) -> None:
    volumes, driver, recorder = setup
    boot(driver)
    run(driver.attach_volume(driver.guests["server-1"].spec, block_device(bdm(), INFO)))
    recorder.mappings = [bdm("attached", connection_info=INFO)]
    run(volumes.extend("server-1", "vol-1"))
    assert driver.guests["server-1"].volume_sizes == {"vol-1": 3 << 30}


def test_boot_volumes_connect_before_spawn_and_complete_after(setup: Any) -> None:
    volumes, _driver, recorder = setup
    recorder.mappings = [bdm(attachment_id=None, boot_index=0, device_name="/dev/vda")]
    instance = {"spec": SPEC}
    devices = run(volumes.connect_boot(instance))
    assert [(d.volume_id, d.boot_index, d.connection_info) for d in devices] == [("vol-1", 0, INFO)]
    run(volumes.complete_boot("server-1"))
    assert recorder.names() == ["block_devices_of", "create_attachment", "complete",
                                "boot_volumes_connected"]  # fmt: skip
    (device,) = recorder.calls[-1][1]["devices"]
    assert device["attachment_id"] == "att-vol-1" and device["status"] == "attached"


def test_failed_build_deletes_its_boot_attachments(setup: Any) -> None:
    volumes, _driver, recorder = setup
    recorder.mappings = [bdm(attachment_id=None, boot_index=0)]
    run(volumes.connect_boot({"spec": SPEC}))
    run(volumes.rollback_boot("server-1"))
    assert recorder.names()[-2:] == ["delete_attachment", "boot_volumes_connected"]
    assert recorder.calls[-1][1]["devices"][0]["attachment_id"] is None


def test_servers_without_volumes_boot_without_any(setup: Any) -> None:
    volumes, _driver, recorder = setup
    assert run(volumes.connect_boot({"spec": SPEC})) == []
    assert recorder.names() == ["block_devices_of"]


def test_a_kept_attachment_moves_to_the_new_host(setup: Any) -> None:
    volumes, _driver, recorder = setup
    recorder.mappings = [bdm("attached", connection_info=INFO)]
    (device,) = run(volumes.connect_boot({"spec": SPEC}))
    assert device.connection_info == INFO
    run(volumes.rollback_boot("server-1"))
    # Reconnected, not created: a failed build leaves it to the server.
    assert recorder.names() == ["block_devices_of", "connect"]


def test_reconcile_finishes_interrupted_attach_and_detach(setup: Any) -> None:
    volumes, driver, recorder = setup
    boot(driver)
    other = bdm("detaching", uuid="bdm-2", volume_id="vol-2", attachment_id="att-2")
    recorder.unsettled = [
        {"instance": {"spec": SPEC}, "bdm": bdm()},
        {"instance": {"spec": SPEC}, "bdm": other},
        {"instance": {"spec": {**SPEC, "uuid": "gone"}}, "bdm": bdm(uuid="bdm-3")},
    ]
    run(volumes.reconcile({"server-1"}))
    done = [(name, args.get("bdm_uuid")) for name, args in recorder.calls
            if name.startswith("volume_")]  # fmt: skip
    assert done == [("volume_attached", "bdm-1"), ("volume_detached", "bdm-2")]
    assert set(driver.guests["server-1"].volumes) == {"vol-1"}


def test_next_device_skips_the_root_and_used_names() -> None:
    assert next_device(set()) == "/dev/vdb"
    assert next_device({"/dev/vdb", "/dev/vdc"}) == "/dev/vdd"
    assert next_device({"/dev/vdb"}, "/dev/vdf") == "/dev/vdf"
    assert next_device({"/dev/vdb"}, "/dev/vdb") == "/dev/vdc"
    assert next_device(set(), "/dev/vda") == "/dev/vdb"


def test_fake_driver_extend_of_a_volume_it_does_not_have(setup: Any) -> None:
    _, driver, _ = setup
    boot(driver)
    with pytest.raises(DriverError):
        run(driver.extend_volume(driver.guests["server-1"].spec, block_device(bdm(), INFO), 1))
    assert run(driver.power_state(driver.guests["server-1"].spec)) == PowerState.RUNNING
