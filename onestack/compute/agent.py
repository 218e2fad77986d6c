"""The compute agent of one host: drives its hypervisor driver for the conductor.

It listens on ``compute.<host>``; builds, actions and deletes arrive as casts and end with
a report to the conductor (``build_done``, ``action_done``, ``terminated``); moves and
consoles are calls. It heartbeats with the host's capacity (the conductor records the
service and node and reports the inventory to placement), syncs power states
periodically, and on start reconciles the hypervisor with what the conductor says should
run here. It never touches the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from dataclasses import asdict
from pathlib import Path
from typing import Any

from onestack.compute.agent_interfaces import InterfaceCalls
from onestack.compute.agent_volumes import AgentVolumes, VolumeCasts
from onestack.compute.drivers import default_driver, load_driver
from onestack.compute.drivers.base import ComputeDriver, DriverError, InstanceSpec, PowerState
from onestack.compute.images import ImageTransfer
from onestack.compute.payloads import spec_of
from onestack.compute.ports import PortBinder, vif_of
from onestack.compute.rpc import ConductorClient, agent_topic
from onestack.core.bus.base import Bus, Consumer
from onestack.core.client import ServiceClient
from onestack.core.config import Settings
from onestack.core.heartbeat import PeriodicTask

log = logging.getLogger(__name__)


def describe(exc: BaseException) -> str:
    """A fault message for a failure."""
    return str(exc) or type(exc).__name__


class VifEvents:
    """Waiters for ``network-vif-plugged`` events, by (server, port)."""

    def __init__(self) -> None:
        self._waiters: dict[tuple[str, str], asyncio.Future[str]] = {}

    def expect(self, server: str, port: str) -> asyncio.Future[str]:
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._waiters[(server, port)] = future
        return future

    def deliver(self, server: str, port: str, status: str) -> bool:
        future = self._waiters.pop((server, port), None)
        if future is None or future.done():
            return False
        future.set_result(status)
        return True

    def forget(self, server: str) -> None:
        for key in [k for k in self._waiters if k[0] == server]:
            self._waiters.pop(key).cancel()


class ComputeAgent:
    """One host's agent with its own driver instance."""

    def __init__(
        self,
        settings: Settings,
        bus: Bus,
        *,
        host: str | None = None,
        driver: str | None = None,
        client: ServiceClient | None = None,
    ):
        self.settings = settings
        self.config = settings.compute
        self.bus = bus
        self.host = host or self.config.host or socket.gethostname()
        self.driver_name = driver or default_driver(settings)
        self.driver: ComputeDriver = load_driver(self.driver_name, settings)
        self.driver.fetch_image = self.fetch_image
        self.client = client
        self.conductor = ConductorClient(bus)
        self.vif_events = VifEvents()
        self.volumes = AgentVolumes(self)
        self._consumer: Consumer | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._heartbeat = PeriodicTask(
            f"compute-heartbeat-{self.host}", self.config.report_interval, self.heartbeat
        )
        self._power_sync = PeriodicTask(
            f"compute-power-sync-{self.host}", self.config.power_sync_interval, self.sync_power
        )

    @property
    def ports(self) -> PortBinder:
        if self.client is None:
            raise DriverError("this agent has no service credentials to reach the network")
        return PortBinder(self.client)

    @property
    def images(self) -> ImageTransfer:
        if self.client is None:
            raise DriverError("this agent has no service credentials to reach images")
        return ImageTransfer(self.client)

    async def start(self) -> None:
        """Prepare the host and take work; report it and reconcile in the background (the
        conductor or placement may not answer yet while the cloud starts)."""
        await self.driver.init_host(self.host)
        self._consumer = await self.bus.consume(agent_topic(self.host), AgentHandler(self))
        self.spawn_task(self._first_report())

    async def _first_report(self) -> None:
        delay = 0.2
        while True:
            try:
                await self.heartbeat(wait=True)
                break
            except Exception as exc:
                log.info("compute %s not reported yet (%s); retrying", self.host, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        await self.reconcile()
        self._heartbeat.start()
        self._power_sync.start()

    async def stop(self) -> None:
        await self._power_sync.stop()
        await self._heartbeat.stop()
        if self._consumer is not None:
            await self._consumer.stop()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task

    def spawn_task(self, work: Any) -> None:
        """Run ``work`` in the background (casts return at once; work reports when done)."""
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def heartbeat(self, wait: bool = False) -> None:
        """Report the host alive with its capacity (``wait``: until the conductor did)."""
        capacity = await self.driver.host_capacity()
        report = {
            "host": self.host,
            "capacity": {**asdict(capacity), "traits": sorted(capacity.traits)},
            "running": len(await self.driver.list_instances()),
        }
        if wait:
            await self.conductor.call("heartbeat", timeout=30.0, **report)
        else:
            await self.conductor.cast("heartbeat", **report)

    async def sync_power(self) -> None:
        """Tell the conductor the power state of every server the hypervisor runs."""
        states = await self.driver.list_instances()
        await self.conductor.cast(
            "power_states", host=self.host, states={u: int(s) for u, s in states.items()}
        )

    async def reconcile(self) -> None:
        """After a restart: destroy guests the cloud no longer has here; report the state of
        the servers that should be here (gone ones show as shut down)."""
        try:
            expected = await self.conductor.call("instances_on_host", host=self.host)
        except Exception:
            log.exception("compute %s could not reconcile with the conductor", self.host)
            return
        present = await self.driver.list_instances()
        wanted = {payload["spec"]["uuid"]: payload for payload in expected}
        for uuid in set(present) - set(wanted):
            log.warning("compute %s: destroying guest %s the cloud does not know", self.host, uuid)
            stray = InstanceSpec(uuid, uuid, uuid, uuid, "", "", 1, 1, 0)
            with contextlib.suppress(DriverError):
                await self.driver.destroy(stray, [])
        try:
            await self.volumes.reconcile(set(present) & set(wanted))
        except Exception:
            log.exception("compute %s could not reconcile its volumes", self.host)
        states = {u: int(present.get(u, PowerState.SHUTDOWN)) for u in wanted}
        if states:
            await self.conductor.cast("power_states", host=self.host, states=states)

    async def fetch_image(self, image_id: str, path: Path) -> None:
        await self.images.fetch(image_id, path)

    async def wait_for_vifs(self, server: str, ports: list[dict[str, Any]]) -> dict[str, Any]:
        """Start waiting for the plug events of the bridge ports of ``server``."""
        if not self.driver.plugs_vifs:
            return {}
        return {
            record["port_id"]: self.vif_events.expect(server, record["port_id"])
            for record in ports
            if record.get("vif_type") == "bridge"
        }

    async def build(self, instance: dict[str, Any], request_id: str, attempt: int) -> None:
        """Ports, spawn, and the report; on failure everything taken here is given back."""
        spec = spec_of(instance)
        ports: list[dict[str, Any]] = []
        error: str | None = None
        power = PowerState.NOSTATE
        try:
            ports = await self.ports.allocate(
                spec.uuid,
                spec.project_id,
                self.host,
                spec.availability_zone or self.config.default_availability_zone,
                instance.get("requested_networks"),
                instance.get("security_groups") or [],
                instance.get("ports") or [],
            )
            waiters = await self.wait_for_vifs(spec.uuid, ports)
            vifs = [vif_of(p) for p in ports]
            devices = await self.volumes.connect_boot(instance)
            await self.driver.spawn(spec, vifs, devices, self.fetch_image)
            if waiters:
                await asyncio.wait_for(
                    asyncio.gather(*waiters.values()), self.config.vif_plugging_timeout
                )
            power = await self.driver.power_state(spec)
            await self.volumes.complete_boot(spec.uuid)
        except Exception as exc:
            error = (
                "Timed out waiting for network-vif-plugged"
                if isinstance(exc, TimeoutError)
                else describe(exc)
            )
            log.warning("build of %s on %s failed: %s", spec.uuid, self.host, error)
            self.vif_events.forget(spec.uuid)
            with contextlib.suppress(Exception):
                await self.driver.destroy(spec, [vif_of(p) for p in ports])
            with contextlib.suppress(Exception):
                await self.volumes.rollback_boot(spec.uuid)
            if not instance.get("ports"):
                with contextlib.suppress(Exception):
                    await self.ports.release(ports, spec.uuid)
                ports = []
        await self.conductor.cast(
            "build_done",
            uuid=spec.uuid,
            host=self.host,
            request_id=request_id,
            attempt=attempt,
            ports=ports,
            power_state=int(power),
            error=error,
        )

    async def act(
        self, instance: dict[str, Any], action: str, request_id: str, args: dict[str, Any]
    ) -> None:
        """One server action, then ``action_done`` with the new state or the error."""
        spec = spec_of(instance)
        ports = instance.get("ports") or []
        vifs = [vif_of(p) for p in ports]
        driver = self.driver
        values: dict[str, Any] = {}
        error = None
        try:
            if action == "reboot":
                await driver.reboot(spec, hard=bool(args.get("hard")))
            elif action in ("stop", "soft_delete"):
                await driver.power_off(spec)
            elif action in ("start", "restore"):
                await driver.power_on(spec, vifs, await self.volumes.devices(spec.uuid))
            elif action == "pause":
                await driver.pause(spec)
            elif action == "unpause":
                await driver.unpause(spec)
            elif action == "suspend":
                await driver.suspend(spec)
            elif action == "resume":
                await driver.resume(spec, vifs, await self.volumes.devices(spec.uuid))
            elif action == "rescue":
                await driver.rescue(spec, vifs, self.fetch_image, args.get("image_id") or "")
            elif action == "unrescue":
                await driver.unrescue(spec, vifs)
            elif action in ("snapshot", "shelve"):
                await self.snapshot(spec, args["image_id"])
                if action == "shelve":
                    await driver.destroy(spec, vifs)
                    await self.ports.unbind_host(ports)
            elif action == "rebuild":
                await driver.destroy(spec, vifs)
                await driver.spawn(spec, vifs, await self.volumes.devices(spec.uuid),
                                   self.fetch_image)  # fmt: skip
            else:
                raise DriverError(f"unknown action {action}")
            values["power_state"] = int(await driver.power_state(spec))
        except Exception as exc:
            error = describe(exc)
            log.warning("%s of %s on %s failed: %s", action, spec.uuid, self.host, error)
            with contextlib.suppress(Exception):
                values["power_state"] = int(await driver.power_state(spec))
        await self.conductor.cast(
            "action_done",
            uuid=spec.uuid,
            host=self.host,
            action=action,
            request_id=request_id,
            values=values,
            error=error,
        )

    async def snapshot(self, spec: Any, image_id: str) -> None:
        async def upload(path: Path, disk_format: str) -> None:
            await self.images.upload(image_id, path, disk_format)

        await self.driver.snapshot(spec, upload)

    async def terminate(self, instance: dict[str, Any], request_id: str) -> None:
        """Destroy the server and give back its ports, then report it gone."""
        spec = spec_of(instance)
        ports = instance.get("ports") or []
        error = None
        try:
            self.vif_events.forget(spec.uuid)
            await self.driver.destroy(spec, [vif_of(p) for p in ports])
            await self.ports.release(ports, spec.uuid)
        except Exception as exc:
            error = describe(exc)
            log.warning("delete of %s on %s failed: %s", spec.uuid, self.host, error)
        await self.conductor.cast(
            "terminated", uuid=spec.uuid, host=self.host, request_id=request_id, error=error
        )


class AgentHandler(VolumeCasts, InterfaceCalls):
    """The bus face of an agent: casts start background work, calls answer."""

    def __init__(self, agent: ComputeAgent):
        self.agent = agent

    async def build_and_run(
        self, instance: dict[str, Any], request_id: str, attempt: int = 1
    ) -> None:
        self.agent.spawn_task(self.agent.build(instance, request_id, attempt))

    async def run_action(
        self,
        instance: dict[str, Any],
        action: str,
        request_id: str,
        args: dict[str, Any] | None = None,
    ) -> None:
        self.agent.spawn_task(self.agent.act(instance, action, request_id, args or {}))

    async def terminate(self, instance: dict[str, Any], request_id: str) -> None:
        self.agent.spawn_task(self.agent.terminate(instance, request_id))

    async def external_event(self, uuid: str, name: str, tag: str, status: str) -> bool:
        if name == "network-vif-plugged":
            return self.agent.vif_events.deliver(uuid, tag, status)
        if name == "volume-extended":
            self.agent.spawn_task(self.agent.volumes.extend(uuid, tag))
            return True
        return False

    async def console_output(self, instance: dict[str, Any], length: int | None = None) -> str:
        return await self.agent.driver.console_output(spec_of(instance), length)

    async def diagnostics(self, instance: dict[str, Any]) -> dict[str, Any]:
        return asdict(await self.agent.driver.diagnostics(spec_of(instance)))

    async def set_admin_password(self, instance: dict[str, Any], password: str) -> None:
        await self.agent.driver.set_admin_password(spec_of(instance), password)

    async def vnc_address(self, instance: dict[str, Any]) -> list[Any]:
        host, port = await self.agent.driver.vnc_address(spec_of(instance))
        return [host, port]

    async def migrate_out(self, instance: dict[str, Any]) -> dict[str, Any]:
        """Source of a cold move: power off, say where the disks are."""
        spec = spec_of(instance)
        await self.agent.driver.power_off(spec)
        return await self.agent.driver.export_disks(spec)

    async def migrate_in(
        self,
        instance: dict[str, Any],
        source: dict[str, Any],
        old: dict[str, Any],
        power_on: bool,
    ) -> dict[str, Any]:
        """Destination of a cold move: copy and grow the disks, rebind the ports, boot."""
        agent = self.agent
        spec = spec_of(instance)
        await agent.driver.import_disks(spec_of(old), source)
        await agent.driver.resize_disks(spec_of(old), spec)
        ports = await self._rebind(instance)
        await self._reconnect_volumes(instance, ports, power_on)
        return {"ports": ports, "power_state": int(await agent.driver.power_state(spec))}

    async def _reconnect_volumes(
        self, instance: dict[str, Any], ports: list[dict[str, Any]], power_on: bool
    ) -> None:
        """A moved server's volumes, exported to this host from now on (block storage
        re-initialises each attachment for this host's connector); boot with them."""
        agent = self.agent
        spec = spec_of(instance)
        try:
            devices = await agent.volumes.connect_boot(instance)
            if power_on:
                await agent.driver.power_on(spec, [vif_of(p) for p in ports], devices)
        except BaseException:
            await agent.volumes.rollback_boot(spec.uuid)
            raise
        await agent.volumes.complete_boot(spec.uuid)

    async def _rebind(self, instance: dict[str, Any]) -> list[dict[str, Any]]:
        spec = spec_of(instance)
        zone = spec.availability_zone or self.agent.config.default_availability_zone
        return [
            await self.agent.ports.bind(record, spec.uuid, self.agent.host, zone)
            for record in instance.get("ports") or []
        ]

    async def revert_on_source(self, instance: dict[str, Any], power_on: bool) -> dict[str, Any]:
        """Back on the source after a reverted resize: rebind the ports, boot."""
        spec = spec_of(instance)
        ports = await self._rebind(instance)
        await self._reconnect_volumes(instance, ports, power_on)
        return {"ports": ports, "power_state": int(await self.agent.driver.power_state(spec))}

    async def destroy(self, instance: dict[str, Any]) -> None:
        """Remove the guest only (the other end of a move keeps the ports)."""
        spec = spec_of(instance)
        await self.agent.driver.destroy(spec, [])

    async def live_prepare(self, instance: dict[str, Any]) -> dict[str, Any]:
        """Destination of a live migration: rebind the ports here and expect the guest."""
        spec = spec_of(instance)
        ports = await self._rebind(instance)
        info = await self.agent.driver.prepare_live_migration(spec, [vif_of(p) for p in ports], [])
        return {"destination": info, "ports": ports}

    async def live_migrate(self, instance: dict[str, Any], destination: dict[str, Any]) -> None:
        await self.agent.driver.live_migrate(spec_of(instance), destination)

    async def rebuild_here(self, instance: dict[str, Any]) -> dict[str, Any]:
        """Evacuation target: rebind the ports here and spawn the server afresh."""
        spec = spec_of(instance)
        ports = await self._rebind(instance)
        await self.agent.driver.spawn(spec, [vif_of(p) for p in ports], [], self.agent.fetch_image)
        return {"ports": ports, "power_state": int(await self.agent.driver.power_state(spec))}

    async def power_state(self, instance: dict[str, Any]) -> int:
        return int(await self.agent.driver.power_state(spec_of(instance)))
