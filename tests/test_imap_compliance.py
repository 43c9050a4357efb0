"""IMAP protocol compliance, checked with raw exchanges over TLS, in the manner of Dovecot's imaptest.

Each test sends exact command lines (and literals) and checks what the server answers against RFC 3501,
RFC 9051 where it clarifies, and the advertised extensions (LITERAL+, SASL-IR, ID, ENABLE, IDLE, NAMESPACE,
UIDPLUS, MOVE, UNSELECT, SPECIAL-USE, CHILDREN, APPENDLIMIT, CONDSTORE). The scenarios follow imaptest's
scripted tests (src/tests/: fetch, fetch-body*, fetch-envelope, search-*, store, expunge*, copy, move,
append, select, list, subscribe) and the state checks imaptest applies to every response.

Known deviations are ``xfail(strict=True)`` with the rule they break: fixing one turns it into an
unexpected pass, and the marker must then go.

Logins cost an Argon2 verification each, so connections come from a small pool: a test borrows logged-in
connections, and they go back unselected. A connection that enabled CONDSTORE goes back to a separate
pool (its responses then carry MODSEQ), and one left in an unknown state is closed.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import re
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pytest
from support.harness import RunningOperator
from test_imap_message import IMAPTEST_MIME

DOMAIN = "hopital-demo.mssante.fr"
USER = "paul.durand"
TIMEOUT = 5.0

_LITERAL_AT_END = re.compile(rb"\{(\d+)\}\r\n\Z")
_CONDSTORE_WORDS = re.compile(rb"CONDSTORE|MODSEQ|CHANGEDSINCE|UNCHANGEDSINCE", re.IGNORECASE)
_FETCH = re.compile(rb"\* (\d+) FETCH \(", re.IGNORECASE)


# --------------------------------------------------------------------------- a raw IMAP connection


@dataclass
class Reply:
    """Everything the server sent for one command: untagged and continuation lines, then the tagged line."""

    tag: str
    lines: list[bytes]
    final: bytes

    @property
    def status(self) -> str:
        return self.final.split(b" ", 2)[1].decode()

    @property
    def text(self) -> bytes:
        return b"".join(self.lines) + self.final

    def untagged(self, keyword: str) -> list[bytes]:
        """Untagged lines whose first word (or second, after a number) is ``keyword``, CRLF removed."""
        found = []
        for line in self.lines:
            words = line.removesuffix(b"\r\n").split(b" ", 3)
            if words[0] != b"*":
                continue
            if words[1].upper() == keyword.encode() or (
                    len(words) > 2 and words[1].isdigit() and words[2].upper() == keyword.encode()):
                found.append(line.removesuffix(b"\r\n"))
        return found

    def fetches(self) -> list[tuple[int, bytes]]:
        """(sequence number, whole response) of each untagged FETCH, in order."""
        return [(int(m.group(1)), line) for line in self.lines if (m := _FETCH.match(line))]

    def numbers(self, keyword: str) -> list[int]:
        """The numbers of ``* n EXPUNGE`` / ``* n EXISTS`` / ``* n RECENT`` responses, in order."""
        return [int(line.split(b" ")[1]) for line in self.untagged(keyword)]

    def search(self) -> list[int]:
        """The numbers of the (single) untagged SEARCH response, without a MODSEQ suffix."""
        (line,) = self.untagged("SEARCH")
        words = line.split(b"(", 1)[0].split()[2:]
        return [int(word) for word in words]


class Imap:
    """One client connection on the implicit-TLS port, reading responses with their literals inlined."""

    def __init__(self, running: RunningOperator, user: str | None) -> None:
        context = running.tls_context()
        address = ("127.0.0.1", running.port("imaps"))
        self.sock = context.wrap_socket(socket.create_connection(address, timeout=TIMEOUT))
        self.buffer = b""
        self.counter = itertools.count(1)
        self.user = user
        self.condstore = False  # CONDSTORE-aware once a command enabled it (RFC 7162 3.1)
        self.greeting = self.readline()
        if user is not None:
            reply = self.command(f'LOGIN {address_of(running, user)} "{password_of(running, user)}"')
            assert reply.status == "OK", reply.final

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("the server closed the connection")
        self.buffer += data

    def readline(self) -> bytes:
        """One response, CRLF included; a literal at the end of a line is read and the line continued."""
        out = b""
        while True:
            while b"\r\n" not in self.buffer:
                self._fill()
            end = self.buffer.index(b"\r\n") + 2
            line, self.buffer = self.buffer[:end], self.buffer[end:]
            out += line
            literal = _LITERAL_AT_END.search(line)
            if literal is None:
                return out
            size = int(literal.group(1))
            while len(self.buffer) < size:
                self._fill()
            out += self.buffer[:size]
            self.buffer = self.buffer[size:]

    def read_until(self, tag: str) -> Reply:
        lines = []
        while True:
            line = self.readline()
            if line.startswith(tag.encode() + b" "):
                return Reply(tag, lines, line.removesuffix(b"\r\n"))
            lines.append(line)

    def next_tag(self) -> str:
        return f"c{next(self.counter)}"

    def command(self, text: str | bytes) -> Reply:
        """Send ``tag text CRLF`` (text may hold LITERAL+ literals) and read up to the tagged response."""
        data = text.encode() if isinstance(text, str) else text
        if _CONDSTORE_WORDS.search(data):
            self.condstore = True
        tag = self.next_tag()
        self.send(tag.encode() + b" " + data + b"\r\n")
        return self.read_until(tag)

    def append(self, mailbox: str, message: bytes, options: str = "") -> Reply:
        """APPEND with a non-synchronising literal (LITERAL+)."""
        prefix = f"APPEND {mailbox} {options + ' ' if options else ''}{{{len(message)}+}}\r\n".encode()
        return self.command(prefix + message)

    def select(self, mailbox: str) -> Reply:
        reply = self.command(f"SELECT {mailbox}")
        assert reply.status == "OK", reply.final
        return reply

    def reset(self) -> bool:
        """Back to the authenticated state with nothing pending; False when the connection is unusable."""
        try:
            self.command("UNSELECT")
            return self.command("NOOP").status == "OK"
        except (OSError, EOFError, IndexError):
            return False

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def account(running: RunningOperator, local: str) -> dict[str, Any]:
    return running.mailbox(local)


def address_of(running: RunningOperator, local: str) -> str:
    return str(account(running, local)["address"])


def password_of(running: RunningOperator, local: str) -> str:
    return str(account(running, local)["password"])


@dataclass
class Pool:
    """Logged-in connections kept between tests, by (user, CONDSTORE enabled)."""

    running: RunningOperator
    idle: dict[tuple[str, bool], list[Imap]] = field(default_factory=dict)

    def get(self, user: str, condstore: bool) -> Imap:
        spare = self.idle.get((user, condstore))
        return spare.pop() if spare else Imap(self.running, user)

    def put(self, conn: Imap) -> None:
        if conn.user is not None and conn.reset():
            self.idle.setdefault((conn.user, conn.condstore), []).append(conn)
        else:
            conn.close()

    def close(self) -> None:
        for conns in self.idle.values():
            for conn in conns:
                conn.close()


@dataclass
class Sessions:
    """What a test uses: ``login()`` borrows a logged-in connection, ``anonymous()`` opens a new one."""

    pool: Pool
    borrowed: list[Imap] = field(default_factory=list)

    def login(self, user: str = USER, *, condstore: bool = False) -> Imap:
        conn = self.pool.get(user, condstore)
        self.borrowed.append(conn)
        return conn

    def anonymous(self) -> Imap:
        conn = Imap(self.pool.running, None)
        self.borrowed.append(conn)
        return conn

    def mailbox(self, conn: Imap, *messages: bytes, prefix: str = "box") -> str:
        """A new, empty mailbox of a unique name holding ``messages``, APPENDed in order."""
        name = f"{prefix}{next(_MAILBOX_NUMBERS)}"
        assert conn.command(f"CREATE {name}").status == "OK"
        for message in messages:
            assert conn.append(name, message).status == "OK"
        return name

    def release(self) -> None:
        for conn in self.borrowed:
            self.pool.put(conn)


_MAILBOX_NUMBERS = itertools.count(1)


@pytest.fixture(scope="module")
def pool(running: RunningOperator) -> Iterator[Pool]:
    connections = Pool(running)
    yield connections
    connections.close()


@pytest.fixture
def imap(pool: Pool) -> Iterator[Sessions]:
    sessions = Sessions(pool)
    yield sessions
    sessions.release()


def message(n: int, *, subject: str | None = None, body: str | None = None, headers: str = "") -> bytes:
    """A small RFC 5322 message with CRLF line ends."""
    subject = f"message {n}" if subject is None else subject
    body = f"body {n}" if body is None else body
    return (f"From: Sender {n} <sender{n}@example.org>\r\nTo: rcpt@example.org\r\nSubject: {subject}\r\n"
            f"Message-ID: <m{n}@example.org>\r\n{headers}\r\n{body}\r\n").encode()


def crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode()


def item(response: bytes, label: bytes) -> bytes:
    """The string value of FETCH item ``label`` (e.g. ``BODY[TEXT]<0>``) in ``response``: quoted or literal."""
    at = response.upper().index(label.upper() + b" ") + len(label) + 1
    if response[at : at + 1] == b"{":
        close = response.index(b"}\r\n", at)
        size = int(response[at + 1 : close])
        return response[close + 3 : close + 3 + size]
    if response[at : at + 3] == b"NIL":
        return b""
    assert response[at : at + 1] == b'"', response[at : at + 20]
    out, at = bytearray(), at + 1
    while response[at : at + 1] != b'"':
        if response[at : at + 1] == b"\\":
            at += 1
        out += response[at : at + 1]
        at += 1
    return bytes(out)


def flags_of(response: bytes) -> set[bytes]:
    match = re.search(rb"FLAGS \(([^)]*)\)", response, re.IGNORECASE)
    assert match is not None, response
    return set(match.group(1).split())


def number(pattern: bytes, response: bytes) -> int:
    """The number captured by ``pattern``'s group in ``response``."""
    match = re.search(pattern, response, re.IGNORECASE)
    assert match is not None, (pattern, response)
    return int(match.group(1))


