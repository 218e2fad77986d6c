"""``forceDelete`` and ``restore``: a soft-deleted server (``reclaim_instance_interval``
set, see ``servers.delete``) deleted at once, or powered on again with everything it had."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from onestack.compute import vm_states
from onestack.compute.api.common import service
from onestack.compute.api.lookups import check_state
from onestack.compute.api.server_actions import action, begin, payload_of
from onestack.compute.api.servers import delete
from onestack.compute.models import Instance
from onestack.core.asgi.errors import Conflict
from onestack.core.asgi.routing import RouteTable

routes = RouteTable()


@action("forceDelete")
async def force_delete(request: Request, server: Instance, args: Any) -> Response:
    """Delete now, whatever the state (a soft-deleted server too)."""
    await delete(request, server.uuid, force=True)
    return Response(status_code=202)


@action("restore")
async def restore(request: Request, server: Instance, args: Any) -> Response:
    """Undo a soft delete: its agent powers the server on (it kept its quota)."""
    check_state(server, "restore", (vm_states.SOFT_DELETED,))
    if not server.host:
        raise Conflict(f"Cannot 'restore' instance {server.uuid}: it is on no host")
    rid = await begin(request, server, "restore", vm_states.TASK_OF["restore"], deleted_at=None)
    await service(request).agents.cast(server.host, "run_action",
                                       instance=await payload_of(request, server),
                                       action="restore", request_id=rid, args={})  # fmt: skip
    return Response(status_code=202)
