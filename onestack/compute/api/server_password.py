"""``changePassword``: the server's agent asks its driver to set the administrator's
password inside the running guest (a call, as Nova's). A driver that cannot is a 501
("Unable to set password on instance"); a guest without an agent inside is a 409."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from onestack.compute import vm_states
from onestack.compute.actions import open_action
from onestack.compute.api.common import caller, service
from onestack.compute.api.lookups import check_state
from onestack.compute.api.server_actions import action, payload_of, request_id
from onestack.compute.models import Instance
from onestack.core.asgi.errors import APIError, BadRequest, Conflict
from onestack.core.asgi.routing import RouteTable
from onestack.core.bus.base import BusError, RemoteError

routes = RouteTable()

PASSWORD_TIMEOUT = 60.0


def guest_call_error(exc: BusError, unsupported: str) -> APIError:
    """The API error of an agent call about the guest that failed: 501 (``unsupported``)
    when the driver lacks the feature, else 409 with the reason."""
    if isinstance(exc, RemoteError):
        if exc.exc_type == "NotImplementedError":
            return APIError(unsupported, status=501)
        return Conflict(exc.message)
    return Conflict(f"The compute host did not answer: {exc}")


@action("changePassword")
async def change_password(request: Request, server: Instance, args: Any) -> Response:
    password = args.get("adminPass") if isinstance(args, dict) else None
    if not isinstance(password, str):
        raise BadRequest("Invalid input for field/attribute adminPass.")
    check_state(server, "changePassword", (vm_states.ACTIVE,))
    context = caller(request)
    async with service(request).db.session() as session:
        open_action(session, server.uuid, "changePassword", request_id(request),
                    context.project_id or "", context.user_id or "")  # fmt: skip
    try:
        await service(request).agents.call(
            str(server.host),
            "set_admin_password",
            timeout=PASSWORD_TIMEOUT,
            instance=await payload_of(request, server),
            password=password,
        )
    except BusError as exc:
        raise guest_call_error(exc, "Unable to set password on instance") from None
    return Response(status_code=202)
