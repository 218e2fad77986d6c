"""Who may do what: Keystone identities, container ACLs and referrers, as keystoneauth decides.

- A token with the reseller admin role may do anything on any account.
- A token scoped to project P with an operator role (admin, member) owns
  ``AUTH_P``: everything there, ACLs and metadata included (``swift_owner``).
- A reader role in P may read ``AUTH_P``.
- Container ACLs grant others: ``X-Container-Read`` / ``X-Container-Write`` list
  ``project:user`` entries (ids or names, ``*`` for any), and read ACLs may hold
  referrer entries ``.r:*``, ``.r:example.com``, ``.r:-bad.example.com`` and
  ``.rlistings`` (listings for referrer-authorized callers, anonymous included).
- Anyone else is refused: 401 without a token, 403 with one.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlparse

from onestack.core.auth.context import TokenData
from onestack.object.api.errors import SwiftError

RESELLER_PREFIX = "AUTH_"


@dataclass
class Grant:
    """What authorization concluded for one request."""

    owner: bool = False
    reseller: bool = False
    via_acl: bool = False


@dataclass(frozen=True)
class RolePolicy:
    operator_roles: frozenset[str]
    reader_roles: frozenset[str]
    reseller_admin_role: str

    @classmethod
    def from_settings(cls, operator: list[str], reader: list[str], reseller: str) -> RolePolicy:
        return cls(
            frozenset(r.lower() for r in operator),
            frozenset(r.lower() for r in reader),
            reseller.lower(),
        )


def parse_acl(value: str | None) -> tuple[list[str], list[str]]:
    """Split an ACL into referrer rules and group entries (``project:user``, ``.rlistings``)."""
    referrers: list[str] = []
    groups: list[str] = []
    for item in (value or "").split(","):
        item = item.strip()
        if not item:
            continue
        if item.startswith(".r:") or item.startswith(".ref:") or item.startswith(".referrer:"):
            referrers.append(item.split(":", 1)[1])
        else:
            groups.append(item)
    return referrers, groups


def validate_acl(value: str) -> str:
    """A cleaned ACL header value; 400 for entries Swift would reject."""
    cleaned = []
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        if item.startswith("."):
            kind, sep, rest = item.partition(":")
            if kind in (".r", ".ref", ".referer", ".referrer") and sep:
                rest = rest.strip()
                if not rest or rest in ("-", "-*"):
                    raise SwiftError(400, f"Referrer designation {item!r} is not valid.")
                cleaned.append(f".r:{rest}")
            elif item == ".rlistings":
                cleaned.append(item)
            else:
                raise SwiftError(400, f"Unknown designator {item!r} in ACL.")
        else:
            cleaned.append(item)
    return ",".join(cleaned)


def referrer_allowed(referer: str | None, rules: list[str]) -> bool:
    """Whether a Referer header passes referrer rules (later rules override earlier)."""
    allowed = False
    host = urlparse(referer).hostname or "" if referer else ""
    for rule in rules:
        negate = rule.startswith("-")
        pattern = rule[1:] if negate else rule
        if pattern == "*":
            matched = True
        elif pattern.startswith("*") or pattern.startswith("."):
            suffix = pattern.lstrip("*")
            matched = bool(host) and (host.endswith(suffix) or host == suffix.lstrip("."))
        else:
            matched = bool(host) and host == pattern
        if matched:
            allowed = not negate
    return allowed


def project_of(account: str) -> str | None:
    return account[len(RESELLER_PREFIX) :] if account.startswith(RESELLER_PREFIX) else None


def authorize(
    token: TokenData | None,
    policy: RolePolicy,
    account: str,
    *,
    method: str,
    container: str = "",
    obj: str = "",
    acl: str | None = None,
    referer: str | None = None,
) -> Grant:
    """Decide as keystoneauth does; raises 401/403 when the request is refused."""
    referrers, groups = parse_acl(acl)
    reading = method in ("GET", "HEAD")
    by_referrer = bool(acl) and referrer_allowed(referer, referrers)
    by_referrer = by_referrer and (bool(obj) or ".rlistings" in groups)
    if token is None:
        if project_of(account) is not None and by_referrer:
            return Grant(via_acl=True)
        raise SwiftError(401)
    roles = {r.lower() for r in token.role_names}
    if policy.reseller_admin_role in roles:
        return Grant(owner=True, reseller=True)
    if not container and method == "DELETE":
        raise SwiftError(403)
    if groups and _cross_project(token, groups):
        return Grant(via_acl=True)
    if by_referrer:
        return Grant(via_acl=True)
    if project_of(account) != token.project_id or token.project_id is None:
        raise SwiftError(403)
    if roles & policy.operator_roles:
        return Grant(owner=True)
    if roles & policy.reader_roles and reading:
        return Grant()
    if any(role in {g.lower() for g in groups} for role in roles):
        return Grant(via_acl=True)
    raise SwiftError(403)


def _cross_project(token: TokenData, groups: list[str]) -> bool:
    projects = {token.project_id, token.project_name, "*"} - {None}
    users = {token.user_id, token.user_name, "*"} - {None}
    return any(f"{p}:{u}" in groups for p in projects for u in users)


OWNER_ONLY_HEADERS = (
    "x-container-read",
    "x-container-write",
    "x-container-sync-key",
    "x-container-sync-to",
    "x-account-meta-temp-url-key",
    "x-account-meta-temp-url-key-2",
    "x-container-meta-temp-url-key",
    "x-container-meta-temp-url-key-2",
    "x-account-access-control",
)


def strip_owner_headers(headers: dict[str, str]) -> dict[str, str]:
    """What a non-owner may see of an account's or container's headers."""
    return {k: v for k, v in headers.items() if k not in OWNER_ONLY_HEADERS}
