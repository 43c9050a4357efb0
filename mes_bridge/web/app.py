"""The web space's application: middlewares, routes and templates; served over HTTPS on a bound socket.

Middlewares, outermost first: security headers (on every response, errors included), the encrypted
cookie session, French error pages, then the guard (expiry, CSRF, login). The body of a request is
capped at the upload size (plus room for the other fields): larger uploads are refused with 413.
"""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web
from aiohttp_session import session_middleware

from mssante_base.annuaire import Annuaire
from mssante_base.https import start_https
from mssante_base.trust.tls import server_context

from ..settings import BridgeSettings
from ..store import BridgeStore
from . import (
    auth_views,
    children_views,
    compose_views,
    document_views,
    export_views,
    history_views,
    message_views,
)
from .context import WEB, Sender, Web, WebOptions
from .pages import FILTERS, error_pages
from .ratelimit import LoginLimits
from .security import guard, security_headers, session_storage

HERE = Path(__file__).parent
FORM_ROOM = 256 * 1024  # the text fields and multipart framing beside the uploaded files
MAX_REPLY_FILES = 4  # attachments of one reply, each within max_upload_size

FAVICON = HERE / "static" / "favicon.svg"

ID = r"{id:\d{1,18}}"
INDEX = r"{index:\d{1,4}}"
CHILD = r"{child:[0-9A-Za-z]{15}}"  # an INS (a Corsican one holds 2A or 2B)


async def _favicon(request: web.Request) -> web.FileResponse:
    """Browsers ask /favicon.ico for what names no icon (a PDF opened inline): the site's icon, not a 404."""
    return web.FileResponse(FAVICON)


def _routes(app: web.Application) -> None:
    add = app.router.add_route
    for method, path, handler in [
        ("GET", "/connexion", auth_views.login_form), ("POST", "/connexion", auth_views.login),
        ("GET", "/connexion/code", auth_views.code_form), ("POST", "/connexion/code", auth_views.code),
        ("POST", "/deconnexion", auth_views.logout),
        ("GET", "/activation", auth_views.activation_form), ("POST", "/activation", auth_views.activation),
        ("GET", "/opposition", auth_views.opposition_form), ("POST", "/opposition", auth_views.opposition),
        ("GET", "/supprimer-mon-espace", auth_views.deletion_form),
        ("POST", "/supprimer-mon-espace", auth_views.deletion),
        ("GET", "/enfants", children_views.children),
        ("POST", f"/enfants/{CHILD}/activer", children_views.activate),
        ("POST", f"/enfants/{CHILD}/opposer", children_views.oppose),
        ("POST", f"/enfants/{CHILD}/ouvrir", children_views.open_space),
        ("POST", "/mon-espace", children_views.own_space),
        ("GET", "/", message_views.inbox),
        ("GET", "/conversations", message_views.conversations),
        ("GET", "/conversations/{mailbox}", message_views.thread),
        ("GET", f"/messages/{ID}", message_views.show_message),
        ("GET", f"/messages/{ID}/pieces/{INDEX}", message_views.attachment_content),
        ("POST", f"/messages/{ID}/pieces/{INDEX}/enregistrer", message_views.file_attachment),
        ("GET", f"/messages/{ID}/repondre", compose_views.reply_form),
        ("POST", f"/messages/{ID}/repondre", compose_views.reply),
        ("GET", "/nouveau", compose_views.new_form), ("POST", "/nouveau", compose_views.new),
        ("GET", "/documents", document_views.documents),
        ("GET", "/documents/ajouter", document_views.upload_form),
        ("POST", "/documents/ajouter", document_views.upload),
        ("GET", f"/documents/{ID}", document_views.show_document),
        ("GET", f"/documents/{ID}/contenu", document_views.document_content),
        ("POST", f"/documents/{ID}/masquer", document_views.toggle_mask),
        ("GET", "/historique", history_views.history),
        ("GET", "/mes-donnees", export_views.page), ("POST", "/mes-donnees/telecharger", export_views.download),
        ("GET", "/favicon.ico", _favicon),
    ]:
        add(method, path, handler)
    app.router.add_static("/static/", HERE / "static", append_version=False)


def make_web_app(store: BridgeStore, settings: BridgeSettings, *, annuaire: Annuaire | None = None,
                 session_key: bytes, sender: Sender | None = None, options: WebOptions | None = None,
                 ) -> web.Application:
    """The patient web space (no socket yet); ``sender`` defaults to the operator submission."""
    if sender is None:
        from ..outgoing import send_patient_message

        sender = send_patient_message
    options = options or WebOptions()
    app = web.Application(
        middlewares=[security_headers, session_middleware(session_storage(session_key)), error_pages, guard],
        client_max_size=settings.max_upload_size * MAX_REPLY_FILES + FORM_ROOM,
    )
    app[WEB] = Web(store=store, settings=settings, sender=sender, options=options, annuaire=annuaire,
                   limits=LoginLimits(options.login_per_ins, options.login_per_ip))
    aiohttp_jinja2.setup(app, loader=jinja2.FileSystemLoader(HERE / "templates"), filters=FILTERS,
                         autoescape=jinja2.select_autoescape(default=True))
    _routes(app)
    return app


def web_tls(settings: BridgeSettings) -> ssl.SSLContext:
    """HTTPS for browsers: our chain, TLS 1.2 or later, no client certificate asked."""
    return server_context(settings.path(settings.cert), settings.path(settings.key),
                          settings.path(settings.ca_bundle), client_cert=False)


async def start_web(app: web.Application, sock: socket.socket, tls: ssl.SSLContext) -> web.AppRunner:
    """Serve ``app`` over HTTPS on an already bound socket (no access log: paths hold ids)."""
    return await start_https(app, sock, tls)
