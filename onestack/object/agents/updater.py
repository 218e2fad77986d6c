"""Updaters: listings catch up with writes that happened while a server was away.

- The object updater retries *async pendings*: container updates an object
  server could not deliver, sent again to every primary of the container.
- The container updater reports each container's totals to the account's
  primaries when they changed since the last report.
"""

from __future__ import annotations

import json
import logging
import os

from onestack.object.agents.base import Agent
from onestack.object.storage.databases import CONTAINER, Broker, db_partitions, iter_dbs
from onestack.object.storage.db_server import needs_report

log = logging.getLogger(__name__)


class ObjectUpdater(Agent):
    """Delivers the container updates object servers had to keep for later."""

    name = "object-updater"

    async def run_once(self) -> dict[str, int]:
        stats = {"delivered": 0, "failures": 0}
        ring = self.cluster.rings.container
        for device in self.device_names():
            directory = self.node.devices_dir / device / "async_pending"
            try:
                names = sorted(n for n in os.listdir(directory) if not n.startswith("."))
            except FileNotFoundError:
                continue
            for name in names:
                path = directory / name
                try:
                    update = json.loads(path.read_text())
                except (FileNotFoundError, ValueError):
                    continue
                account, container, obj = update["path"]
                part, nodes = ring.get_nodes(account, container)
                headers = {**update["headers"], "x-backend-kind": "container"}
                delivered = 0
                for node in nodes:
                    response = await self.cluster.backend(node).request(
                        update["op"], node.device, part, (account, container, obj), headers
                    )
                    await response.close()
                    delivered += response.ok
                if delivered == len(nodes):
                    path.unlink(missing_ok=True)
                    stats["delivered"] += 1
                else:
                    stats["failures"] += 1
        return stats


class ContainerUpdater(Agent):
    """Sends changed container totals to the account servers."""

    name = "container-updater"

    async def run_once(self) -> dict[str, int]:
        stats = {"reported": 0, "failures": 0}
        server = self.node.containers
        account_ring = self.cluster.rings.account
        for dev in self.local_devices(self.cluster.rings.container):
            parts = await self.cluster.run(
                db_partitions, self.node.devices_dir, dev.device, CONTAINER
            )
            for part in parts:
                files = await self.cluster.run(
                    lambda d=dev.device, p=part: list(
                        iter_dbs(self.node.devices_dir, d, CONTAINER, p)
                    )
                )
                for db_file in files:
                    probe = Broker(CONTAINER, db_file, "", "")
                    try:
                        info = await self.cluster.run(probe.get_info)
                    finally:
                        probe.close()
                    if not needs_report(info):
                        continue
                    broker = server.broker_at(db_file, info["account"], info["container"])
                    account_part, nodes = account_ring.get_nodes(info["account"])
                    ok = 0
                    for node in nodes:
                        ok += await server.report_to(
                            broker, node.address, node.device, account_part
                        )
                    stats["reported" if ok else "failures"] += 1
        return stats
