"""``GET /allocation_candidates`` (1.10 on), serialized as each microversion documents."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from onestack.core.asgi.routing import RouteTable
from onestack.placement.api.common import (
    at_least,
    enforce,
    json_response,
    require_version,
    service,
)
from onestack.placement.candidates import Candidate, CandidateFinder, Candidates
from onestack.placement.query_params import candidate_request

routes = RouteTable()


@routes.get("/allocation_candidates")
async def list_candidates(request: Request) -> Response:
    require_version(request, 10)
    enforce(request, "allocation_candidates:list")
    wanted = candidate_request(request)
    placement = service(request)
    async with placement.db.session() as session:
        finder = CandidateFinder(
            session,
            placement.resource_classes,
            placement.traits,
            randomize=placement.settings.placement.randomize_allocation_candidates,
        )
        found = await finder.find(wanted)
    class_names = await placement.resource_classes.names_of(
        {cls for summary in found.summaries.values() for cls in summary.resources}
        | {cls for c in found.requests for _, cls in c.amounts}
    )
    requested = wanted.requested_classes()
    body = {
        "allocation_requests": [
            _allocation_request(request, c, found, class_names) for c in found.requests
        ],
        "provider_summaries": _summaries(request, found, class_names, requested),
    }
    return json_response(request, body)


def _allocation_request(
    request: Request, candidate: Candidate, found: Candidates, names: dict[int, str]
) -> dict[str, Any]:
    per_provider: dict[str, dict[str, int]] = defaultdict(dict)
    for (provider, cls), amount in candidate.amounts.items():
        per_provider[found.uuids[provider]][names[cls]] = amount
    if not at_least(request, 12):
        return {
            "allocations": [
                {"resource_provider": {"uuid": uuid}, "resources": resources}
                for uuid, resources in per_provider.items()
            ]
        }
    body: dict[str, Any] = {
        "allocations": {uuid: {"resources": res} for uuid, res in per_provider.items()}
    }
    if at_least(request, 34):
        body["mappings"] = {
            suffix: sorted(found.uuids[p] for p in providers)
            for suffix, providers in candidate.mappings.items()
        }
    return body


def _summaries(
    request: Request, found: Candidates, names: dict[int, str], requested: set[str]
) -> dict[str, Any]:
    every_class = at_least(request, 27)
    result: dict[str, Any] = {}
    for summary in found.summaries.values():
        resources = {
            names[cls]: {"capacity": capacity, "used": used}
            for cls, (capacity, used) in summary.resources.items()
            if every_class or names[cls] in requested
        }
        entry: dict[str, Any] = {"resources": resources}
        if at_least(request, 17):
            entry["traits"] = sorted(summary.traits)
        if at_least(request, 29):
            info = summary.provider
            entry["parent_provider_uuid"] = (
                found.uuids.get(info.parent_id) if info.parent_id is not None else None
            )
            entry["root_provider_uuid"] = found.uuids.get(info.root_id, info.uuid)
        result[summary.provider.uuid] = entry
    return result
