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

from sqlalchemy import CursorResult, and_, case, delete, insert, literal, or_, select, update
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
                "consumer generation conflict - expected null but the consumer exists (or "
                "another request created it at the same time). Please retry with its generation.",
                code=CONCURRENT_UPDATE,
            ) from None

    await retry_on_deadlock(attempt)


async def _write(session: AsyncSession, plan: _Plan, claims: list[ConsumerClaim]) -> None:
    """One attempt; a new consumer's claim is five statements (providers, consumer, provider
    generations, one conditional update of every inventory involved, allocation rows)."""
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
    consumers = [await _consumer(session, claim) for claim in claims]
    consumer_ids = [ident for ident, _ in consumers]
    existing = [ident for ident, created in consumers if not created]

    delta: dict[tuple[int, int], int] = defaultdict(int)
    if existing:
        old = await session.execute(
            select(
                Allocation.resource_provider_id, Allocation.resource_class_id, Allocation.used
            ).where(Allocation.consumer_id.in_(existing))
        )
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

    touched = sorted({provider for provider, _ in delta})
    if touched:
        await session.execute(
            update(ResourceProvider)
            .where(ResourceProvider.id.in_(touched))
            .values(generation=ResourceProvider.generation + 1)
            .execution_options(synchronize_session=False)
        )
    changes = {key: change for key, change in delta.items() if change or key in amounts}
    if changes and await _claim_inventories(session, changes, amounts) != len(changes):
        raise await _explain_refusal(session, plan, changes, amounts)

    if existing:
        await session.execute(
            delete(Allocation)
            .where(Allocation.consumer_id.in_(existing))
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


async def _claim_inventories(
    session: AsyncSession,
    changes: dict[tuple[int, int], int],
    amounts: dict[tuple[int, int], list[int]],
) -> int:
    """Apply every change of ``used`` in one conditional ``UPDATE``: a row only changes if each
    new allocation against it fits its units and, when it grows, its capacity. Returns how
    many rows changed (all of them, or the transaction must be rolled back)."""
    capacity = (Inventory.total - Inventory.reserved) * Inventory.allocation_ratio
    rows = []
    for (provider, cls), change in sorted(changes.items()):
        condition = [Inventory.resource_provider_id == provider, Inventory.resource_class_id == cls]
        values = amounts.get((provider, cls), [])
        if values:
            condition += [Inventory.min_unit <= min(values), Inventory.max_unit >= max(values)]
            condition += [literal(value) % Inventory.step_size == 0 for value in set(values)]
        if change > 0:
            condition.append(Inventory.used + change <= capacity)
        rows.append((and_(*condition), change))
    done = await session.execute(
        update(Inventory)
        .where(or_(*(condition for condition, _ in rows)))
        .values(used=Inventory.used + case(*rows, else_=0))
        .execution_options(synchronize_session=False)
    )
    return affected(done)


async def _explain_refusal(
    session: AsyncSession,
    plan: _Plan,
    changes: dict[tuple[int, int], int],
    amounts: dict[tuple[int, int], list[int]],
) -> Exception:
    """The 409 for a claim the conditional update refused: which inventory, and why."""
    uuid_of = {ident: uuid for uuid, ident in plan.provider_ids.items()}
    name_of = {ident: name for name, ident in plan.class_ids.items()}

    def where(key: tuple[int, int]) -> str:
        return f"'{name_of.get(key[1])}' on resource provider '{uuid_of.get(key[0])}'"

    found = {
        (row.resource_provider_id, row.resource_class_id): row
        for row in await session.scalars(
            select(Inventory).where(
                Inventory.resource_provider_id.in_(sorted({p for p, _ in changes}))
            )
        )
    }
    for key in sorted(changes):
        row = found.get(key)
        if row is None:
            return conflict(
                f"Unable to allocate inventory: Inventory for {where(key)} invalid.",
                code="placement.undefined_code",
            )
        if not all(_fits_units(row, amount) for amount in amounts.get(key, [])):
            return conflict(
                f"Unable to allocate inventory: Unable to create allocation for {where(key)}. The "
                "requested amount would violate inventory constraints.",
                code="placement.undefined_code",
            )
    refused = next(
        (
            key
            for key in sorted(changes)
            if changes[key] > 0
            and found[key].used + changes[key]
            > (found[key].total - found[key].reserved) * found[key].allocation_ratio
        ),
        min(changes),
    )
    return conflict(
        f"Unable to allocate inventory: Unable to create allocation for {where(refused)}. The "
        "requested amount would exceed the capacity.",
        code="placement.undefined_code",
    )


async def _consumer(session: AsyncSession, claim: ConsumerClaim) -> tuple[int, bool]:
    """The consumer's row id (and whether it is new): created if new (a concurrent creation
    loses on the unique uuid), else its generation checked and bumped."""
    checked = claim.generation is not UNCHECKED
    row = None
    if not (checked and claim.generation is None):
        row = (
            await session.execute(
                select(Consumer.id, Consumer.generation).where(Consumer.uuid == claim.consumer_uuid)
            )
        ).first()
    if row is None:
        if checked and claim.generation is not None:
            raise conflict(
                f"consumer generation conflict - expected null but got {claim.generation}",
                code=CONCURRENT_UPDATE,
            )
        now = utcnow()
        # A concurrent creation of the same consumer fails this insert on the unique uuid;
        # replace_allocations answers that IntegrityError with a 409.
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
        return int(key[0]), True
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
    return int(ident), False


def _fits_units(inventory: Inventory, amount: int) -> bool:
    return inventory.min_unit <= amount <= inventory.max_unit and amount % inventory.step_size == 0