def uid_of(response: bytes) -> int:
    return number(rb"UID (\d+)", response)


def code_value(reply: Reply, code: str) -> bytes:
    """The argument of response code ``[code ...]`` in the tagged or an untagged line."""
    match = re.search(rb"\[" + code.encode() + rb" ([^\]]*)\]", reply.text, re.IGNORECASE)
    assert match is not None, (code, reply.text)
    return match.group(1)


def status_values(reply: Reply) -> dict[str, int]:
    """The items of the one untagged STATUS response, in the order sent."""
    (line,) = reply.untagged("STATUS")
    return {name.decode(): int(value) for name, value in re.findall(rb"([A-Z]+) (\d+)", line.rsplit(b"(", 1)[1])}


def apply_expunges(view: list[int], expunged: list[int]) -> list[int]:
    """A client's view (UIDs by sequence number) after ``* n EXPUNGE`` responses, applied in order."""
    view = list(view)
    for seq in expunged:
        del view[seq - 1]
    return view


# =========================================================================== connection and state


def test_greeting_capabilities_and_logout(imap: Sessions) -> None:
    conn = imap.anonymous()
    assert conn.greeting.startswith(b"* OK [CAPABILITY ")
    reply = conn.command("CAPABILITY")
    (line,) = reply.untagged("CAPABILITY")
    capabilities = set(line.split()[2:])
    assert {b"IMAP4rev1", b"LITERAL+", b"SASL-IR", b"ID", b"ENABLE", b"IDLE", b"NAMESPACE", b"UIDPLUS", b"MOVE",
            b"UNSELECT", b"SPECIAL-USE", b"CHILDREN", b"CONDSTORE", b"AUTH=PLAIN"} <= capabilities
    assert any(c.startswith(b"APPENDLIMIT=") for c in capabilities)
    assert conn.command("NOOP").status == "OK"
    assert conn.command("ID NIL").untagged("ID")
    reply = conn.command("LOGOUT")  # RFC 3501 6.1.3: BYE, then the tagged OK
    assert reply.status == "OK" and reply.untagged("BYE")


@pytest.mark.parametrize("command", ["SELECT INBOX", "EXAMINE INBOX", 'LIST "" *', "STATUS INBOX (MESSAGES)",
                                     "FETCH 1 FLAGS", "UID FETCH 1 FLAGS", "ENABLE CONDSTORE", "IDLE", "NAMESPACE"])
def test_commands_before_login_get_bad(imap: Sessions, command: str) -> None:
    """RFC 3501 6: a command not valid in the current state is answered with BAD (or NO), never run."""
    assert imap.anonymous().command(command).status in ("BAD", "NO")


def test_commands_without_a_selected_mailbox_get_bad_and_login_twice_fails(imap: Sessions) -> None:
    conn = imap.login()
    for command in ("FETCH 1 FLAGS", "STORE 1 +FLAGS \\Seen", "SEARCH ALL", "COPY 1 INBOX", "MOVE 1 INBOX",
                    "EXPUNGE", "UID EXPUNGE 1", "CLOSE", "UNSELECT", "CHECK", "UID SEARCH ALL"):
        assert conn.command(command).status == "BAD", command
    assert conn.command("LOGIN x y").status in ("BAD", "NO")
    assert conn.command("AUTHENTICATE PLAIN").status in ("BAD", "NO")


def test_syntax_errors_are_bad_and_the_connection_goes_on(imap: Sessions) -> None:
    conn = imap.login()
    box = imap.mailbox(conn, message(1))
    conn.select(box)
    for command in ("FROBNICATE", "NOOP extra", "SELECT", 'SELECT "unterminated', "FETCH 1 FOO", "FETCH 0 FLAGS",
                    "FETCH 1 BODY[MIME]", "FETCH 1 BODY[1.FOO]", "FETCH 1 BODY[]<0.0>", "STORE 1 FLAGS (\\Recent)",
                    "STORE 1 XFLAGS (a)", "SEARCH FOO", "SEARCH ()", "SEARCH ON 32-Jan-2000", "UID FOO 1",
                    f"STATUS {box} (FOO)", f"STATUS {box} ()", "FETCH 1 (FLAGS"):
        assert conn.command(command).status == "BAD", command
    conn.send(b"+tag NOOP\r\n")  # not a valid tag: an untagged BAD
    assert conn.readline().startswith(b"* BAD")
    conn.send(b"t1 NOOP\n")  # a bare LF is not a line end the grammar knows
    assert conn.readline().startswith(b"t1 BAD")
    assert conn.command("NOOP").status == "OK"


def test_pipelined_commands_are_answered_in_order(imap: Sessions) -> None:
    """imaptest pipelines: several commands in one write, each answered under its own tag, in order."""
    conn = imap.login()
    box = imap.mailbox(conn, message(1))
    data = message(2)
    conn.send(f"p1 SELECT {box}\r\np2 APPEND {box} {{{len(data)}+}}\r\n".encode() + data
              + b"\r\np3 FETCH 1:* UID\r\np4 NOOP\r\n")
    replies = [conn.read_until(tag) for tag in ("p1", "p2", "p3", "p4")]
    assert [reply.status for reply in replies] == ["OK"] * 4
    assert replies[1].numbers("EXISTS") == [2] and len(replies[2].fetches()) == 2


def test_sequence_numbers_above_exists_are_bad_uids_are_not(imap: Sessions) -> None:
    """RFC 3501 9 (seq-number): a number above EXISTS, or ``*`` in an empty mailbox, gets BAD; UIDs do not."""
    conn = imap.login()
    conn.select(imap.mailbox(conn, message(1)))
    assert conn.command("FETCH 2 FLAGS").status == "BAD"
    assert conn.command("STORE 1:2 +FLAGS \\Seen").status == "BAD"
    reply = conn.command("UID FETCH 1:100 UID")
    assert reply.status == "OK" and len(reply.fetches()) == 1
    conn.select(imap.mailbox(conn))
    assert conn.command("FETCH * FLAGS").status == "BAD"
    reply = conn.command("UID FETCH 1:* FLAGS")
    assert reply.status == "OK" and reply.fetches() == []


def test_unknown_mailboxes_get_no_with_trycreate_where_creating_would_help(imap: Sessions) -> None:
    conn = imap.login()
    assert conn.command("SELECT nowhere").status == "NO"
    assert conn.command("STATUS nowhere (MESSAGES)").status == "NO"
    reply = conn.append("nowhere", message(1))  # RFC 3501 6.3.11: no automatic creation
    assert reply.status == "NO" and b"[TRYCREATE]" in reply.final
    conn.select(imap.mailbox(conn, message(1)))
    reply = conn.command("COPY 1 nowhere")
    assert reply.status == "NO" and b"[TRYCREATE]" in reply.final
    assert conn.command("LIST \"\" nowhere").untagged("LIST") == []


def test_synchronising_and_non_synchronising_literals(imap: Sessions) -> None:
    conn = imap.login()
    box = imap.mailbox(conn)
    tag = conn.next_tag()
    conn.send(f"{tag} SELECT {{{len(box)}}}\r\n".encode())
    assert conn.readline().startswith(b"+")  # RFC 3501 4.3: the client waits for the continuation
    conn.send(box.encode() + b"\r\n")
    assert conn.read_until(tag).status == "OK"
    data = message(1)
    tag = conn.next_tag()
    conn.send(f"{tag} APPEND {box} (\\Seen) {{{len(data)}}}\r\n".encode())
    assert conn.readline().startswith(b"+")
    conn.send(data + b"\r\n")
    reply = conn.read_until(tag)
    assert reply.status == "OK" and reply.numbers("EXISTS") == [1]
    reply = conn.command(b"SEARCH SUBJECT {9+}\r\nmessage 1")  # RFC 7888 LITERAL+
    assert reply.search() == [1]


def test_an_append_above_appendlimit_is_refused_before_the_literal_is_sent(imap: Sessions) -> None:
    """RFC 7889 4: TOOBIG, and with a synchronising literal no continuation request."""
    conn = imap.login()
    limit = int(next(c for c in conn.command("CAPABILITY").untagged("CAPABILITY")[0].split()
                     if c.startswith(b"APPENDLIMIT=")).split(b"=")[1])
    tag = conn.next_tag()
    conn.send(f"{tag} APPEND {imap.mailbox(conn)} {{{limit + 1}}}\r\n".encode())
    line = conn.readline()
    assert line.startswith(tag.encode() + b" NO") and b"[TOOBIG]" in line
    assert conn.command("NOOP").status == "OK"


def test_namespace_id_and_enable(imap: Sessions) -> None:
    conn = imap.login()
    assert conn.command("NAMESPACE").untagged("NAMESPACE") == [b'* NAMESPACE (("" "/")) NIL NIL']
    reply = conn.command('ID ("name" "compliance" "version" NIL)')  # RFC 2971: the server's own ID
    assert reply.status == "OK" and reply.untagged("ID")[0].startswith(b"* ID (")
    reply = conn.command("ENABLE X-UNKNOWN")  # RFC 5161 3.1: unknown capabilities are ignored
    assert reply.status == "OK" and reply.untagged("ENABLED") == [b"* ENABLED"]


# =========================================================================== SELECT, \Recent, STATUS


