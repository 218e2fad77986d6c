"""Images and members rendered as Glance v2 shows them."""

from __future__ import annotations

import datetime as dt
from typing import Any

from onestack.image.models import Image, ImageMember


def timestamp(value: dt.datetime | None) -> str | None:
    """Glance's ``YYYY-MM-DDTHH:MM:SSZ``."""
    if value is None:
        return None
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def image(row: Image) -> dict[str, Any]:
    """One image: core attributes, then its custom properties at the top level."""
    body: dict[str, Any] = {**(row.properties or {})}
    body.update(
        id=row.id,
        name=row.name,
        status=row.status,
        visibility=row.visibility,
        protected=row.protected,
        os_hidden=row.os_hidden,
        owner=row.owner,
        disk_format=row.disk_format,
        container_format=row.container_format,
        size=row.size,
        virtual_size=row.virtual_size,
        checksum=row.checksum,
        os_hash_algo=row.os_hash_algo,
        os_hash_value=row.os_hash_value,
        min_disk=row.min_disk,
        min_ram=row.min_ram,
        tags=list(row.tags or []),
        created_at=timestamp(row.created_at),
        updated_at=timestamp(row.updated_at),
        self=f"/v2/images/{row.id}",
        file=f"/v2/images/{row.id}/file",
        schema="/v2/schemas/image",
    )
    if row.locations:
        body["stores"] = ",".join(sorted(row.locations))
    return body


def member(row: ImageMember) -> dict[str, Any]:
    return {
        "image_id": row.image_id,
        "member_id": row.member_id,
        "status": row.status,
        "created_at": timestamp(row.created_at),
        "updated_at": timestamp(row.updated_at),
        "schema": "/v2/schemas/member",
    }
