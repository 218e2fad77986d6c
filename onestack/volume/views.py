"""Block storage resources rendered as Cinder v3 shows them, per microversion.

Every ``if at_least(...)`` about what a response carries lives here, so
handlers never branch on versions for their output.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from onestack.volume.api.common import at_least, is_admin, iso, links
from onestack.volume.models import (
    Attachment,
    Backup,
    QosSpecs,
    Snapshot,
    Transfer,
    Volume,
    VolumeType,
)


def volume_summary(request: Request, volume: Volume) -> dict[str, Any]:
    return {"id": volume.id, "name": volume.name, "links": links(request, "volumes", volume.id)}


def volume_attachment_entry(attachment: Attachment) -> dict[str, Any]:
    """An attachment as a volume's ``attachments`` list shows it."""
    return {
        "id": attachment.volume_id,
        "attachment_id": attachment.id,
        "volume_id": attachment.volume_id,
        "server_id": attachment.instance_uuid,
        "host_name": attachment.attached_host,
        "device": attachment.mountpoint,
        "attached_at": iso(attachment.attach_time),
    }


def volume_detail(
    request: Request,
    volume: Volume,
    *,
    metadata: dict[str, str],
    attachments: list[Attachment],
    volume_type: VolumeType | None,
) -> dict[str, Any]:
    admin = is_admin(request)
    body: dict[str, Any] = {
        "id": volume.id,
        "name": volume.name,
        "description": volume.description,
        "status": volume.status,
        "size": volume.size,
        "availability_zone": volume.availability_zone,
        "created_at": iso(volume.created_at),
        "updated_at": iso(volume.updated_at),
        "attachments": [
            volume_attachment_entry(a) for a in attachments if a.attach_status == "attached"
        ],
        "bootable": "true" if volume.bootable else "false",
        "encrypted": False,
        "links": links(request, "volumes", volume.id),
        "metadata": metadata,
        "migration_status": volume.migration_status,
        "multiattach": volume.multiattach,
        "replication_status": None,
        "consistencygroup_id": None,
        "snapshot_id": volume.snapshot_id,
        "source_volid": volume.source_volid,
        "user_id": volume.user_id,
        "volume_type": volume_type.name if volume_type else None,
    }
    # Cinder's attribute extensions extend GET views only, not create/update answers.
    shown = request.method == "GET"
    if shown:
        body["os-vol-tenant-attr:tenant_id"] = volume.project_id
    if volume.image_metadata:
        body["volume_image_metadata"] = dict(volume.image_metadata)
    if admin and shown:
        body["os-vol-host-attr:host"] = volume.host
        body["os-vol-mig-status-attr:migstat"] = volume.migration_status
        body["os-vol-mig-status-attr:name_id"] = None
    if at_least(request, "3.13"):
        body["group_id"] = volume.group_id
    if at_least(request, "3.21") and admin:
        body["provider_id"] = None
    if at_least(request, "3.48"):
        body["service_uuid"] = None
        body["shared_targets"] = None if at_least(request, "3.69") else False
    if at_least(request, "3.61") and admin:
        body["cluster_name"] = None
    if at_least(request, "3.63"):
        body["volume_type_id"] = volume.volume_type_id
    if at_least(request, "3.65"):
        body["consumes_quota"] = volume.use_quota
    return body


def snapshot_view(request: Request, snapshot: Snapshot) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": snapshot.id,
        "name": snapshot.name,
        "description": snapshot.description,
        "volume_id": snapshot.volume_id,
        "status": snapshot.status,
        "size": snapshot.size,
        "metadata": dict(snapshot.metadata_ or {}),
        "created_at": iso(snapshot.created_at),
        "updated_at": iso(snapshot.updated_at),
    }
    if request.method == "GET":  # an attribute extension, as the volume ones
        body["os-extended-snapshot-attributes:progress"] = snapshot.progress
        body["os-extended-snapshot-attributes:project_id"] = snapshot.project_id
    if at_least(request, "3.14"):
        body["group_snapshot_id"] = None
    if at_least(request, "3.41"):
        body["user_id"] = snapshot.user_id
    if at_least(request, "3.65"):
        body["consumes_quota"] = snapshot.use_quota
    return body


def backup_summary(request: Request, backup: Backup) -> dict[str, Any]:
    return {"id": backup.id, "name": backup.name, "links": links(request, "backups", backup.id)}


def backup_detail(request: Request, backup: Backup) -> dict[str, Any]:
    body: dict[str, Any] = {
        **backup_summary(request, backup),
        "description": backup.description,
        "status": backup.status,
        "fail_reason": backup.fail_reason,
        "availability_zone": backup.availability_zone,
        "container": backup.container,
        "object_count": backup.object_count,
        "size": backup.size,
        "volume_id": backup.volume_id,
        "snapshot_id": backup.snapshot_id,
        "is_incremental": backup.parent_id is not None,
        "has_dependent_backups": backup.num_dependent_backups > 0,
        "created_at": iso(backup.created_at),
        "updated_at": iso(backup.updated_at),
        "data_timestamp": iso(backup.data_timestamp),
    }
    if at_least(request, "3.43"):
        body["metadata"] = dict(backup.metadata_ or {})
    if at_least(request, "3.56"):
        body["user_id"] = backup.user_id
        body["os-backup-project-attr:project_id"] = backup.project_id
    return body


def attachment_view(attachment: Attachment, *, detail: bool = True) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": attachment.id,
        "status": attachment.attach_status,
        "instance": attachment.instance_uuid,
        "volume_id": attachment.volume_id,
    }
    if detail:
        body.update(
            {
                "attached_at": iso(attachment.attach_time),
                "detached_at": iso(attachment.detach_time),
                "attach_mode": attachment.attach_mode,
                "connection_info": attachment.connection_info or {},
            }
        )
    return body


def type_view(request: Request, volume_type: VolumeType) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": volume_type.id,
        "name": volume_type.name,
        "description": volume_type.description,
        "is_public": volume_type.is_public,
        "extra_specs": dict(volume_type.extra_specs or {}),
    }
    # As Cinder: the type-access attribute is not in an update's answer, the QoS id
    # only in what admins read (GET).
    if request.method != "PUT":
        body["os-volume-type-access:is_public"] = volume_type.is_public
    if is_admin(request) and request.method == "GET":
        body["qos_specs_id"] = volume_type.qos_specs_id
    return body


def qos_view(request: Request, qos: QosSpecs) -> dict[str, Any]:
    return {
        "id": qos.id,
        "name": qos.name,
        "consumer": qos.consumer,
        "specs": dict(qos.specs or {}),
    }


def transfer_view(request: Request, transfer: Transfer, *, detail: bool = True) -> dict[str, Any]:
    collection = "volume-transfers" if at_least(request, "3.55") else "os-volume-transfer"
    body: dict[str, Any] = {
        "id": transfer.id,
        "name": transfer.name,
        "volume_id": transfer.volume_id,
        "links": links(request, collection, transfer.id),
    }
    if detail:
        body["created_at"] = iso(transfer.created_at)
        if at_least(request, "3.55"):
            body["no_snapshots"] = transfer.no_snapshots
        if at_least(request, "3.57"):
            body["source_project_id"] = transfer.source_project_id
            body["destination_project_id"] = transfer.destination_project_id
            body["accepted"] = transfer.accepted
    return body
