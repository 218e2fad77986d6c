"""Storage nodes as real processes (``onestack serve object-node``), for reliability tests."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from onestack.object.cluster import Cluster
from onestack.object.proxy.store import Store
from onestack.object.ring import RingBuilder
from onestack.object.ring.layout import save_and_publish
from tests.acceptance.conftest import BIN, Process, free_port

SECRET = "reliability-secret"


class NodeSet:
    """``count`` storage nodes with one device each (one zone each), and a proxy store."""

    def __init__(self, root: Path, count: int = 4, replicas: int = 3):
        self.root = root
        self.rings = root / "rings"
        self.devices = root / "devices"
        self.ports = [free_port() for _ in range(count)]
        self.processes: dict[int, Process] = {}
        for kind in ("account", "container", "object"):
            builder = RingBuilder(6, replicas, 0, hash_path_suffix="reliability")
            for index, port in enumerate(self.ports):
                builder.add_device(
                    zone=index + 1, ip="127.0.0.1", port=port, device=f"d{index + 1}", weight=100
                )
            builder.rebalance(seed=7)
            save_and_publish(self.rings, kind, builder)
        for index in range(count):
            (self.devices / f"d{index + 1}").mkdir(parents=True, exist_ok=True)
        self.env = {"ONESTACK_OBJECT__NODE_SECRET": SECRET}

    def start(self, index: int) -> None:
        self.launch(index)
        self.processes[index].wait_listening(self.ports[index])

    def launch(self, index: int) -> None:
        port = self.ports[index]
        process = Process(
            [
                "serve",
                "object-node",
                "--port",
                str(port),
                "--data-dir",
                str(self.root / f"n{index}"),
                "--rings-dir",
                str(self.rings),
                "--devices-dir",
                str(self.devices),
                "--no-agents",
            ],
            self.root / f"node{index}.log",
            env=self.env,
        )
        self.processes[index] = process

    def start_all(self) -> None:
        for index in range(len(self.ports)):
            self.launch(index)
        for index in range(len(self.ports)):
            self.processes[index].wait_listening(self.ports[index])

    def kill(self, index: int) -> None:
        """Stop a node abruptly (SIGKILL), as a crash or a pulled cable would."""
        process = self.processes.pop(index)
        os.killpg(process.popen.pid, signal.SIGKILL)
        process.popen.wait()
        process.handle.close()

    def ensure_running(self) -> None:
        """Start the nodes a test left stopped."""
        missing = [i for i in range(len(self.ports)) if i not in self.processes]
        for index in missing:
            self.launch(index)
        for index in missing:
            self.processes[index].wait_listening(self.ports[index])

    def stop_all(self) -> None:
        processes = [self.processes.pop(i) for i in list(self.processes)]
        for process in processes:
            if process.popen.poll() is None:
                os.killpg(process.popen.pid, signal.SIGINT)
        for process in processes:
            try:
                code = process.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.popen.pid, signal.SIGKILL)
                code = process.popen.wait()
            process.handle.close()
            assert code == 0, process.log.read_text()[-2000:]

    async def agent_here(self, name: str, index: int) -> dict[str, int]:
        """One pass of an agent for node ``index``, run in this process on its devices."""
        from onestack.core.config import load_settings
        from onestack.object.agents import build_agent
        from onestack.object.service import ObjectService

        settings = load_settings(data_dir=self.root / f"a{index}")
        settings.object.rings_dir = str(self.rings)
        settings.object.devices_dir = str(self.devices)
        settings.object.node_address = f"127.0.0.1:{self.ports[index]}"
        settings.object.node_secret = SECRET
        service = ObjectService(settings)
        service.start()
        try:
            stats: dict[str, int] = await build_agent(name, service).run_once()  # type: ignore[attr-defined]
            return stats
        finally:
            await service.stop()

    async def agents_here(self, *names: str) -> None:
        for name in names:
            for index in sorted(self.processes):
                await self.agent_here(name, index)

    def agent(self, name: str, index: int) -> str:
        """Run one agent once for node ``index`` as its own process; its output."""
        done = subprocess.run(
            [
                str(BIN / "onestack"),
                "agent",
                name,
                "--once",
                "--node",
                f"127.0.0.1:{self.ports[index]}",
                "--data-dir",
                str(self.root / f"a{index}"),
                "--rings-dir",
                str(self.rings),
                "--devices-dir",
                str(self.devices),
            ],
            capture_output=True,
            text=True,
            env={**os.environ, **self.env},
            timeout=180,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stderr

    def agents_everywhere(self, *names: str) -> None:
        for name in names:
            for index in sorted(self.processes):
                self.agent(name, index)

    def store(self) -> tuple[Cluster, Store]:
        cluster = Cluster(self.rings, secret=SECRET, node_timeout=5)
        return cluster, Store(cluster, info_ttl=0)

    def replicas_on_disk(self, store: Store, account: str, container: str, obj: str) -> list[str]:
        """Devices holding a ``.data`` file of the object (quarantine excluded)."""
        name_hash = store.rings.object.hash_path(account, container, obj)
        found = []
        for device in sorted(os.listdir(self.devices)):
            objects = self.devices / device / "objects"
            if not objects.is_dir():
                continue
            for part in os.listdir(objects):
                hash_dir = objects / part / name_hash[-3:] / name_hash
                if hash_dir.is_dir() and any(f.endswith(".data") for f in os.listdir(hash_dir)):
                    found.append(device)
        return found
