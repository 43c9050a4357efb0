"""Patients' messages to professionals: through the operator's submission listener, as the patient.

The bridge connects with implicit TLS, presents its own certificate and authenticates with SASL
EXTERNAL: the operator recognises the bridge's certificate and lets it submit for patient addresses,
then applies the patients' rules itself (a professional must have written first and not ended the
exchange), refusing a recipient with a reply the patient is shown as is. So this module only builds
the message, speaks SMTP, and records what was sent (direction "out") with an audit row.
"""

from __future__ import annotations

import asyncio
import logging
import mimetypes
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import format_datetime, make_msgid

import aiosmtplib

from mssante_base.patients.ins import PATIENT_DOMAIN, Ins
from mssante_base.patients.states import PatientState

from .settings import BridgeSettings
from .store import BridgeStore, MessageMeta, PatientRecord
from .trust import client_tls

log = logging.getLogger(__name__)


class BridgeSendError(Exception):
    """The operator could not be reached (``code`` None) or refused the session, AUTH, MAIL or DATA.

    ``reply`` is the operator's full reply line (or why it could not be reached); 4xx codes and
    unreachable operators are temporary, 5xx permanent.
    """

    def __init__(self, code: int | None, reply: str) -> None:
        super().__init__(reply)
        self.code = code
        self.reply = reply

    @property
    def unreachable(self) -> bool:
        return self.code is None

    @property
    def temporary(self) -> bool:
        return self.code is None or self.code < 500


class PatientCannotSend(Exception):
    """The patient is unknown, or their space is not active: nothing is sent."""


@dataclass(frozen=True)
class SendOutcome:
    message_id: str
    accepted: tuple[str, ...]
    refused: dict[str, str] = field(default_factory=dict)  # address -> the operator's reply line


def build_patient_message(
    patient: PatientRecord,
    *,
    to: Sequence[str],
    subject: str,
    body: str,
    attachments: Sequence[tuple[str, bytes, str]] = (),
    in_reply_to: str | None = None,
    now: datetime | None = None,
) -> EmailMessage:
    """The MIME message From the patient (display name from the registry), with Date and Message-ID."""
    message = EmailMessage()
    message["From"] = Address(display_name=patient.display_name, addr_spec=Ins(patient.ins).address)
    message["To"] = ", ".join(to)
    message["Subject"] = subject
    message["Date"] = format_datetime(now or datetime.now(UTC))
    message["Message-ID"] = make_msgid(domain=PATIENT_DOMAIN)
    if in_reply_to:
        message["In-Reply-To"] = in_reply_to
        message["References"] = in_reply_to
    message.set_content(body)
    for filename, data, mime_type in attachments:
        maintype, _, subtype = (mime_type or mimetypes.guess_type(filename)[0] or "application/octet-stream"
                                ).partition("/")
        message.add_attachment(data, maintype=maintype, subtype=subtype or "octet-stream", filename=filename)
    return message


def _reply(error: aiosmtplib.SMTPResponseException) -> str:
    return f"{error.code} {' '.join(error.message.split())}"


async def submit(
    settings: BridgeSettings, sender: str, recipients: Sequence[str], raw: bytes
) -> tuple[tuple[str, ...], dict[str, str]]:
    """One SMTP session with the operator: AUTH EXTERNAL, MAIL, RCPT each, DATA when any was accepted."""
    where = settings.submission_address
    if where is None:
        raise BridgeSendError(None, "bridge.operator_submission is not configured: cannot reach the operator")
    host, port = where
    smtp = aiosmtplib.SMTP(hostname=host, port=port, use_tls=True, start_tls=False, tls_context=client_tls(settings),
                           timeout=60)
    try:
        await smtp.connect()
    except aiosmtplib.SMTPConnectResponseError as exc:
        raise BridgeSendError(exc.code, _reply(exc)) from exc
    except (aiosmtplib.SMTPConnectError, aiosmtplib.SMTPTimeoutError, OSError) as exc:
        raise BridgeSendError(None, f"cannot connect to the operator at {host}:{port}: {exc}") from exc
    accepted: list[str] = []
    refused: dict[str, str] = {}
    try:
        await smtp.ehlo()
        response = await smtp.execute_command(b"AUTH", b"EXTERNAL", b"=")
        if response.code != 235:
            raise BridgeSendError(response.code, f"{response.code} {response.message}")
        await smtp.mail(sender)
        for recipient in recipients:
            try:
                await smtp.rcpt(recipient)
                accepted.append(recipient)
            except aiosmtplib.SMTPRecipientRefused as exc:
                refused[recipient] = _reply(exc)
        if accepted:
            await smtp.data(raw)
    except aiosmtplib.SMTPResponseException as exc:
        raise BridgeSendError(exc.code, _reply(exc)) from exc
    except (aiosmtplib.SMTPException, OSError) as exc:  # disconnected, timed out
        raise BridgeSendError(421, f"421 4.4.2 the session with the operator broke off: {exc}") from exc
    finally:
        if smtp.is_connected:
            try:
                await smtp.quit()
            except (aiosmtplib.SMTPException, OSError):
                smtp.close()
    return tuple(accepted), refused


async def send_patient_message(
    settings: BridgeSettings,
    *,
    ins: Ins,
    to: Sequence[str],
    subject: str,
    body: str,
    attachments: Sequence[tuple[str, bytes, str]] = (),
    in_reply_to: str | None = None,
    store: BridgeStore | None = None,
    actor: str | None = None,
) -> SendOutcome:
    """Send a patient's message through the operator; per-recipient outcome, or BridgeSendError.

    ``attachments`` are (filename, data, MIME type) triples. The store of the running service can be
    passed; otherwise the settings' store is opened for this call. Raises PatientCannotSend when the
    patient is unknown or their space is not active.
    """
    own_store = store is None
    if store is None:
        from .service import open_store

        store = await asyncio.to_thread(open_store, settings)
    try:
        patient = await asyncio.to_thread(store.patient, ins)
        if patient is None:
            raise PatientCannotSend(f"no patient space is known for INS {ins.value}")
        if patient.state != PatientState.ACTIVE:
            raise PatientCannotSend(f"the space of INS {ins.value} is {patient.state.value}: it cannot send")
        message = build_patient_message(patient, to=to, subject=subject, body=body, attachments=attachments,
                                        in_reply_to=in_reply_to)
        raw = message.as_bytes(policy=SMTP_POLICY)
        message_id = str(message["Message-ID"])
        accepted, refused = await submit(settings, ins.address, list(to), raw)
        log.info("sent message_id=%s size=%d accepted=%d refused=%d", message_id, len(raw), len(accepted),
                 len(refused))
        if accepted:
            meta = MessageMeta(message_id=message_id, sender=ins.address, recipients=accepted, subject=subject)
            await asyncio.to_thread(store.record_sent, raw, ins, meta, actor=actor or f"patient:{ins.value}")
        return SendOutcome(message_id=message_id, accepted=accepted, refused=refused)
    finally:
        if own_store:
            store.close()
