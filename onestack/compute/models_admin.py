"""Tables of the operator's compute resources: host aggregates (with their metadata and
hosts) and server groups (with their members), on ``models.Base.metadata``."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from onestack.compute.models import ID, PROJECT, Base, new_uuid
from onestack.core.db import UTCDateTime, utcnow


class Aggregate(Base):
    """A host aggregate; its ``availability_zone`` metadata makes it a zone."""

    __tablename__ = "aggregate"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    uuid: Mapped[str] = mapped_column(ID, unique=True, default=new_uuid)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, onupdate=utcnow)


class AggregateHost(Base):
    """A compute host's membership of an aggregate."""

    __tablename__ = "aggregate_host"
    __table_args__ = (UniqueConstraint("aggregate_id", "host"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    aggregate_id: Mapped[int] = mapped_column(
        ForeignKey("aggregate.id", ondelete="CASCADE"), index=True
    )
    host: Mapped[str] = mapped_column(String(255), index=True)


class AggregateMetadata(Base):
    """One metadata key of an aggregate (``availability_zone``, ``SSD``...)."""

    __tablename__ = "aggregate_metadata"
    __table_args__ = (UniqueConstraint("aggregate_id", "key"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    aggregate_id: Mapped[int] = mapped_column(
        ForeignKey("aggregate.id", ondelete="CASCADE"), index=True
    )
    key: Mapped[str] = mapped_column(String(255))
    value: Mapped[str] = mapped_column(String(255))


class ServerGroup(Base):
    """A server group: one policy (affinity, anti-affinity, soft-*) and its rules."""

    __tablename__ = "server_group"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    uuid: Mapped[str] = mapped_column(ID, unique=True, default=new_uuid)
    name: Mapped[str] = mapped_column(String(255))
    project_id: Mapped[str] = mapped_column(PROJECT, index=True)
    user_id: Mapped[str] = mapped_column(PROJECT)
    policy: Mapped[str] = mapped_column(String(32))
    rules: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class ServerGroupMember(Base):
    """A server's membership of a group (a server is in at most one group)."""

    __tablename__ = "server_group_member"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    group_id: Mapped[int] = mapped_column(
        ForeignKey("server_group.id", ondelete="CASCADE"), index=True
    )
    instance_uuid: Mapped[str] = mapped_column(ID, unique=True)
