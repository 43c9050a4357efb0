"""The patient registry the operator asks before accepting mail for ``<INS>@patient.mssante.fr``.

HTTPS with a required client certificate (the TLS layer checks the chain); every request is then
checked by the :class:`~mes_bridge.trust.OperatorGate` (trusted DN, not revoked) before any answer,
so a stranger learns nothing, not even whether an INS is known. Answers are JSON:

- ``GET /v1/health`` -> 200 ``{"status": "ok"}``
- ``GET /v1/patients/{ins}`` -> 200 ``{"ins", "state"}`` (a deleted space answers ``closed``);
  unknown -> 404 ``{"ins", "state": "unknown"}``;
  not an INS -> 400 ``{"error"}``; an untrusted or revoked certificate -> 403 ``{"error"}``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable

from aiohttp import web

from mssante_base.https import start_https
from mssante_base.patients.ins import InvalidIns, validate_ins
from mssante_base.patients.states import PatientState
from mssante_base.trust.tls import peer_tls

from .store import BridgeStore
from .trust import OperatorGate

log = logging.getLogger(__name__)

STORE_KEY = web.AppKey("store", BridgeStore)
GATE_KEY = web.AppKey("gate", OperatorGate)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _trusted_operators_only(request: web.Request, handler: Handler) -> web.StreamResponse:
    ssl_object = request.transport.get_extra_info("ssl_object") if request.transport is not None else None
    certificate = peer_tls(ssl_object).certificate if ssl_object is not None else None
    refusal = request.app[GATE_KEY].refusal(certificate)
    if refusal is not None:
        peer = request.transport.get_extra_info("peername") if request.transport is not None else None
        log.warning("registry refused peer=%s reason=%r", peer[0] if peer else "?", refusal)
        return web.json_response({"error": refusal}, status=403)
    return await handler(request)


async def _health(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _patient(request: web.Request) -> web.Response:
    try:
        ins = validate_ins(request.match_info["ins"])
    except InvalidIns as exc:
        return web.json_response({"error": str(exc)}, status=400)
    try:
        record = await asyncio.to_thread(request.app[STORE_KEY].patient, ins)
    except Exception:
        log.exception("registry lookup failed")
        return web.json_response({"error": "the registry cannot answer now; try again later"}, status=503)
    if record is None:
        return web.json_response({"ins": ins.value, "state": PatientState.UNKNOWN.value}, status=404)
    state = PatientState.CLOSED if record.state is PatientState.DELETED else record.state  # the archive is private
    return web.json_response({"ins": ins.value, "state": state.value})


def make_app(store: BridgeStore, gate: OperatorGate) -> web.Application:
    """The registry's aiohttp application (no socket yet)."""
    app = web.Application(middlewares=[_trusted_operators_only])
    app[STORE_KEY] = store
    app[GATE_KEY] = gate
    app.router.add_get("/v1/health", _health)
    app.router.add_get("/v1/patients/{ins}", _patient)
    return app


async def start_registry(app: web.Application, sock: socket.socket, tls: ssl.SSLContext) -> web.AppRunner:
    """Serve ``app`` over HTTPS on an already bound socket (no access log: request paths hold INS)."""
    return await start_https(app, sock, tls)
