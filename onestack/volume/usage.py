"""What each block storage resource counts against its project's quota."""

from __future__ import annotations


def volume_usage(type_name: str | None, size: int) -> dict[str, int]:
    """One volume of ``size`` GiB: counted overall and under its type."""
    usage = {"volumes": 1, "gigabytes": size}
    if type_name:
        usage[f"volumes_{type_name}"] = 1
        usage[f"gigabytes_{type_name}"] = size
    return usage


def growth_usage(type_name: str | None, delta: int) -> dict[str, int]:
    """Extending a volume by ``delta`` GiB."""
    usage = {"gigabytes": delta}
    if type_name:
        usage[f"gigabytes_{type_name}"] = delta
    return usage


def snapshot_usage(type_name: str | None, size: int) -> dict[str, int]:
    """One snapshot: counted as a snapshot and in gigabytes (as Cinder does by default)."""
    usage = {"snapshots": 1, "gigabytes": size}
    if type_name:
        usage[f"snapshots_{type_name}"] = 1
        usage[f"gigabytes_{type_name}"] = size
    return usage


def backup_usage(size: int) -> dict[str, int]:
    return {"backups": 1, "backup_gigabytes": size}


def type_usage(type_name: str | None, size: int) -> dict[str, int]:
    """Only the per-type part of one volume (what a retype moves between types)."""
    if not type_name:
        return {}
    return {f"volumes_{type_name}": 1, f"gigabytes_{type_name}": size}
