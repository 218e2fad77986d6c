"""Data-plane drivers by name: ``noop`` and ``linuxbridge``."""

from __future__ import annotations

from onestack.core.config import Settings
from onestack.network.drivers.base import NetworkDriver

DRIVERS = ("noop", "linuxbridge")


def driver_name(settings: Settings) -> str:
    """The configured driver, or linuxbridge when this host can run it, else noop."""
    from onestack.network.drivers.linuxbridge.features import linuxbridge_possible

    chosen = settings.network.driver
    if chosen:
        if chosen not in DRIVERS:
            raise ValueError(f"unknown network driver {chosen!r} (known: {', '.join(DRIVERS)})")
        return chosen
    return "linuxbridge" if linuxbridge_possible() else "noop"


def make_driver(settings: Settings) -> NetworkDriver:
    """The data-plane driver of this deployment."""
    if driver_name(settings) == "linuxbridge":
        from onestack.network.drivers.linuxbridge import LinuxBridgeDriver

        return LinuxBridgeDriver()
    from onestack.network.drivers.noop import NoopDriver

    return NoopDriver()
