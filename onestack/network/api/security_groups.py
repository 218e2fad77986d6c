"""``/v2.0/security-groups`` and ``/v2.0/security-group-rules``.

Every project has a ``default`` group, made the first time the project needs
one, with Neutron's standard rules: all egress, and ingress from members of
the same group, for IPv4 and IPv6.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import Response

from onestack.core.asgi.errors import BadRequest, Conflict
from onestack.core.asgi.request import json_body
from onestack.core.asgi.routing import RouteTable
from onestack.network.api.common import (
    body_of,
    caller,
    enforce,
    fetch,
    is_admin,
    list_response,
    not_found,
    one,
    quota_held,
    scoped,
    service,
)
from onestack.network.models import Port, SecurityGroup, SecurityGroupRule
from onestack.network.views import iso_time, timestamps

routes = RouteTable()

GROUP_COLUMNS = {
    "id": "id",
    "name": "name",
    "description": "description",
    "tenant_id": "project_id",
    "project_id": "project_id",
    "stateful": "stateful",
    "revision_number": "revision_number",
}
RULE_COLUMNS = {
    "id": "id",
    "security_group_id": "security_group_id",
    "tenant_id": "project_id",
    "project_id": "project_id",
    "direction": "direction",
    "ethertype": "ethertype",
    "protocol": "protocol",
    "port_range_min": "port_range_min",
    "port_range_max": "port_range_max",
    "remote_ip_prefix": "remote_ip_prefix",
    "remote_group_id": "remote_group_id",
}
PROTOCOLS = {
    "tcp": 6,
    "udp": 17,
    "icmp": 1,
    "icmpv6": 58,
    "ipv6-icmp": 58,
    "sctp": 132,
    "dccp": 33,
    "udplite": 136,
    "gre": 47,
    "esp": 50,
    "ah": 51,
    "vrrp": 112,
}
PORTED = {"tcp", "udp", "sctp", "dccp", "udplite", "6", "17", "132", "33", "136"}
ICMP = {"icmp", "icmpv6", "ipv6-icmp", "1", "58"}


def rule_view(row: SecurityGroupRule) -> dict[str, Any]:
    return {
        "id": row.id,
        "security_group_id": row.security_group_id,
        "tenant_id": row.project_id,
        "project_id": row.project_id,
        "direction": row.direction,
        "ethertype": row.ethertype,
        "protocol": row.protocol,
        "port_range_min": row.port_range_min,
        "port_range_max": row.port_range_max,
        "remote_ip_prefix": row.remote_ip_prefix,
        "remote_group_id": row.remote_group_id,
        "remote_address_group_id": None,
        "normalized_cidr": row.remote_ip_prefix,
        "description": row.description,
        "revision_number": row.revision_number,
        "created_at": iso_time(row.created_at),
        "updated_at": iso_time(row.updated_at),
        "belongs_to_default_sg": None,
    }


def group_view(row: SecurityGroup, rules: list[SecurityGroupRule]) -> dict[str, Any]:
    return {
        **timestamps(row),
        "stateful": row.stateful,
        "shared": False,
        "security_group_rules": [rule_view(r) for r in rules],
    }


async def rules_of(
    session: AsyncSession, group_ids: list[str]
) -> dict[str, list[SecurityGroupRule]]:
    rows = await session.execute(
        select(SecurityGroupRule).where(SecurityGroupRule.security_group_id.in_(group_ids))
    )
    found: dict[str, list[SecurityGroupRule]] = {}
    for rule in rows.scalars():
        found.setdefault(rule.security_group_id, []).append(rule)
    return found


def _rule(
    group: SecurityGroup, direction: str, ethertype: str, remote_group_id: str | None = None
) -> SecurityGroupRule:
    return SecurityGroupRule(
        security_group_id=group.id,
        project_id=group.project_id,
        direction=direction,
        ethertype=ethertype,
        remote_group_id=remote_group_id,
        revision_number=0,
    )


async def default_group(session: AsyncSession, project_id: str) -> SecurityGroup:
    """The project's ``default`` group, created with the standard rules when missing."""
    query = select(SecurityGroup).where(
        SecurityGroup.project_id == project_id, SecurityGroup.is_default.is_(True)
    )
    group = (await session.execute(query)).scalars().first()
    if group is not None:
        return group
    group = SecurityGroup(
        project_id=project_id,
        name="default",
        description="Default security group",
        is_default=True,
        stateful=True,
        tags=[],
        revision_number=1,
    )
    session.add(group)
    await session.flush()
    for ethertype in ("IPv4", "IPv6"):
        session.add(_rule(group, "egress", ethertype))
        session.add(_rule(group, "ingress", ethertype, remote_group_id=group.id))
    await session.flush()
    return group


