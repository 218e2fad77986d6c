"""Configuration: one optional TOML file plus ``ONESTACK_*`` environment variables.

Nested keys use ``__`` in the environment: ``ONESTACK_IDENTITY__TOKEN_EXPIRATION=600``
sets ``[identity] token_expiration``. No file is needed for the embedded default.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


class IdentitySettings(BaseModel):
    """Keystone settings."""

    token_expiration: int = Field(3600, gt=0, description="token lifetime in seconds")
    allow_expired_window: int = 172800
    max_active_keys: int = Field(3, ge=3)
    key_repository: str | None = None
    credential_key_repository: str | None = None
    # argon2id, OWASP's recommended minimum: slow on purpose, but not seconds.
    argon2_time_cost: int = 2
    argon2_memory_kib: int = 19456
    argon2_parallelism: int = 1
    region: str = "RegionOne"


class ImageSettings(BaseModel):
    """Glance settings."""

    default_store: str = "file"
    file_store_dir: str | None = None
    max_image_size: int = Field(1 << 40, gt=0, description="bytes")
    quota_image_count: int = 1000
    quota_image_size_mib: int = 1 << 20


class VolumeBackendSettings(BaseModel):
    """One volume backend (``host@name``): its driver and what it offers the scheduler."""

    name: str = "file"
    driver: str = Field("file", description="file | fake (fake: scale tests only)")
    # Empty: <data dir>/volumes/<name>.
    path: str = ""
    volume_format: str = Field("raw", pattern="^(raw|qcow2)$")
    # 0: the size of the filesystem that holds the volumes.
    total_capacity_gb: float = Field(0, ge=0)
    max_over_subscription_ratio: float = Field(20.0, gt=0)
    reserved_percentage: int = Field(0, ge=0, le=100)
    availability_zone: str = "nova"
    # Extra capabilities the scheduler matches against volume type extra specs.
    capabilities: dict[str, str | int | float | bool] = Field(default_factory=dict)


class VolumeSettings(BaseModel):
    """Cinder settings: backends served by this host's agents, defaults, quotas, backups."""

    # Empty: this machine's hostname. Agents are ``<host>@<backend>``.
    host: str = ""
    backends: list[VolumeBackendSettings] = Field(default_factory=lambda: [VolumeBackendSettings()])
    # None: agents run inside the API process exactly when the bus is in-process.
    local_agents: bool | None = None
    # The address remote compute hosts reach this host's NBD exports on.
    export_address: str = "127.0.0.1"
    default_volume_type: str = "__DEFAULT__"
    default_availability_zone: str = "nova"
    quota_volumes: int = 10
    quota_gigabytes: int = 1000
    quota_snapshots: int = 10
    quota_backups: int = 10
    quota_backup_gigabytes: int = 1000
    quota_per_volume_gigabytes: int = -1
    quota_groups: int = 10
    backup_container: str = "volumebackups"
    backup_chunk_size: int = Field(4 << 20, ge=1 << 16, description="bytes per object")
    backup_compression: str = Field("zlib", pattern="^(zlib|none)$")
    # Heartbeats every so many seconds; an agent silent for three of them is down.
    report_interval: float = Field(10.0, gt=0)


class ObjectSettings(BaseModel):
    """Swift settings: where rings and devices live, this process's node, the agents."""

    devices_dir: str | None = None
    rings_dir: str | None = None
    # ``ip:port`` whose ring devices this process serves; empty: the process's own address.
    node_address: str = ""
    serve_node: bool = True
    serve_proxy: bool = True
    # The all-in-one layout made on first start when no rings exist.
    part_power: int = Field(10, ge=1, le=22)
    replicas: int = Field(3, ge=1, le=16)
    devices: int = Field(4, ge=1, le=64)
    # Shared by every node of a cluster; empty: <data dir>/object-node-secret.
    node_secret: str = ""
    node_timeout: float = Field(10.0, gt=0)
    disk_threads: int = Field(24, ge=1)
    info_ttl: float = Field(5.0, ge=0)
    agents: bool = True
    replicator_interval: float = Field(30.0, gt=0)
    auditor_interval: float = Field(300.0, gt=0)
    expirer_interval: float = Field(30.0, gt=0)
    updater_interval: float = Field(10.0, gt=0)
    reclaim_age: int = Field(7 * 86400, gt=0)
    operator_roles: list[str] = Field(default_factory=lambda: ["admin", "member"])
    reader_roles: list[str] = Field(default_factory=lambda: ["reader"])
    reseller_admin_role: str = "ResellerAdmin"
    max_file_size: int = Field(5 * (1 << 30), gt=0)
    s3_region: str = "us-east-1"
    # Host names under which buckets are addressed virtual-host style (``bucket.<domain>``).
    s3_domains: list[str] = Field(default_factory=lambda: ["s3.localhost", "localhost"])


