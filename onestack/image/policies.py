"""Image policy defaults (Glance's personas: admin, project member/reader, image member)."""

from __future__ import annotations

from onestack.core.auth.policy import ADMIN, RuleDefault

OWNER_MEMBER = f"{ADMIN} or (role:member and project_id:%(owner)s)"
OWNER_READER = f"{ADMIN} or (role:reader and project_id:%(owner)s)"
MEMBER_PROJECT = f"{ADMIN} or (role:member and project_id:%(member_id)s)"

RULES = [
    RuleDefault("image:add_image", f"{ADMIN} or (role:member and project_id:%(owner)s)"),
    RuleDefault("image:publicize_image", ADMIN),
    RuleDefault("image:communitize_image", OWNER_MEMBER),
    RuleDefault("image:set_owner", ADMIN),
    RuleDefault("image:modify_image", OWNER_MEMBER),
    RuleDefault("image:delete_image", OWNER_MEMBER),
    RuleDefault("image:upload_image", OWNER_MEMBER),
    RuleDefault("image:download_image", f"{ADMIN} or role:reader"),
    RuleDefault("image:get_images", f"{ADMIN} or role:reader"),
    RuleDefault("image:deactivate", OWNER_MEMBER),
    RuleDefault("image:reactivate", OWNER_MEMBER),
    RuleDefault("image:copy_image", ADMIN),
    RuleDefault("image:add_member", OWNER_MEMBER),
    RuleDefault("image:delete_member", OWNER_MEMBER),
    RuleDefault(
        "image:get_members", f"{OWNER_READER} or (role:reader and project_id:%(member_id)s)"
    ),
    RuleDefault("image:modify_member", MEMBER_PROJECT),
    RuleDefault("image:set_quota", ADMIN),
]
