"""Room for the size asked: free space on thick backends, free promises on thin ones
(total x max_over_subscription_ratio, less what volumes already hold), as Cinder counts."""

from __future__ import annotations

from onestack.volume.scheduler.state import BackendState, RequestSpec


def passes(backend: BackendState, spec: RequestSpec) -> bool:
    if backend.total_capacity_gb <= 0:
        return False
    if backend.thin:
        ratio = (backend.allocated_capacity_gb + spec.size) / backend.total_capacity_gb
        if ratio > backend.over_subscription:
            return False
        # Real free space must still hold something, even when promises allow more.
        return backend.free_capacity_gb - backend.reserved_gb > 0
    return backend.free_capacity_gb - backend.reserved_gb >= spec.size
