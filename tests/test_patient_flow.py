"""Patient messaging end to end: the operator, a running mes_bridge, real TLS everywhere.

A doctor writes to a patient (submission), the operator asks the bridge's registry, records the
conversation and hands the message to the bridge over LMTP through the durable queue; the patient answers
through the bridge (its certificate, AUTH EXTERNAL on submission) and the conversation rule decides.
"""

from __future__ import annotations

import smtplib
import threading
import time
from collections.abc import Iterator
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any

import pytest
from support.bridge_kit import running_bridge
from support.harness import (
    OPERATOR_DOMAIN,
    RunningOperator,
    configure,
    connect,
    lab_report,
    make_kit,
    peer,
    running_operator,
)
from support.harness import signed as peer_signed

from mes_bridge.outgoing import SendOutcome, send_patient_message
from mssante_base.patients import mss_headers
from mssante_base.patients.conversations import ConversationStatus
from mssante_base.patients.ins import Ins, validate_ins
from mssante_base.patients.states import PatientState
from mssante_base.patients.xdm import NewDocument, PatientId, build_xdm

DOCTOR = f"dr.martin@{OPERATOR_DOMAIN}"
SECRETARY = f"ines.secretaire@{OPERATOR_DOMAIN}"
CARDIO = f"cardiologie@{OPERATOR_DOMAIN}"
APP = f"labo-auto@{OPERATOR_DOMAIN}"
PHARMACY = f"pharmacie.centrale@{OPERATOR_DOMAIN}"
LAB = "resultats@labo-biolab.mssante.fr"


class Kit:
    """The operator and the bridge of one demo kit, and what the tests do with them."""

    def __init__(self, operator: RunningOperator, bridge: Any) -> None:
        self.operator = operator
        self.bridge = bridge
        self.patients = {p["state"]: p for p in operator.manifest["patients"]}

    def ins(self, state: str = "active") -> Ins:
        return validate_ins(self.patients[state]["ins"])

    def address(self, state: str = "active") -> str:
        return self.patients[state]["address"]

    def submit(self, login: str, raw: bytes, to: list[str], *, sender: str | None = None,
               cert: bool = False) -> dict[str, tuple[int, bytes]]:
        """Send ``raw`` on the submission port; the refused recipients (SMTPRecipientsRefused → dict)."""
        running = self.operator
        context = running.tls_context()
        if cert:
            box = running.mailbox(login)
            context.load_cert_chain(running.home / box["cert"], running.home / box["key"])
        with smtplib.SMTP_SSL("127.0.0.1", running.port("submissions"), context=context, timeout=30) as client:
            client.ehlo("poste.hopital")
            if cert:
                code, _ = client.docmd("AUTH", "EXTERNAL =")
                assert code == 235
            else:
                client.login(login, running.mailbox(login)["password"])
            try:
                return client.sendmail(sender or login, to, raw)
            except smtplib.SMTPRecipientsRefused as exc:
                return exc.recipients

    def reply(self, to: list[str], *, state: str = "active", subject: str = "Re: votre message",
              body: str = "Merci docteur.") -> SendOutcome:
        """The patient writes through the bridge (its store, its certificate)."""
        settings, store = self.bridge.settings, self.bridge.service.store
        return self.bridge.call(send_patient_message(settings, ins=self.ins(state), to=to, subject=subject,
                                                     body=body, store=store))

    def inbox(self, state: str = "active") -> list[Any]:
        return self.bridge.service.store.messages(self.ins(state))

    def wait_inbox(self, count: int, state: str = "active", timeout: float = 30) -> list[Any]:
        deadline = time.monotonic() + timeout
        while len(found := self.inbox(state)) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(found)} messages in the patient's space, {count} expected")
            time.sleep(0.1)
        return found

    def status(self, mailbox: str, state: str = "active") -> ConversationStatus | None:
        return self.operator.operator.store.conversations.status(self.ins(state).value, mailbox)


