"""The service catalog as tokens carry it."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from onestack.identity.models import Endpoint, Service


async def load_catalog(session: AsyncSession) -> list[dict[str, Any]]:
    """Every enabled service with its enabled endpoints, URLs not yet substituted."""
    services = (await session.execute(select(Service).where(Service.enabled.is_(True)))).scalars()
    endpoints = (
        await session.execute(select(Endpoint).where(Endpoint.enabled.is_(True)))
    ).scalars()
    by_service: dict[str, list[Endpoint]] = {}
    for endpoint in endpoints:
        by_service.setdefault(endpoint.service_id, []).append(endpoint)
    return [
        {
            "id": service.id,
            "type": service.type,
            "name": service.name,
            "endpoints": [
                {
                    "id": e.id,
                    "interface": e.interface,
                    "region": e.region_id,
                    "region_id": e.region_id,
                    "url": e.url,
                }
                for e in by_service.get(service.id, [])
            ],
        }
        for service in services
    ]


def substitute(catalog: list[dict[str, Any]], project_id: str | None) -> list[dict[str, Any]]:
    """The catalog for one token: ``$(project_id)s`` filled in, or left out when unscoped."""
    result = []
    for service in catalog:
        endpoints = []
        for endpoint in service["endpoints"]:
            url = endpoint["url"]
            if "$(project_id)s" in url or "%(project_id)s" in url:
                if project_id is None:
                    continue
                url = url.replace("$(project_id)s", project_id).replace(
                    "%(project_id)s", project_id
                )
            endpoints.append({**endpoint, "url": url})
        result.append({**service, "endpoints": endpoints})
    return result
