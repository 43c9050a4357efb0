"""An aiohttp application served over HTTPS on a socket already bound (by a supervisor, or by the service)."""

from __future__ import annotations

import socket
import ssl

from aiohttp import web


async def start_https(app: web.Application, sock: socket.socket, tls: ssl.SSLContext) -> web.AppRunner:
    """Serve ``app`` over HTTPS on ``sock``; clean up with ``await runner.cleanup()``.

    No access log: request paths and queries hold identifiers and client text; the handlers log what matters.
    """
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.SockSite(runner, sock, ssl_context=tls).start()
    return runner
