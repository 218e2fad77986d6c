"""Object storage commands: ``onestack ring …``, ``onestack serve object-node``,
``onestack agent <object agent>``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from pathlib import Path
from typing import Any

from onestack.object.ring.ring import KINDS


def add_commands(sub: Any, common: Any, agents: Any) -> None:
    """Register the ring and node subcommands on the top-level parser, and the object
    agents on ``onestack agent``'s subcommands (``agents``)."""
    ring = sub.add_parser("ring", help="build object storage rings (account, container, object)")
    ring_sub = ring.add_subparsers(dest="ring_command", required=True)
    create = ring_sub.add_parser("create", help="a new empty ring builder")
    create.add_argument("kind", choices=[*KINDS, "all"])
    create.add_argument("--part-power", type=int, default=10)
    create.add_argument("--replicas", type=int, default=3)
    create.add_argument("--min-part-hours", type=int, default=1)
    add = ring_sub.add_parser(
        "add", help="add a device (Swift's r1z1-IP:PORT/DEV WEIGHT, or flags)"
    )
    add.add_argument("kind", choices=[*KINDS, "all"])
    add.add_argument("device", nargs="?", help="r<region>z<zone>-<ip>:<port>/<device>")
    add.add_argument("weight", nargs="?", type=float)
    for flag, kind in (
        ("--region", int),
        ("--zone", int),
        ("--ip", str),
        ("--port", int),
        ("--device-name", str),
        ("--weight-value", float),
    ):
        add.add_argument(flag, type=kind)
    rebalance = ring_sub.add_parser("rebalance", help="assign partitions to devices")
    rebalance.add_argument("kind", choices=[*KINDS, "all"])
    rebalance.add_argument("--force", action="store_true", help="ignore min_part_hours")
    rebalance.add_argument("--seed", type=int)
    show = ring_sub.add_parser("show", help="devices, weights and partition counts")
    show.add_argument("kind", choices=[*KINDS, "all"])
    weight = ring_sub.add_parser("set-weight", help="change a device's weight")
    weight.add_argument("kind", choices=[*KINDS, "all"])
    weight.add_argument("search", help="device id (d3), name, ip:port or r1z1-ip:port/dev")
    weight.add_argument("weight", type=float)
    remove = ring_sub.add_parser("remove", help="take a device out of the ring")
    remove.add_argument("kind", choices=[*KINDS, "all"])
    remove.add_argument("search")
    for cmd in (create, add, rebalance, show, weight, remove):
        cmd.add_argument("--rings-dir", type=Path, help="default <data dir>/rings")
        common(cmd)

    from onestack.object.agents import AGENTS

    for name in AGENTS:
        agent = agents.add_parser(name, help=f"the object storage {name.replace('-', ' ')}")
        agent.add_argument("--node", help="ip:port of the storage node whose devices to work on")
        agent.add_argument("--once", action="store_true", help="one pass, then exit")
        agent.add_argument("--interval", type=float, help="seconds between passes")
        _node_flags(agent)
        common(agent)


def _node_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rings-dir", type=Path, help="default <data dir>/rings")
    parser.add_argument("--devices-dir", type=Path, help="default <data dir>/object-devices")


def add_node_flags(parser: argparse.ArgumentParser) -> None:
    """Flags of ``onestack serve object-node`` (shared with ``serve``)."""
    _node_flags(parser)
    parser.add_argument("--no-agents", action="store_true", help="no background agents")


def _rings_dir(args: argparse.Namespace, settings: Any) -> Path:
    from onestack.object.service import rings_dir

    return Path(args.rings_dir) if args.rings_dir else rings_dir(settings)


def run_ring(args: argparse.Namespace, settings: Any) -> int:
    """``onestack ring``: edit builders and publish ring files."""
    from onestack.object.ring import layout
    from onestack.object.ring.builder import RingError, parse_device

    directory = _rings_dir(args, settings)
    kinds = KINDS if args.kind == "all" else (args.kind,)
    try:
        for kind in kinds:
            if args.ring_command == "create":
                builder = layout.create(
                    directory, kind, args.part_power, args.replicas, args.min_part_hours
                )
                print(
                    f"{kind}: created, partition power {builder.part_power}, "
                    f"{builder.replicas} replicas"
                )
                continue
            builder = layout.load(directory, kind)
            if args.ring_command == "add":
                if args.device:
                    fields = parse_device(args.device, args.weight if args.weight else 100.0)
                else:
                    fields = {
                        "region": args.region or 1,
                        "zone": args.zone,
                        "ip": args.ip,
                        "port": args.port,
                        "device": args.device_name,
                        "weight": args.weight_value or 100.0,
                    }
                    if None in fields.values():
                        raise RingError(
                            "give r1z1-IP:PORT/DEVICE WEIGHT or --zone/--ip/--port/--device-name"
                        )
                dev = builder.add_device(**fields)
                print(f"{kind}: added d{dev.id} {dev.describe()} weight {dev.weight:g}")
            elif args.ring_command == "rebalance":
                moved = builder.rebalance(seed=args.seed, force=args.force)
                print(
                    f"{kind}: reassigned {moved} partition replicas; balance "
                    f"{builder.balance():.2f}%; dispersion issues "
                    f"{builder.dispersion_violations()}"
                )
            elif args.ring_command in ("set-weight", "remove"):
                found = builder.find(args.search)
                if not found:
                    raise RingError(f"no device matches {args.search!r}")
                for dev in found:
                    if args.ring_command == "remove":
                        builder.remove_device(dev.id)
                        print(f"{kind}: removed d{dev.id} {dev.describe()} (rebalance next)")
                    else:
                        builder.set_weight(dev.id, args.weight)
                        print(f"{kind}: d{dev.id} weight {args.weight:g} (rebalance next)")
            elif args.ring_command == "show":
                _show(kind, builder)
                continue
            layout.save_and_publish(directory, kind, builder)
    except RingError as exc:
        print(f"onestack: {exc}", file=sys.stderr)
        return 2
    return 0


