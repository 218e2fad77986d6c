"""IPv6 in the linuxbridge data plane's pure parts: EUI-64, radvd, dnsmasq and nftables text."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from onestack.network import ipam
from onestack.network.drivers.linuxbridge import dhcp, firewall, radvd

NET = "6f1c2d3e-4a5b-4c6d-8e9f-0a1b2c3d4e5f"
MAC = "fa:16:3e:12:34:56"


def subnet(ident: str, cidr: str, mode: str | None, **extra: Any) -> dict[str, Any]:
    return {
        "id": ident,
        "cidr": cidr,
        "ip_version": 6,
        "gateway_ip": cidr.split("/")[0] + "1",
        "enable_dhcp": True,
        "dns_nameservers": [],
        "host_routes": [],
        "ipv6_ra_mode": mode,
        "ipv6_address_mode": mode,
        **extra,
    }


def test_eui64_addresses_from_the_mac() -> None:
    # RFC 4291 appendix A: the universal/local bit flipped, ff:fe in the middle.
    assert ipam.eui64("2001:db8:1::/64", MAC) == "2001:db8:1:0:f816:3eff:fe12:3456"
    assert ipam.link_local("00:00:5e:00:53:01") == "fe80::200:5eff:fe00:5301"
    assert ipam.auto_address("slaac") and ipam.auto_address("dhcpv6-stateless")
    assert not ipam.auto_address("dhcpv6-stateful") and not ipam.auto_address(None)


def test_radvd_announces_prefixes_by_ra_mode() -> None:
    legs = [
        (
            "qr-one",
            [
                subnet("s1", "fd00:1::/64", "slaac", dns_nameservers=["fd00:1::53"]),
                subnet("s2", "fd00:2::/64", "dhcpv6-stateful"),
                subnet("s3", "fd00:3::/64", None),
            ],
            1450,
        ),
        ("qr-two", [subnet("s4", "fd00:4::/64", "dhcpv6-stateless")], 1500),
        ("qr-v4", [], 1500),
    ]
    text = radvd.config(legs)
    one, two = text.split("interface ")[1:]
    assert one.startswith("qr-one") and two.startswith("qr-two")
    assert "AdvLinkMTU 1450;" in one and "AdvManagedFlag on;" in one
    assert "AdvOtherConfigFlag" not in one and "RDNSS fd00:1::53 {};" in one
    assert "prefix fd00:1::/64\n  {\n    AdvOnLink on;\n    AdvAutonomous on;" in one
    assert "prefix fd00:2::/64\n  {\n    AdvOnLink on;\n    AdvAutonomous off;" in one
    assert "fd00:3::" not in one  # no RA mode: the router advertises no prefix for it
    assert "AdvOtherConfigFlag on;" in two and "AdvManagedFlag" not in two
    assert "qr-v4" not in text
    assert radvd.config([("qr-v4", [], 1500)]) == ""


def test_dnsmasq_dhcpv6_by_address_mode(tmp_path: Any) -> None:
    network = {
        "id": NET,
        "mtu": 1500,
        "subnets": [
            subnet("slaac", "fd00:1::/64", "slaac"),
            subnet("stateful", "fd00:2::/64", "dhcpv6-stateful", dns_nameservers=["fd00:2::53"]),
            subnet("stateless", "fd00:3::/64", "dhcpv6-stateless", dns_nameservers=["fd00:3::53"]),
            subnet("nomode", "fd00:4::/64", None),
        ],
    }
    fixed = [
        ("slaac", "fd00:1::f816:3eff:fe12:3456"),
        ("stateful", "fd00:2::5"),
        ("stateless", "fd00:3::f816:3eff:fe12:3456"),
    ]
    guest = {
        "id": "guest",
        "mac_address": MAC,
        "fixed_ips": [{"subnet_id": s, "ip_address": a} for s, a in fixed],
    }
    # Only the stateful address is handed out; SLAAC hosts make theirs.
    assert dhcp.hosts_file(network, [guest], "dhcp") == f"{MAC},[fd00:2::5],host-fd00-2--5\n"
    options = dhcp.options_file(network, {})
    assert "option6:dns-server,[fd00:2::53]" in options
    assert "option6:dns-server,[fd00:3::53]" in options
    assert "option:router" not in options  # no IPv4 option for IPv6 subnets
    argv = dhcp.DhcpServer(tmp_path, NET)._argv("ns-x", network)
    ranges = [a for a in argv if a.startswith("--dhcp-range=")]
    assert [r.split(",")[1:4] for r in ranges] == [
        ["fd00:2::", "static", "64"],
        ["fd00:3::", "static", "64"],
        ["fd00:4::", "static", "64"],
    ]
    assert [dhcp.dhcpv6_mode(s) for s in network["subnets"]] == [
        None,
        "stateful",
        "stateless",
        "stateful",
    ]


def guest_port(**extra: Any) -> dict[str, Any]:
    return {
        "id": "aaaaaaaa-0001",
        "network_id": NET,
        "mac_address": MAC,
        "fixed_ips": [{"subnet_id": "s", "ip_address": "fd00:1::f816:3eff:fe12:3456"}],
        "device_owner": "compute:nova",
        "port_security_enabled": True,
        "allowed_address_pairs": [],
        "security_groups": ["g"],
        **extra,
    }


def v6_rule(direction: str, **extra: Any) -> dict[str, Any]:
    base = {"direction": direction, "ethertype": "IPv6", "protocol": None}
    base |= {"port_range_min": None, "port_range_max": None}
    return base | {"remote_ip_prefix": None, "remote_group_id": None} | extra


def test_ipv6_anti_spoofing_and_neighbour_discovery() -> None:
    pair = {"ip_address": "fd00:1::99", "mac_address": "fa:16:3e:00:00:99"}
    rules = [v6_rule("ingress", protocol="icmp", port_range_min=128, port_range_max=0)]
    groups = {"g": {"rules": rules, "members": []}}
    text = firewall.ruleset([guest_port(allowed_address_pairs=[pair])], groups, "t")
    spoof = text.split("chain spoof_")[1].split("\n  }")[0]
    # Link-local addresses of the port's MAC and of the pair's, not all of fe80::/64.
    assert "fe80::f816:3eff:fe12:3456/128" in spoof and "fe80::f816:3eff:fe00:99/128" in spoof
    assert "fe80::/64" not in spoof and "fd00:1::99/128" in spoof
    assert "icmpv6 type nd-router-advert drop" in spoof  # rogue RAs
    assert "udp sport 547 drop" in spoof  # rogue DHCPv6 servers
    ingress = text.split("chain ingress_")[1]
    assert "nd-neighbor-solicit, nd-neighbor-advert" in ingress
    assert "ip6 saddr fe80::/10 icmpv6 type nd-router-advert accept" in ingress
    assert "udp sport 547 udp dport 546 accept" in ingress
    # Only neighbour discovery is allowed whatever the rules; echo needs the rule, which
    # for IPv6 "icmp" means ICMPv6.
    assert "meta l4proto ipv6-icmp accept" not in ingress
    assert "meta l4proto ipv6-icmp icmpv6 type 128 icmpv6 code 0 accept" in ingress


@pytest.mark.skipif(
    subprocess.run(["nft", "--version"], capture_output=True, check=False).returncode != 0,
    reason="needs nft",
)
def test_ipv6_ruleset_is_valid_nftables() -> None:
    rules = [
        v6_rule("ingress", protocol="tcp", port_range_min=22, port_range_max=25),
        v6_rule("ingress", remote_group_id="g"),
        v6_rule("ingress", protocol="ipv6-icmp", remote_ip_prefix="fd00:9::/64"),
        v6_rule("egress"),
    ]
    groups = {"g": {"rules": rules, "members": ["fd00:1::f816:3eff:fe12:3456"]}}
    text = firewall.ruleset([guest_port()], groups, "unitcheck")
    checked = subprocess.run(["nft", "-c", "-f", "-"], input=text, capture_output=True, text=True)
    if "Operation not permitted" in checked.stderr:
        pytest.skip("nft -c needs CAP_NET_ADMIN")
    assert checked.returncode == 0, checked.stderr
