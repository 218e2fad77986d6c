"""Network policy defaults (Neutron's personas: admin, project member/reader)."""

from __future__ import annotations

from onestack.core.auth.policy import ADMIN, ADMIN_OR_PROJECT_MEMBER, RuleDefault

RULES = [
    RuleDefault("network:create", ADMIN_OR_PROJECT_MEMBER),
    RuleDefault("network:update", ADMIN_OR_PROJECT_MEMBER),
    RuleDefault("network:delete", ADMIN_OR_PROJECT_MEMBER),
    RuleDefault("network:admin_attributes", ADMIN),
    RuleDefault("network:read", f"{ADMIN} or role:reader"),
    RuleDefault("network:quota_update", ADMIN),
    RuleDefault("network:agents", ADMIN),
]
