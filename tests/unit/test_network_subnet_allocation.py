"""Prefix choice for subnets carved from a pool (``ipam.first_free_prefix``)."""

from __future__ import annotations

import pytest

from onestack.core.asgi.errors import BadRequest
from onestack.network import ipam


def test_first_free_prefix_skips_taken_and_misaligned_space() -> None:
    pool = ["10.200.0.0/16"]
    assert str(ipam.first_free_prefix(pool, 26, [])) == "10.200.0.0/26"
    # A /28 taken at .64 blocks the whole /26 around it: the next /26 starts at .128.
    taken = ["10.200.0.0/26", "10.200.0.64/28"]
    assert str(ipam.first_free_prefix(pool, 26, taken)) == "10.200.0.128/26"
    # A bigger prefix taken inside the pool is jumped over at once.
    assert str(ipam.first_free_prefix(pool, 24, ["10.200.0.0/17"])) == "10.200.128.0/24"


def test_first_free_prefix_uses_later_prefixes_and_reports_exhaustion() -> None:
    pools = ["10.0.0.0/24", "10.1.0.0/24"]
    assert str(ipam.first_free_prefix(pools, 25, ["10.0.0.0/24"])) == "10.1.0.0/25"
    assert ipam.first_free_prefix(pools, 25, ["10.0.0.0/8"]) is None
    assert ipam.first_free_prefix(pools, 16, []) is None  # longer than any prefix of the pool
    v6 = ["2001:db8::/48"]
    assert str(ipam.first_free_prefix(v6, 64, ["2001:db8::/64"])) == "2001:db8:0:1::/64"


def test_prefixes_are_merged_and_checked() -> None:
    merged = ipam.parse_prefixes(["10.200.0.0/16", "10.201.0.0/16", "10.200.5.0/24"])
    assert [str(p) for p in merged] == ["10.200.0.0/15"]
    for bad in ([], ["10.0.0.0/8", "2001:db8::/32"], ["nonsense"], "10.0.0.0/8"):
        with pytest.raises(BadRequest):
            ipam.parse_prefixes(bad)
    with pytest.raises(BadRequest):
        ipam.check_in_pool(ipam.ipaddress.IPv4Network("10.9.0.0/24"), ["10.200.0.0/16"])
