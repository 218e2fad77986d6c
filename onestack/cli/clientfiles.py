"""``clouds.yaml`` and ``openrc`` so the openstack CLI and SDK find the new cloud."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import yaml

CLOUD_NAME = "onestack"


def write_client_files(
    data_dir: Path, auth_url: str, password: str, region: str
) -> tuple[Path, Path]:
    """Write both files (0600: they hold the admin password); return their paths."""
    data_dir = data_dir.resolve()
    clouds = {
        "clouds": {
            CLOUD_NAME: {
                "auth": {
                    "auth_url": auth_url,
                    "username": "admin",
                    "password": password,
                    "project_name": "admin",
                    "user_domain_name": "Default",
                    "project_domain_name": "Default",
                },
                "region_name": region,
                "identity_api_version": 3,
                "interface": "public",
            }
        }
    }
    clouds_path = data_dir / "clouds.yaml"
    openrc_path = data_dir / "openrc"
    env = {
        "OS_AUTH_URL": auth_url,
        "OS_USERNAME": "admin",
        "OS_PASSWORD": password,
        "OS_PROJECT_NAME": "admin",
        "OS_USER_DOMAIN_NAME": "Default",
        "OS_PROJECT_DOMAIN_NAME": "Default",
        "OS_REGION_NAME": region,
        "OS_IDENTITY_API_VERSION": "3",
        "OS_INTERFACE": "public",
    }
    openrc = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items())
    for path, text in (
        (clouds_path, yaml.safe_dump(clouds, sort_keys=False)),
        (openrc_path, openrc),
    ):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
    return clouds_path, openrc_path
