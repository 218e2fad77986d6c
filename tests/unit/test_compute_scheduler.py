"""The compute filter scheduler: each filter, the weighers, and host selection."""

from __future__ import annotations

import random
import time

import pytest

from onestack.compute.scheduler import filters as filters_module
from onestack.compute.scheduler.filters import BUILTIN, HostFilter, load_filters
from onestack.compute.scheduler.selection import (
    NO_VALID_HOST,
    FilterScheduler,
    NoValidHost,
    select_destinations,
)
from onestack.compute.scheduler.state import (
    AggregateInfo,
    FlavorInfo,
    HostState,
    RequestSpec,
    ServerGroupInfo,
)
from onestack.compute.scheduler.weighers import normalize
from onestack.core.config import ComputeSchedulerSettings
from onestack.core.extra_specs import matches


def make_host(name: str, **kwargs: object) -> HostState:
    defaults: dict[str, object] = {
        "vcpus_total": 8,
        "ram_total_mb": 16384,
        "disk_total_gb": 100,
        "ram_allocation_ratio": 1.0,
        "cpu_allocation_ratio": 1.0,
    }
    defaults.update(kwargs)
    return HostState(host=name, uuid=f"uuid-{name}", **defaults)  # type: ignore[arg-type]


def passing(name: str, hosts: list[HostState], spec: RequestSpec) -> list[str]:
    host_filter = BUILTIN[name]()
    if not host_filter.applies(spec):
        return [host.host for host in hosts]
    return [host.host for host in hosts if host_filter.passes(host, spec)]


@pytest.mark.parametrize(
    ("value", "requirement", "expected"),
    [
        ("true", "true", True),
        ("true", "false", False),
        (8, "= 4", True),
        (2, "= 4", False),
        (4, "== 4", True),
        (4, "!= 4", False),
        (4, "<= 4", True),
        ("abc", "s== abc", True),
        ("abd", "s> abc", True),
        ("x86_64 avx2", "<in> avx", True),
        (["avx", "sse"], "<all-in> avx sse", True),
        (["avx"], "<all-in> avx sse", False),
        ("kvm", "<or> qemu <or> kvm", True),
        ("xen", "<or> qemu <or> kvm", False),
        ("text", ">= 4", False),
    ],
)
def test_extra_spec_operators(value: object, requirement: str, expected: bool) -> None:
    assert matches(value, requirement) is expected


def test_compute_filter_drops_disabled_and_down_hosts() -> None:
    hosts = [
        make_host("up"),
        make_host("disabled", service_disabled=True),
        make_host("down", service_up=False),
    ]
    assert passing("ComputeFilter", hosts, RequestSpec()) == ["up"]


def test_availability_zone_from_aggregates_and_default() -> None:
    zoned = make_host("h1", aggregates=[AggregateInfo("a", metadata={"availability_zone": "z1"})])
    plain = make_host("h2")
    hosts = [zoned, plain]
    assert passing("AvailabilityZoneFilter", hosts, RequestSpec(availability_zone="z1")) == ["h1"]
    assert passing("AvailabilityZoneFilter", hosts, RequestSpec(availability_zone="nova")) == ["h2"]
    assert passing("AvailabilityZoneFilter", hosts, RequestSpec()) == ["h1", "h2"]


def test_aggregate_instance_extra_specs() -> None:
    ssd = make_host("ssd", aggregates=[AggregateInfo("fast", metadata={"SSD": "true,yes"})])
    hdd = make_host("hdd", aggregates=[AggregateInfo("slow", metadata={"SSD": "false"})])
    bare = make_host("bare")
    hosts = [ssd, hdd, bare]
    scoped = RequestSpec(
        flavor=FlavorInfo(extra_specs={"aggregate_instance_extra_specs:SSD": "true"})
    )
    assert passing("AggregateInstanceExtraSpecsFilter", hosts, scoped) == ["ssd"]
    comma = RequestSpec(
        flavor=FlavorInfo(extra_specs={"aggregate_instance_extra_specs:SSD": "yes"})
    )
    assert passing("AggregateInstanceExtraSpecsFilter", hosts, comma) == ["ssd"]
    other_scope = RequestSpec(flavor=FlavorInfo(extra_specs={"hw:cpu_policy": "dedicated"}))
    assert passing("AggregateInstanceExtraSpecsFilter", hosts, other_scope) == [
        "ssd",
        "hdd",
        "bare",
    ]


def test_compute_capabilities() -> None:
    kvm = make_host("kvm", hypervisor_type="QEMU", cpu_info={"arch": "x86_64"}, vcpus_total=32)
    small = make_host("small", hypervisor_type="QEMU", cpu_info={"arch": "aarch64"})
    hosts = [kvm, small]
    spec = RequestSpec(
        flavor=FlavorInfo(
            extra_specs={
                "capabilities:cpu_info:arch": "x86_64",
                "capabilities:vcpus_total": ">= 16",
                "aggregate_instance_extra_specs:SSD": "true",
            }
        )
    )
    assert passing("ComputeCapabilitiesFilter", hosts, spec) == ["kvm"]
    missing = RequestSpec(flavor=FlavorInfo(extra_specs={"capabilities:no_such": "1"}))
    assert passing("ComputeCapabilitiesFilter", hosts, missing) == []


