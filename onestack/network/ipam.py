"""IP address management: subnet validation, allocation pools and address choice.

Correctness under concurrency comes from the database: an address is held by
a row keyed (subnet, address), so two ports can never get the same one; a
request that loses the race retries with a fresh view (see ``api/ports.py``).
"""

from __future__ import annotations

import ipaddress
import itertools
import random
from collections.abc import Iterator
from typing import Any

from onestack.core.asgi.errors import APIError, BadRequest

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# Choose among the first few free addresses: concurrent requests rarely pick the same one.
SPREAD = 16


class IpAddressGenerationFailure(APIError):
    status = 409

    def __init__(self, network_id: str):
        super().__init__(
            f"No more IP addresses available on network {network_id}.",
            type="IpAddressGenerationFailure",
        )


def parse_cidr(cidr: str, ip_version: int) -> IPNetwork:
    """The subnet's network; 400 when it is not a network of that version."""
    try:
        network = ipaddress.ip_network(cidr, strict=True)
    except ValueError as exc:
        raise BadRequest(
            f"Invalid input for cidr. Reason: '{cidr}' is not a valid IP subnet ({exc}).",
            type="HTTPBadRequest",
        ) from None
    if network.version != ip_version:
        raise BadRequest(f"Invalid input for operation: cidr {cidr} is not IPv{ip_version}.")
    if network.prefixlen >= network.max_prefixlen - (0 if ip_version == 6 else 1):
        raise BadRequest(f"Invalid input for operation: cidr {cidr} is too small for hosts.")
    return network


def parse_address(
    text: str, network: IPNetwork | None = None, what: str = "ip_address"
) -> IPAddress:
    """An address, optionally required to lie inside ``network``."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise BadRequest(
            f"Invalid input for {what}. Reason: '{text}' is not a valid IP address."
        ) from None
    if network is not None and address not in network:
        raise BadRequest(f"IP address {text} is not a valid IP for the subnet {network}.")
    return address


def host_range(network: IPNetwork) -> tuple[int, int]:
    """First and last usable host as integers (IPv4 skips network and broadcast)."""
    first, last = int(network.network_address), int(network.broadcast_address)
    return (first + 1, last - 1) if network.version == 4 else (first + 1, last)


def default_pools(network: IPNetwork, gateway: IPAddress | None) -> list[dict[str, str]]:
    """All usable hosts, split around the gateway."""
    first, last = host_range(network)
    ranges: list[tuple[int, int]] = [(first, last)]
    if gateway is not None and first <= int(gateway) <= last:
        g = int(gateway)
        ranges = [(first, g - 1), (g + 1, last)]
    make = ipaddress.ip_address
    return [{"start": str(make(a)), "end": str(make(b))} for a, b in ranges if a <= b]


def check_pools(
    pools: list[dict[str, Any]], network: IPNetwork, gateway: IPAddress | None
) -> list[dict[str, str]]:
    """Validate client-given pools: inside the subnet, ordered, apart, not holding the gateway."""
    spans: list[tuple[int, int]] = []
    first, last = host_range(network)
    for pool in pools:
        if not isinstance(pool, dict) or "start" not in pool or "end" not in pool:
            raise BadRequest("Invalid input for allocation_pools: each needs start and end.")
        start = int(parse_address(str(pool["start"]), network, "allocation_pools"))
        end = int(parse_address(str(pool["end"]), network, "allocation_pools"))
        if start > end or start < first or end > last:
            raise BadRequest(
                f"The allocation pool {pool['start']}-{pool['end']} spans beyond the subnet "
                f"cidr {network}.",
                type="InvalidAllocationPool",
            )
        spans.append((start, end))
    spans.sort()
    for (_, end), (start, _) in itertools.pairwise(spans):
        if start <= end:
            raise BadRequest(
                "Found overlapping allocation pools.", type="OverlappingAllocationPools"
            )
    if gateway is not None and any(a <= int(gateway) <= b for a, b in spans):
        raise BadRequest(
            f"Gateway ip {gateway} conflicts with allocation pool.",
            type="GatewayConflictWithAllocationPools",
        )
    make = ipaddress.ip_address
    return [{"start": str(make(a)), "end": str(make(b))} for a, b in spans]


def free_addresses(pools: list[dict[str, str]], used: set[str]) -> Iterator[str]:
    """Addresses of the pools not in ``used``, in order."""
    for pool in pools:
        start, end = (
            int(ipaddress.ip_address(pool["start"])),
            int(ipaddress.ip_address(pool["end"])),
        )
        for value in range(start, end + 1):
            text = str(ipaddress.ip_address(value))
            if text not in used:
                yield text


def pick_address(pools: list[dict[str, str]], used: set[str]) -> str | None:
    """A free address, chosen at random among the first few free ones; None if exhausted."""
    choices = []
    for address in free_addresses(pools, used):
        choices.append(address)
        if len(choices) >= SPREAD:
            break
    return random.choice(choices) if choices else None
