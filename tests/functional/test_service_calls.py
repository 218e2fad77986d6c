"""Another service validating tokens through identity, and the catalog-driven service client."""

from __future__ import annotations

from pathlib import Path

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from onestack.core.asgi.app import service_app
from onestack.core.asgi.errors import nova_error
from onestack.core.auth.middleware import TokenMiddleware, request_context
from onestack.core.auth.remote import RemoteTokenValidator
from onestack.core.client import ServiceClient
from onestack.identity.bootstrap import CatalogEntry, bootstrap
from onestack.identity.unit import IdentityUnit
from tests.conftest import ADMIN_PASSWORD, make_settings


async def whoami(request: Request) -> Response:
    context = request_context(request.scope["state"])
    return JSONResponse({"user": context.user_id, "roles": sorted(context.roles)})


async def test_a_service_validates_through_identity_and_forgets_on_revocation(
    tmp_path: Path,
) -> None:
    unit = IdentityUnit(make_settings(tmp_path), None)
    await unit.start()
    validator: RemoteTokenValidator | None = None
    root_routes: list[Mount] = []
    root = service_app("root", root_routes, nova_error)
    transport = httpx.ASGITransport(app=root)
    client = ServiceClient(
        "http://cloud.test/identity/v3", "onestack-service", "service-secret", transport=transport
    )
    validator = RemoteTokenValidator(client, ttl=60)
    widget = service_app(
        "widget",
        [Route("/whoami", whoami)],
        nova_error,
        middleware=[(TokenMiddleware, {"validator": validator})],
    )
    root_routes += [Mount("/identity", app=unit.app), Mount("/widget", app=widget)]
    root.router.routes[:0] = root_routes
    await bootstrap(
        unit.service,
        admin_password=ADMIN_PASSWORD,
        service_password="service-secret",
        catalog=[
            CatalogEntry("identity", "keystone", "http://cloud.test/identity/v3"),
            CatalogEntry("widget", "widget", "http://cloud.test/widget"),
        ],
    )
    http = httpx.AsyncClient(transport=transport, base_url="http://cloud.test")
    try:
        issued = await http.post(
            "/identity/v3/auth/tokens",
            json={
                "auth": {
                    "identity": {
                        "methods": ["password"],
                        "password": {
                            "user": {
                                "name": "admin",
                                "domain": {"id": "default"},
                                "password": ADMIN_PASSWORD,
                            }
                        },
                    },
                    "scope": {"project": {"name": "admin", "domain": {"id": "default"}}},
                }
            },
        )
        token = issued.headers["x-subject-token"]
        answer = await http.get("/widget/whoami", headers={"X-Auth-Token": token})
        assert answer.status_code == 200
        assert answer.json()["roles"] == ["admin", "member", "reader"]
        assert (await http.get("/widget/whoami")).status_code == 401
        unauthorized = await http.get("/widget/whoami", headers={"X-Auth-Token": "nope"})
        assert unauthorized.status_code == 401
        assert unauthorized.json() == {
            "unauthorized": {
                "code": 401,
                "message": "The request you have made requires authentication.",
            }
        }
        # Cached: identity is not asked again for the same token.
        assert (
            await http.get("/widget/whoami", headers={"X-Auth-Token": token})
        ).status_code == 200
        await http.request(
            "DELETE",
            "/identity/v3/auth/tokens",
            headers={"X-Auth-Token": token, "X-Subject-Token": token},
        )
        validator.forget()  # what identity's bus announcement triggers
        assert (
            await http.get("/widget/whoami", headers={"X-Auth-Token": token})
        ).status_code == 401
        # The service client finds services in the catalog with its own token.
        assert await client.endpoint("widget") == "http://cloud.test/widget"
        via_client = await client.request("widget", "GET", "/whoami")
        assert via_client.json()["roles"] == ["admin", "member", "reader", "service"]
    finally:
        await http.aclose()
        await client.close()
        await unit.stop()
