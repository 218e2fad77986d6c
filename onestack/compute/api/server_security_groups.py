"""A server's security groups: ``GET /servers/{id}/os-security-groups`` (the groups of its
ports, in Nova's format) and the ``addSecurityGroup``/``removeSecurityGroup`` actions,
which change every port of the server in the network service (with the caller's token)
and the group names the server shows."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from onestack.compute.api.common import service
from onestack.compute.api.lookups import find_server
from onestack.compute.api.remote import network_call
from onestack.compute.api.server_actions import action
from onestack.compute.models import Instance
from onestack.core.asgi.errors import BadRequest, Conflict, NotFound
from onestack.core.asgi.routing import RouteTable

routes = RouteTable()


def rule_view(rule: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    """An ingress rule as Nova shows it."""
    protocol = rule.get("protocol")
    low, high = rule.get("port_range_min"), rule.get("port_range_max")
    if protocol and low is None:
        low = high = -1
    remote = rule.get("remote_group_id")
    return {
        "id": rule["id"],
        "parent_group_id": rule["security_group_id"],
        "ip_protocol": protocol,
        "from_port": low,
        "to_port": high,
        "group": {"name": names.get(remote, ""), "tenant_id": rule.get("project_id")}
        if remote
        else {},
        "ip_range": {"cidr": rule["remote_ip_prefix"]} if rule.get("remote_ip_prefix") else {},
    }


def group_view(group: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    """A security group as Nova shows it (ingress rules only)."""
    return {
        "id": group["id"],
        "name": group["name"],
        "description": group.get("description", ""),
        "tenant_id": group.get("project_id", group.get("tenant_id")),
        "rules": [
            rule_view(rule, names)
            for rule in group.get("security_group_rules", [])
            if rule.get("direction") == "ingress"
        ],
    }


async def _ports(request: Request, server: Instance) -> list[dict[str, Any]]:
    found = await network_call(request, "GET", "/v2.0/ports", params={"device_id": server.uuid})
    ports: list[dict[str, Any]] = found["ports"]
    return ports


@routes.get("/v2.1/servers/{server_id}/os-security-groups")
async def list_server_groups(request: Request) -> Response:
    async with service(request).db.session() as session:
        server = await find_server(request, session, request.path_params["server_id"])
    ids = sorted({g for port in await _ports(request, server) for g in port["security_groups"]})
    groups = []
    if ids:
        found = await network_call(
            request, "GET", "/v2.0/security-groups", params=[("id", i) for i in ids]
        )
        groups = found["security_groups"]
    names = {group["id"]: group["name"] for group in groups}
    views = [group_view(group, names) for group in groups]
    return JSONResponse(
        {"security_groups": sorted(views, key=lambda g: (g["tenant_id"] or "", g["name"]))}
    )


def _group_name(args: Any) -> str:
    if not isinstance(args, dict):
        raise BadRequest("Missing parameter dict")
    if "name" not in args:
        raise BadRequest("Security group not specified")
    group = args["name"]
    if not isinstance(group, str) or not group.strip():
        raise BadRequest("Security group name cannot be empty")
    return group


async def _group(request: Request, server: Instance, name: str) -> dict[str, Any]:
    """The server's project's group named (or with the id) ``name``; 404 / 409 (several)."""
    for key in ("name", "id"):
        found = await network_call(request, "GET", "/v2.0/security-groups",
                                   params={key: name, "project_id": server.project_id})  # fmt: skip
        groups: list[dict[str, Any]] = found["security_groups"]
        if len(groups) > 1:
            raise Conflict(f"Multiple security groups found matching '{name}'. Use an ID to "
                           "be more specific.")  # fmt: skip
        if groups:
            return groups[0]
    raise NotFound(f"Security group {name} not found for project {server.project_id}.")


async def _set_groups(request: Request, port: dict[str, Any], groups: list[str]) -> None:
    await network_call(request, "PUT", f"/v2.0/ports/{port['id']}",
                       json={"port": {"security_groups": groups}})  # fmt: skip


async def _change(request: Request, server: Instance, name: str, add: bool) -> Response:
    group = await _group(request, server, name)
    ports = await _ports(request, server)
    if not ports:
        raise NotFound(f"instance_id {server.uuid} could not be found as device id on any ports")
    having = [port for port in ports if group["id"] in port["security_groups"]]
    if add and having:
        raise BadRequest(f"Security group {name} is already associated with the instance "
                         f"{server.uuid}")  # fmt: skip
    if not add and not having:
        raise BadRequest(f"Security group {name} not associated with the instance {server.uuid}")
    if add and any(port.get("port_security_enabled") is False for port in ports):
        raise BadRequest("Network requires port_security_enabled and subnet associated in "
                         "order to apply security groups.")  # fmt: skip
    changed: list[dict[str, Any]] = []
    try:
        for port in ports:
            wanted = [g for g in port["security_groups"] if g != group["id"]]
            await _set_groups(request, port, [*wanted, group["id"]] if add else wanted)
            changed.append(port)
    except Exception:
        for port in changed:
            await _set_groups(request, port, port["security_groups"])
        raise
    async with service(request).db.session() as session:
        row = (
            await session.execute(select(Instance).where(Instance.uuid == server.uuid))
        ).scalar_one()
        names = [n for n in (row.security_groups or ["default"]) if n not in (name, group["name"])]
        row.security_groups = [*names, group["name"]] if add else names
    return Response(status_code=202)


@action("addSecurityGroup")
async def add_security_group(request: Request, server: Instance, args: Any) -> Response:
    return await _change(request, server, _group_name(args), add=True)


@action("removeSecurityGroup")
async def remove_security_group(request: Request, server: Instance, args: Any) -> Response:
    return await _change(request, server, _group_name(args), add=False)
