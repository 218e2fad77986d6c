"""``onestack``: run the cloud (``up``), one service (``serve``), and operator commands."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
import time
from pathlib import Path
from typing import Any

STARTED = time.perf_counter()


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, help="state directory (default ./.onestack)")
    parser.add_argument("--db", help="database URL for the service(s), e.g. postgresql://…")
    parser.add_argument("--bus", help="message bus URL: memory:// or amqp://user:pw@host/")
    parser.add_argument("--verbose", "-v", action="store_true", help="log every request to stderr")


def _settings(args: argparse.Namespace, **extra: Any) -> Any:
    from onestack.core.config import load_settings

    settings = load_settings(data_dir=args.data_dir, bus_url=args.bus, **extra)
    if args.db:
        settings.database.default = args.db
    if getattr(args, "key_repository", None):
        settings.identity.key_repository = args.key_repository
    if getattr(args, "credential_key_repository", None):
        settings.identity.credential_key_repository = args.credential_key_repository
    return settings


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every ``onestack`` subcommand."""
    parser = argparse.ArgumentParser(prog="onestack", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="run the whole cloud in this process")
    _common(up)
    up.add_argument("--port", type=int, help="port to listen on (default 8000)")
    up.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    up.add_argument("--admin-password", help="admin password (default: generated and kept)")
    up.add_argument("--fake-hosts", type=int, help="run N simulated compute hosts host1..hostN")

    serve = sub.add_parser("serve", help="run one service alone, for scale-out")
    serve.add_argument("service", help="service to run, e.g. identity, or object-node")
    _common(serve)
    serve.add_argument("--port", type=int, help="port (default: the service's own port)")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--admin-password", help="bootstrap identity with this admin password")
    serve.add_argument("--key-repository", help="shared Fernet key directory (identity)")
    serve.add_argument("--credential-key-repository", help="shared credential key directory")

    agent = sub.add_parser("agent", help="run an agent of a service, for scale-out")
    agent_sub = agent.add_subparsers(dest="agent", required=True)
    for kind, text in (
        ("volume", "a volume agent (one storage backend of one host)"),
        ("backup", "a backup agent (volume backups into object storage)"),
    ):
        storage_agent = agent_sub.add_parser(kind, help=text)
        _common(storage_agent)
        storage_agent.add_argument("--host", help="this host's name (default: the hostname)")
        if kind == "volume":
            storage_agent.add_argument("--backend", help="backend name from [[volume.backends]]")
    compute_agent = agent_sub.add_parser("compute", help="a compute agent (one hypervisor host)")
    _common(compute_agent)
    compute_agent.add_argument("--host", help="this host's name (default: the hostname)")
    compute_agent.add_argument("--driver", help="fake or qemu (default: qemu when root, else fake)")

    network_agent = agent_sub.add_parser("network", help="a network agent (this host's data plane)")
    _common(network_agent)
    network_agent.add_argument("--host", help="this host's name (default: the hostname)")

    db = sub.add_parser("db", help="database operations")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    sync = db_sub.add_parser("sync", help="create or upgrade service databases")
    sync.add_argument("services", nargs="*", help="services to migrate (default: all)")
    _common(sync)

    serve.add_argument("--rings-dir", type=Path, help="object: rings (default <data dir>/rings)")
    serve.add_argument("--devices-dir", type=Path, help="object: device directories")
    serve.add_argument("--no-agents", action="store_true", help="object-node: no agents")

    from onestack.cli import objectstore

    objectstore.add_commands(sub, _common, agent_sub)

    from onestack.cli import guest_image

    guest_image.add_commands(sub, _common)

    identity = sub.add_parser("identity", help="identity operations")
    id_sub = identity.add_subparsers(dest="identity_command", required=True)
    for name, text in (
        ("fernet-setup", "create the Fernet key repository"),
        ("fernet-rotate", "rotate the Fernet token keys"),
    ):
        cmd = id_sub.add_parser(name, help=text)
        _common(cmd)
        cmd.add_argument("--key-repository", help="Fernet key directory")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``onestack`` console script."""
    args = build_parser().parse_args(argv)
    if args.command in ("up", "serve"):
        from onestack.core.memory import return_large_blocks_to_the_os

        return_large_blocks_to_the_os()
    try:
        if args.command == "up":
            from onestack.cli.run import run_up

            settings = _settings(args, port=args.port, host=args.host)
            if args.fake_hosts is not None:
                settings.compute.fake_hosts = args.fake_hosts
            return run_up(args, settings, STARTED)
        if args.command == "serve" and args.service == "object-node":
            from onestack.cli.objectstore import run_node

            port = args.port or 6200
            return run_node(args, _settings(args, port=port, host=args.host))
        if args.command == "serve":
            from onestack.cli.run import run_serve
            from onestack.services import REGISTRY

            if args.service not in REGISTRY:
                print(f"onestack: unknown service {args.service!r}", file=sys.stderr)
                return 2
            port = args.port or REGISTRY[args.service].own_port
            settings = _settings(args, port=port, host=args.host, services=[args.service])
            if args.service == "object":
                from onestack.cli.objectstore import node_settings

                node_settings(args, settings)
            return run_serve(args, settings)
        if args.command == "agent" and args.agent == "network":
            from onestack.cli.agents import run_agent

            return run_agent(args, _settings(args))
        if args.command == "agent" and args.agent in ("volume", "backup", "compute"):
            from onestack.cli.agents import run_agent

            return run_agent(args, _settings(args))
        if args.command == "db":
            return asyncio.run(_db_sync(args))
        if args.command == "identity":
            return _identity_keys(args)
        if args.command == "guest-image":
            from onestack.cli.guest_image import run as build_guest_image

            return build_guest_image(args, _settings(args))
        if args.command == "ring":
            from onestack.cli.objectstore import run_ring

            return run_ring(args, _settings(args))
        if args.command == "agent":
            from onestack.cli.objectstore import run_agent

            return run_agent(args, _settings(args))
    except ValueError as exc:
        print(f"onestack: {exc}", file=sys.stderr)
        return 2
    return 2


async def _db_sync(args: argparse.Namespace) -> int:
    from onestack.core.db import Database
    from onestack.services import REGISTRY

    settings = _settings(args)

    def migrations_of(name: str) -> Path:
        package = importlib.import_module(f"onestack.{name}")
        return Path(str(package.__file__)).parent / "migrations"

    # Services without a database of their own (object storage) have nothing to sync.
    names = args.services or [n for n in REGISTRY if migrations_of(n).is_dir()]
    for name in names:
        if name not in REGISTRY:
            print(f"onestack: unknown service {name!r}", file=sys.stderr)
            return 2
        migrations = migrations_of(name)
        if not migrations.is_dir():
            print(f"{name}: no database")
            continue
        db = Database(settings.database_url(name), migrations)
        try:
            await db.sync_schema()
        finally:
            await db.close()
        print(f"{name}: database at the newest revision")
    return 0


def _identity_keys(args: argparse.Namespace) -> int:
    from onestack.identity.fernet import KeyRepository

    settings = _settings(args)
    repo = KeyRepository(settings.key_repository(), settings.identity.max_active_keys)
    if args.identity_command == "fernet-setup":
        created = repo.setup()
        print(f"{repo.path}: {'created' if created else 'already set up'}")
    else:
        repo.setup()
        primary = repo.rotate()
        print(f"{repo.path}: rotated, primary key is now {primary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
