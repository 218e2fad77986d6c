"""The block device mapping table: which volume is attached to which server, as what device,
through which Cinder attachment, on ``models.Base.metadata`` (migration 0003)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, Boolean, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from onestack.compute.models import ID, Base, new_uuid
from onestack.core.db import UTCDateTime, utcnow


class BlockDeviceMapping(Base):
    """One volume of one server (Nova's ``block_device_mapping`` rows of destination volume).

    ``status``: ``attaching`` until the agent plugged it and Cinder completed the attachment,
    ``attached``, ``detaching`` while it goes. Rows go when the volume is detached or the
    server deleted; the agent reads them (through the conductor) to boot, start and reconcile.
    """

    __tablename__ = "block_device_mapping"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    uuid: Mapped[str] = mapped_column(ID, unique=True, default=new_uuid)
    instance_uuid: Mapped[str] = mapped_column(ID, index=True)
    volume_id: Mapped[str] = mapped_column(ID, index=True)
    attachment_id: Mapped[str | None] = mapped_column(ID, nullable=True)
    device_name: Mapped[str] = mapped_column(String(255))
    boot_index: Mapped[int | None] = mapped_column(Integer, nullable=True)
    source_type: Mapped[str] = mapped_column(String(32), default="volume")
    image_id: Mapped[str | None] = mapped_column(ID, nullable=True)
    volume_size: Mapped[int | None] = mapped_column(Integer, nullable=True)
    delete_on_termination: Mapped[bool] = mapped_column(Boolean, default=False)
    tag: Mapped[str | None] = mapped_column(String(255), nullable=True)
    status: Mapped[str] = mapped_column(String(32), default="attaching")
    connection_info: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, onupdate=utcnow)
