"""SEARCH keys evaluated on messages: flags, sets, sizes, dates, headers, body and text, nesting."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mssante_operator.imap.message import MessageStructure
from mssante_operator.imap.parser import parse_command
from mssante_operator.imap.search import Candidate, matches, needs_content
from mssante_operator.store.folders import MessageMeta

RAW = (
    b"Date: Tue, 17 Nov 2026 23:30:00 -0500\r\n"
    b"From: =?utf-8?q?Laboratoire_Biolab_=C3=89vry?= <resultats@labo-biolab.mssante.fr>\r\n"
    b"To: Dr Martin <dr.martin@hopital-demo.mssante.fr>\r\n"
    b"Cc: secretariat@hopital-demo.mssante.fr\r\n"
    b"Subject: =?utf-8?q?R=C3=A9sultats_de_biologie?=\r\n"
    b"X-Priority: 1\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    b"Glyc=C3=A9mie =C3=A0 jeun : 0,95 g/L\r\n"
)


def candidate(seq: int = 2, uid: int = 20, flags: tuple[str, ...] = ("\\Seen",), recent: bool = False,
              size: int = 5000, modseq: int = 7, internaldate: datetime | None = None) -> Candidate:
    meta = MessageMeta(uid=uid, modseq=modseq, flags=frozenset(flags),
                       internaldate=internaldate or datetime(2026, 11, 18, 4, 30, tzinfo=UTC), size=size,
                       blob_key="k")
    return Candidate(seq=seq, meta=meta, recent=recent, max_seq=3, max_uid=30,
                     load=lambda: MessageStructure.parse(RAW))


def key(text: str):
    command = parse_command(f"a SEARCH {text}\r\n".encode())
    return command.key  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("criteria", "expected"),
    [
        ("ALL", True),
        ("SEEN", True), ("UNSEEN", False), ("FLAGGED", False), ("UNFLAGGED", True),
        ("NEW", False), ("OLD", True), ("RECENT", False),
        ("KEYWORD $Urgent", False), ("UNKEYWORD $Urgent", True),
        ("2", True), ("1,3:*", False), ("*", False), ("UID 20", True), ("UID 21:*", False),
        ("LARGER 4999", True), ("LARGER 5000", False), ("SMALLER 5001", True),
        ("MODSEQ 7", True), ("MODSEQ 8", False),
        ("ON 18-Nov-2026", True), ("BEFORE 18-Nov-2026", False), ("SINCE 18-Nov-2026", True),
        ("SENTON 17-Nov-2026", True), ("SENTBEFORE 18-Nov-2026", True), ("SENTSINCE 18-Nov-2026", False),
        ("FROM biolab", True), ("FROM \"Évry\"", True), ("FROM martin", False),
        ("TO DR.MARTIN", True), ("CC secretariat", True), ("BCC x", False),
        ('SUBJECT "résultats"', True), ('SUBJECT "de bio"', True), ("SUBJECT radiologie", False),
        ('HEADER X-Priority ""', True), ("HEADER X-Priority 1", True), ('HEADER X-Absent ""', False),
        ('BODY "glycémie"', True), ("BODY Biolab", False), ("TEXT Biolab", True), ('TEXT "glycémie"', True),
        ("NOT SEEN", False), ("OR FLAGGED SEEN", True), ("(SEEN FROM biolab)", True),
        ("SEEN NOT (FROM biolab OR SUBJECT x FLAGGED)", True), ("NOT (FROM biolab SEEN)", False),
        ('CHARSET UTF-8 SUBJECT "RÉSULTATS"', True),
    ],
)
def test_search_keys(criteria: str, expected: bool) -> None:
    assert matches(key(criteria), candidate()) is expected


def test_recent_is_per_session() -> None:
    assert matches(key("RECENT"), candidate(recent=True))
    assert matches(key("NEW"), candidate(recent=True, flags=()))


def test_only_content_keys_read_the_message() -> None:
    def refuse() -> MessageStructure:
        raise AssertionError("the message file was read")

    cheap = candidate()
    cheap.load = refuse
    assert matches(key("SEEN UID 1:* LARGER 10 SINCE 1-Jan-2026 NOT FLAGGED"), cheap)
    assert not needs_content(key("SEEN UID 1:* LARGER 10 SINCE 1-Jan-2026"))
    assert needs_content(key("OR SEEN SUBJECT x"))
    assert needs_content(key("SENTON 1-Jan-2026"))


def test_a_message_without_date_never_matches_sent_keys() -> None:
    message = candidate()
    message.load = lambda: MessageStructure.parse(b"Subject: x\r\n\r\nbody\r\n")
    assert not matches(key("SENTSINCE 1-Jan-1970"), message)
    assert not matches(key("SENTBEFORE 1-Jan-2100"), message)
