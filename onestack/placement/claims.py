"""Writing allocations: replace what a set of consumers holds, atomically, never past capacity.

One transaction per request, retried when the database aborts it as a deadlock victim:

1. consumers are checked and locked by a conditional generation ``UPDATE`` (or created:
   a concurrent creation of the same consumer loses on the unique uuid);
2. every provider involved gets its generation bumped (in id order, as inventory updates
   do, so the two never deadlock), which tells other writers the provider changed;
3. each (provider, class) whose amount grows is claimed by one conditional ``UPDATE``
   of ``used`` that also re-checks the units the amounts were validated against, so two
   claims on the last unit cannot both succeed on SQLite, PostgreSQL or MariaDB;
4. the consumers' allocation rows are rewritten; consumers left with nothing are deleted.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import CursorResult, delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from onestack.core.asgi.errors import BadRequest
from onestack.core.db import Database, affected, retry_on_deadlock, utcnow
from onestack.placement.api.common import CONCURRENT_UPDATE, conflict
from onestack.placement.models import Allocation, Consumer, Inventory, ResourceProvider
from onestack.placement.names import NameTable

# Marks "do not check the consumer generation" (microversions before 1.28).
UNCHECKED = object()


@dataclass
class ConsumerClaim:
    """The full set of allocations one consumer should hold after the request."""

    consumer_uuid: str
    project_id: str
    user_id: str
    allocations: dict[str, dict[str, int]]  # provider uuid → class name → amount
    generation: object = UNCHECKED  # int | None when checked
    consumer_type: str | None = None


@dataclass
class _Plan:
    provider_ids: dict[str, int] = field(default_factory=dict)
    class_ids: dict[str, int] = field(default_factory=dict)


async def replace_allocations(
    db: Database, classes: NameTable, claims: list[ConsumerClaim]
) -> None:
    """Make each consumer hold exactly its claim's allocations (none: release everything)."""
    class_names = {name for c in claims for per in c.allocations.values() for name in per}
    class_ids, missing = await classes.ids(class_names)
    if missing:
        raise BadRequest(f"Unable to allocate inventory: No such resource class {missing[0]}.")
    plan = _Plan(class_ids=class_ids)
    ordered = sorted(claims, key=lambda c: c.consumer_uuid)

    async def attempt() -> None:
        try:
            async with db.session() as session:
                await _write(session, plan, ordered)
        except IntegrityError:
            raise conflict(
                "Inventory and/or allocations changed while attempting to allocate: another "
                "request created one of these consumers at the same time. Please retry."
            ) from None

    await retry_on_deadlock(attempt)


