"""What a validated token says about the caller, carried with each request."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any


@dataclass
class TokenData:
    """The facts a token establishes: who, in which scope, with which roles, until when."""

    user_id: str
    user_name: str
    user_domain_id: str
    user_domain_name: str
    methods: list[str]
    expires_at: dt.datetime
    issued_at: dt.datetime
    audit_ids: list[str]
    roles: list[dict[str, str]] = field(default_factory=list)
    project_id: str | None = None
    project_name: str | None = None
    project_domain_id: str | None = None
    project_domain_name: str | None = None
    domain_id: str | None = None
    domain_name: str | None = None
    system: bool = False
    app_cred_id: str | None = None
    is_domain: bool = False

    @classmethod
    def from_keystone(cls, body: dict[str, Any]) -> TokenData:
        """Read a Keystone token response body (``{"token": {...}}``)."""
        token = body["token"]
        user = token["user"]
        project = token.get("project") or {}
        domain = token.get("domain") or {}
        return cls(
            user_id=user["id"],
            user_name=user.get("name", ""),
            user_domain_id=user.get("domain", {}).get("id", ""),
            user_domain_name=user.get("domain", {}).get("name", ""),
            methods=list(token.get("methods", [])),
            expires_at=_parse_time(token["expires_at"]),
            issued_at=_parse_time(token.get("issued_at") or token["expires_at"]),
            audit_ids=list(token.get("audit_ids", [])),
            roles=[{"id": r["id"], "name": r["name"]} for r in token.get("roles", [])],
            project_id=project.get("id"),
            project_name=project.get("name"),
            project_domain_id=project.get("domain", {}).get("id"),
            project_domain_name=project.get("domain", {}).get("name"),
            domain_id=domain.get("id"),
            domain_name=domain.get("name"),
            system=bool(token.get("system", {}).get("all")),
            app_cred_id=(token.get("application_credential") or {}).get("id"),
        )

    @property
    def role_names(self) -> list[str]:
        """Names of the roles the token carries, implied roles included."""
        return [role["name"] for role in self.roles]


def _parse_time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass
class RequestContext:
    """The caller of one request; anonymous when no token came with it."""

    request_id: str = ""
    auth_token: str | None = None
    token: TokenData | None = None

    @property
    def authenticated(self) -> bool:
        """Whether a valid token came with the request."""
        return self.token is not None

    @property
    def user_id(self) -> str | None:
        return self.token.user_id if self.token else None

    @property
    def project_id(self) -> str | None:
        return self.token.project_id if self.token else None

    @property
    def roles(self) -> list[str]:
        return self.token.role_names if self.token else []

    @property
    def is_admin(self) -> bool:
        """Admin role in any scope: what the legacy ``is_admin`` check means."""
        return "admin" in self.roles

    @property
    def system_scoped(self) -> bool:
        return bool(self.token and self.token.system)

    def policy_credentials(self) -> dict[str, Any]:
        """The credentials dict oslo.policy rules are checked against."""
        token = self.token
        if token is None:
            return {"roles": [], "user_id": None, "project_id": None}
        return {
            "roles": token.role_names,
            "user_id": token.user_id,
            "user_domain_id": token.user_domain_id,
            "project_id": token.project_id,
            "project_domain_id": token.project_domain_id,
            "domain_id": token.domain_id,
            "system_scope": "all" if token.system else None,
            "is_admin": "admin" in token.role_names,
            "token": {
                "domain": {"id": token.domain_id},
                "project": {"id": token.project_id, "domain": {"id": token.project_domain_id}},
                "user": {"id": token.user_id, "domain": {"id": token.user_domain_id}},
            },
        }
