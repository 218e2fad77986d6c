"""Version discovery and ``/v2.0/extensions`` (only what is implemented, so clients adapt)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from onestack.core.asgi.errors import NotFound
from onestack.core.asgi.routing import RouteTable, service_root

routes = RouteTable()

EXTENSIONS = {
    "external-net": (
        "Neutron external network",
        "Adds external network attribute to network resource.",
    ),
    "provider": ("Provider Network", "Expose mapping of virtual networks to physical networks"),
    "binding": ("Port Binding", "Expose port bindings of a virtual port to external application"),
    "allowed-address-pairs": ("Allowed Address Pairs", "Provides allowed address pairs"),
    "port-security": ("Port Security", "Provides port security"),
    "security-group": ("security-group", "The security groups extension."),
    "router": (
        "Neutron L3 Router",
        "Router abstraction for basic L3 forwarding between L2 networks",
    ),
    "ext-gw-mode": (
        "Neutron L3 Configurable external gateway mode",
        "Extension of the router abstraction for specifying whether SNAT should occur on the "
        "external gateway",
    ),
    "extraroute": ("Neutron Extra Route", "Extra routes configuration for L3 router"),
    "agent": ("agent", "The agent management extension."),
    "standard-attr-tag": (
        "Tag support for resources with standard attribute",
        "Enables to set tag on resources with standard attribute.",
    ),
    "net-mtu": ("Network MTU", "Provides MTU attribute for a network resource."),
    "quotas": ("Quota management support", "Expose functions for quotas management per project"),
    "project-id": (
        "project_id field enabled",
        "Extension that indicates that project_id field is enabled.",
    ),
    "standard-attr-description": (
        "standard-attr-description",
        "Extension to add descriptions to standard attributes",
    ),
    "standard-attr-timestamp": (
        "Resource timestamps",
        "Adds created_at and updated_at fields to all Neutron resources.",
    ),
    "subnet-external-network": (
        "Subnet external network",
        "Subnets of external networks are readable by every project.",
    ),
    "subnetpool": ("Subnet Pool", "Subnet pools: /v2.0/subnetpools (Neutron's subnet_allocation)."),
    "subnet_allocation": ("Subnet Allocation", "Enables allocation of subnets from a subnet pool"),
    "default-subnetpools": (
        "Default Subnetpools",
        "Provides ability to mark and use a subnetpool as the default.",
    ),
    "standard-attr-revisions": (
        "Resource revision numbers",
        "This extension will display the revision number of neutron resources.",
    ),
}


def _extension(alias: str) -> dict[str, object]:
    name, description = EXTENSIONS[alias]
    return {
        "alias": alias,
        "name": name,
        "description": description,
        "links": [],
        "updated": "2026-11-22T00:00:00-00:00",
    }


@routes.get("/")
async def versions(request: Request) -> Response:
    href = f"{service_root(request)}/v2.0/"
    return JSONResponse(
        {
            "versions": [
                {"id": "v2.0", "status": "CURRENT", "links": [{"rel": "self", "href": href}]}
            ]
        }
    )


@routes.get("/v2.0")
async def version(request: Request) -> Response:
    href = f"{service_root(request)}/v2.0/"
    return JSONResponse(
        {
            "resources": [
                {
                    "name": name,
                    "collection": f"{name}s",
                    "links": [{"rel": "self", "href": f"{href}{name}s"}],
                }
                for name in (
                    "network",
                    "subnet",
                    "subnetpool",
                    "port",
                    "security-group",
                    "security-group-rule",
                    "router",
                    "floatingip",
                )
            ]
        }
    )


routes.get("/v2.0/")(version)


@routes.get("/v2.0/extensions")
async def extensions(request: Request) -> Response:
    return JSONResponse({"extensions": [_extension(alias) for alias in EXTENSIONS]})


@routes.get("/v2.0/extensions/{alias}")
async def extension(request: Request) -> Response:
    alias = request.path_params["alias"]
    if alias not in EXTENSIONS:
        raise NotFound(f"Extension with alias {alias} does not exist", type="HTTPNotFound")
    return JSONResponse({"extension": _extension(alias)})
