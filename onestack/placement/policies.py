"""Placement policy defaults: admin (or the ``service`` role) for everything, as upstream says;
a project's readers may also read that project's usages."""

from __future__ import annotations

from onestack.core.auth.policy import RuleDefault

ADMIN_OR_SERVICE = "role:admin or role:service"
ADMIN_OR_PROJECT_READER_OR_SERVICE = (
    f"{ADMIN_OR_SERVICE} or (role:reader and project_id:%(project_id)s)"
)

_ACTIONS = {
    "resource_providers": ("list", "create", "show", "update", "delete"),
    "resource_providers:inventories": ("list", "create", "show", "update", "delete"),
    "resource_providers:aggregates": ("list", "update"),
    "resource_providers:traits": ("list", "update", "delete"),
    "resource_providers:usages": ("list",),
    "resource_providers:allocations": ("list",),
    "resource_classes": ("list", "create", "show", "update", "delete"),
    "traits": ("list", "show", "update", "delete"),
    "allocations": ("list", "manage", "update", "delete"),
    "allocation_candidates": ("list",),
    "reshaper": ("reshape",),
}

RULES = [
    RuleDefault(f"placement:{resource}:{action}", ADMIN_OR_SERVICE)
    for resource, actions in _ACTIONS.items()
    for action in actions
] + [RuleDefault("placement:usages", ADMIN_OR_PROJECT_READER_OR_SERVICE)]
