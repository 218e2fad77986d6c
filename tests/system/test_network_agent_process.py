"""``onestack agent network --host H`` as its own process, over RabbitMQ, beside a cloud
whose API process runs no agent: it reports in (``network agent list``), builds a network's
DHCP namespace, and after a restart removes what was deleted while it was down."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.acceptance.conftest import ADMIN_PASSWORD, Process, free_port, issue_token
from tests.backends import isolated_amqp_url
from tests.system.requirements import require
from tests.system.test_network_dataplane import TOOLS

require(*TOOLS, what="the network agent test")


def wait(what: str, check: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.3)
    pytest.fail(f"timed out waiting for {what}")


def namespaces() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    """The processes a test starts, stopped at its end (Ctrl-C, then kill)."""
    started: list[Process] = []
    yield started
    for process in reversed(started):
        process.stop()


def test_agent_process_reports_builds_and_reconciles(
    tmp_path: Path, processes: list[Process]
) -> None:
    port = free_port()
    bus = isolated_amqp_url()
    env = {"ONESTACK_NETWORK__LOCAL_AGENT": "false", "ONESTACK_NETWORK__DRIVER": "linuxbridge"}
    api = Process(
        [
            "up",
            "--port",
            str(port),
            "--data-dir",
            str(tmp_path),
            "--bus",
            bus,
            "--admin-password",
            ADMIN_PASSWORD,
        ],
        tmp_path / "up.out",
        env,
    )
    processes.append(api)
    auth_url = f"http://127.0.0.1:{port}/identity/v3"
    api.wait_ready(auth_url)
    agent_env = {**env, "ONESTACK_IDENTITY_URL": auth_url}
    args = [
        "agent",
        "network",
        "--host",
        "agent-test-host",
        "--bus",
        bus,
        "--data-dir",
        str(tmp_path),
    ]
    agent = Process(args, tmp_path / "agent.out", agent_env)
    processes.append(agent)
    token = issue_token(auth_url, "admin", ADMIN_PASSWORD, "admin").headers["x-subject-token"]
    http = httpx.Client(
        base_url=f"http://127.0.0.1:{port}/network/v2.0",
        headers={"X-Auth-Token": token},
        timeout=30,
    )

    def agent_alive() -> bool:
        agents = http.get("/agents").json()["agents"]
        return any(a["host"] == "agent-test-host" and a["alive"] for a in agents)

    wait("the agent in the agent list", agent_alive)
    [shown] = [a for a in http.get("/agents").json()["agents"] if a["host"] == "agent-test-host"]
    assert shown["configurations"]["driver"] == "linuxbridge"
    assert shown["agent_type"] == "Linux bridge agent"
    network = http.post("/networks", json={"network": {"name": "n"}}).json()["network"]
    subnet = {"network_id": network["id"], "cidr": "10.253.8.0/24", "ip_version": 4}
    assert http.post("/subnets", json={"subnet": subnet}).status_code == 201
    wait("the DHCP namespace", lambda: f"qdhcp-{network['id']}" in namespaces())

    assert agent.stop() == 0
    assert http.delete(f"/networks/{network['id']}").status_code == 204
    assert f"qdhcp-{network['id']}" in namespaces()  # nobody removed it while the agent was down
    processes.append(Process(args, tmp_path / "agent2.out", agent_env))
    wait("the leftovers removed", lambda: f"qdhcp-{network['id']}" not in namespaces())
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert f"brq{network['id'][:11]}" not in links