def test_select_data_and_recent_given_to_one_session_only(imap: Sessions) -> None:
    """imaptest select / append: SELECT's data, and \\Recent given to one session, never to a STATUS."""
    first, second = imap.login(), imap.login()
    box = imap.mailbox(first, message(1), message(2))
    reply = first.select(box)
    assert reply.numbers("EXISTS") == [2] and reply.numbers("RECENT") == [2]
    assert b"[UNSEEN 1]" in reply.text and b"[UIDVALIDITY " in reply.text and b"[UIDNEXT 3]" in reply.text
    assert reply.untagged("FLAGS") and b"[PERMANENTFLAGS (" in reply.text
    assert b"[READ-WRITE]" in reply.final
    reply = second.select(box)
    assert reply.numbers("EXISTS") == [2] and reply.numbers("RECENT") == [0]

    reply = first.append(box, message(3), "(\\Seen \\Flagged)")
    assert reply.numbers("EXISTS") == [3]  # the appending session has the mailbox selected
    reply = second.command("NOOP")
    assert reply.numbers("EXISTS") == [3]
    third = imap.login()
    reply = third.command(f"STATUS {box} (MESSAGES UNSEEN RECENT)")
    assert reply.untagged("STATUS") == [f'* STATUS "{box}" (MESSAGES 3 UNSEEN 2 RECENT 0)'.encode()]
    recent = [b"\\Recent" in flags_of(conn.command("FETCH 3 FLAGS").fetches()[0][1]) for conn in (first, second)]
    assert sorted(recent) == [False, True]
    flags = flags_of(first.command("FETCH 3 FLAGS").fetches()[0][1])
    assert {b"\\Seen", b"\\Flagged"} <= flags


