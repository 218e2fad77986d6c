"""Identity's default policy rules (Keystone's personas: admin, reader, owner, domain reader)."""

from __future__ import annotations

from onestack.core.auth.policy import ADMIN, RuleDefault

SYSTEM_READER = "(role:reader and system_scope:all)"
DOMAIN_READER = "(role:reader and domain_id:%(target.domain_id)s)"
ADMIN_OR_READER = f"{ADMIN} or {SYSTEM_READER} or {DOMAIN_READER}"
OWNER = "user_id:%(target.user.id)s"
SERVICE = "role:service"


def _rules(names: str, check: str) -> list[RuleDefault]:
    return [RuleDefault(f"identity:{name}", check) for name in names.split()]


RULES: list[RuleDefault] = [
    RuleDefault("admin_required", ADMIN),
    RuleDefault("service_role", SERVICE),
    *_rules("s3tokens_validate ec2tokens_validate", f"{ADMIN} or {SERVICE}"),
    *_rules("validate_token check_token", f"{ADMIN} or {SERVICE} or {OWNER}"),
    *_rules("revoke_token", f"{ADMIN} or {OWNER}"),
    *_rules(
        "get_domain",
        f"{ADMIN_OR_READER} or token.project.domain.id:%(target.domain_id)s",
    ),
    *_rules("list_domains", f"{ADMIN} or {SYSTEM_READER} or role:reader"),
    *_rules("create_domain update_domain delete_domain", ADMIN),
    *_rules(
        "get_project",
        f"{ADMIN_OR_READER} or project_id:%(target.project.id)s",
    ),
    *_rules("list_projects", ADMIN_OR_READER),
    *_rules("list_user_projects", f"{ADMIN_OR_READER} or {OWNER}"),
    *_rules("create_project update_project delete_project", ADMIN),
    *_rules(
        "list_project_tags get_project_tag",
        f"{ADMIN_OR_READER} or project_id:%(target.project.id)s",
    ),
    *_rules("update_project_tags create_project_tag delete_project_tag delete_project_tags", ADMIN),
    *_rules("get_user", f"{ADMIN_OR_READER} or {OWNER}"),
    *_rules("list_users", ADMIN_OR_READER),
    *_rules("create_user update_user delete_user", ADMIN),
    *_rules("change_password", f"{ADMIN} or {OWNER}"),
    *_rules("get_group list_groups list_users_in_group check_user_in_group", ADMIN_OR_READER),
    *_rules("list_groups_for_user", f"{ADMIN_OR_READER} or {OWNER}"),
    *_rules(
        "create_group update_group delete_group add_user_to_group remove_user_from_group", ADMIN
    ),
    *_rules("get_role list_roles", f"{ADMIN} or role:reader"),
    *_rules("create_role update_role delete_role", ADMIN),
    *_rules(
        "list_implied_roles get_implied_role list_role_inference_rules", f"{ADMIN} or role:reader"
    ),
    *_rules("create_implied_role delete_implied_role", ADMIN),
    *_rules("list_grants check_grant", ADMIN_OR_READER),
    *_rules("create_grant revoke_grant", ADMIN),
    *_rules("list_role_assignments", ADMIN_OR_READER),
    *_rules("list_registered_limits get_registered_limit", ""),
    *_rules(
        "create_registered_limits update_registered_limit delete_registered_limit "
        "create_limits update_limit delete_limit list_limits",
        ADMIN,
    ),
    *_rules("get_own_limits", "role:reader"),
    *_rules("get_limit", f"{ADMIN} or project_id:%(project_id)s"),
    *_rules("get_region list_regions get_endpoint list_endpoints get_service list_services", ""),
    *_rules(
        "create_region update_region delete_region create_service update_service "
        "delete_service create_endpoint update_endpoint delete_endpoint",
        ADMIN,
    ),
    *_rules(
        "get_credential update_credential delete_credential",
        f"{ADMIN} or user_id:%(target.credential.user_id)s",
    ),
    *_rules("list_credentials", f"{ADMIN} or {SYSTEM_READER} or role:reader"),
    *_rules("create_credential", f"{ADMIN} or user_id:%(target.credential.user_id)s"),
    *_rules(
        "ec2_get_credential ec2_list_credentials ec2_create_credential ec2_delete_credential",
        f"{ADMIN} or {OWNER}",
    ),
    *_rules(
        "get_application_credential list_application_credentials "
        "create_application_credential delete_application_credential",
        f"{ADMIN} or {OWNER}",
    ),
]
