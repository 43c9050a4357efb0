"""Integration-test harness: a real operator on loopback and SMTP clients acting as peer operators.

The operator runs in a thread with its own event loop, on the ports of a freshly made demo kit, so
tests talk to it over real sockets with real TLS handshakes, exactly as a peer would.
"""

from __future__ import annotations

import asyncio
import json
import re
import smtplib
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any

import tomli_w

from mssante_operator.app import Operator
from mssante_operator.config import load_settings
from mssante_operator.demo_kit import create_kit
from mssante_operator.store.facade import Store
from mssante_operator.trust_space.dkim import sign_message

OPERATOR_DOMAIN = "hopital-demo.mssante.fr"
DOCTOR = f"dr.martin@{OPERATOR_DOMAIN}"


def make_kit(home: Path, *, store_url: str | None = None, **overrides: dict[str, Any]) -> dict[str, Any]:
    """A demo kit in ``home``; ``store_url`` and section overrides are written into config.toml."""
    manifest = create_kit(home)
    if store_url is not None:
        overrides = {**overrides, "storage": {"url": store_url}}
    configure(home, **overrides)
    return manifest


def configure(home: Path, **overrides: dict[str, Any]) -> None:
    """Update sections of HOME/config.toml (each given key replaces the file's)."""
    if not overrides:
        return
    import tomllib

    config_path = home / "config.toml"
    config = tomllib.loads(config_path.read_text())
    for section, values in overrides.items():
        config.setdefault(section, {}).update(values)
    config_path.write_text(tomli_w.dumps(config))


@dataclass
class RunningOperator:
    home: Path
    manifest: dict[str, Any]
    operator: Operator
    loop: asyncio.AbstractEventLoop

    def call(self, coro: Any, timeout: float = 30) -> Any:
        """Run a coroutine on the operator's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def port(self, name: str = "mta") -> int:
        return int(self.manifest["listeners"][name]["port"])

    def mailbox(self, who: str) -> dict[str, Any]:
        """A demo mailbox's manifest entry (address, kind, password, cert, key) by address or local part."""
        address = who if "@" in who else f"{who}@{OPERATOR_DOMAIN}"
        return next(m for m in self.manifest["mailboxes"] if m["address"] == address)

    def tls_context(self, *, check_hostname: bool = False) -> ssl.SSLContext:
        """A client context trusting only the kit's CA (the server certificate names 127.0.0.1 and localhost)."""
        context = ssl.create_default_context(cafile=str(self.home / self.manifest["trust_ca"]))
        context.check_hostname = check_hostname
        return context


@contextmanager
def running_operator(home: Path, manifest: dict[str, Any]) -> Iterator[RunningOperator]:
    """Start the operator of ``home`` in a background thread; stop it cleanly afterwards."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="operator-loop", daemon=True)
    thread.start()

    async def build() -> Operator:
        operator = Operator(load_settings(home))
        await operator.start()
        return operator

    operator = asyncio.run_coroutine_threadsafe(build(), loop).result(60)
    try:
        yield RunningOperator(home, manifest, operator, loop)
    finally:
        asyncio.run_coroutine_threadsafe(operator.stop(), loop).result(60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@contextmanager
def kit_store(home: Path) -> Iterator[Store]:
    """The store of a kit's HOME, migrated, closed afterwards (CLI tests read and seed it beside the CLI)."""
    settings = load_settings(home)
    store = Store(settings.database_url, settings.path(settings.storage.blob_dir))
    store.migrate()
    try:
        yield store
    finally:
        store.close()


def peer(manifest: dict[str, Any], name: str) -> dict[str, Any]:
    return next(p for p in manifest["peers"] if p["name"] == name)


def client_tls(home: Path, manifest: dict[str, Any], cert: str | None, key: str | None) -> ssl.SSLContext:
    """A client context trusting the kit's CA and presenting ``cert`` (None: no certificate)."""
    context = ssl.create_default_context(cafile=str(home / manifest["trust_ca"]))
    context.check_hostname = False  # the kit's server name is not resolvable here; the chain is checked
    if cert is not None:
        context.load_cert_chain(home / cert, home / key if key else None)
    return context


