"""Other services as the caller sees them: images and networks looked up with the caller's
own token, so their visibility rules (private images, other projects' networks) hold."""

from __future__ import annotations

import logging
from typing import Any

import httpx
from starlette.requests import Request

from onestack.compute.api.common import service
from onestack.core.asgi.errors import APIError, BadRequest, Conflict

log = logging.getLogger(__name__)

# Ports per floating IP query (keeps the query string of a long server list short).
FLOATING_BATCH = 100


async def as_caller(
    request: Request, service_type: str, method: str, path: str, **kwargs: Any
) -> httpx.Response:
    """``method path`` on another service with the request's token."""
    token = request.headers.get("x-auth-token", "")
    headers = {"X-Auth-Token": token, **kwargs.pop("headers", {})}
    try:
        return await service(request).client.request(
            service_type, method, path, headers=headers, **kwargs
        )
    except httpx.HTTPError as exc:
        raise APIError(f"The {service_type} service did not answer: {exc}", status=503) from None


async def network_call(request: Request, method: str, path: str, **kwargs: Any) -> Any:
    """``method path`` on the network with the caller's token; its JSON answer, or its
    error as compute's (the network's status and message)."""
    response = await as_caller(request, "network", method, path, **kwargs)
    if response.status_code >= 400:
        try:
            message = response.json()["NeutronError"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text[:200]
        raise APIError(message, status=response.status_code)
    return response.json() if response.content else None


async def image_of(request: Request, image_id: str) -> dict[str, Any]:
    """The image the caller may boot; 400 when unknown or not active."""
    response = await as_caller(request, "image", "GET", f"/v2/images/{image_id}")
    if response.status_code != 200:
        raise BadRequest(f"Image {image_id} could not be found.")
    image: dict[str, Any] = response.json()
    if image.get("status") != "active":
        raise BadRequest(f"Image {image_id} is not active.")
    return image


async def network_of(request: Request, network_id: str) -> dict[str, Any]:
    """A network the caller may use; 400 when unknown."""
    response = await as_caller(request, "network", "GET", f"/v2.0/networks/{network_id}")
    if response.status_code != 200:
        raise BadRequest(f"Network {network_id} could not be found.")
    network: dict[str, Any] = response.json()["network"]
    return network


async def port_of(request: Request, port_id: str) -> dict[str, Any]:
    """A free port of the caller; 400 when unknown, 409 when another device has it."""
    response = await as_caller(request, "network", "GET", f"/v2.0/ports/{port_id}")
    if response.status_code != 200:
        raise BadRequest(f"Port {port_id} could not be found.")
    port: dict[str, Any] = response.json()["port"]
    if port.get("device_id"):
        raise Conflict(f"Port {port_id} is still in use.")
    return port


async def usable_networks(request: Request, project_id: str) -> list[dict[str, Any]]:
    """Networks a server of the project could be put on without naming one: the project's
    own and shared ones, not external."""
    response = await as_caller(request, "network", "GET", "/v2.0/networks")
    if response.status_code != 200:
        return []
    return [
        net
        for net in response.json()["networks"]
        if not net.get("router:external")
        and (net.get("shared") or net.get("project_id", net.get("tenant_id")) == project_id)
    ]


async def security_group_exists(request: Request, name: str) -> bool:
    """Whether the caller has a security group named (or with the id) ``name``."""
    for key in ("name", "id"):
        response = await as_caller(
            request, "network", "GET", "/v2.0/security-groups", params={key: name}
        )
        if response.status_code == 200 and response.json().get("security_groups"):
            return True
    return False


async def floating_ips(request: Request, port_ids: list[str]) -> dict[str, list[str]]:
    """Floating addresses by port, asked of the network in batches (Nova keeps them in its
    network info cache, so lists show them as well as single servers)."""
    found: dict[str, list[str]] = {}
    for start in range(0, len(port_ids), FLOATING_BATCH):
        batch = port_ids[start : start + FLOATING_BATCH]
        try:
            response = await service(request).client.request(
                "network", "GET", "/v2.0/floatingips", params=[("port_id", p) for p in batch]
            )
        except (httpx.HTTPError, APIError) as exc:
            # Server bodies still show their fixed addresses while the network is away.
            log.warning("floating IPs of %d ports not read: %s", len(batch), exc)
            continue
        if response.status_code == 200:
            for ip in response.json().get("floatingips", []):
                found.setdefault(ip["port_id"], []).append(ip["floating_ip_address"])
    return found
