"""Container and account servers: listings kept in per-container and per-account databases.

The container server takes object rows from object servers and reports its
totals to one account replica (named by the proxy in ``X-Account-*`` headers,
or later by the container updater). Both answer the database replicator's
``REPLICATE`` requests: where a peer's sync point stands, and rows to merge.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from onestack.object import timestamps
from onestack.object.cluster import Cluster
from onestack.object.storage.backend import BackendResponse, error, with_timeout
from onestack.object.storage.databases import (
    ACCOUNT,
    CONTAINER,
    ZERO,
    Broker,
    DatabaseMissing,
    Kind,
    db_path,
    ensure_db_dir,
)
from onestack.object.storage.diskfile import DiskError

if TYPE_CHECKING:
    from onestack.object.storage.node import StorageNode

log = logging.getLogger(__name__)

CONTAINER_META = (
    "x-container-meta-",
    "x-container-sysmeta-",
    "x-container-read",
    "x-container-write",
    "x-versions-location",
    "x-history-location",
)
ACCOUNT_META = ("x-account-meta-", "x-account-sysmeta-", "x-account-access-control")


def metadata_updates(
    headers: dict[str, str], prefixes: tuple[str, ...], timestamp: str
) -> dict[str, tuple[str, str]]:
    return {k: (v, timestamp) for k, v in headers.items() if k.startswith(prefixes)}


def metadata_headers(metadata: dict[str, list[str]]) -> dict[str, str]:
    return {k: v for k, (v, _) in metadata.items() if v != ""}


async def read_json(body: AsyncIterator[bytes]) -> Any:
    raw = b"".join([chunk async for chunk in body])
    return json.loads(raw or b"{}")


def json_response(status: int, data: Any, headers: dict[str, str] | None = None) -> BackendResponse:
    async def once() -> AsyncIterator[bytes]:
        yield json.dumps(data).encode()

    return BackendResponse(status, {**(headers or {}), "content-type": "application/json"}, once())


class DatabaseServer:
    """What container and account servers share: their database, metadata and replication."""

    kind: Kind = CONTAINER
    meta_prefixes: tuple[str, ...] = CONTAINER_META

    def __init__(self, node: StorageNode):
        self.node = node

    @property
    def cluster(self) -> Cluster:
        return self.node.cluster

    def broker(self, device: str, part: int, account: str, container: str = "") -> Broker:
        ring = self.cluster.rings[self.kind.name]
        name_hash = ring.hash_path(account, container) if container else ring.hash_path(account)
        path = db_path(self.node.devices_dir, device, self.kind, part, name_hash)
        return self.node.brokers.get(self.kind, path, account, container)

    def broker_at(self, db_file: Path, account: str, container: str = "") -> Broker:
        return self.node.brokers.get(self.kind, db_file, account, container)

    def _create(self, broker: Broker, device: str, part: int, timestamp: str) -> bool:
        name_hash = broker.db_file.parent.name
        ensure_db_dir(self.node.devices_dir, device, self.kind, part, name_hash)
        return broker.initialize(timestamp)

    async def handle(
        self,
        method: str,
        device: str,
        part: int,
        path: tuple[str, str, str],
        headers: dict[str, str],
        body: AsyncIterator[bytes],
        query: dict[str, str],
    ) -> BackendResponse:
        try:
            self.node.devices_dir.joinpath(device).stat()
        except FileNotFoundError:
            return error(507, f"device {device} is not available")
        try:
            return await self.dispatch(method, device, part, path, headers, body, query)
        except DatabaseMissing:
            return BackendResponse(404, {})
        except DiskError as exc:
            return error(exc.status, str(exc))

    async def dispatch(
        self,
        method: str,
        device: str,
        part: int,
        path: tuple[str, str, str],
        headers: dict[str, str],
        body: AsyncIterator[bytes],
        query: dict[str, str],
    ) -> BackendResponse:
        raise NotImplementedError

    # -- shared verbs ---------------------------------------------------------------------

    async def head_or_get(
        self, broker: Broker, method: str, query: dict[str, str]
    ) -> BackendResponse:
        run = self.cluster.run
        info = await run(self.load_info, broker)
        headers = self.info_headers(info)
        if broker.is_deleted(info):
            return BackendResponse(404, {"x-backend-timestamp": info["delete_timestamp"]})
        if method == "HEAD":
            return BackendResponse(204, headers)
        rows = await run(
            lambda: broker.list_rows(
                limit=int(query.get("limit", "10000")),
                marker=query.get("marker", ""),
                end_marker=query.get("end_marker", ""),
                prefix=query.get("prefix", ""),
                delimiter=query.get("delimiter", ""),
                reverse=query.get("reverse", "") == "true",
            )
        )
        for row in rows:
            row.pop("ROWID", None)
        return json_response(200, rows, headers)

    def load_info(self, broker: Broker) -> dict[str, Any]:
        return broker.get_info()

    def info_headers(self, info: dict[str, Any]) -> dict[str, str]:
        raise NotImplementedError

    async def post(self, broker: Broker, headers: dict[str, str]) -> BackendResponse:
        timestamp = timestamps.normalize(headers["x-timestamp"])
        run = self.cluster.run
        info = await run(broker.get_info)
        if broker.is_deleted(info):
            return BackendResponse(404, {})
        await run(broker.update_metadata, metadata_updates(headers, self.meta_prefixes, timestamp))
        return BackendResponse(204, {})

    async def replicate(
        self, device: str, part: int, path: tuple[str, str, str], body: AsyncIterator[bytes]
    ) -> BackendResponse:
        """A peer's replicator asks for our sync point, or sends rows to merge."""
        request = await read_json(body)
        account, container, _ = path
        broker = self.broker(device, part, account, container)
        run = self.cluster.run
        if request.get("op") == "sync":
            if not broker.exists():
                return BackendResponse(404, {})
            point = await run(broker.sync_point, request["id"], True)
            info = await run(broker.get_info)
            return json_response(200, {"point": point, "info": _plain(info)})
        if request.get("op") == "merge":
            info = request["info"]
            if not broker.exists():
                await run(self._create, broker, device, part, info["put_timestamp"])
            await run(broker.merge_timestamps, info)
            await run(
                broker.update_metadata,
                {k: (v, ts) for k, (v, ts) in info.get("metadata", {}).items()},
            )
            await run(
                broker.merge_items, request.get("rows", []), (request["id"], request["point"])
            )
            return BackendResponse(204, {})
        return error(400, "unknown replicate op")


