"""« Mes enfants »: the children a parent represents today, the state of each child's space, its
activation or opposition with the child's provisional code, and switching the session to a child's
space and back.

Whatever is wrong with a code (wrong, expired, a child the parent does not represent), the refusal is
the activation page's, and the attempts are counted with the activation page's. Opening a child's
space needs a representation that holds today and an active space; the guard checks both again on
every request (:func:`mes_bridge.web.security.may_act_for`).
"""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp_session import get_session

from ..lifecycle import ALLOWED, Change
from ..sentences import STATE_LABELS
from ..store import ActivationRefused, Child
from .auth_views import CODE_REFUSAL, CODE_TRIES, form_field, normal_ins, too_many
from .context import WEB
from .pages import render, viewer_of
from .security import ACTING_FOR, flash, may_act_for

log = logging.getLogger(__name__)


async def _children(request: web.Request) -> list[Child]:
    context = request.app[WEB]
    return await context.call(context.store.children, viewer_of(request))


async def _page(request: web.Request, *, error: str | None = None, status: int = 200) -> web.Response:
    return await render(request, "children.html", await _values(request, error), status=status, nav="children")


async def _values(request: web.Request, error: str | None = None) -> dict[str, object]:
    return {"children": await _children(request), "labels": STATE_LABELS, "error": error,
            "activable": ALLOWED[Change.ACTIVATE], "opposable": ALLOWED[Change.OPPOSE]}


async def children(request: web.Request) -> web.Response:
    return await _page(request)


async def _with_code(request: web.Request, change: Change) -> web.StreamResponse:
    """Activate or oppose a represented child's space with the child's provisional code."""
    context, parent = request.app[WEB], viewer_of(request)
    child = normal_ins(request.match_info["child"])
    refused = await too_many(request, context, CODE_TRIES, child or request.match_info["child"], "children.html",
                             await _values(request))
    if refused is not None:
        return refused
    code = form_field(await request.post(), "code")
    store = context.store
    try:
        if child is None or not await context.call(store.represents, parent, child):
            raise ActivationRefused("not a represented child")
        if change is Change.ACTIVATE:
            record = await context.call(store.activate_child, child, code, representative=parent)
        else:
            record = await context.call(store.oppose_with_code, child, code, actor=f"representative:{parent}")
    except ActivationRefused:
        return await _page(request, error=CODE_REFUSAL, status=400)
    name = record.display_name or record.ins
    log.info("web child space change=%s", change.value)
    flash(await get_session(request), f"L'espace santé de {name} est activé : vous pouvez l'ouvrir."
          if change is Change.ACTIVATE else f"Votre opposition à la création de l'espace de {name} est enregistrée.",
          "success")
    raise web.HTTPSeeOther("/enfants")


async def activate(request: web.Request) -> web.StreamResponse:
    return await _with_code(request, Change.ACTIVATE)


async def oppose(request: web.Request) -> web.StreamResponse:
    return await _with_code(request, Change.OPPOSE)


async def open_space(request: web.Request) -> web.StreamResponse:
    """Read a represented child's active space from now on (404 for any other INS)."""
    context, parent = request.app[WEB], viewer_of(request)
    child = normal_ins(request.match_info["child"])
    if child is None or not await context.call(may_act_for, context.store, parent, child):
        raise web.HTTPNotFound()
    session = await get_session(request)
    session[ACTING_FOR] = child
    raise web.HTTPSeeOther("/")


async def own_space(request: web.Request) -> web.StreamResponse:
    """Back to one's own space."""
    session = await get_session(request)
    session.pop(ACTING_FOR, None)
    raise web.HTTPSeeOther("/")
