"""The linuxbridge data plane's pure parts: names, nftables rulesets, dnsmasq files."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from onestack.network.drivers.linuxbridge import bridges, dhcp, firewall, routers
from onestack.network.drivers.linuxbridge.features import HostFeatures
from onestack.network.drivers.linuxbridge.metadata import sign

NET = "6f1c2d3e-4a5b-4c6d-8e9f-0a1b2c3d4e5f"
SUBNET = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"


def port(ident: str, address: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": ident,
        "network_id": NET,
        "mac_address": "fa:16:3e:00:00:" + ident[-2:],
        "fixed_ips": [{"subnet_id": SUBNET, "ip_address": address, "cidr": "10.0.0.0/24"}],
        "device_owner": "compute:nova",
        "device_id": "server-" + ident,
        "project_id": "p",
        "port_security_enabled": True,
        "allowed_address_pairs": [],
        "security_groups": ["g"],
        **extra,
    }


def rule(direction: str, **extra: Any) -> dict[str, Any]:
    base = {"direction": direction, "ethertype": "IPv4", "protocol": None}
    base |= {"port_range_min": None, "port_range_max": None}
    return base | {"remote_ip_prefix": None, "remote_group_id": None} | extra


def test_names_fit_linux_interface_names() -> None:
    assert bridges.bridge_name(NET) == "brq6f1c2d3e-4a"
    assert bridges.tap_name(NET) == "tap6f1c2d3e-4a"
    assert all(len(n) <= 15 for n in (*bridges.uplink_names(NET), dhcp.inner_name(NET)))


def test_network_types_follow_the_detected_features() -> None:
    features = HostFeatures(True, True, True, vxlan=False, vlan=False, bridge_netfilter=True)
    assert features.network_types() == {"local", "flat"}
    assert "vxlan" in HostFeatures(True, True, True, True, False, True).network_types()
    assert HostFeatures(False, True, False, False, False, False).network_types() == set()


def test_security_groups_default_deny_ingress_and_stateful() -> None:
    groups = {
        "g": {
            "rules": [
                rule("egress"),
                rule("ingress", protocol="tcp", port_range_min=22, port_range_max=22,
                     remote_ip_prefix="192.0.2.0/24"),
                rule("ingress", protocol="icmp", remote_group_id="g"),
            ],
            "members": ["10.0.0.5", "10.0.0.6"],
        }
    }  # fmt: skip
    text = firewall.ruleset([port("aaaaaaaa-0001", "10.0.0.5")], groups, "t1")
    ingress = text.split("chain ingress_aaaaaaaa0001 {")[1].split("\n  }")[0]
    assert "ct state established,related accept" in ingress
    assert "ip saddr 192.0.2.0/24 meta l4proto tcp tcp dport 22-22 accept" in ingress
    assert "ip saddr @members_g_4 meta l4proto icmp accept" in ingress
    assert (
        "set members_g_4 { type ipv4_addr; flags interval; auto-merge; "
        "elements = { 10.0.0.5/32, 10.0.0.6/32 }" in text
    )
    assert ingress.strip().endswith("drop")
    assert 'oifname "brq6f1c2d3e-4a" jump to_brq6f1c2d3e-4a' in text
    assert "ip daddr { 10.0.0.5/32 } jump ingress_aaaaaaaa0001" in text
    # Whole tables are replaced: a deleted port leaves no chain behind.
    assert text.startswith("table bridge onestack_antispoof_t1\ndelete table")
    assert "delete table inet onestack_sg_t1" in text


def test_ruleset_size_grows_linearly_with_ports() -> None:
    groups = {"g": {"rules": [rule("ingress", remote_group_id="g")], "members": []}}
    ports = [port(f"aaaaaaaa-{i:04d}", f"10.0.{i // 250}.{i % 250 + 1}") for i in range(1000)]
    groups["g"]["members"] = [p["fixed_ips"][0]["ip_address"] for p in ports]
    assert len(firewall.ruleset(ports, groups, "t3")) < 2_000_000


def test_anti_spoofing_honours_allowed_address_pairs_and_port_security() -> None:
    pairs = [{"ip_address": "10.0.9.0/24", "mac_address": "fa:16:3e:aa:bb:cc"}]
    guarded = port("aaaaaaaa-0002", "10.0.0.7", allowed_address_pairs=pairs)
    open_port = port("aaaaaaaa-0003", "10.0.0.8", port_security_enabled=False)
    router_leg = port("aaaaaaaa-0004", "10.0.0.1", device_owner="network:router_interface")
    text = firewall.ruleset([guarded, open_port, router_leg], {}, "t2")
    chain = text.split("chain spoof_aaaaaaaa0002 {")[1].split("\n  }")[0]
    assert "ether saddr != { fa:16:3e:00:00:02, fa:16:3e:aa:bb:cc } drop" in chain
    assert "ip saddr != { 10.0.0.7/32, 10.0.9.0/24, 0.0.0.0 } drop" in chain
    assert "udp sport 67 drop" in chain
    assert "aaaaaaaa0003" not in text and "aaaaaaaa0004" not in text


def test_a_port_administratively_down_passes_nothing() -> None:
    down = port("aaaaaaaa-0005", "10.0.0.9", admin_state_up=False, port_security_enabled=False)
    text = firewall.ruleset([down], {}, "t4")
    assert 'iifname "tapaaaaaaaa-00" drop' in text
    assert 'oifname "tapaaaaaaaa-00" drop' in text


def test_dnsmasq_serves_fixed_addresses_with_routes_and_metadata() -> None:
    network = {
        "id": NET,
        "mtu": 1450,
        "subnets": [
            {"id": SUBNET, "cidr": "10.0.0.0/24", "ip_version": 4, "gateway_ip": "10.0.0.1",
             "enable_dhcp": True, "dns_nameservers": ["192.0.2.53"],
             "host_routes": [{"destination": "198.51.100.0/24", "nexthop": "10.0.0.254"}]},
        ],
    }  # fmt: skip
    hosts = dhcp.hosts_file(network, [port("aaaaaaaa-0001", "10.0.0.5")], "dhcp-port")
    assert hosts == "fa:16:3e:00:00:01,10.0.0.5,host-10-0-0-5\n"
    options = dhcp.options_file(network, {SUBNET: "10.0.0.2"})
    assert "option:router,10.0.0.1" in options
    assert "option:dns-server,192.0.2.53" in options
    assert "option:mtu,1450" in options
    assert (
        "option:classless-static-route,169.254.169.254/32,10.0.0.2,"
        "198.51.100.0/24,10.0.0.254,0.0.0.0/0,10.0.0.1"
    ) in options


def test_router_nat_floating_ips_and_snat() -> None:
    text = routers.nat_ruleset(
        "qg-1", "203.0.113.10", ["10.0.0.0/24"],
        [{"floating_ip_address": "203.0.113.20", "fixed_ip_address": "10.0.0.5"}], True,
    )  # fmt: skip
    assert "ip daddr 203.0.113.20 dnat to 10.0.0.5" in text
    assert 'oifname "qg-1" ip saddr 10.0.0.5 snat to 203.0.113.20' in text
    assert 'oifname "qg-1" ip saddr { 10.0.0.0/24 } snat to 203.0.113.10' in text
    no_snat = routers.nat_ruleset("qg-1", "203.0.113.10", ["10.0.0.0/24"], [], False)
    assert "snat" not in no_snat


def test_metadata_signature_is_hmac_sha256_of_the_instance_id() -> None:
    expected = hmac.new(b"secret", b"abc", hashlib.sha256).hexdigest()
    assert sign("secret", "abc") == expected