class ComputeSchedulerSettings(BaseModel):
    """The compute filter scheduler: which filters and weighers run, and how weights count."""

    enabled_filters: list[str] = Field(
        default_factory=lambda: [
            "ComputeFilter",
            "AvailabilityZoneFilter",
            "AggregateInstanceExtraSpecsFilter",
            "ComputeCapabilitiesFilter",
            "ImagePropertiesFilter",
            "ServerGroupAntiAffinityFilter",
            "ServerGroupAffinityFilter",
            "SameHostFilter",
            "DifferentHostFilter",
            "AggregateMultiTenancyIsolation",
        ]
    )
    enabled_weighers: list[str] = Field(
        default_factory=lambda: [
            "RAMWeigher",
            "CPUWeigher",
            "DiskWeigher",
            "IoOpsWeigher",
            "BuildFailureWeigher",
            "ServerGroupSoftAffinityWeigher",
            "ServerGroupSoftAntiAffinityWeigher",
        ]
    )
    # Positive spreads (prefers the emptiest host), negative stacks.
    ram_weight_multiplier: float = 1.0
    cpu_weight_multiplier: float = 1.0
    disk_weight_multiplier: float = 1.0
    io_ops_weight_multiplier: float = -1.0
    build_failure_weight_multiplier: float = 1000000.0
    soft_affinity_weight_multiplier: float = Field(1.0, ge=0)
    soft_anti_affinity_weight_multiplier: float = Field(1.0, ge=0)
    # Pick at random among the best N hosts, so concurrent schedulers collide less.
    host_subset_size: int = Field(1, ge=1)


class ComputeSettings(BaseModel):
    """Nova settings: this host's agents, hypervisor driver, scheduling, quotas."""

    # Empty: this machine's hostname (the one agent ``onestack up`` runs without fake hosts).
    host: str = ""
    # Empty: qemu when running as root and qemu-system-x86_64 exists, else fake.
    driver: str = ""
    # N > 0: ``onestack up`` runs N fake hosts host1..hostN in-process instead of one agent.
    fake_hosts: int = Field(0, ge=0)
    # None: agents run inside the API process exactly when the bus is in-process.
    local_agents: bool | None = None
    default_availability_zone: str = "nova"
    # Heartbeats every so many seconds; an agent silent for three of them is down.
    report_interval: float = Field(10.0, gt=0)
    power_sync_interval: float = Field(60.0, gt=0)
    # Build attempts per server across hosts (the first try plus reschedules).
    max_attempts: int = Field(3, ge=1)
    allocation_candidates_limit: int = Field(100, ge=1)
    # Builds and moves without host constraints (groups, same/different host, a forced or
    # requested host) first ask placement for this many candidates, and for the full limit
    # only when none of them passes the filters: most of a decision's cost is building,
    # sending and reading the candidates. 0: always the full limit.
    allocation_candidates_quick_limit: int = Field(20, ge=0)
    vif_plugging_timeout: float = Field(300.0, ge=0)
    # Seconds a deleted server stays SOFT_DELETED (restorable) before it is reclaimed;
    # 0 deletes at once (Nova's reclaim_instance_interval).
    reclaim_instance_interval: float = Field(0.0, ge=0)
    cpu_allocation_ratio: float = Field(16.0, gt=0)
    ram_allocation_ratio: float = Field(1.5, gt=0)
    disk_allocation_ratio: float = Field(1.0, gt=0)
    # The simulated host of the fake driver.
    fake_vcpus: int = Field(32, ge=1)
    fake_memory_mb: int = Field(131072, ge=1)
    fake_disk_gb: int = Field(2048, ge=1)
    fake_boot_delay: float = Field(0.0, ge=0)
    quota_instances: int = 10
    quota_cores: int = 20
    quota_ram: int = 51200
    quota_key_pairs: int = 100
    quota_server_groups: int = 10
    quota_server_group_members: int = 10
    quota_metadata_items: int = 128
    scheduler: ComputeSchedulerSettings = Field(default_factory=ComputeSchedulerSettings)


