"""The conductor: the one writer of server state besides the API.

It consumes the ``conductor`` topic. From the API: builds (schedule with placement's
candidates and the filter scheduler, claim in placement, cast to the chosen host,
reschedule on failure, roll quota and allocations back when no host remains) and moves
(resize, cold and live migration, evacuation, unshelve). From agents: build and action
results, deletions, heartbeats with capacity (service records, compute nodes, placement
inventory) and power states.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from onestack.compute import vm_states
from onestack.compute.actions import add_event, record_event
from onestack.compute.conductor_volumes import VolumeReports
from onestack.compute.host_aggregates import zone_member_of
from onestack.compute.host_states import (
    COMPUTE_BINARY,
    build_host_states,
    flavor_info,
    server_group_of,
)
from onestack.compute.models import ComputeNode, Instance, InstanceMetadata, Migration
from onestack.compute.models_volumes import BlockDeviceMapping
from onestack.compute.payloads import instance_payload
from onestack.compute.placement_client import (
    Candidate,
    CandidatePool,
    PlacementClient,
    PlacementError,
    flavor_resources,
    reserved_memory_mb,
)
from onestack.compute.ports import PortBinder
from onestack.compute.scheduler.selection import (
    NO_VALID_HOST,
    FilterScheduler,
    NoValidHost,
    Selection,
)
from onestack.compute.scheduler.state import HostState, RequestSpec
from onestack.compute.service import ComputeService
from onestack.core.db import affected, utcnow

log = logging.getLogger(__name__)

# How long unconstrained requests share one answer of placement's candidates.
SHARED_CANDIDATES_SECONDS = 1.0


def fault(message: str, code: int = 500) -> dict[str, Any]:
    """A server fault as ``server show`` reports it."""
    return {"code": code, "message": message[:255], "created": utcnow().isoformat(), "details": ""}


def quota_deltas(flavor: dict[str, Any], count: int = 1) -> dict[str, int]:
    """What ``count`` servers of ``flavor`` count against the project's quota."""
    return {"instances": count, "cores": int(flavor["vcpus"]) * count,
            "ram": int(flavor["ram"]) * count}  # fmt: skip


