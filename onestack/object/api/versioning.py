"""Object versioning (X-Versions-Location stack mode, X-History-Location history mode).

On overwrite the current object is copied into the archive container as
``<3-hex-digit name length><name>/<timestamp>``. A DELETE in stack mode puts the
newest archived version back (and removes it from the archive); in history mode
it archives the current object and deletes it.
"""

from __future__ import annotations

from starlette.responses import Response

from onestack.object.api.common import SwiftRequest, empty
from onestack.object.api.errors import SwiftError
from onestack.object.api.sources import open_source
from onestack.object.proxy.store import ContainerInfo

KEPT = (
    "content-type",
    "content-encoding",
    "content-disposition",
    "content-language",
    "cache-control",
    "expires",
    "x-object-manifest",
    "x-delete-at",
    "x-static-large-object",
)


def version_prefix(obj: str) -> str:
    return f"{len(obj.encode()):03x}{obj}/"


def _location(info: ContainerInfo) -> tuple[str, str] | None:
    for header, mode in (("x-versions-location", "stack"), ("x-history-location", "history")):
        value = info.headers.get(header)
        if value:
            return value, mode
    return None


async def _archive_writable(swift: SwiftRequest, archive: str) -> None:
    archive_info = await swift.store.container_info(swift.account, archive)
    if archive_info is None:
        raise SwiftError(412, f"Container {archive} does not exist", content_type="text/plain")
    if swift.grant.owner or swift.temp_url:
        return
    probe = SwiftRequest(
        swift.request, swift.service, swift.account, archive, "x", swift.headers, swift.token
    )
    probe.authorize(archive_info.write_acl, method="PUT")


async def _copy(swift: SwiftRequest, src: tuple[str, str], dest: tuple[str, str]) -> bool:
    """Server-side copy within the account, manifests as manifests; False if src is gone."""
    source = await open_source(swift.store, swift.account, src[0], src[1], manifest_raw=True)
    if source is None:
        return False
    headers = {
        k: v
        for k, v in source.headers.items()
        if k in KEPT or k.startswith(("x-object-meta-", "x-object-sysmeta-"))
    }
    headers["content-length"] = str(source.size)
    status, _ = await swift.store.put_object(
        swift.account, dest[0], dest[1], headers, await source.read(0, source.size)
    )
    if status >= 300:
        raise SwiftError(503)
    return True


async def archive_current(swift: SwiftRequest, info: ContainerInfo) -> None:
    """Before an overwrite: keep the current object in the archive container."""
    location = _location(info)
    if location is None:
        return
    archive, _ = location
    head = await swift.store.get_object(swift.account, swift.container, swift.obj, method="HEAD")
    if head.status != 200:
        return
    await _archive_writable(swift, archive)
    name = version_prefix(swift.obj) + head.headers["x-timestamp"]
    await _copy(swift, (swift.container, swift.obj), (archive, name))


async def delete_with_versions(swift: SwiftRequest, info: ContainerInfo) -> Response | None:
    """A DELETE in a versioned container; None when it is a plain delete after all."""
    location = _location(info)
    if location is None:
        return None
    archive, mode = location
    await _archive_writable(swift, archive)
    if mode == "history":
        await archive_current(swift, info)
        return None
    status, rows, _ = await swift.store.list_objects(
        swift.account, archive, prefix=version_prefix(swift.obj), reverse="true", limit="1"
    )
    if status >= 300 or not rows:
        return None
    newest = rows[0]["name"]
    if not await _copy(swift, (archive, newest), (swift.container, swift.obj)):
        return None
    await swift.store.write_object("DELETE", swift.account, archive, newest, {})
    return empty(204)
