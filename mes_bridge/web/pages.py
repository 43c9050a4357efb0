"""Rendering: the common page context (the space shown and who reads it, navigation, CSRF token,
flashes), the template filters (French dates and sizes, from mes_bridge.french), pagination, and the
error pages (404 for anything that is not the patient's, never 403)."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp_jinja2
from aiohttp import web
from aiohttp_session import get_session

from ..french import PARIS as PARIS  # re-exported: the views read dates in Paris time
from ..french import date_fr, size_fr
from ..store import Audience
from .context import WEB
from .security import ACTOR_KEY, AUDIENCE_KEY, INS_KEY, VIEWER_KEY, Handler, csrf_token

log = logging.getLogger(__name__)
T = TypeVar("T")

FILTERS = {"date_fr": date_fr, "day_fr": lambda value: date_fr(value, time=False), "size_fr": size_fr}


@dataclass(frozen=True)
class Pages:
    """One page of a list: which page, how many, and the offset to ask the store for."""

    page: int
    pages: int
    size: int

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.size


def page_of(request: web.Request, total: int) -> Pages:
    """The ``?page=`` asked for, kept within the pages that exist."""
    size = request.app[WEB].options.page_size
    pages = max(1, math.ceil(total / size))
    try:
        page = int(request.query.get("page", "1"))
    except ValueError:
        page = 1
    return Pages(page=min(max(page, 1), pages), pages=pages, size=size)


def ins_of(request: web.Request) -> str:
    """The INS of the space being read: from the session, through the guard, never from the request."""
    return request[INS_KEY]


def viewer_of(request: web.Request) -> str:
    """The INS of the logged-in person (the parent, when they read a child's space)."""
    return request[VIEWER_KEY]


def acting_for_child(request: web.Request) -> bool:
    """Whether the logged-in person reads a child's space rather than their own."""
    return request[INS_KEY] != request[VIEWER_KEY]


def actor_of(request: web.Request) -> str:
    """Who acts in the space, as the audit trail names them (the patient, or their representative)."""
    return request[ACTOR_KEY]


def audience_of(request: web.Request) -> Audience:
    """What the reader may see of the space (a representative sees less: INVISIBLE_REP_LEGAUX)."""
    return request[AUDIENCE_KEY]


async def owned(request: web.Request, lookup: Callable[[str, int], T | None]) -> T:
    """The record of the path's ``id`` looked up with the session's INS; 404 when the store has none for
    this patient (another patient's id and an id that does not exist look the same)."""
    found = await request.app[WEB].call(lookup, ins_of(request), int(request.match_info["id"]))
    if found is None:
        raise web.HTTPNotFound()
    return found


async def render(request: web.Request, template: str, context: dict[str, Any] | None = None, *,
                 status: int = 200, nav: str | None = None) -> web.Response:
    """A page with the common context; the flashes waiting in the session are shown once."""
    session = await get_session(request)
    web_context = request.app[WEB]
    ins = request.get(INS_KEY)
    common: dict[str, Any] = {"csrf": csrf_token(session), "nav": nav, "patient": None, "viewer": None,
                              "acting": False, "unread": 0, "flashes": session.pop("flash", [])}
    if ins is not None:
        store = web_context.store
        common["patient"] = await web_context.call(store.patient, ins)
        common["unread"] = await web_context.call(store.count_messages, ins, "in", unread_only=True)
        common["acting"] = acting_for_child(request)
        common["viewer"] = (await web_context.call(store.patient, viewer_of(request)) if common["acting"]
                            else common["patient"])
    return aiohttp_jinja2.render_template(template, request, {**common, **(context or {})}, status=status)


ERRORS = {
    400: ("Demande incorrecte", "La demande n'a pas pu être comprise."),
    403: ("Action refusée", "Le formulaire a expiré ou ne vient pas de cette page. Revenez en arrière, "
                            "rechargez la page et recommencez."),
    404: ("Page introuvable", "Cette page n'existe pas ou n'est pas dans votre espace."),
    405: ("Action impossible", "Cette action n'est pas possible ici."),
    413: ("Fichier trop volumineux", "Le fichier envoyé dépasse la taille autorisée."),
    500: ("Erreur du service", "Une erreur est survenue. Réessayez dans quelques instants."),
}


@web.middleware
async def error_pages(request: web.Request, handler: Handler) -> web.StreamResponse:
    """French error pages (inside the session middleware, so a refreshed session is still saved)."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.status not in ERRORS:
            raise
        status = exc.status
    except Exception:
        log.exception("web handler failed path=%s", request.path)  # the path holds ids only
        status = 500
    title, text = ERRORS[status]
    try:
        return await render(request, "error.html", {"title": title, "text": text}, status=status)
    except Exception:  # the store itself failing: a bare page still says it in French
        log.exception("web error page failed path=%s", request.path)
        return web.Response(text=f"{title}. {text}", status=status, content_type="text/plain")
