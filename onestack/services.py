"""The registry of cloud services this build provides, and where each one mounts."""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from onestack.core.bus.base import Bus
from onestack.core.client import ServiceClient
from onestack.core.config import Settings
from onestack.core.service import ServiceUnit


@dataclass(frozen=True)
class ServiceInfo:
    """How a service appears in the catalog and where its code lives."""

    name: str
    type: str
    catalog_name: str
    prefix: str
    version_path: str
    own_port: int
    factory: str
    # More (type, name) catalog entries for the same endpoints (older service types).
    aliases: tuple[tuple[str, str], ...] = ()

    def catalog_types(self) -> list[tuple[str, str]]:
        """Every (type, name) the service is listed under in the catalog."""
        return [(self.type, self.catalog_name), *self.aliases]

    def url(self, base: str, *, mounted: bool = True) -> str:
        """Its catalog URL when the process listens at ``base``."""
        return f"{base}{self.prefix if mounted else ''}{self.version_path}"


REGISTRY: dict[str, ServiceInfo] = {
    "identity": ServiceInfo(
        "identity",
        "identity",
        "keystone",
        "/identity",
        "/v3",
        5000,
        "onestack.identity.unit:IdentityUnit",
    ),
    "network": ServiceInfo(
        "network", "network", "neutron", "/network", "", 9696, "onestack.network.unit:NetworkUnit"
    ),
    "image": ServiceInfo(
        "image", "image", "glance", "/image", "", 9292, "onestack.image.unit:ImageUnit"
    ),
    "volume": ServiceInfo(
        "volume",
        "block-storage",
        "cinderv3",
        "/volume",
        "/v3/%(project_id)s",
        8776,
        "onestack.volume.unit:VolumeUnit",
        aliases=(("volumev3", "cinderv3"),),
    ),
    "object": ServiceInfo(
        "object",
        "object-store",
        "swift",
        "/object",
        "/v1/AUTH_%(project_id)s",
        8080,
        "onestack.object.unit:ObjectUnit",
    ),
    "placement": ServiceInfo(
        "placement",
        "placement",
        "placement",
        "/placement",
        "",
        8778,
        "onestack.placement.unit:PlacementUnit",
    ),
    "compute": ServiceInfo(
        "compute",
        "compute",
        "nova",
        "/compute",
        "/v2.1",
        8774,
        "onestack.compute.unit:ComputeUnit",
    ),
}


def available() -> list[str]:
    """Names of the services this build can run."""
    return list(REGISTRY)


def build(name: str, settings: Settings, bus: Bus | None, client: ServiceClient) -> ServiceUnit:
    """Instantiate the unit of service ``name``; ``client`` is how it calls other services."""
    module_name, _, attr = REGISTRY[name].factory.partition(":")
    factory = getattr(importlib.import_module(module_name), attr)
    unit: ServiceUnit = factory(settings, bus, client)
    return unit
