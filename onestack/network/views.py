"""Network resources rendered as Neutron v2.0 shows them."""

from __future__ import annotations

import datetime as dt
from typing import Any

from onestack.network.models import Network, Port, Router, SecurityGroup, Subnet, SubnetPool


def iso_time(value: dt.datetime | None) -> str | None:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if value else None


def timestamps(
    row: Network | Subnet | SubnetPool | Port | SecurityGroup | Router,
) -> dict[str, Any]:
    """The standard attributes every resource carries."""
    return {
        "id": row.id,
        "name": row.name,
        "description": row.description,
        "tenant_id": row.project_id,
        "project_id": row.project_id,
        "tags": list(row.tags or []),
        "created_at": iso_time(row.created_at),
        "updated_at": iso_time(row.updated_at),
        "revision_number": row.revision_number,
    }


def network_view(row: Network, subnets: list[str], admin: bool) -> dict[str, Any]:
    body = {
        **timestamps(row),
        "admin_state_up": row.admin_state_up,
        "status": row.status,
        "subnets": subnets,
        "shared": row.shared,
        "router:external": row.external,
        "mtu": row.mtu,
        "port_security_enabled": row.port_security_enabled,
        "availability_zone_hints": list(row.availability_zone_hints or []),
        "availability_zones": ["nova"],
        "ipv4_address_scope": None,
        "ipv6_address_scope": None,
        "is_default": False,
    }
    if admin:
        body["provider:network_type"] = row.network_type
        body["provider:physical_network"] = row.physical_network
        body["provider:segmentation_id"] = row.segmentation_id
    return body


def subnet_view(row: Subnet) -> dict[str, Any]:
    return {
        **timestamps(row),
        "network_id": row.network_id,
        "ip_version": row.ip_version,
        "cidr": row.cidr,
        "gateway_ip": row.gateway_ip,
        "enable_dhcp": row.enable_dhcp,
        "allocation_pools": list(row.allocation_pools or []),
        "dns_nameservers": list(row.dns_nameservers or []),
        "host_routes": list(row.host_routes or []),
        "ipv6_ra_mode": row.ipv6_ra_mode,
        "ipv6_address_mode": row.ipv6_address_mode,
        "subnetpool_id": row.subnetpool_id,
        "segment_id": None,
        "service_types": [],
    }


def subnetpool_view(row: SubnetPool) -> dict[str, Any]:
    return {
        **timestamps(row),
        "ip_version": row.ip_version,
        "prefixes": list(row.prefixes),
        "default_prefixlen": row.default_prefixlen,
        "min_prefixlen": row.min_prefixlen,
        "max_prefixlen": row.max_prefixlen,
        "shared": row.shared,
        "is_default": row.is_default,
        "default_quota": row.default_quota,
        "address_scope_id": row.address_scope_id,
    }


def port_view(row: Port, fixed_ips: list[dict[str, str]], admin: bool) -> dict[str, Any]:
    body = {
        **timestamps(row),
        "network_id": row.network_id,
        "mac_address": row.mac_address,
        "admin_state_up": row.admin_state_up,
        "status": row.status,
        "device_id": row.device_id,
        "device_owner": row.device_owner,
        "fixed_ips": fixed_ips,
        "allowed_address_pairs": list(row.allowed_address_pairs or []),
        "extra_dhcp_opts": [],
        "security_groups": list(row.security_groups or []),
        "port_security_enabled": row.port_security_enabled,
        "binding:vnic_type": row.binding_vnic_type,
    }
    if admin:
        body["binding:host_id"] = row.binding_host_id
        body["binding:vif_type"] = row.binding_vif_type
        body["binding:vif_details"] = dict(row.binding_vif_details or {})
        body["binding:profile"] = dict(row.binding_profile or {})
    return body
