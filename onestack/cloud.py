"""One onestack process: a bus, the services it hosts, and the root ASGI app that mounts them."""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from onestack import services as registry
from onestack.core.asgi.app import service_app
from onestack.core.asgi.errors import keystone_error
from onestack.core.bus import Bus, make_bus
from onestack.core.client import ServiceClient
from onestack.core.config import Settings
from onestack.core.service import ServiceUnit

log = logging.getLogger(__name__)

Progress = Callable[[str], None]


def read_or_create_secret(path: Path, given: str | None = None) -> str:
    """A secret kept in a 0600 file of the data dir; ``given`` replaces it."""
    if given:
        _write_private(path, given)
        return given
    if path.exists():
        return path.read_text().strip()
    value = secrets.token_urlsafe(18)
    _write_private(path, value)
    return value


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text + "\n")


class ServiceRootSlash:
    """Serves ``/image`` as ``/image/``: clients discover versions at the bare prefix."""

    def __init__(self, app: ASGIApp, prefixes: set[str]):
        self.app = app
        self.prefixes = prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in self.prefixes:
            # The path as the client sent it stays known: signed requests (S3) cover it.
            scope = {
                **scope,
                "path": scope["path"] + "/",
                "raw_path": scope["raw_path"] + b"/",
                "sent_raw_path": scope["raw_path"],
            }
        await self.app(scope, receive, send)


