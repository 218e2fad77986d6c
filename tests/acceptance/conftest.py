"""Real onestack processes on free ports, driven by the real clients.

Two deployments run the same acceptance tests: ``all-in-one`` (``onestack up``)
and ``scale-out`` (two ``onestack serve identity`` processes sharing a
PostgreSQL database, a Fernet key repository and RabbitMQ).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.backends import database_url, isolated_amqp_url

BIN = Path(sys.executable).parent
ADMIN_PASSWORD = "acceptance-admin"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def password_auth(user: str, password: str, project: str) -> dict[str, Any]:
    return {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {"name": user, "domain": {"id": "default"}, "password": password}
                },
            },
            "scope": {"project": {"name": project, "domain": {"id": "default"}}},
        }
    }


def issue_token(auth_url: str, user: str, password: str, project: str) -> httpx.Response:
    return httpx.post(
        f"{auth_url}/auth/tokens", json=password_auth(user, password, project), timeout=10
    )


class Process:
    """A onestack process in its own process group, stopped with Ctrl-C (SIGINT)."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None):
        self.args = args
        self.log = log
        self.handle = open(log, "wb")  # noqa: SIM115 - kept open for the process's lifetime
        self.popen = subprocess.Popen(
            [str(BIN / "onestack"), *args],
            stdout=self.handle,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )

    def wait_ready(self, auth_url: str, timeout: float = 60.0) -> float:
        """Seconds until a token could be issued; fails with the process log otherwise."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.popen.poll() is not None:
                pytest.fail(f"onestack exited early:\n{self.log.read_text()[-3000:]}")
            try:
                if issue_token(auth_url, "admin", ADMIN_PASSWORD, "admin").status_code == 201:
                    return time.monotonic() - started
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        pytest.fail(f"onestack not ready in {timeout}s:\n{self.log.read_text()[-3000:]}")

    def wait_listening(self, port: int, timeout: float = 60.0) -> None:
        """Until the process answers its health check on ``port``."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.popen.poll() is not None:
                pytest.fail(f"onestack exited early:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthcheck").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        pytest.fail(f"onestack not listening in {timeout}s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> int:
        """Ctrl-C, as a user would; the exit code (0 when it stopped cleanly)."""
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGINT)
            try:
                self.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        self.handle.close()
        return self.popen.returncode


@dataclass
class Deployment:
    """A running cloud and how to reach it as admin."""

    name: str
    auth_url: str
    processes: list[Process]
    other_auth_url: str | None = None
    startup_seconds: float = 0.0
    extra_env: dict[str, str] = field(default_factory=dict)

    def env_for(
        self, user: str = "admin", password: str = ADMIN_PASSWORD, project: str = "admin"
    ) -> dict[str, str]:
        """OS_* variables of a user, as a user would export them."""
        return {
            "OS_AUTH_URL": self.auth_url,
            "OS_USERNAME": user,
            "OS_PASSWORD": password,
            "OS_PROJECT_NAME": project,
            "OS_USER_DOMAIN_NAME": "Default",
            "OS_PROJECT_DOMAIN_NAME": "Default",
            "OS_IDENTITY_API_VERSION": "3",
            "OS_INTERFACE": "public",
            "OS_REGION_NAME": "RegionOne",
        }

    def openstack(
        self, *args: str, env: dict[str, str] | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run the real ``openstack`` CLI with a clean OS_* environment."""
        base = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
        run_env = {**base, **(env if env is not None else self.env_for())}
        done = subprocess.run(
            [str(BIN / "openstack"), *args],
            capture_output=True,
            text=True,
            env=run_env,
            timeout=120,
        )
        if check and done.returncode != 0:
            pytest.fail(f"openstack {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done

    def json(self, *args: str, env: dict[str, str] | None = None) -> Any:
        """Run the CLI with ``-f json`` and parse its output."""
        return json.loads(self.openstack(*args, "-f", "json", env=env).stdout)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def all_in_one(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    data_dir = tmp_path_factory.mktemp("allinone")
    port = free_port()
    process = Process(
        [
            "up",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
            "--admin-password",
            ADMIN_PASSWORD,
        ],
        data_dir / "onestack.out",
    )
    auth_url = f"http://127.0.0.1:{port}/identity/v3"
    startup = process.wait_ready(auth_url)
    deployment = Deployment("all-in-one", auth_url, [process], startup_seconds=startup)
    deployment.extra_env = {"data_dir": str(data_dir), "port": str(port)}
    yield deployment
    assert process.stop() == 0, process.log.read_text()[-2000:]


@pytest.fixture(scope="session")
def scale_out(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("scaleout")
    db = database_url("postgresql", root)
    bus = isolated_amqp_url()
    shared = ["--db", db, "--bus", bus]
    keys = ["--key-repository", str(root / "fernet-keys")]
    keys += ["--credential-key-repository", str(root / "credential-keys")]
    first_port, second_port = free_port(), free_port()
    first = Process(
        [
            "serve",
            "identity",
            "--port",
            str(first_port),
            "--data-dir",
            str(root / "a"),
            "--admin-password",
            ADMIN_PASSWORD,
            *shared,
            *keys,
        ],
        root / "a.out",
    )
    first_url = f"http://127.0.0.1:{first_port}/v3"
    first.wait_ready(first_url)
    second = Process(
        [
            "serve",
            "identity",
            "--port",
            str(second_port),
            "--data-dir",
            str(root / "b"),
            *shared,
            *keys,
        ],
        root / "b.out",
    )
    second_url = f"http://127.0.0.1:{second_port}/v3"
    second.wait_ready(second_url)
    image_port = free_port()
    image = Process(
        ["serve", "image", "--port", str(image_port), "--data-dir", str(root / "img"),
         "--db", database_url("postgresql", root), "--bus", bus],
        root / "img.out",
        env={
            "ONESTACK_IDENTITY_URL": first_url,
            "ONESTACK_SERVICE_PASSWORD": (root / "a" / "service-password").read_text().strip(),
        },
    )  # fmt: skip
    image.wait_listening(image_port)
    placement_port = free_port()
    placement = Process(
        ["serve", "placement", "--port", str(placement_port), "--data-dir",
         str(root / "placement"), "--db", database_url("postgresql", root), "--bus", bus],
        root / "placement.out",
        env={
            "ONESTACK_IDENTITY_URL": first_url,
            "ONESTACK_SERVICE_PASSWORD": (root / "a" / "service-password").read_text().strip(),
        },
    )  # fmt: skip
    placement.wait_listening(placement_port)
    processes = [first, second, image, placement]
    deployment = Deployment("scale-out", first_url, processes, other_auth_url=second_url)
    deployment.extra_env = {"root": str(root), "bus": bus}
    yield deployment
    for process in (placement, image, second, first):
        assert process.stop() == 0, process.log.read_text()[-2000:]


@pytest.fixture(params=["all-in-one", "scale-out"])
def cloud(request: pytest.FixtureRequest) -> Deployment:
    """Each acceptance test runs against both deployments."""
    name = "all_in_one" if request.param == "all-in-one" else "scale_out"
    deployment: Deployment = request.getfixturevalue(name)
    return deployment