def _plain(info: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in info.items() if k != "reported"}


class ContainerServer(DatabaseServer):
    """Container databases: object rows, container metadata, totals for the account."""

    kind = CONTAINER
    meta_prefixes = CONTAINER_META

    def info_headers(self, info: dict[str, Any]) -> dict[str, str]:
        return {
            "x-container-object-count": str(info["item_count"]),
            "x-container-bytes-used": str(info["bytes_used"]),
            "x-timestamp": info["created_at"],
            "x-put-timestamp": info["put_timestamp"],
            "x-backend-put-timestamp": info["put_timestamp"],
            "x-backend-delete-timestamp": info["delete_timestamp"],
            "x-backend-status-changed-at": info["status_changed_at"],
            **metadata_headers(info["metadata"]),
        }

    async def dispatch(
        self,
        method: str,
        device: str,
        part: int,
        path: tuple[str, str, str],
        headers: dict[str, str],
        body: AsyncIterator[bytes],
        query: dict[str, str],
    ) -> BackendResponse:
        account, container, obj = path
        broker = self.broker(device, part, account, container)
        if method == "REPLICATE":
            return await self.replicate(device, part, path, body)
        if obj:
            return await self.object_row(method, broker, device, part, obj, headers)
        if method in ("GET", "HEAD"):
            return await self.head_or_get(broker, method, query)
        try:
            timestamp = timestamps.normalize(headers["x-timestamp"])
        except (KeyError, ValueError):
            return error(400, "missing or invalid X-Timestamp")
        if method == "PUT":
            return await self.put(broker, device, part, headers, timestamp)
        if method == "POST":
            return await self.post(broker, headers)
        if method == "DELETE":
            return await self.delete(broker, headers, timestamp)
        return error(405, method)

    async def object_row(
        self,
        method: str,
        broker: Broker,
        device: str,
        part: int,
        obj: str,
        headers: dict[str, str],
    ) -> BackendResponse:
        timestamp = timestamps.normalize(headers["x-timestamp"])
        record = {"name": obj, "created_at": timestamp, "deleted": int(method == "DELETE")}
        if method == "PUT":
            record.update(
                size=int(headers.get("x-size", "0")),
                content_type=headers.get("x-content-type", ""),
                etag=headers.get("x-etag", ""),
            )
        elif method != "DELETE":
            return error(405, method)
        run = self.cluster.run
        if not broker.exists() and broker.account.startswith("."):
            await run(self._create, broker, device, part, timestamp)
        await run(broker.put_pending, record)
        return BackendResponse(201 if method == "PUT" else 204, {})

    async def put(
        self, broker: Broker, device: str, part: int, headers: dict[str, str], timestamp: str
    ) -> BackendResponse:
        run = self.cluster.run
        created = await run(self._create, broker, device, part, timestamp)
        if not created:
            info = await run(broker.get_info)
            was_deleted = broker.is_deleted(info)
            await run(broker.update_put_timestamp, timestamp)
            info = await run(broker.get_info)
            created = was_deleted and not broker.is_deleted(info)
        await run(broker.update_metadata, metadata_updates(headers, self.meta_prefixes, timestamp))
        await self.report(broker, headers)
        return BackendResponse(201 if created else 202, {})

    async def delete(
        self, broker: Broker, headers: dict[str, str], timestamp: str
    ) -> BackendResponse:
        run = self.cluster.run
        info = await run(broker.get_info)
        if broker.is_deleted(info):
            return BackendResponse(404, {})
        if info["item_count"] > 0:
            return BackendResponse(409, {})
        await run(broker.mark_deleted, timestamp)
        await self.report(broker, headers)
        return BackendResponse(204, {})

    async def report(self, broker: Broker, headers: dict[str, str]) -> bool:
        """Send this container's totals to the account replica the proxy named."""
        host = headers.get("x-account-host")
        if not host:
            return False
        return await self.report_to(
            broker, host, headers["x-account-device"], int(headers["x-account-partition"])
        )

    async def report_to(self, broker: Broker, host: str, device: str, part: int) -> bool:
        run = self.cluster.run
        info = await run(broker.get_info)
        update = {
            "x-backend-kind": "account",
            "x-put-timestamp": info["put_timestamp"],
            "x-delete-timestamp": info["delete_timestamp"],
            "x-object-count": str(info["item_count"]),
            "x-bytes-used": str(info["bytes_used"]),
            "x-timestamp": timestamps.now(),
        }
        response = await with_timeout(
            self.cluster.backend(host).request(
                "PUT", device, part, (broker.account, broker.container, ""), update
            ),
            self.cluster.node_timeout,
        )
        await response.close()
        if response.ok:
            reported = _reported(info)
            await run(broker.set_reported, reported)
        return response.ok


