"""Policy enforcement on oslo.policy: OpenStack's rule language and default personas."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from oslo_config import cfg
from oslo_policy import opts, policy

from onestack.core.asgi.errors import Forbidden, Unauthorized
from onestack.core.auth.context import RequestContext

RuleDefault = policy.RuleDefault

# The personas OpenStack's default policies are written in.
ADMIN = "role:admin"
SYSTEM_READER = "role:reader and system_scope:all"
PROJECT_READER = "role:reader and project_id:%(project_id)s"
PROJECT_MEMBER = "role:member and project_id:%(project_id)s"
ADMIN_OR_PROJECT_READER = f"{ADMIN} or ({PROJECT_READER})"
ADMIN_OR_PROJECT_MEMBER = f"{ADMIN} or ({PROJECT_MEMBER})"


class PolicyEngine:
    """Checks rules for one service: its defaults, a policy file, then config overrides."""

    def __init__(
        self,
        defaults: Iterable[policy.RuleDefault],
        *,
        overrides: dict[str, str] | None = None,
        policy_file: Path | None = None,
        enforce_scope: bool = False,
    ):
        conf = cfg.ConfigOpts()
        conf([], project="onestack", default_config_files=[], default_config_dirs=[])
        opts.set_defaults(
            conf,
            policy_file=str(policy_file) if policy_file else None,
            enforce_scope=enforce_scope,
            enforce_new_defaults=True,
        )
        self._enforcer = policy.Enforcer(conf)
        self._enforcer.register_defaults(list(defaults))
        self._enforcer.load_rules()
        if overrides:
            self._enforcer.set_rules(
                policy.Rules.from_dict(overrides), overwrite=False, use_conf=False
            )

    def check(
        self, rule: str, context: RequestContext, target: dict[str, Any] | None = None
    ) -> bool:
        """Whether ``context`` may do ``rule`` on ``target``."""
        creds = _without_none(context.policy_credentials())
        return bool(
            self._enforcer.enforce(rule, _without_none(target or {}), creds, do_raise=False)
        )

    def enforce(
        self, rule: str, context: RequestContext, target: dict[str, Any] | None = None
    ) -> None:
        """Raise 401 for an anonymous caller, 403 when the rule denies the call."""
        if not context.authenticated:
            raise Unauthorized("The request you have made requires authentication.")
        if not self.check(rule, context, target):
            raise Forbidden(f"You are not authorized to perform the requested action: {rule}.")


def _without_none(values: dict[str, Any]) -> dict[str, Any]:
    """Drop unset values: oslo.policy compares ``str(None)``, so a missing domain on both sides
    would otherwise match ``domain_id:%(target.domain_id)s``."""
    return {
        key: _without_none(value) if isinstance(value, dict) else value
        for key, value in values.items()
        if value is not None
    }
