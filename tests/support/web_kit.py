"""Test fixtures of the patient web space: the app on a real loopback HTTPS socket, and a small browser.

``running_web(tmp_path_factory)`` writes a bridge HOME (bridge_kit), opens its store, seeds the patients,
and serves ``make_web_app`` in a thread with its own event loop; the sender of patient messages is a
recording stand-in (it keeps the call and records the message as sent, as the real one does). The
``Browser`` speaks HTTPS with the standard library, verifies the test CA, keeps the cookies the server
sets, and fills the CSRF field from the last page it read, as a browser submitting a form would.
"""

from __future__ import annotations

import asyncio
import html
import http.client
import json
import os
import re
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import SMTP
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from mes_bridge.filing.filetypes import detect_type
from mes_bridge.filing.mime import read_message
from mes_bridge.outgoing import SendOutcome, build_patient_message
from mes_bridge.service import open_store, seed_patients
from mes_bridge.settings import BridgeSettings, load_bridge_settings
from mes_bridge.store import BridgeStore, MessageMeta, NewAttachment, NewDocument
from mes_bridge.web import WebOptions, make_web_app, start_web, web_tls
from mssante_base.annuaire.file_backend import FileAnnuaire
from mssante_base.listening import bind_listener
from mssante_base.patients.ins import Ins

from .bridge_kit import INS, PASSWORD, make_bridge_home

DOCTOR = "dr.martin@hopital.operator.test"
LAB = "resultats@labo.operator.test"
PHARMACY = "officine@pharmacie.operator.test"
PHARMACY_FINESS = "750012345"
PDF = b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog >>\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n"
PNG = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d4944415478da63f8cf"
                    "c0f01f0005000201d1b5cc6f0000000049454e44ae426082")
HTML = b"<!doctype html><html><body><script>alert(document.cookie)</script></body></html>"
SVG = (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script>'
       b'<circle r="4"/></svg>')


