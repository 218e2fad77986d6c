"""Nova's vm_state and task_state values, the API status each shows as, and what an action
leaves a server in."""

from __future__ import annotations

ACTIVE = "active"
BUILDING = "building"
PAUSED = "paused"
SUSPENDED = "suspended"
STOPPED = "stopped"
RESCUED = "rescued"
RESIZED = "resized"
SHELVED_OFFLOADED = "shelved_offloaded"
ERROR = "error"
DELETED = "deleted"
# Deleted with ``reclaim_instance_interval`` set: powered off, restorable until reclaimed.
SOFT_DELETED = "soft-delete"

SCHEDULING = "scheduling"
SPAWNING = "spawning"
DELETING = "deleting"
RESIZE_PREP = "resize_prep"
RESIZE_MIGRATING = "resize_migrating"
RESIZE_FINISH = "resize_finish"
MIGRATING = "migrating"

# The vm_state a successful action leaves a server in.
AFTER_ACTION = {
    "reboot": ACTIVE,
    "stop": STOPPED,
    "start": ACTIVE,
    "pause": PAUSED,
    "unpause": ACTIVE,
    "suspend": SUSPENDED,
    "resume": ACTIVE,
    "rescue": RESCUED,
    "unrescue": ACTIVE,
    "shelve": SHELVED_OFFLOADED,
    "rebuild": ACTIVE,
    "soft_delete": SOFT_DELETED,
    "restore": ACTIVE,
}

# The task_state a server shows while an action runs.
TASK_OF = {
    "reboot": "rebooting",
    "reboot_hard": "rebooting_hard",
    "stop": "powering-off",
    "start": "powering-on",
    "pause": "pausing",
    "unpause": "unpausing",
    "suspend": "suspending",
    "resume": "resuming",
    "rescue": "rescuing",
    "unrescue": "unrescuing",
    "snapshot": "image_snapshot",
    "shelve": "shelving",
    "unshelve": "unshelving",
    "rebuild": "rebuilding",
    "resize": RESIZE_PREP,
    "migrate": RESIZE_PREP,
    "live-migration": MIGRATING,
    "evacuate": "rebuilding",
    "confirmResize": "resize_confirming",
    "revertResize": "resize_reverting",
    "soft_delete": "soft-deleting",
    "restore": "restoring",
}


def status_of(vm_state: str, task_state: str | None) -> str:
    """The API ``status`` of a server (Nova's state → status table)."""
    if vm_state == BUILDING:
        return "BUILD"
    if task_state in ("rebooting",):
        return "REBOOT"
    if task_state in ("rebooting_hard",):
        return "HARD_REBOOT"
    if task_state == "rebuilding":
        return "REBUILD"
    if task_state in (RESIZE_PREP, RESIZE_MIGRATING, RESIZE_FINISH, "resize_reverting"):
        return "RESIZE" if vm_state != RESIZED else "REVERT_RESIZE"
    if task_state == MIGRATING:
        return "MIGRATING"
    if task_state == DELETING:
        return "ACTIVE" if vm_state == ACTIVE else vm_state.upper()
    return {
        ACTIVE: "ACTIVE",
        PAUSED: "PAUSED",
        SUSPENDED: "SUSPENDED",
        STOPPED: "SHUTOFF",
        RESCUED: "RESCUE",
        RESIZED: "VERIFY_RESIZE",
        SHELVED_OFFLOADED: "SHELVED_OFFLOADED",
        "shelved": "SHELVED",
        ERROR: "ERROR",
        DELETED: "DELETED",
        SOFT_DELETED: "SOFT_DELETED",
    }.get(vm_state, "UNKNOWN")
