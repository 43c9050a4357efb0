"""What every handler of the web space reaches through ``request.app[WEB]``: one object, one key.

Kept apart from app.py so that views and middlewares import it without importing the routes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

from aiohttp import web

from mssante_base.annuaire import Annuaire

from ..settings import BridgeSettings
from ..store import BridgeStore
from .ratelimit import LoginLimits

P = ParamSpec("P")
T = TypeVar("T")

Sender = Callable[..., Awaitable[Any]]  # mes_bridge.outgoing.send_patient_message's signature


@dataclass(frozen=True)
class WebOptions:
    """Tunables of the web space; tests shorten the timeouts and loosen or tighten the limits."""

    max_session: float = 12 * 3600  # absolute lifetime of a session
    login_per_ins: str = "5/15 minutes"  # password and code attempts per INS
    login_per_ip: str = "30/15 minutes"  # attempts per client address (spraying many INS)
    code_ttl: int = 600  # one-time login code lifetime (seconds)
    code_tries: int = 5
    page_size: int = 20
    clock: Callable[[], float] = time.time


@dataclass
class Web:
    """The store, settings and collaborators of one running web space."""

    store: BridgeStore
    settings: BridgeSettings
    sender: Sender
    options: WebOptions
    limits: LoginLimits
    annuaire: Annuaire | None = None
    revoked: dict[str, float] = field(default_factory=dict)  # logged-out session ids -> when

    async def call(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a synchronous store call in a thread: the store never runs on the event loop."""
        return await asyncio.to_thread(function, *args, **kwargs)

    def revoke(self, sid: str) -> None:
        """Refuse a logged-out session's cookie from now on (until it would have expired anyway)."""
        now = self.options.clock()
        self.revoked[sid] = now
        horizon = now - self.options.max_session
        for old in [key for key, at in self.revoked.items() if at < horizon]:
            del self.revoked[old]


WEB = web.AppKey("mes_web", Web)
