"""Placement response bodies, in the shape each microversion documents."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from onestack.placement.api.common import at_least, mount_path
from onestack.placement.models import Inventory

INVENTORY_FIELDS = ("total", "reserved", "min_unit", "max_unit", "step_size", "allocation_ratio")


def provider_view(
    request: Request,
    uuid: str,
    name: str,
    generation: int,
    parent_uuid: str | None,
    root_uuid: str,
) -> dict[str, Any]:
    """A resource provider with its links (which depend on the microversion)."""
    base = f"{mount_path(request)}/resource_providers/{uuid}"
    links = [{"rel": "self", "href": base}]
    if at_least(request, 1):
        links.append({"rel": "aggregates", "href": f"{base}/aggregates"})
    links += [
        {"rel": "inventories", "href": f"{base}/inventories"},
        {"rel": "usages", "href": f"{base}/usages"},
    ]
    if at_least(request, 6):
        links.append({"rel": "traits", "href": f"{base}/traits"})
    if at_least(request, 11):
        links.append({"rel": "allocations", "href": f"{base}/allocations"})
    body: dict[str, Any] = {"uuid": uuid, "name": name, "generation": generation, "links": links}
    if at_least(request, 14):
        body["parent_provider_uuid"] = parent_uuid
        body["root_provider_uuid"] = root_uuid
    return body


def inventory_view(inventory: Inventory) -> dict[str, Any]:
    return {name: getattr(inventory, name) for name in INVENTORY_FIELDS}


def resource_class_view(request: Request, name: str) -> dict[str, Any]:
    href = f"{mount_path(request)}/resource_classes/{name}"
    return {"name": name, "links": [{"rel": "self", "href": href}]}
