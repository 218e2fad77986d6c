"""Finding what a compute request names, with tenancy and Nova's messages: servers,
flavors, and the state checks of server actions."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request

from onestack.compute.api.common import caller, enforce, is_admin
from onestack.compute.models import Flavor, FlavorExtraSpec, FlavorProject, Instance
from onestack.core.asgi.errors import BadRequest, Conflict, NotFound


async def find_server(
    request: Request, session: AsyncSession, server_id: str, rule: str = "read"
) -> Instance:
    """The server, if the caller may see it (another project's is a 404, as Nova says)."""
    inst = (
        await session.execute(select(Instance).where(Instance.uuid == server_id))
    ).scalar_one_or_none()
    if inst is None or inst.deleted:
        raise NotFound(f"Instance {server_id} could not be found.")
    context = caller(request)
    if not is_admin(request) and inst.project_id != context.project_id:
        raise NotFound(f"Instance {server_id} could not be found.")
    enforce(request, rule, {"project_id": inst.project_id, "user_id": inst.user_id})
    return inst


def check_state(
    inst: Instance,
    action: str,
    vm_states: tuple[str, ...],
    task_states: tuple[str | None, ...] = (None,),
) -> None:
    """409 unless the server is in one of ``vm_states`` and ``task_states``."""
    if inst.vm_state not in vm_states:
        raise Conflict(
            f"Cannot '{action}' instance {inst.uuid} while it is in vm_state {inst.vm_state}"
        )
    if inst.task_state not in task_states:
        raise Conflict(
            f"Cannot '{action}' instance {inst.uuid} while it is in task_state {inst.task_state}"
        )


def check_unlocked(request: Request, inst: Instance) -> None:
    """409 when the server is locked and the caller is not an admin."""
    if inst.locked and not is_admin(request):
        raise Conflict(f"Instance {inst.uuid} is locked")


async def find_flavor(session: AsyncSession, flavor_id: str) -> Flavor | None:
    """A flavor by its API id."""
    return (
        await session.execute(select(Flavor).where(Flavor.flavorid == flavor_id))
    ).scalar_one_or_none()


async def extra_specs_of(session: AsyncSession, flavor: Flavor) -> dict[str, str]:
    rows = (
        await session.execute(select(FlavorExtraSpec).where(FlavorExtraSpec.flavor_id == flavor.id))
    ).scalars()
    return {row.key: row.value for row in rows}


async def can_use_flavor(request: Request, session: AsyncSession, flavor: Flavor) -> bool:
    """Public flavors are everyone's; private ones their projects' (and the admin's)."""
    if flavor.is_public or is_admin(request):
        return True
    found = await session.execute(
        select(FlavorProject.id).where(
            FlavorProject.flavor_id == flavor.id,
            FlavorProject.project_id == caller(request).project_id,
        )
    )
    return found.first() is not None


async def usable_flavor(request: Request, session: AsyncSession, ref: object) -> Flavor:
    """The flavor a create/resize names (id or link); 400 when unknown or not allowed."""
    text = str(ref or "").rstrip("/").rsplit("/", 1)[-1]
    flavor = await find_flavor(session, text) if text else None
    if flavor is None or flavor.disabled or not await can_use_flavor(request, session, flavor):
        raise BadRequest(f"Flavor {text} could not be found.")
    return flavor