def letter(sender: str, to: list[str], *, subject: str = "Votre compte rendu", fin: bool = False,
           extra: dict[str, str] | None = None, attachment: tuple[str, bytes, str] | None = None) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = ", ".join(to)
    msg["Subject"] = subject
    msg["Message-ID"] = make_msgid(domain=OPERATOR_DOMAIN)
    if fin:
        msg["X-MSS-MES"] = "FIN"
    for name, value in (extra or {}).items():
        msg[name] = value
    msg.set_content("Bonjour,\nVoici votre compte rendu.\n")
    if attachment is not None:
        name, data, mime = attachment
        maintype, _, subtype = mime.partition("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kit]:
    home = tmp_path_factory.mktemp("patients") / "home"
    manifest = make_kit(home)
    configure(home, outbound={"retry_schedule": ["1s", "1s", "2s"], "retry_interval": "2s", "max_lifetime": "1h"},
              patients={"state_cache_ttl": "0s"})
    with running_bridge(home) as bridge, running_operator(home, manifest) as operator:
        yield Kit(operator, bridge)


# -- who may write to a patient, and to which patient ------------------------------------------------


def test_doctor_writes_to_an_active_patient_and_opens_the_conversation(kit: Kit) -> None:
    before = len(kit.inbox())
    assert kit.submit(DOCTOR, letter(DOCTOR, [kit.address()]), [kit.address()]) == {}
    delivered = kit.wait_inbox(before + 1)[-1]
    assert delivered.sender == DOCTOR
    assert kit.status(DOCTOR) is ConversationStatus.OPEN
    record = next(r for r in kit.operator.operator.store.conversations.ls(patient=kit.ins().value)
                  if r.mailbox == DOCTOR)
    assert record.opened_by == DOCTOR and record.opened_by_message_id


@pytest.mark.parametrize(("state", "code", "status"), [
    ("not_activated", 250, None), ("opposed", 550, b"5.1.1"), ("closed", 550, b"5.1.1")])
def test_each_patient_state(kit: Kit, state: str, code: int, status: bytes | None) -> None:
    refused = kit.submit(DOCTOR, letter(DOCTOR, [kit.address(state)]), [kit.address(state)])
    if code == 250:
        assert refused == {}
        kit.wait_inbox(1, state)
    else:
        reply = refused[kit.address(state)]
        assert reply[0] == code and reply[1].startswith(status) and b"Mon espace sant" in reply[1]


def test_one_message_to_two_patients_reaches_both_spaces_in_one_hand_off(kit: Kit) -> None:
    """The bridge answers DATA once per patient (RFC 2033); the operator reads each reply (how the replies
    travel together is pinned down by tests/test_smtp_internals.py)."""
    before = {state: len(kit.inbox(state)) for state in ("active", "not_activated")}
    to = [kit.address("active"), kit.address("not_activated")]
    assert kit.submit(DOCTOR, letter(DOCTOR, to, subject="Pour vous deux"), to) == {}
    for state, count in before.items():
        assert kit.wait_inbox(count + 1, state)[-1].subject == "Pour vous deux"


def test_unknown_patient_and_invalid_ins(kit: Kit) -> None:
    unknown = "199087511122229@patient.mssante.fr"
    assert validate_ins(unknown.partition("@")[0])  # valid, just not in the registry
    bad_key, letters = "285077512345699@patient.mssante.fr", "28507751234x655@patient.mssante.fr"
    refused = kit.submit(DOCTOR, letter(DOCTOR, [unknown, bad_key, letters]), [unknown, bad_key, letters])
    assert refused[unknown][0] == 550 and refused[unknown][1].startswith(b"5.1.1")
    for address in (bad_key, letters):
        assert refused[address][0] == 550 and refused[address][1].startswith(b"5.1.3 invalid INS")


def test_corsican_ins_in_lower_case(kit: Kit) -> None:
    address = kit.address("not_activated")
    assert "2a" in address
    upper = address.replace("2a", "2A")
    assert kit.submit(DOCTOR, letter(DOCTOR, [upper]), [upper]) == {}


def test_app_mailbox_writes_but_cannot_be_answered(kit: Kit) -> None:
    assert kit.submit(APP, letter(APP, [kit.address()]), [kit.address()], cert=True) == {}
    outcome = kit.reply([APP])
    assert outcome.accepted == () and outcome.refused[APP].startswith("550 5.7.1")
    assert "applicative" in outcome.refused[APP]


def test_a_patient_cannot_write_to_another_patient(kit: Kit) -> None:
    outcome = kit.reply([kit.address("not_activated")])
    assert outcome.refused[kit.address("not_activated")].startswith("550 5.7.1")


# -- the conversation rule ------------------------------------------------------------------------------


def test_patient_answers_the_doctor_who_wrote_and_nobody_else(kit: Kit) -> None:
    assert kit.submit(DOCTOR, letter(DOCTOR, [kit.address()]), [kit.address()]) == {}
    outcome = kit.reply([DOCTOR, SECRETARY])
    assert outcome.accepted == (DOCTOR,)
    refusal = outcome.refused[SECRETARY]
    assert refusal.startswith("550 5.7.1") and "doit vous écrire en premier" in refusal and "first" in refusal
    deadline = time.monotonic() + 30
    while not any(m.message_id == outcome.message_id for m in kit.operator.operator.store.list_messages(DOCTOR)):
        assert time.monotonic() < deadline, "the patient's reply never reached the doctor's INBOX"
        time.sleep(0.1)


def test_pharmacy_may_be_written_first(kit: Kit) -> None:
    assert kit.status(PHARMACY) is None
    outcome = kit.reply([PHARMACY])
    assert outcome.accepted == (PHARMACY,)


def test_fin_by_header_ends_and_next_message_reopens(kit: Kit) -> None:
    assert kit.submit(DOCTOR, letter(DOCTOR, [kit.address()], fin=True), [kit.address()]) == {}
    assert kit.status(DOCTOR) is ConversationStatus.ENDED
    outcome = kit.reply([DOCTOR])
    assert outcome.refused[DOCTOR].startswith("550 5.7.1") and "a mis fin à vos échanges" in outcome.refused[DOCTOR]
    assert kit.submit(DOCTOR, letter(DOCTOR, [kit.address()]), [kit.address()]) == {}
    assert kit.reply([DOCTOR]).accepted == (DOCTOR,)


def test_fin_by_subject_exactly(kit: Kit) -> None:
    assert kit.submit(DOCTOR, letter(DOCTOR, [kit.address()], subject="[FIN] suite"), [kit.address()]) == {}
    assert kit.status(DOCTOR) is ConversationStatus.OPEN  # not exactly "[FIN]"
    assert kit.submit(DOCTOR, letter(DOCTOR, [kit.address()], subject="[FIN]"), [kit.address()]) == {}
    assert kit.status(DOCTOR) is ConversationStatus.ENDED
    assert kit.reply([DOCTOR]).refused[DOCTOR].startswith("550 5.7.1")
    assert kit.submit(DOCTOR, letter(DOCTOR, [kit.address()]), [kit.address()]) == {}


def test_org_conversation_is_with_the_org_mailbox_not_the_delegate(kit: Kit) -> None:
    assert kit.submit(SECRETARY, letter(CARDIO, [kit.address()]), [kit.address()], sender=CARDIO) == {}
    assert kit.status(CARDIO) is ConversationStatus.OPEN
    assert kit.status(SECRETARY) is None  # the delegate wrote for the service, not for herself
    outcome = kit.reply([CARDIO, SECRETARY])
    assert outcome.accepted == (CARDIO,) and outcome.refused[SECRETARY].startswith("550 5.7.1")


def test_operator_ends_a_conversation(kit: Kit) -> None:
    store = kit.operator.operator.store
    assert kit.submit(DOCTOR, letter(DOCTOR, [kit.address()]), [kit.address()]) == {}
    from datetime import UTC, datetime

    record = store.conversations.end(kit.ins().value, DOCTOR, actor="operator:test", at=datetime.now(UTC))
    assert record.status is ConversationStatus.ENDED and record.ended_by == "operator:test"
    assert kit.reply([DOCTOR]).refused[DOCTOR].startswith("550 5.7.1")
    assert kit.submit(DOCTOR, letter(DOCTOR, [kit.address()]), [kit.address()]) == {}


# -- peers of the trust space ----------------------------------------------------------------------------


def test_peer_professional_writes_to_a_patient_through_the_mta(kit: Kit) -> None:
    running = kit.operator
    labo = peer(running.manifest, "labo")
    before = len(kit.inbox())
    raw = peer_signed(running.home, labo, lab_report(LAB, [kit.address()]))
    with connect(running, labo) as client:
        assert client.sendmail(LAB, [kit.address()], raw) == {}
    kit.wait_inbox(before + 1)
    assert kit.status(LAB) is ConversationStatus.OPEN
    stranger = "inconnu@labo-biolab.mssante.fr"  # same operator, not in the annuaire
    with connect(running, labo) as client:
        client.ehlo("smtp.test")
        client.mail(stranger)
        code, text = client.rcpt(kit.address())
        assert code == 550 and text.startswith(b"5.7.1 Only health professionals")
    outcome = kit.reply([LAB])  # to the peer's professional: through the outbound queue
    assert outcome.accepted == (LAB,)


# -- MSSanté headers against the XDM content ---------------------------------------------------------------


def _xdm_for(ins: Ins) -> bytes:
    cda = b"<?xml version='1.0'?><ClinicalDocument xmlns='urn:hl7-org:v3'/>"
    return build_xdm(
        PatientId(ins.value, "1.2.250.1.213.1.4.8"),
        [NewDocument(filename="CR-BIO.xml", data=cda, mime_type="text/xml", type_code="11502-2",
                     type_scheme="2.16.840.1.113883.6.1", class_code="10",
                     format_code="urn:asip:ci-sis:cr-bio:2010", title="Compte rendu de biologie")],
        source_patient_info={"family_name": "LEFEVRE", "given_names": "SOPHIE", "birth_date": "19850701", "sex": "F"},
    )


def test_xmss_headers_checked_against_the_xdm_and_the_recipient(kit: Kit) -> None:
    headers = {"X-MSS-INS": "O", "X-MSS-CODECDA": "11502-2"}
    xdm = ("IHE_XDM.ZIP", _xdm_for(kit.ins()), "application/zip")
    good = letter(DOCTOR, [kit.address()], extra=headers, attachment=xdm)
    assert kit.submit(DOCTOR, good, [kit.address()]) == {}
    other = kit.address("not_activated")
    with pytest.raises(smtplib.SMTPDataError) as refused:
        kit.submit(DOCTOR, letter(DOCTOR, [other], extra=headers, attachment=xdm), [other])
    assert refused.value.smtp_code == 550 and refused.value.smtp_error.startswith(b"5.6.0")
    wrong_code = letter(DOCTOR, [kit.address()], extra={**headers, "X-MSS-CODECDA": "34112-3"}, attachment=xdm)
    with pytest.raises(smtplib.SMTPDataError) as refused:
        kit.submit(DOCTOR, wrong_code, [kit.address()])
    assert refused.value.smtp_code == 550 and refused.value.smtp_error.startswith(b"5.6.0")


def test_the_xdm_content_is_read_off_the_event_loop_on_both_listeners(kit: Kit, monkeypatch) -> None:
    """Parsing the MIME message, unzipping the archive and reading its XML runs on the CPU executor."""
    threads: list[str] = []
    check = mss_headers.check_mss_headers

    def spy(message: Any, patients: Any) -> Any:
        threads.append(threading.current_thread().name)
        return check(message, patients)

    monkeypatch.setattr(mss_headers, "check_mss_headers", spy)
    headers = {"X-MSS-INS": "O", "X-MSS-CODECDA": "11502-2"}
    xdm = ("IHE_XDM.ZIP", _xdm_for(kit.ins()), "application/zip")
    assert kit.submit(DOCTOR, letter(DOCTOR, [kit.address()], extra=headers, attachment=xdm), [kit.address()]) == {}
    running = kit.operator
    labo = peer(running.manifest, "labo")
    raw = peer_signed(running.home, labo, letter(LAB, [kit.address()], extra=headers, attachment=xdm))
    with connect(running, labo) as client:
        assert client.sendmail(LAB, [kit.address()], raw) == {}
    assert len(threads) == 2
    assert all(name.startswith("cpu") for name in threads), threads  # the operator's CPU executor, not its loop


# -- the bridge down, a permanent refusal, both directions at once ------------------------------------------


def test_state_change_after_acceptance_bounces_to_the_sender(kit: Kit) -> None:
    """The registry said "not activated" at RCPT; the space is closed before the hand-off: a DSN comes back."""
    running = kit.operator
    store = kit.bridge.service.store
    ins = kit.ins("not_activated")
    kit.operator.call(running.operator.queue_runner.stop())  # hold the hand-off
    try:
        assert kit.submit(DOCTOR, letter(DOCTOR, [ins.address], subject="Bilan"), [ins.address]) == {}
        store.set_state(ins, PatientState.CLOSED, actor="test")
    finally:
        running.call(_restart_runner(running))
    try:
        deadline = time.monotonic() + 30
        while not any("Undelivered" in (m.subject or "") or "Non remis" in (m.subject or "")
                      for m in running.operator.store.list_messages(DOCTOR)):
            assert time.monotonic() < deadline, "no bounce reached the doctor"
            time.sleep(0.2)
    finally:
        store.set_state(ins, PatientState.NOT_ACTIVATED, actor="test")


async def _restart_runner(running: RunningOperator) -> None:
    operator = running.operator
    operator.queue_runner = operator._queue_runner()
    operator.submission_context.on_queued = operator.queue_runner.wake
    operator.mta_context.on_queued = operator.queue_runner.wake
    operator.queue_runner.start()


def test_bridge_down_means_delay_then_delivery(kit: Kit) -> None:
    bridge = kit.bridge
    before = len(kit.inbox())
    bridge.call(bridge.service.stop())
    try:
        refused = kit.submit(DOCTOR, letter(DOCTOR, [kit.address()]), [kit.address()])
        assert refused[kit.address()][0] == 451 and refused[kit.address()][1].startswith(b"4.4.1")
    finally:
        bridge.service.__init__(bridge.settings)
        bridge.call(bridge.service.start())
    assert kit.submit(DOCTOR, letter(DOCTOR, [kit.address()]), [kit.address()]) == {}
    kit.wait_inbox(before + 1)


def test_lmtp_down_after_acceptance_means_delay_never_loss(kit: Kit) -> None:
    """RCPT checked with the bridge up; the bridge goes down before DATA: 250, deferred, delivered once it is back."""
    bridge, running = kit.bridge, kit.operator
    before = len(kit.inbox())
    context = running.tls_context()
    raw = letter(DOCTOR, [kit.address()], subject="Résultats en attente")
    with smtplib.SMTP_SSL("127.0.0.1", running.port("submissions"), context=context, timeout=30) as client:
        client.login(DOCTOR, running.mailbox(DOCTOR)["password"])
        client.mail(DOCTOR)
        assert client.rcpt(kit.address())[0] == 250
        bridge.call(bridge.service.stop())
        # A stopped service keeps the sessions already open; a bridge that is down has none: drop ours.
        running.call(running.operator.queue_runner._client.patients.close())
        try:
            code, reply = client.data(raw)
            assert code == 250
            queue_id = reply.decode().rsplit(" ", 1)[-1]
            deadline = time.monotonic() + 30
            while (entry := running.operator.store.queue.show(queue_id)).recipients[0].attempts < 1:
                assert time.monotonic() < deadline, "no delivery attempt while the bridge was down"
                time.sleep(0.1)
            [attempted] = entry.recipients
            assert attempted.status.value == "deferred" and "mes_bridge" in str(attempted.last_reply)
        finally:
            bridge.service.__init__(bridge.settings)
            bridge.call(bridge.service.start())
    kit.wait_inbox(before + 1)


def test_concurrent_messages_in_both_directions(kit: Kit) -> None:
    assert kit.submit(DOCTOR, letter(DOCTOR, [kit.address()]), [kit.address()]) == {}
    before = len(kit.inbox())
    errors: list[BaseException] = []
    replies: list[SendOutcome] = []

    def doctor() -> None:
        try:
            for _ in range(5):
                assert kit.submit(DOCTOR, letter(DOCTOR, [kit.address()]), [kit.address()]) == {}
        except BaseException as exc:
            errors.append(exc)

    def patient() -> None:
        try:
            for _ in range(5):
                replies.append(kit.reply([DOCTOR]))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=doctor), threading.Thread(target=doctor), threading.Thread(target=patient)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    assert all(r.accepted == (DOCTOR,) for r in replies)
    kit.wait_inbox(before + 10)
    assert kit.status(DOCTOR) is ConversationStatus.OPEN
