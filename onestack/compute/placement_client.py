"""Compute's calls to placement: providers and inventories of compute nodes, allocation
candidates for a flavor, and allocations (claims) of servers."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from onestack.core.asgi.errors import APIError
from onestack.core.client import ServiceClient
from onestack.core.config import ComputeSettings

log = logging.getLogger(__name__)

HEADERS = {"OpenStack-API-Version": "placement 1.36"}
# Custom traits must exist in placement before a provider can carry them.
STANDARD_PREFIXES = ("COMPUTE_", "HW_", "STORAGE_", "MISC_")


class PlacementError(Exception):
    """Placement refused or failed a request."""


@dataclass
class Candidate:
    """One provider that can take the request, with its capacity and usage."""

    provider_uuid: str
    capacity: dict[str, int] = field(default_factory=dict)
    used: dict[str, int] = field(default_factory=dict)


class CandidatePool:
    """Placement's candidates for one kind of request (resources and zone), shared by the
    requests of the next ``ttl`` seconds instead of one placement query each. What this
    process chooses meanwhile is added to their usage at once (as Nova's scheduler consumes
    its host states), so concurrent requests spread; a refused claim drops the entry.
    Placement's claims stay the truth: a stale entry can cost a retry, never a host."""

    def __init__(self, ttl: float):
        self.ttl = ttl
        self._entries: dict[Hashable, tuple[float, asyncio.Task[list[Candidate]]]] = {}

    async def get(
        self, key: Hashable, fetch: Callable[[], Awaitable[list[Candidate]]]
    ) -> list[Candidate]:
        """The shared candidates of ``key``, fetched once per ``ttl`` (concurrent callers
        wait for the same query)."""
        now = time.monotonic()
        entry = self._entries.get(key)
        if entry is None or entry[0] <= now:
            entry = (now + self.ttl, asyncio.ensure_future(fetch()))
            self._entries[key] = entry
        try:
            return await asyncio.shield(entry[1])
        except Exception:
            self.drop(key)
            raise

    def consume(self, key: Hashable, provider_uuid: str, resources: dict[str, int]) -> None:
        """Count ``resources`` as used on the provider in the shared entry of ``key``."""
        entry = self._entries.get(key)
        if entry is None or not entry[1].done() or entry[1].exception() is not None:
            return
        for candidate in entry[1].result():
            if candidate.provider_uuid == provider_uuid:
                for rc, amount in resources.items():
                    candidate.used[rc] = candidate.used.get(rc, 0) + amount

    def drop(self, key: Hashable) -> None:
        """Forget the entry of ``key``: the next request asks placement again."""
        self._entries.pop(key, None)


def reserved_memory_mb(hypervisor_type: str) -> int:
    """Memory kept for the host itself: 512 MB on real hosts, none on simulated ones."""
    return 0 if hypervisor_type == "fake" else 512


def flavor_resources(flavor: dict[str, Any], volume_backed: bool = False) -> dict[str, int]:
    """The resource classes and amounts one server of ``flavor`` consumes; a volume-backed
    server's root disk is no local disk (Nova counts its root_gb as 0)."""
    resources = {"VCPU": int(flavor["vcpus"]), "MEMORY_MB": int(flavor["ram"])}
    root = 0 if volume_backed else int(flavor.get("disk", 0))
    disk = root + int(flavor.get("ephemeral", 0))
    swap = int(flavor.get("swap") or 0)
    disk += (swap + 1023) // 1024
    if disk:
        resources["DISK_GB"] = disk
    return resources


