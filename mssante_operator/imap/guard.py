"""Closes the IMAP sessions of an account disabled after they logged in, whichever node disabled it.

One guard per process: every ``interval`` seconds (while sessions are logged in) it asks the store which
of their logins are disabled (one query for all of them) and tells those sessions BYE. A session idling
(IDLE) or waiting for its next command is closed the same way, within ``interval``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable

from ..store.accounts import Accounts, AccountsUnavailable

log = logging.getLogger(__name__)

CHECK_INTERVAL = 2.0  # seconds between two looks at the logged-in accounts' state

Close = Callable[[], Awaitable[None]]


class AccountGuard:
    """Holds the logged-in sessions of this process by login; closes those whose account gets disabled."""

    def __init__(self, accounts: Accounts, *, interval: float = CHECK_INTERVAL) -> None:
        self._accounts = accounts
        self._interval = interval
        self._sessions: dict[str, set[Close]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()

    def register(self, login: str, close: Close) -> Callable[[], None]:
        """Watch ``login`` for this session; ``close`` ends it (BYE). Returns the call that stops watching."""
        self._sessions[login].add(close)

        def forget() -> None:
            sessions = self._sessions.get(login)
            if sessions is not None:
                sessions.discard(close)
                if not sessions:
                    del self._sessions[login]

        return forget

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def check(self) -> None:
        """One look: BYE to every session whose account is disabled."""
        if not self._sessions:
            return
        disabled = await asyncio.to_thread(self._accounts.disabled, list(self._sessions))
        for login in disabled:
            sessions = self._sessions.pop(login, set())
            if sessions:
                log.info("account %s disabled: closing its %d IMAP session(s)", login, len(sessions))
            for close in sessions:
                task = asyncio.create_task(close())
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.check()
            except AccountsUnavailable as exc:  # a busy or unreachable database: look again next time
                log.warning("checking the logged-in accounts failed: %s", exc)
