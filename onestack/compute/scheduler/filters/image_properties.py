"""ImagePropertiesFilter: the image's architecture, hypervisor type and mode must be runnable.

Reads ``hw_architecture`` (or ``architecture``), ``img_hv_type`` (or ``hypervisor_type``),
``hw_vm_mode`` (or ``vm_mode``) and ``img_hv_requested_version`` (``>=2000``-style).
"""

from __future__ import annotations

from typing import Any

from onestack.compute.scheduler.filters.base import HostFilter
from onestack.compute.scheduler.state import HostState, RequestSpec
from onestack.core import extra_specs


def _prop(props: dict[str, Any], *names: str) -> str | None:
    for name in names:
        value = props.get(name)
        if value:
            return str(value).lower()
    return None


def _wanted(spec: RequestSpec) -> tuple[str | None, str | None, str | None, str | None]:
    props = spec.image_properties
    return (
        _prop(props, "hw_architecture", "architecture"),
        _prop(props, "img_hv_type", "hypervisor_type"),
        _prop(props, "hw_vm_mode", "vm_mode"),
        _prop(props, "img_hv_requested_version", "hypervisor_version_requires"),
    )


class ImagePropertiesFilter(HostFilter):
    """Hosts that list a supported instance matching what the image requires."""

    run_once_per_request = True

    def applies(self, spec: RequestSpec) -> bool:
        return any(_wanted(spec))

    def passes(self, host: HostState, spec: RequestSpec) -> bool:
        arch, hv_type, vm_mode, version = _wanted(spec)
        if version and not extra_specs.matches(host.hypervisor_version, version):
            return False
        if not (arch or hv_type or vm_mode):
            return True
        for have_arch, have_type, have_mode in host.supported_instances:
            if (
                (not arch or arch == have_arch.lower())
                and (not hv_type or hv_type == have_type.lower())
                and (not vm_mode or vm_mode == have_mode.lower())
            ):
                return True
        return False
