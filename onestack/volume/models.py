"""Block storage tables: volumes, snapshots, backups, attachments, types, QoS, transfers."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from onestack.core.db import UTCDateTime, utcnow
from onestack.core.heartbeat import ServiceTables
from onestack.core.quota import QuotaTables

ID = String(36)
PROJECT = String(64)


def new_uuid() -> str:
    """Cinder ids are dashed UUIDs."""
    return str(uuid.uuid4())


class Base(DeclarativeBase):
    """Declarative base of the volume database."""

    metadata = MetaData()


QUOTA_TABLES = QuotaTables(Base.metadata, "volume")
SERVICE_TABLES = ServiceTables(Base.metadata, "volume")


class Stamped:
    """Times every Cinder resource carries."""

    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    updated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, onupdate=utcnow)


class Volume(Stamped, Base):
    __tablename__ = "volume"
    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_uuid)
    project_id: Mapped[str] = mapped_column(PROJECT, index=True)
    user_id: Mapped[str | None] = mapped_column(PROJECT)
    name: Mapped[str | None] = mapped_column(String(255), index=True)
    description: Mapped[str | None] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(32), default="creating", index=True)
    # Before a status-changing action, to put back when the action ends or fails.
    previous_status: Mapped[str | None] = mapped_column(String(32))
    attach_status: Mapped[str] = mapped_column(String(32), default="detached")
    availability_zone: Mapped[str] = mapped_column(String(255), default="nova")
    volume_type_id: Mapped[str] = mapped_column(ID, ForeignKey("volume_type.id"), index=True)
    snapshot_id: Mapped[str | None] = mapped_column(ID)
    source_volid: Mapped[str | None] = mapped_column(ID)
    backup_id: Mapped[str | None] = mapped_column(ID)
    image_id: Mapped[str | None] = mapped_column(ID)
    bootable: Mapped[bool] = mapped_column(Boolean, default=False)
    multiattach: Mapped[bool] = mapped_column(Boolean, default=False)
    # ``host@backend#pool`` once scheduled.
    host: Mapped[str | None] = mapped_column(String(255), index=True)
    migration_status: Mapped[str | None] = mapped_column(String(32))
    provider_location: Mapped[str | None] = mapped_column(Text)
    # Admin metadata (readonly, attached_mode) and the image's properties it came from.
    admin_metadata: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    image_metadata: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    group_id: Mapped[str | None] = mapped_column(ID)
    use_quota: Mapped[bool] = mapped_column(Boolean, default=True)
    launched_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class VolumeMetadata(Base):
    __tablename__ = "volume_metadata"
    volume_id: Mapped[str] = mapped_column(
        ID, ForeignKey("volume.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    value: Mapped[str] = mapped_column(String(255))


class Snapshot(Stamped, Base):
    __tablename__ = "volume_snapshot"
    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_uuid)
    project_id: Mapped[str] = mapped_column(PROJECT, index=True)
    user_id: Mapped[str | None] = mapped_column(PROJECT)
    volume_id: Mapped[str] = mapped_column(ID, ForeignKey("volume.id"), index=True)
    volume_type_id: Mapped[str | None] = mapped_column(ID)
    name: Mapped[str | None] = mapped_column(String(255), index=True)
    description: Mapped[str | None] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(32), default="creating", index=True)
    progress: Mapped[str] = mapped_column(String(8), default="0%")
    provider_location: Mapped[str | None] = mapped_column(Text)
    metadata_: Mapped[dict[str, str]] = mapped_column("metadata", JSON, default=dict)
    use_quota: Mapped[bool] = mapped_column(Boolean, default=True)


class Backup(Stamped, Base):
    __tablename__ = "volume_backup"
    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_uuid)
    project_id: Mapped[str] = mapped_column(PROJECT, index=True)
    user_id: Mapped[str | None] = mapped_column(PROJECT)
    volume_id: Mapped[str] = mapped_column(ID, index=True)
    snapshot_id: Mapped[str | None] = mapped_column(ID)
    name: Mapped[str | None] = mapped_column(String(255), index=True)
    description: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(32), default="creating", index=True)
    fail_reason: Mapped[str | None] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(Integer)
    availability_zone: Mapped[str | None] = mapped_column(String(255))
    # The backup agent's host that made it, and where in the object store it lives.
    host: Mapped[str | None] = mapped_column(String(255))
    container: Mapped[str | None] = mapped_column(String(255))
    object_prefix: Mapped[str | None] = mapped_column(String(255))
    object_count: Mapped[int] = mapped_column(Integer, default=0)
    parent_id: Mapped[str | None] = mapped_column(ID, index=True)
    num_dependent_backups: Mapped[int] = mapped_column(Integer, default=0)
    # Percent of the volume read (while creating) or written (while restoring).
    progress: Mapped[int] = mapped_column(Integer, default=0)
    restore_volume_id: Mapped[str | None] = mapped_column(ID)
    data_timestamp: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    metadata_: Mapped[dict[str, str]] = mapped_column("metadata", JSON, default=dict)


class Attachment(Stamped, Base):
    __tablename__ = "volume_attachment"
    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_uuid)
    volume_id: Mapped[str] = mapped_column(
        ID, ForeignKey("volume.id", ondelete="CASCADE"), index=True
    )
    project_id: Mapped[str] = mapped_column(PROJECT, index=True)
    instance_uuid: Mapped[str | None] = mapped_column(ID, index=True)
    attached_host: Mapped[str | None] = mapped_column(String(255))
    mountpoint: Mapped[str | None] = mapped_column(String(255))
    attach_status: Mapped[str] = mapped_column(String(32), default="reserved")
    attach_mode: Mapped[str] = mapped_column(String(4), default="rw")
    connector: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    connection_info: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    attach_time: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    detach_time: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class VolumeType(Stamped, Base):
    __tablename__ = "volume_type"
    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_uuid)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    description: Mapped[str | None] = mapped_column(String(255))
    is_public: Mapped[bool] = mapped_column(Boolean, default=True)
    extra_specs: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    qos_specs_id: Mapped[str | None] = mapped_column(
        ID, ForeignKey("volume_qos_specs.id", ondelete="SET NULL")
    )


class VolumeTypeAccess(Base):
    __tablename__ = "volume_type_project"
    volume_type_id: Mapped[str] = mapped_column(
        ID, ForeignKey("volume_type.id", ondelete="CASCADE"), primary_key=True
    )
    project_id: Mapped[str] = mapped_column(PROJECT, primary_key=True, index=True)


class QosSpecs(Stamped, Base):
    __tablename__ = "volume_qos_specs"
    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_uuid)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    consumer: Mapped[str] = mapped_column(String(16), default="back-end")
    specs: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)


class Transfer(Stamped, Base):
    __tablename__ = "volume_transfer"
    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_uuid)
    volume_id: Mapped[str] = mapped_column(ID, index=True)
    name: Mapped[str | None] = mapped_column(String(255))
    salt: Mapped[str] = mapped_column(String(64))
    crypt_hash: Mapped[str] = mapped_column(String(255))
    source_project_id: Mapped[str] = mapped_column(PROJECT, index=True)
    destination_project_id: Mapped[str | None] = mapped_column(PROJECT)
    accepted: Mapped[bool] = mapped_column(Boolean, default=False)
    no_snapshots: Mapped[bool] = mapped_column(Boolean, default=False)


class QuotaClass(Base):
    """``os-quota-class-sets/default``: defaults for every project without its own limit."""

    __tablename__ = "volume_quota_class"
    class_name: Mapped[str] = mapped_column(String(255), primary_key=True)
    resource: Mapped[str] = mapped_column(String(255), primary_key=True)
    hard_limit: Mapped[int] = mapped_column(Integer)


class Backend(Base):
    """What each volume agent last reported about its backend (``host@backend``)."""

    __tablename__ = "volume_backend"
    host: Mapped[str] = mapped_column(String(255), primary_key=True)
    availability_zone: Mapped[str] = mapped_column(String(255), default="nova")
    capabilities: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Message(Base):
    """User messages (``/v3/messages``): why an asynchronous request failed."""

    __tablename__ = "volume_message"
    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_uuid)
    project_id: Mapped[str] = mapped_column(PROJECT, index=True)
    request_id: Mapped[str | None] = mapped_column(String(64))
    resource_type: Mapped[str] = mapped_column(String(32))
    resource_uuid: Mapped[str | None] = mapped_column(ID, index=True)
    event_id: Mapped[str] = mapped_column(String(64))
    message_level: Mapped[str] = mapped_column(String(16), default="ERROR")
    user_message: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