class Clock:
    """The web space's clock: real time plus an offset tests move forward (idle timeouts)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@dataclass
class RecordingSender:
    """Stands in for send_patient_message: keeps each call, refuses the addresses in ``refuse``."""

    calls: list[dict[str, Any]] = field(default_factory=list)
    refuse: dict[str, str] = field(default_factory=dict)
    fail: Exception | None = None  # raised instead of sending (BridgeSendError: operator unreachable …)

    async def __call__(self, settings: BridgeSettings, *, ins: Ins, to: list[str], subject: str, body: str,
                       attachments: list[tuple[str, bytes, str]], in_reply_to: str | None, store: BridgeStore,
                       actor: str) -> SendOutcome:
        self.calls.append({"ins": ins, "to": list(to), "subject": subject, "body": body,
                           "attachments": list(attachments), "in_reply_to": in_reply_to, "actor": actor})
        if self.fail is not None:
            raise self.fail
        accepted = tuple(address for address in to if address not in self.refuse)
        refused = {address: self.refuse[address] for address in to if address in self.refuse}
        patient = await asyncio.to_thread(store.patient, ins)
        message = build_patient_message(patient, to=to, subject=subject, body=body, attachments=attachments,
                                        in_reply_to=in_reply_to)
        if accepted:
            meta = MessageMeta(message_id=str(message["Message-ID"]), sender=ins.address, recipients=accepted,
                               subject=subject)
            await asyncio.to_thread(store.record_sent, message.as_bytes(policy=SMTP), ins, meta, actor=actor)
        return SendOutcome(message_id=str(message["Message-ID"]), accepted=accepted, refused=refused)


@dataclass
class WebSpace:
    port: int
    store: BridgeStore
    settings: BridgeSettings
    sender: RecordingSender
    clock: Clock
    ca: Path
    loop: asyncio.AbstractEventLoop

    def browser(self) -> Browser:
        return Browser(self.port, self.ca)

    def logged_in(self, who: str = "active") -> Browser:
        browser = self.browser()
        browser.login(INS[who], PASSWORD, self.store)
        return browser


def _annuaire_file(home: Path) -> Path:
    entries = [
        {"address": DOCTOR, "kind": "PER", "display_name": "Dr Martin"},
        {"address": PHARMACY, "kind": "ORG", "display_name": "Pharmacie du Marché", "structure_id": PHARMACY_FINESS,
         "pharmacy": True},
        {"address": "accueil@clinique.operator.test", "kind": "ORG", "display_name": "Clinique",
         "structure_id": PHARMACY_FINESS},
    ]
    path = home / "web-annuaire.json"
    path.write_text(json.dumps({"entries": entries}), encoding="utf-8")
    return path


@contextmanager
def running_web(tmp_path_factory: Any, **options: Any) -> Iterator[WebSpace]:
    """A fresh bridge HOME and its web space on a loopback HTTPS port, until the block ends."""
    kit = make_bridge_home(tmp_path_factory.mktemp("web") / "home")
    home = kit["home"]
    settings = load_bridge_settings(home)
    store = open_store(settings)
    seed_patients(settings, store)
    clock = Clock()
    sender = RecordingSender()
    app = make_web_app(store, settings, annuaire=FileAnnuaire(_annuaire_file(home)), session_key=os.urandom(32),
                       sender=sender, options=WebOptions(clock=clock, **options))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="web", daemon=True)
    thread.start()
    sock = bind_listener("127.0.0.1", 0)
    port = int(sock.getsockname()[1])
    runner = asyncio.run_coroutine_threadsafe(start_web(app, sock, web_tls(settings)), loop).result(30)
    try:
        yield WebSpace(port, store, settings, sender, clock, home / "certs" / "trust-ca.pem", loop)
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()
        store.close()


LOOSE_LIMITS = {"login_per_ins": "100/15 minutes", "login_per_ip": "1000/15 minutes"}  # tests log in often


def module_space(**options: Any) -> Any:
    """A module-scoped ``space`` fixture: one web space for the module's tests (loose login limits)."""

    @pytest.fixture(scope="module")
    def space(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebSpace]:
        with running_web(tmp_path_factory, **{**LOOSE_LIMITS, **options}) as running:
            yield running

    return space


# -- messages and documents put in the store as the intake would --------------------------------------------


def mail(*, sender: str = DOCTOR, name: str = "Dr Martin", subject: str = "Compte rendu", body: str = "Bonjour.",
         attachments: list[tuple[str, bytes, str]] = (), fin: bool = False, dnt: bool = False,
         to: str = "patient@patient.mssante.fr") -> bytes:
    message = EmailMessage()
    message["From"] = f"{name} <{sender}>"
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = "Mon, 01 Jan 2024 10:00:00 +0100"
    message["Message-ID"] = f"<{uuid.uuid4().hex}@operator.test>"
    if fin:
        message["X-MSS-MES"] = "FIN"
    if dnt:
        message["Disposition-Notification-To"] = sender
    message.set_content(body)
    for filename, data, mime_type in attachments:
        maintype, _, subtype = mime_type.partition("/")
        message.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return message.as_bytes(policy=SMTP)


def deliver(store: BridgeStore, who: str, raw: bytes, *, documents: list[NewDocument] = ()) -> int:
    """Store ``raw`` for patient ``who`` (a name of INS, or an INS) with its attachments (and documents filed
    from it); its row id."""
    view = read_message(raw)
    ins = Ins(INS.get(who, who))
    meta = MessageMeta(message_id=view.message_id, sender=view.from_address, recipients=(ins.address,),
                       subject=view.subject, from_address=view.from_address, from_name=view.from_name,
                       sent_at=view.date, mdn_to=view.mdn_to, ends_exchange=view.ends_exchange,
                       attachments=len(view.attachments))
    attachments = [NewAttachment(part.index, part.filename, detect_type(part.data).mime_type, part.size)
                   for part in view.attachments]
    store.deliver(raw, [ins], meta, actor="CN=operator", attachments=attachments,
                  documents={ins.value: list(documents)})
    return max(message.id for message in store.messages_page(ins.value, direction="in", limit=1))


