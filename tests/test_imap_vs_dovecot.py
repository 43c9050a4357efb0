"""The side-by-side benchmark (benchmarks/imap_vs_dovecot.py): its response checks catch what they are for,
and its --quick run completes against both servers with no violation (no timing is asserted)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from imap import Stats  # noqa: E402
from imap_client import Response  # noqa: E402
from imap_vs_dovecot import Checks, ClientState, Session, append_message, store_keyword  # noqa: E402

RAW = b"Message-ID: <cr.1@labo>\r\nSubject: x\r\n\r\nbody\r\n"


class ScriptedClient:
    """Answers every command with the next scripted response."""

    def __init__(self, *responses: Response) -> None:
        self.responses = list(responses)

    async def command(self, text: str, **_: object) -> Response:
        return self.responses.pop(0)


def _session(*responses: Response) -> Session:
    expected = {b"<cr.1@labo>": hashlib.sha256(RAW).digest()}
    return Session(ScriptedClient(*responses), Stats(), Checks(), expected)  # type: ignore[arg-type]


def test_a_body_that_differs_from_the_loaded_message_is_a_violation() -> None:
    session = _session()
    session.check_body(1, Response("OK", b"", literals=[RAW]))
    assert session.checks.total == 0
    session.check_body(2, Response("OK", b"", literals=[RAW.replace(b"body", b"bodY")]))
    session.check_body(3, Response("OK", b"", literals=[b"Subject: no id\r\n\r\n"]))
    assert session.checks.counts == {"FETCH BODY[] differs from the message loaded": 2}


def test_bad_or_no_is_a_violation() -> None:
    session = _session(Response("BAD", b"unknown command"))
    with pytest.raises(Exception, match="BAD"):
        asyncio.run(session.run("SELECT INBOX", "SELECT INBOX"))
    assert session.checks.counts == {"BAD to SELECT INBOX": 1}


def test_a_keyword_stored_without_a_flags_announcement_is_a_violation() -> None:
    announced = _session(Response("OK", b"", untagged=[b"* FLAGS (\\Seen $Label1)\r\n"]))
    asyncio.run(store_keyword(announced, "1", "$Label1", {b"\\*"}, ClientState()))
    assert announced.checks.total == 0
    silent = _session(Response("OK", b""))
    asyncio.run(store_keyword(silent, "1", "$Label1", {b"\\seen"}, ClientState()))
    assert set(silent.checks.counts) == {"keyword STOREd but not announced in FLAGS",
                                         "keyword STOREd but not in PERMANENTFLAGS"}


def test_an_appended_message_must_be_recent_in_its_session() -> None:
    appended = Response("OK", b"[APPENDUID 7 42] APPEND completed")
    recent = _session(appended, Response("OK", b"", untagged=[b"* 301 FETCH (UID 42 FLAGS (\\Seen \\Recent))\r\n"]))
    state = ClientState()
    asyncio.run(append_message(recent, random.Random(1), [RAW], state))
    assert recent.checks.total == 0 and state.pending == 42
    not_recent = _session(appended, Response("OK", b"", untagged=[b"* 301 FETCH (UID 42 FLAGS (\\Seen))\r\n"]))
    asyncio.run(append_message(not_recent, random.Random(1), [RAW], ClientState()))
    assert not_recent.checks.counts == {"appended message not \\Recent in the session that appended it": 1}


@pytest.mark.skipif(shutil.which("dovecot") is None, reason="dovecot-imapd is not installed")
def test_quick_run_against_both_servers() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "imap_vs_dovecot.py"), "--quick"],
                            capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "operator/dovecot ops/s: median" in result.stdout
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["violations"] == {"operator": {}, "dovecot": {}}
    assert summary["median_ratio_per_s"] > 0 and summary["cpu_ratio"] > 0
    assert {row["op"] for row in summary["rows"]} >= {"LOGIN", "SELECT INBOX", "UID FETCH 1 x BODY.PEEK[]"}
