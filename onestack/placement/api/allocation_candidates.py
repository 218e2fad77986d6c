"""``GET /allocation_candidates`` (1.10 on), serialized as each microversion documents."""

from __future__ import annotations

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
    shape = Shape(request, wanted.requested_classes())
    body = {
        "allocation_requests": [
            shape.allocation_request(c, found.uuids, class_names) for c in found.requests
        ],
        "provider_summaries": shape.summaries(found, class_names),
    }
    return json_response(request, body)


class Shape:
    """What the request's microversion puts in the response (decided once per request)."""

    def __init__(self, request: Request, requested: set[str]):
        self.keyed = at_least(request, 12)
        self.mappings = at_least(request, 34)
        self.traits = at_least(request, 17)
        self.every_class = at_least(request, 27)
        self.tree = at_least(request, 29)
        self.requested = requested

    def allocation_request(
        self, candidate: Candidate, uuids: dict[int, str], names: dict[int, str]
    ) -> dict[str, Any]:
        per_provider: dict[str, dict[str, int]] = {}
        for (provider, cls), amount in candidate.amounts.items():
            per_provider.setdefault(uuids[provider], {})[names[cls]] = amount
        if not self.keyed:
            return {
                "allocations": [
                    {"resource_provider": {"uuid": uuid}, "resources": resources}
                    for uuid, resources in per_provider.items()
                ]
            }
        body: dict[str, Any] = {
            "allocations": {uuid: {"resources": res} for uuid, res in per_provider.items()}
        }
        if self.mappings:
            body["mappings"] = {
                suffix: sorted(uuids[p] for p in providers)
                for suffix, providers in candidate.mappings.items()
            }
        return body

    def summaries(self, found: Candidates, names: dict[int, str]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for summary in found.summaries.values():
            resources = {
                names[cls]: {"capacity": capacity, "used": used}
                for cls, (capacity, used) in summary.resources.items()
                if self.every_class or names[cls] in self.requested
            }
            entry: dict[str, Any] = {"resources": resources}
            if self.traits:
                entry["traits"] = sorted(summary.traits)
            if self.tree:
                info = summary.provider
                entry["parent_provider_uuid"] = (
                    found.uuids.get(info.parent_id) if info.parent_id is not None else None
                )
                entry["root_provider_uuid"] = found.uuids.get(info.root_id, info.uuid)
            result[summary.provider.uuid] = entry
        return result