def pdf_document(title: str = "Bilan sanguin", **fields: Any) -> NewDocument:
    from mes_bridge.filing.categories import Category

    return NewDocument(data=PDF + title.encode(), mime_type="application/pdf", title=title,
                       category=fields.pop("category", Category.BIOLOGIE), author_address=LAB,
                       author_name="Laboratoire Central", **fields)


# -- a browser ------------------------------------------------------------------------------------------------

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@dataclass
class Page:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    @property
    def html(self) -> str:
        return self.body.decode("utf-8", "replace")

    @property
    def text(self) -> str:
        """The page with character references decoded (what the patient reads, markup aside)."""
        return html.unescape(self.html)

    @property
    def location(self) -> str | None:
        return self.headers.get("Location")

    def cookies(self) -> list[str]:
        return self.headers.get_all("Set-Cookie") or []


class Browser:
    """HTTPS with cookies and the CSRF field of the last HTML page (no redirect followed on POST)."""

    def __init__(self, port: int, ca: Path) -> None:
        self.port = port
        self.context = ssl.create_default_context(cafile=str(ca))
        self.context.check_hostname = False  # the test certificate names localhost; we dial 127.0.0.1
        self.cookies: dict[str, str] = {}
        self.csrf: str | None = None

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> Page:
        connection = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.context, timeout=30)
        try:
            sent = dict(headers or {})
            if self.cookies:
                sent["Cookie"] = "; ".join(f"{name}={value}" for name, value in self.cookies.items())
            connection.request(method, path, body=body, headers=sent)
            response = connection.getresponse()
            page = Page(response.status, response.headers, response.read())
        finally:
            connection.close()
        for header in page.cookies():
            for name, morsel in SimpleCookie(header).items():
                if morsel.value and morsel["max-age"] != "0":
                    self.cookies[name] = morsel.value
                else:
                    self.cookies.pop(name, None)
        found = _CSRF.search(page.html) if page.headers.get_content_type() == "text/html" else None
        if found:
            self.csrf = found.group(1)
        return page

    def get(self, path: str, *, follow: bool = True) -> Page:
        page = self.request("GET", path)
        while follow and page.status in (301, 302, 303) and page.location:
            page = self.request("GET", page.location)
        return page

    def post(self, path: str, fields: dict[str, str] | None = None, *, csrf: str | None = "auto",
             files: list[tuple[str, str, bytes, str]] = ()) -> Page:
        """A form POST (multipart when ``files``: (field, filename, data, type)); the CSRF token filled in."""
        data = dict(fields or {})
        if csrf == "auto":
            csrf = self.csrf
        if csrf is not None:
            data["csrf"] = csrf
        if not files:
            return self.request("POST", path, urlencode(data).encode(),
                                {"Content-Type": "application/x-www-form-urlencoded"})
        boundary = uuid.uuid4().hex
        parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
                 for name, value in data.items()]
        for name, filename, content, mime_type in files:
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                         f"Content-Type: {mime_type}\r\n\r\n".encode() + content + b"\r\n")
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        return self.request("POST", path, body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})

    def login(self, ins: str, password: str, store: BridgeStore) -> Page:
        """Password, then the one-time code read from the notification the store queued."""
        self.get("/connexion")
        page = self.post("/connexion", {"ins": ins, "mot_de_passe": password})
        assert page.status == 303 and page.location == "/connexion/code", (page.status, page.text[:500])
        self.get("/connexion/code")
        page = self.post("/connexion/code", {"code": last_login_code(store, ins)})
        assert page.status == 303 and page.location == "/", (page.status, page.text[:500])
        return self.get("/")


def last_login_code(store: BridgeStore, ins: str) -> str:
    notices = [notice for notice in store.notifications(ins) if notice.kind == "login-code"]
    found = re.search(r"\b(\d{6})\b", notices[-1].body)
    assert found is not None
    return found.group(1)