def lab_report(sender: str, recipients: list[str], *, size: int = 2000, subject: str = "Résultats de biologie",
               message_id: str | None = None) -> bytes:
    """A laboratory report with a PDF attachment, CRLF line endings, about ``size`` bytes."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = ", ".join(recipients)
    msg["Subject"] = subject
    msg["Date"] = formatdate()
    msg["Message-ID"] = message_id or make_msgid(domain=sender.rpartition("@")[2])
    msg.set_content("Bonjour,\nVeuillez trouver ci-joint le compte rendu.\nCordialement\n")
    padding = max(0, size - 900) * 3 // 4
    msg.add_attachment(b"%PDF-1.4\n" + bytes(range(256)) * (padding // 256 + 1), maintype="application",
                       subtype="pdf", filename="compte-rendu.pdf")
    return msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))


def signed(home: Path, the_peer: dict[str, Any], raw: bytes, *, domain: str | None = None) -> bytes:
    """``raw`` with a DKIM-Signature of the peer's key (for ``domain``, by default the peer's)."""
    key = (home / the_peer["dkim_key"]).read_bytes()
    header = sign_message(raw, domain=domain or the_peer["domain"], selector=the_peer["dkim_selector"],
                          private_key_pem=key)
    return header + raw


def connect(running: RunningOperator, the_peer: dict[str, Any] | None, *, listener: str = "mta",
            starttls: bool = True) -> smtplib.SMTP:
    """An SMTP client connected (and, by default, TLS-secured) as ``the_peer`` (None: no certificate)."""
    return connect_process(running.home, running.manifest, the_peer, listener=listener, starttls=starttls)


def connect_process(home: Path, manifest: dict[str, Any], the_peer: dict[str, Any] | None, *,
                    listener: str = "mta", starttls: bool = True) -> smtplib.SMTP:
    """Like :func:`connect`, for an operator running anywhere (a child process) on the kit's ports."""
    cert, key = (the_peer["cert"], the_peer["key"]) if the_peer else (None, None)
    context = client_tls(home, manifest, cert, key)
    host, port = manifest["listeners"][listener]["host"], int(manifest["listeners"][listener]["port"])
    if listener == "mtas":
        client: smtplib.SMTP = smtplib.SMTP_SSL(host, port, context=context, timeout=30)
        client.ehlo("smtp.test")
        return client
    client = smtplib.SMTP(host, port, timeout=30)
    client.ehlo("smtp.test")
    if starttls:
        client.starttls(context=context)
        client.ehlo("smtp.test")
    return client


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def wait_for_port(host: str, port: int, timeout: float = 30.0) -> None:
    """Block until something accepts connections on host:port."""
    import socket
    import time

    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def wait_for_log(path: Path, text: str, *, count: int = 1, timeout: float = 30.0) -> None:
    """Block until ``text`` appears ``count`` times in the log file (each worker logs "operator DOMAIN ready"
    once listening)."""
    import time

    deadline = time.monotonic() + timeout
    while path.read_text(errors="replace").count(text) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{text!r} never appeared in {path}")
        time.sleep(0.05)


@contextmanager
def serve_process(home: Path, manifest: dict[str, Any]) -> Iterator[Any]:
    """`mssante-operator serve --home HOME` as a real child process, ready to take mail."""
    import os
    import subprocess
    import sys

    log = (home / "serve.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "mssante_operator.cli", "serve", "--home", str(home)],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        mta = manifest["listeners"]["mta"]
        wait_for_port(mta["host"], int(mta["port"]))
        # The operator's own line: mes_bridge also says "ready", and may say it before any worker listens.
        wait_for_log(home / "serve.log", f"operator {manifest['operator']['domain']} ready")
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(30)
        log.close()


def unquoted(value: str) -> str:
    """A quoted-string's content with its quoted-pairs undone (authres keeps them as written)."""
    return re.sub(r"\\(.)", r"\1", value)
