"""Request bodies of the identity API, validated with pydantic."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, model_validator

Name = Field(min_length=1, max_length=255)


class Strict(BaseModel):
    """Unknown top-level attributes are kept (Keystone stores them as extras)."""

    model_config = ConfigDict(extra="allow", str_strip_whitespace=False)
    # Flags are JSON booleans as Keystone's schemas say: "True" (a string) is a 400.


class Ref(BaseModel):
    """A reference by id or by name."""

    id: str | None = None
    name: str | None = None

    @model_validator(mode="after")
    def _one_of(self) -> Ref:
        if not self.id and not self.name:
            raise ValueError("either id or name is required")
        return self


class UserRef(Ref):
    domain: Ref | None = None
    password: str | None = None


class PasswordMethod(BaseModel):
    user: UserRef


class TokenMethod(BaseModel):
    id: str


class AppCredMethod(BaseModel):
    id: str | None = None
    name: str | None = None
    secret: str
    user: UserRef | None = None


class AuthIdentity(BaseModel):
    methods: list[str] = Field(min_length=1)
    password: PasswordMethod | None = None
    token: TokenMethod | None = None
    application_credential: AppCredMethod | None = None


class ProjectScope(Ref):
    domain: Ref | None = None


class AuthScope(BaseModel):
    project: ProjectScope | None = None
    domain: Ref | None = None
    system: dict[str, bool] | None = None


class Auth(BaseModel):
    identity: AuthIdentity
    scope: AuthScope | Literal["unscoped"] | None = None


class AuthRequest(BaseModel):
    auth: Auth


class DomainBody(Strict):
    # Keystone's domain schema allows 64 characters.
    name: str | None = Field(None, min_length=1, max_length=64)
    description: str | None = None
    enabled: StrictBool | None = None


class DomainCreate(BaseModel):
    domain: DomainBody


class ProjectBody(Strict):
    # Keystone's project schema allows 64 characters.
    name: str | None = Field(None, min_length=1, max_length=64)
    domain_id: str | None = None
    parent_id: str | None = None
    description: str | None = None
    enabled: StrictBool | None = None
    is_domain: bool | None = None
    tags: list[str] | None = None


class ProjectRequest(BaseModel):
    project: ProjectBody


class UserBody(Strict):
    name: str | None = Field(None, min_length=1, max_length=255)
    domain_id: str | None = None
    password: str | None = None
    enabled: StrictBool | None = None
    default_project_id: str | None = None
    description: str | None = None
    email: str | None = None


class UserRequest(BaseModel):
    user: UserBody


class PasswordChangeBody(BaseModel):
    password: str = Field(min_length=1)
    original_password: str


class PasswordChange(BaseModel):
    user: PasswordChangeBody


class GroupBody(Strict):
    name: str | None = Field(None, min_length=1, max_length=255)
    domain_id: str | None = None
    description: str | None = None


class GroupRequest(BaseModel):
    group: GroupBody


class RoleBody(Strict):
    name: str | None = Field(None, min_length=1, max_length=255)
    domain_id: str | None = None
    description: str | None = None
    options: dict[str, Any] | None = None


class RoleRequest(BaseModel):
    role: RoleBody


class RegionBody(Strict):
    id: str | None = Field(None, min_length=1, max_length=255)
    description: str | None = None
    parent_region_id: str | None = None


class RegionRequest(BaseModel):
    region: RegionBody


class ServiceBody(Strict):
    type: str | None = Field(None, min_length=1, max_length=255)
    name: str | None = None
    description: str | None = None
    enabled: StrictBool | None = None


class ServiceRequest(BaseModel):
    service: ServiceBody


class EndpointBody(Strict):
    service_id: str | None = None
    interface: Literal["public", "internal", "admin"] | None = None
    url: str | None = Field(None, min_length=1)
    region_id: str | None = None
    region: str | None = None
    enabled: StrictBool | None = None


class EndpointRequest(BaseModel):
    endpoint: EndpointBody


class CredentialBody(Strict):
    user_id: str | None = None
    project_id: str | None = None
    type: str | None = Field(None, min_length=1, max_length=255)
    blob: str | None = None


class CredentialRequest(BaseModel):
    credential: CredentialBody


class AppCredRole(Ref):
    pass


class AppCredBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=255)
    description: str | None = None
    secret: str | None = None
    expires_at: dt.datetime | None = None
    roles: list[AppCredRole] | None = None
    unrestricted: bool = False
    access_rules: list[dict[str, Any]] | None = None


class AppCredRequest(BaseModel):
    application_credential: AppCredBody


class Ec2CreateRequest(BaseModel):
    tenant_id: str = Field(min_length=1)
