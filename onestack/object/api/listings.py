"""Account and container listings in Swift's three formats: text, JSON and XML."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any
from xml.etree import ElementTree

from starlette.requests import Request
from starlette.responses import Response

from onestack.object.api.errors import SwiftError

FORMATS = {
    "json": "application/json",
    "xml": "application/xml",
    "plain": "text/plain",
    "text": "text/plain",
}
ACCEPTABLE = ("text/plain", "application/json", "application/xml", "text/xml")


def listing_format(request: Request) -> str:
    """The media type asked for with ``?format=`` or ``Accept`` (text/plain by default)."""
    wanted = request.query_params.get("format", "").lower()
    if wanted:
        return FORMATS.get(wanted, "text/plain")
    accept = request.headers.get("accept", "")
    if not accept:
        return "text/plain"
    best, best_q = "", -1.0
    for entry in accept.split(","):
        media, *params = [p.strip() for p in entry.split(";")]
        quality = 1.0
        for param in params:
            if param.startswith("q="):
                try:
                    quality = float(param[2:])
                except ValueError:
                    quality = 0.0
        for candidate in ACCEPTABLE:
            if media in (candidate, "*/*", candidate.split("/")[0] + "/*") and quality > best_q:
                best, best_q = candidate, quality
                break
    if not best or best_q <= 0:
        raise SwiftError(406)
    return best


def iso_time(timestamp: str) -> str:
    moment = dt.datetime.fromtimestamp(float(timestamp), dt.UTC).replace(tzinfo=None)
    return moment.isoformat(timespec="microseconds")


def object_entry(row: dict[str, Any]) -> dict[str, Any]:
    if "subdir" in row:
        return {"subdir": row["subdir"]}
    content_type, size = row["content_type"], row["size"]
    if ";swift_bytes=" in content_type:
        content_type, _, swift_bytes = content_type.partition(";swift_bytes=")
        size = int(swift_bytes)
    etag = row["etag"]
    entry: dict[str, Any] = {
        "hash": etag.split(";")[0].strip(),
        "last_modified": iso_time(row["created_at"]),
        "bytes": size,
        "name": row["name"],
        "content_type": content_type,
    }
    if "; slo_etag=" in etag:
        entry["slo_etag"] = etag.split("; slo_etag=", 1)[1].split(";")[0]
    return entry


def container_entry(row: dict[str, Any]) -> dict[str, Any]:
    if "subdir" in row:
        return {"subdir": row["subdir"]}
    return {
        "name": row["name"],
        "count": row["object_count"],
        "bytes": row["bytes_used"],
        "last_modified": iso_time(row["put_timestamp"]),
    }


def render(
    media: str, level: str, name: str, rows: list[dict[str, Any]], headers: dict[str, str]
) -> Response:
    """A listing response; an empty text listing is ``204 No Content`` as in Swift."""
    entries = [object_entry(r) if level == "container" else container_entry(r) for r in rows]
    if media == "application/json":
        body = json.dumps(entries).encode()
    elif media in ("application/xml", "text/xml"):
        root = ElementTree.Element(level, {"name": name})
        item_tag = "object" if level == "container" else "container"
        for entry in entries:
            if "subdir" in entry:
                sub = ElementTree.SubElement(root, "subdir", {"name": entry["subdir"]})
                ElementTree.SubElement(sub, "name").text = entry["subdir"]
                continue
            item = ElementTree.SubElement(root, item_tag)
            for key, value in entry.items():
                ElementTree.SubElement(item, key).text = str(value)
        body = (
            b'<?xml version="1.0" encoding="UTF-8"?>\n'
            + ElementTree.tostring(root, encoding="unicode").encode()
        )
    else:
        body = "".join((e.get("subdir") or e["name"]) + "\n" for e in entries).encode()
    out = {**headers, "content-type": f"{media}; charset=utf-8"}
    if not body:
        # Swift's empty text listing still names its content type.
        return Response(b"", 204, headers=out)
    return Response(body, 200, headers=out)


def listing_params(request: Request) -> dict[str, str]:
    """Validated listing query parameters for a backend listing request."""
    query = request.query_params
    try:
        limit = int(query.get("limit", "10000"))
    except ValueError:
        raise SwiftError(
            412, "Value of limit must be a positive integer", content_type="text/plain"
        ) from None
    if limit < 0:
        raise SwiftError(
            412, "Value of limit must be a positive integer", content_type="text/plain"
        )
    if limit > 10000:
        raise SwiftError(412, "Maximum limit is 10000", content_type="text/plain")
    params = {"limit": str(limit)}
    for key in ("marker", "end_marker", "prefix", "delimiter"):
        value = query.get(key)
        if value:
            params[key] = value
    if params.get("delimiter") and len(params["delimiter"]) > 1:
        raise SwiftError(412, "Bad delimiter", content_type="text/plain")
    if query.get("reverse", "").lower() in ("true", "1", "yes", "on", "t", "y"):
        params["reverse"] = "true"
    return params
