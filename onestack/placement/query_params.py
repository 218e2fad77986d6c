"""Reading placement's filter query parameters — ``resources``, ``required``, ``member_of``,
``in_tree`` and their suffixed forms — into request groups, as each microversion allows."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field

from starlette.requests import Request

from onestack.core.asgi.errors import BadRequest
from onestack.placement.api.common import QUERY_BAD_VALUE, QUERY_MISSING_VALUE, at_least

GROUP_KEY = re.compile(r"^(resources|required|member_of|in_tree)([1-9][0-9]*)?$")
GROUP_KEY_1_33 = re.compile(r"^(resources|required|member_of|in_tree)([a-zA-Z0-9_-]{1,64})?$")


@dataclass
class RequestGroup:
    """What one group of a request asks for, by name.

    ``required`` is an AND of ORs: ``[{A}, {B, C}]`` means A and (B or C). The unsuffixed
    group may be satisfied by several providers of one tree (or sharing providers);
    a suffixed group by exactly one provider.
    """

    suffix: str = ""
    resources: dict[str, int] = field(default_factory=dict)
    required: list[frozenset[str]] = field(default_factory=list)
    forbidden: set[str] = field(default_factory=set)
    member_of: list[frozenset[str]] = field(default_factory=list)
    forbidden_aggs: set[str] = field(default_factory=set)
    in_tree: str | None = None

    @property
    def same_provider(self) -> bool:
        return bool(self.suffix)

    def trait_names(self) -> set[str]:
        return set().union(*self.required, self.forbidden)


def is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def parse_resources(value: str) -> dict[str, int]:
    """``VCPU:2,MEMORY_MB:1024`` → amounts by class; 400 when malformed."""
    form = "?resources=VCPU:2,MEMORY_MB:1024"
    if not value.strip():
        raise BadRequest(
            "Badly formed resources parameter. Expected resources query string parameter "
            f"in form: {form}. Got: empty string."
        )
    result: dict[str, int] = {}
    for item in value.split(","):
        name, colon, amount_text = item.partition(":")
        if not colon or ":" in amount_text:
            raise BadRequest(
                "Badly formed resources parameter. Expected resources query string "
                f"parameter in form: {form}. Got: {item}."
            )
        try:
            amount = int(amount_text)
        except ValueError:
            raise BadRequest(
                f"Requested resource {name} expected positive integer amount. Got: {amount_text}."
            ) from None
        if amount < 1:
            raise BadRequest(f"Requested resource {name} requires amount >= 1. Got: {amount}.")
        result[name] = amount
    return result


def parse_traits(
    value: str, *, allow_forbidden: bool, allow_any: bool
) -> tuple[list[frozenset[str]], set[str]]:
    """One ``required`` value → (AND of OR-sets of traits, forbidden traits)."""
    if value.startswith("in:"):
        if not allow_any:
            raise BadRequest(
                "Invalid query string parameters: The format 'in:HW_CPU_X86_VMX,CUSTOM_MAGIC' "
                f"only supported since microversion 1.39. Got: {value}"
            )
        any_of = {name.strip() for name in value[3:].split(",")}
        if not all(any_of):
            raise BadRequest(
                "Invalid query string parameters: Expected 'required' parameter value of the "
                f"form: in:HW_CPU_X86_VMX,CUSTOM_MAGIC. Got an empty trait in: {value}"
            )
        if any(name.startswith("!") for name in any_of):
            raise BadRequest(
                "Invalid query string parameters: The format 'in:HW_CPU_X86_VMX,CUSTOM_MAGIC' "
                f"does not support forbidden traits. Got: {value}"
            )
        return [frozenset(any_of)], set()
    names = [name.strip() for name in value.split(",")]
    forbidden = {name[1:] for name in names if name.startswith("!")}
    if not all(names) or not all(forbidden):
        form = "HW_CPU_X86_VMX,!CUSTOM_MAGIC" if allow_forbidden else "HW_CPU_X86_VMX,CUSTOM_MAGIC"
        raise BadRequest(
            "Invalid query string parameters: Expected 'required' parameter value of the "
            f"form: {form}. Got an empty trait in: {value}"
        )
    if forbidden and not allow_forbidden:
        raise BadRequest(
            "Invalid query string parameters: Expected 'required' parameter value of the "
            f"form: HW_CPU_X86_VMX,CUSTOM_MAGIC. Got: {value}"
        )
    return [frozenset({name}) for name in names if not name.startswith("!")], forbidden


def parse_required(request: Request, key: str) -> tuple[list[frozenset[str]], set[str]]:
    """Every ``required<suffix>`` value of the request (only the last one before 1.39)."""
    values = request.query_params.getlist(key)
    if not at_least(request, 39):
        values = values[-1:]
    required: list[frozenset[str]] = []
    forbidden: set[str] = set()
    for value in values:
        more, less = parse_traits(
            value, allow_forbidden=at_least(request, 22), allow_any=at_least(request, 39)
        )
        required += more
        forbidden |= less
    return required, forbidden


def parse_member_of(request: Request, key: str) -> tuple[list[frozenset[str]], set[str]]:
    """Every ``member_of<suffix>`` value: (AND of OR-sets of aggregates, forbidden ones)."""
    values = request.query_params.getlist(key)
    if len(values) > 1 and not at_least(request, 24):
        raise BadRequest(f"Multiple {key} parameters are not supported")
    required: list[frozenset[str]] = []
    forbidden: set[str] = set()
    for value in values:
        if "," in value and not value.startswith(("in:", "!in:")):
            raise BadRequest(
                "Multiple values for 'member_of' must be prefixed with the 'in:' or '!in:' "
                f"keyword using the valid microversion. Got: {value}"
            )
        if value.startswith("!"):
            if not at_least(request, 32):
                raise BadRequest(
                    f"Forbidden {key} parameters are not supported in the specified microversion"
                )
            body = value[4:] if value.startswith("!in:") else value[1:]
            members = set(body.split(","))
            forbidden |= members
        else:
            members = set(value[3:].split(",")) if value.startswith("in:") else {value}
            required.append(frozenset(members))
        for member in members:
            if not is_uuid(member):
                raise BadRequest(
                    "Invalid query string parameters: Expected 'member_of' parameter to "
                    f"contain valid UUID(s). Got: {member}"
                )
    return (
        [frozenset(str(uuid.UUID(m)) for m in group) for group in required],
        {str(uuid.UUID(m)) for m in forbidden},
    )


def parse_in_tree(value: str) -> str:
    value = value.strip()
    if not is_uuid(value):
        raise BadRequest(
            "Invalid query string parameters: Expected 'in_tree' parameter to be a format of "
            f"uuid. Got: {value}"
        )
    return str(uuid.UUID(value))


def provider_filter(request: Request) -> RequestGroup:
    """The filters of ``GET /resource_providers`` (one provider must satisfy them all)."""
    group = RequestGroup(suffix="filter")
    params = request.query_params
    if "member_of" in params and at_least(request, 3):
        group.member_of, group.forbidden_aggs = parse_member_of(request, "member_of")
    if "resources" in params and at_least(request, 4):
        group.resources = parse_resources(params["resources"])
    if "in_tree" in params and at_least(request, 14):
        group.in_tree = parse_in_tree(params["in_tree"])
    if "required" in params and at_least(request, 18):
        group.required, group.forbidden = parse_required(request, "required")
    return group


@dataclass
class CandidateRequest:
    """Everything ``GET /allocation_candidates`` asks for."""

    groups: dict[str, RequestGroup]
    limit: int | None = None
    group_policy: str | None = None
    root_required: set[str] = field(default_factory=set)
    root_forbidden: set[str] = field(default_factory=set)
    same_subtrees: list[set[str]] = field(default_factory=list)
    nested_aware: bool = True

    def requested_classes(self) -> set[str]:
        return set().union(*(group.resources for group in self.groups.values()))


def _single(request: Request, name: str) -> str | None:
    values = request.query_params.getlist(name)
    return values[-1] if values else None


def candidate_request(request: Request) -> CandidateRequest:
    """Parse and check the query of ``GET /allocation_candidates`` at its microversion."""
    params = request.query_params
    granular = at_least(request, 25)
    pattern = GROUP_KEY_1_33 if at_least(request, 33) else GROUP_KEY
    allowed = {"resources", "limit", "required", "member_of", "in_tree"}
    allowed |= {"group_policy"} if granular else set()
    allowed |= {"root_required"} if at_least(request, 35) else set()
    allowed |= {"same_subtree"} if at_least(request, 36) else set()
    for key in params:
        match = pattern.match(key)
        known = key in allowed or (granular and match is not None)
        if not known or (key == "limit" and not at_least(request, 16)):
            raise BadRequest(
                f"Invalid query string parameters: Additional properties are not allowed "
                f"('{key}' was unexpected)"
            )
    for key, since in (("required", 17), ("member_of", 21), ("in_tree", 31)):
        if key in params and not at_least(request, since):
            raise BadRequest(
                f"Invalid query string parameters: Additional properties are not allowed "
                f"('{key}' was unexpected)"
            )
    result = CandidateRequest(groups={}, nested_aware=at_least(request, 29))
    limit = _single(request, "limit")
    if limit is not None:
        if not limit.isdigit() or int(limit) < 1:
            raise BadRequest(
                f"Invalid query string parameters: '{limit}' does not match '^[1-9][0-9]*$'"
            )
        result.limit = int(limit)
    policy = _single(request, "group_policy")
    if policy is not None:
        if policy not in ("none", "isolate"):
            raise BadRequest(
                f"Invalid query string parameters: '{policy}' is not one of ['none', 'isolate']"
            )
        result.group_policy = policy
    roots = params.getlist("root_required")
    if len(roots) > 1:
        raise BadRequest(
            "Query parameter 'root_required' may be specified only once.",
            code="placement.query.duplicate_key",
        )
    if roots:
        required, result.root_forbidden = parse_traits(
            roots[0], allow_forbidden=True, allow_any=False
        )
        result.root_required = {name for names in required for name in names}
        clash = result.root_required & result.root_forbidden
        if clash:
            raise BadRequest(
                "Conflicting required and forbidden traits found in root_required: "
                + ", ".join(sorted(clash)),
                code=QUERY_BAD_VALUE,
            )
    for value in params.getlist("same_subtree"):
        suffixes = {part.strip() for part in value.split(",")}
        if "" in suffixes:
            raise BadRequest(
                "Empty string (unsuffixed group) can not be specified in `same_subtree` ",
                code=QUERY_BAD_VALUE,
            )
        result.same_subtrees.append(suffixes)
    _read_groups(request, result, pattern if granular else None)
    _check_groups(request, result)
    return result


def _read_groups(
    request: Request, result: CandidateRequest, pattern: re.Pattern[str] | None
) -> None:
    seen: set[tuple[str, str]] = set()
    for key in request.query_params:
        match = (pattern or GROUP_KEY).match(key)
        if match is None or (pattern is None and match.group(2)):
            continue
        prefix, suffix = match.group(1), match.group(2) or ""
        if (prefix, suffix) in seen:
            continue
        seen.add((prefix, suffix))
        group = result.groups.setdefault(suffix, RequestGroup(suffix=suffix))
        if prefix == "resources":
            group.resources = parse_resources(request.query_params.getlist(key)[-1])
        elif prefix == "required":
            group.required, group.forbidden = parse_required(request, key)
        elif prefix == "member_of":
            group.member_of, group.forbidden_aggs = parse_member_of(request, key)
        else:
            group.in_tree = parse_in_tree(request.query_params.getlist(key)[-1])


def _check_groups(request: Request, result: CandidateRequest) -> None:
    groups = result.groups
    if at_least(request, 36):
        resourceless = {suffix for suffix, group in groups.items() if not group.resources}
        if len(resourceless) == len(groups):
            raise BadRequest(
                "There must be at least one resources or resources[$S] parameter.",
                code=QUERY_MISSING_VALUE,
            )
        in_subtrees = set().union(*result.same_subtrees)
        bad = sorted(suffix for suffix in resourceless if suffix not in in_subtrees)
        if bad:
            raise BadRequest(
                "Resourceless suffixed group request should be specified in `same_subtree` "
                f"query param: bad group(s) - {bad}.",
                code=QUERY_BAD_VALUE,
            )
        unknown = sorted(suffix for suffix in in_subtrees if suffix not in groups)
        if unknown:
            raise BadRequest(
                "Real suffixes should be specified in `same_subtree`: "
                f"{unknown} not found in {list(groups)}.",
                code=QUERY_BAD_VALUE,
            )
    else:
        orphans = [f"required{s}" for s, g in groups.items() if g.required and not g.resources]
        if orphans:
            raise BadRequest(
                "All traits parameters must be associated with resources.  Found the "
                f"following orphaned traits keys: {', '.join(orphans)}"
            )
        orphans = [
            f"member_of{s}"
            for s, g in groups.items()
            if not g.resources and (g.member_of or g.forbidden_aggs)
        ]
        if orphans:
            raise BadRequest(
                "All member_of parameters must be associated with resources. Found the "
                f"following orphaned member_of keys: {', '.join(orphans)}"
            )
        if not groups:
            raise BadRequest(
                "At least one request group (`resources` or `resources{$S}`) is required."
            )
        if not all(group.resources for group in groups.values()):
            raise BadRequest("All request groups must specify resources.")
    if at_least(request, 22):
        clashes = sorted(
            f"required{suffix}: ({', '.join(sorted(any_of))})"
            for suffix, group in groups.items()
            for any_of in group.required
            if all(name in group.forbidden for name in any_of)
        )
        if clashes:
            raise BadRequest(
                "Conflicting required and forbidden traits found in the following traits "
                f"keys: {', '.join(clashes)}"
            )
    if result.group_policy is None and sum(g.same_provider for g in groups.values()) > 1:
        raise BadRequest(
            'The "group_policy" parameter is required when specifying more than one '
            '"resources{N}" parameter.'
        )
