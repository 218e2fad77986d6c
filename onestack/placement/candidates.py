"""Allocation candidates: which providers (or sets of providers) can satisfy a request.

Two ways to the same answer:

* The **direct** way, when there is one request group, no provider trees and no sharing
  providers in the cloud (the common case: flat compute nodes). Then every candidate is
  one provider meeting every condition, so one SQL query with indexed ``EXISTS`` probes and
  a ``LIMIT`` finds them, stopping as soon as it has enough.
* The **general** way for trees, sharing providers (``MISC_SHARES_VIA_AGGREGATE``) and
  granular groups: providers with capacity are fetched per resource class, combined per
  tree ("anchor": the root of the non-sharing tree) within each group, then across
  groups, checking traits, ``group_policy``, ``same_subtree`` and the capacity of the
  combined amounts, as the placement API reference describes.

Both end with provider summaries read for the chosen trees only.
"""

from __future__ import annotations

import itertools
import random
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import BigInteger, String, cast, exists, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from onestack.core.asgi.errors import BadRequest
from onestack.placement.models import (
    Inventory,
    ProviderAggregate,
    ProviderTrait,
    ResourceProvider,
)
from onestack.placement.names import NameTable
from onestack.placement.queries import (
    ProviderFilter,
    UnknownName,
    all_conditions,
    providers_with_capacity,
    resolve_group,
    single_provider_conditions,
)
from onestack.placement.query_params import CandidateRequest, RequestGroup

SHARING_TRAIT = "MISC_SHARES_VIA_AGGREGATE"
# A prime above every provider id (ids are 32-bit), for shuffling them in SQL.
PRIME = 2147483647
CHUNK = 5000


def chunks(ids: Sequence[int], size: int = CHUNK) -> Iterator[list[int]]:
    """``ids`` in slices small enough for any backend's bound-parameter limit."""
    for start in range(0, len(ids), size):
        yield list(ids[start : start + size])


@dataclass
class Candidate:
    """One allocation request: amounts per (provider id, class id), and which providers
    satisfied which group (``mappings``), anchored at the root of one non-sharing tree."""

    anchor: int
    amounts: dict[tuple[int, int], int]
    mappings: dict[str, frozenset[int]]

    def providers(self) -> set[int]:
        return {provider for provider, _ in self.amounts} | set().union(*self.mappings.values())

    def key(self) -> tuple[Any, ...]:
        return (
            frozenset(self.amounts.items()),
            tuple(sorted((suffix, tuple(sorted(ids))) for suffix, ids in self.mappings.items())),
        )


@dataclass
class ProviderInfo:
    id: int
    uuid: str
    parent_id: int | None
    root_id: int


@dataclass
class Summary:
    """What ``provider_summaries`` says about one provider."""

    provider: ProviderInfo
    resources: dict[int, tuple[int, int]] = field(default_factory=dict)  # class → (capacity, used)
    traits: list[str] = field(default_factory=list)


@dataclass
class Candidates:
    requests: list[Candidate]
    summaries: dict[int, Summary]
    uuids: dict[int, str]


@dataclass
class Resolved:
    """The request with names turned into ids, group by group."""

    filters: dict[str, ProviderFilter]
    groups: dict[str, RequestGroup]
    root_required: set[int]
    root_forbidden: set[int]


