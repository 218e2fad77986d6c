"""Running processes: the all-in-one cloud and single services, on uvicorn."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import Coroutine
from typing import Any

import uvicorn
import uvloop
from rich.console import Console

from onestack.cli.clientfiles import CLOUD_NAME, write_client_files
from onestack.cloud import Cloud
from onestack.core import logs
from onestack.core.config import Settings
from onestack.core.memory import freeze_startup_objects


def run_server_loop(main: Coroutine[Any, Any, int]) -> int:
    """Run a server's ``main`` on uvloop: its C socket transports cost a fraction of the
    standard loop's per received or sent chunk (uvicorn only picks uvloop itself when it
    owns the loop)."""
    with (
        contextlib.suppress(KeyboardInterrupt),
        asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner,
    ):
        return runner.run(main)
    return 0


def _server(app: object, settings: Settings) -> uvicorn.Server:
    config = uvicorn.Config(
        app,  # type: ignore[arg-type]
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        lifespan="off",
        server_header=False,
        timeout_graceful_shutdown=5,
    )
    return uvicorn.Server(config)


async def _serve_until_stopped(cloud: Cloud, settings: Settings, on_ready: object = None) -> int:
    server = _server(cloud.app, settings)
    task = asyncio.create_task(server.serve())
    while not server.started and not task.done():
        await asyncio.sleep(0.01)
    if task.done():
        await cloud.stop()
        return 1
    if callable(on_ready):
        on_ready()
    try:
        await task
    finally:
        await cloud.stop()
    return 0


def run_up(args: argparse.Namespace, settings: Settings, started: float) -> int:
    """``onestack up``: every service in one process, bootstrapped, on one port."""
    console = Console(stderr=True)
    logs.configure(
        settings.data_dir / "logs" / "onestack.log", level=settings.log_level, verbose=args.verbose
    )

    async def main() -> int:
        cloud = Cloud(settings)
        with console.status("starting onestack", spinner="dots") as status:

            def progress(step: str) -> None:
                status.update(f"{step}…")
                console.log(f"{step}")

            try:
                await cloud.start(progress, admin_password=args.admin_password)
            except BaseException:
                await cloud.stop()
                raise
        freeze_startup_objects()
        base = settings.base_url()
        clouds_path, openrc_path = write_client_files(
            settings.data_dir,
            f"{base}/identity/v3",
            cloud.admin_password,
            settings.identity.region,
        )

        def ready() -> None:
            elapsed = time.perf_counter() - started
            console.print(f"[bold green]onestack is up[/] at {base} in {elapsed:.2f}s")
            for name in cloud.names:
                console.print(f"  {name:<14} {base}/{name}")
            console.print(
                f"Use it:  export OS_CLIENT_CONFIG_FILE={clouds_path} OS_CLOUD={CLOUD_NAME}\n"
                f"   or:   source {openrc_path}\n"
                "Then:    openstack token issue        (Ctrl-C stops the cloud; state is kept)"
            )

        return await _serve_until_stopped(cloud, settings, ready)

    return run_server_loop(main())


def run_serve(args: argparse.Namespace, settings: Settings) -> int:
    """``onestack serve SERVICE``: one service on its own port, for scale-out."""
    logs.configure(
        settings.data_dir / "logs" / f"{args.service}.log",
        level=settings.log_level,
        verbose=args.verbose,
    )
    console = Console(stderr=True)

    async def main() -> int:
        cloud = Cloud(settings, mounted=False)
        await cloud.start(admin_password=args.admin_password, bootstrap=bool(args.admin_password))
        freeze_startup_objects()

        def ready() -> None:
            console.print(f"{args.service} serving at {settings.base_url()}")

        return await _serve_until_stopped(cloud, settings, ready)

    return run_server_loop(main())
