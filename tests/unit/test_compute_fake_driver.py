"""The fake hypervisor driver and the pure helpers of the compute service."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from onestack.compute.api.keypairs import fingerprint, generate
from onestack.compute.drivers import load_driver
from onestack.compute.drivers.base import DriverError, InstanceSpec, PowerState
from onestack.compute.placement_client import flavor_resources
from onestack.compute.vm_states import status_of
from onestack.core.config import Settings


def spec(uuid: str = "u1", **extra: object) -> InstanceSpec:
    return InstanceSpec(uuid, "instance-00000001", "s", "s", "p", "u", 1, 512, 1, **extra)  # type: ignore[arg-type]


async def no_fetch(image_id: str, path: Path) -> None:
    raise AssertionError("the fake driver fetches no image data")


def test_fake_driver_lifecycle() -> None:
    async def scenario() -> None:
        driver = load_driver("fake", Settings())
        await driver.init_host("host1")
        capacity = await driver.host_capacity()
        assert capacity.hypervisor_type == "fake" and capacity.vcpus == 32
        await driver.spawn(spec(), [], [], no_fetch)
        assert await driver.list_instances() == {"u1": PowerState.RUNNING}
        await driver.power_off(spec())
        assert await driver.power_state(spec()) == PowerState.SHUTDOWN
        await driver.power_on(spec(), [], [])
        await driver.pause(spec())
        assert await driver.power_state(spec()) == PowerState.PAUSED
        uploaded: list[tuple[int, str]] = []

        async def upload(path: Path, disk_format: str) -> None:
            uploaded.append((path.stat().st_size, disk_format))

        await driver.snapshot(spec(), upload)
        assert uploaded and uploaded[0][0] > 0 and uploaded[0][1] == "raw"
        assert "on host1" in await driver.console_output(spec())
        await driver.destroy(spec(), [])
        await driver.destroy(spec(), [])
        assert await driver.power_state(spec()) == PowerState.NOSTATE
        with pytest.raises(DriverError):
            await driver.reboot(spec(), hard=True)
        with pytest.raises(DriverError):
            await driver.spawn(spec(flavor_extra_specs={"fake:fail_spawn": "true"}), [], [],
                               no_fetch)  # fmt: skip

    asyncio.run(scenario())


def test_unknown_driver_is_refused() -> None:
    with pytest.raises(ValueError):
        load_driver("xen", Settings())


def test_status_and_resources() -> None:
    assert status_of("active", None) == "ACTIVE"
    assert status_of("stopped", None) == "SHUTOFF"
    assert status_of("resized", None) == "VERIFY_RESIZE"
    assert status_of("building", "scheduling") == "BUILD"
    assert status_of("active", "rebooting_hard") == "HARD_REBOOT"
    assert flavor_resources({"vcpus": 2, "ram": 512, "disk": 1, "ephemeral": 1, "swap": 1}) == {
        "VCPU": 2, "MEMORY_MB": 512, "DISK_GB": 3}  # fmt: skip


def test_generated_keys_have_md5_fingerprints() -> None:
    public, private = generate("rsa")
    assert public.startswith("ssh-rsa ") and "PRIVATE KEY" in private
    assert len(fingerprint(public).split(":")) == 16
    public, private = generate("ed25519")
    assert public.startswith("ssh-ed25519 ")
