"""``mssante-operator demo patient``: the patient-messaging story, played against a running demo kit.

A doctor writes to a patient, the patient answers, the doctor ends the exchange (``X-MSS-MES: FIN``),
the patient's next reply is refused, the doctor writes again and the patient may answer again. Each step
prints what the operator answered; the exit status says whether the story went as the rules say.
It talks to the kit's real listeners (submission for the doctor; mes_bridge's own client, with the
bridge's certificate, for the patient) and reads the stores of HOME to show where the messages went.
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
import time
from collections.abc import Callable
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any

from mssante_base.patients.ins import validate_ins

from .bridge import PatientSide
from .config import load_settings
from .demo_kit import read_manifest
from .store.facade import Store

DOCTOR = "dr.martin"


class StoryFailed(Exception):
    """A step did not answer as the rules say."""


def play(home: Path, echo: Callable[[str], None] = print) -> None:
    """Play the story; raises StoryFailed at the first step that goes wrong."""
    manifest = read_manifest(home)
    settings = load_settings(home)
    doctor = next(m for m in manifest["mailboxes"] if m["address"].startswith(DOCTOR + "@"))
    patient = next(p for p in manifest["patients"] if p["state"] == "active")
    ins = validate_ins(patient["ins"])
    store = Store(settings.database_url, settings.path(settings.storage.blob_dir))
    patient_side = PatientSide(settings)
    context = ssl.create_default_context(cafile=str(home / manifest["trust_ca"]))
    context.check_hostname = False
    submissions = manifest["listeners"]["submissions"]

    def doctor_writes(subject: str, *, fin: bool = False) -> None:
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = doctor["address"], patient["address"], subject
        msg["Date"], msg["Message-ID"] = formatdate(), make_msgid(domain=manifest["operator"]["domain"])
        if fin:
            msg["X-MSS-MES"] = "FIN"
        msg.set_content("Bonjour,\nVos résultats sont disponibles.\nDr Martin\n")
        before = patient_side.received(ins)
        with smtplib.SMTP_SSL(submissions["host"], submissions["port"], context=context, timeout=30) as client:
            client.login(doctor["address"], doctor["password"])
            client.send_message(msg)
        echo(f"  operator: 250, queued for mes_bridge (conversation now {_status(store, ins.value, doctor)})")
        _wait(lambda: patient_side.received(ins) > before, "the message never reached the patient's space")
        echo("  mes_bridge: delivered to the patient's space (LMTP, 250 2.1.5)")

    def patient_writes(subject: str, *, expect_refusal: bool) -> None:
        outcome = asyncio.run(patient_side.send(ins, to=[doctor["address"]], subject=subject,
                                                body="Merci docteur, j'ai une question."))
        if outcome.accepted:
            echo(f"  operator: 250, accepted for {doctor['address']}")
            if expect_refusal:
                raise StoryFailed("the patient's reply was accepted after the doctor ended the exchange")
            _wait(lambda: any(m.message_id == outcome.message_id for m in store.list_messages(doctor["address"])),
                  "the patient's reply never reached the doctor's INBOX")
            echo("  doctor's INBOX: the reply is there")
        else:
            echo(f"  operator: {outcome.refused[doctor['address']]}")
            if not expect_refusal:
                raise StoryFailed("the patient's reply was refused")

    try:
        echo(f"1. {doctor['address']} writes to the patient {patient['address']}")
        doctor_writes("Vos résultats")
        echo("2. the patient answers the doctor")
        patient_writes("Re: Vos résultats", expect_refusal=False)
        echo("3. the doctor ends the exchange (X-MSS-MES: FIN)")
        doctor_writes("Fin de notre échange", fin=True)
        echo("4. the patient tries to answer again")
        patient_writes("Re: Fin de notre échange", expect_refusal=True)
        echo("5. the doctor writes again, which reopens the conversation")
        doctor_writes("Nouveau compte rendu")
        echo("6. the patient answers")
        patient_writes("Re: Nouveau compte rendu", expect_refusal=False)
        echo("the story went as the rules say")
    finally:
        patient_side.close()
        store.close()


def _status(store: Store, ins: str, doctor: dict[str, Any]) -> str:
    status = store.conversations.status(ins, doctor["address"])
    return status.value if status is not None else "none"


def _wait(done: Callable[[], bool], failure: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise StoryFailed(failure)
        time.sleep(0.1)
