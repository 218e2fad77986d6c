"""Hypervisor drivers behind the compute driver contract (``base.py``), chosen by name."""

from __future__ import annotations

import importlib
import importlib.util
import os
import shutil

from onestack.compute.drivers.base import ComputeDriver
from onestack.core.config import Settings

# name → "module:class"; a module that is not there (yet) is reported, not guessed around.
DRIVERS = {
    "fake": "onestack.compute.drivers.fake:FakeDriver",
    "qemu": "onestack.compute.drivers.qemu:QemuDriver",
}


def available(name: str) -> bool:
    """Whether driver ``name`` can be loaded in this build."""
    module, _, _ = DRIVERS.get(name, ":").partition(":")
    return bool(module) and importlib.util.find_spec(module) is not None


def default_driver(settings: Settings) -> str:
    """The configured driver; else qemu when root with qemu-system-x86_64 (and built), else fake."""
    if settings.compute.driver:
        return settings.compute.driver
    if os.geteuid() == 0 and shutil.which("qemu-system-x86_64") and available("qemu"):
        return "qemu"
    return "fake"


def load_driver(name: str, settings: Settings) -> ComputeDriver:
    """A new driver instance (one per host); ValueError for an unknown name."""
    if name not in DRIVERS:
        raise ValueError(f"unknown compute driver {name!r} (known: {', '.join(DRIVERS)})")
    module_name, _, attr = DRIVERS[name].partition(":")
    factory = getattr(importlib.import_module(module_name), attr)
    driver: ComputeDriver = factory(settings)
    return driver
