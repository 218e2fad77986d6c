"""The policy engine over oslo.policy: personas, targets and overrides."""

from __future__ import annotations

import datetime as dt

import pytest

from onestack.core.asgi.errors import Forbidden, Unauthorized
from onestack.core.auth.context import RequestContext, TokenData
from onestack.core.auth.policy import ADMIN_OR_PROJECT_MEMBER, PolicyEngine, RuleDefault

RULES = [
    RuleDefault("thing:create", ADMIN_OR_PROJECT_MEMBER),
    RuleDefault("thing:domain", "role:reader and domain_id:%(target.domain_id)s"),
]


def context(*roles: str, project: str = "p1", domain: str | None = None) -> RequestContext:
    now = dt.datetime.now(dt.UTC)
    token = TokenData(
        user_id="u1",
        user_name="u",
        user_domain_id="default",
        user_domain_name="Default",
        methods=["password"],
        expires_at=now,
        issued_at=now,
        audit_ids=[],
        roles=[{"id": r, "name": r} for r in roles],
        project_id=None if domain else project,
        domain_id=domain,
    )
    return RequestContext(token=token)


def test_member_of_the_project_may_and_others_may_not() -> None:
    engine = PolicyEngine(RULES)
    assert engine.check("thing:create", context("member"), {"project_id": "p1"})
    assert not engine.check("thing:create", context("member"), {"project_id": "p2"})
    assert not engine.check("thing:create", context("reader"), {"project_id": "p1"})
    assert engine.check("thing:create", context("admin"), {"project_id": "p2"})


def test_unset_values_never_match_each_other() -> None:
    engine = PolicyEngine(RULES)
    assert not engine.check("thing:domain", context("reader"), {"target.domain_id": None})
    assert engine.check("thing:domain", context("reader", domain="d1"), {"target.domain_id": "d1"})


def test_enforce_distinguishes_anonymous_from_forbidden() -> None:
    engine = PolicyEngine(RULES)
    with pytest.raises(Unauthorized):
        engine.enforce("thing:create", RequestContext(), {"project_id": "p1"})
    with pytest.raises(Forbidden):
        engine.enforce("thing:create", context("reader"), {"project_id": "p1"})


def test_config_overrides_replace_defaults() -> None:
    engine = PolicyEngine(RULES, overrides={"thing:create": "role:reader"})
    assert engine.check("thing:create", context("reader"), {"project_id": "p9"})
