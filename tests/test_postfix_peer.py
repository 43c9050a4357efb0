"""The operator against a stock Debian Postfix + OpenDKIM peer operator (tests/postfix_peer.py), both ways.

Our doctor writes to the peer's users through our submission listener and queue (mutual TLS to
Postfix, our DKIM signature checked by OpenDKIM); the peer's users write to ours (OpenDKIM signs,
Postfix presents its client certificate to our MTA); and a delivery receipt asked with NOTIFY=SUCCESS
comes back from Postfix, unsigned as Postfix sends its own reports, to the doctor's INBOX.
"""

from __future__ import annotations

import email
import email.policy
import re
from collections.abc import Iterator
from email.message import EmailMessage, Message
from email.utils import formatdate, make_msgid

import pytest
from harness import OPERATOR_DOMAIN, RunningOperator, configure, make_kit, running_operator
from postfix_peer import PostfixPeer
from test_submission import DOCTOR, letter, submit_client, wait_until

from mssante_operator.demo_kit import LOCALHOST

LAB = "labo-biolab.mssante.fr"
LAB_USER = f"resultats@{LAB}"


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningOperator, PostfixPeer]]:
    home = tmp_path_factory.mktemp("postfix") / "home"
    manifest = make_kit(home)
    mta = f"{LOCALHOST}:{manifest['listeners']['mta']['port']}"
    with PostfixPeer(home, manifest, "labo", operator_route=mta) as peer:
        configure(home, outbound={"routes": {LAB: peer.route}})
        with running_operator(home, manifest) as operator:
            yield operator, peer


@pytest.fixture
def running(kit: tuple[RunningOperator, PostfixPeer]) -> RunningOperator:
    return kit[0]


@pytest.fixture
def peer(kit: tuple[RunningOperator, PostfixPeer]) -> PostfixPeer:
    return kit[1]


def submit(running: RunningOperator, to: str, subject: str, *, notify: str | None = None) -> str:
    """The doctor submits a letter to ``to``; returns the id of the 250 reply."""
    with submit_client(running) as client:
        client.mail(DOCTOR)
        code, text = client.docmd("RCPT", f"TO:<{to}>" + (f" NOTIFY={notify}" if notify else ""))
        assert code == 250, text
        code, text = client.data(letter(DOCTOR, [to], subject=subject))
        assert code == 250, text
    return text.decode().rsplit(" ", 1)[1]


def parsed(raw: bytes) -> Message:
    return email.message_from_bytes(raw, policy=email.policy.default)


def with_subject(messages: list[bytes], subject: str) -> list[Message]:
    return [m for m in map(parsed, messages) if m["Subject"] == subject]


def inbox(running: RunningOperator, address: str) -> list[Message]:
    store = running.operator.store
    return [parsed(store.read_message(address, m.uid)) for m in store.list_messages(address)]


def test_our_doctor_writes_to_a_postfix_peer(running: RunningOperator, peer: PostfixPeer) -> None:
    submit(running, LAB_USER, "Vers Postfix")
    delivered = wait_until(lambda: with_subject(peer.mailbox("resultats"), "Vers Postfix"))[0]
    # OpenDKIM at the peer verified our signature; Postfix got our client certificate over TLS.
    results = " ".join(str(value) for value in delivered.get_all("Authentication-Results", []))
    assert re.search(rf"dkim=pass [^;]*header\.d={re.escape(OPERATOR_DOMAIN)}", results), results
    assert peer.wait_for_log("Trusted TLS connection established from localhost")


def test_a_postfix_peer_writes_to_our_doctor(running: RunningOperator, peer: PostfixPeer) -> None:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = LAB_USER, DOCTOR, "Depuis Postfix"
    msg["Date"], msg["Message-ID"] = formatdate(), make_msgid(domain=LAB)
    msg.set_content("Bonjour,\nLe compte rendu est disponible.\n")
    peer.inject(msg.as_bytes(policy=msg.policy.clone(linesep="\r\n")), LAB_USER, [DOCTOR])
    stored = wait_until(lambda: [m for m in inbox(running, DOCTOR) if m["Subject"] == "Depuis Postfix"])[0]
    signature = str(stored["DKIM-Signature"])
    assert f"d={LAB}" in signature.replace(" ", "")  # signed by OpenDKIM for the peer's domain
    ours = str(stored["Authentication-Results"])
    assert re.search(rf"dkim=pass [^;]*header\.d={re.escape(LAB)}", ours), ours
    assert peer.dn.split(",")[0] in ours  # the client certificate Postfix presented
