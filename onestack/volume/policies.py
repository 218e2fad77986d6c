"""Block storage policy defaults (Cinder's personas: admin, project member and reader)."""

from __future__ import annotations

from onestack.core.auth.policy import (
    ADMIN,
    ADMIN_OR_PROJECT_MEMBER,
    ADMIN_OR_PROJECT_READER,
    RuleDefault,
)

RULES = [
    # Volumes, snapshots, backups, attachments, transfers: the owning project's members.
    RuleDefault("volume:read", ADMIN_OR_PROJECT_READER),
    RuleDefault("volume:write", ADMIN_OR_PROJECT_MEMBER),
    # Every project's resources at once (all_tenants), host names, reset-status, force-delete.
    RuleDefault("volume:admin", ADMIN),
    # Types, QoS, quota classes, services and pools: the operator's.
    RuleDefault("volume:manage_types", ADMIN),
    RuleDefault("volume:manage_qos", ADMIN),
    RuleDefault("volume:manage_quotas", ADMIN),
    RuleDefault("volume:services", ADMIN),
]