def _show(kind: str, builder: Any) -> None:
    counts: dict[int, int] = {}
    for table in builder.assignment:
        for dev_id in table:
            counts[dev_id] = counts.get(dev_id, 0) + 1
    print(
        f"{kind}: {builder.parts} partitions, {builder.replicas} replicas, "
        f"{len(builder.active_devices())} devices, balance {builder.balance():.2f}%, "
        f"min_part_hours {builder.min_part_hours}, version {builder.version}"
    )
    print(
        f"  {'id':>4} {'region':>6} {'zone':>4} {'address':<22} {'device':<10} "
        f"{'weight':>8} {'partitions':>10}"
    )
    for dev in builder.devs:
        if dev is None:
            continue
        print(
            f"  {dev.id:>4} {dev.region:>6} {dev.zone:>4} {dev.address:<22} {dev.device:<10} "
            f"{dev.weight:>8g} {counts.get(dev.id, 0):>10}"
        )


def node_settings(args: argparse.Namespace, settings: Any) -> Any:
    """Point the object settings at the rings, devices and address the flags name."""
    config = settings.object
    if getattr(args, "rings_dir", None):
        config.rings_dir = str(args.rings_dir)
    if getattr(args, "devices_dir", None):
        config.devices_dir = str(args.devices_dir)
    return settings


def run_node(args: argparse.Namespace, settings: Any) -> int:
    """``onestack serve object-node``: a storage node (and its agents) on its own port."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Mount, Route

    from onestack.cli.run import run_server_loop
    from onestack.core import logs
    from onestack.object.agents import AGENTS, start_agents
    from onestack.object.service import ObjectService
    from onestack.object.storage.backend import NODE_PREFIX
    from onestack.object.storage.server import NodeApp

    node_settings(args, settings)
    settings.object.node_address = settings.object.node_address or (
        f"{'127.0.0.1' if settings.host in ('0.0.0.0', '::') else settings.host}:{settings.port}"
    )
    logs.configure(
        settings.data_dir / "logs" / "object-node.log",
        level=settings.log_level,
        verbose=args.verbose,
    )

    async def main() -> int:
        service = ObjectService(settings)
        service.start()
        assert service.node is not None and service.cluster is not None

        async def health(_request: Request) -> PlainTextResponse:
            return PlainTextResponse("OK")

        app = Starlette(
            routes=[
                Route("/healthcheck", health),
                Mount(NODE_PREFIX, app=NodeApp(service.node, service.cluster.secret)),
            ]
        )
        agents = []
        if not args.no_agents:
            names = tuple(a for a in AGENTS if a != "object-expirer")
            agents = start_agents(service, settings.object, names)
        config = uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            log_config=None,
            access_log=False,
            lifespan="off",
            server_header=False,
            timeout_graceful_shutdown=5,
        )
        print(f"storage node {service.address} serving {service.devices_dir}", file=sys.stderr)
        try:
            await uvicorn.Server(config).serve()
        finally:
            for agent in agents:
                await agent.stop()
            await service.stop()
        return 0

    return run_server_loop(main())


def run_agent(args: argparse.Namespace, settings: Any) -> int:
    """``onestack agent NAME``: one agent alone, once or every interval."""
    from onestack.core import logs
    from onestack.object.agents import build_agent, interval
    from onestack.object.service import ObjectService

    node_settings(args, settings)
    settings.object.part_power = settings.object.part_power
    if args.node:
        settings.object.node_address = args.node
    settings.object.serve_node = args.agent != "object-expirer" or bool(args.node)
    logs.configure(
        settings.data_dir / "logs" / f"{args.agent}.log",
        level=settings.log_level,
        verbose=args.verbose,
    )

    async def main() -> int:
        service = ObjectService(settings)
        service.start()
        agent = build_agent(args.agent, service)
        try:
            while True:
                result = await agent.run_once()  # type: ignore[attr-defined]
                print(f"{args.agent}: {result}", file=sys.stderr)
                if args.once:
                    return 0
                await asyncio.sleep(args.interval or interval(args.agent, settings.object))
        finally:
            await service.stop()

    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(main())
    return 0