class PlacementClient:
    """Placement, through the service client (in memory in the all-in-one process)."""

    def __init__(self, client: ServiceClient, config: ComputeSettings):
        self.client = client
        self.config = config
        self._reported: dict[str, tuple[Any, ...]] = {}

    async def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = await self.client.request(
                "placement", method, path, headers=HEADERS, **kwargs
            )
        except APIError as exc:
            raise PlacementError(exc.message) from exc
        return response

    async def ensure_node(
        self,
        uuid: str,
        name: str,
        *,
        vcpus: int,
        memory_mb: int,
        disk_gb: int,
        reserved_mb: int,
        traits: list[str],
    ) -> None:
        """Create the node's provider if needed and set its inventory and traits (once per
        change: heartbeats repeating the same capacity cost nothing)."""
        key = (vcpus, memory_mb, disk_gb, reserved_mb, tuple(sorted(traits)))
        if self._reported.get(uuid) == key:
            return
        found = await self._request("GET", f"/resource_providers/{uuid}")
        if found.status_code == 404:
            created = await self._request(
                "POST", "/resource_providers", json={"uuid": uuid, "name": name}
            )
            if created.status_code not in (200, 201, 409):
                raise PlacementError(f"creating provider {name}: {created.text[:200]}")
            found = await self._request("GET", f"/resource_providers/{uuid}")
        generation = found.json()["generation"]
        inventories = {
            "VCPU": {"total": vcpus, "allocation_ratio": self.config.cpu_allocation_ratio},
            "MEMORY_MB": {
                "total": memory_mb,
                "reserved": reserved_mb,
                "allocation_ratio": self.config.ram_allocation_ratio,
            },
            "DISK_GB": {"total": disk_gb, "allocation_ratio": self.config.disk_allocation_ratio},
        }
        body = {"resource_provider_generation": generation, "inventories": inventories}
        put = await self._request("PUT", f"/resource_providers/{uuid}/inventories", json=body)
        if put.status_code != 200:
            raise PlacementError(f"inventory of {name}: {put.status_code} {put.text[:200]}")
        generation = put.json()["resource_provider_generation"]
        for trait in traits:
            if not trait.startswith(STANDARD_PREFIXES):
                await self._request("PUT", f"/traits/{trait}")
        body = {"resource_provider_generation": generation, "traits": sorted(traits)}
        put = await self._request("PUT", f"/resource_providers/{uuid}/traits", json=body)
        if put.status_code != 200:
            raise PlacementError(f"traits of {name}: {put.status_code} {put.text[:200]}")
        self._reported[uuid] = key

    def forget(self, uuid: str) -> None:
        """Report the node's inventory again on its next heartbeat."""
        self._reported.pop(uuid, None)

    async def candidates(
        self,
        resources: dict[str, int],
        *,
        required: Sequence[str] = (),
        forbidden: Sequence[str] = (),
        in_tree: str | None = None,
        member_of: Sequence[str] = (),
        limit: int | None = None,
    ) -> list[Candidate]:
        """Providers that can take ``resources`` (at most ``limit``, by default
        ``[compute] allocation_candidates_limit``), shuffled (equal weights spread); with
        ``member_of``, only providers in one of those aggregates."""
        params: dict[str, Any] = {
            "resources": ",".join(f"{k}:{v}" for k, v in sorted(resources.items()) if v),
            "limit": str(limit or self.config.allocation_candidates_limit),
        }
        traits = [*required, *(f"!{t}" for t in forbidden)]
        if traits:
            params["required"] = ",".join(traits)
        if in_tree:
            params["in_tree"] = in_tree
        if member_of:
            params["member_of"] = "in:" + ",".join(member_of)
        response = await self._request("GET", "/allocation_candidates", params=params)
        if response.status_code != 200:
            raise PlacementError(f"allocation candidates: {response.text[:200]}")
        summaries = response.json()["provider_summaries"]
        found = [
            Candidate(
                uuid,
                {rc: int(v["capacity"]) for rc, v in summary["resources"].items()},
                {rc: int(v["used"]) for rc, v in summary["resources"].items()},
            )
            for uuid, summary in summaries.items()
        ]
        random.shuffle(found)
        return found

    async def claim(
        self,
        consumer: str,
        allocations: dict[str, dict[str, int]],
        project_id: str,
        user_id: str,
        *,
        new: bool = False,
    ) -> bool:
        """Allocate ``{provider: resources}`` to the consumer (replacing what it had; ``new``:
        it has nothing yet); False when a provider no longer has room (another scheduler
        got there first)."""
        generation = None
        if not new:
            current = await self._request("GET", f"/allocations/{consumer}")
            if current.status_code == 200:
                generation = current.json().get("consumer_generation")
        body = {
            "allocations": {rp: {"resources": res} for rp, res in allocations.items()},
            "project_id": project_id,
            "user_id": user_id,
            "consumer_generation": generation,
        }
        response = await self._request("PUT", f"/allocations/{consumer}", json=body)
        if response.status_code == 204:
            return True
        if response.status_code == 409:
            log.info("claim for %s refused: %s", consumer, response.text[:200])
            return False
        raise PlacementError(f"claim for {consumer}: {response.status_code} {response.text[:200]}")

    async def allocations(self, consumer: str) -> dict[str, dict[str, int]]:
        """What the consumer holds, by provider."""
        response = await self._request("GET", f"/allocations/{consumer}")
        if response.status_code != 200:
            return {}
        return {
            rp: {rc: int(v) for rc, v in alloc["resources"].items()}
            for rp, alloc in response.json().get("allocations", {}).items()
        }

    async def release(self, consumer: str) -> None:
        """Drop every allocation of the consumer (idempotent)."""
        response = await self._request("DELETE", f"/allocations/{consumer}")
        if response.status_code not in (204, 404):
            raise PlacementError(f"releasing {consumer}: {response.text[:200]}")

    async def set_aggregates(self, uuid: str, aggregates: list[str]) -> None:
        """Mirror the node's host aggregates as placement aggregates."""
        found = await self._request("GET", f"/resource_providers/{uuid}")
        if found.status_code != 200:
            return
        body = {
            "aggregates": aggregates,
            "resource_provider_generation": found.json()["generation"],
        }
        await self._request("PUT", f"/resource_providers/{uuid}/aggregates", json=body)