async def ensure_default(request: Request, project_id: str) -> str:
    """The id of ``project_id``'s default group, racing safely with concurrent creators."""
    for _ in range(3):
        try:
            async with service(request).db.session() as session:
                return (await default_group(session, project_id)).id
        except IntegrityError:
            continue
    raise Conflict("Could not create the default security group; try again.")


@routes.post("/v2.0/security-groups")
async def create_group(request: Request) -> Response:
    body = body_of(await json_body(request), "security_group")
    context = caller(request)
    project_id = str(body.get("project_id") or body.get("tenant_id") or context.project_id)
    enforce(request, "create", {"project_id": project_id})
    name = body.get("name", "")
    if not isinstance(name, str) or len(name) > 255:
        raise BadRequest("Invalid input for name.")
    if name == "default":
        raise Conflict(
            "Default security group already exists.", type="SecurityGroupDefaultAlreadyExists"
        )
    await ensure_default(request, project_id)
    network = service(request)
    async with quota_held(request, project_id, "security_group"), network.db.session() as session:
        group = SecurityGroup(
            project_id=project_id,
            name=name,
            description=str(body.get("description", "")),
            stateful=bool(body.get("stateful", True)),
            is_default=False,
            tags=[],
            revision_number=1,
        )
        session.add(group)
        await session.flush()
        rules = []
        for ethertype in ("IPv4", "IPv6"):
            rule = _rule(group, "egress", ethertype)
            session.add(rule)
            rules.append(rule)
        await session.flush()
        result = group_view(group, rules)
    return one("security_group", result, request, 201)


@routes.get("/v2.0/security-groups")
async def list_groups(request: Request) -> Response:
    enforce(request, "read")
    context = caller(request)
    if context.project_id:
        await ensure_default(request, context.project_id)
    query = scoped(select(SecurityGroup), SecurityGroup, request)
    async with service(request).db.session() as session:
        ids = [g.id for g in (await session.execute(query)).scalars()]
        rules = await rules_of(session, ids)
    return await list_response(
        request,
        query,
        SecurityGroup,
        "security_groups",
        lambda row: group_view(row, rules.get(row.id, [])),
        GROUP_COLUMNS,
    )


@routes.get("/v2.0/security-groups/{group_id}")
async def show_group(request: Request) -> Response:
    enforce(request, "read")
    async with service(request).db.session() as session:
        group = await fetch(
            request, session, SecurityGroup, request.path_params["group_id"], "security_group"
        )
        rules = await rules_of(session, [group.id])
        return one("security_group", group_view(group, rules.get(group.id, [])), request)


@routes.put("/v2.0/security-groups/{group_id}")
async def update_group(request: Request) -> Response:
    body = body_of(await json_body(request), "security_group")
    async with service(request).db.session() as session:
        group = await fetch(
            request, session, SecurityGroup, request.path_params["group_id"], "security_group"
        )
        enforce(request, "update", {"project_id": group.project_id})
        if "name" in body:
            if group.is_default and body["name"] != "default":
                raise Conflict(
                    "Updating default security group not allowed.",
                    type="SecurityGroupCannotUpdateDefault",
                )
            if not group.is_default and body["name"] == "default":
                raise Conflict(
                    "Default security group already exists.",
                    type="SecurityGroupDefaultAlreadyExists",
                )
            group.name = str(body["name"])
        if "description" in body:
            group.description = str(body["description"])
        group.revision_number += 1
        await session.flush()
        rules = await rules_of(session, [group.id])
        return one("security_group", group_view(group, rules.get(group.id, [])), request)