class CandidateFinder:
    """Finds allocation candidates in one read session."""

    def __init__(
        self,
        session: AsyncSession,
        classes: NameTable,
        traits: NameTable,
        *,
        randomize: bool = False,
    ):
        self.session = session
        self.classes = classes
        self.traits = traits
        self.randomize = randomize
        # Provider id → root provider id of every provider seen.
        self._roots: dict[int, int] = {}

    async def find(self, request: CandidateRequest) -> Candidates:
        resolved = await self._resolve(request)
        if resolved is None:
            return Candidates([], {}, {})
        has_trees, sharing = await self._landscape()
        direct = len(request.groups) == 1 and not request.same_subtrees
        if direct and not has_trees and not sharing:
            chosen, summaries = await self._direct(request, resolved)
        else:
            chosen = await self._general(request, resolved, sharing)
            if not request.nested_aware and has_trees:
                chosen = [c for c in chosen if _one_provider_per_tree(c, self._roots)]
            chosen = self._limit(chosen, request.limit)
            summaries = await self._summaries(chosen, nested=request.nested_aware and has_trees)
        uuids = {ident: summary.provider.uuid for ident, summary in summaries.items()}
        return Candidates(chosen, summaries, uuids)

    async def _rows(self, query: Any) -> Any:
        """Rows of a Core query. Through the session's connection rather than the ORM session:
        the ORM's row processing costs several times the query itself on large results."""
        connection = await self.session.connection()
        return await connection.execute(query)

    async def _column(self, query: Any) -> Any:
        return (await self._rows(query)).scalars()

    # --- names to ids -------------------------------------------------------------------

    async def _resolve(self, request: CandidateRequest) -> Resolved | None:
        filters: dict[str, ProviderFilter] = {}
        try:
            for suffix, group in request.groups.items():
                wanted = await resolve_group(self.session, self.classes, self.traits, group)
                if wanted is None:
                    return None
                filters[suffix] = wanted
            root_ids, missing = await self.traits.ids(
                request.root_required | request.root_forbidden
            )
            if missing:
                raise UnknownName("trait", missing)
        except UnknownName as exc:
            if exc.kind == "trait":
                raise BadRequest(f"No such trait(s): {', '.join(exc.names)}.") from None
            raise BadRequest(
                "Invalid resource class in resources parameter: No such resource class "
                f"{exc.names[0]}."
            ) from None
        return Resolved(
            filters,
            request.groups,
            {root_ids[name] for name in request.root_required},
            {root_ids[name] for name in request.root_forbidden},
        )

    async def _landscape(self) -> tuple[bool, set[int]]:
        """Whether any provider has a parent, and the sharing providers: one round trip."""
        ids, _ = await self.traits.ids([SHARING_TRAIT])
        nested = exists().where(ResourceProvider.parent_provider_id.is_not(None))
        sharing = (
            select(func.aggregate_strings(cast(ProviderTrait.resource_provider_id, String), ","))
            .where(ProviderTrait.trait_id == ids.get(SHARING_TRAIT, -1))
            .scalar_subquery()
        )
        has_trees, listed = (await self._rows(select(nested, sharing))).one()
        return bool(has_trees), {int(ident) for ident in (listed or "").split(",") if ident}

    # --- the direct way -------------------------------------------------------------------

    async def _direct(
        self, request: CandidateRequest, resolved: Resolved
    ) -> tuple[list[Candidate], dict[int, Summary]]:
        """One query: the first (or a random) ``limit`` providers meeting every condition,
        with their inventories and traits for the summaries."""
        [(suffix, wanted)] = resolved.filters.items()
        root_filter = ProviderFilter(
            required=[frozenset({ident}) for ident in sorted(resolved.root_required)],
            forbidden=resolved.root_forbidden,
        )
        conditions = single_provider_conditions(wanted) + single_provider_conditions(root_filter)
        # A random permutation of ids when randomizing: (id * seed) mod a prime > every id.
        order = (
            cast(ResourceProvider.id, BigInteger) * random.randrange(1, PRIME) % PRIME
            if self.randomize
            else ResourceProvider.id
        )
        # Inventories and traits come along as one string each per provider: a thousand
        # rows instead of several thousand, which is what costs most in Python.
        inventories = (
            select(
                func.aggregate_strings(
                    _joined(
                        Inventory.resource_class_id, Inventory.total, Inventory.reserved,
                        Inventory.allocation_ratio, Inventory.used,
                    ),
                    ";",
                )
            )
            .where(Inventory.resource_provider_id == ResourceProvider.id)
            .scalar_subquery()
        )  # fmt: skip
        traits = (
            select(func.aggregate_strings(cast(ProviderTrait.trait_id, String), ","))
            .where(ProviderTrait.resource_provider_id == ResourceProvider.id)
            .scalar_subquery()
        )
        query = select(ResourceProvider.id, ResourceProvider.uuid, inventories, traits).where(
            all_conditions(conditions)
        )
        query = query.order_by(order)
        if request.limit is not None:
            query = query.limit(request.limit)
        summaries: dict[int, Summary] = {}
        trait_lists: dict[int, list[int]] = {}
        for ident, uuid, inventory_list, trait_list in await self._rows(query):
            summary = summaries[ident] = Summary(ProviderInfo(ident, uuid, None, ident))
            for record in (inventory_list or "").split(";"):
                cls, total, reserved, ratio, used = record.split(":")
                capacity = int((int(total) - int(reserved)) * float(ratio))
                summary.resources[int(cls)] = (capacity, int(used))
            trait_lists[ident] = [int(t) for t in (trait_list or "").split(",") if t]
        names = await self.traits.names_of({t for listed in trait_lists.values() for t in listed})
        for ident, listed in trait_lists.items():
            summaries[ident].traits = [names[t] for t in listed if t in names]
        self._roots.update({ident: ident for ident in summaries})
        candidates = [
            Candidate(
                anchor=ident,
                amounts={(ident, cls): amount for cls, amount in wanted.resources.items()},
                mappings={suffix: frozenset({ident})},
            )
            for ident in summaries
        ]
        return candidates, summaries

    # --- the general way ------------------------------------------------------------------

    async def _general(
        self, request: CandidateRequest, resolved: Resolved, sharing: set[int]
    ) -> list[Candidate]:
        self._anchors_of_sharing = await self._sharing_anchors(sharing)
        per_group: dict[str, dict[int, list[Candidate]]] = {}
        for suffix, wanted in resolved.filters.items():
            if resolved.groups[suffix].same_provider:
                found = await self._same_provider_group(suffix, wanted, sharing)
            else:
                found = await self._spread_group(suffix, wanted, sharing)
            if not found:
                return []
            per_group[suffix] = found
        anchors = set.intersection(*(set(found) for found in per_group.values()))
        if resolved.root_required or resolved.root_forbidden:
            anchors = await self._roots_with_traits(
                anchors, resolved.root_required, resolved.root_forbidden
            )
        capacity = await self._capacity(
            {
                p
                for found in per_group.values()
                for cands in found.values()
                for c in cands
                for p, _ in c.amounts
            }
        )
        parents = await self._parents(anchors) if request.same_subtrees else {}
        granular = sum(group.same_provider for group in resolved.groups.values())
        chosen: dict[tuple[Any, ...], Candidate] = {}
        for anchor in sorted(anchors):
            for combo in itertools.product(*(found[anchor] for found in per_group.values())):
                merged = _merge(anchor, combo)
                if request.group_policy == "isolate" and not _isolated(combo, resolved, granular):
                    continue
                if not all(_same_subtree(merged, s, parents) for s in request.same_subtrees):
                    continue
                if _exceeds(merged, capacity):
                    continue
                chosen.setdefault(merged.key(), merged)
        return list(chosen.values())

    async def _same_provider_group(
        self, suffix: str, wanted: ProviderFilter, sharing: set[int]
    ) -> dict[int, list[Candidate]]:
        """Each provider that alone satisfies the group, under its own tree's anchor and, for
        sharing providers, under every tree sharing an aggregate with it."""
        rows = await self._rows(
            select(ResourceProvider.id, ResourceProvider.root_provider_id).where(
                all_conditions(single_provider_conditions(wanted))
            )
        )
        found: dict[int, list[Candidate]] = defaultdict(list)
        for ident, root_id in rows:
            root = root_id or ident
            self._roots[ident] = root
            anchors = {root}
            if ident in sharing and wanted.tree_root is None:
                anchors |= self._anchors_of_sharing.get(ident, set())
            for anchor in anchors:
                found[anchor].append(
                    Candidate(
                        anchor,
                        {(ident, cls): amount for cls, amount in wanted.resources.items()},
                        {suffix: frozenset({ident})},
                    )
                )
        return found

    async def _spread_group(
        self, suffix: str, wanted: ProviderFilter, sharing: set[int]
    ) -> dict[int, list[Candidate]]:
        """Combinations of providers of one tree (plus sharing providers) that together hold
        the group's resources and traits."""
        in_aggs = await self._in_aggregates(wanted.member_of) if wanted.member_of else None
        bad_aggs = (
            await self._in_aggregates([frozenset(wanted.forbidden_aggs)])
            if wanted.forbidden_aggs
            else set()
        )
        by_anchor: dict[int, dict[int, list[int]]] = defaultdict(dict)
        for class_id, amount in sorted(wanted.resources.items()):
            pairs: set[tuple[int, int]] = set()
            for ident, root in await self._rows(
                providers_with_capacity(class_id, amount, wanted.tree_root)
            ):
                self._roots[ident] = root or ident
                pairs.add((ident, root or ident))
                if ident in sharing and wanted.tree_root is None:
                    pairs |= {(ident, a) for a in self._anchors_of_sharing.get(ident, set())}
            for ident, anchor in sorted(pairs):
                if in_aggs is not None and ident not in in_aggs and anchor not in in_aggs:
                    continue
                if ident in bad_aggs or anchor in bad_aggs:
                    continue
                by_anchor[anchor].setdefault(class_id, []).append(ident)
        classes = sorted(wanted.resources)
        viable = {a: per for a, per in by_anchor.items() if all(c in per for c in classes)}
        trait_ids = set().union(*wanted.required, wanted.forbidden)
        traits = await self._traits_of(
            {p for per in viable.values() for ps in per.values() for p in ps}, trait_ids
        )
        found: dict[int, list[Candidate]] = {}
        for anchor, per_class in viable.items():
            options = []
            for providers in itertools.product(*(per_class[c] for c in classes)):
                used = set(providers)
                held = set().union(*(traits.get(p, set()) for p in used))
                if any(traits.get(p, set()) & wanted.forbidden for p in used):
                    continue
                if not all(any_of & held for any_of in wanted.required):
                    continue
                options.append(
                    Candidate(
                        anchor,
                        {
                            (p, c): wanted.resources[c]
                            for p, c in zip(providers, classes, strict=True)
                        },
                        {suffix: frozenset(used)},
                    )
                )
            if options:
                found[anchor] = options
        return found

    async def _sharing_anchors(self, sharing: set[int]) -> dict[int, set[int]]:
        """For each sharing provider, the roots of every tree with a provider in one of its
        aggregates (its own tree included)."""
        if not sharing:
            return {}
        mine = ProviderAggregate.__table__.alias("mine")
        theirs = ProviderAggregate.__table__.alias("theirs")
        rows = await self._rows(
            select(mine.c.resource_provider_id, ResourceProvider.root_provider_id)
            .join(theirs, theirs.c.aggregate_uuid == mine.c.aggregate_uuid)
            .join(ResourceProvider, ResourceProvider.id == theirs.c.resource_provider_id)
            .where(mine.c.resource_provider_id.in_(sorted(sharing)))
        )
        anchors: dict[int, set[int]] = defaultdict(set)
        for ident, root in rows:
            anchors[ident].add(root)
        return anchors

    async def _in_aggregates(self, member_of: list[frozenset[str]]) -> set[int]:
        """Providers in at least one aggregate of every set."""
        result: set[int] | None = None
        for any_of in member_of:
            rows = await self._column(
                select(ProviderAggregate.resource_provider_id).where(
                    ProviderAggregate.aggregate_uuid.in_(sorted(any_of))
                )
            )
            found = set(rows)
            result = found if result is None else result & found
        return result or set()

    async def _traits_of(self, providers: set[int], trait_ids: set[int]) -> dict[int, set[int]]:
        """The traits among ``trait_ids`` that each provider has."""
        held: dict[int, set[int]] = defaultdict(set)
        if not trait_ids or not providers:
            return held
        for part in chunks(sorted(providers)):
            rows = await self._rows(
                select(ProviderTrait.resource_provider_id, ProviderTrait.trait_id).where(
                    ProviderTrait.resource_provider_id.in_(part),
                    ProviderTrait.trait_id.in_(sorted(trait_ids)),
                )
            )
            for provider, trait in rows:
                held[provider].add(trait)
        return held

    async def _roots_with_traits(
        self, roots: set[int], required: set[int], forbidden: set[int]
    ) -> set[int]:
        traits = await self._traits_of(roots, required | forbidden)
        return {
            root
            for root in roots
            if required <= traits.get(root, set()) and not traits.get(root, set()) & forbidden
        }

    async def _inventories(self, providers: set[int]) -> Iterator[tuple[int, int, int, int, int]]:
        """(provider, class, capacity, used, max_unit) of every inventory of ``providers``."""
        found = []
        for part in chunks(sorted(providers)):
            rows = await self._rows(
                select(
                    Inventory.resource_provider_id,
                    Inventory.resource_class_id,
                    Inventory.total,
                    Inventory.reserved,
                    Inventory.allocation_ratio,
                    Inventory.used,
                    Inventory.max_unit,
                ).where(Inventory.resource_provider_id.in_(part))
            )
            for provider, cls, total, reserved, ratio, used, max_unit in rows:
                found.append((provider, cls, int((total - reserved) * ratio), used, max_unit))
        return iter(found)

    async def _capacity(self, providers: set[int]) -> dict[tuple[int, int], tuple[int, int, int]]:
        """(capacity, used, max_unit) per (provider, class) for the final capacity check."""
        return {
            (provider, cls): (capacity, used, max_unit)
            for provider, cls, capacity, used, max_unit in await self._inventories(providers)
        }

    async def _parents(self, roots: set[int]) -> dict[int, int | None]:
        parents: dict[int, int | None] = {}
        for part in chunks(sorted(roots)):
            rows = await self._rows(
                select(ResourceProvider.id, ResourceProvider.parent_provider_id).where(
                    ResourceProvider.root_provider_id.in_(part)
                )
            )
            parents.update({ident: parent for ident, parent in rows})
        return parents

    def _limit(self, chosen: list[Candidate], limit: int | None) -> list[Candidate]:
        if limit is not None and limit < len(chosen):
            return random.sample(chosen, limit) if self.randomize else chosen[:limit]
        if self.randomize:
            random.shuffle(chosen)
        return chosen

    # --- summaries --------------------------------------------------------------------------

    async def _summaries(self, chosen: list[Candidate], *, nested: bool) -> dict[int, Summary]:
        """Every provider of the trees in ``chosen`` (only those used, for old microversions)."""
        used = set().union(*(c.providers() for c in chosen))
        if not used:
            return {}
        infos: dict[int, ProviderInfo] = {}
        if nested:
            roots = {self._roots.get(p, p) for p in used}
            where_column, keys = ResourceProvider.root_provider_id, sorted(roots)
        else:
            where_column, keys = ResourceProvider.id, sorted(used)
        for part in chunks(keys):
            rows = await self._rows(
                select(
                    ResourceProvider.id,
                    ResourceProvider.uuid,
                    ResourceProvider.parent_provider_id,
                    ResourceProvider.root_provider_id,
                ).where(where_column.in_(part))
            )
            for ident, uuid, parent, root in rows:
                infos[ident] = ProviderInfo(ident, uuid, parent, root or ident)
        summaries = {ident: Summary(info) for ident, info in infos.items()}
        for provider, cls, capacity, used_amount, _ in await self._inventories(set(infos)):
            summaries[provider].resources[cls] = (capacity, used_amount)
        for part in chunks(sorted(infos)):
            trait_rows = await self._rows(
                select(ProviderTrait.resource_provider_id, ProviderTrait.trait_id).where(
                    ProviderTrait.resource_provider_id.in_(part)
                )
            )
            pairs = list(trait_rows)
            names = await self.traits.names_of(trait for _, trait in pairs)
            for provider, trait in pairs:
                if trait in names:
                    summaries[provider].traits.append(names[trait])
        return summaries


