"""The volume scheduler: consumes ``volume-scheduler`` and places work on backends.

It runs inside each volume API process (it reads the database, as Cinder's
scheduler does; agents never do). Backends are what agents last reported
(``volume_backend`` rows), alive by their ``cinder-volume`` heartbeats, with the
capacity already promised counted from the volumes placed on them.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import func, select, update

from onestack.core.db import affected
from onestack.volume import migration
from onestack.volume.models import Backend, Volume, VolumeType
from onestack.volume.payloads import backend_of, volume_payload
from onestack.volume.reports import without_extending
from onestack.volume.scheduler.filters import FILTERS
from onestack.volume.scheduler.state import BackendState, RequestSpec
from onestack.volume.scheduler.weighers import ordered
from onestack.volume.service import VolumeService
from onestack.volume.usage import growth_usage, type_usage

log = logging.getLogger(__name__)

VOLUME_BINARY = "cinder-volume"


class NoValidBackend(Exception):
    """No backend passed the filters; the message says which filter stopped them."""


class VolumeScheduler:
    """Filter and weigh backends for creates, extends, retypes and migrations."""

    def __init__(self, service: VolumeService):
        self.service = service

    async def backends(self) -> list[BackendState]:
        """Every reported backend with its liveness and promised capacity."""
        async with self.service.db.session() as session:
            rows = (await session.execute(select(Backend))).scalars().all()
            allocated = dict(
                (
                    await session.execute(
                        select(Volume.host, func.sum(Volume.size))
                        .where(Volume.host.is_not(None))
                        .group_by(Volume.host)
                    )
                ).all()
            )
        records = {r.host: r for r in await self.service.services.list(binary=VOLUME_BINARY)}
        states = []
        for row in rows:
            record = records.get(row.host)
            used = sum(int(v or 0) for h, v in allocated.items() if backend_of(h) == row.host)
            states.append(
                BackendState(
                    host=row.host,
                    availability_zone=row.availability_zone,
                    capabilities=dict(row.capabilities),
                    allocated_capacity_gb=used,
                    up=record is not None and record.up,
                    disabled=record is not None and record.disabled,
                )
            )
        return states

    async def select(self, spec: RequestSpec) -> BackendState:
        """The best backend for ``spec``, or :class:`NoValidBackend` with the reason."""
        candidates = await self.backends()
        if not candidates:
            raise NoValidBackend("No volume backend has reported to the scheduler.")
        for name, check in FILTERS:
            candidates = [b for b in candidates if check(b, spec)]
            if not candidates:
                raise NoValidBackend(f"No valid backend was found: {name} returned 0 backends.")
        return ordered(candidates)[0]

    async def _fail_volume(self, volume_id: str, status: str, reason: str, event: str) -> None:
        async with self.service.db.session() as session:
            volume = await session.get(Volume, volume_id)
            if volume is None:
                return
            volume.status = status
            project = volume.project_id
        await self.service.add_message(project, "VOLUME", volume_id, event, reason)

    # Handlers (bus methods) -----------------------------------------------------------

    async def create_volume(self, volume_id: str, spec: dict[str, Any]) -> None:
        """Place a new volume and hand it to its backend's agent."""
        try:
            backend = await self.select(RequestSpec.of(spec))
        except NoValidBackend as exc:
            log.info("volume %s: %s", volume_id, exc)
            await self._fail_volume(volume_id, "error", str(exc), "VOLUME_CREATE")
            return
        pool = backend.capabilities.get("volume_backend_name") or backend.host.partition("@")[2]
        host = f"{backend.host}#{pool}"
        async with self.service.db.session() as session:
            placed = await session.execute(
                update(Volume)
                .where(Volume.id == volume_id, Volume.status == "creating")
                .values(host=host, availability_zone=backend.availability_zone)
            )
            if not affected(placed):
                return  # deleted meanwhile
            volume = await session.get(Volume, volume_id)
            assert volume is not None
            payload = await volume_payload(session, volume)
        await self.service.agents.cast(
            host, "create_volume", volume=payload, source=spec.get("source") or {}
        )

    async def extend_volume(self, volume_id: str, new_size: int) -> None:
        """Extend on the volume's backend if it has room for the difference."""
        async with self.service.db.session() as session:
            volume = await session.get(Volume, volume_id)
            if volume is None or volume.status != "extending":
                return
            host = volume.host
            payload = await volume_payload(session, volume)
            delta = new_size - volume.size
            volume_type = await session.get(VolumeType, volume.volume_type_id)
        spec = RequestSpec(size=delta, source_host=host, extending=True)
        try:
            await self.select(spec)
        except NoValidBackend as exc:
            type_name = volume_type.name if volume_type else None
            await self.service.quotas.release(payload["project_id"], growth_usage(type_name, delta))
            await self._restore_status(volume_id, "VOLUME_EXTEND", f"Extend failed: {exc}")
            return
        assert host is not None
        await self.service.agents.cast(host, "extend_volume", volume=payload, new_size=new_size)

    async def _restore_status(self, volume_id: str, event: str, reason: str) -> None:
        """A request that changed nothing: the volume goes back to its previous status."""
        async with self.service.db.session() as session:
            volume = await session.get(Volume, volume_id)
            if volume is None:
                return
            volume.status = volume.previous_status or "available"
            volume.previous_status = None
            volume.migration_status = None
            volume.admin_metadata = without_extending(volume.admin_metadata)
            project = volume.project_id
        await self.service.add_message(project, "VOLUME", volume_id, event, reason)

    async def retype(self, volume_id: str, new_type_id: str, migration_policy: str) -> None:
        """Keep the volume where it is if its backend suits the new type, else migrate it."""
        async with self.service.db.session() as session:
            volume = await session.get(Volume, volume_id)
            new_type = await session.get(VolumeType, new_type_id)
            if volume is None or new_type is None or volume.status != "retyping":
                return
            payload = await volume_payload(session, volume)
            host = backend_of(volume.host)
            spec_data = {
                "size": volume.size,
                "extra_specs": dict(new_type.extra_specs),
                "multiattach": volume.multiattach,
            }
        spec = RequestSpec.of(spec_data)
        current = [b for b in await self.backends() if b.host == host]
        # The volume already occupies its backend: only capacity need not be checked again.
        stays = [check for name, check in FILTERS if name != "CapacityFilter"]
        if current and all(check(current[0], spec) for check in stays):
            await self._finish_retype(volume_id, new_type_id)
            return
        if migration_policy != "on-demand":
            await self._retype_failed(
                volume_id,
                new_type,
                "Retype failed: the volume's backend does not suit the new type and the "
                "migration policy is 'never'.",
            )
            return
        if payload["host"] is None:
            await self._retype_failed(
                volume_id, new_type, "Retype failed: the volume has no backend."
            )
            return
        try:
            target = await self.select(spec)
        except NoValidBackend as exc:
            await self._retype_failed(volume_id, new_type, f"Retype failed: {exc}")
            return
        await self._start_migration(volume_id, payload, target, new_type_id)

    async def _retype_failed(self, volume_id: str, new_type: VolumeType, reason: str) -> None:
        """Nothing changed: the new type's quota charge goes back."""
        async with self.service.db.session() as session:
            volume = await session.get(Volume, volume_id)
            project, size = (volume.project_id, volume.size) if volume else ("", 0)
        if project:
            await self.service.quotas.release(project, type_usage(new_type.name, size))
        await self._restore_status(volume_id, "VOLUME_RETYPE", reason)

    async def _finish_retype(self, volume_id: str, new_type_id: str) -> None:
        """The backend suits the new type: only the record changes; the old type's charge
        goes back (the API charged the new one)."""
        async with self.service.db.session() as session:
            volume = await session.get(Volume, volume_id)
            if volume is None:
                return
            old_type = await session.get(VolumeType, volume.volume_type_id)
            volume.volume_type_id = new_type_id
            volume.status = volume.previous_status or "available"
            volume.previous_status = None
            project, size = volume.project_id, volume.size
        if old_type is not None:
            await self.service.quotas.release(project, type_usage(old_type.name, size))

    async def _start_migration(
        self,
        volume_id: str,
        payload: dict[str, Any],
        target: BackendState,
        new_type_id: str | None,
    ) -> None:
        pool = target.capabilities.get("volume_backend_name") or target.host.partition("@")[2]
        dest_host = f"{target.host}#{pool}"
        if payload["attach_status"] == "attached":
            await migration.start(self.service, volume_id, dest_host, new_type_id)
            return
        async with self.service.db.session() as session:
            await session.execute(
                update(Volume).where(Volume.id == volume_id).values(migration_status="migrating")
            )
        assert payload["host"] is not None
        await self.service.agents.cast(
            payload["host"],
            "migrate_volume",
            volume=payload,
            dest_host=dest_host,
            new_type_id=new_type_id,
        )

    async def migrate_volume(self, volume_id: str, host: str) -> None:
        """Move a volume to the backend an administrator named, if that backend can take it."""
        async with self.service.db.session() as session:
            volume = await session.get(Volume, volume_id)
            if volume is None or volume.migration_status != "starting":
                return
            volume_type = await session.get(VolumeType, volume.volume_type_id)
            payload = await volume_payload(session, volume)
            spec_data = {
                "size": volume.size,
                "extra_specs": dict(volume_type.extra_specs) if volume_type else {},
                "multiattach": volume.multiattach,
            }
        spec = RequestSpec.of(spec_data)
        wanted = host.partition("#")[0]
        candidates = [b for b in await self.backends() if b.host == wanted]
        reasons = [name for name, check in FILTERS if candidates and not check(candidates[0], spec)]
        if not candidates or reasons:
            why = ", ".join(reasons) if reasons else "it has never reported"
            async with self.service.db.session() as session:
                await session.execute(
                    update(Volume).where(Volume.id == volume_id).values(migration_status="error")
                )
            await self.service.add_message(
                payload["project_id"],
                "VOLUME",
                volume_id,
                "VOLUME_MIGRATE",
                f"Migration failed: backend {wanted} cannot take the volume ({why}).",
            )
            return
        await self._start_migration(volume_id, payload, candidates[0], None)
