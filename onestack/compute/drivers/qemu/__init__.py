"""The qemu hypervisor driver: servers as QEMU processes driven through QMP."""

from onestack.compute.drivers.qemu.driver import QemuDriver

__all__ = ["QemuDriver"]
