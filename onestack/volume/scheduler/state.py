"""What the scheduler knows about one backend and one request."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class BackendState:
    """A backend (``host@backend``) as its agent last reported it, plus what the database
    says is placed on it."""

    host: str
    availability_zone: str
    capabilities: dict[str, Any]
    allocated_capacity_gb: int = 0
    up: bool = True
    disabled: bool = False

    @property
    def total_capacity_gb(self) -> float:
        return float(self.capabilities.get("total_capacity_gb") or 0)

    @property
    def free_capacity_gb(self) -> float:
        return float(self.capabilities.get("free_capacity_gb") or 0)

    @property
    def reserved_gb(self) -> float:
        return self.total_capacity_gb * int(self.capabilities.get("reserved_percentage", 0)) / 100

    @property
    def thin(self) -> bool:
        return bool(self.capabilities.get("thin_provisioning_support"))

    @property
    def over_subscription(self) -> float:
        return float(self.capabilities.get("max_over_subscription_ratio") or 1.0)

    def virtual_free_gb(self) -> float:
        """What can still be promised: thin backends promise up to total x ratio."""
        if self.thin:
            promised = self.total_capacity_gb * self.over_subscription - self.reserved_gb
            return promised - self.allocated_capacity_gb
        return self.free_capacity_gb - self.reserved_gb


@dataclass
class RequestSpec:
    """One placement decision: a size and the constraints on where it may go."""

    size: int
    extra_specs: dict[str, str] = field(default_factory=dict)
    availability_zone: str | None = None
    multiattach: bool = False
    # A snapshot's or source volume's backend: file copies only happen within one backend.
    source_host: str | None = None
    # Only the extra size (extend): the volume already sits on the backend.
    extending: bool = False
    same_host: list[str] = field(default_factory=list)
    different_host: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, data: dict[str, Any]) -> RequestSpec:
        return cls(
            size=int(data["size"]),
            extra_specs=dict(data.get("extra_specs") or {}),
            availability_zone=data.get("availability_zone"),
            multiattach=bool(data.get("multiattach", False)),
            source_host=data.get("source_host"),
            extending=bool(data.get("extending", False)),
            same_host=list(data.get("same_host") or []),
            different_host=list(data.get("different_host") or []),
        )