def test_image_properties() -> None:
    x86 = make_host("x86", supported_instances=[("x86_64", "qemu", "hvm")], hypervisor_version=8)
    arm = make_host("arm", supported_instances=[("aarch64", "qemu", "hvm")], hypervisor_version=6)
    none = make_host("none")
    hosts = [x86, arm, none]
    arch = RequestSpec(image_properties={"hw_architecture": "aarch64"})
    assert passing("ImagePropertiesFilter", hosts, arch) == ["arm"]
    version = RequestSpec(image_properties={"img_hv_requested_version": ">= 7"})
    assert passing("ImagePropertiesFilter", hosts, version) == ["x86"]
    assert passing("ImagePropertiesFilter", hosts, RequestSpec()) == ["x86", "arm", "none"]


def test_server_group_affinity_and_anti_affinity() -> None:
    h1 = make_host("h1", instances={"m1": "g"})
    h2 = make_host("h2", instances={"m2": "g", "m3": "g"})
    h3 = make_host("h3")
    hosts = [h1, h2, h3]
    affinity = RequestSpec(group=ServerGroupInfo("g", "affinity", hosts={"h2"}))
    assert passing("ServerGroupAffinityFilter", hosts, affinity) == ["h2"]
    first = RequestSpec(group=ServerGroupInfo("g", "affinity"))
    assert passing("ServerGroupAffinityFilter", hosts, first) == ["h1", "h2", "h3"]
    anti = RequestSpec(group=ServerGroupInfo("g", "anti-affinity"))
    assert passing("ServerGroupAntiAffinityFilter", hosts, anti) == ["h3"]
    two = RequestSpec(group=ServerGroupInfo("g", "anti-affinity", max_server_per_host=2))
    assert passing("ServerGroupAntiAffinityFilter", hosts, two) == ["h1", "h3"]


def test_same_and_different_host_hints() -> None:
    hosts = [make_host("h1", instances={"a": None}), make_host("h2", instances={"b": None})]
    assert passing("SameHostFilter", hosts, RequestSpec(same_host=["a"])) == ["h1"]
    assert passing("DifferentHostFilter", hosts, RequestSpec(different_host=["a"])) == ["h2"]
    assert passing("DifferentHostFilter", hosts, RequestSpec(different_host=["a", "b"])) == []


def test_aggregate_multitenancy_isolation() -> None:
    private = make_host(
        "private",
        aggregates=[AggregateInfo("p", metadata={"filter_tenant_id": "p1,p2"})],
    )
    extra = make_host(
        "extra", aggregates=[AggregateInfo("q", metadata={"filter_tenant_id_more": "p3"})]
    )
    public = make_host("public")
    hosts = [private, extra, public]
    assert passing("AggregateMultiTenancyIsolation", hosts, RequestSpec(project_id="p2")) == [
        "private",
        "public",
    ]
    assert passing("AggregateMultiTenancyIsolation", hosts, RequestSpec(project_id="p3")) == [
        "extra",
        "public",
    ]


def test_normalize() -> None:
    assert normalize([2, 4, 6]) == [0.0, 0.5, 1.0]
    assert normalize([3, 3]) == [0.0, 0.0]
    assert normalize([]) == []


def test_ram_weigher_spreads_and_negative_multiplier_stacks() -> None:
    def hosts() -> list[HostState]:
        return [make_host("busy", ram_used_mb=8192), make_host("idle")]

    spread = select_destinations(RequestSpec(), hosts())
    assert spread[0].host.host == "idle"
    stack_settings = ComputeSchedulerSettings(
        ram_weight_multiplier=-1.0, cpu_weight_multiplier=0, disk_weight_multiplier=0
    )
    stacked = select_destinations(RequestSpec(), hosts(), settings=stack_settings)
    assert stacked[0].host.host == "busy"


def test_build_failures_outweigh_free_resources() -> None:
    hosts = [make_host("flaky", failed_builds=2), make_host("full", ram_used_mb=12000)]
    assert select_destinations(RequestSpec(), hosts)[0].host.host == "full"


def test_soft_affinity_weighers() -> None:
    def hosts() -> list[HostState]:
        return [make_host("h1", instances={"m": "g"}), make_host("h2", instances={"x": None})]

    soft = RequestSpec(group=ServerGroupInfo("g", "soft-affinity", members={"m"}))
    assert select_destinations(soft, hosts())[0].host.host == "h1"
    soft_anti = RequestSpec(group=ServerGroupInfo("g", "soft-anti-affinity", members={"m"}))
    assert select_destinations(soft_anti, hosts())[0].host.host == "h2"


