"""Volume drivers by name: ``file`` (the real one) and ``fake`` (scale tests)."""

from __future__ import annotations

from pathlib import Path

from onestack.core.config import VolumeBackendSettings
from onestack.volume.drivers.base import VolumeDriver


def make_driver(
    backend: VolumeBackendSettings, data_dir: Path, *, host: str, export_address: str
) -> VolumeDriver:
    """The driver a backend's settings name; ValueError for an unknown one."""
    if backend.driver == "file":
        from onestack.volume.drivers.file import FileDriver

        directory = Path(backend.path) if backend.path else data_dir / "volumes" / backend.name
        return FileDriver(backend, directory, host=host, export_address=export_address)
    if backend.driver == "fake":
        from onestack.volume.drivers.fake import FakeDriver

        return FakeDriver(backend)
    raise ValueError(f"unknown volume driver {backend.driver!r} (file or fake)")
