"""Hearing about folder changes made by other processes and nodes.

On PostgreSQL every write transaction that changes a folder sends NOTIFY (see ``WriteUnit.announce``);
``PgChangeListener`` holds one LISTEN connection per process and hands the folder ids to a callback.
SQLite has no such thing: ``FolderPoller`` asks for the counters of the folders someone watches, in
one query, a few times a second (an IMAP server with several worker processes on one SQLite file).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

from sqlalchemy.engine import make_url

from .facade import Store
from .write_unit import CHANGES_CHANNEL

log = logging.getLogger(__name__)

ChangeCallback = Callable[[set[int]], None]


def parse_payload(payload: str) -> set[int]:
    """Folder ids of a NOTIFY payload ("3,17"); junk is ignored, never raised."""
    return {int(part) for part in payload.split(",") if part.strip().isdigit()}


class PgChangeListener:
    """A thread that LISTENs on the changes channel and reconnects after failures."""

    def __init__(self, store: Store, callback: ChangeCallback, *, reconnect_delay: float = 1.0) -> None:
        url = make_url(store.url).set(drivername="postgresql")
        self._dsn = url.render_as_string(hide_password=False)
        self._callback = callback
        self._reconnect_delay = reconnect_delay
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pg-listen", daemon=True)

    def start(self, timeout: float = 10.0) -> None:
        self._thread.start()
        self._ready.wait(timeout)

    def _run(self) -> None:
        import psycopg  # here, not at the top: ~9 MB that only a PostgreSQL store needs

        while not self._stop.is_set():
            try:
                with psycopg.connect(self._dsn, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANGES_CHANNEL}")
                    self._ready.set()
                    while not self._stop.is_set():
                        for notify in conn.notifies(timeout=0.5, stop_after=100):
                            ids = parse_payload(notify.payload)
                            if ids:
                                self._callback(ids)
            except psycopg.Error as exc:
                log.warning("change listener lost its PostgreSQL connection, reconnecting: %s", exc)
                self._stop.wait(self._reconnect_delay)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


class FolderPoller:
    """Reads the (uidnext, highestmodseq) of watched folders; each watcher compares them with what
    its session has seen (a per-process baseline taken at the first look would miss the changes made
    before it)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def poll(self, folder_ids: Iterable[int]) -> dict[int, tuple[int, int] | None]:
        """The counters of each watched folder now; None for a folder that no longer exists."""
        ids = set(folder_ids)
        started = time.monotonic()
        current = self._store.folders.counters_many(ids)
        if time.monotonic() - started > 0.2:
            log.warning("polling %d folders took %.0f ms", len(ids), (time.monotonic() - started) * 1000)
        return {i: current.get(i) for i in ids}