@routes.delete("/v2.0/security-groups/{group_id}")
async def delete_group(request: Request) -> Response:
    network = service(request)
    async with network.db.session() as session:
        group = await fetch(
            request, session, SecurityGroup, request.path_params["group_id"], "security_group"
        )
        enforce(request, "delete", {"project_id": group.project_id})
        if group.is_default and not is_admin(request):
            raise Conflict(
                "Removing default security group not allowed.",
                type="SecurityGroupCannotRemoveDefault",
            )
        ports = (await session.execute(select(Port.security_groups))).scalars()
        if any(group.id in (groups or []) for groups in ports):
            raise Conflict(f"Security Group {group.id} in use.", type="SecurityGroupInUse")
        rule_count = await session.scalar(
            select(func.count())
            .select_from(SecurityGroupRule)
            .where(SecurityGroupRule.security_group_id == group.id)
        )
        project_id = group.project_id
        await session.delete(group)
    await network.quotas.release(
        project_id, {"security_group": 1, "security_group_rule": rule_count or 0}
    )
    return Response(status_code=204)


def _check_rule(body: dict[str, Any]) -> dict[str, Any]:
    """The rule's fields, normalised; Neutron's 400s for everything malformed."""
    direction = body.get("direction")
    if direction not in ("ingress", "egress"):
        raise BadRequest(
            f"Invalid input for direction: '{direction}' is not in ['ingress', 'egress']."
        )
    ethertype = body.get("ethertype", "IPv4")
    if ethertype not in ("IPv4", "IPv6"):
        raise BadRequest(f"Invalid input for ethertype: '{ethertype}' is not IPv4 or IPv6.")
    protocol = body.get("protocol")
    if protocol is not None:
        protocol = str(protocol).lower()
        if protocol not in PROTOCOLS and not (protocol.isdigit() and 0 <= int(protocol) <= 255):
            raise BadRequest(
                f"Security group rule protocol {protocol} not supported.",
                type="SecurityGroupRuleInvalidProtocol",
            )
    low, high = body.get("port_range_min"), body.get("port_range_max")
    for value in (low, high):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise BadRequest("Port ranges must be integers.")
    if low is not None or high is not None:
        if protocol in PORTED:
            for value in (low, high):
                if value is not None and not 1 <= value <= 65535:
                    raise BadRequest(
                        f"Invalid value for port {value}.", type="SecurityGroupInvalidPortValue"
                    )
            if low is None or high is None or low > high:
                raise BadRequest(
                    "For TCP/UDP protocols, port_range_min must be <= port_range_max",
                    type="SecurityGroupInvalidPortRange",
                )
        elif protocol in ICMP:
            for field, attr, value in (
                ("type", "port_range_min", low),
                ("code", "port_range_max", high),
            ):
                if value is not None and not 0 <= value <= 255:
                    raise BadRequest(
                        f"Invalid value for ICMP {field} ({attr}) {value}. It must be 0 to 255.",
                        type="SecurityGroupInvalidIcmpValue",
                    )
            if low is None and high is not None:
                raise BadRequest(
                    f"ICMP type (port-range-min) is missing for ICMP code (port-range-max) {high}.",
                    type="SecurityGroupMissingIcmpType",
                )
        else:
            raise BadRequest(
                f"Port ranges are not allowed for protocol {protocol}.",
                type="SecurityGroupInvalidPortRange",
            )
    prefix = body.get("remote_ip_prefix")
    if prefix is not None:
        try:
            network = ipaddress.ip_network(str(prefix), strict=False)
        except ValueError:
            raise BadRequest(
                f"Invalid input for remote_ip_prefix: '{prefix}' is not a valid CIDR."
            ) from None
        if f"IPv{network.version}" != ethertype:
            raise BadRequest(
                f"Conflicting value ethertype {ethertype} for CIDR {prefix}",
                type="SecurityGroupRuleParameterConflict",
            )
        prefix = str(network)
    if prefix is not None and body.get("remote_group_id"):
        raise BadRequest(
            "Only remote_ip_prefix or remote_group_id may be provided.",
            type="SecurityGroupRemoteGroupAndRemoteIpPrefix",
        )
    return {
        "direction": direction,
        "ethertype": ethertype,
        "protocol": protocol,
        "port_range_min": low,
        "port_range_max": high,
        "remote_ip_prefix": prefix,
        "remote_group_id": body.get("remote_group_id"),
        "description": str(body.get("description", "")),
    }


