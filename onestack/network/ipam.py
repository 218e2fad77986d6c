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
# IPv6 address modes whose hosts make their addresses from their MACs (EUI-64).
AUTO_ADDRESS_MODES = ("slaac", "dhcpv6-stateless")


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


def auto_address(subnet_mode: str | None) -> bool:
    """Whether a subnet's addresses are made from the MAC (SLAAC or DHCPv6 stateless)."""
    return subnet_mode in AUTO_ADDRESS_MODES


def link_local(mac: str) -> str:
    """The IPv6 link-local address a host derives from ``mac`` (modified EUI-64)."""
    return eui64("fe80::/64", mac)


def eui64(cidr: str, mac: str) -> str:
    """The address ``mac`` gives itself by SLAAC in the /64 ``cidr`` (RFC 4291 appendix A)."""
    octets = bytearray(int(part, 16) for part in mac.split(":"))
    octets[0] ^= 0x02  # the universal/local bit is inverted in the interface identifier
    interface_id = int.from_bytes(octets[:3] + b"\xff\xfe" + octets[3:], "big")
    prefix = ipaddress.IPv6Network(cidr)
    return str(prefix.network_address + interface_id)


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


class SubnetAllocationError(APIError):
    """Neutron's 409 when a pool cannot give the requested prefix."""

    status = 409

    def __init__(self, reason: str, type: str = "SubnetAllocationError"):
        super().__init__(f"Failed to allocate subnet: {reason}.", type=type)


def parse_prefixes(prefixes: Any) -> list[IPNetwork]:
    """A pool's prefixes: a non-empty list of CIDRs of one IP version, merged where adjacent."""
    if not isinstance(prefixes, list) or not prefixes:
        raise BadRequest("Invalid input for prefixes: a non-empty list of CIDRs is expected.")
    networks = []
    for prefix in prefixes:
        try:
            networks.append(ipaddress.ip_network(str(prefix), strict=False))
        except ValueError:
            raise BadRequest(
                f"Invalid input for prefixes. Reason: '{prefix}' is not a valid IP subnet."
            ) from None
    if len({network.version for network in networks}) > 1:
        raise BadRequest(
            "Illegal subnetpool prefixes: mixing IP versions is not allowed.",
            type="PrefixVersionMismatch",
        )
    return list(ipaddress.collapse_addresses(networks))  # type: ignore[type-var]


def check_in_pool(network: IPNetwork, prefixes: list[str]) -> None:
    """400 unless ``network`` lies inside one of a pool's ``prefixes``."""
    if not any(network.subnet_of(ipaddress.ip_network(p)) for p in prefixes):  # type: ignore[arg-type]
        raise BadRequest(
            f"Cidr {network} is not within the subnet pool's prefixes {', '.join(prefixes)}.",
            type="InvalidInput",
        )


def first_free_prefix(prefixes: list[str], prefixlen: int, used: list[str]) -> IPNetwork | None:
    """The lowest prefix of length ``prefixlen`` in ``prefixes`` overlapping none of ``used``."""
    taken = [ipaddress.ip_network(cidr) for cidr in used]
    for prefix in sorted(ipaddress.ip_network(p) for p in prefixes):
        if prefixlen < prefix.prefixlen:
            continue
        size = 1 << (prefix.max_prefixlen - prefixlen)
        start, end = int(prefix.network_address), int(prefix.broadcast_address)
        while start + size - 1 <= end:
            candidate = ipaddress.ip_network((start, prefixlen))
            clashes = [t for t in taken if t.version == prefix.version and t.overlaps(candidate)]
            if not clashes:
                return candidate
            # Jump past the clashing prefixes, to the next boundary of the requested size.
            after = max(int(t.broadcast_address) for t in clashes) + 1
            start = -(-after // size) * size
    return None