async def _write(session: AsyncSession, plan: _Plan, claims: list[ConsumerClaim]) -> None:
    provider_uuids = sorted({uuid for c in claims for uuid in c.allocations})
    if provider_uuids:
        rows = await session.execute(
            select(ResourceProvider.uuid, ResourceProvider.id).where(
                ResourceProvider.uuid.in_(provider_uuids)
            )
        )
        plan.provider_ids = {uuid: ident for uuid, ident in rows}
        for uuid in provider_uuids:
            if uuid not in plan.provider_ids:
                raise BadRequest(f"Allocation for resource provider '{uuid}' that does not exist.")
    consumer_ids = [await _consumer(session, claim) for claim in claims]

    old = await session.execute(
        select(
            Allocation.resource_provider_id, Allocation.resource_class_id, Allocation.used
        ).where(Allocation.consumer_id.in_(consumer_ids))
    )
    delta: dict[tuple[int, int], int] = defaultdict(int)
    for provider, cls, used in old:
        delta[(provider, cls)] -= used
    amounts: dict[tuple[int, int], list[int]] = defaultdict(list)
    new_rows = []
    now = utcnow()
    for consumer_id, claim in zip(consumer_ids, claims, strict=True):
        for provider_uuid, resources in claim.allocations.items():
            provider = plan.provider_ids[provider_uuid]
            for name, amount in resources.items():
                key = (provider, plan.class_ids[name])
                delta[key] += amount
                amounts[key].append(amount)
                new_rows.append(
                    {
                        "consumer_id": consumer_id,
                        "resource_provider_id": provider,
                        "resource_class_id": key[1],
                        "used": amount,
                        "created_at": now,
                        "updated_at": now,
                    }
                )
    inventories = await _inventories(session, set(amounts))
    uuid_of = {ident: uuid for uuid, ident in plan.provider_ids.items()}
    name_of = {ident: name for name, ident in plan.class_ids.items()}
    for key, values in amounts.items():
        inventory = inventories.get(key)
        if inventory is None:
            raise conflict(
                f"Unable to allocate inventory: Inventory for '{name_of[key[1]]}' on resource "
                f"provider '{uuid_of[key[0]]}' invalid.",
                code="placement.undefined_code",
            )
        if any(not _fits_units(inventory, amount) for amount in values):
            raise conflict(
                f"Unable to allocate inventory: Unable to create allocation for "
                f"'{name_of[key[1]]}' on resource provider '{uuid_of[key[0]]}'. The requested "
                "amount would violate inventory constraints.",
                code="placement.undefined_code",
            )

    touched = sorted({provider for provider, _ in delta})
    if touched:
        await session.execute(
            update(ResourceProvider)
            .where(ResourceProvider.id.in_(touched))
            .values(generation=ResourceProvider.generation + 1)
            .execution_options(synchronize_session=False)
        )
    for key in sorted(delta):
        change = delta[key]
        if change == 0 and key not in amounts:
            continue
        statement = update(Inventory).where(
            Inventory.resource_provider_id == key[0], Inventory.resource_class_id == key[1]
        )
        if key in amounts:
            seen = inventories[key]
            statement = statement.where(
                Inventory.min_unit <= min(amounts[key]),
                Inventory.max_unit >= max(amounts[key]),
                Inventory.step_size == seen.step_size,
            )
        if change > 0:
            statement = statement.where(
                Inventory.used + change
                <= (Inventory.total - Inventory.reserved) * Inventory.allocation_ratio
            )
        done = await session.execute(
            statement.values(used=Inventory.used + change).execution_options(
                synchronize_session=False
            )
        )
        if affected(done) != 1:
            raise conflict(
                f"Unable to allocate inventory: Unable to create allocation for "
                f"'{name_of.get(key[1], key[1])}' on resource provider "
                f"'{uuid_of.get(key[0], key[0])}'. The requested amount would exceed the "
                "capacity.",
                code="placement.undefined_code",
            )

    await session.execute(
        delete(Allocation)
        .where(Allocation.consumer_id.in_(consumer_ids))
        .execution_options(synchronize_session=False)
    )
    if new_rows:
        await session.execute(insert(Allocation), new_rows)
    emptied = [ident for ident, c in zip(consumer_ids, claims, strict=True) if not c.allocations]
    if emptied:
        await session.execute(
            delete(Consumer)
            .where(Consumer.id.in_(emptied))
            .execution_options(synchronize_session=False)
        )


async def _consumer(session: AsyncSession, claim: ConsumerClaim) -> int:
    """The consumer's row id, created if new, its generation checked and bumped."""
    row = (
        await session.execute(
            select(Consumer.id, Consumer.generation).where(Consumer.uuid == claim.consumer_uuid)
        )
    ).first()
    checked = claim.generation is not UNCHECKED
    if row is None:
        if checked and claim.generation is not None:
            raise conflict(
                f"consumer generation conflict - expected null but got {claim.generation}",
                code=CONCURRENT_UPDATE,
            )
        now = utcnow()
        result = await session.execute(
            insert(Consumer).values(
                uuid=claim.consumer_uuid,
                project_id=claim.project_id,
                user_id=claim.user_id,
                consumer_type=claim.consumer_type,
                generation=1,
                created_at=now,
                updated_at=now,
            )
        )
        key = cast(CursorResult[Any], result).inserted_primary_key
        assert key is not None
        return int(key[0])
    ident, generation = row
    if checked and claim.generation != generation:
        raise conflict(
            f"consumer generation conflict - expected {generation} but got {claim.generation}",
            code=CONCURRENT_UPDATE,
        )
    values: dict[str, object] = {
        "generation": Consumer.generation + 1,
        "project_id": claim.project_id,
        "user_id": claim.user_id,
    }
    if claim.consumer_type is not None:
        values["consumer_type"] = claim.consumer_type
    done = await session.execute(
        update(Consumer)
        .where(Consumer.id == ident, Consumer.generation == generation)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if affected(done) != 1:
        raise conflict(
            "consumer generation conflict - the consumer's allocations changed while "
            "attempting to allocate. Please retry.",
            code=CONCURRENT_UPDATE,
        )
    return int(ident)


async def _inventories(
    session: AsyncSession, keys: set[tuple[int, int]]
) -> dict[tuple[int, int], Inventory]:
    providers = sorted({provider for provider, _ in keys})
    if not providers:
        return {}
    rows = await session.scalars(
        select(Inventory).where(Inventory.resource_provider_id.in_(providers))
    )
    return {
        (row.resource_provider_id, row.resource_class_id): row
        for row in rows
        if (row.resource_provider_id, row.resource_class_id) in keys
    }


def _fits_units(inventory: Inventory, amount: int) -> bool:
    return inventory.min_unit <= amount <= inventory.max_unit and amount % inventory.step_size == 0
