"""One S3 request: who signed it, the bucket and key (path or virtual-host style), its account."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import unquote

from starlette.datastructures import QueryParams
from starlette.requests import Request

from onestack.core.asgi.routing import route_path
from onestack.object.api.access import Grant, authorize
from onestack.object.api.errors import SwiftError
from onestack.object.proxy.store import ContainerInfo, Store
from onestack.object.s3.auth import Signed
from onestack.object.s3.errors import S3Error

if TYPE_CHECKING:
    from onestack.object.service import ObjectService


@dataclass
class S3Request:
    request: Request
    service: ObjectService
    signed: Signed
    bucket: str = ""
    key: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    grant: Grant = field(default_factory=Grant)

    @property
    def store(self) -> Store:
        return self.service.store

    @property
    def account(self) -> str:
        return f"AUTH_{self.signed.token.project_id}"

    @property
    def query(self) -> QueryParams:
        return self.request.query_params

    def authorize(
        self, acl: str | None = None, *, method: str | None = None, obj: str = ""
    ) -> Grant:
        """Swift's rules for the signer: owner of their project's account, or ACL grants."""
        try:
            self.grant = authorize(
                self.signed.token,
                self.service.roles,
                self.account,
                method=method or self.request.method,
                container=self.bucket,
                obj=obj or self.key,
                acl=acl,
            )
        except SwiftError:
            raise S3Error("AccessDenied") from None
        return self.grant

    def require_owner(self) -> None:
        if not self.authorize().owner:
            raise S3Error("AccessDenied")

    async def bucket_info(self, acl: str = "") -> ContainerInfo:
        """The bucket's container; NoSuchBucket when absent, AccessDenied without access."""
        info = await self.store.container_info(self.account, self.bucket)
        if info is None:
            self.authorize(method="GET")
            raise S3Error("NoSuchBucket", BucketName=self.bucket)
        if acl:
            self.authorize(getattr(info, f"{acl}_acl"))
        return info


def bucket_and_key(request: Request, domains: list[str]) -> tuple[str, str]:
    """Virtual-host style (``bucket.<domain>``) first, then path style."""
    host = request.headers.get("host", "").split(":")[0].lower()
    path = unquote(route_path(request.scope))
    for domain in domains:
        if host.endswith("." + domain):
            return host[: -len(domain) - 1], path.lstrip("/")
    bucket, _, key = path.lstrip("/").partition("/")
    return bucket, key
