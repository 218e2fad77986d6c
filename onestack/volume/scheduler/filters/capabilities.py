"""A volume type's extra specs must match the backend's capabilities.

Unscoped keys and ``capabilities:`` keys are matched (``volume_backend_name`` too);
other scopes (``qos:``, ``hw:``...) and ``multiattach`` (checked by the API) are
not capabilities.
"""

from __future__ import annotations

from onestack.core.extra_specs import matches
from onestack.volume.scheduler.state import BackendState, RequestSpec

NOT_CAPABILITIES = {"multiattach", "replication_enabled"}


def passes(backend: BackendState, spec: RequestSpec) -> bool:
    if spec.multiattach and not backend.capabilities.get("multiattach", False):
        return False
    for key, requirement in spec.extra_specs.items():
        scope, _, name = key.rpartition(":")
        if scope and scope != "capabilities":
            continue
        if name in NOT_CAPABILITIES:
            continue
        if name not in backend.capabilities:
            return False
        if not matches(backend.capabilities[name], requirement, bare_is_minimum=True):
            return False
    return True
