"""The volume scheduler's pure parts: extra spec operators, filters and the weigher."""

from __future__ import annotations

import pytest

from onestack.core.extra_specs import matches
from onestack.volume.scheduler.filters import FILTERS
from onestack.volume.scheduler.state import BackendState, RequestSpec
from onestack.volume.scheduler.weighers import ordered


@pytest.mark.parametrize(
    ("capability", "requirement", "expected"),
    [
        (True, "<is> True", True),
        (False, "<is> True", False),
        ("ssd-fast", "<in> ssd", True),
        ("hdd", "<in> ssd", False),
        ("b", "<or> a <or> b", True),
        ("c", "<or> a <or> b", False),
        (100, ">= 50", True),
        (10, ">= 50", False),
        (10, "== 10", True),
        (100, "50", True),  # a bare number means at least
        (10, "50", False),
        ("abc", "s== abc", True),
        ("abd", "s< abc", False),
        (["x", "y", "z"], "<all-in> x z", True),
        ("file", "file", True),
        ("file", "lvm", False),
        ("n/a", ">= 5", False),
    ],
)
def test_extra_spec_operators(capability: object, requirement: str, expected: bool) -> None:
    assert matches(capability, requirement, bare_is_minimum=True) is expected


def backend(host: str, **caps: object) -> BackendState:
    capabilities = {
        "volume_backend_name": host.partition("@")[2],
        "total_capacity_gb": 100.0,
        "free_capacity_gb": 80.0,
        "max_over_subscription_ratio": 2.0,
        "reserved_percentage": 0,
        "thin_provisioning_support": True,
        "multiattach": True,
        **caps,
    }
    return BackendState(
        host=host, availability_zone=str(caps.get("zone", "nova")), capabilities=capabilities
    )


def passing(backends: list[BackendState], spec: RequestSpec) -> list[str]:
    for _name, check in FILTERS:
        backends = [b for b in backends if check(b, spec)]
    return [b.host for b in backends]


def test_capacity_counts_promises_on_thin_backends() -> None:
    thin = backend("h@thin")
    thin.allocated_capacity_gb = 190  # of 100 GiB x 2 promised
    assert passing([thin], RequestSpec(size=10)) == ["h@thin"]
    assert passing([thin], RequestSpec(size=11)) == []
    thick = backend("h@thick", thin_provisioning_support=False, free_capacity_gb=5.0)
    assert passing([thick], RequestSpec(size=5)) == ["h@thick"]
    assert passing([thick], RequestSpec(size=6)) == []


def test_reserved_percentage_is_kept_free() -> None:
    thick = backend("h@thick", thin_provisioning_support=False, reserved_percentage=10)
    assert passing([thick], RequestSpec(size=70)) == ["h@thick"]
    assert passing([thick], RequestSpec(size=71)) == []


def test_extra_specs_zone_down_and_source_backend() -> None:
    fast, slow = backend("h@fast", disk="ssd"), backend("h@slow", disk="hdd")
    assert passing(
        [fast, slow], RequestSpec(size=1, extra_specs={"volume_backend_name": "slow"})
    ) == ["h@slow"]
    assert passing([fast, slow], RequestSpec(size=1, extra_specs={"capabilities:disk": "ssd"})) == [
        "h@fast"
    ]
    # Other scopes are not capabilities; a capability a backend lacks fails the match.
    assert len(passing([fast, slow], RequestSpec(size=1, extra_specs={"qos:iops": "5"}))) == 2
    assert passing([fast, slow], RequestSpec(size=1, extra_specs={"raid": "1"})) == []
    slow.up = False
    assert passing([fast, slow], RequestSpec(size=1)) == ["h@fast"]
    fast.disabled = True
    assert passing([fast, slow], RequestSpec(size=1)) == []
    other = backend("h@other", zone="az2")
    other.availability_zone = "az2"
    assert passing([other], RequestSpec(size=1, availability_zone="nova")) == []
    assert passing([other], RequestSpec(size=1, source_host="h@other#other")) == ["h@other"]
    assert passing([other], RequestSpec(size=1, source_host="h@fast#fast")) == []


def test_affinity_hints() -> None:
    one, two = backend("h@one"), backend("h@two")
    assert passing([one, two], RequestSpec(size=1, same_host=["h@two#two"])) == ["h@two"]
    assert passing([one, two], RequestSpec(size=1, different_host=["h@two#two"])) == ["h@one"]


def test_weigher_prefers_room_and_rotates_ties() -> None:
    roomy, tight = backend("h@roomy"), backend("h@tight")
    tight.allocated_capacity_gb = 150
    assert ordered([tight, roomy])[0].host == "h@roomy"
    twins = [backend("h@a"), backend("h@b")]
    firsts = {ordered(twins)[0].host for _ in range(4)}
    assert firsts == {"h@a", "h@b"}
