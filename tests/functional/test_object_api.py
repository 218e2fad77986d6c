"""Swift's API v1 in-process: accounts, containers, objects, listings and their options."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from xml.etree import ElementTree

import pytest
import pytest_asyncio

from tests.conftest import CloudClient
from tests.functional.object_helpers import Swift, chunks, object_cloud, swift_for

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[CloudClient]:
    cloud, client = await object_cloud(tmp_path_factory.mktemp("object-api"))
    try:
        yield client
    finally:
        await client.http.aclose()
        await cloud.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def admin(env: CloudClient) -> Swift:
    return await swift_for(env, await env.token())


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def other(env: CloudClient) -> Swift:
    admin_token = await env.token()
    _, token = await env.project_member(admin_token, "other")
    return await swift_for(env, token)


async def test_catalog_and_info(env: CloudClient, admin: Swift) -> None:
    token = await env.token()
    body = (await env.call("GET", "/identity/v3/auth/catalog", token)).json()
    urls = [
        e["url"] for s in body["catalog"] if s["type"] == "object-store" for e in s["endpoints"]
    ]
    assert f"http://127.0.0.1:8000/object/v1/{admin.account}" in urls
    info = (await env.http.get("/object/info")).json()
    assert {"swift", "slo", "tempurl", "bulk_delete", "versioned_writes"} <= set(info)
    assert info["swift"]["max_file_size"] == 5 * 1024**3


async def test_empty_account_and_errors(admin: Swift) -> None:
    head = await admin("HEAD")
    assert head.status_code == 204
    assert head.headers["x-account-container-count"] == "0"
    assert head.headers["x-trans-id"].startswith("tx")
    assert head.headers["x-openstack-request-id"] == head.headers["x-trans-id"]
    missing = await admin("GET", "/nothing-here")
    assert missing.status_code == 404
    assert missing.text == "<html><h1>Not Found</h1><p>The resource could not be found.</p></html>"
    assert missing.headers["content-type"] == "text/html; charset=UTF-8"
    assert (await admin.anonymous()("GET")).status_code == 401
    assert (await admin("PUT", "/" + "x" * 257)).status_code == 400
    assert (await admin("PUT")).status_code == 405


async def test_container_lifecycle(admin: Swift) -> None:
    assert (await admin("PUT", "/life")).status_code == 201
    assert (await admin("PUT", "/life")).status_code == 202
    posted = await admin("POST", "/life", headers={"X-Container-Meta-Color": "blue"})
    assert posted.status_code == 204
    head = await admin("HEAD", "/life")
    assert head.status_code == 204 and head.headers["x-container-meta-color"] == "blue"
    assert head.headers["x-container-object-count"] == "0"
    await admin("POST", "/life", headers={"X-Remove-Container-Meta-Color": "x"})
    assert "x-container-meta-color" not in (await admin("HEAD", "/life")).headers
    assert (await admin("PUT", "/life/o", content=b"x")).status_code == 201
    conflict = await admin("DELETE", "/life")
    assert conflict.status_code == 409
    assert (await admin("DELETE", "/life/o")).status_code == 204
    assert (await admin("DELETE", "/life")).status_code == 204
    assert (await admin("HEAD", "/life")).status_code == 404
    assert (await admin("DELETE", "/life")).status_code == 404


async def test_object_round_trip_with_metadata(admin: Swift) -> None:
    await admin("PUT", "/objs")
    data = b"hello, object storage"
    put = await admin(
        "PUT",
        "/objs/greeting.txt",
        content=data,
        headers={"X-Object-Meta-Lang": "en", "Content-Disposition": "inline"},
    )
    assert put.status_code == 201
    assert put.headers["etag"] == hashlib.md5(data).hexdigest()
    got = await admin("GET", "/objs/greeting.txt")
    assert got.content == data
    assert got.headers["content-type"] == "text/plain"
    assert got.headers["x-object-meta-lang"] == "en"
    assert got.headers["content-disposition"] == "inline"
    assert got.headers["accept-ranges"] == "bytes"
    head = await admin("HEAD", "/objs/greeting.txt")
    assert head.headers["content-length"] == str(len(data))
    post = await admin("POST", "/objs/greeting.txt", headers={"X-Object-Meta-Mood": "calm"})
    assert post.status_code == 202
    after = await admin("HEAD", "/objs/greeting.txt")
    assert after.headers["x-object-meta-mood"] == "calm"
    assert "x-object-meta-lang" not in after.headers
    assert after.headers["etag"] == put.headers["etag"]
    bad = await admin("PUT", "/objs/bad", content=b"abc", headers={"ETag": "0" * 32})
    assert bad.status_code == 422
    assert (await admin("GET", "/objs/bad")).status_code == 404
    assert (await admin("PUT", "/nocontainer/o", content=b"x")).status_code == 404
    too_much = {"X-Object-Meta-" + "k" * 129: "v"}
    assert (await admin("PUT", "/objs/m", content=b"x", headers=too_much)).status_code == 400


async def test_chunked_upload_and_large_object(admin: Swift) -> None:
    await admin("PUT", "/chunked")
    pieces = [bytes([i]) * 700_000 for i in range(5)]
    put = await admin("PUT", "/chunked/big.bin", content=chunks(*pieces))
    assert put.status_code == 201
    whole = b"".join(pieces)
    assert put.headers["etag"] == hashlib.md5(whole).hexdigest()
    got = await admin("GET", "/chunked/big.bin")
    assert got.content == whole
    assert got.headers["content-type"] == "application/octet-stream"
    ranged = await admin("GET", "/chunked/big.bin", headers={"Range": "bytes=1048570-1048589"})
    assert ranged.status_code == 206 and ranged.content == whole[1048570:1048590]
    assert ranged.headers["content-range"] == f"bytes 1048570-1048589/{len(whole)}"


async def test_ranges_and_conditions(admin: Swift) -> None:
    await admin("PUT", "/cond")
    data = b"0123456789"
    etag = (await admin("PUT", "/cond/o", content=data)).headers["etag"]
    suffix = await admin("GET", "/cond/o", headers={"Range": "bytes=-3"})
    assert suffix.status_code == 206 and suffix.content == b"789"
    multi = await admin("GET", "/cond/o", headers={"Range": "bytes=0-1,5-6"})
    assert multi.status_code == 206
    assert multi.headers["content-type"].startswith("multipart/byteranges;boundary=")
    assert b"Content-Range: bytes 0-1/10\r\n\r\n01\r\n" in multi.content
    assert b"Content-Range: bytes 5-6/10\r\n\r\n56\r\n" in multi.content
    assert int(multi.headers["content-length"]) == len(multi.content)
    unsatisfiable = await admin("GET", "/cond/o", headers={"Range": "bytes=20-30"})
    assert unsatisfiable.status_code == 416
    assert unsatisfiable.headers["content-range"] == "bytes */10"
    assert (await admin("GET", "/cond/o", headers={"If-Match": '"nope"'})).status_code == 412
    assert (await admin("GET", "/cond/o", headers={"If-Match": etag})).status_code == 200
    not_modified = await admin("GET", "/cond/o", headers={"If-None-Match": etag})
    assert not_modified.status_code == 304 and not_modified.content == b""
    later = "Fri, 01 Jan 2100 00:00:00 GMT"
    assert (await admin("GET", "/cond/o", headers={"If-Modified-Since": later})).status_code == 304
    early = "Thu, 01 Jan 1970 00:00:00 GMT"
    assert (
        await admin("GET", "/cond/o", headers={"If-Unmodified-Since": early})
    ).status_code == 412
    exists = await admin("PUT", "/cond/o", content=b"x", headers={"If-None-Match": "*"})
    assert exists.status_code == 412
    assert (
        await admin("PUT", "/cond/new", content=b"x", headers={"If-None-Match": "*"})
    ).status_code == 201


async def test_listings_in_every_format_and_option(admin: Swift) -> None:
    await admin("PUT", "/list")
    for name in ("a/1", "a/2", "b/1", "c", "d"):
        await admin("PUT", f"/list/{name}", content=name.encode())
    text = await admin("GET", "/list")
    assert text.text == "a/1\na/2\nb/1\nc\nd\n"
    assert text.headers["content-type"] == "text/plain; charset=utf-8"
    rows = (await admin("GET", "/list?format=json")).json()
    assert [r["name"] for r in rows] == ["a/1", "a/2", "b/1", "c", "d"]
    assert rows[3] == {
        "name": "c",
        "bytes": 1,
        "hash": hashlib.md5(b"c").hexdigest(),
        "content_type": "application/octet-stream",
        "last_modified": rows[3]["last_modified"],
    }
    folded = (await admin("GET", "/list?format=json&delimiter=/")).json()
    assert folded == [{"subdir": "a/"}, {"subdir": "b/"}, rows[3], rows[4]]
    prefixed = await admin("GET", "/list?prefix=a/")
    assert prefixed.text == "a/1\na/2\n"
    paged = await admin("GET", "/list?marker=a/2&end_marker=d&limit=2")
    assert paged.text == "b/1\nc\n"
    backwards = await admin("GET", "/list?reverse=true&limit=3")
    assert backwards.text == "d\nc\nb/1\n"
    reverse_folded = await admin("GET", "/list?reverse=true&delimiter=/")
    assert reverse_folded.text == "d\nc\nb/\na/\n"
    xml = await admin("GET", "/list", headers={"Accept": "application/xml"})
    root = ElementTree.fromstring(xml.content)
    assert root.tag == "container" and root.get("name") == "list"
    assert [o.findtext("name") for o in root.iter("object")] == ["a/1", "a/2", "b/1", "c", "d"]
    assert (await admin("GET", "/list?limit=abc")).status_code == 412
    empty = await admin("GET", "/list?prefix=zzz")
    assert empty.status_code == 204
    assert (await admin("GET", "/list?prefix=zzz&format=json")).json() == []
    accounts = (await admin("GET", "?format=json")).json()
    assert "list" in [c["name"] for c in accounts]


async def test_copy_and_copy_verb(admin: Swift) -> None:
    await admin("PUT", "/copies")
    await admin("PUT", "/copies/src", content=b"source", headers={"X-Object-Meta-A": "1"})
    copied = await admin(
        "PUT",
        "/copies/dst",
        headers={"X-Copy-From": "copies/src", "X-Object-Meta-B": "2", "Content-Length": "0"},
    )
    assert copied.status_code == 201
    assert copied.headers["x-copied-from"] == "copies/src"
    dst = await admin("GET", "/copies/dst")
    assert dst.content == b"source"
    assert dst.headers["x-object-meta-a"] == "1" and dst.headers["x-object-meta-b"] == "2"
    verb = await admin(
        "COPY", "/copies/src", headers={"Destination": "copies/dst2", "X-Fresh-Metadata": "true"}
    )
    assert verb.status_code == 201
    fresh = await admin("GET", "/copies/dst2")
    assert fresh.content == b"source" and "x-object-meta-a" not in fresh.headers
    missing = await admin(
        "PUT", "/copies/x", headers={"X-Copy-From": "copies/none", "Content-Length": "0"}
    )
    assert missing.status_code == 404


async def test_acls_and_cross_project_isolation(admin: Swift, other: Swift) -> None:
    await admin("PUT", "/private")
    await admin("PUT", "/private/o", content=b"secret")
    theirs = Swift(other.http, other.token, admin.account)
    assert (await theirs("GET", "/private/o")).status_code == 403
    assert (await theirs("GET", "/private")).status_code == 403
    assert (await theirs("PUT", "/private/x", content=b"x")).status_code == 403
    assert (await theirs("HEAD")).status_code == 403
    other_project = other.account.removeprefix("AUTH_")
    await admin("POST", "/private", headers={"X-Container-Read": f"{other_project}:*"})
    assert (await theirs("GET", "/private/o")).content == b"secret"
    assert (await theirs("GET", "/private")).text == "o\n"
    assert "x-container-read" not in (await theirs("HEAD", "/private")).headers
    assert (await theirs("PUT", "/private/x", content=b"x")).status_code == 403
    await admin("POST", "/private", headers={"X-Container-Write": f"{other_project}:*"})
    assert (await theirs("PUT", "/private/x", content=b"x")).status_code == 201
    assert (await theirs("POST", "/private", headers={"X-Container-Read": ""})).status_code == 403
    anonymous = admin.anonymous()
    assert (await anonymous("GET", "/private/o")).status_code == 401
    await admin("POST", "/private", headers={"X-Container-Read": ".r:*"})
    assert (await anonymous("GET", "/private/o")).content == b"secret"
    assert (await anonymous("GET", "/private")).status_code == 401
    await admin("POST", "/private", headers={"X-Container-Read": ".r:*,.rlistings"})
    assert (await anonymous("GET", "/private")).status_code == 200
    assert (
        await admin("POST", "/private", headers={"X-Container-Read": ".bad"})
    ).status_code == 400


async def test_quotas(admin: Swift) -> None:
    await admin(
        "PUT",
        "/quota",
        headers={"X-Container-Meta-Quota-Bytes": "10", "X-Container-Meta-Quota-Count": "2"},
    )
    assert (await admin("PUT", "/quota/a", content=b"123456")).status_code == 201
    over = await admin("PUT", "/quota/b", content=b"123456")
    assert over.status_code == 413 and over.text == "Upload exceeds quota."
    assert (await admin("PUT", "/quota/b", content=b"1")).status_code == 201
    assert (await admin("PUT", "/quota/c", content=b"1")).status_code == 413
    assert (
        await admin("PUT", "/q2", headers={"X-Container-Meta-Quota-Bytes": "x"})
    ).status_code == 400
    # Account quotas are the reseller admin's to set, not the account owner's.
    assert (await admin("POST", headers={"X-Account-Meta-Quota-Bytes": "5"})).status_code == 403


async def test_versioning_stack_and_history(admin: Swift) -> None:
    await admin("PUT", "/archive")
    await admin("PUT", "/docs", headers={"X-Versions-Location": "archive"})
    for version in (b"v1", b"v2", b"v3"):
        await admin("PUT", "/docs/page", content=version)
    archived = (await admin("GET", "/archive?format=json")).json()
    assert [r["name"].startswith("004page/") for r in archived] == [True, True]
    assert (await admin("DELETE", "/docs/page")).status_code == 204
    assert (await admin("GET", "/docs/page")).content == b"v2"
    await admin("DELETE", "/docs/page")
    assert (await admin("GET", "/docs/page")).content == b"v1"
    await admin("DELETE", "/docs/page")
    assert (await admin("GET", "/docs/page")).status_code == 404
    await admin("PUT", "/hist-archive")
    await admin("PUT", "/hist", headers={"X-History-Location": "hist-archive"})
    await admin("PUT", "/hist/o", content=b"one")
    await admin("PUT", "/hist/o", content=b"two")
    await admin("DELETE", "/hist/o")
    assert (await admin("GET", "/hist/o")).status_code == 404
    kept = (await admin("GET", "/hist-archive?format=json")).json()
    assert len(kept) == 2
    both = (
        await admin("PUT", "/bad", headers={"X-Versions-Location": "a", "X-History-Location": "b"})
    ).status_code
    assert both == 400


async def test_static_large_object(admin: Swift) -> None:
    await admin("PUT", "/slo")
    await admin("PUT", "/slo_segments")
    parts = [b"A" * 1000, b"B" * 1000, b"C" * 500]
    manifest = []
    for index, part in enumerate(parts):
        put = await admin("PUT", f"/slo_segments/seg{index}", content=part)
        manifest.append(
            {
                "path": f"/slo_segments/seg{index}",
                "etag": put.headers["etag"],
                "size_bytes": len(part),
            }
        )
    made = await admin("PUT", "/slo/big?multipart-manifest=put", content=json.dumps(manifest))
    assert made.status_code == 201, made.text
    slo_etag = hashlib.md5("".join(m["etag"] for m in manifest).encode()).hexdigest()
    assert made.headers["etag"] == f'"{slo_etag}"'
    whole = await admin("GET", "/slo/big")
    assert whole.content == b"".join(parts)
    assert whole.headers["x-static-large-object"] == "True"
    assert whole.headers["etag"] == f'"{slo_etag}"'
    head = await admin("HEAD", "/slo/big")
    assert head.headers["content-length"] == "2500"
    middle = await admin("GET", "/slo/big", headers={"Range": "bytes=990-2009"})
    assert middle.content == (b"".join(parts))[990:2010]
    raw = await admin("GET", "/slo/big?multipart-manifest=get&format=raw")
    assert [e["path"] for e in raw.json()] == [m["path"] for m in manifest]
    listed = (await admin("GET", "/slo?format=json")).json()
    assert listed[0]["bytes"] == 2500 and listed[0]["slo_etag"] == slo_etag
    bad = [{"path": "/slo_segments/seg0", "etag": "0" * 32, "size_bytes": 1000}]
    refused = await admin("PUT", "/slo/bad?multipart-manifest=put", content=json.dumps(bad))
    assert refused.status_code == 400 and "Etag Mismatch" in refused.text
    deleted = await admin(
        "DELETE", "/slo/big?multipart-manifest=delete", headers={"Accept": "application/json"}
    )
    assert deleted.json()["Number Deleted"] == 4
    assert (await admin("GET", "/slo_segments")).status_code == 204


async def test_dynamic_large_object(admin: Swift) -> None:
    await admin("PUT", "/dlo")
    for index in range(3):
        await admin("PUT", f"/dlo/parts/{index:03d}", content=str(index).encode() * 10)
    await admin("PUT", "/dlo/joined", content=b"", headers={"X-Object-Manifest": "dlo/parts/"})
    joined = await admin("GET", "/dlo/joined")
    assert joined.content == b"0" * 10 + b"1" * 10 + b"2" * 10
    assert joined.headers["x-object-manifest"] == "dlo/parts/"
    assert (await admin("HEAD", "/dlo/joined")).headers["content-length"] == "30"


async def test_bulk_delete(admin: Swift) -> None:
    await admin("PUT", "/bulk")
    for index in range(3):
        await admin("PUT", f"/bulk/o{index}", content=b"x")
    body = "\n".join(["/bulk/o0", "/bulk/o1", "/bulk/o2", "/bulk/missing", "/bulk"])
    result = await admin(
        "POST", "?bulk-delete", content=body, headers={"Accept": "application/json"}
    )
    assert result.status_code == 200
    assert result.json()["Number Deleted"] == 4 and result.json()["Number Not Found"] == 1
    text = await admin("POST", "?bulk-delete", content="/bulk")
    assert "Number Not Found: 1" in text.text


async def test_temp_url(admin: Swift) -> None:
    import hmac
    import time

    await admin("POST", headers={"X-Account-Meta-Temp-URL-Key": "sekrit"})
    await admin("PUT", "/temp")
    await admin("PUT", "/temp/file.txt", content=b"shared")
    expires = int(time.time()) + 60
    path = f"/v1/{admin.account}/temp/file.txt"
    signature = hmac.new(b"sekrit", f"GET\n{expires}\n{path}".encode(), hashlib.sha256).hexdigest()
    anonymous = admin.anonymous()
    got = await anonymous(
        "GET", f"/temp/file.txt?temp_url_sig={signature}&temp_url_expires={expires}"
    )
    assert got.status_code == 200 and got.content == b"shared"
    assert got.headers["content-disposition"].startswith('attachment; filename="file.txt"')
    wrong = await anonymous(
        "GET", f"/temp/file.txt?temp_url_sig={'0' * 64}&temp_url_expires={expires}"
    )
    assert wrong.status_code == 401 and wrong.text == "Temp URL invalid\n"
    put = await anonymous(
        "PUT", f"/temp/file.txt?temp_url_sig={signature}&temp_url_expires={expires}", content=b"x"
    )
    assert put.status_code == 401
    past = int(time.time()) - 10
    old = hmac.new(b"sekrit", f"GET\n{past}\n{path}".encode(), hashlib.sha256).hexdigest()
    expired = await anonymous("GET", f"/temp/file.txt?temp_url_sig={old}&temp_url_expires={past}")
    assert expired.status_code == 401 and expired.text == "Temp URL expired\n"


async def test_delete_at_hides_then_expirer_removes(env: CloudClient, admin: Swift) -> None:
    import asyncio
    import time

    from onestack.object.agents import build_agent

    await admin("PUT", "/expiring")
    soon = int(time.time()) + 2
    await admin("PUT", "/expiring/o", content=b"x", headers={"X-Delete-At": str(soon)})
    assert (await admin("HEAD", "/expiring/o")).headers["x-delete-at"] == str(soon)
    assert (
        await admin("PUT", "/expiring/p", content=b"x", headers={"X-Delete-At": "1"})
    ).status_code == 400
    assert (
        await admin("PUT", "/expiring/p", content=b"x", headers={"X-Delete-After": "abc"})
    ).status_code == 400
    await asyncio.sleep(max(0, soon - time.time()) + 0.2)
    assert (await admin("GET", "/expiring/o")).status_code == 404
    service = env.cloud.units["object"].service  # type: ignore[attr-defined]
    await build_agent("container-updater", service)()
    expirer = build_agent("object-expirer", service)
    stats = await expirer.run_once()  # type: ignore[attr-defined]
    assert stats["expired"] == 1
    assert (await admin("GET", "/expiring")).status_code == 204
