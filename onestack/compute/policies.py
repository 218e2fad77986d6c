"""Compute policy defaults (Nova's personas: admin, project member and reader)."""

from __future__ import annotations

from onestack.core.auth.policy import (
    ADMIN,
    ADMIN_OR_PROJECT_MEMBER,
    ADMIN_OR_PROJECT_READER,
    RuleDefault,
)

RULES = [
    # Servers, their metadata, tags, actions and consoles: the owning project's members.
    RuleDefault("compute:read", ADMIN_OR_PROJECT_READER),
    RuleDefault("compute:write", ADMIN_OR_PROJECT_MEMBER),
    # Every project's servers (all_tenants), host attributes, zone:host, migrations,
    # evacuate, resetState, external events: the operator's (and the services').
    RuleDefault("compute:admin", ADMIN),
    # Swapping a server's volume for another (Nova's os-volumes-attachments:swap).
    RuleDefault("compute:swap_volume", ADMIN),
    # Creating, changing and sharing flavors.
    RuleDefault("compute:manage_flavors", ADMIN),
    # Key pairs of other users (``?user_id=``).
    RuleDefault("compute:other_users_keypairs", ADMIN),
    # Aggregates, server services, hypervisors, quotas of others: the operator's.
    RuleDefault("compute:manage_hosts", ADMIN),
    RuleDefault("compute:manage_quotas", ADMIN),
]
