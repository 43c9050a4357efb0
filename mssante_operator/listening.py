"""The operator's listeners: which ones config.toml configures, bound once by the supervisor and handed to
the workers through the environment. The fair accept loop itself is mssante_base.listening."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from typing import TYPE_CHECKING

from mssante_base.listening import bind_listener

if TYPE_CHECKING:
    from .config import ListenerSettings, Settings

_FDS_VARIABLE = "MSSANTE_LISTEN_FDS"
MTA_LISTENERS = ("mta", "mtas")
IMAP_LISTENERS = ("imap", "imaps")
SUBMISSION_LISTENERS = ("submission", "submissions")
METRICS_LISTENER = "metrics"  # [metrics] listen: plain HTTP, bound and shared like the mail listeners
HTTPS_LISTENERS = ("autoconfig",)


def configured_listeners(settings: Settings) -> dict[str, ListenerSettings]:
    """The listeners HOME/config.toml enables, by contract name."""
    names = MTA_LISTENERS + SUBMISSION_LISTENERS + IMAP_LISTENERS + HTTPS_LISTENERS
    return {name: getattr(settings.listeners, name) for name in names if getattr(settings.listeners, name)}


def bind_listeners(settings: Settings) -> dict[str, socket.socket]:
    """Bind every configured port (a supervisor does it once, before starting its workers)."""
    bound: dict[str, socket.socket] = {}
    try:
        for name, listener in configured_listeners(settings).items():
            bound[name] = bind_listener(listener.host, listener.port)
        if settings.metrics is not None:
            bound[METRICS_LISTENER] = bind_listener(settings.metrics.host, settings.metrics.port)
    except OSError:
        for sock in bound.values():
            sock.close()
        raise
    return bound


def export_listeners(sockets: Mapping[str, socket.socket]) -> tuple[dict[str, str], tuple[int, ...]]:
    """Environment and fd list that hand these listening sockets to a child process."""
    for sock in sockets.values():
        sock.set_inheritable(True)
    value = ",".join(f"{name}={sock.fileno()}" for name, sock in sockets.items())
    return {_FDS_VARIABLE: value}, tuple(sock.fileno() for sock in sockets.values())


def inherited_listeners(environ: Mapping[str, str] | None = None) -> dict[str, socket.socket]:
    """The listening sockets a supervisor handed to this worker, by listener name."""
    value = (environ if environ is not None else os.environ).get(_FDS_VARIABLE, "")
    sockets: dict[str, socket.socket] = {}
    for item in filter(None, value.split(",")):
        name, _, fd = item.partition("=")
        sock = socket.socket(fileno=int(fd))
        sock.setblocking(False)
        sockets[name] = sock
    return sockets


