"""``/v3/projects`` and project tags."""

from __future__ import annotations

from sqlalchemy import delete, select
from starlette.requests import Request
from starlette.responses import Response

from onestack.core.asgi.errors import BadRequest, Forbidden, NotFound
from onestack.core.asgi.request import body_as, json_body
from onestack.core.asgi.routing import RouteTable
from onestack.identity import views
from onestack.identity.api.common import (
    committed,
    enforce,
    get_or_404,
    json,
    no_content,
    service,
)
from onestack.identity.api.crud import apply_changes, filtered, flush_unique
from onestack.identity.models import Assignment, Domain, Project
from onestack.identity.schemas import ProjectRequest

routes = RouteTable()
FIELDS = ("name", "description", "enabled", "tags", "domain_id", "parent_id", "is_domain")
MAX_TAGS = 80


def _check_tags(tags: list[str]) -> list[str]:
    if len(tags) > MAX_TAGS:
        raise BadRequest(f"A project can have at most {MAX_TAGS} tags.")
    for tag in tags:
        if not tag or len(tag) > 255 or "/" in tag or "," in tag:
            raise BadRequest(f"Invalid tag {tag!r}: 1-255 characters, no '/' or ','.")
    return list(dict.fromkeys(tags))


@routes.post("/v3/projects")
async def create_project(request: Request) -> Response:
    context = enforce(request, "create_project")
    body = (await body_as(request, ProjectRequest)).project
    if not body.name:
        raise BadRequest("Invalid input for field 'name': a project needs a name.")
    if body.is_domain:
        raise BadRequest("Projects acting as domains are not supported; create a domain.")
    identity = service(request)
    async with identity.db.session() as session:
        domain_id = body.domain_id
        if body.parent_id:
            parent = await session.get(Project, body.parent_id)
            if parent is None:
                raise NotFound(f"Could not find project: {body.parent_id}.")
            if domain_id and domain_id != parent.domain_id:
                raise BadRequest("A project must be in the same domain as its parent.")
            domain_id = parent.domain_id
        domain_id = domain_id or (context.token.project_domain_id if context.token else None)
        domain_id = domain_id or "default"
        if await session.get(Domain, domain_id) is None:
            raise NotFound(f"Could not find domain: {domain_id}.")
        project = Project(
            name=body.name,
            domain_id=domain_id,
            parent_id=body.parent_id,
            description=body.description or "",
            enabled=True if body.enabled is None else body.enabled,
            tags=_check_tags(body.tags or []),
        )
        project.extra = apply_changes(project, body, FIELDS)
        project.domain_id = domain_id
        session.add(project)
        await flush_unique(session, "project", body.name)
        await identity.tokens.changed(session)
        result = views.project(request, project)
    await committed(request)
    return json({"project": result}, 201)


@routes.get("/v3/projects")
async def list_projects(request: Request) -> Response:
    # Members get 403 here, as from Keystone: the openstack CLI then lists their own
    # projects (/v3/users/{id}/projects) and treats ids it cannot look up as given.
    enforce(request, "list_projects", {"target.domain_id": request.query_params.get("domain_id")})
    query = filtered(
        select(Project), Project, request, ("name", "domain_id", "enabled", "parent_id")
    )
    async with service(request).db.session() as session:
        rows = list((await session.execute(query.order_by(Project.name))).scalars())
    wanted_all = [t for t in request.query_params.get("tags", "").split(",") if t]
    wanted_any = [t for t in request.query_params.get("tags-any", "").split(",") if t]
    items = [
        views.project(request, p)
        for p in rows
        if set(wanted_all) <= set(p.tags or [])
        and (not wanted_any or set(wanted_any) & set(p.tags or []))
    ]
    return json(views.collection(request, "projects", items))


@routes.get("/v3/projects/{project_id}")
async def get_project(request: Request) -> Response:
    project_id = request.path_params["project_id"]
    async with service(request).db.session() as session:
        project = await get_or_404(session, Project, project_id, "project")
        enforce(
            request,
            "get_project",
            {"target.project.id": project.id, "target.domain_id": project.domain_id},
        )
        return json({"project": views.project(request, project)})


