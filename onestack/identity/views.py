"""Identity resources rendered as Keystone's API shows them."""

from __future__ import annotations

import datetime as dt
from typing import Any

from starlette.requests import Request

from onestack.core.asgi.routing import service_root
from onestack.core.auth.context import TokenData
from onestack.identity.models import (
    ApplicationCredential,
    Credential,
    Domain,
    Endpoint,
    Group,
    Project,
    Region,
    Role,
    Service,
    User,
)


def timestamp(value: dt.datetime | None) -> str | None:
    """``YYYY-MM-DDTHH:MM:SS.ffffffZ``: the form every OpenStack client parses."""
    if value is None:
        return None
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def naive_isoformat(value: dt.datetime | None) -> str | None:
    """UTC in isoformat without a zone: how Keystone shows an application credential's expiry."""
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value.isoformat()


def v3_url(request: Request, path: str) -> str:
    """An absolute URL under this identity API's ``/v3``."""
    return f"{service_root(request)}/v3/{path}"


def links(request: Request, path: str) -> dict[str, str]:
    return {"self": v3_url(request, path)}


def collection(request: Request, key: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    """A list response with the links block Keystone returns."""
    url = str(request.url)
    return {key: items, "links": {"self": url, "previous": None, "next": None}}


def domain(request: Request, d: Domain) -> dict[str, Any]:
    return {
        **(d.extra or {}),
        "id": d.id,
        "name": d.name,
        "description": d.description,
        "enabled": d.enabled,
        "tags": [],
        "options": {},
        "links": links(request, f"domains/{d.id}"),
    }


def project(request: Request, p: Project) -> dict[str, Any]:
    return {
        **(p.extra or {}),
        "id": p.id,
        "name": p.name,
        "domain_id": p.domain_id,
        "description": p.description,
        "enabled": p.enabled,
        "parent_id": p.parent_id or p.domain_id,
        "is_domain": False,
        "tags": list(p.tags or []),
        "options": {},
        "links": links(request, f"projects/{p.id}"),
    }


def user(request: Request, u: User) -> dict[str, Any]:
    body: dict[str, Any] = {
        **(u.extra or {}),
        "id": u.id,
        "name": u.name,
        "domain_id": u.domain_id,
        "enabled": u.enabled,
        "password_expires_at": None,
        "options": {},
        "links": links(request, f"users/{u.id}"),
    }
    if u.default_project_id:
        body["default_project_id"] = u.default_project_id
    if u.description:
        body["description"] = u.description
    if u.email:
        body["email"] = u.email
    return body


def group(request: Request, g: Group) -> dict[str, Any]:
    return {
        "id": g.id,
        "name": g.name,
        "domain_id": g.domain_id,
        "description": g.description,
        "links": links(request, f"groups/{g.id}"),
    }


def role(request: Request, r: Role) -> dict[str, Any]:
    return {
        "id": r.id,
        "name": r.name,
        "domain_id": r.domain_id or None,
        "description": r.description or None,
        "options": dict(r.options or {}),
        "links": links(request, f"roles/{r.id}"),
    }


def role_ref(request: Request, r: Role) -> dict[str, Any]:
    return {"id": r.id, "name": r.name, "links": links(request, f"roles/{r.id}")}


def region(request: Request, r: Region) -> dict[str, Any]:
    return {
        "id": r.id,
        "description": r.description,
        "parent_region_id": r.parent_region_id,
        "links": links(request, f"regions/{r.id}"),
    }


def service(request: Request, s: Service) -> dict[str, Any]:
    return {
        "id": s.id,
        "type": s.type,
        "name": s.name,
        "description": s.description,
        "enabled": s.enabled,
        "links": links(request, f"services/{s.id}"),
    }


def endpoint(request: Request, e: Endpoint) -> dict[str, Any]:
    return {
        "id": e.id,
        "interface": e.interface,
        "region": e.region_id,
        "region_id": e.region_id,
        "service_id": e.service_id,
        "url": e.url,
        "enabled": e.enabled,
        "links": links(request, f"endpoints/{e.id}"),
    }


def credential(request: Request, c: Credential) -> dict[str, Any]:
    return {
        "id": c.id,
        "user_id": c.user_id,
        "project_id": c.project_id,
        "type": c.type,
        "blob": c.blob,
        "links": links(request, f"credentials/{c.id}"),
    }


def application_credential(
    request: Request, a: ApplicationCredential, roles: list[Role]
) -> dict[str, Any]:
    return {
        "id": a.id,
        "name": a.name,
        "description": a.description or None,
        "user_id": a.user_id,
        "project_id": a.project_id,
        "expires_at": naive_isoformat(a.expires_at),
        "unrestricted": a.unrestricted,
        "roles": [{"id": r.id, "name": r.name, "domain_id": r.domain_id or None} for r in roles],
        "access_rules": [],
        "links": links(request, f"users/{a.user_id}/application_credentials/{a.id}"),
    }


def token(data: TokenData, catalog: list[dict[str, Any]] | None) -> dict[str, Any]:
    """The body of a token response (issue and validate)."""
    body: dict[str, Any] = {
        "methods": data.methods,
        "user": {
            "id": data.user_id,
            "name": data.user_name,
            "domain": {"id": data.user_domain_id, "name": data.user_domain_name},
            "password_expires_at": None,
        },
        "audit_ids": data.audit_ids,
        "expires_at": timestamp(data.expires_at),
        "issued_at": timestamp(data.issued_at),
    }
    if data.project_id:
        body["project"] = {
            "id": data.project_id,
            "name": data.project_name,
            "domain": {"id": data.project_domain_id, "name": data.project_domain_name},
        }
        body["is_domain"] = False
    elif data.domain_id:
        body["domain"] = {"id": data.domain_id, "name": data.domain_name}
    elif data.system:
        body["system"] = {"all": True}
    if data.project_id or data.domain_id or data.system:
        body["roles"] = list(data.roles)
        if catalog is not None:
            body["catalog"] = catalog
    if data.app_cred_id:
        body["application_credential"] = {"id": data.app_cred_id, "restricted": True}
    return {"token": body}
