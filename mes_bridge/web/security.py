"""The web space's protections, as aiohttp middlewares: headers, sessions, CSRF, login required.

- Every response carries a strict Content-Security-Policy (no script at all, styles and images from
  ourselves only, no framing), nosniff, no referrer, no caching: pages show health data.
- The session lives in an encrypted cookie ``__Host-mes`` (Secure, HttpOnly, SameSite=Strict, path /,
  no Domain: the __Host- prefix makes browsers refuse it otherwise). It ends after ``web_session_idle``
  without a request, after ``max_session`` in all, at logout (its id is then refused by this process),
  and as soon as the patient's space is no longer active.
- Every POST must carry the session's CSRF token in the hidden field ``csrf``: 403 otherwise.
- Every page but the login, activation, opposition and static files needs a logged-in patient; the
  patient's INS is taken from the session only, never from the request.
- A legal representative may act in a child's space (``session["acting_for"]``): the guard then reads
  the child's space as the representative, and checks on every request that the representation still
  holds (it ends at the child's majority) and that the child's space is active; otherwise the parent is
  back in their own space.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp_session import Session, get_session
from aiohttp_session.cookie_storage import EncryptedCookieStorage

from mssante_base.patients.states import PatientState

from ..store import Audience, BridgeStore
from .context import WEB

log = logging.getLogger(__name__)

SESSION_COOKIE = "__Host-mes"
PUBLIC_PATHS = frozenset({"/connexion", "/connexion/code", "/activation", "/opposition"})
ACTING_FOR = "acting_for"  # session key: the INS of the child whose space the representative reads
STATIC_PREFIX = "/static/"
PAGE_CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; "
            "base-uri 'none'")
CONTENT_CSP = "sandbox; default-src 'none'; frame-ancestors 'none'"  # served attachments and documents
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "Strict-Transport-Security": "max-age=31536000",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}

INS_KEY = web.RequestKey("mes_ins", str)  # the INS of the space being read, set by the guard
VIEWER_KEY = web.RequestKey("mes_viewer", str)  # the INS of the logged-in person (a child's parent, say)
ACTOR_KEY = web.RequestKey("mes_actor", str)  # who acts, for the audit: "patient:<INS>" or "representative:<INS>"
AUDIENCE_KEY = web.RequestKey("mes_audience", Audience)  # what that reader may see of the space

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def session_storage(session_key: bytes) -> EncryptedCookieStorage:
    """The encrypted cookie storage; ``session_key`` is 32 random bytes (the key file's content)."""
    if len(session_key) != 32:
        raise ValueError(f"the web session key must be 32 bytes, not {len(session_key)}")
    return EncryptedCookieStorage(session_key, cookie_name=SESSION_COOKIE, secure=True, httponly=True,
                                  samesite="Strict", path="/")


def _secure(response: web.StreamResponse) -> None:
    response.headers.setdefault("Content-Security-Policy", PAGE_CSP)
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outermost: headers on everything, error pages and redirects included."""
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        _secure(exc)
        raise
    _secure(response)
    return response


def csrf_token(session: Session) -> str:
    """The session's CSRF token, created on first use (the login form's GET creates it)."""
    token = session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        session["csrf"] = token
    return token


async def _check_csrf(request: web.Request, session: Session) -> None:
    expected = session.get("csrf")
    form = await request.post()  # cached: the handler's own request.post() reads it again for free
    given = form.get("csrf")
    if not isinstance(expected, str) or not isinstance(given, str) or not hmac.compare_digest(
            expected.encode(), given.encode()):
        log.warning("csrf refused path=%s", request.path)
        raise web.HTTPForbidden(reason="CSRF")


def reset_session(session: Session) -> None:
    """Forget everything but keep a fresh CSRF token: a session is never saved empty, since an empty one
    is deleted by a Set-Cookie without Secure, which browsers ignore for a __Host- cookie."""
    session.invalidate()
    session["csrf"] = secrets.token_urlsafe(32)


def start_session(session: Session, ins: str, now: float) -> None:
    """A fresh session for a patient who just logged in (new id and token: no fixation)."""
    reset_session(session)
    session.update({"ins": ins, "sid": secrets.token_urlsafe(16), "born": now, "seen": now})


def flash(session: Session, text: str, kind: str = "info") -> None:
    """A sentence for the next page the patient sees (after a redirect)."""
    session["flash"] = [*session.get("flash", []), [kind, text]]


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Session expiry, CSRF on POST, and the login requirement (in that order)."""
    if request.path.startswith(STATIC_PREFIX):
        return await handler(request)
    context = request.app[WEB]
    session = await get_session(request)
    now = context.options.clock()
    ins = session.get("ins")
    if ins is not None:
        seen, born = session.get("seen", 0), session.get("born", 0)
        if (now - seen > context.settings.web_session_idle or now - born > context.options.max_session
                or session.get("sid") in context.revoked):
            reset_session(session)
            flash(session, "Votre session a expiré : reconnectez-vous.")
            ins = None
    if request.method == "POST":
        await _check_csrf(request, session)
    if ins is not None:
        patient = await context.call(context.store.patient, ins)
        if patient is None or patient.state != PatientState.ACTIVE:
            reset_session(session)
            ins = None
    if ins is None:
        if request.path not in PUBLIC_PATHS:
            raise web.HTTPSeeOther("/connexion")
        return await handler(request)
    session["seen"] = now
    request[VIEWER_KEY] = request[INS_KEY] = ins
    request[ACTOR_KEY] = f"patient:{ins}"
    request[AUDIENCE_KEY] = Audience.PATIENT
    child = session.get(ACTING_FOR)
    if child is not None:
        if not isinstance(child, str) or not await context.call(may_act_for, context.store, ins, child):
            session.pop(ACTING_FOR, None)
            flash(session, "Vous n'avez plus accès à l'espace de cet enfant : voici de nouveau votre espace.")
            raise web.HTTPSeeOther("/")
        request[INS_KEY] = child
        request[ACTOR_KEY] = f"representative:{ins}"
        request[AUDIENCE_KEY] = Audience.REPRESENTATIVE
    return await handler(request)


def may_act_for(store: BridgeStore, parent: str, child: str) -> bool:
    """Whether ``parent`` may read ``child``'s space now: they represent the child today (not of age) and
    the child's space is active."""
    record = store.patient(child)
    return record is not None and record.state == PatientState.ACTIVE and store.represents(parent, child)
