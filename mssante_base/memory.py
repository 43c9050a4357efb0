"""Giving freed memory back to the system, as a long-running process should (glibc only).

After a burst of work (a hundred IMAP sessions reading and parsing messages, a bulk batch), glibc keeps
the memory freed by every thread's arena: a worker stayed ~30 MB above its resting size after the IMAP
benchmark's load, none of it in use (tracemalloc saw ~11 MB of live Python objects). ``malloc_trim``
returns the free pages of every arena; called every half minute it costs a few milliseconds.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

TRIM_INTERVAL = 30.0


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None elsewhere (musl, macOS)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


async def trim_periodically(interval: float = TRIM_INTERVAL) -> None:
    """Every ``interval`` seconds, give the free pages of the C heap back (until cancelled)."""
    trim = _malloc_trim()
    if trim is None:
        log.debug("no malloc_trim here: freed memory stays with the process")
        return
    while True:
        await asyncio.sleep(interval)
        trim(0)
