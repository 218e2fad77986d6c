"""Placement tables: providers and their trees, inventories, consumers, allocations, traits,
resource classes and aggregate membership.

``Inventory.used`` is the sum of the allocations against that inventory, kept in the same
transaction as every allocation change. It makes capacity checks single-row conditions:
a claim is one conditional ``UPDATE … SET used = used + n WHERE used + n <= capacity``,
which no concurrent claim can race past on any backend, and allocation candidates are
found by scanning inventories alone, without summing allocations.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Float, ForeignKey, Index, Integer, MetaData, String, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from onestack.core.db import UTCDateTime, utcnow

UUID = String(36)
NAME = String(255)
# Placement's integer fields are 32-bit signed, as upstream's schemas say.
MAX_INT = 2147483647


class Base(DeclarativeBase):
    """Declarative base of the placement database."""

    metadata = MetaData()


class Stamped:
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class ResourceClass(Stamped, Base):
    """A standard (os-resource-classes) or ``CUSTOM_`` resource class."""

    __tablename__ = "placement_resource_classes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(NAME, unique=True)


class Trait(Stamped, Base):
    """A standard (os-traits) or ``CUSTOM_`` trait."""

    __tablename__ = "placement_traits"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(NAME, unique=True)


class ResourceProvider(Stamped, Base):
    """A provider; ``root_provider_id`` is itself for a root, else the top of its tree."""

    __tablename__ = "placement_resource_providers"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    uuid: Mapped[str] = mapped_column(UUID, unique=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    generation: Mapped[int] = mapped_column(Integer, default=0)
    parent_provider_id: Mapped[int | None] = mapped_column(
        ForeignKey("placement_resource_providers.id"), index=True
    )
    root_provider_id: Mapped[int | None] = mapped_column(
        ForeignKey("placement_resource_providers.id"), index=True
    )


class Inventory(Stamped, Base):
    __tablename__ = "placement_inventories"
    __table_args__ = (
        UniqueConstraint("resource_provider_id", "resource_class_id"),
        Index(
            "ix_placement_inventories_class_provider", "resource_class_id", "resource_provider_id"
        ),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    resource_provider_id: Mapped[int] = mapped_column(
        ForeignKey("placement_resource_providers.id", ondelete="CASCADE")
    )
    resource_class_id: Mapped[int] = mapped_column(ForeignKey("placement_resource_classes.id"))
    total: Mapped[int] = mapped_column(Integer)
    reserved: Mapped[int] = mapped_column(Integer, default=0)
    min_unit: Mapped[int] = mapped_column(Integer, default=1)
    max_unit: Mapped[int] = mapped_column(Integer, default=MAX_INT)
    step_size: Mapped[int] = mapped_column(Integer, default=1)
    allocation_ratio: Mapped[float] = mapped_column(Float, default=1.0)
    used: Mapped[int] = mapped_column(Integer, default=0)


class Consumer(Stamped, Base):
    """Whoever holds allocations (an instance, a migration); gone when it holds none."""

    __tablename__ = "placement_consumers"
    __table_args__ = (Index("ix_placement_consumers_project_user", "project_id", "user_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    uuid: Mapped[str] = mapped_column(UUID, unique=True)
    project_id: Mapped[str] = mapped_column(NAME)
    user_id: Mapped[str] = mapped_column(NAME)
    consumer_type: Mapped[str | None] = mapped_column(NAME)
    generation: Mapped[int] = mapped_column(Integer, default=0)


class Allocation(Stamped, Base):
    __tablename__ = "placement_allocations"
    __table_args__ = (
        Index(
            "ix_placement_allocations_provider_class", "resource_provider_id", "resource_class_id"
        ),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    consumer_id: Mapped[int] = mapped_column(
        ForeignKey("placement_consumers.id", ondelete="CASCADE"), index=True
    )
    resource_provider_id: Mapped[int] = mapped_column(ForeignKey("placement_resource_providers.id"))
    resource_class_id: Mapped[int] = mapped_column(ForeignKey("placement_resource_classes.id"))
    used: Mapped[int] = mapped_column(Integer)


class ProviderTrait(Base):
    __tablename__ = "placement_provider_traits"
    resource_provider_id: Mapped[int] = mapped_column(
        ForeignKey("placement_resource_providers.id", ondelete="CASCADE"), primary_key=True
    )
    trait_id: Mapped[int] = mapped_column(
        ForeignKey("placement_traits.id"), primary_key=True, index=True
    )


class ProviderAggregate(Base):
    __tablename__ = "placement_provider_aggregates"
    resource_provider_id: Mapped[int] = mapped_column(
        ForeignKey("placement_resource_providers.id", ondelete="CASCADE"), primary_key=True
    )
    aggregate_uuid: Mapped[str] = mapped_column(UUID, primary_key=True, index=True)