def _joined(*columns: Any) -> Any:
    """``a:b:c`` of the columns as text, in SQL (``||``, or ``concat`` on MySQL)."""
    text: Any = cast(columns[0], String)
    for column in columns[1:]:
        text = text.concat(":").concat(cast(column, String))
    return text


def _merge(anchor: int, combo: Iterable[Candidate]) -> Candidate:
    amounts: dict[tuple[int, int], int] = defaultdict(int)
    mappings: dict[str, frozenset[int]] = {}
    for part in combo:
        for key, amount in part.amounts.items():
            amounts[key] += amount
        for suffix, providers in part.mappings.items():
            mappings[suffix] = mappings.get(suffix, frozenset()) | providers
    return Candidate(anchor, dict(amounts), mappings)


def _isolated(combo: Sequence[Candidate], resolved: Resolved, granular: int) -> bool:
    """group_policy=isolate: the suffixed groups use as many distinct providers as they are."""
    providers: set[int] = set()
    for part in combo:
        for suffix, ids in part.mappings.items():
            if resolved.groups[suffix].same_provider:
                providers |= ids
    return len(providers) == granular


def _same_subtree(candidate: Candidate, suffixes: set[str], parents: dict[int, int | None]) -> bool:
    """One of the providers satisfying ``suffixes`` is an ancestor (or itself) of all of them."""
    providers = set().union(*(candidate.mappings.get(s, frozenset()) for s in suffixes))
    if len(providers) <= 1:
        return True

    def lineage(ident: int) -> set[int]:
        seen = {ident}
        parent = parents.get(ident)
        while parent is not None and parent not in seen:
            seen.add(parent)
            parent = parents.get(parent)
        return seen

    common = set.intersection(*(lineage(p) for p in providers))
    return bool(common & providers)


def _exceeds(candidate: Candidate, capacity: dict[tuple[int, int], tuple[int, int, int]]) -> bool:
    for key, amount in candidate.amounts.items():
        cap, used, max_unit = capacity[key]
        if used + amount > cap or amount > max_unit:
            return True
    return False


def _one_provider_per_tree(candidate: Candidate, roots: dict[int, int]) -> bool:
    """Before 1.29 a request may not take from two providers of one tree."""
    providers = {p for p, _ in candidate.amounts}
    return len({roots.get(p, p) for p in providers}) == len(providers)