@routes.post("/v2.0/security-group-rules")
async def create_rule(request: Request) -> Response:
    body = body_of(await json_body(request), "security_group_rule")
    fields = _check_rule(body)
    network = service(request)
    async with network.db.session() as session:
        group = await fetch(
            request,
            session,
            SecurityGroup,
            str(body.get("security_group_id", "")),
            "security_group",
        )
        if fields["remote_group_id"]:
            await fetch(
                request, session, SecurityGroup, fields["remote_group_id"], "security_group"
            )
        enforce(request, "create", {"project_id": group.project_id})
        existing = await rules_of(session, [group.id])
        for rule in existing.get(group.id, []):
            same = all(
                getattr(rule, key) == value for key, value in fields.items() if key != "description"
            )
            if same:
                raise Conflict(
                    f"Security group rule already exists. Rule id is {rule.id}.",
                    type="SecurityGroupRuleExists",
                )
        project_id = group.project_id
    async with (
        quota_held(request, project_id, "security_group_rule"),
        network.db.session() as session,
    ):
        rule = SecurityGroupRule(
            security_group_id=group.id, project_id=project_id, revision_number=0, **fields
        )
        session.add(rule)
        await session.flush()
        result = rule_view(rule)
    return one("security_group_rule", result, request, 201)


@routes.get("/v2.0/security-group-rules")
async def list_rules(request: Request) -> Response:
    enforce(request, "read")
    query = scoped(select(SecurityGroupRule), SecurityGroupRule, request)
    return await list_response(
        request, query, SecurityGroupRule, "security_group_rules", rule_view, RULE_COLUMNS
    )


@routes.get("/v2.0/security-group-rules/{rule_id}")
async def show_rule(request: Request) -> Response:
    enforce(request, "read")
    async with service(request).db.session() as session:
        rule = await fetch(
            request,
            session,
            SecurityGroupRule,
            request.path_params["rule_id"],
            "security_group_rule",
        )
        return one("security_group_rule", rule_view(rule), request)


@routes.delete("/v2.0/security-group-rules/{rule_id}")
async def delete_rule(request: Request) -> Response:
    network = service(request)
    async with network.db.session() as session:
        rule = await fetch(
            request,
            session,
            SecurityGroupRule,
            request.path_params["rule_id"],
            "security_group_rule",
        )
        enforce(request, "delete", {"project_id": rule.project_id})
        project_id = rule.project_id
        await session.delete(rule)
    await network.quotas.release(project_id, {"security_group_rule": 1})
    return Response(status_code=204)


async def check_groups(request: Request, session: AsyncSession, group_ids: list[str]) -> None:
    """Every group a port names exists and is the caller's (Neutron's 404 otherwise)."""
    for group_id in group_ids:
        query = scoped(
            select(SecurityGroup.id).where(SecurityGroup.id == group_id), SecurityGroup, request
        )
        if await session.scalar(query) is None:
            raise not_found("security_group", group_id)