def test_status_reports_every_item(imap: Sessions) -> None:
    conn = imap.login()
    box = imap.mailbox(conn, message(1), message(2))
    conn.select(box)
    conn.command("STORE 1 +FLAGS.SILENT \\Seen")
    conn.command("UNSELECT")
    values = status_values(conn.command(f"STATUS {box} (MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN HIGHESTMODSEQ "
                                        "APPENDLIMIT)"))
    assert list(values) == ["MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "HIGHESTMODSEQ", "APPENDLIMIT"]
    assert values["MESSAGES"] == 2 and values["UNSEEN"] == 1 and values["UIDNEXT"] == 3 and values["RECENT"] == 0
    assert values["HIGHESTMODSEQ"] > 1 and values["APPENDLIMIT"] > 0
    assert b"%d" % values["UIDVALIDITY"] == code_value(conn.select(box), "UIDVALIDITY")


def test_examine_opens_the_mailbox_read_only(imap: Sessions) -> None:
    """RFC 3501 6.3.2: like SELECT but read-only: [READ-ONLY], no \\Seen set by FETCH, \\Recent not taken."""
    conn, other = imap.login(), imap.login()
    box = imap.mailbox(conn, message(1), message(2))
    reply = conn.command(f"EXAMINE {box}")
    assert reply.status == "OK" and b"[READ-ONLY]" in reply.final
    assert reply.numbers("EXISTS") == [2]
    assert b"[PERMANENTFLAGS ()]" in reply.text  # RFC 3501 7.1: nothing may be changed permanently
    reply = conn.command("FETCH 1 BODY[TEXT]")
    assert reply.status == "OK" and b"\\Seen" not in reply.text
    assert b"\\Seen" not in conn.command("FETCH 1 FLAGS").text
    assert conn.command("STORE 1 +FLAGS \\Seen").status == "NO"
    assert conn.command("EXPUNGE").status == "NO"
    assert other.select(box).numbers("RECENT") == [2]  # EXAMINE did not take them


def test_close_after_examine_expunges_nothing_and_examine_takes_condstore(imap: Sessions) -> None:
    conn = imap.login()
    box = imap.mailbox(conn, message(1))
    conn.select(box)
    conn.command("STORE 1 +FLAGS.SILENT \\Deleted")
    reply = conn.command(f"EXAMINE {box} (CONDSTORE)")
    assert reply.status == "OK" and b"[HIGHESTMODSEQ " in reply.text
    assert conn.command("CLOSE").status == "OK"
    assert conn.command(f"STATUS {box} (MESSAGES)").untagged("STATUS") == [f'* STATUS "{box}" (MESSAGES 1)'.encode()]


# =========================================================================== FETCH


def test_fetch_sequence_sets_uid_ranges_and_macros(imap: Sessions) -> None:
    """imaptest fetch: ranges in either order, ``*``, UID ranges past the last UID, FAST/ALL/FULL."""
    conn = imap.login()
    conn.select(imap.mailbox(conn, message(1), message(2), message(3)))
    uids = [uid_of(line) for _, line in conn.command("FETCH 1:3 UID").fetches()]
    assert [seq for seq, _ in conn.command("FETCH 3:1 UID").fetches()] == [1, 2, 3]
    assert [seq for seq, _ in conn.command("FETCH 1,* UID").fetches()] == [1, 3]
    assert [seq for seq, _ in conn.command("FETCH *:1 UID").fetches()] == [1, 2, 3]
    assert [(s, uid_of(r)) for s, r in conn.command(f"UID FETCH {uids[2] + 1}:* UID").fetches()] == [(3, uids[2])]
    conn.command("STORE 2 +FLAGS.SILENT \\Deleted")
    assert conn.command("EXPUNGE").numbers("EXPUNGE") == [2]
    assert [(s, uid_of(r)) for s, r in conn.command(f"UID FETCH {uids[2] + 1}:* UID").fetches()] == [(2, uids[2])]
    assert conn.command(f"UID FETCH {uids[1]} UID").fetches() == []
    ((_, full),) = conn.command("FETCH 1 FULL").fetches()
    for name in (b"FLAGS (", b"INTERNALDATE \"", b"RFC822.SIZE ", b"ENVELOPE (", b"BODY ("):
        assert name in full
    ((_, fast),) = conn.command("FETCH 1 FAST").fetches()
    assert b"ENVELOPE" not in fast and b"RFC822.SIZE" in fast


FETCH_BODY_MESSAGE = crlf("From: User1 <user1@domain.org>\nDate: Sat, 24 Mar 2007 23:00:00 +0200\nSubject: s1\n\n"
                          "body1\n\n")
FETCH_BODY_HEADER = FETCH_BODY_MESSAGE.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"


def test_fetch_body_header_text_partials_and_header_fields(imap: Sessions) -> None:
    """imaptest fetch-body: sections, \\Seen set by BODY[] and RFC822.TEXT only, partial ranges."""
    conn = imap.login()
    conn.select(imap.mailbox(conn, FETCH_BODY_MESSAGE, FETCH_BODY_MESSAGE))
    ((_, line),) = conn.command("FETCH 1 RFC822.HEADER").fetches()
    assert item(line, b"RFC822.HEADER") == FETCH_BODY_HEADER
    ((_, line),) = conn.command("FETCH 1 (FLAGS BODY.PEEK[TEXT])").fetches()
    assert item(line, b"BODY[TEXT]") == b"body1\r\n\r\n" and b"\\Seen" not in flags_of(line)
    reply = conn.command("FETCH 1 RFC822.TEXT")
    assert item(reply.text, b"RFC822.TEXT") == b"body1\r\n\r\n" and b"\\Seen" in flags_of(reply.text)
    reply = conn.command("FETCH 2 BODY[HEADER]")
    assert item(reply.text, b"BODY[HEADER]") == FETCH_BODY_HEADER and b"\\Seen" in flags_of(reply.text)
    ((_, line),) = conn.command("FETCH 2 RFC822").fetches()
    assert item(line, b"RFC822") == FETCH_BODY_MESSAGE
    partials = {b"<0.3>": b"bod", b"<3.3>": b"y1\r", b"<5.2>": b"\r\n", b"<7.5>": b"\r\n", b"<9.1>": b"",
                b"<50.3>": b""}
    for partial, expected in partials.items():
        origin = partial.split(b".")[0] + b">"
        reply = conn.command(b"FETCH 1 BODY.PEEK[TEXT]" + partial)
        assert item(reply.text, b"BODY[TEXT]" + origin) == expected, partial  # RFC 3501 6.4.5 / 7.4.2
    ((_, line),) = conn.command("FETCH 1 BODY.PEEK[]<0.10>").fetches()
    assert item(line, b"BODY[]<0>") == b"From: User"
    fields = {
        "HEADER.FIELDS (FROM)": b"From: User1 <user1@domain.org>\r\n\r\n",
        "HEADER.FIELDS (FROM SUBJECT)": b"From: User1 <user1@domain.org>\r\nSubject: s1\r\n\r\n",
        "HEADER.FIELDS.NOT (DATE)": b"From: User1 <user1@domain.org>\r\nSubject: s1\r\n\r\n",
        "HEADER.FIELDS (XYZ)": b"\r\n",
    }
    for spec, expected in fields.items():
        ((_, line),) = conn.command(f"FETCH 1 BODY.PEEK[{spec}]").fetches()
        assert item(line, f"BODY[{spec}]".encode()) == expected, spec


FETCH_BODY_MIME = IMAPTEST_MIME  # imaptest's fetch-body-mime message, shared with the parser tests
SUBMESSAGE_HEADER = crlf("From: sub@domain.org\nDate: Sun, 12 Aug 2012 12:34:56 +0300\nSubject: submsg\n"
                         'Content-Type: multipart/alternative; boundary="sub1"\n\n')
SUBMESSAGE_TEXT = crlf("Sub MIME prologue\n--sub1\nContent-Type: text/html\n\n<p>Hello world</p>\n\n--sub1\n"
                       "Content-Type: text/plain\n\nHello another world\n\n--sub1--\nSub MIME epilogue\n")
MIME_SECTIONS = {
    "1": b"hello\r\n",
    "1.MIME": b"Content-Type: text/x-myown; charset=us-ascii\r\n\r\n",
    "2": SUBMESSAGE_HEADER + SUBMESSAGE_TEXT,
    "2.MIME": b"Content-Type: message/rfc822\r\n\r\n",
    "2.HEADER": SUBMESSAGE_HEADER,
    "2.HEADER.FIELDS (FROM SUBJECT X-FOO)": b"From: sub@domain.org\r\nSubject: submsg\r\n\r\n",
    "2.HEADER.FIELDS.NOT (FROM SUBJECT X-FOO)": crlf("Date: Sun, 12 Aug 2012 12:34:56 +0300\n"
                                                     'Content-Type: multipart/alternative; boundary="sub1"\n\n'),
    "2.TEXT": SUBMESSAGE_TEXT,
    "2.1": b"<p>Hello world</p>\r\n",
    "2.1.MIME": b"Content-Type: text/html\r\n\r\n",
    "2.2": b"Hello another world\r\n",
    "2.2.MIME": b"Content-Type: text/plain\r\n\r\n",
    "3": b"",
}


def test_fetch_sections_of_nested_multipart_and_message_rfc822(imap: Sessions) -> None:
    """imaptest fetch-body-mime: every section of a multipart holding a message/rfc822 holding a multipart."""
    conn = imap.login()
    conn.select(imap.mailbox(conn, FETCH_BODY_MIME))
    ((_, line),) = conn.command("FETCH 1 BODY.PEEK[TEXT]").fetches()
    assert item(line, b"BODY[TEXT]") == FETCH_BODY_MIME.split(b"\r\n\r\n", 1)[1]
    for spec, expected in MIME_SECTIONS.items():
        ((_, line),) = conn.command(f"FETCH 1 BODY.PEEK[{spec}]").fetches()
        assert item(line, f"BODY[{spec}]".encode()) == expected, spec


RFC822_DIGEST = crlf("""From: user@domain.org
Date: Sat, 24 Mar 2007 23:00:00 +0200
Mime-Version: 1.0
Content-Type: message/rfc822

From: sub@domain.org
Subject: submsg
Content-Type: multipart/digest; boundary="foo"

prologue

--foo

From: m1@example.com
Subject: m1

m1 body

--foo
X-Mime: m2 header

From: m2@example.com
Subject: m2

m2 body

--foo--
""")
RFC822_DIGEST_SECTIONS = {
    "1.HEADER": crlf('From: sub@domain.org\nSubject: submsg\nContent-Type: multipart/digest; boundary="foo"\n\n'),
    "1.1": b"From: m1@example.com\r\nSubject: m1\r\n\r\nm1 body\r\n",
    "1.1.MIME": b"\r\n",
    "1.1.HEADER": b"From: m1@example.com\r\nSubject: m1\r\n\r\n",
    "1.1.TEXT": b"m1 body\r\n",
    "1.2.MIME": b"X-Mime: m2 header\r\n\r\n",
    "1.2.TEXT": b"m2 body\r\n",
}


def test_fetch_sections_inside_message_rfc822_and_digest(imap: Sessions) -> None:
    """imaptest fetch-body-message-rfc822-mime: digest parts default to message/rfc822 (RFC 2046 5.1.5)."""
    conn = imap.login()
    conn.select(imap.mailbox(conn, RFC822_DIGEST))
    ((_, line),) = conn.command("FETCH 1 BODY.PEEK[1]").fetches()
    assert item(line, b"BODY[1]") == RFC822_DIGEST.split(b"\r\n\r\n", 1)[1]
    for spec, expected in RFC822_DIGEST_SECTIONS.items():
        ((_, line),) = conn.command(f"FETCH 1 BODY.PEEK[{spec}]").fetches()
        assert item(line, f"BODY[{spec}]".encode()) == expected, spec
    ((_, line),) = conn.command("FETCH 1 BODYSTRUCTURE").fetches()
    assert line.upper().count(b'("MESSAGE" "RFC822" NIL NIL NIL "7BIT" 46 (NIL "M1"') == 1


def test_body_and_bodystructure_of_a_nested_multipart(imap: Sessions) -> None:
    """imaptest fetch-bodystructure, with the RFC 3501 7.4.2 grammar: 1*body without separators, the
    message/rfc822 part with its envelope, body and line count, extension data in BODYSTRUCTURE only."""
    conn = imap.login()
    conn.select(imap.mailbox(conn, FETCH_BODY_MIME))
    envelope = (b'("Sun, 12 Aug 2012 12:34:56 +0300" "submsg" ((NIL NIL "sub" "domain.org")) '
                b'((NIL NIL "sub" "domain.org")) ((NIL NIL "sub" "domain.org")) NIL NIL NIL NIL NIL)')
    body = (b'(("TEXT" "X-MYOWN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 7 1)("MESSAGE" "RFC822" NIL NIL NIL "7BIT" '
            b'298 ' + envelope + b' (("TEXT" "HTML" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 20 1)'
            b'("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 21 1) "ALTERNATIVE") 18) "MIXED")')
    structure = (b'(("TEXT" "X-MYOWN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 7 1 NIL NIL NIL NIL)'
                 b'("MESSAGE" "RFC822" NIL NIL NIL "7BIT" 298 ' + envelope +
                 b' (("TEXT" "HTML" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 20 1 NIL NIL NIL NIL)'
                 b'("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 21 1 NIL NIL NIL NIL) "ALTERNATIVE" '
                 b'("BOUNDARY" "sub1") NIL NIL NIL) 18 NIL NIL NIL NIL) "MIXED" ("BOUNDARY" "foo bar") NIL NIL NIL)')
    ((_, line),) = conn.command("FETCH 1 (BODY BODYSTRUCTURE)").fetches()
    assert (b"BODY " + body.upper()) in line.upper() and (b"BODYSTRUCTURE " + structure.upper()) in line.upper()


ENVELOPES = [
    (crlf("Message-ID: <msg@id>\nIn-Reply-To: <reply@to.id>\nDate: Sat, 01 Feb 2007 01:02:03 +0200\n"
          "Subject: subject header\nFrom: From Real <fromuser@fromdomain.org>\nTo: To Real <touser@todomain.org>\n"
          "Cc: Cc Real <ccuser@ccdomain.org>\nBcc: Bcc Real <bccuser@bccdomain.org>\n"
          "Sender: Sender Real <senderuser@senderdomain.org>\n"
          "Reply-To: ReplyTo Real <replytouser@replytodomain.org>\n\nbody\n"),
     b'("Sat, 01 Feb 2007 01:02:03 +0200" "subject header" (("From Real" NIL "fromuser" "fromdomain.org")) '
     b'(("Sender Real" NIL "senderuser" "senderdomain.org")) (("ReplyTo Real" NIL "replytouser" '
     b'"replytodomain.org")) (("To Real" NIL "touser" "todomain.org")) (("Cc Real" NIL "ccuser" "ccdomain.org")) '
     b'(("Bcc Real" NIL "bccuser" "bccdomain.org")) "<reply@to.id>" "<msg@id>")'),
    (crlf("Date: Sat, 01 Feb 2007 01:02:03 +0200\nFrom: user@domain\n\nbody\n"),  # sender and reply-to default
     b'("Sat, 01 Feb 2007 01:02:03 +0200" NIL ((NIL NIL "user" "domain")) ((NIL NIL "user" "domain")) '
     b'((NIL NIL "user" "domain")) NIL NIL NIL NIL NIL)'),
    (crlf("Date: Sat, 01 Feb 2007 01:02:03 +0200\nFrom: user@domain (Real Name)\n"
          "To: group: g1@d1.org, g2@d2.org;, group2: g3@d3.org;\n\nbody\n"),  # groups (RFC 3501 7.4.2)
     b'("Sat, 01 Feb 2007 01:02:03 +0200" NIL (("Real Name" NIL "user" "domain")) (("Real Name" NIL "user" '
     b'"domain")) (("Real Name" NIL "user" "domain")) ((NIL NIL "group" NIL)(NIL NIL "g1" "d1.org")'
     b'(NIL NIL "g2" "d2.org")(NIL NIL NIL NIL)(NIL NIL "group2" NIL)(NIL NIL "g3" "d3.org")(NIL NIL NIL NIL)) '
     b'NIL NIL NIL NIL)'),
    (crlf("Date: Sat, 01 Feb 2007 01:02:03 +0200\nFrom: user@domain (Real Name)\nSender: \nReply-To: \n\nbody\n"),
     b'("Sat, 01 Feb 2007 01:02:03 +0200" NIL (("Real Name" NIL "user" "domain")) (("Real Name" NIL "user" '
     b'"domain")) (("Real Name" NIL "user" "domain")) NIL NIL NIL NIL NIL)'),
    (crlf("Date: Sat, 01 Feb 2007 01:02:03 +0200\nFrom: <@route:user@domain>\n\nbody\n"),  # source route
     b'("Sat, 01 Feb 2007 01:02:03 +0200" NIL ((NIL "@route" "user" "domain")) ((NIL "@route" "user" "domain")) '
     b'((NIL "@route" "user" "domain")) NIL NIL NIL NIL NIL)'),
    (crlf('Subject: =?utf-8?q?caf=C3=A9?= "quoted"\n'
          'From: =?iso-8859-1?q?Andr=E9?= <andre@x.org>, "Smith, John" <js@x.org>\n'
          "To: undisclosed-recipients:;\n\nb\n"),
     b'(NIL "=?utf-8?q?caf=C3=A9?= \\"quoted\\"" (("=?iso-8859-1?q?Andr=E9?=" NIL "andre" "x.org")("Smith, John" '
     b'NIL "js" "x.org")) (("=?iso-8859-1?q?Andr=E9?=" NIL "andre" "x.org")("Smith, John" NIL "js" "x.org")) '
     b'(("=?iso-8859-1?q?Andr=E9?=" NIL "andre" "x.org")("Smith, John" NIL "js" "x.org")) '
     b'((NIL NIL "undisclosed-recipients" NIL)(NIL NIL NIL NIL)) NIL NIL NIL NIL)'),
    (crlf("X-Nothing: 1\n\nb\n"), b"(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)"),
]


def test_envelope_defaults_groups_routes_and_encoded_words(imap: Sessions) -> None:
    """imaptest fetch-envelope: Sender/Reply-To default to From, groups, routes; encoded-words as sent."""
    conn = imap.login()
    conn.select(imap.mailbox(conn, *(raw for raw, _ in ENVELOPES)))
    reply = conn.command("FETCH 1:* ENVELOPE")
    assert [line.removesuffix(b"\r\n") for _, line in reply.fetches()] == [
        b"* %d FETCH (ENVELOPE %s)" % (n, envelope) for n, (_, envelope) in enumerate(ENVELOPES, start=1)]


# =========================================================================== SEARCH


def test_search_sequence_and_uid_sets(imap: Sessions) -> None:
    """imaptest search-sets, after an EXPUNGE broke the sequence number = UID mapping."""
    conn = imap.login()
    conn.select(imap.mailbox(conn, *(message(n) for n in range(1, 7))))
    uids = conn.command("UID SEARCH ALL").search()
    conn.command("STORE 2 +FLAGS.SILENT \\Deleted")
    conn.command("EXPUNGE")
    u1, u2, u3, u4, u5, u6 = uids
    uidnext = u6 + 1
    expected = {
        "ALL": [1, 2, 3, 4, 5], "1:3,5": [1, 2, 3, 5], "4:2": [2, 3, 4], f"UID {u1}:{u3},{u5}": [1, 2, 4],
        f"UID {u4}:{u2}": [2, 3], f"1:3 NOT UID {u3}": [1, 3], "NOT 2,4": [1, 3, 5], f"OR 1 UID {u3}": [1, 2],
        "*": [5], "UID *": [5], "6:*": [5], "*:6": [5], f"UID {uidnext}:*": [5], "*:3": [3, 4, 5],
        "1,4,*": [1, 4, 5], "OR (1 2) 5": [5], "(OR 1 2) (OR 2 3)": [2], "NOT (1 2)": [1, 2, 3, 4, 5],
    }
    for criteria, numbers in expected.items():
        assert conn.command(f"SEARCH {criteria}").search() == numbers, criteria
    assert conn.command("UID SEARCH 2:3").search() == [u3, u4]


def test_search_flags_new_old_recent_and_keywords(imap: Sessions) -> None:
    """imaptest search-flags."""
    conn = imap.login()
    conn.select(imap.mailbox(conn, *(message(n) for n in range(1, 6))))
    for seq, flags in ((1, "($$hello)"), (2, "(\\Seen \\Flagged)"), (3, "(\\Answered $$hello)"),
                       (4, "(\\Flagged \\Draft)"), (5, "(\\Deleted \\Answered)")):
        assert conn.command(f"STORE {seq} FLAGS {flags}").status == "OK"
    expected = {
        "ANSWERED": [3, 5], "UNANSWERED": [1, 2, 4], "DELETED": [5], "UNDELETED": [1, 2, 3, 4], "DRAFT": [4],
        "UNDRAFT": [1, 2, 3, 5], "FLAGGED": [2, 4], "UNFLAGGED": [1, 3, 5], "SEEN": [2], "UNSEEN": [1, 3, 4, 5],
        "KEYWORD $$hello": [1, 3], "UNKEYWORD $$hello": [2, 4, 5], "NEW": [1, 3, 4, 5], "OLD": [],
        "RECENT": [1, 2, 3, 4, 5], "UNDELETED UNSEEN": [1, 3, 4], "OR SEEN DRAFT": [2, 4],
    }
    for criteria, numbers in expected.items():
        assert conn.command(f"SEARCH {criteria}").search() == numbers, criteria


def test_search_size_header_and_text(imap: Sessions) -> None:
    """imaptest search-size, search-header, search-body: RFC822.SIZE, field existence, substrings."""
    conn = imap.login()
    sized = [message(1, body="a" * n) for n in (1, 2, 3, 4)]
    headers = [crlf("Subject: hello beautiful world\n\nasdfghjkl zxcvbnm\n"),
               crlf("X-Extra: hello beautiful header\nSubject: qwertyuiop\n\nzxcvbnm\n"),
               crlf("X-Other: 1\n\nbody\n")]
    conn.select(imap.mailbox(conn, *sized, *headers))
    ((_, line),) = conn.command("FETCH 3 RFC822.SIZE").fetches()
    size = number(rb"RFC822.SIZE (\d+)", line)
    expected = {
        f"1:4 SMALLER {size}": [1, 2], f"1:4 LARGER {size}": [4], f"1:4 NOT SMALLER {size}": [3, 4],
        f"1:4 NOT LARGER {size}": [1, 2, 3], f"1:4 NOT SMALLER {size} NOT LARGER {size}": [3],
        f"1:4 OR SMALLER {size} LARGER {size}": [1, 2, 4],
        "SUBJECT hello": [5], 'SUBJECT "eautiful worl"': [5], "5:* HEADER SUBJECT \"\"": [5, 6],
        '5:* NOT HEADER SUBJECT ""': [7], 'HEADER X-EXTRA ""': [6], 'HEADER x-extra "eautiful head"': [6],
        "TEXT asdfghjkl": [5], "BODY asdfghjkl": [5], "TEXT qwertyuiop": [6], "BODY qwertyuiop": [],
        "BODY xcvbn": [5, 6], "TEXT beautiful": [5, 6],
        "CHARSET UTF-8 SUBJECT HELLO": [5], "5:* SUBJECT {5+}\r\nhello": [5],
    }
    for criteria, numbers in expected.items():
        assert conn.command(f"SEARCH {criteria}").search() == numbers, criteria
    reply = conn.command("SEARCH CHARSET X-UNKNOWN ALL")  # RFC 3501 6.4.4: NO [BADCHARSET]
    assert reply.status == "NO" and b"[BADCHARSET" in reply.final


def test_search_sent_dates_use_the_date_header_in_its_own_zone(imap: Sessions) -> None:
    """imaptest search-date: SENT* compare the Date: header's own calendar day, ignoring time and zone."""
    conn = imap.login()
    dates = ["Sat, 24 Mar 2007 23:00:00 +0200", "Sun, 25 Mar 2007 01:00:00 +0300", "Sun, 25 Mar 2007 23:59:00 -0500",
             "Mon, 26 Mar 2007 00:30:00 +1200"]
    conn.select(imap.mailbox(conn, *(message(n, headers=f"Date: {d}\r\n") for n, d in enumerate(dates))))
    expected = {
        "SENTBEFORE 24-Mar-2007": [], "SENTBEFORE 25-Mar-2007": [1], "SENTBEFORE 27-Mar-2007": [1, 2, 3, 4],
        "SENTON 24-Mar-2007": [1], "SENTON 25-Mar-2007": [2, 3], "SENTON 26-Mar-2007": [4],
        "SENTSINCE 25-Mar-2007": [2, 3, 4], "SENTSINCE 27-Mar-2007": [], 'SENTSINCE "26-Mar-2007"': [4],
    }
    for criteria, numbers in expected.items():
        assert conn.command(f"SEARCH {criteria}").search() == numbers, criteria


def test_internaldate_keeps_the_append_zone_and_search_uses_its_day(imap: Sessions) -> None:
    """imaptest search-intdate: ON/BEFORE/SINCE take the internal date's own day (RFC 3501 6.4.4), which
    needs the zone APPEND gave to be kept."""
    conn = imap.login()
    box = imap.mailbox(conn)
    conn.append(box, message(1), '"25-Mar-2007 01:00:00 +0300"')
    conn.append(box, message(2), '" 2-Jan-2007 23:30:00 -0500"')
    conn.select(box)
    reply = conn.command("FETCH 1:2 INTERNALDATE")
    assert [item(line, b"INTERNALDATE") for _, line in reply.fetches()] == [
        b"25-Mar-2007 01:00:00 +0300", b" 2-Jan-2007 23:30:00 -0500"]
    assert conn.command("SEARCH ON 25-Mar-2007").search() == [1]
    assert conn.command("SEARCH ON 2-Jan-2007").search() == [2]
    assert conn.command("SEARCH BEFORE 25-Mar-2007").search() == [2]


def test_search_from_matches_the_envelope_address_despite_comments(imap: Sessions) -> None:
    conn = imap.login()
    raw = crlf("From: <user-from (comment)@ (comment) domain.org>\nTo: user-to@domain.org\n\nbody3\n")
    conn.select(imap.mailbox(conn, raw))
    ((_, line),) = conn.command("FETCH 1 ENVELOPE").fetches()
    assert b'((NIL NIL "user-from" "domain.org"))' in line  # the FROM field of the envelope
    assert conn.command("SEARCH FROM user-from@domain.org").search() == [1]


# =========================================================================== STORE and flags


def test_store_echoes_flags_and_other_sessions_see_changes_at_their_next_command(imap: Sessions) -> None:
    """imaptest store: FETCH FLAGS for every message stored; another session learns at NOOP/CHECK, and two
    sessions' changes to different flags of one message do not overwrite each other."""
    first, second = imap.login(), imap.login()
    box = imap.mailbox(first, *(message(n) for n in range(1, 5)))
    first.select(box)
    second.select(box)
    reply = first.command("STORE 1:3 FLAGS (\\Seen)")
    assert [seq for seq, _ in reply.fetches()] == [1, 2, 3]
    assert all(flags_of(line) - {b"\\Recent"} == {b"\\Seen"} for _, line in reply.fetches())
    reply = second.command("CHECK")
    assert sorted(seq for seq, _ in reply.fetches()) == [1, 2, 3]
    assert all(flags_of(line) == {b"\\Seen"} for _, line in reply.fetches())
    reply = first.command("STORE 2,4 +FLAGS ($$hello $$world)")
    assert [(s, flags_of(r) - {b"\\Recent"}) for s, r in reply.fetches()] == [
        (2, {b"\\Seen", b"$$hello", b"$$world"}), (4, {b"$$hello", b"$$world"})]
    assert first.command("STORE 1 +FLAGS (\\Draft)").status == "OK"
    assert second.command("STORE 1 -FLAGS (\\Seen)").status == "OK"
    first.command("CHECK")
    second.command("CHECK")
    for conn in (first, second):
        ((_, line),) = conn.command("FETCH 1 FLAGS").fetches()
        assert flags_of(line) - {b"\\Recent"} == {b"\\Draft"}


def test_store_silent_uid_store_and_flag_list_forms(imap: Sessions) -> None:
    """RFC 3501 6.4.6: .SILENT sends no FETCH for our own change; UID STORE's FETCH carries the UID
    (6.4.8); the other session still hears of the change."""
    first, second = imap.login(), imap.login()
    box = imap.mailbox(first, message(1), message(2))
    first.select(box)
    second.select(box)
    assert first.command("STORE 1 +FLAGS.SILENT (\\Flagged)").fetches() == []
    reply = second.command("NOOP")
    ((seq, line),) = reply.fetches()
    assert seq == 1 and b"\\Flagged" in flags_of(line)
    uid = uid_of(first.command("FETCH 2 UID").text)
    ((seq, line),) = first.command(f"UID STORE {uid} +FLAGS \\Answered").fetches()
    assert seq == 2 and uid_of(line) == uid and b"\\Answered" in flags_of(line)
    ((_, line),) = first.command("STORE 2 FLAGS ()").fetches()
    assert flags_of(line) - {b"\\Recent"} == set()
    ((_, line),) = first.command("STORE 2 +FLAGS \\Seen \\Draft").fetches()  # flags without parentheses
    assert flags_of(line) - {b"\\Recent"} == {b"\\Seen", b"\\Draft"}


def test_select_flags_lists_the_keywords_in_use(imap: Sessions) -> None:
    conn = imap.login()
    box = imap.mailbox(conn)
    conn.append(box, message(1), "(\\Seen $Label1)")
    ((line,),) = [conn.select(box).untagged("FLAGS")]
    assert b"$Label1" in line


def test_a_new_keyword_is_announced_in_flags_before_it_is_used(imap: Sessions) -> None:
    first, second = imap.login(), imap.login()
    box = imap.mailbox(first, message(1))
    first.select(box)
    second.select(box)
    for conn, command in ((first, "STORE 1 +FLAGS ($Label2)"), (second, "NOOP")):
        reply = conn.command(command)
        flags = [n for n, line in enumerate(reply.lines) if line.upper().startswith(b"* FLAGS ")]
        fetch = next(n for n, line in enumerate(reply.lines) if _FETCH.match(line))
        assert flags and flags[0] < fetch and b"$Label2" in reply.lines[flags[0]], reply.text


def test_keywords_are_case_insensitive(imap: Sessions) -> None:
    conn = imap.login()
    conn.select(imap.mailbox(conn, message(1)))
    conn.command("STORE 1 +FLAGS.SILENT (foo)")
    assert conn.command("SEARCH KEYWORD FOO").search() == [1]
    ((_, line),) = conn.command("STORE 1 -FLAGS (FOO)").fetches()
    assert flags_of(line) - {b"\\Recent"} == set()


# =========================================================================== EXPUNGE, CLOSE, UNSELECT


def test_expunges_across_two_sessions_keep_sequence_numbers_right(imap: Sessions) -> None:
    """imaptest expunge / expunge2: EXPUNGE responses renumber as they go; a FETCH, STORE or SEARCH by
    sequence number never carries them (RFC 3501 7.4.1), NOOP, CHECK and UID commands do."""
    first, second = imap.login(), imap.login()
    box = imap.mailbox(first, *(message(n) for n in range(1, 6)))
    first.select(box)
    second.select(box)
    uids = first.command("UID SEARCH ALL").search()
    view_first, view_second = list(uids), list(uids)

    first.command("STORE 1,3 +FLAGS.SILENT \\Deleted")
    reply = first.command("EXPUNGE")
    view_first = apply_expunges(view_first, reply.numbers("EXPUNGE"))
    assert view_first == [uids[1], uids[3], uids[4]]
    reply = second.command("FETCH 1:5 UID")  # no EXPUNGE now: the numbers sent are still the old ones
    assert reply.untagged("EXPUNGE") == [] and [uid_of(line) for _, line in reply.fetches()] == uids
    assert second.command("SEARCH ALL").search() == [1, 2, 3, 4, 5]
    reply = second.command("NOOP")
    view_second = apply_expunges(view_second, reply.numbers("EXPUNGE"))
    assert view_second == view_first

    first.command("STORE 1 +FLAGS.SILENT \\Deleted")
    view_first = apply_expunges(view_first, first.command("EXPUNGE").numbers("EXPUNGE"))
    reply = second.command(f"UID STORE {uids[3]} FLAGS \\Seen")  # a UID command may bring the EXPUNGE
    view_second = apply_expunges(view_second, reply.numbers("EXPUNGE"))
    ((seq, line),) = reply.fetches()
    assert view_second[seq - 1] == uid_of(line) == uids[3]
    view_second = apply_expunges(view_second, second.command("CHECK").numbers("EXPUNGE"))
    assert view_second == view_first == [uids[3], uids[4]]
    reply = second.command("FETCH 1:* UID")
    assert [uid_of(line) for _, line in reply.fetches()] == view_first


def test_close_expunges_silently_unselect_keeps_deleted_messages(imap: Sessions) -> None:
    conn = imap.login()
    box = imap.mailbox(conn, message(1), message(2), message(3))
    conn.select(box)
    conn.command("STORE 1 +FLAGS.SILENT \\Deleted")
    reply = conn.command("UNSELECT")  # RFC 3691: no expunge
    assert reply.status == "OK" and reply.untagged("EXPUNGE") == []
    conn.select(box)
    uid = conn.command("UID SEARCH 2").search()[0]
    conn.command("STORE 2 +FLAGS.SILENT \\Deleted")
    reply = conn.command(f"UID EXPUNGE {uid}")  # RFC 4315 2.1: only the given UIDs
    assert reply.numbers("EXPUNGE") == [2]
    assert conn.command("SEARCH DELETED").search() == [1]
    reply = conn.command("CLOSE")  # RFC 3501 6.4.2: expunges, and says nothing about it
    assert reply.status == "OK" and reply.untagged("EXPUNGE") == []
    assert conn.command("FETCH 1 FLAGS").status == "BAD"  # back in the authenticated state
    assert conn.command(f"STATUS {box} (MESSAGES)").untagged("STATUS") == [f'* STATUS "{box}" (MESSAGES 1)'.encode()]


def test_a_mailbox_deleted_by_another_session_does_not_drop_the_connection(imap: Sessions) -> None:
    first, second = imap.login(), imap.login()
    box = imap.mailbox(first, message(1), message(2))
    first.select(box)
    assert second.command(f"DELETE {box}").status == "OK"
    for command in ("STORE 1 +FLAGS \\Seen", "FETCH 2 BODY[]"):
        tag = first.next_tag()
        first.send(f"{tag} {command}\r\n".encode())
        lines = []
        try:
            while not (line := first.readline()).startswith(tag.encode() + b" "):
                lines.append(line)
        except EOFError:  # giving up on the session is allowed, but only after saying BYE
            assert any(line.startswith(b"* BYE") for line in lines), (command, lines)
            return
        assert line.split(b" ")[1] in (b"OK", b"NO", b"BAD"), line


# =========================================================================== APPEND, COPY, MOVE


def test_append_with_flags_and_date_reports_appenduid(imap: Sessions) -> None:
    """RFC 3501 6.3.11 and RFC 4315 3: flags and internal date as given, APPENDUID with UIDVALIDITY and UID."""
    conn = imap.login()
    box = imap.mailbox(conn)
    before = status_values(conn.command(f"STATUS {box} (UIDNEXT UIDVALIDITY)"))
    uidvalidity, uidnext = before["UIDVALIDITY"], before["UIDNEXT"]
    reply = conn.append(box, message(1), '(\\Seen \\Flagged $Forwarded) "14-Jul-2024 08:30:00 +0200"')
    assert reply.status == "OK" and code_value(reply, "APPENDUID") == b"%d %d" % (uidvalidity, uidnext)
    conn.select(box)
    ((_, line),) = conn.command("FETCH 1 (UID FLAGS INTERNALDATE RFC822.SIZE)").fetches()
    assert uid_of(line) == uidnext
    assert flags_of(line) - {b"\\Recent"} == {b"\\Seen", b"\\Flagged", b"$Forwarded"}
    when = datetime.strptime(item(line, b"INTERNALDATE").decode().strip(), "%d-%b-%Y %H:%M:%S %z")
    assert when == datetime.strptime("14-Jul-2024 08:30:00 +0200", "%d-%b-%Y %H:%M:%S %z")  # the same instant
    assert number(rb"RFC822.SIZE (\d+)", line) == len(message(1))
    assert conn.append(box, message(2), '"31-Feb-2024 00:00:00 +0000"').status == "BAD"
    assert conn.append(box, message(2), "(\\Recent)").status == "BAD"


def test_copy_keeps_flags_and_internaldate_and_reports_copyuid(imap: Sessions) -> None:
    """imaptest copy; RFC 4315 3 COPYUID: source UIDs in order, destination UIDs matching them."""
    first, second = imap.login(), imap.login()
    source = imap.mailbox(first, *(message(n) for n in range(1, 6)))
    target = imap.mailbox(first)
    first.select(source)
    target_view = second.select(target)
    first.command("STORE 1 FLAGS (\\Seen)")
    first.command("STORE 2 FLAGS (\\Draft \\Flagged)")
    first.command("STORE 4 FLAGS (\\Flagged $$keyword1 $$keyword2)")
    dates = {seq: item(line, b"INTERNALDATE") for seq, line in first.command("FETCH 1:5 INTERNALDATE").fetches()}
    uids = first.command("UID SEARCH 1:2,4").search()
    reply = first.command("COPY 1:2,4 " + target)
    uidnext = int(code_value(target_view, "UIDNEXT"))
    assert reply.status == "OK" and code_value(reply, "COPYUID") == (
        code_value(target_view, "UIDVALIDITY") + b" %d:%d,%d %d:%d" % (*uids, uidnext, uidnext + 2))
    reply = second.command("NOOP")
    assert reply.numbers("EXISTS") == [3] and reply.numbers("RECENT") == [3]
    reply = second.command("FETCH 1:3 (FLAGS INTERNALDATE)")
    assert [flags_of(line) for _, line in reply.fetches()] == [
        {b"\\Recent", b"\\Seen"}, {b"\\Recent", b"\\Draft", b"\\Flagged"},
        {b"\\Recent", b"\\Flagged", b"$$keyword1", b"$$keyword2"}]
    assert [item(line, b"INTERNALDATE") for _, line in reply.fetches()] == [dates[1], dates[2], dates[4]]


def test_move_sends_copyuid_then_expunge_then_ok(imap: Sessions) -> None:
    """imaptest move; RFC 6851 3.3: untagged OK [COPYUID], then EXPUNGE, then the tagged OK."""
    conn = imap.login()
    source = imap.mailbox(conn, message(1), message(2), message(3))
    target = imap.mailbox(conn)
    target_view = conn.select(target)
    uidvalidity, uidnext = code_value(target_view, "UIDVALIDITY"), int(code_value(target_view, "UIDNEXT"))
    conn.select(source)
    uids = conn.command("UID SEARCH ALL").search()
    reply = conn.command(f"MOVE 1 {target}")
    assert reply.status == "OK"
    assert [line.split(b" ")[1] for line in reply.lines] == [b"OK", b"1"]
    assert code_value(reply, "COPYUID") == uidvalidity + b" %d %d" % (uids[0], uidnext)
    assert reply.numbers("EXPUNGE") == [1]
    reply = conn.command(f"UID MOVE {uids[1]} {target}")
    assert code_value(reply, "COPYUID") == uidvalidity + b" %d %d" % (uids[1], uidnext + 1)
    assert reply.numbers("EXPUNGE") == [1]
    assert conn.command(f"MOVE 1 {target}").status == "OK"
    assert conn.command(f"STATUS {target} (MESSAGES)").untagged("STATUS") == [
        f'* STATUS "{target}" (MESSAGES 3)'.encode()]


def test_move_into_the_same_mailbox_gives_the_message_a_new_uid(imap: Sessions) -> None:
    """imaptest move: MOVE into the selected mailbox is a MOVE like any other (RFC 6851 3.1)."""
    conn = imap.login()
    box = imap.mailbox(conn, message(1))
    view = conn.select(box)
    uidvalidity, uidnext = code_value(view, "UIDVALIDITY"), int(code_value(view, "UIDNEXT"))
    uid = conn.command("UID SEARCH ALL").search()[0]
    reply = conn.command(f"MOVE 1 {box}")
    assert reply.status == "OK"
    assert code_value(reply, "COPYUID") == uidvalidity + b" %d %d" % (uid, uidnext)
    assert reply.numbers("EXPUNGE") == [1] and reply.numbers("EXISTS") == [1]


# =========================================================================== mailboxes: LIST, LSUB, CREATE ...


def test_list_patterns_reference_names_and_children(imap: Sessions) -> None:
    """imaptest list: % and * wildcards, reference names, trailing delimiters, \\HasChildren (RFC 3348)."""
    conn = imap.login()
    root = f"list{next(_MAILBOX_NUMBERS)}"
    assert conn.command('LIST "" ""').untagged("LIST") == [b'* LIST (\\Noselect) "/" ""']
    for name in (f"{root}/", f"{root}/test", f"{root}/test2", f"{root}/test3/", f"{root}/test3/test4/",
                 f"{root}/test3/test4/test5"):
        assert conn.command(f"CREATE {name}").status == "OK", name

    def listed(reference: str, pattern: str) -> dict[str, set[bytes]]:
        reply = conn.command(f"LIST {reference} {pattern}")
        assert reply.status == "OK"
        found = {}
        for line in reply.untagged("LIST"):
            match = re.fullmatch(rb'\* LIST \(([^)]*)\) "/" "?([^"]*)"?', line)
            assert match is not None, line
            found[match.group(2).decode()] = set(match.group(1).split())
        return found

    assert set(listed('""', f"{root}/%")) == {f"{root}/test", f"{root}/test2", f"{root}/test3"}
    assert set(listed('""', f"{root}/%/%")) == {f"{root}/test3/test4"}
    every = {f"{root}/test", f"{root}/test2", f"{root}/test3", f"{root}/test3/test4", f"{root}/test3/test4/test5"}
    assert set(listed('""', f"{root}/*")) == every
    assert set(listed(f"{root}/", "*")) == every
    assert set(listed('""', f"{root}/*test4")) == {f"{root}/test3/test4"}
    assert set(listed('""', f"{root}/%3/%")) == {f"{root}/test3/test4"}
    assert set(listed('""', f"{root}/%t*4")) == {f"{root}/test3/test4"}
    found = listed('""', f"{root}*")
    assert b"\\HasChildren" in found[root] and b"\\HasChildren" in found[f"{root}/test3"]
    assert b"\\HasNoChildren" in found[f"{root}/test"]
    assert conn.command(f"DELETE {root}/test2").status == "OK"
    assert f"{root}/test2" not in listed('""', f"{root}/*")
    assert set(listed('""', "INBOX")) == {"INBOX"}


def test_delete_of_a_parent_leaves_a_noselect_name_and_its_children(imap: Sessions) -> None:
    """RFC 3501 6.3.4: a mailbox with inferiors can be deleted, its name stays as \\Noselect; deleting that
    \\Noselect name is an error; INBOX cannot be deleted."""
    conn = imap.login()
    root = imap.mailbox(conn, message(1), prefix="del")
    assert conn.command(f"CREATE {root}/child").status == "OK"
    assert conn.command(f"DELETE {root}").status == "OK"
    reply = conn.command(f'LIST "" {root}*')
    assert f'* LIST (\\Noselect \\HasChildren) "/" "{root}"\r\n'.encode() in reply.lines
    assert f'* LIST (\\HasNoChildren) "/" "{root}/child"\r\n'.encode() in reply.lines
    assert conn.command(f"SELECT {root}").status == "NO"
    assert conn.command(f"DELETE {root}").status == "NO"
    assert conn.command("DELETE INBOX").status == "NO"
    assert conn.command(f"CREATE {root}").status == "OK"  # the name can be a mailbox again
    assert conn.command(f"STATUS {root} (MESSAGES)").untagged("STATUS") == [f'* STATUS "{root}" (MESSAGES 0)'.encode()]


def test_rename_moves_inferiors_and_rename_inbox_empties_it(imap: Sessions) -> None:
    """RFC 3501 6.3.5: inferiors follow a renamed mailbox; RENAME INBOX moves its messages, INBOX stays."""
    conn = imap.login("ines.secretaire")
    root = imap.mailbox(conn, prefix="ren")
    conn.command(f"CREATE {root}/child")
    assert conn.command(f"RENAME {root} {root}x").status == "OK"
    reply = conn.command(f'LIST "" {root}x*')
    assert {line.rsplit(b" ", 1)[1] for line in reply.untagged("LIST")} == {
        f'"{root}x"'.encode(), f'"{root}x/child"'.encode()}
    assert conn.command(f"RENAME {root}x {root}x").status == "NO"
    assert conn.command(f"RENAME {root}none {root}y").status == "NO"
    assert conn.append("INBOX", message(1)).status == "OK"
    before = status_values(conn.command("STATUS INBOX (MESSAGES UIDNEXT)"))
    assert conn.command(f"RENAME INBOX {root}old").status == "OK"
    after = status_values(conn.command("STATUS INBOX (MESSAGES UIDNEXT)"))
    assert after == {"MESSAGES": 0, "UIDNEXT": before["UIDNEXT"]}  # UIDs are never reused
    assert status_values(conn.command(f"STATUS {root}old (MESSAGES)")) == {"MESSAGES": before["MESSAGES"]}


def test_rename_inbox_to_one_of_its_inferiors(imap: Sessions) -> None:
    conn = imap.login("ines.secretaire")
    name = f"INBOX/old{next(_MAILBOX_NUMBERS)}"
    assert conn.command(f"RENAME INBOX {name}").status == "OK"
    assert conn.command(f"STATUS {name} (MESSAGES)").status == "OK"


def test_a_lowercase_inbox_prefix_names_inbox(imap: Sessions) -> None:
    conn = imap.login("ines.secretaire")  # the stray 'inbox' it makes cannot be deleted: keep it from USER
    child = f"kid{next(_MAILBOX_NUMBERS)}"
    assert conn.command(f"CREATE inbox/{child}").status == "OK"
    names = [line.rsplit(b" ", 1)[1].strip(b'"') for line in conn.command('LIST "" %').untagged("LIST")]
    assert b"inbox" not in names and names.count(b"INBOX") == 1
    reply = conn.command('LIST "" INBOX')
    assert b"\\HasChildren" in reply.untagged("LIST")[0]


def test_list_of_a_lowercase_inbox_returns_inbox(imap: Sessions) -> None:
    conn = imap.login()
    reply = conn.command('LIST "" inbox')
    assert [line for line in reply.untagged("LIST") if line.endswith(b' "INBOX"')]


def test_lsub_returns_subscribed_names(imap: Sessions) -> None:
    """imaptest subscribe (the * part): subscriptions survive, match patterns, and go on UNSUBSCRIBE."""
    conn = imap.login()
    root = imap.mailbox(conn, prefix="sub")
    for name in (f"{root}/test", f"{root}/test2/test", f"{root}/test3/test3"):
        assert conn.command(f"CREATE {name}").status == "OK"
        assert conn.command(f"SUBSCRIBE {name}").status == "OK"

    def lsub(pattern: str) -> set[bytes]:
        return {line.rsplit(b" ", 1)[1].strip(b'"') for line in conn.command(f'LSUB "" {pattern}').untagged("LSUB")}

    assert lsub(f"{root}/*") == {f"{root}/test".encode(), f"{root}/test2/test".encode(), f"{root}/test3/test3".encode()}
    assert lsub(f"{root}*test") == {f"{root}/test".encode(), f"{root}/test2/test".encode()}
    assert f"{root}/test".encode() in lsub(f"{root}/%")
    conn.command(f"UNSUBSCRIBE {root}/test")
    assert f"{root}/test".encode() not in lsub(f"{root}/*")


def test_lsub_percent_returns_unsubscribed_parents_as_noselect(imap: Sessions) -> None:
    conn = imap.login()
    root = imap.mailbox(conn, prefix="lsub")
    conn.command(f"CREATE {root}/test2/test")
    conn.command(f"SUBSCRIBE {root}/test2/test")
    reply = conn.command(f'LSUB "" {root}/%')
    assert reply.untagged("LSUB") == [f'* LSUB (\\Noselect) "/" "{root}/test2"'.encode()]


def test_special_use_and_children_list_options(imap: Sessions) -> None:
    """RFC 6154 and RFC 3348: special-use attributes, LIST (SPECIAL-USE), RETURN (SPECIAL-USE), USEATTR."""
    conn = imap.login()
    reply = conn.command('LIST (SPECIAL-USE) "" *')
    uses = {line.rsplit(b" ", 1)[1].strip(b'"'): line for line in reply.untagged("LIST")}
    assert set(uses) == {b"Sent", b"Drafts", b"Trash", b"Junk", b"Archive"}
    assert b"\\Sent" in uses[b"Sent"] and b"\\Trash" in uses[b"Trash"]
    reply = conn.command('LIST "" % RETURN (SPECIAL-USE CHILDREN)')
    assert any(line.endswith(b'"INBOX"') for line in reply.untagged("LIST"))
    reply = conn.command(f"CREATE use{next(_MAILBOX_NUMBERS)} (USE (\\Frobnicate))")
    assert reply.status == "NO" and b"[USEATTR]" in reply.final


# =========================================================================== CONDSTORE


def test_condstore_select_fetch_store_search_and_status(imap: Sessions) -> None:
    """RFC 7162 3.1: HIGHESTMODSEQ on SELECT (CONDSTORE), MODSEQ on FETCH, UNCHANGEDSINCE/MODIFIED,
    CHANGEDSINCE, SEARCH MODSEQ, STATUS HIGHESTMODSEQ, and MODSEQ in another session's flag updates."""
    first, second = imap.login(condstore=True), imap.login(condstore=True)
    box = imap.mailbox(first, message(1), message(2), message(3))
    reply = first.command(f"SELECT {box} (CONDSTORE)")
    highest = int(code_value(reply, "HIGHESTMODSEQ"))
    second.command(f"SELECT {box} (CONDSTORE)")
    modseqs = {seq: number(rb"MODSEQ \((\d+)\)", line) for seq, line in first.command("FETCH 1:* MODSEQ").fetches()}
    assert max(modseqs.values()) <= highest

    reply = first.command(f"STORE 1 (UNCHANGEDSINCE {modseqs[1]}) +FLAGS (\\Seen)")
    ((_, line),) = reply.fetches()
    changed = number(rb"MODSEQ \((\d+)\)", line)
    assert reply.status == "OK" and changed > highest and b"\\Seen" in flags_of(line)
    reply = first.command(f"STORE 1,2 (UNCHANGEDSINCE {highest}) +FLAGS.SILENT (\\Flagged)")
    assert reply.status == "OK" and code_value(reply, "MODIFIED") == b"1"  # message 1 changed since
    assert [seq for seq, _ in reply.fetches()] == [2]  # the one stored: MODSEQ even with .SILENT
    reply = first.command(f"FETCH 1:* (FLAGS) (CHANGEDSINCE {highest})")
    assert sorted(seq for seq, _ in reply.fetches()) == [1, 2]
    assert all(b"MODSEQ (" in line for _, line in reply.fetches())
    reply = first.command(f"SEARCH MODSEQ {changed}")
    assert reply.search() == [1, 2] and re.search(rb"\(MODSEQ \d+\)", reply.untagged("SEARCH")[0])
    reply = second.command("NOOP")
    assert sorted(seq for seq, _ in reply.fetches()) == [1, 2]
    assert all(b"MODSEQ (" in line for _, line in reply.fetches())
    first.command("UNSELECT")
    assert status_values(first.command(f"STATUS {box} (HIGHESTMODSEQ)"))["HIGHESTMODSEQ"] > changed


def test_a_condstore_enabling_fetch_announces_highestmodseq(imap: Sessions) -> None:
    """RFC 7162 3.1: the first CONDSTORE-enabling command with a mailbox selected gets OK [HIGHESTMODSEQ]."""
    conn = imap.login()
    conn.select(imap.mailbox(conn, message(1)))
    reply = conn.command("FETCH 1 (MODSEQ)")
    assert reply.status == "OK" and b"[HIGHESTMODSEQ " in reply.text
    assert b"[HIGHESTMODSEQ " not in conn.command("FETCH 1 (MODSEQ)").text
    ((_, line),) = conn.command("STORE 1 +FLAGS \\Seen").fetches()
    assert b"MODSEQ (" in line  # CONDSTORE-aware from now on


def test_enable_lists_each_capability_once(imap: Sessions) -> None:
    conn = imap.login()
    reply = conn.command("ENABLE CONDSTORE CONDSTORE")
    assert reply.untagged("ENABLED") == [b"* ENABLED CONDSTORE"]
    assert conn.command("ENABLE CONDSTORE").untagged("ENABLED") == [b"* ENABLED"]


# =========================================================================== IDLE


def test_idle_pushes_flag_changes_new_messages_and_expunges(imap: Sessions) -> None:
    """RFC 2177: while idling, another session's changes arrive unasked; DONE ends it with OK."""
    idler, other = imap.login(), imap.login()
    box = imap.mailbox(idler, message(1), message(2))
    idler.select(box)
    other.select(box)
    tag = idler.next_tag()
    idler.send(f"{tag} IDLE\r\n".encode())
    assert idler.readline().startswith(b"+")

    def wait_for(predicate: Callable[[bytes], bool]) -> bytes:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            line = idler.readline()
            if predicate(line):
                return line
        raise AssertionError("not pushed in time")

    other.command("STORE 1 +FLAGS.SILENT (\\Flagged)")
    assert b"\\Flagged" in wait_for(lambda line: _FETCH.match(line) is not None)
    other.append(box, message(3))
    assert wait_for(lambda line: line.endswith(b" EXISTS\r\n")) == b"* 3 EXISTS\r\n"
    other.command("STORE 2 +FLAGS.SILENT (\\Deleted)")
    other.command("EXPUNGE")
    assert wait_for(lambda line: line.endswith(b" EXPUNGE\r\n")) == b"* 2 EXPUNGE\r\n"
    idler.send(b"DONE\r\n")
    assert idler.read_until(tag).status == "OK"


# =========================================================================== authentication


def test_sasl_ir_and_plain_with_a_continuation(imap: Sessions, running: RunningOperator) -> None:
    """RFC 4959 SASL-IR and RFC 3501 6.2.2: an empty challenge, then the base64 response."""
    conn = imap.anonymous()
    secret = f"\0{address_of(running, 'dr.martin')}\0{password_of(running, 'dr.martin')}".encode()
    tag = conn.next_tag()
    conn.send(f"{tag} AUTHENTICATE PLAIN\r\n".encode())
    assert conn.readline().rstrip(b"\r\n") in (b"+", b"+ ")
    conn.send(base64.b64encode(secret) + b"\r\n")
    reply = conn.read_until(tag)
    assert reply.status == "OK" and b"[CAPABILITY " in reply.final
    assert conn.command("STATUS INBOX (MESSAGES)").status == "OK"


def test_a_failed_login_does_not_tell_whether_the_account_exists(imap: Sessions, running: RunningOperator) -> None:
    conn = imap.anonymous()
    known = conn.command(f'LOGIN {address_of(running, "ines.secretaire")} "not-the-password"')
    unknown = conn.command(f'LOGIN ghost@{DOMAIN} "not-the-password"')
    assert known.status == unknown.status == "NO"
    assert known.final.split(b" ", 1)[1] == unknown.final.split(b" ", 1)[1]
