"""Typed replies: the codes are split off once, at the wire, and the line they make is the one received."""

from __future__ import annotations

import pytest

from mssante_operator.outcomes import Reply, ResultKind


@pytest.mark.parametrize(("code", "message", "kind", "enhanced", "text"), [
    (250, "2.0.0 Ok: queued as 42", ResultKind.DELIVERED, "2.0.0", "Ok: queued as 42"),
    (250, "Ok", ResultKind.DELIVERED, None, "Ok"),
    (451, "4.4.1  try\n again later", ResultKind.TEMPORARY, "4.4.1", "try again later"),
    (550, "5.1.1", ResultKind.PERMANENT, "5.1.1", ""),
    (550, "4.1.1 a peer mixing classes", ResultKind.PERMANENT, None, "4.1.1 a peer mixing classes"),
    (550, "5.1.1. not a code", ResultKind.PERMANENT, None, "5.1.1. not a code"),
    (554, "", ResultKind.PERMANENT, None, ""),
])  # fmt: skip
def test_a_received_reply_is_split_into_its_codes_and_gives_back_its_line(code, message, kind, enhanced, text):
    reply = Reply.from_smtp(code, message)
    assert (reply.kind, reply.code, reply.enhanced, reply.text) == (kind, code, enhanced, text)
    assert reply.line == f"{code} {' '.join(message.split())}"


def test_our_own_reasons_have_no_reply_code():
    assert Reply(ResultKind.TEMPORARY, "connection refused by mx:25").line == "connection refused by mx:25"
    assert Reply(ResultKind.PERMANENT, "gave up", enhanced="5.4.7").line == "5.4.7 gave up"