class Conductor(VolumeReports):
    """Bus handler of the ``conductor`` topic."""

    def __init__(self, service: ComputeService, placement: PlacementClient):
        self.service = service
        self.db = service.db
        self.placement = placement
        self.scheduler = FilterScheduler(service.config.scheduler)
        self.failed_builds: dict[str, int] = {}
        # Thousands of agents starting together must not take every database connection.
        self._reports = asyncio.Semaphore(8)
        self.candidate_pool = CandidatePool(SHARED_CANDIDATES_SECONDS)
        # Scheduling latency of recent requests, seconds (benchmarks read it).
        self.schedule_seconds: list[float] = []

    # ----- helpers -------------------------------------------------------------------

    async def _load(self, uuid: str) -> Instance | None:
        async with self.db.session() as session:
            return (
                await session.execute(select(Instance).where(Instance.uuid == uuid))
            ).scalar_one_or_none()

    async def _update(self, uuid: str, **values: Any) -> None:
        async with self.db.session() as session:
            await session.execute(update(Instance).where(Instance.uuid == uuid).values(**values))

    async def _payload(
        self, inst: Instance, flavor: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        async with self.db.session() as session:
            metadata = await self._metadata(session, inst.uuid)
        return instance_payload(inst, metadata, flavor)

    @staticmethod
    async def _metadata(session: AsyncSession, uuid: str) -> dict[str, str]:
        rows = (
            await session.execute(
                select(InstanceMetadata).where(InstanceMetadata.instance_uuid == uuid)
            )
        ).scalars()
        return {row.key: row.value for row in rows}

    async def _node_uuid(self, host: str) -> str | None:
        async with self.db.session() as session:
            return (
                await session.execute(select(ComputeNode.uuid).where(ComputeNode.host == host))
            ).scalar_one_or_none()

    async def _fail_build(self, inst: Instance, message: str, request_id: str) -> None:
        """The server goes to ERROR with ``message``; its quota and allocations go back."""
        with_quota = not (inst.system_metadata or {}).get("quota_released")
        await self._update(
            inst.uuid,
            vm_state=vm_states.ERROR,
            task_state=None,
            fault=fault(message),
            system_metadata={**(inst.system_metadata or {}), "quota_released": True},
        )
        if with_quota:
            await self.service.quotas.release(inst.project_id, quota_deltas(inst.flavor))
        try:
            await self.placement.release(inst.uuid)
        except PlacementError:
            log.exception("releasing the allocations of %s", inst.uuid)
        await record_event(
            self.db, inst.uuid, request_id, "conductor_schedule_and_build_instances",
            host=None, error=message,
        )  # fmt: skip

    async def _volume_backed(self, inst: Instance) -> bool:
        """Whether the server boots from a volume (its root disk takes no local disk)."""
        properties = (inst.image_meta or {}).get("properties") or {}
        if inst.image_ref and not inst.block_device_mapping and "bdm_v2" not in properties:
            return False  # a plain image boot: no mapping can name a boot volume
        async with self.db.session() as session:
            found = await session.execute(
                select(BlockDeviceMapping.id)
                .where(
                    BlockDeviceMapping.instance_uuid == inst.uuid,
                    BlockDeviceMapping.boot_index == 0,
                )
                .limit(1)
            )
            return found.first() is not None

    async def _resources(self, inst: Instance, flavor: dict[str, Any]) -> dict[str, int]:
        """What the server takes from its host's provider with ``flavor``."""
        return flavor_resources(flavor, await self._volume_backed(inst))

    async def _request_spec(
        self, inst: Instance, flavor: dict[str, Any], ignore: set[str], volume_backed: bool
    ) -> RequestSpec:
        hints = inst.scheduler_hints or {}
        forced = (inst.system_metadata or {}).get("force_host")
        requested = (inst.system_metadata or {}).get("requested_host")

        def listed(value: Any) -> list[str]:
            return [value] if isinstance(value, str) else list(value or [])

        info = flavor_info(flavor)
        return RequestSpec(
            flavor=replace(info, root_gb=0) if volume_backed else info,
            image_properties=dict((inst.image_meta or {}).get("properties", {})),
            project_id=inst.project_id,
            user_id=inst.user_id,
            availability_zone=(inst.system_metadata or {}).get("requested_zone"),
            force_hosts=[forced] if forced else [],
            requested_host=requested,
            same_host=listed(hints.get("same_host")),
            different_host=listed(hints.get("different_host")),
            # Groups are joined at create, with the hint: without it there is none to read.
            group=await server_group_of(self.db, inst.uuid) if hints.get("group") else None,
            num_instances=1,
            instance_uuids=[inst.uuid],
            ignore_hosts=set(ignore),
        )

    async def _select_and_claim(
        self,
        inst: Instance,
        flavor: dict[str, Any],
        ignore: set[str],
        keep: dict[str, dict[str, int]] | None = None,
        *,
        new_consumer: bool = False,
    ) -> tuple[str, str, str]:
        """Choose a host for ``inst`` with ``flavor`` and claim it in placement (beside
        ``keep``, the allocations a move holds on its source): (host, node, provider)."""
        started = time.perf_counter()
        volume_backed = await self._volume_backed(inst)
        spec = await self._request_spec(inst, flavor, ignore, volume_backed)
        resources = flavor_resources(flavor, volume_backed)
        async with self.db.session() as session:
            # A zone as placement aggregates, so the limited candidates are all in it.
            zone_aggregates = await zone_member_of(
                session, spec.availability_zone, self.service.config.default_availability_zone
            )
        quick = self.service.config.allocation_candidates_quick_limit
        constrained = bool(spec.group or spec.same_host or spec.different_host
                           or spec.force_hosts or spec.requested_host)  # fmt: skip
        if quick and not constrained:
            # Few shared candidates first; all of placement's when they fit no longer.
            key = (tuple(sorted(resources.items())), tuple(zone_aggregates))
            candidates = await self.candidate_pool.get(
                key, lambda: self._candidates(resources, zone_aggregates, quick)
            )
            try:
                selection = self.scheduler.select_destinations(
                    spec, await self._host_states(spec, candidates), 1
                )[0]
            except NoValidHost:
                self.candidate_pool.drop(key)
            else:
                self.candidate_pool.consume(key, selection.host.uuid, resources)
                chosen = time.perf_counter() - started
                claimed = await self._claim(inst, selection, resources, keep, new_consumer)
                if claimed is not None:
                    self._record_schedule(chosen)
                    return claimed
                self.candidate_pool.drop(key)
        candidates = await self._candidates(resources, zone_aggregates, None)
        selection = self.scheduler.select_destinations(
            spec, await self._host_states(spec, candidates), 1
        )[0]
        self._record_schedule(time.perf_counter() - started)
        claimed = await self._claim(inst, selection, resources, keep, new_consumer)
        if claimed is None:
            raise NoValidHost("every chosen host was claimed by concurrent requests")
        return claimed

    def _record_schedule(self, seconds: float) -> None:
        self.schedule_seconds.append(seconds)
        if len(self.schedule_seconds) > 100_000:
            del self.schedule_seconds[:50_000]

    async def _claim(
        self,
        inst: Instance,
        selection: Selection,
        resources: dict[str, int],
        keep: dict[str, dict[str, int]] | None,
        new_consumer: bool,
    ) -> tuple[str, str, str] | None:
        """Claim the chosen host, else its alternates: (host, node, provider), or None when
        concurrent requests took them all."""
        for host in [selection.host, *selection.alternates]:
            allocations = {**(keep or {}), host.uuid: resources}
            if host.uuid in (keep or {}):
                continue
            if await self.placement.claim(
                inst.uuid, allocations, inst.project_id, inst.user_id, new=new_consumer
            ):
                return host.host, host.node, host.uuid
        return None

    async def _candidates(
        self, resources: dict[str, int], zone_aggregates: list[str], limit: int | None
    ) -> list[Candidate]:
        """At most ``limit`` of placement's candidates for ``resources`` in the zone."""
        candidates = await self.placement.candidates(
            resources, forbidden=["COMPUTE_STATUS_DISABLED"], member_of=zone_aggregates,
            limit=limit,
        )  # fmt: skip
        if zone_aggregates and not candidates:
            # A provider placement was not yet told the aggregates of still counts: the
            # zone filter decides on the compute database's memberships.
            candidates = await self.placement.candidates(
                resources, forbidden=["COMPUTE_STATUS_DISABLED"], limit=limit
            )
        return candidates

    async def _host_states(self, spec: RequestSpec, candidates: list[Candidate]) -> list[HostState]:
        return await build_host_states(
            self.db, self.service.config, candidates, spec, self.failed_builds
        )

    # ----- builds -------------------------------------------------------------------

    async def build_instances(self, instance_uuids: list[str], request_id: str) -> None:
        """Schedule and start building the servers of one create request."""
        for uuid in instance_uuids:
            await self._schedule_build(uuid, request_id, attempt=1, tried=[])

    async def _schedule_build(
        self, uuid: str, request_id: str, attempt: int, tried: list[str]
    ) -> None:
        inst = await self._load(uuid)
        if inst is None or inst.deleted:
            return
        if inst.task_state == vm_states.DELETING:
            await self.finish_delete(inst)
            return
        try:
            # Builds (and reschedules, which released it) claim for a consumer placement
            # does not know yet.
            host, node, _ = await self._select_and_claim(
                inst, inst.flavor, set(tried), new_consumer=True
            )
        except NoValidHost as exc:
            log.info("no valid host for %s: %s", uuid, exc.detail)
            await self._fail_build(inst, NO_VALID_HOST, request_id)
            return
        except PlacementError as exc:
            await self._fail_build(inst, f"Placement failed: {exc}", request_id)
            return
        async with self.db.session() as session:
            zone = inst.availability_zone or await self._zone_of(host, session)
            # The row loaded above, updated in place (no second read: one UPDATE).
            inst.host, inst.node, inst.availability_zone = host, node, zone
            inst.task_state = vm_states.SPAWNING
            inst.system_metadata = {**(inst.system_metadata or {}), "tried_hosts": [*tried, host]}
            await session.execute(
                update(Instance)
                .where(Instance.uuid == uuid)
                .values(host=host, node=node, availability_zone=zone,
                        task_state=vm_states.SPAWNING, system_metadata=inst.system_metadata)
            )  # fmt: skip
            await add_event(session, uuid, request_id, "conductor_schedule_and_build_instances",
                            host=None, finishes=False)  # fmt: skip
            metadata = await self._metadata(session, uuid)
        payload = instance_payload(inst, metadata)
        await self.service.agents.cast(
            host, "build_and_run", instance=payload, request_id=request_id, attempt=attempt
        )

    async def _zone_of(self, host: str, session: AsyncSession) -> str:
        from onestack.compute.models_admin import Aggregate, AggregateHost, AggregateMetadata

        zone = (
            await session.execute(
                select(AggregateMetadata.value)
                .join(Aggregate, Aggregate.id == AggregateMetadata.aggregate_id)
                .join(AggregateHost, AggregateHost.aggregate_id == Aggregate.id)
                .where(AggregateHost.host == host, AggregateMetadata.key == "availability_zone")
                .limit(1)
            )
        ).scalar_one_or_none()
        return zone or self.service.config.default_availability_zone

    async def build_done(
        self,
        uuid: str,
        host: str,
        request_id: str,
        attempt: int,
        ports: list[dict[str, Any]],
        power_state: int,
        error: str | None = None,
    ) -> None:
        """An agent finished (or failed) a build: ACTIVE, a reschedule, or ERROR."""
        if error is None and await self._built(uuid, host, request_id, ports, power_state):
            return
        inst = await self._load(uuid)
        if inst is None:
            return
        if inst.deleted or inst.task_state == vm_states.DELETING:
            if error:
                await self.finish_delete(inst)
            else:
                # Deleted while building: the API left the teardown to this report.
                await self.service.agents.cast(
                    host, "terminate", instance={**await self._payload(inst), "ports": ports},
                    request_id=request_id,
                )  # fmt: skip
            return
        if error is None:
            return  # the update above found it deleting; a restore since changes nothing
        await record_event(
            self.db, uuid, request_id, "compute_build_and_run_instance", host=host, error=error
        )
        self.failed_builds[host] = self.failed_builds.get(host, 0) + 1
        tried = list((inst.system_metadata or {}).get("tried_hosts", [host]))
        if attempt >= self.service.config.max_attempts:
            await self._fail_build(
                inst,
                f"Exceeded maximum number of retries. Exhausted all hosts available for "
                f"retrying build failures for instance {uuid}. Last error: {error}",
                request_id,
            )
            await self._update(uuid, host=None, node=None)
            return
        await self.placement.release(uuid)
        await self._update(uuid, host=None, node=None, task_state=vm_states.SCHEDULING)
        await self._schedule_build(uuid, request_id, attempt + 1, tried)

    async def _built(
        self, uuid: str, host: str, request_id: str, ports: list[dict[str, Any]], power_state: int
    ) -> bool:
        """The server goes ACTIVE unless it was deleted meanwhile (False: nothing changed)."""
        async with self.db.session() as session:
            done = await session.execute(
                update(Instance)
                .where(Instance.uuid == uuid, Instance.deleted.is_(False),
                       or_(Instance.task_state.is_(None),
                           Instance.task_state != vm_states.DELETING))
                .values(vm_state=vm_states.ACTIVE, task_state=None, power_state=power_state,
                        ports=ports, launched_at=utcnow(), fault=None)
            )  # fmt: skip
            if not affected(done):
                return False
            await add_event(session, uuid, request_id, "compute_build_and_run_instance",
                            host=host)  # fmt: skip
        self.failed_builds.pop(host, None)
        return True

    # ----- actions ------------------------------------------------------------------

    async def action_done(
        self,
        uuid: str,
        host: str,
        action: str,
        request_id: str,
        values: dict[str, Any],
        error: str | None = None,
    ) -> None:
        """An agent finished a server action: the new state, or the old one and a fault."""
        inst = await self._load(uuid)
        if inst is None:
            return
        await record_event(self.db, uuid, request_id, f"compute_{action}_instance",
                           host=host, error=error)  # fmt: skip
        changes: dict[str, Any] = {"task_state": None}
        if "power_state" in values:
            changes["power_state"] = values["power_state"]
        meta = dict(inst.system_metadata or {})
        if error:
            changes["vm_state"] = meta.pop("pre_action_state", inst.vm_state)
            changes["system_metadata"] = meta
            if action in ("rebuild",):
                changes["vm_state"] = vm_states.ERROR
                changes["fault"] = fault(error)
            await self._update(uuid, **changes)
            return
        meta.pop("pre_action_state", None)
        changes["vm_state"] = vm_states.AFTER_ACTION.get(action, inst.vm_state)
        if action == "shelve":
            changes.update(host=None, node=None)
            await self.placement.release(uuid)
        if action == "rebuild":
            changes["launched_at"] = utcnow()
        changes["system_metadata"] = meta
        await self._update(uuid, **changes)

    async def terminated(
        self, uuid: str, host: str, request_id: str, error: str | None = None
    ) -> None:
        """An agent removed a server: it is deleted, its quota and allocations returned."""
        inst = await self._load(uuid)
        if inst is None or (inst.deleted and inst.terminated_at is not None):
            return
        await self.finish_delete(inst, error)

    async def delete_server(self, uuid: str, request_id: str) -> None:
        """Delete a server: through its agent when its host is up, here otherwise (its ports
        released through the network API, as Nova's local delete does)."""
        inst = await self._load(uuid)
        if inst is None or inst.deleted:
            return
        if inst.vm_state == vm_states.RESIZED:
            await self._remove_source_copy(inst)
        if inst.host and await self._host_up(inst.host):
            await self.service.agents.cast(
                inst.host, "terminate", instance=await self._payload(inst), request_id=request_id
            )
            return
        if inst.ports:
            await PortBinder(self.service.client).release(list(inst.ports), uuid)
        await self.finish_delete(inst)

    async def _host_up(self, host: str) -> bool:
        records = await self.service.services.list(binary=COMPUTE_BINARY, host=host)
        return bool(records) and records[0].up

    async def finish_delete(self, inst: Instance, error: str | None = None) -> None:
        """Give back what ``inst`` held (allocations, group membership), then mark it
        deleted and return its quota (once, whoever gets here first)."""
        if error:
            log.warning("delete of %s reported %s; deleting the record anyway", inst.uuid, error)
        try:
            await self.placement.release(inst.uuid)
        except PlacementError:
            log.exception("releasing the allocations of %s", inst.uuid)
        await self._leave_group(inst.uuid)
        await self.release_volumes(inst.uuid)
        now = utcnow()
        async with self.db.session() as session:
            marked = await session.execute(
                update(Instance)
                .where(Instance.uuid == inst.uuid, Instance.deleted.is_(False))
                .values(
                    deleted=True,
                    deleted_at=now,
                    terminated_at=now,
                    vm_state=vm_states.DELETED,
                    task_state=None,
                    power_state=0,
                    system_metadata={**(inst.system_metadata or {}), "quota_released": True},
                )
            )
        if affected(marked) and not (inst.system_metadata or {}).get("quota_released"):
            await self.service.quotas.release(inst.project_id, quota_deltas(inst.flavor))

    async def _leave_group(self, uuid: str) -> None:
        from onestack.compute.models_admin import ServerGroupMember

        async with self.db.session() as session:
            await session.execute(
                ServerGroupMember.__table__.delete().where(  # type: ignore[attr-defined]
                    ServerGroupMember.instance_uuid == uuid
                )
            )

    # ----- moves --------------------------------------------------------------------

    async def _migration(self, inst: Instance, kind: str, **values: Any) -> int:
        async with self.db.session() as session:
            row = Migration(
                instance_uuid=inst.uuid,
                project_id=inst.project_id,
                user_id=inst.user_id,
                migration_type=kind,
                status="pre-migrating",
                source_compute=inst.host,
                source_node=inst.node,
                old_flavor_id=str(inst.flavor["original_id"]),
                **values,
            )
            session.add(row)
            await session.flush()
            return row.id

    async def _set_migration(self, migration_id: int, **values: Any) -> None:
        async with self.db.session() as session:
            await session.execute(
                update(Migration).where(Migration.id == migration_id).values(**values)
            )

    async def _move_failed(
        self, inst: Instance, request_id: str, event: str, error: str, migration_id: int | None
    ) -> None:
        log.warning("%s of %s failed: %s", event, inst.uuid, error)
        await record_event(self.db, inst.uuid, request_id, event, host=inst.host, error=error)
        if migration_id is not None:
            await self._set_migration(migration_id, status="error")
        meta = dict(inst.system_metadata or {})
        await self._update(
            inst.uuid,
            task_state=None,
            vm_state=meta.pop("pre_action_state", inst.vm_state),
            system_metadata=meta,
        )

    async def migrate_server(
        self,
        uuid: str,
        request_id: str,
        flavor: dict[str, Any] | None = None,
        host: str | None = None,
    ) -> None:
        """Cold migration, or resize when ``flavor`` is given: to another host, powered as
        before, waiting in ``resized`` for confirm or revert."""
        inst = await self._load(uuid)
        if inst is None or inst.host is None:
            return
        kind = "resize" if flavor else "migration"
        event = "compute_resize_instance" if flavor else "compute_migrate_instance"
        new_flavor = flavor or inst.flavor
        source_host = inst.host
        source_uuid = await self._node_uuid(source_host)
        keep = {source_uuid: await self._resources(inst, inst.flavor)} if source_uuid else {}
        migration_id = None
        try:
            with_host = {**(inst.system_metadata or {})}
            if host:
                inst.system_metadata = {**with_host, "requested_host": host}
            dest, node, _ = await self._select_and_claim(inst, new_flavor, {source_host}, keep=keep)
            inst.system_metadata = with_host
            migration_id = await self._migration(
                inst, kind, dest_compute=dest, dest_node=node, dest_host=dest,
                new_flavor_id=str(new_flavor["original_id"]),
            )  # fmt: skip
            await self._set_migration(migration_id, status="migrating")
            await self._update(uuid, task_state=vm_states.RESIZE_MIGRATING)
            payload = await self._payload(inst)
            was_on = inst.vm_state == vm_states.ACTIVE
            source_info = await self.service.agents.call(source_host, "migrate_out",
                                                         instance=payload)  # fmt: skip
            await self._update(uuid, task_state=vm_states.RESIZE_FINISH)
            answer = await self.service.agents.call(
                dest, "migrate_in", instance=await self._payload(inst, new_flavor),
                source=source_info, old=payload, power_on=was_on,
            )  # fmt: skip
        except NoValidHost:
            await self._move_failed(inst, request_id, event, NO_VALID_HOST, migration_id)
            return
        except Exception as exc:
            await self._move_failed(inst, request_id, event, str(exc), migration_id)
            if source_uuid:
                await self.placement.claim(uuid, keep, inst.project_id, inst.user_id)
            return
        await self._set_migration(migration_id, status="finished")
        await self._update(
            uuid,
            host=dest,
            node=node,
            flavor=new_flavor,
            old_flavor=inst.flavor,
            new_flavor=new_flavor,
            ports=answer["ports"],
            power_state=answer["power_state"],
            vm_state=vm_states.RESIZED,
            task_state=None,
            system_metadata={
                **(inst.system_metadata or {}),
                "pre_resize_state": inst.vm_state,
                "migration_id": migration_id,
            },
        )
        await record_event(self.db, uuid, request_id, event, host=dest)

    async def confirm_resize(self, uuid: str, request_id: str) -> None:
        """Keep the server where it moved: the source copy and allocations go."""
        inst = await self._load(uuid)
        if inst is None or inst.vm_state != vm_states.RESIZED:
            return
        meta = dict(inst.system_metadata or {})
        migration_id = meta.pop("migration_id", None)
        old = inst.old_flavor or inst.flavor
        await self._remove_source_copy(inst)
        node_uuid = await self._node_uuid(inst.host or "")
        if node_uuid:
            await self.placement.claim(
                uuid,
                {node_uuid: await self._resources(inst, inst.flavor)},
                inst.project_id,
                inst.user_id,
            )
        shrink = {k: -v for k, v in quota_deltas(inst.flavor).items()}
        for key, value in quota_deltas(old).items():
            shrink[key] += value
        shrink.pop("instances", None)
        if any(v > 0 for v in shrink.values()):
            await self.service.quotas.release(
                inst.project_id, {k: v for k, v in shrink.items() if v > 0}
            )
        meta.pop("pre_resize_state", None)
        await self._update(
            uuid, vm_state=vm_states.ACTIVE if inst.power_state == 1 else vm_states.STOPPED,
            task_state=None, old_flavor=None, new_flavor=None, system_metadata=meta,
        )  # fmt: skip
        if migration_id is not None:
            await self._set_migration(migration_id, status="confirmed")
        await record_event(self.db, uuid, request_id, "compute_confirm_resize", host=inst.host)

    async def _remove_source_copy(self, inst: Instance) -> None:
        """Remove the copy a resized server left on its source host (confirm, delete)."""
        migration_id = (inst.system_metadata or {}).get("migration_id")
        if migration_id is None:
            return
        async with self.db.session() as session:
            source = (
                await session.execute(
                    select(Migration.source_compute).where(Migration.id == migration_id)
                )
            ).scalar_one_or_none()
        if not source:
            return
        try:
            payload = await self._payload(inst, inst.old_flavor or inst.flavor)
            await self.service.agents.call(source, "destroy", instance=payload)
        except Exception:
            log.exception("removing the source copy of %s on %s", inst.uuid, source)

    async def revert_resize(self, uuid: str, request_id: str) -> None:
        """Go back to the source host and the old flavor."""
        inst = await self._load(uuid)
        if inst is None or inst.vm_state != vm_states.RESIZED:
            return
        meta = dict(inst.system_metadata or {})
        migration_id = meta.pop("migration_id", None)
        source = source_node = None
        if migration_id is not None:
            async with self.db.session() as session:
                row = (
                    await session.execute(select(Migration).where(Migration.id == migration_id))
                ).scalar_one_or_none()
                if row is not None:
                    source, source_node = row.source_compute, row.source_node
        if source is None:
            return
        old = inst.old_flavor or inst.flavor
        pre = meta.pop("pre_resize_state", vm_states.ACTIVE)
        try:
            await self.service.agents.call(inst.host or "", "destroy",
                                           instance=await self._payload(inst))  # fmt: skip
            answer = await self.service.agents.call(
                source, "revert_on_source", instance=await self._payload(inst, old),
                power_on=pre == vm_states.ACTIVE,
            )  # fmt: skip
        except Exception as exc:
            await self._move_failed(inst, request_id, "compute_revert_resize", str(exc),
                                    migration_id)  # fmt: skip
            return
        node_uuid = await self._node_uuid(source)
        if node_uuid:
            await self.placement.claim(
                uuid,
                {node_uuid: await self._resources(inst, old)},
                inst.project_id,
                inst.user_id,
            )
        grow = quota_deltas(inst.flavor)
        for key, value in quota_deltas(old).items():
            grow[key] -= value
        grow.pop("instances", None)
        if any(v > 0 for v in grow.values()):
            await self.service.quotas.release(
                inst.project_id, {k: v for k, v in grow.items() if v > 0}
            )
        await self._update(
            uuid, host=source, node=source_node, flavor=old, old_flavor=None, new_flavor=None,
            ports=answer["ports"], power_state=answer["power_state"], vm_state=pre,
            task_state=None, system_metadata=meta,
        )  # fmt: skip
        if migration_id is not None:
            await self._set_migration(migration_id, status="reverted")
        await record_event(self.db, uuid, request_id, "compute_revert_resize", host=source)

    async def live_migrate(self, uuid: str, request_id: str, host: str | None = None) -> None:
        """Move the running server to another host (chosen, or the one asked for)."""
        inst = await self._load(uuid)
        if inst is None or inst.host is None:
            return
        event = "compute_live_migration"
        source = inst.host
        source_uuid = await self._node_uuid(source)
        keep = {source_uuid: await self._resources(inst, inst.flavor)} if source_uuid else {}
        migration_id = None
        try:
            base_meta = dict(inst.system_metadata or {})
            if host:
                inst.system_metadata = {**base_meta, "requested_host": host}
            dest, node, dest_uuid = await self._select_and_claim(
                inst, inst.flavor, {source}, keep=keep
            )
            inst.system_metadata = base_meta
            migration_id = await self._migration(
                inst, "live-migration", dest_compute=dest, dest_node=node, dest_host=dest,
                new_flavor_id=str(inst.flavor["original_id"]),
            )  # fmt: skip
            await self._set_migration(migration_id, status="running")
            payload = await self._payload(inst)
            prepared = await self.service.agents.call(dest, "live_prepare", instance=payload)
            try:
                await self.service.agents.call(
                    source, "live_migrate", instance=payload, destination=prepared["destination"]
                )
            except Exception:
                await self._undo_live_prepare(payload, source, dest)
                raise
        except NoValidHost:
            await self._move_failed(inst, request_id, event, NO_VALID_HOST, migration_id)
            return
        except Exception as exc:
            await self._move_failed(inst, request_id, event, str(exc), migration_id)
            if source_uuid:
                await self.placement.claim(uuid, keep, inst.project_id, inst.user_id)
            return
        await self.placement.claim(
            uuid,
            {dest_uuid: await self._resources(inst, inst.flavor)},
            inst.project_id,
            inst.user_id,
        )
        await self._set_migration(migration_id, status="completed")
        meta = dict(inst.system_metadata or {})
        await self._update(
            uuid, host=dest, node=node, ports=prepared["ports"], task_state=None,
            vm_state=meta.pop("pre_action_state", inst.vm_state), system_metadata=meta,
        )  # fmt: skip
        await record_event(self.db, uuid, request_id, event, host=dest)

    async def _undo_live_prepare(self, payload: dict[str, Any], source: str, dest: str) -> None:
        """A failed live migration: the waiting guest on ``dest`` goes, the ports are bound
        to the source again."""
        for host, method, extra in ((dest, "destroy", {}),
                                    (source, "revert_on_source", {"power_on": False})):  # fmt: skip
            try:
                await self.service.agents.call(host, method, instance=payload, **extra)
            except Exception:
                uuid = payload["spec"]["uuid"]
                log.exception("undoing the live migration of %s: %s on %s", uuid, method, host)

    async def evacuate(self, uuid: str, request_id: str, host: str | None = None) -> None:
        """Rebuild a server of a down host on another one."""
        inst = await self._load(uuid)
        if inst is None or inst.host is None:
            return
        event = "compute_rebuild_instance"
        source = inst.host
        migration_id = None
        try:
            base_meta = dict(inst.system_metadata or {})
            if host:
                inst.system_metadata = {**base_meta, "requested_host": host}
            dest, node, _ = await self._select_and_claim(inst, inst.flavor, {source})
            inst.system_metadata = base_meta
            migration_id = await self._migration(
                inst, "evacuation", dest_compute=dest, dest_node=node, dest_host=dest,
                new_flavor_id=str(inst.flavor["original_id"]),
            )  # fmt: skip
            answer = await self.service.agents.call(
                dest, "rebuild_here", instance=await self._payload(inst)
            )
        except NoValidHost:
            await self._move_failed(inst, request_id, event, NO_VALID_HOST, migration_id)
            return
        except Exception as exc:
            await self._move_failed(inst, request_id, event, str(exc), migration_id)
            return
        await self._set_migration(migration_id, status="done")
        meta = dict(inst.system_metadata or {})
        meta.pop("pre_action_state", None)
        await self._update(
            uuid, host=dest, node=node, ports=answer["ports"], power_state=answer["power_state"],
            vm_state=vm_states.ACTIVE, task_state=None, system_metadata=meta,
            launched_at=utcnow(),
        )  # fmt: skip
        await record_event(self.db, uuid, request_id, event, host=dest)

    async def unshelve(self, uuid: str, request_id: str) -> None:
        """Schedule a shelved-offloaded server again and boot it from its snapshot."""
        inst = await self._load(uuid)
        if inst is None:
            return
        meta = dict(inst.system_metadata or {})
        image = meta.get("shelved_image_id")
        if image:
            await self._update(uuid, image_ref=image)
        await self._update(uuid, task_state=vm_states.SPAWNING)
        await self._schedule_build(uuid, request_id, attempt=self.service.config.max_attempts,
                                   tried=[])  # fmt: skip

    # ----- agents' reports ----------------------------------------------------------

    async def heartbeat(self, host: str, capacity: dict[str, Any], running: int = 0) -> None:
        """Record the agent as alive, its node as reported, and its inventory in placement."""
        async with self._reports:
            await self._record_host(host, capacity, running)

    async def _record_host(self, host: str, capacity: dict[str, Any], running: int) -> None:
        zone = self.service.config.default_availability_zone
        await self.service.services.record(host, COMPUTE_BINARY, topic="compute", zone=zone)
        traits = list(capacity.get("traits") or [])
        async with self.db.session() as session:
            disabled = (
                await session.execute(
                    select(self.service.services.table.c.disabled).where(
                        self.service.services.table.c.host == host,
                        self.service.services.table.c.binary == COMPUTE_BINARY,
                    )
                )
            ).scalar_one_or_none()
            node = (
                await session.execute(
                    select(ComputeNode).where(ComputeNode.hypervisor_hostname == host)
                )
            ).scalar_one_or_none()
            if node is None:
                node = ComputeNode(host=host, hypervisor_hostname=host)
                session.add(node)
            node.hypervisor_type = capacity["hypervisor_type"]
            node.hypervisor_version = int(capacity["hypervisor_version"])
            node.host_ip = capacity.get("host_ip", "127.0.0.1")
            node.vcpus = int(capacity["vcpus"])
            node.memory_mb = int(capacity["memory_mb"])
            node.local_gb = int(capacity["disk_gb"])
            node.cpu_info = capacity.get("cpu_info") or {}
            node.traits = traits
            node.running_vms = running
            await session.flush()
            node_uuid = node.uuid
        if disabled:
            traits.append("COMPUTE_STATUS_DISABLED")
        await self.placement.ensure_node(
            node_uuid,
            host,
            vcpus=int(capacity["vcpus"]),
            memory_mb=int(capacity["memory_mb"]),
            disk_gb=int(capacity["disk_gb"]),
            reserved_mb=reserved_memory_mb(capacity["hypervisor_type"]),
            traits=traits,
        )

    async def power_states(self, host: str, states: dict[str, int]) -> None:
        """Sync the power state of servers on ``host``; a server found off while active
        becomes stopped (Nova's sync), one the hypervisor lost too."""
        async with self.db.session() as session:
            rows = (
                await session.execute(
                    select(Instance).where(Instance.host == host, Instance.deleted.is_(False))
                )
            ).scalars()
            for inst in rows:
                if inst.task_state is not None or inst.uuid not in states:
                    continue
                power = states[inst.uuid]
                inst.power_state = power
                if inst.vm_state == vm_states.ACTIVE and power in (0, 4, 6):
                    inst.vm_state = vm_states.STOPPED

    async def instances_on_host(self, host: str) -> list[dict[str, Any]]:
        """The servers that should exist on ``host`` (an agent reconciling after a restart)."""
        async with self.db.session() as session:
            rows = (
                (
                    await session.execute(
                        select(Instance).where(Instance.host == host, Instance.deleted.is_(False))
                    )
                )
                .scalars()
                .all()
            )
        return [instance_payload(inst) for inst in rows]