@routes.patch("/v3/projects/{project_id}")
async def update_project(request: Request) -> Response:
    enforce(request, "update_project")
    body = (await body_as(request, ProjectRequest)).project
    identity = service(request)
    async with identity.db.session() as session:
        project = await get_or_404(session, Project, request.path_params["project_id"], "project")
        if body.domain_id not in (None, project.domain_id):
            raise BadRequest("A project cannot move to another domain.")
        if body.parent_id not in (None, project.parent_id, project.domain_id):
            raise BadRequest("A project cannot move to another parent.")
        was_enabled = project.enabled
        extras = apply_changes(project, body, ("name", "description", "enabled"))
        if body.tags is not None:
            project.tags = _check_tags(body.tags)
        project.extra = {**(project.extra or {}), **extras}
        await flush_unique(session, "project", body.name)
        if was_enabled and not project.enabled:
            await identity.tokens.revoke(session, project_id=project.id)
        await identity.tokens.changed(session)
        result = views.project(request, project)
    await committed(request)
    return json({"project": result})


@routes.delete("/v3/projects/{project_id}")
async def delete_project(request: Request) -> Response:
    enforce(request, "delete_project")
    identity = service(request)
    async with identity.db.session() as session:
        project = await get_or_404(session, Project, request.path_params["project_id"], "project")
        child = await session.scalar(select(Project.id).where(Project.parent_id == project.id))
        if child:
            raise Forbidden(
                f"Cannot delete project {project.id}: it is not a leaf in the hierarchy."
            )
        await session.execute(delete(Assignment).where(Assignment.target_id == project.id))
        await identity.tokens.revoke(session, project_id=project.id)
        await session.delete(project)
    await committed(request)
    return no_content()


@routes.get("/v3/projects/{project_id}/tags")
async def list_tags(request: Request) -> Response:
    async with service(request).db.session() as session:
        project = await get_or_404(session, Project, request.path_params["project_id"], "project")
        enforce(request, "list_project_tags", {"target.project.id": project.id})
        return json({"tags": list(project.tags or [])})


@routes.put("/v3/projects/{project_id}/tags")
async def replace_tags(request: Request) -> Response:
    enforce(request, "update_project_tags")
    body = await json_body(request)
    if not isinstance(body, dict) or not isinstance(body.get("tags"), list):
        raise BadRequest('Invalid input: expected {"tags": [...]}.')
    identity = service(request)
    async with identity.db.session() as session:
        project = await get_or_404(session, Project, request.path_params["project_id"], "project")
        project.tags = _check_tags([str(t) for t in body["tags"]])
        await identity.tokens.changed(session)
        result = {"tags": list(project.tags)}
    await committed(request)
    return json(result)


@routes.get("/v3/projects/{project_id}/tags/{tag}")
async def check_tag(request: Request) -> Response:
    async with service(request).db.session() as session:
        project = await get_or_404(session, Project, request.path_params["project_id"], "project")
        enforce(request, "get_project_tag", {"target.project.id": project.id})
        if request.path_params["tag"] not in (project.tags or []):
            raise NotFound(f"Could not find tag: {request.path_params['tag']}.")
    return no_content()


@routes.put("/v3/projects/{project_id}/tags/{tag}")
async def add_tag(request: Request) -> Response:
    enforce(request, "create_project_tag")
    identity = service(request)
    async with identity.db.session() as session:
        project = await get_or_404(session, Project, request.path_params["project_id"], "project")
        project.tags = _check_tags([*(project.tags or []), request.path_params["tag"]])
        await identity.tokens.changed(session)
    await committed(request)
    return Response(status_code=201, headers={"Location": str(request.url)})


@routes.delete("/v3/projects/{project_id}/tags/{tag}")
async def remove_tag(request: Request) -> Response:
    enforce(request, "delete_project_tag")
    identity = service(request)
    async with identity.db.session() as session:
        project = await get_or_404(session, Project, request.path_params["project_id"], "project")
        tag = request.path_params["tag"]
        if tag not in (project.tags or []):
            raise NotFound(f"Could not find tag: {tag}.")
        project.tags = [t for t in project.tags if t != tag]
        await identity.tokens.changed(session)
    await committed(request)
    return no_content()


@routes.delete("/v3/projects/{project_id}/tags")
async def clear_tags(request: Request) -> Response:
    enforce(request, "delete_project_tags")
    identity = service(request)
    async with identity.db.session() as session:
        project = await get_or_404(session, Project, request.path_params["project_id"], "project")
        project.tags = []
        await identity.tokens.changed(session)
    await committed(request)
    return no_content()
