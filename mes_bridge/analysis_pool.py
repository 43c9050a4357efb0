"""Reading big messages in other processes, so the intake uses every core.

Parsing a lab report (MIME, base64, the XDM archive, types by content) is pure Python work held by the
GIL: in the LMTP process it would cap the intake at one core. Messages from ``MIN_POOLED_SIZE`` up are
read by a small pool of worker processes (started on first need, with "spawn": the service's threads and
database connections are not inherited); small ones cost less to read in a thread than to send across.
A pool that breaks (a worker killed) is replaced, and that message is read in a thread meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from functools import partial
from typing import TypeVar

log = logging.getLogger(__name__)

MIN_POOLED_SIZE = 128 * 1024
T = TypeVar("T")


class AnalysisPool:
    """``run(size, fn, *args)``: ``fn(*args)`` in a worker process for big inputs, else in a thread."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._executor: ProcessPoolExecutor | None = None

    def _pool(self) -> ProcessPoolExecutor:
        if self._executor is None:
            self._executor = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))
        return self._executor

    async def run(self, size: int, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
        call = partial(fn, *args, **kwargs)
        if self.workers <= 0 or size < MIN_POOLED_SIZE:
            return await asyncio.to_thread(call)
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool(), call)
        except BrokenProcessPool:
            log.error("analysis worker lost; the pool is restarted and this message read in a thread")
            self.close()
            return await asyncio.to_thread(call)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
