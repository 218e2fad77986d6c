"""SQL that selects providers: capacity, traits, aggregates and trees, resolved to row ids.

A :class:`ProviderFilter` is one request group in ids; :func:`single_provider_conditions`
turns it into ``WHERE`` conditions on the providers table that one provider must meet
alone. Each condition is an indexed ``EXISTS`` probe, so a query with a ``LIMIT`` stops as
soon as it has found enough providers instead of scanning them all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, literal, not_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from onestack.placement.models import Inventory, ProviderAggregate, ProviderTrait, ResourceProvider
from onestack.placement.names import NameTable
from onestack.placement.query_params import RequestGroup


@dataclass
class ProviderFilter:
    """One request group with names resolved to ids (traits, classes) and root provider ids."""

    resources: dict[int, int] = field(default_factory=dict)
    required: list[frozenset[int]] = field(default_factory=list)
    forbidden: set[int] = field(default_factory=set)
    member_of: list[frozenset[str]] = field(default_factory=list)
    forbidden_aggs: set[str] = field(default_factory=set)
    tree_root: int | None = None


def capacity_conditions(inventory: Any, amount: int) -> list[ColumnElement[bool]]:
    """The inventory row can take ``amount`` more: units, step and capacity."""
    return [
        inventory.min_unit <= amount,
        inventory.max_unit >= amount,
        literal(amount) % inventory.step_size == 0,
        inventory.used + amount
        <= (inventory.total - inventory.reserved) * inventory.allocation_ratio,
    ]


def has_capacity(provider_id: Any, class_id: int, amount: int) -> ColumnElement[bool]:
    return exists().where(
        Inventory.resource_provider_id == provider_id,
        Inventory.resource_class_id == class_id,
        *capacity_conditions(Inventory, amount),
    )


def has_any_trait(provider_id: Any, trait_ids: frozenset[int] | set[int]) -> ColumnElement[bool]:
    return exists().where(
        ProviderTrait.resource_provider_id == provider_id,
        ProviderTrait.trait_id.in_(sorted(trait_ids)),
    )


def in_any_aggregate(
    provider_id: Any, aggregates: frozenset[str] | set[str]
) -> ColumnElement[bool]:
    return exists().where(
        ProviderAggregate.resource_provider_id == provider_id,
        ProviderAggregate.aggregate_uuid.in_(sorted(aggregates)),
    )


def single_provider_conditions(
    wanted: ProviderFilter, provider: Any = ResourceProvider
) -> list[ColumnElement[bool]]:
    """Conditions a provider row must meet to satisfy ``wanted`` by itself."""
    ident: InstrumentedAttribute[int] = provider.id
    conditions: list[ColumnElement[bool]] = []
    if wanted.tree_root is not None:
        conditions.append(provider.root_provider_id == wanted.tree_root)
    for class_id, amount in sorted(wanted.resources.items()):
        conditions.append(has_capacity(ident, class_id, amount))
    for any_of in wanted.required:
        conditions.append(has_any_trait(ident, any_of))
    if wanted.forbidden:
        conditions.append(not_(has_any_trait(ident, wanted.forbidden)))
    for any_of_aggs in wanted.member_of:
        conditions.append(in_any_aggregate(ident, any_of_aggs))
    if wanted.forbidden_aggs:
        conditions.append(not_(in_any_aggregate(ident, wanted.forbidden_aggs)))
    return conditions


def providers_with_capacity(class_id: int, amount: int, tree_root: int | None) -> Any:
    """(provider id, root id) of every provider whose inventory of the class fits ``amount``."""
    query = (
        select(ResourceProvider.id, ResourceProvider.root_provider_id)
        .join(Inventory, Inventory.resource_provider_id == ResourceProvider.id)
        .where(
            Inventory.resource_class_id == class_id,
            *capacity_conditions(Inventory, amount),
        )
    )
    if tree_root is not None:
        query = query.where(ResourceProvider.root_provider_id == tree_root)
    return query


def all_conditions(conditions: list[ColumnElement[bool]]) -> ColumnElement[bool]:
    return and_(True, *conditions)


class UnknownName(Exception):
    """A request named a resource class or trait that does not exist."""

    def __init__(self, kind: str, names: list[str]):
        self.kind = kind
        self.names = names
        super().__init__(", ".join(names))


async def resolve_group(
    session: AsyncSession, classes: NameTable, traits: NameTable, group: RequestGroup
) -> ProviderFilter | None:
    """``group`` in ids; None when its ``in_tree`` provider does not exist (nothing matches).

    Raises :class:`UnknownName` for an unknown resource class or trait.
    """
    class_ids, missing = await classes.ids(group.resources)
    if missing:
        raise UnknownName("resource class", missing)
    trait_ids, missing = await traits.ids(group.trait_names())
    if missing:
        raise UnknownName("trait", missing)
    tree_root = None
    if group.in_tree is not None:
        tree_root = await session.scalar(
            select(ResourceProvider.root_provider_id).where(ResourceProvider.uuid == group.in_tree)
        )
        if tree_root is None:
            return None
    return ProviderFilter(
        resources={class_ids[name]: amount for name, amount in group.resources.items()},
        required=[frozenset(trait_ids[name] for name in any_of) for any_of in group.required],
        forbidden={trait_ids[name] for name in group.forbidden},
        member_of=list(group.member_of),
        forbidden_aggs=set(group.forbidden_aggs),
        tree_root=tree_root,
    )
