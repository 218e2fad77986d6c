"""``GET /info``: the cluster's capabilities and limits, as swiftclient discovers them."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from onestack.core.asgi.routing import RouteTable
from onestack.object.api import bulk, common, slo, tempurl

routes = RouteTable()


def capabilities(max_file_size: int) -> dict[str, object]:
    return {
        "swift": {
            "version": "2.35.0",
            "max_file_size": max_file_size,
            "max_meta_name_length": common.MAX_META_NAME,
            "max_meta_value_length": common.MAX_META_VALUE,
            "max_meta_count": common.MAX_META_COUNT,
            "max_meta_overall_size": common.MAX_META_OVERALL,
            "max_header_size": 8192,
            "max_object_name_length": common.MAX_OBJECT_NAME,
            "max_container_name_length": common.MAX_CONTAINER_NAME,
            "max_account_name_length": common.MAX_ACCOUNT_NAME,
            "container_listing_limit": common.LISTING_LIMIT,
            "account_listing_limit": common.LISTING_LIMIT,
            "extra_header_count": 0,
            "account_autocreate": True,
            "allow_account_management": False,
            "strict_cors_mode": True,
            "valid_api_versions": ["v1", "v1.0"],
            "policies": [{"name": "Policy-0", "aliases": "Policy-0", "default": True}],
        },
        "slo": {
            "max_manifest_segments": slo.MAX_SEGMENTS,
            "max_manifest_size": slo.MAX_MANIFEST_SIZE,
            "min_segment_size": slo.MIN_SEGMENT_SIZE,
            "yield_frequency": 10,
            "allow_async_delete": False,
        },
        "dlo": {"max_segments": 10000},
        "bulk_delete": {
            "max_deletes_per_request": bulk.MAX_DELETES,
            "max_failed_deletes": bulk.MAX_FAILED,
        },
        "tempurl": {
            "methods": list(tempurl.METHODS),
            "allowed_digests": sorted(tempurl.DIGESTS),
            "incoming_remove_headers": ["x-timestamp"],
            "incoming_allow_headers": [],
            "outgoing_remove_headers": ["x-object-meta-*"],
            "outgoing_allow_headers": ["x-object-meta-public-*"],
        },
        "container_quotas": {},
        "account_quotas": {},
        "versioned_writes": {"allowed_flags": ["x-versions-location", "x-history-location"]},
        "keystoneauth": {},
        "s3api": {
            "max_bucket_listing": 1000,
            "max_parts_listing": 1000,
            "max_upload_part_num": 10000,
            "max_multi_delete_objects": 1000,
            "allow_multipart_uploads": True,
            "min_segment_size": 5242880,
            "s3_acl": False,
            "versioning": False,
        },
    }


@routes.get("/info")
async def get_info(request: Request) -> Response:
    service = request.app.state.object_service
    return JSONResponse(capabilities(service.settings.max_file_size))