class Cloud:
    """Hosts the enabled services in this process, mounted under their path prefixes."""

    def __init__(self, settings: Settings, *, mounted: bool = True):
        self.settings = settings
        self.mounted = mounted
        wanted = settings.services or registry.available()
        unknown = [name for name in wanted if name not in registry.REGISTRY]
        if unknown:
            raise ValueError(
                f"unknown or not yet available services: {', '.join(unknown)} "
                f"(available: {', '.join(registry.available())})"
            )
        self.names = wanted
        self.bus: Bus = make_bus(settings.bus_url)
        self.units: dict[str, ServiceUnit] = {}
        self.admin_password = ""
        prefixes = {registry.REGISTRY[n].prefix for n in self.names} if mounted else set()
        self._slash_prefixes = prefixes
        self.app = Starlette(
            routes=[], middleware=[Middleware(ServiceRootSlash, prefixes=prefixes)]
        )
        self.client = self._service_client()

    def _service_client(self) -> ServiceClient:
        """How hosted services call others: in memory when identity is in this process."""
        settings = self.settings
        identity_url = settings.identity_url
        transport = None
        if "identity" in self.names:
            root = f"{settings.base_url()}/identity" if self.mounted else settings.base_url()
            identity_url = identity_url or f"{root}/v3"
            transport = httpx.ASGITransport(app=self.app)
        if not identity_url:
            raise ValueError("services without identity need identity_url (ONESTACK_IDENTITY_URL)")
        password = settings.service_password or read_or_create_secret(
            settings.data_dir / "service-password"
        )
        return ServiceClient(identity_url, settings.service_user, password, transport=transport)

    def _routes(self) -> list[Any]:
        async def index(request: Request) -> Response:
            base = str(request.base_url).rstrip("/")
            urls = {n: registry.REGISTRY[n].url(base, mounted=self.mounted) for n in self.names}
            return JSONResponse({"name": "onestack", "services": urls})

        own = service_app("onestack", [Route("/", index)] if self.mounted else [], keystone_error)
        # Paths a service serves beside its prefix (the object store's node API and S3 view).
        extra: list[Any] = [
            Mount(path, app=app)
            for unit in self.units.values()
            for path, app in getattr(unit, "root_mounts", {}).items()
        ]
        self._slash_prefixes.update(mount.path for mount in extra)
        if self.mounted:
            routes: list[Any] = [
                Mount(registry.REGISTRY[n].prefix, app=u.app) for n, u in self.units.items()
            ]
            return [*extra, *routes, Mount("", app=own)]
        # Served alone, a service answers at the root, health and metrics included.
        return [*extra, *[Mount("", app=u.app) for u in self.units.values()]]

    async def start(
        self,
        progress: Progress = lambda step: None,
        *,
        admin_password: str | None = None,
        bootstrap: bool = True,
    ) -> None:
        """Connect the bus, start each service, and bootstrap identity if asked and hosted here."""
        data_dir = self.settings.data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        progress("connecting the message bus")
        await self.bus.start()
        for name in self.names:
            progress(f"starting {name}")
            unit = registry.build(name, self.settings, self.bus, self.client)
            await unit.start()
            self.units[name] = unit
        self.app.router.routes = self._routes()
        if bootstrap and "identity" in self.units:
            progress("bootstrapping identity")
            await self._bootstrap(admin_password)
        elif "identity" not in self.units:
            progress("registering endpoints with identity")
            await self._register_endpoints()

    async def _register_endpoints(self) -> None:
        """Served apart from identity: list this process's services in the catalog.

        Creates the service and its public/internal/admin endpoints through the identity
        API with the service account, or points existing ones at where they now listen.
        """
        region = self.settings.identity.region
        base = self.settings.base_url()
        for name in self.names:
            info = registry.REGISTRY[name]
            url = info.url(base, mounted=self.mounted)
            for service_type, catalog_name in info.catalog_types():
                await self._register_endpoint(service_type, catalog_name, url, region)

    async def _register_endpoint(
        self, service_type: str, catalog_name: str, url: str, region: str
    ) -> None:
        found = await self._identity("GET", f"/services?type={service_type}")
        services = found.json()["services"]
        if services:
            service_id = services[0]["id"]
        else:
            body = {"service": {"type": service_type, "name": catalog_name}}
            created = await self._identity("POST", "/services", json=body)
            service_id = created.json()["service"]["id"]
        listed = await self._identity("GET", f"/endpoints?service_id={service_id}")
        existing = {e["interface"]: e for e in listed.json()["endpoints"]}
        for interface in ("public", "internal", "admin"):
            endpoint = existing.get(interface)
            if endpoint is None:
                body = {
                    "endpoint": {
                        "service_id": service_id,
                        "interface": interface,
                        "url": url,
                        "region_id": region,
                    }
                }
                await self._identity("POST", "/endpoints", json=body)
            elif endpoint["url"] != url:
                body = {"endpoint": {"url": url}}
                await self._identity("PATCH", f"/endpoints/{endpoint['id']}", json=body)

    async def _identity(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = await self.client.request("identity", method, path, **kwargs)
        if response.status_code >= 400:
            raise RuntimeError(
                f"identity refused {method} {path}: {response.status_code} {response.text[:200]}"
            )
        return response

    async def _bootstrap(self, admin_password: str | None) -> None:
        from onestack.identity.bootstrap import CatalogEntry, bootstrap
        from onestack.identity.unit import IdentityUnit

        unit = self.units["identity"]
        assert isinstance(unit, IdentityUnit)
        data_dir = self.settings.data_dir
        self.admin_password = read_or_create_secret(data_dir / "admin-password", admin_password)
        service_password = self.settings.service_password or read_or_create_secret(
            data_dir / "service-password"
        )
        base = self.settings.base_url()
        entries = [
            CatalogEntry(service_type, name, info.url(base, mounted=self.mounted))
            for info in (registry.REGISTRY[n] for n in self.names)
            for service_type, name in info.catalog_types()
        ]
        await bootstrap(
            unit.service,
            admin_password=self.admin_password,
            service_password=service_password,
            catalog=entries,
        )

    async def stop(self) -> None:
        """Stop the services in reverse order, then the bus."""
        for name in reversed(list(self.units)):
            try:
                await self.units[name].stop()
            except Exception:
                log.exception("error while stopping %s", name)
        await self.client.close()
        await self.bus.stop()
