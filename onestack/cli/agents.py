"""``onestack agent KIND --host H``: one agent process that talks to its service over the bus.

Agents reach other services' APIs (images, object storage) through the catalog
when ``ONESTACK_IDENTITY_URL`` and the service password are given.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from typing import Any

from rich.console import Console

from onestack.core import logs
from onestack.core.bus import make_bus
from onestack.core.client import ServiceClient
from onestack.core.config import Settings


def _client(settings: Settings) -> ServiceClient | None:
    if not settings.identity_url:
        return None
    from onestack.cloud import read_or_create_secret

    password = settings.service_password or read_or_create_secret(
        settings.data_dir / "service-password"
    )
    return ServiceClient(settings.identity_url, settings.service_user, password)


def _build(kind: str, args: argparse.Namespace, settings: Settings, bus: Any, client: Any) -> Any:
    if kind == "compute":
        from onestack.compute.agent import ComputeAgent

        return ComputeAgent(settings, bus, host=args.host, driver=args.driver, client=client)
    if kind == "volume":
        from onestack.volume.agent import VolumeAgent, backend_settings

        backend = backend_settings(settings, getattr(args, "backend", None) or "file")
        return VolumeAgent(settings, bus, backend, host=args.host, client=client)
    if kind == "network":
        from onestack.network.agent import NetworkAgent

        return NetworkAgent(settings, bus, host=args.host, client=client)
    from onestack.volume.backup.agent import BackupAgent

    return BackupAgent(settings, bus, host=args.host, client=client)


def run_agent(args: argparse.Namespace, settings: Settings) -> int:
    """Run one agent until Ctrl-C or SIGTERM."""
    name = f"{args.agent}-agent-{args.host or 'local'}"
    logs.configure(settings.data_dir / "logs" / f"{name}.log", level=settings.log_level,
                   verbose=args.verbose)  # fmt: skip
    console = Console(stderr=True)

    async def main() -> int:
        bus = make_bus(settings.bus_url)
        await bus.start()
        client = _client(settings)
        agent = _build(args.agent, args, settings, bus, client)
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stopping.set)
        try:
            await agent.start()
            console.print(f"{args.agent} agent {getattr(agent, 'host', '')} running")
            await stopping.wait()
        finally:
            with contextlib.suppress(Exception):
                await agent.stop()
            if client is not None:
                await client.close()
            await bus.stop()
        logging.getLogger(__name__).info("%s stopped", name)
        return 0

    return asyncio.run(main())
