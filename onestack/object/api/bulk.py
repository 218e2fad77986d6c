"""Bulk delete: ``POST /v1/{account}?bulk-delete`` with one ``/container/object`` per line."""

from __future__ import annotations

import json
from urllib.parse import unquote
from xml.etree import ElementTree

from starlette.responses import Response

from onestack.object.api.common import SwiftRequest
from onestack.object.api.errors import SwiftError, title

MAX_DELETES = 10000
MAX_FAILED = 1000


async def bulk_delete(swift: SwiftRequest) -> Response:
    raw = b""
    async for chunk in swift.request.stream():
        raw += chunk
        if len(raw) > MAX_DELETES * 2048:
            raise SwiftError(413)
    paths = [unquote(line.strip()) for line in raw.decode("utf-8", "replace").splitlines()]
    paths = [p for p in paths if p]
    if len(paths) > MAX_DELETES:
        raise SwiftError(
            413, f"Maximum Bulk Deletes: {MAX_DELETES} per request", content_type="text/plain"
        )
    return await delete_paths(swift, paths)


async def delete_paths(swift: SwiftRequest, paths: list[str]) -> Response:
    """Delete objects (and then empty containers) by path; Swift's bulk result document."""
    deleted = not_found = 0
    errors: list[tuple[str, str]] = []
    for path in paths:
        container, _, obj = path.lstrip("/").partition("/")
        if not container:
            errors.append((path, "400 Bad Request"))
            continue
        info = await swift.store.container_info(swift.account, container)
        try:
            if not swift.grant.reseller:
                target = SwiftRequest(
                    swift.request,
                    swift.service,
                    swift.account,
                    container,
                    obj,
                    swift.headers,
                    swift.token,
                )
                target.authorize(info.write_acl if info and obj else None, method="DELETE")
                if not obj and not target.grant.owner:
                    raise SwiftError(403)
        except SwiftError as exc:
            errors.append((path, f"{exc.status} {title(exc.status)}"))
            continue
        if obj:
            status = await swift.store.write_object("DELETE", swift.account, container, obj, {})
        else:
            status = await swift.store.write_container("DELETE", swift.account, container, {})
        if status == 404:
            not_found += 1
        elif status < 300:
            deleted += 1
        else:
            errors.append((path, f"{status} {title(status)}"))
        if len(errors) >= MAX_FAILED:
            break
    status_line = "400 Bad Request" if errors else "200 OK"
    result = {
        "Number Deleted": deleted,
        "Number Not Found": not_found,
        "Response Body": "",
        "Response Status": status_line,
        "Errors": [[p, e] for p, e in errors],
    }
    return _render(swift, result)


def _render(swift: SwiftRequest, result: dict[str, object]) -> Response:
    accept = swift.headers.get("accept", "")
    if "json" in accept:
        return Response(json.dumps(result), 200, media_type="application/json")
    if "xml" in accept:
        root = ElementTree.Element("delete")
        for key, value in result.items():
            tag = key.lower().replace(" ", "_")
            node = ElementTree.SubElement(root, tag)
            if isinstance(value, list):
                for path, err in value:
                    obj = ElementTree.SubElement(node, "object")
                    ElementTree.SubElement(obj, "name").text = path
                    ElementTree.SubElement(obj, "status").text = err
            else:
                node.text = str(value)
        body = b'<?xml version="1.0" encoding="UTF-8"?>\n' + ElementTree.tostring(root)
        return Response(body, 200, media_type="application/xml")
    lines = [f"{k}: {v}" for k, v in result.items() if k != "Errors"]
    lines.append("Errors:")
    lines += [f"{p}, {e}" for p, e in result["Errors"]]  # type: ignore[attr-defined]
    return Response("\n".join(lines) + "\n", 200, media_type="text/plain")
