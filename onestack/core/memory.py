"""Process-wide memory behaviour that Python itself cannot set."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 1 << 20


def return_large_blocks_to_the_os() -> None:
    """Serve allocations of 1 MiB and more with mmap, so freeing them shrinks the process.

    glibc raises its mmap threshold dynamically after large blocks are freed, after which
    big buffers (argon2's 19 MiB per password check) stay in per-thread arenas for good.
    A fixed threshold keeps resident memory flat under load. No-op off glibc.
    """
    name = ctypes.util.find_library("c")
    if not name:
        return
    try:
        libc = ctypes.CDLL(name)
        if not libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD):
            log.debug("mallopt refused the mmap threshold")
    except (OSError, AttributeError):
        log.debug("not glibc: leaving malloc as it is")


def freeze_startup_objects() -> None:
    """Exempt everything alive once the cloud has started from the cyclic garbage collector.

    Imports and start-up leave some hundred megabytes of long-lived objects; every full
    collection walked them all, a pause of ~100 ms that landed on whichever request
    happened to allocate then (the p99 of allocation candidates). Frozen objects are
    never scanned again; objects made afterwards are collected as usual.
    """
    gc.collect()
    gc.freeze()
