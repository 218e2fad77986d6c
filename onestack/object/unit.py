"""The object service as a unit a process can host: proxy, local storage node, agents."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from onestack.core.auth.remote import RemoteTokenValidator
from onestack.core.bus.base import Bus, Consumer
from onestack.core.client import ServiceClient
from onestack.core.config import Settings
from onestack.core.heartbeat import PeriodicTask
from onestack.object.app import S3Dispatch, build_app
from onestack.object.s3.app import build_s3_app
from onestack.object.service import ObjectService
from onestack.object.storage.backend import NODE_PREFIX
from onestack.object.storage.server import NodeApp


class _Late:
    """An ASGI app that exists once the unit has started."""

    def __init__(self) -> None:
        self.app: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.app is not None, "object service not started"
        await self.app(scope, receive, send)


class ObjectUnit:
    """Swift v1 (and the S3 view) with this process's storage node and background agents."""

    name = "object"

    def __init__(self, settings: Settings, bus: Bus | None, client: ServiceClient):
        self.settings = settings
        self.service = ObjectService(settings)
        self.bus = bus
        self.client = client
        self.validator = RemoteTokenValidator(client)
        self.s3_app, self.s3_auth = build_s3_app(self.service, client)
        self.app: ASGIApp = S3Dispatch(build_app(self.service, self.validator), self.s3_app)
        self._node_app = _Late()
        self.root_mounts: dict[str, ASGIApp] = {NODE_PREFIX: self._node_app, "/s3": self.s3_app}
        self._listeners: list[Consumer] = []
        self.agents: list[PeriodicTask] = []

    async def start(self) -> None:
        self.service.start()
        if self.service.node is not None:
            assert self.service.cluster is not None
            self._node_app.app = NodeApp(self.service.node, self.service.cluster.secret)
        if self.bus is not None:
            self._listeners = [
                await self.validator.listen(self.bus),
                await self.s3_auth.listen(self.bus),
            ]
        if self.settings.object.agents and self.service.node is not None:
            from onestack.object.agents import start_agents

            self.agents = start_agents(self.service, self.settings.object)

    async def stop(self) -> None:
        for agent in self.agents:
            await agent.stop()
        for listener in self._listeners:
            await listener.stop()
        await self.service.stop()