class NetworkSettings(BaseModel):
    """Neutron settings: the data-plane driver and this host's network agent."""

    # Empty: linuxbridge when running as root with ip, nft and dnsmasq present, else noop.
    driver: str = ""
    # Empty: this machine's hostname.
    host: str = ""
    # Other compute hosts whose guests run on this machine (several compute agents on one
    # machine): this agent wires and filters their ports too, as they share its bridges.
    guest_hosts: list[str] = Field(default_factory=list)
    # None: the agent runs inside the API process exactly when the bus is in-process.
    local_agent: bool | None = None
    report_interval: float = Field(10.0, gt=0)
    # How often the agent looks for taps that appeared on or left its bridges.
    scan_interval: float = Field(0.5, gt=0)
    # provider:physical_network -> this host's interface, put on the bridge of flat networks
    # of that physical network. Without one, an external network gets a host-side veth
    # holding its subnets' gateways (so the host reaches floating IPs).
    physical_interfaces: dict[str, str] = Field(default_factory=dict)
    # This host's VXLAN endpoint address. Empty: the address this host uses to reach the
    # bus (or, with an in-process bus, the source address of its default route).
    tunnel_ip: str = ""
    # VNIs handed to vxlan networks created without provider:segmentation_id (inclusive).
    vni_range: tuple[int, int] = (1, 1000)


class PlacementSettings(BaseModel):
    """Placement settings."""

    # Return a random sample of the matching allocation candidates rather than the first
    # ones (spreads concurrent schedulers over more hosts; upstream's option of that name).
    randomize_allocation_candidates: bool = False


class PolicySettings(BaseModel):
    """Policy overrides in oslo.policy rule syntax, by rule name."""

    enforce_scope: bool = False
    overrides: dict[str, str] = Field(default_factory=dict)


class DatabaseSettings(BaseModel):
    """Database URL per service; empty means a SQLite file in the data dir."""

    urls: dict[str, str] = Field(default_factory=dict)
    default: str = ""


class Settings(BaseSettings):
    """The whole configuration of one onestack process."""

    model_config = SettingsConfigDict(
        env_prefix="ONESTACK_",
        env_nested_delimiter="__",
        extra="ignore",
    )

    data_dir: Path = Path(".onestack")
    host: str = "127.0.0.1"
    port: int = 8000
    public_url: str = ""
    bus_url: str = "memory://"
    # Empty: every service this build provides.
    services: list[str] = Field(default_factory=list)
    log_level: str = "INFO"
    identity: IdentitySettings = Field(default_factory=IdentitySettings)
    image: ImageSettings = Field(default_factory=ImageSettings)
    volume: VolumeSettings = Field(default_factory=VolumeSettings)
    compute: ComputeSettings = Field(default_factory=ComputeSettings)

    object: ObjectSettings = Field(default_factory=ObjectSettings)
    placement: PlacementSettings = Field(default_factory=PlacementSettings)
    network: NetworkSettings = Field(default_factory=NetworkSettings)
    policy: PolicySettings = Field(default_factory=PolicySettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    # Where services find identity when they run apart from it.
    identity_url: str = ""
    service_user: str = "onestack-service"
    # Empty: read (or, for the process that bootstraps, create) <data dir>/service-password.
    service_password: str = ""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get("ONESTACK_CONFIG")
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        return tuple(sources)

    def base_url(self) -> str:
        """The URL clients use to reach this process."""
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"

    def database_url(self, service: str) -> str:
        """The async SQLAlchemy URL of a service's database."""
        url = self.database.urls.get(service) or self.database.default
        if not url:
            return f"sqlite+aiosqlite:///{(self.data_dir / f'{service}.db').resolve()}"
        return async_url(url)

    def key_repository(self) -> Path:
        """Directory of the Fernet token keys."""
        if self.identity.key_repository:
            return Path(self.identity.key_repository)
        return self.data_dir / "fernet-keys"

    def credential_key_repository(self) -> Path:
        """Directory of the keys that encrypt stored credentials."""
        if self.identity.credential_key_repository:
            return Path(self.identity.credential_key_repository)
        return self.data_dir / "credential-keys"


def async_url(url: str) -> str:
    """Turn a plain database URL into the async driver's URL."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(f"not a database URL: {url!r}")
    drivers = {
        "sqlite": "sqlite+aiosqlite",
        "postgresql": "postgresql+asyncpg",
        "postgres": "postgresql+asyncpg",
        "mysql": "mysql+aiomysql",
        "mariadb": "mysql+aiomysql",
    }
    return f"{drivers.get(scheme, scheme)}://{rest}"


def load_settings(**overrides: Any) -> Settings:
    """Read configuration from the environment and ``$ONESTACK_CONFIG``."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})