def _reported(info: dict[str, Any]) -> str:
    return (
        f"{info['put_timestamp']}/{info['delete_timestamp']}/"
        f"{info['item_count']}/{info['bytes_used']}"
    )


def needs_report(info: dict[str, Any]) -> bool:
    """Whether the container's totals changed since the account last heard them."""
    return bool(info.get("reported") != _reported(info))


class AccountServer(DatabaseServer):
    """Account databases: container rows with their totals, account metadata."""

    kind = ACCOUNT
    meta_prefixes = ACCOUNT_META

    def load_info(self, broker: Broker) -> dict[str, Any]:
        info = broker.get_info()
        info["object_count"], info["bytes_used"] = broker.account_totals()
        return info

    def info_headers(self, info: dict[str, Any]) -> dict[str, str]:
        return {
            "x-account-container-count": str(info["item_count"]),
            "x-account-object-count": str(info["object_count"]),
            "x-account-bytes-used": str(info["bytes_used"]),
            "x-timestamp": info["created_at"],
            "x-put-timestamp": info["put_timestamp"],
            "x-backend-delete-timestamp": info["delete_timestamp"],
            **metadata_headers(info["metadata"]),
        }

    async def dispatch(
        self,
        method: str,
        device: str,
        part: int,
        path: tuple[str, str, str],
        headers: dict[str, str],
        body: AsyncIterator[bytes],
        query: dict[str, str],
    ) -> BackendResponse:
        account, container, _ = path
        broker = self.broker(device, part, account)
        if method == "REPLICATE":
            return await self.replicate(device, part, path, body)
        if method in ("GET", "HEAD"):
            return await self.head_or_get(broker, method, query)
        try:
            timestamp = timestamps.normalize(headers["x-timestamp"])
        except (KeyError, ValueError):
            return error(400, "missing or invalid X-Timestamp")
        run = self.cluster.run
        if container:
            if method != "PUT":
                return error(405, method)
            if not broker.exists():
                await run(self._create, broker, device, part, timestamp)
            record = {
                "name": container,
                "put_timestamp": headers.get("x-put-timestamp", ZERO),
                "delete_timestamp": headers.get("x-delete-timestamp", ZERO),
                "object_count": int(headers.get("x-object-count", "0")),
                "bytes_used": int(headers.get("x-bytes-used", "0")),
                "stats_timestamp": timestamp,
            }
            await run(broker.put_pending, record)
            return BackendResponse(201, {})
        if method == "PUT":
            created = await run(self._create, broker, device, part, timestamp)
            if not created:
                await run(broker.update_put_timestamp, timestamp)
            await run(
                broker.update_metadata, metadata_updates(headers, self.meta_prefixes, timestamp)
            )
            return BackendResponse(201 if created else 202, {})
        if method == "POST":
            return await self.post(broker, headers)
        if method == "DELETE":
            info = await run(broker.get_info)
            if broker.is_deleted(info):
                return BackendResponse(404, {})
            await run(broker.mark_deleted, timestamp)
            return BackendResponse(204, {})
        return error(405, method)
