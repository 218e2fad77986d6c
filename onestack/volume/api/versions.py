"""Version discovery (``GET /`` and ``GET /v3/``) and ``/v3/extensions``."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from onestack.core.asgi.microversion import MicroversionPolicy, Version
from onestack.core.asgi.routing import RouteTable, service_root
from onestack.volume.api.common import enforce, own

routes = RouteTable()

MICROVERSIONS = MicroversionPolicy("volume", Version(3, 0), Version(3, 70))


def _version(request: Request) -> dict[str, Any]:
    return {
        "id": "v3.0",
        "status": "CURRENT",
        "version": str(MICROVERSIONS.maximum),
        "min_version": str(MICROVERSIONS.minimum),
        "updated": "2022-08-31T00:00:00Z",
        "links": [
            {"href": "https://docs.openstack.org/", "rel": "describedby", "type": "text/html"},
            {"href": f"{service_root(request)}/v3/", "rel": "self"},
        ],
        "media-types": [
            {"base": "application/json", "type": "application/vnd.openstack.volume+json;version=3"}
        ],
    }


@routes.get("/")
async def all_versions(request: Request) -> Response:
    """Every API version: 300 Multiple Choices, as Cinder answers its root."""
    return JSONResponse({"versions": [_version(request)]}, status_code=300)


@routes.get("/v3/")
async def v3_version(request: Request) -> Response:
    return JSONResponse({"versions": [_version(request)]})


EXTENSIONS = [
    ("AvailabilityZones", "os-availability-zone", "Describe Availability Zones."),
    ("Backups", "backups", "Backups support."),
    ("QuotaClasses", "os-quota-class-sets", "Quota classes management support."),
    ("Quotas", "os-quota-sets", "Quota management support."),
    ("QoSSpecs", "qos-specs", "QoS specs support."),
    ("Services", "os-services", "Services support."),
    ("SchedulerStats", "scheduler-stats", "Scheduler stats support."),
    ("VolumeActions", "os-volume-actions", "Enable volume actions."),
    ("VolumeTransfer", "os-volume-transfer", "Volume transfer management support."),
    ("VolumeTypeAccess", "os-volume-type-access", "Volume type access support."),
    ("TypesExtraSpecs", "os-types-extra-specs", "Type extra specs support."),
    ("TypesManage", "os-types-manage", "Types manage support."),
    ("VolumeHostAttribute", "os-vol-host-attr", "Expose host as an attribute of a volume."),
    ("VolumeTenantAttribute", "os-vol-tenant-attr", "Expose the internal project_id."),
    ("VolumeMigStatusAttribute", "os-vol-mig-status-attr", "Expose migration_status."),
    ("VolumeImageMetadata", "os-vol-image-meta", "Show image metadata of volumes."),
    ("ExtendedSnapshotAttributes", "os-extended-snapshot-attributes", "Snapshot progress."),
    ("AdminActions", "os-admin-actions", "Enable admin actions."),
    ("SchedulerHints", "OS-SCH-HNT", "Pass arbitrary key/value pairs to the scheduler."),
]


@routes.get("/v3/extensions")
async def list_extensions(request: Request) -> Response:
    enforce(request, "read", own(request))
    return JSONResponse(
        {
            "extensions": [
                {
                    "name": name,
                    "alias": alias,
                    "description": text,
                    "updated": "2013-04-18T00:00:00+00:00",
                    "links": [],
                }
                for name, alias, text in EXTENSIONS
            ]
        }
    )
