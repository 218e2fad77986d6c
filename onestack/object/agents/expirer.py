"""The expirer: deletes objects whose X-Delete-At has passed.

Object servers queue every object with X-Delete-At as a row in the hidden
``.expiring_objects`` account (one container per day). The expirer walks the
queues that are due, deletes each object with ``X-If-Delete-At`` (so an object
whose expiry changed in the meantime is left alone), then drops the row.
Reads already hide expired objects; this reclaims their space and listings.
"""

from __future__ import annotations

import json
import logging
import time

from onestack.object.proxy.store import Store
from onestack.object.storage.object_server import EXPIRING_ACCOUNT

log = logging.getLogger(__name__)


class Expirer:
    """Runs against the proxy's store (any process with the rings can run it)."""

    name = "object-expirer"

    def __init__(self, store: Store):
        self.store = store
        self.passes = 0

    async def run_once(self) -> dict[str, int]:
        stats = {"expired": 0, "skipped": 0}
        now = int(time.time())
        response = await self.store.account_request("GET", EXPIRING_ACCOUNT, {"limit": "10000"})
        if not response.ok:
            await response.close()
            return stats
        queues = [row["name"] for row in json.loads(await response.read() or b"[]")]
        for queue in queues:
            if not queue.isdigit() or int(queue) > now:
                continue
            async for row in self.store.iter_objects(EXPIRING_ACCOUNT, queue):
                delete_at, _, target = row["name"].partition("-")
                if not delete_at.isdigit() or int(delete_at) > now:
                    continue
                account, container, obj = [*target.split("/", 2), "", ""][:3]
                status = await self.store.write_object(
                    "DELETE", account, container, obj, {"x-if-delete-at": delete_at}
                )
                if status < 300 or status in (404, 412):
                    await self.store.write_object(
                        "DELETE", EXPIRING_ACCOUNT, queue, row["name"], {}
                    )
                    stats["expired" if status < 300 else "skipped"] += 1
            await self.store.write_container("DELETE", EXPIRING_ACCOUNT, queue, {})
        return stats

    async def __call__(self) -> None:
        stats = await self.run_once()
        self.passes += 1
        if any(stats.values()):
            log.info("expirer pass %d: %s", self.passes, stats)
