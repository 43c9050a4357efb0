"""``mssante-operator demo send``: send one message into a running demo kit, as a peer operator would or as
one of our users does, so that a newcomer needs no script of their own.

- ``--as-peer NAME`` (a peer of demo.json: ``labo``…): to our MTA listener, STARTTLS presenting the peer's
  certificate (mutual TLS), the message DKIM-signed with the peer's key (selector of demo.json), from the
  peer's sender address unless ``--from`` says otherwise. What a real peer operator's MTA does.
- ``--as ADDRESS`` (a mailbox of demo.json): to our implicit-TLS submission listener, AUTH PLAIN with the
  kit's password for that mailbox. What a doctor's mail client does.

Either way the server's chain is checked against the kit's CA, and the reply of each recipient is
printed; :class:`SendRefused` carries the refusal of the whole message.
"""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any

from .demo_kit import read_manifest
from .trust_space.dkim_signing import DkimSigner


class SendRefused(Exception):
    """The operator refused the message (or every recipient); the text is its reply."""


@dataclass(frozen=True)
class Sent:
    sender: str
    accepted: tuple[str, ...]
    refused: dict[str, str]  # recipient -> the operator's reply
    reply: str  # the final reply to DATA (250 with the queue id)


def _context(home: Path, manifest: dict[str, Any], party: dict[str, Any] | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(home / manifest["trust_ca"]))
    context.check_hostname = False  # the kit's certificates name the operator's host; we dial 127.0.0.1
    if party is not None:
        context.load_cert_chain(home / party["cert"], home / party["key"])
    return context


def _message(sender: str, recipients: tuple[str, ...], subject: str, body: str, domain: str,
             attachments: tuple[Path, ...]) -> EmailMessage:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = sender, ", ".join(recipients), subject
    message["Date"], message["Message-ID"] = formatdate(localtime=True), make_msgid(domain=domain)
    message.set_content(body)
    for path in attachments:
        kind = "application/pdf" if path.suffix.lower() == ".pdf" else "application/octet-stream"
        maintype, _, subtype = kind.partition("/")
        message.add_attachment(path.read_bytes(), maintype=maintype, subtype=subtype, filename=path.name)
    return message


def _transaction(client: smtplib.SMTP, sender: str, recipients: tuple[str, ...], data: bytes) -> Sent:
    code, text = client.mail(sender)
    if code != 250:
        raise SendRefused(f"MAIL FROM: {code} {text.decode(errors='replace')}")
    accepted, refused = [], {}
    for recipient in recipients:
        code, text = client.rcpt(recipient)
        if code in (250, 251):
            accepted.append(recipient)
        else:
            refused[recipient] = f"{code} {text.decode(errors='replace')}"
    if not accepted:
        client.rset()
        return Sent(sender, (), refused, "")
    code, text = client.data(data)
    if code != 250:
        raise SendRefused(f"DATA: {code} {text.decode(errors='replace')}")
    return Sent(sender, tuple(accepted), refused, f"{code} {text.decode(errors='replace')}")


def send_as_peer(home: Path, peer_name: str, recipients: tuple[str, ...], subject: str, body: str, *,
                 sender: str | None = None, attachments: tuple[Path, ...] = ()) -> Sent:
    """A peer operator's delivery to our MTA: mutual TLS with its certificate, DKIM-signed with its key."""
    manifest = read_manifest(home)
    peer = next((p for p in manifest["peers"] if p["name"] == peer_name or p["domain"] == peer_name), None)
    if peer is None:
        names = ", ".join(p["name"] for p in manifest["peers"])
        raise SendRefused(f"no peer {peer_name!r} in {home / 'demo.json'} (peers: {names})")
    sender = sender or peer["sender"]
    message = _message(sender, recipients, subject, body, peer["domain"], attachments)
    raw = message.as_bytes(policy=message.policy.clone(linesep="\r\n"))
    signer = DkimSigner(peer["domain"], peer["dkim_selector"], (home / peer["dkim_key"]).read_bytes())
    data = signer.sign(raw) + raw
    mta = manifest["listeners"]["mta"]
    with smtplib.SMTP(mta["host"], mta["port"], local_hostname=f"smtp.{peer['domain']}", timeout=60) as client:
        client.starttls(context=_context(home, manifest, peer))
        client.ehlo(f"smtp.{peer['domain']}")
        return _transaction(client, sender, recipients, data)


def send_as_user(home: Path, address: str, recipients: tuple[str, ...], subject: str, body: str, *,
                 attachments: tuple[Path, ...] = ()) -> Sent:
    """One of our users' submission: implicit TLS, AUTH with the kit's password for ``address``."""
    manifest = read_manifest(home)
    mailbox = next((m for m in manifest["mailboxes"] if m["address"].lower() == address.lower()), None)
    if mailbox is None or not mailbox.get("password"):
        raise SendRefused(f"no mailbox {address!r} with a password in {home / 'demo.json'}")
    message = _message(mailbox["address"], recipients, subject, body, manifest["operator"]["domain"], attachments)
    data = message.as_bytes(policy=message.policy.clone(linesep="\r\n"))
    submissions = manifest["listeners"]["submissions"]
    with smtplib.SMTP_SSL(submissions["host"], submissions["port"], context=_context(home, manifest),
                          timeout=60) as client:
        client.login(mailbox["address"], mailbox["password"])
        return _transaction(client, mailbox["address"], recipients, data)