def test_multi_instance_anti_affinity_spreads_then_fails() -> None:
    hosts = [make_host(f"host{i}") for i in range(1, 4)]
    group = ServerGroupInfo("g", "anti-affinity")
    spec = RequestSpec(group=group, num_instances=3, instance_uuids=["a", "b", "c"])
    chosen = [selection.host.host for selection in select_destinations(spec, hosts)]
    assert sorted(chosen) == ["host1", "host2", "host3"]
    assert group.members == {"a", "b", "c"}
    fourth = RequestSpec(group=group, instance_uuids=["d"])
    with pytest.raises(NoValidHost) as caught:
        select_destinations(fourth, hosts)
    assert str(caught.value) == NO_VALID_HOST
    assert "ServerGroupAntiAffinityFilter" in caught.value.detail


def test_consuming_respects_capacity_within_one_request() -> None:
    hosts = [make_host("h1", vcpus_total=2), make_host("h2", vcpus_total=2)]
    spec = RequestSpec(flavor=FlavorInfo(vcpus=1, ram_mb=512, root_gb=1), num_instances=4)
    chosen = [selection.host.host for selection in select_destinations(spec, hosts)]
    assert sorted(chosen) == ["h1", "h1", "h2", "h2"]
    assert hosts[0].vcpus_used == 2 and hosts[0].num_instances == 2
    with pytest.raises(NoValidHost):
        select_destinations(RequestSpec(flavor=FlavorInfo(vcpus=1)), hosts)


def test_alternates_ignore_forced_and_requested_hosts() -> None:
    hosts = [make_host(f"h{i}", ram_used_mb=i * 1000) for i in range(5)]
    selection = select_destinations(RequestSpec(), hosts)[0]
    assert selection.host.host == "h0"
    assert [alt.host for alt in selection.alternates] == ["h1", "h2"]
    ignored = select_destinations(RequestSpec(ignore_hosts={"h0", "h1"}), hosts)[0]
    assert ignored.host.host == "h2"
    disabled = make_host("off", service_disabled=True)
    forced = select_destinations(RequestSpec(force_hosts=["off"]), [*hosts, disabled])[0]
    assert forced.host.host == "off"
    with pytest.raises(NoValidHost):
        select_destinations(RequestSpec(requested_host="off"), [*hosts, disabled])


def test_host_subset_size_randomizes_among_the_best() -> None:
    settings = ComputeSchedulerSettings(host_subset_size=3)
    seen = set()
    for seed in range(30):
        hosts = [make_host(f"h{i}", ram_used_mb=i * 1000) for i in range(6)]
        scheduler = FilterScheduler(settings, rng=random.Random(seed))
        seen.add(scheduler.select_destinations(RequestSpec(), hosts)[0].host.host)
    assert seen == {"h0", "h1", "h2"}


def test_enabled_filters_from_settings_and_unknown_names() -> None:
    settings = ComputeSchedulerSettings(enabled_filters=["ComputeFilter"])
    hosts = [make_host("h1", aggregates=[AggregateInfo("a", metadata={"availability_zone": "z"})])]
    # The zone filter is not enabled, so the zone request does not constrain.
    assert select_destinations(RequestSpec(availability_zone="other"), hosts, settings=settings)
    with pytest.raises(ValueError, match="NoSuchFilter"):
        load_filters(["NoSuchFilter"])
    with pytest.raises(ValueError, match="NoSuchWeigher"):
        FilterScheduler(ComputeSchedulerSettings(enabled_weighers=["NoSuchWeigher"]))


class EvenHostsOnly(HostFilter):
    """A plug-in filter for the test below."""

    def passes(self, host: HostState, spec: RequestSpec) -> bool:
        return int(host.host[1:]) % 2 == 0


class FakeEntryPoint:
    name = "EvenHostsOnly"

    def load(self) -> type[HostFilter]:
        return EvenHostsOnly


def test_custom_filter_by_entry_point(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_entry_points(group: str) -> list[FakeEntryPoint]:
        return [FakeEntryPoint()] if group == filters_module.ENTRY_POINT_GROUP else []

    monkeypatch.setattr(filters_module, "entry_points", fake_entry_points)
    settings = ComputeSchedulerSettings(enabled_filters=["ComputeFilter", "EvenHostsOnly"])
    hosts = [make_host(f"h{i}", ram_used_mb=(9 - i) * 100) for i in range(1, 6)]
    chosen = select_destinations(RequestSpec(num_instances=3), hosts, settings=settings)
    assert {selection.host.host for selection in chosen} == {"h2", "h4"}


def test_ten_thousand_hosts_schedule_quickly() -> None:
    hosts = [
        make_host(f"h{i}", ram_used_mb=(i * 7919) % 16000, num_io_ops=i % 5) for i in range(10000)
    ]
    scheduler = FilterScheduler()
    spec = RequestSpec(availability_zone="nova", project_id="p")
    scheduler.select_destinations(spec, hosts)
    started = time.perf_counter()
    scheduler.select_destinations(RequestSpec(availability_zone="nova", project_id="p"), hosts)
    assert time.perf_counter() - started < 1.0
