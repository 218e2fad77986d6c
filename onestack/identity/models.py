"""Identity tables: domains, projects, users, groups, roles, assignments, catalog, credentials."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from onestack.core.db import UTCDateTime, new_id, utcnow

ID = String(64)


class Base(DeclarativeBase):
    """Declarative base of the identity database."""


class Domain(Base):
    __tablename__ = "domain"
    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    extra: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class Project(Base):
    __tablename__ = "project"
    __table_args__ = (UniqueConstraint("domain_id", "name"),)
    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(255))
    domain_id: Mapped[str] = mapped_column(ID, ForeignKey("domain.id"), index=True)
    parent_id: Mapped[str | None] = mapped_column(ID, ForeignKey("project.id"), index=True)
    description: Mapped[str] = mapped_column(Text, default="")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    extra: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class User(Base):
    __tablename__ = "user"
    __table_args__ = (UniqueConstraint("domain_id", "name"),)
    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(255))
    domain_id: Mapped[str] = mapped_column(ID, ForeignKey("domain.id"), index=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    password_hash: Mapped[str | None] = mapped_column(String(255))
    password_created_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    default_project_id: Mapped[str | None] = mapped_column(ID)
    description: Mapped[str] = mapped_column(Text, default="")
    email: Mapped[str | None] = mapped_column(String(255))
    extra: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Group(Base):
    __tablename__ = "group"
    __table_args__ = (UniqueConstraint("domain_id", "name"),)
    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(255))
    domain_id: Mapped[str] = mapped_column(ID, ForeignKey("domain.id"), index=True)
    description: Mapped[str] = mapped_column(Text, default="")


class GroupMembership(Base):
    __tablename__ = "group_membership"
    user_id: Mapped[str] = mapped_column(
        ID, ForeignKey("user.id", ondelete="CASCADE"), primary_key=True
    )
    group_id: Mapped[str] = mapped_column(
        ID, ForeignKey("group.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class Role(Base):
    __tablename__ = "role"
    __table_args__ = (UniqueConstraint("domain_id", "name"),)
    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(255))
    # Empty string, not NULL, for global roles so the unique constraint holds everywhere.
    domain_id: Mapped[str] = mapped_column(ID, default="")
    description: Mapped[str] = mapped_column(Text, default="")
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class ImpliedRole(Base):
    __tablename__ = "implied_role"
    prior_role_id: Mapped[str] = mapped_column(
        ID, ForeignKey("role.id", ondelete="CASCADE"), primary_key=True
    )
    implied_role_id: Mapped[str] = mapped_column(
        ID, ForeignKey("role.id", ondelete="CASCADE"), primary_key=True
    )


class Assignment(Base):
    """A role granted to a user or group on a project, a domain or the system.

    ``type`` is one of UserProject, GroupProject, UserDomain, GroupDomain,
    UserSystem, GroupSystem; ``target_id`` is ``"system"`` for system grants.
    """

    __tablename__ = "assignment"
    type: Mapped[str] = mapped_column(String(16), primary_key=True)
    actor_id: Mapped[str] = mapped_column(ID, primary_key=True)
    target_id: Mapped[str] = mapped_column(ID, primary_key=True)
    role_id: Mapped[str] = mapped_column(
        ID, ForeignKey("role.id", ondelete="CASCADE"), primary_key=True
    )
    inherited: Mapped[bool] = mapped_column(Boolean, primary_key=True, default=False)
    __table_args__ = (
        Index("ix_assignment_actor", "actor_id"),
        Index("ix_assignment_target", "target_id"),
    )


class Region(Base):
    __tablename__ = "region"
    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    description: Mapped[str] = mapped_column(Text, default="")
    parent_region_id: Mapped[str | None] = mapped_column(String(255))


class Service(Base):
    __tablename__ = "service"
    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    type: Mapped[str] = mapped_column(String(255))
    name: Mapped[str] = mapped_column(String(255), default="")
    description: Mapped[str] = mapped_column(Text, default="")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)


class Endpoint(Base):
    __tablename__ = "endpoint"
    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    service_id: Mapped[str] = mapped_column(
        ID, ForeignKey("service.id", ondelete="CASCADE"), index=True
    )
    interface: Mapped[str] = mapped_column(String(8))
    region_id: Mapped[str | None] = mapped_column(String(255))
    url: Mapped[str] = mapped_column(Text)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)


class Credential(Base):
    __tablename__ = "credential"
    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ID, ForeignKey("user.id", ondelete="CASCADE"), index=True)
    project_id: Mapped[str | None] = mapped_column(ID)
    type: Mapped[str] = mapped_column(String(255))
    blob: Mapped[str] = mapped_column(Text)
    # For ec2 credentials: the access key, indexed so S3 requests find the secret fast.
    key_hash: Mapped[str | None] = mapped_column(String(64), index=True)


class ApplicationCredential(Base):
    __tablename__ = "application_credential"
    __table_args__ = (UniqueConstraint("user_id", "name"),)
    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(255))
    user_id: Mapped[str] = mapped_column(ID, ForeignKey("user.id", ondelete="CASCADE"), index=True)
    project_id: Mapped[str] = mapped_column(ID)
    secret_hash: Mapped[str] = mapped_column(String(255))
    description: Mapped[str] = mapped_column(Text, default="")
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    unrestricted: Mapped[bool] = mapped_column(Boolean, default=False)
    role_ids: Mapped[list[str]] = mapped_column(JSON, default=list)


class RevocationEvent(Base):
    """Tokens matching every non-null field and issued before ``issued_before`` are revoked."""

    __tablename__ = "revocation_event"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[str | None] = mapped_column(ID)
    project_id: Mapped[str | None] = mapped_column(ID)
    domain_id: Mapped[str | None] = mapped_column(ID)
    audit_id: Mapped[str | None] = mapped_column(String(32), index=True)
    app_cred_id: Mapped[str | None] = mapped_column(ID)
    issued_before: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Generation(Base):
    """A counter bumped by every identity write, so each process knows when its caches are stale."""

    __tablename__ = "generation"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    value: Mapped[int] = mapped_column(Integer, default=0)


class RegisteredLimit(Base):
    """A service's default limit for one resource (unified limits)."""

    __tablename__ = "registered_limit"
    __table_args__ = (UniqueConstraint("service_id", "region_id", "resource_name"),)
    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    service_id: Mapped[str] = mapped_column(ID, ForeignKey("service.id", ondelete="CASCADE"))
    region_id: Mapped[str] = mapped_column(String(255), default="")
    resource_name: Mapped[str] = mapped_column(String(255))
    default_limit: Mapped[int] = mapped_column(Integer)
    description: Mapped[str] = mapped_column(Text, default="")


class Limit(Base):
    """A project's own limit for one resource of a service, overriding the default."""

    __tablename__ = "project_limit"
    __table_args__ = (UniqueConstraint("project_id", "service_id", "region_id", "resource_name"),)
    id: Mapped[str] = mapped_column(ID, primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(
        ID, ForeignKey("project.id", ondelete="CASCADE"), index=True
    )
    service_id: Mapped[str] = mapped_column(ID, ForeignKey("service.id", ondelete="CASCADE"))
    region_id: Mapped[str] = mapped_column(String(255), default="")
    resource_name: Mapped[str] = mapped_column(String(255))
    resource_limit: Mapped[int] = mapped_column(Integer)
    description: Mapped[str] = mapped_column(Text, default="")
