"""Wakes IMAP sessions when a folder they have selected changes (IDLE, and NOOP-time updates).

Three sources, whichever the store allows: the store's own change listeners (a delivery or a
session of this process: immediate), PostgreSQL NOTIFY (other processes and nodes: immediate),
and, on SQLite, a poll of the watched folders' counters (other worker processes: within
``poll_interval``). A wake-up only says "look again"; sessions compute what changed themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict

from ..store import Store
from ..store.notifications import FolderPoller, PgChangeListener

log = logging.getLogger(__name__)


class Watch:
    """One session's interest in one folder; ``changed`` is set when the folder may have changed.

    ``seen`` is the (uidnext, highestmodseq) the session has reported: the poller wakes it when the
    folder's counters differ, so a change made before the poller's first look at the folder still
    wakes it. None until the session has read the folder: the poller's first look then sets it."""

    def __init__(self, watcher: FolderWatcher, folder_id: int) -> None:
        self.folder_id = folder_id
        self.changed = asyncio.Event()
        self.seen: tuple[int, int] | None = None
        self._watcher = watcher

    async def wait(self, timeout: float | None = None) -> bool:
        """Wait for a change (True) or the timeout (False); clears the flag either way."""
        try:
            await asyncio.wait_for(self.changed.wait(), timeout)
            return True
        except TimeoutError:
            return False
        finally:
            self.changed.clear()

    def close(self) -> None:
        self._watcher._forget(self)


class FolderWatcher:
    """One per process: routes change notices to the sessions watching each folder."""

    def __init__(self, store: Store, *, poll_interval: float = 0.5) -> None:
        self._store = store
        self._poll_interval = poll_interval
        self._watches: dict[int, set[Watch]] = defaultdict(set)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listener: PgChangeListener | None = None
        self._poller_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._store.add_change_listener(self._from_any_thread)
        if self._store.dialect == "postgresql":
            self._listener = PgChangeListener(self._store, self._from_any_thread)
            await asyncio.to_thread(self._listener.start)
        else:
            self._poller_task = asyncio.create_task(self._poll_forever())

    def watch(self, folder_id: int) -> Watch:
        watch = Watch(self, folder_id)
        self._watches[folder_id].add(watch)
        return watch

    def _forget(self, watch: Watch) -> None:
        watchers = self._watches.get(watch.folder_id)
        if watchers is not None:
            watchers.discard(watch)
            if not watchers:
                del self._watches[watch.folder_id]

    def _from_any_thread(self, folder_ids: set[int]) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop is closing
                loop.call_soon_threadsafe(self._wake, folder_ids)

    def _wake(self, folder_ids: set[int]) -> None:
        for folder_id in folder_ids:
            for watch in self._watches.get(folder_id, ()):
                watch.changed.set()

    async def _poll_forever(self) -> None:
        poller = FolderPoller(self._store)
        while True:
            await asyncio.sleep(self._poll_interval)
            if not self._watches:
                continue
            try:
                current = await asyncio.to_thread(poller.poll, list(self._watches))
            except Exception:  # a busy or broken database must not kill the poller: try again
                log.exception("polling folders for changes failed")
                continue
            # Each watch against the counters its session last reported (or it was last woken for), on
            # the loop: the counters only grow, so any change since then differs and wakes it.
            for folder_id, counters in current.items():
                for watch in self._watches.get(folder_id, ()):
                    if watch.seen != counters:
                        if watch.seen is not None:
                            watch.changed.set()
                        watch.seen = counters

    async def stop(self) -> None:
        self._store.remove_change_listener(self._from_any_thread)
        if self._poller_task is not None:
            self._poller_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller_task
        if self._listener is not None:
            await asyncio.to_thread(self._listener.stop)
