"""Database and broker URLs for tests: SQLite always; PostgreSQL, MariaDB and RabbitMQ when
reachable. Under CI=true an unreachable server is a failure, not a skip."""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import uuid
from urllib.parse import quote

import pytest

PG = os.environ.get("ONESTACK_TEST_PG", "postgresql://onestack:onestack@127.0.0.1:5432")
MARIADB = os.environ.get("ONESTACK_TEST_MARIADB", "mysql://onestack:onestack@127.0.0.1:3306")
AMQP = os.environ.get("ONESTACK_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


def reachable(host: str, port: int) -> bool:
    """Whether something accepts TCP connections there."""
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def require(host: str, port: int, what: str) -> None:
    """Skip (or, in CI, fail) when ``what`` is not listening."""
    if reachable(host, port):
        return
    message = f"{what} is not reachable on {host}:{port}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}; CI must provide it (scripts/setup-test-services.sh)")
    pytest.skip(message)


def database_url(backend: str, tmp_path: object) -> str:
    """A fresh, empty database of ``backend`` (sqlite, postgresql, mariadb)."""
    name = f"onestack_test_{uuid.uuid4().hex[:12]}"
    if backend == "sqlite":
        return f"sqlite:///{tmp_path}/{name}.db"
    if backend == "postgresql":
        require("127.0.0.1", 5432, "PostgreSQL")
        return f"{PG}/{name}"
    require("127.0.0.1", 3306, "MariaDB")
    return f"{MARIADB}/{name}"


def amqp_url() -> str:
    """The RabbitMQ URL, after checking it listens."""
    require("127.0.0.1", 5672, "RabbitMQ")
    return AMQP


def isolated_amqp_url() -> str:
    """A RabbitMQ URL on a virtual host of its own, deleted when the test run ends.

    Deployments that consume shared topics (``conductor``, ``compute.<host>``) must not
    steal each other's messages when two test runs share one broker. Without
    ``rabbitmqctl`` (not root) this falls back to the shared URL.
    """
    url = amqp_url()
    ctl = shutil.which("rabbitmqctl")
    if ctl is None or os.geteuid() != 0 or "ONESTACK_TEST_AMQP_URL" in os.environ:
        return url
    vhost = f"onestack-test-{uuid.uuid4().hex[:12]}"
    for command in (["add_vhost", vhost], ["set_permissions", "-p", vhost, "guest", *[".*"] * 3]):
        subprocess.run([ctl, *command], capture_output=True, timeout=60, check=True)
    atexit.register(subprocess.run, [ctl, "delete_vhost", vhost], capture_output=True, timeout=60)
    return f"{AMQP.rstrip('/')}/{quote(vhost, safe='')}"
