"""IMAP message commands driven through ``Session.execute`` (no sockets) on a real SQLite store:
FETCH, STORE, SEARCH, COPY, MOVE, EXPUNGE, CLOSE, UNSELECT, CHECK and APPEND, as RFC 3501 and the
extensions (CONDSTORE, UIDPLUS, MOVE, UNSELECT, APPENDLIMIT) say."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mssante_base.annuaire import BalKind, MailboxEntry
from mssante_operator.auth.authenticator import Principal
from mssante_operator.imap import wire
from mssante_operator.imap.handlers import fetch as fetch_handlers  # registers the handlers
from mssante_operator.imap.handlers import messages as _message_handlers  # noqa: F401
from mssante_operator.imap.message import MessageStructure
from mssante_operator.imap.parser import ParseError, parse_command
from mssante_operator.imap.session import ServerContext, Session, State
from mssante_operator.imap.watcher import FolderWatcher
from mssante_operator.store import NewMessage, Store
from mssante_operator.store.folders import FlagMode

ALICE = "alice@hopital.example"
WHEN = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)


def raw_message(n: int, body: bytes | None = None) -> bytes:
    return (
        f"From: Bob <bob@peer.example>\r\nTo: {ALICE}\r\nSubject: CR {n}\r\nMessage-ID: <m{n}@peer.example>\r\n"
        f"Date: Sat, 21 Nov 2026 10:00:00 +0100\r\n\r\n"
    ).encode() + (body if body is not None else f"compte rendu {n}\r\n".encode())


MULTIPART = (
    b"From: bob@peer.example\r\nSubject: pieces\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="xx"\r\n\r\n'
    b"preamble\r\n--xx\r\nContent-Type: text/plain; charset=utf-8\r\n\r\npart one\r\n"
    b"--xx\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n--xx--\r\n"
)


def alice_store(tmp_path: Path) -> Iterator[Store]:
    """A SQLite store with ALICE's account (the body of the ``store`` fixtures of the IMAP handler tests)."""
    store = Store(f"sqlite:///{tmp_path / 'store.db'}", tmp_path / "blobs")
    store.migrate()
    store.folders.ensure_account(ALICE)
    yield store
    store.close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    yield from alice_store(tmp_path)


def put(store: Store, raw: bytes, folder: str = "INBOX", flags: tuple[str, ...] = (), when: datetime = WHEN) -> int:
    message = NewMessage(raw=raw, message_id=None, from_addr="bob@peer.example", subject="s",
                         authentication_results="", received_at=when)
    return store.folders.append(ALICE, folder, message, flags, when)[1]


class Client:
    """One session, with everything it writes collected."""

    def __init__(self, store: Store, append_limit: int = 1 << 20) -> None:
        self.store = store
        self.out = bytearray()
        self.writes: list[int] = []
        ctx = ServerContext(store=store, authenticator=None, watcher=FolderWatcher(store),  # type: ignore[arg-type]
                            hostname="imap.test", append_limit=append_limit)
        self.session = Session(ctx=ctx, write=self._write, peer_ip="127.0.0.1", tls=True)
        self.session.principal = Principal(login=ALICE, mechanism="PLAIN", own=MailboxEntry(ALICE, BalKind.PER))
        self.session.state = State.AUTHENTICATED

    async def _write(self, data: bytes) -> None:
        self.out += data
        self.writes.append(len(data))

    async def select(self, name: str = "INBOX", *, readonly: bool = False, condstore: bool = False) -> None:
        folder = self.store.folders.get(ALICE, name)
        assert folder is not None
        await self.session.select(folder, readonly, condstore)
        self.out.clear()

    async def do(self, line: str | bytes) -> tuple[bytes, bytes]:
        """Run one command: (untagged data, tagged line)."""
        command = parse_command(line if isinstance(line, bytes) else line.encode())
        reply = await self.session.execute(command)
        untagged = bytes(self.out)
        self.out.clear()
        return untagged, reply.line(command.tag)

    async def updates(self) -> bytes:
        await self.session.refresh()
        untagged = bytes(self.out)
        self.out.clear()
        return untagged

    @property
    def uids(self) -> list[int]:
        assert self.session.selected is not None
        return list(self.session.selected.uids)


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())  # type: ignore[arg-type]


def flags_of(store: Store, uid: int, folder: str = "INBOX") -> frozenset[str]:
    found = store.folders.get(ALICE, folder)
    assert found is not None
    return next(m.flags for m in store.folders.messages(found.id) if m.uid == uid)


def modseq_of(store: Store, uid: int) -> int:
    found = store.folders.get(ALICE, "INBOX")
    assert found is not None
    return next(m.modseq for m in store.folders.messages(found.id) if m.uid == uid)


# --------------------------------------------------------------------------- FETCH


def test_fetch_returns_the_items_in_the_order_asked(store: Store) -> None:
    raw = raw_message(1)
    put(store, raw, flags=("\\Flagged", "$Label"))

    async def scenario() -> None:
        client = Client(store)
        await client.select()
        untagged, tagged = await client.do("a FETCH 1 (FLAGS UID RFC822.SIZE INTERNALDATE MODSEQ)")
        modseq = modseq_of(store, 1)
        assert untagged == (
            b"* OK [HIGHESTMODSEQ %d] Highest\r\n" % modseq  # MODSEQ is a CONDSTORE enabling item
            + b'* 1 FETCH (FLAGS ($Label \\Flagged \\Recent) UID 1 RFC822.SIZE %d '
              b'INTERNALDATE "21-Nov-2026 09:00:00 +0000" MODSEQ (%d))\r\n' % (len(raw), modseq)
        )
        assert tagged == b"a OK FETCH completed\r\n"

        structure = MessageStructure.parse(raw)
        untagged, _ = await client.do("b FETCH 1 (ENVELOPE BODYSTRUCTURE BODY)")
        assert untagged == (b"* 1 FETCH (ENVELOPE " + wire.encode(structure.envelope()) + b" BODYSTRUCTURE "
                            + wire.encode(structure.bodystructure(True)) + b" BODY "
                            + wire.encode(structure.bodystructure(False)) + b")\r\n")
        assert b'"CR 1"' in untagged

        untagged, _ = await client.do("c FETCH 1 FAST")
        assert untagged.startswith(b"* 1 FETCH (FLAGS ($Label \\Flagged \\Recent) INTERNALDATE ")

    run(scenario)


def test_uid_fetch_puts_uid_first_and_skips_missing_uids(store: Store) -> None:
    for n in range(3):
        put(store, raw_message(n))

    async def scenario() -> None:
        client = Client(store)
        await client.select()
        untagged, tagged = await client.do("a UID FETCH 2,3:7,99 (FLAGS)")
        assert untagged == b"* 2 FETCH (UID 2 FLAGS (\\Recent))\r\n* 3 FETCH (UID 3 FLAGS (\\Recent))\r\n"
        assert tagged == b"a OK FETCH completed\r\n"
        untagged, tagged = await client.do("b UID FETCH 50:60 (FLAGS)")
        assert (untagged, tagged) == (b"", b"b OK FETCH completed\r\n")
        untagged, _ = await client.do("c UID FETCH 10:* (FLAGS)")  # 10:* always includes the last UID
        assert untagged == b"* 3 FETCH (UID 3 FLAGS (\\Recent))\r\n"

    run(scenario)


def test_sequence_numbers_above_exists_are_bad_but_uids_are_not(store: Store) -> None:
    async def scenario() -> None:
        client = Client(store)
        await client.select()
        assert await client.do("a FETCH 1:* (FLAGS)") == (b"", b"a BAD invalid message sequence number\r\n")
        assert await client.do("b UID FETCH 1:* (FLAGS)") == (b"", b"b OK FETCH completed\r\n")
        put(store, raw_message(1))
        put(store, raw_message(2))
        await client.updates()
        assert (await client.do("c FETCH 3 (UID)"))[1] == b"c BAD invalid message sequence number\r\n"
        assert (await client.do("d FETCH 1,2:3 (UID)"))[1] == b"d BAD invalid message sequence number\r\n"
        assert (await client.do("e STORE 5 +FLAGS (\\Seen)"))[1] == b"e BAD invalid message sequence number\r\n"
        assert (await client.do("f COPY 9 Trash"))[1] == b"f BAD invalid message sequence number\r\n"
        untagged, tagged = await client.do("g FETCH 2:* (UID)")
        assert (untagged, tagged) == (b"* 2 FETCH (UID 2)\r\n", b"g OK FETCH completed\r\n")
        untagged, _ = await client.do("h FETCH * (UID)")
        assert untagged == b"* 2 FETCH (UID 2)\r\n"

    run(scenario)


def test_message_commands_need_a_selected_mailbox(store: Store) -> None:
    async def scenario() -> None:
        client = Client(store)
        for line in ("a FETCH 1 FLAGS", "b STORE 1 +FLAGS (\\Seen)", "c SEARCH ALL", "d COPY 1 Trash",
                     "e MOVE 1 Trash", "f EXPUNGE", "g UID EXPUNGE 1", "h CLOSE", "i UNSELECT", "j CHECK"):
            _, tagged = await client.do(line)
            assert tagged.split()[1] == b"BAD", line

    run(scenario)


def test_body_sections_partials_and_rfc822_items(store: Store) -> None:
    put(store, raw_message(1))
    put(store, MULTIPART)
    structure = MessageStructure.parse(MULTIPART)

    async def scenario() -> None:
        client = Client(store)
        await client.select()
        untagged, _ = await client.do("a FETCH 2 (BODY.PEEK[1] BODY.PEEK[2.MIME] BODY.PEEK[HEADER.FIELDS (subject)])")
        part1, mime2 = structure.section((1,), None), structure.section((2,), "MIME")
        assert untagged == (
            b"* 2 FETCH (BODY[1] {%d}\r\n%s BODY[2.MIME] {%d}\r\n%s BODY[HEADER.FIELDS (subject)] {19}\r\n"
            b"Subject: pieces\r\n\r\n)\r\n" % (len(part1), part1, len(mime2), mime2)
        )
        assert part1 == b"part one"

        untagged, _ = await client.do("b FETCH 1 (BODY.PEEK[]<0.6> BODY.PEEK[TEXT]<3.100> BODY.PEEK[]<5000.10>)")
        assert untagged == (b"* 1 FETCH (BODY[]<0> {6}\r\nFrom:  BODY[TEXT]<3> {13}\r\npte rendu 1\r\n"
                            b" BODY[]<5000> {0}\r\n)\r\n")

        raw = raw_message(1)
        header = raw.split(b"\r\n\r\n", 1)[0]
        untagged, _ = await client.do("c FETCH 1 (RFC822.HEADER RFC822.SIZE)")
        assert untagged == b"* 1 FETCH (RFC822.HEADER {%d}\r\n%s\r\n\r\n RFC822.SIZE %d)\r\n" % (
            len(header) + 4, header, len(raw))
        untagged, _ = await client.do("d FETCH 1 (RFC822)")
        assert untagged.startswith(b"* 1 FETCH (RFC822 {%d}\r\n%s" % (len(raw), raw))
        untagged, _ = await client.do("e FETCH 1 (BODY.PEEK[9] BODY.PEEK[1.HEADER])")  # missing parts: empty
        assert untagged == b"* 1 FETCH (BODY[9] {0}\r\n BODY[1.HEADER] {0}\r\n)\r\n"

    run(scenario)


def test_nul_bytes_are_not_sent_in_literals(store: Store) -> None:
    put(store, raw_message(1, body=b"a\x00b\r\n"))

    async def scenario() -> None:
        client = Client(store)
        await client.select()
        untagged, _ = await client.do("a FETCH 1 (BODY.PEEK[TEXT])")
        assert untagged == b"* 1 FETCH (BODY[TEXT] {5}\r\na\x80b\r\n)\r\n"

    run(scenario)


def test_body_sets_seen_and_reports_the_flags_peek_and_read_only_do_not(store: Store) -> None:
    for n in range(4):
        put(store, raw_message(n))

    async def scenario() -> None:
        client = Client(store)
        await client.select()
        untagged, _ = await client.do("a FETCH 1 (BODY.PEEK[TEXT] RFC822.HEADER)")
        assert b"FLAGS" not in untagged and flags_of(store, 1) == frozenset()

        untagged, _ = await client.do("b FETCH 1 (BODY[TEXT])")
        assert untagged == b"* 1 FETCH (BODY[TEXT] {16}\r\ncompte rendu 0\r\n FLAGS (\\Seen \\Recent))\r\n"
        assert flags_of(store, 1) == {"\\Seen"}
        untagged, _ = await client.do("c FETCH 1 (BODY[TEXT])")  # already \Seen: no FLAGS
        assert b"FLAGS" not in untagged

        untagged, _ = await client.do("d FETCH 2 (FLAGS RFC822.TEXT)")  # FLAGS asked: it shows \Seen
        assert untagged.startswith(b"* 2 FETCH (FLAGS (\\Seen \\Recent) RFC822.TEXT {16}\r\n")
        assert untagged.count(b"FLAGS") == 1
        untagged, _ = await client.do("e UID FETCH 3 (RFC822)")
        assert untagged.endswith(b" FLAGS (\\Seen \\Recent))\r\n") and untagged.startswith(b"* 3 FETCH (UID 3 RFC822")
        assert await client.updates() == b""  # our own changes are not announced again

        reader = Client(store)
        await reader.select(readonly=True)
        untagged, _ = await reader.do("f FETCH 4 (BODY[])")
        assert b"FLAGS" not in untagged and flags_of(store, 4) == frozenset()

    run(scenario)


def test_seen_set_by_fetch_carries_uid_and_modseq_under_condstore(store: Store) -> None:
    put(store, raw_message(1))

    async def scenario() -> None:
        client = Client(store)
        await client.select(condstore=True)
        untagged, _ = await client.do("a FETCH 1 (BODY[TEXT])")
        assert untagged == (b"* 1 FETCH (BODY[TEXT] {16}\r\ncompte rendu 1\r\n FLAGS (\\Seen \\Recent) UID 1 "
                            b"MODSEQ (%d))\r\n" % modseq_of(store, 1))

    run(scenario)


def test_changedsince_returns_only_messages_changed_after_it(store: Store) -> None:
    for n in range(3):
        put(store, raw_message(n))

    async def scenario() -> None:
        client = Client(store)
        await client.select(condstore=True)
        before = modseq_of(store, 3)
        other = Client(store)
        await other.select()
        await other.do("x STORE 2 +FLAGS.SILENT (\\Flagged)")
        after = modseq_of(store, 2)
        assert after > before
        untagged, tagged = await client.do(f"a FETCH 1:* (FLAGS) (CHANGEDSINCE {before})")
        assert untagged == (b"* 2 FETCH (FLAGS (\\Flagged \\Recent) UID 2 MODSEQ (%d))\r\n" % after  # refresh
                            + b"* 2 FETCH (FLAGS (\\Flagged \\Recent) MODSEQ (%d))\r\n" % after)
        assert tagged == b"a OK FETCH completed\r\n"
        untagged, _ = await client.do(f"b UID FETCH 1:* (FLAGS) (CHANGEDSINCE {after})")
        assert untagged == b""

    run(scenario)


def test_a_condstore_enabling_fetch_announces_highestmodseq_once(store: Store) -> None:
    put(store, raw_message(1))

    async def scenario() -> None:
        client = Client(store)
        await client.select()
        untagged, _ = await client.do("a FETCH 1 (FLAGS) (CHANGEDSINCE 1)")
        assert untagged.startswith(b"* OK [HIGHESTMODSEQ %d] " % modseq_of(store, 1))
        assert "CONDSTORE" in client.session.enabled
        untagged, _ = await client.do("b FETCH 1 (MODSEQ)")
        assert b"HIGHESTMODSEQ" not in untagged

    run(scenario)


def test_fetch_by_number_holds_expunges_back_uid_fetch_sends_them(store: Store) -> None:
    for n in range(3):
        put(store, raw_message(n))

    async def scenario() -> None:
        client = Client(store)
        await client.select()
        other = Client(store)
        await other.select()
        await other.do("x STORE 1 +FLAGS.SILENT (\\Deleted)")
        await other.do("y EXPUNGE")

        untagged, tagged = await client.do("a FETCH 1:* (UID)")  # the view still knows the UID
        assert b"EXPUNGE" not in untagged
        assert untagged.endswith(b"* 1 FETCH (UID 1)\r\n* 2 FETCH (UID 2)\r\n* 3 FETCH (UID 3)\r\n")
        # Its data is gone: the others are returned, then NO [EXPUNGEISSUED] (RFC 2180 4.1.2, RFC 5530).
        untagged, tagged = await client.do("b FETCH 1:2 (BODY.PEEK[TEXT])")
        assert untagged == b"* 2 FETCH (BODY[TEXT] {16}\r\ncompte rendu 1\r\n)\r\n"
        assert tagged.startswith(b"b NO [EXPUNGEISSUED] ")

        untagged, _ = await client.do("c UID FETCH 1:* (UID)")
        assert untagged == b"* 1 EXPUNGE\r\n* 1 FETCH (UID 2)\r\n* 2 FETCH (UID 3)\r\n"
        assert client.uids == [2, 3]

    run(scenario)


def test_message_files_are_read_only_when_needed_and_once_per_message(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    for n in range(3):
        put(store, raw_message(n))
    reads: list[str] = []
    original = store.folders.read

    def counting(key: str) -> bytes:
        reads.append(key)
        return original(key)

    monkeypatch.setattr(store.folders, "read", counting)

    async def scenario() -> None:
        client = Client(store)
        await client.select()
        await client.do("a FETCH 1:* (FLAGS UID INTERNALDATE RFC822.SIZE MODSEQ)")
        assert reads == []
        await client.do("b FETCH 1:* (ENVELOPE BODYSTRUCTURE BODY.PEEK[] BODY.PEEK[HEADER] RFC822.HEADER)")
        assert len(reads) == 3 and len(set(reads)) == 3
        await client.do("c SEARCH FLAGGED")
        assert len(reads) == 3
        await client.do("d SEARCH SUBJECT cr")
        assert len(reads) == 6

    run(scenario)


def test_fetch_streams_one_message_at_a_time(store: Store) -> None:
    body = b"".join(b"%05d ligne de compte rendu, assez longue pour peser\r\n" % i for i in range(900))
    for n in range(40):
        put(store, raw_message(n, body=body))

    async def scenario() -> None:
        client = Client(store)
        await client.select()
        untagged, _ = await client.do("a FETCH 1:* (BODY.PEEK[])")
        assert untagged.count(b" FETCH (BODY[] {") == 40
        assert len(client.writes) >= 40
        assert max(client.writes) < 2 * len(raw_message(0, body=body))

    run(scenario)


# --------------------------------------------------------------------------- STORE


def test_store_modes_and_their_fetch_responses(store: Store) -> None:
    for n in range(3):
        put(store, raw_message(n), flags=("\\Seen",))

    async def scenario() -> None:
        client = Client(store)
        await client.select()
        untagged, tagged = await client.do("a STORE 1:2 +FLAGS (\\Flagged $Urgent)")
        assert untagged == (b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Urgent)\r\n"  # a new keyword
                            b"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Urgent \\*)] "
                            b"flags the client may set\r\n"
                            b"* 1 FETCH (FLAGS ($Urgent \\Flagged \\Seen \\Recent))\r\n"
                            b"* 2 FETCH (FLAGS ($Urgent \\Flagged \\Seen \\Recent))\r\n")
        assert tagged == b"a OK STORE completed\r\n"
        untagged, _ = await client.do("b STORE 2 -FLAGS (\\Seen $Urgent)")
        assert untagged == b"* 2 FETCH (FLAGS (\\Flagged \\Recent))\r\n"
        untagged, _ = await client.do("c STORE 3 FLAGS (\\Answered)")
        assert untagged == b"* 3 FETCH (FLAGS (\\Answered \\Recent))\r\n"
        untagged, _ = await client.do("d STORE 3 FLAGS.SILENT ()")
        assert untagged == b"" and flags_of(store, 3) == frozenset()
        untagged, _ = await client.do("e UID STORE 1 +FLAGS.SILENT \\Draft")
        assert untagged == b"" and flags_of(store, 1) == {"\\Draft", "\\Flagged", "\\Seen", "$Urgent"}
        untagged, _ = await client.do("f UID STORE 2:9 +FLAGS (\\Deleted)")
        assert untagged == (b"* 2 FETCH (UID 2 FLAGS (\\Deleted \\Flagged \\Recent))\r\n"
                            b"* 3 FETCH (UID 3 FLAGS (\\Deleted \\Recent))\r\n")
        assert await client.updates() == b""  # no second report of our own changes

        other = Client(store)
        await other.select()
        assert (await other.do("x FETCH 2 (FLAGS)"))[0] == b"* 2 FETCH (FLAGS (\\Deleted \\Flagged))\r\n"

    run(scenario)


def test_another_sessions_flag_change_is_announced_to_this_one(store: Store) -> None:
    put(store, raw_message(1))

    async def scenario() -> None:
        client, other = Client(store), Client(store)
        await client.select()
        await other.select()
        await other.do("x STORE 1 +FLAGS (\\Answered)")
        assert await client.updates() == b"* 1 FETCH (FLAGS (\\Answered \\Recent) UID 1)\r\n"

    run(scenario)


def test_store_in_a_read_only_mailbox_is_refused(store: Store) -> None:
    put(store, raw_message(1))

    async def scenario() -> None:
        client = Client(store)
        await client.select(readonly=True)
        untagged, tagged = await client.do("a STORE 1 +FLAGS (\\Seen)")
        assert untagged == b"" and tagged.startswith(b"a NO ")
        assert flags_of(store, 1) == frozenset()

    run(scenario)


def test_recent_cannot_be_stored_or_appended() -> None:
    with pytest.raises(ParseError):
        parse_command(b"a STORE 1 +FLAGS (\\Recent)")
    with pytest.raises(ParseError):
        parse_command(b"a APPEND INBOX (\\Recent) {1}\r\nx")


def test_condstore_store_reports_modseq_even_when_silent(store: Store) -> None:
    for n in range(3):
        put(store, raw_message(n))

    async def scenario() -> None:
        client = Client(store)
        await client.select(condstore=True)
        untagged, _ = await client.do("a STORE 1,3 +FLAGS.SILENT (\\Deleted)")
        assert untagged == (b"* 1 FETCH (UID 1 MODSEQ (%d))\r\n* 3 FETCH (UID 3 MODSEQ (%d))\r\n"
                            % (modseq_of(store, 1), modseq_of(store, 3)))
        untagged, _ = await client.do("b STORE 2 +FLAGS (\\Seen)")
        assert untagged == b"* 2 FETCH (UID 2 FLAGS (\\Seen \\Recent) MODSEQ (%d))\r\n" % modseq_of(store, 2)
        untagged, _ = await client.do("c STORE 2 +FLAGS.SILENT (\\Seen)")  # nothing changed: nothing said
        assert untagged == b""

    run(scenario)


def test_unchangedsince_failures_are_reported_as_modified(store: Store) -> None:
    for n in range(3):
        put(store, raw_message(n))

    async def scenario() -> None:
        client = Client(store)
        await client.select()
        untagged, _ = await client.do("a STORE 2 +FLAGS.SILENT (\\Flagged)")
        assert untagged == b""
        limit = modseq_of(store, 3)
        untagged, tagged = await client.do(f"b STORE 1:3 (UNCHANGEDSINCE {limit}) +FLAGS.SILENT (\\Seen)")
        assert untagged.startswith(b"* OK [HIGHESTMODSEQ ")  # the first CONDSTORE enabling command
        assert b"* 1 FETCH (UID 1 MODSEQ (" in untagged and b"* 3 FETCH (UID 3 MODSEQ (" in untagged
        assert b"* 2 FETCH" not in untagged
        assert tagged == b"b OK [MODIFIED 2] Conditional STORE failed for some messages\r\n"
        assert flags_of(store, 2) == {"\\Flagged"} and flags_of(store, 1) == {"\\Seen"}

        untagged, tagged = await client.do("c UID STORE 1:* (UNCHANGEDSINCE 1) -FLAGS (\\Seen)")
        assert untagged == b"" and tagged.startswith(b"c OK [MODIFIED 1:3] ")

    run(scenario)


# --------------------------------------------------------------------------- SEARCH


def test_search_by_flags_headers_and_uid(store: Store) -> None:
    put(store, raw_message(1), flags=("\\Seen",))
    put(store, raw_message(2))
    put(store, raw_message(3), flags=("\\Flagged",))

    async def scenario() -> None:
        client = Client(store)
        await client.select()
        assert await client.do("a SEARCH UNSEEN") == (b"* SEARCH 2 3\r\n", b"a OK SEARCH completed\r\n")
        assert (await client.do("b SEARCH SUBJECT \"cr 3\""))[0] == b"* SEARCH 3\r\n"
        assert (await client.do("c SEARCH OR FLAGGED SEEN"))[0] == b"* SEARCH 1 3\r\n"
        assert (await client.do("d SEARCH KEYWORD $Nothing"))[0] == b"* SEARCH\r\n"
        assert (await client.do("e SEARCH 2:* NOT SEEN"))[0] == b"* SEARCH 2 3\r\n"
        assert (await client.do("f SEARCH BODY \"rendu 2\""))[0] == b"* SEARCH 2\r\n"
        assert (await client.do("g SEARCH RECENT"))[0] == b"* SEARCH 1 2 3\r\n"

        await client.do("h STORE 1 +FLAGS.SILENT (\\Deleted)")
        await client.do("i EXPUNGE")
        assert (await client.do("j UID SEARCH ALL"))[0] == b"* SEARCH 2 3\r\n"
        assert (await client.do("k SEARCH ALL"))[0] == b"* SEARCH 1 2\r\n"
        assert (await client.do("l UID SEARCH UID 3:*"))[0] == b"* SEARCH 3\r\n"

    run(scenario)


def test_search_with_modseq_appends_the_highest_modseq(store: Store) -> None:
    for n in range(3):
        put(store, raw_message(n))

    async def scenario() -> None:
        client = Client(store)
        await client.select(condstore=True)
        await client.do("a STORE 2 +FLAGS.SILENT (\\Answered)")
        high = modseq_of(store, 2)
        assert await client.do(f"b SEARCH MODSEQ {high}") == (b"* SEARCH 2 (MODSEQ %d)\r\n" % high,
                                                              b"b OK SEARCH completed\r\n")
        assert (await client.do(f"c UID SEARCH MODSEQ {high + 1}"))[0] == b"* SEARCH\r\n"
        assert (await client.do("d SEARCH MODSEQ 1"))[0] == b"* SEARCH 1 2 3 (MODSEQ %d)\r\n" % high
        assert (await client.do("e SEARCH ALL"))[0] == b"* SEARCH 1 2 3\r\n"

    run(scenario)


def test_search_by_number_holds_expunges_back(store: Store) -> None:
    for n in range(2):
        put(store, raw_message(n))

    async def scenario() -> None:
        client, other = Client(store), Client(store)
        await client.select()
        await other.select()
        await other.do("x STORE 1 +FLAGS.SILENT (\\Deleted)")
        await other.do("y EXPUNGE")
        untagged, _ = await client.do("a SEARCH ALL")
        assert b"EXPUNGE" not in untagged and untagged.endswith(b"* SEARCH 1 2\r\n")
        untagged, _ = await client.do("b UID SEARCH ALL")
        assert untagged.endswith(b"* 1 EXPUNGE\r\n* SEARCH 2\r\n")

    run(scenario)


# --------------------------------------------------------------------------- COPY, MOVE


def test_copy_returns_copyuid_and_needs_an_existing_target(store: Store) -> None:
    for n in range(3):
        put(store, raw_message(n), flags=("\\Seen",))
    archive = store.folders.get(ALICE, "Archive")
    assert archive is not None

    async def scenario() -> None:
        client = Client(store)
        await client.select()
        untagged, tagged = await client.do("a COPY 1,3 Archive")
        assert untagged == b""
        assert tagged == b"a OK [COPYUID %d 1,3 1:2] COPY completed\r\n" % archive.uidvalidity
        assert {m.uid: m.flags for m in store.folders.messages(archive.id)} == {1: {"\\Seen"}, 2: {"\\Seen"}}
        assert (await client.do("b UID COPY 2:3 Archive"))[1] == (
            b"b OK [COPYUID %d 2:3 3:4] COPY completed\r\n" % archive.uidvalidity)
        assert await client.do("c COPY 1 Nowhere") == (b"", b"c NO [TRYCREATE] No such mailbox\r\n")
        assert (await client.do("d UID COPY 40:50 Archive"))[1].startswith(b"d OK ")
        assert (await client.do("e COPY 1 Shared/someone@else.example/INBOX"))[1] == b"e NO No such mailbox\r\n"

    run(scenario)


def test_copy_into_the_selected_mailbox_announces_the_copy(store: Store) -> None:
    put(store, raw_message(1))
    inbox = store.folders.get(ALICE, "INBOX")
    assert inbox is not None

    async def scenario() -> None:
        client = Client(store)
        await client.select()
        untagged, tagged = await client.do("a COPY 1 INBOX")
        assert untagged == b"* 2 EXISTS\r\n* 2 RECENT\r\n"
        assert tagged == b"a OK [COPYUID %d 1 2] COPY completed\r\n" % inbox.uidvalidity

    run(scenario)


def test_move_sends_copyuid_then_expunges(store: Store) -> None:
    for n in range(4):
        put(store, raw_message(n))
    trash = store.folders.get(ALICE, "Trash")
    assert trash is not None

    async def scenario() -> None:
        client = Client(store)
        await client.select()
        untagged, tagged = await client.do("a MOVE 2:3 Trash")
        assert untagged == (b"* OK [COPYUID %d 2:3 1:2] Moved\r\n* 3 EXPUNGE\r\n* 2 EXPUNGE\r\n"
                            % trash.uidvalidity)
        assert tagged == b"a OK MOVE completed\r\n"
        assert client.uids == [1, 4]
        assert await client.updates() == b""
        untagged, _ = await client.do("b UID MOVE 4 Trash")
        assert untagged == b"* OK [COPYUID %d 4 3] Moved\r\n* 2 EXPUNGE\r\n" % trash.uidvalidity
        assert [m.uid for m in store.folders.messages(trash.id)] == [1, 2, 3]
        assert (await client.do("c MOVE 1 Nowhere"))[1] == b"c NO [TRYCREATE] No such mailbox\r\n"
        inbox = store.folders.get(ALICE, "INBOX")
        assert inbox is not None
        untagged, tagged = await client.do("d MOVE 1 INBOX")  # into the same folder: a new UID
        assert untagged == (b"* OK [COPYUID %d 1 5] Moved\r\n* 1 EXPUNGE\r\n* 1 EXISTS\r\n* 1 RECENT\r\n"
                            % inbox.uidvalidity), untagged
        assert tagged == b"d OK MOVE completed\r\n"
        assert client.uids == [5]

        reader = Client(store)
        await reader.select(readonly=True)
        assert (await reader.do("e MOVE 1 Trash"))[1].startswith(b"e NO ")
        assert (await reader.do("f COPY 1 Trash"))[1].startswith(b"f OK [COPYUID ")

    run(scenario)


# --------------------------------------------------------------------------- EXPUNGE, CLOSE, UNSELECT, CHECK


def test_expunge_reports_each_message_with_numbers_that_stay_right(store: Store) -> None:
    for n in range(5):
        put(store, raw_message(n))

    async def scenario() -> None:
        client = Client(store)
        await client.select()
        await client.do("a STORE 1,3,4 +FLAGS.SILENT (\\Deleted)")
        untagged, tagged = await client.do("b EXPUNGE")
        assert untagged == b"* 4 EXPUNGE\r\n* 3 EXPUNGE\r\n* 1 EXPUNGE\r\n"
        assert tagged == b"b OK EXPUNGE completed\r\n"
        assert client.uids == [2, 5]
        assert await client.updates() == b""
        assert (await client.do("c EXPUNGE"))[0] == b""

    run(scenario)


def test_uid_expunge_removes_only_the_given_uids(store: Store) -> None:
    for n in range(3):
        put(store, raw_message(n), flags=("\\Deleted",))

    async def scenario() -> None:
        client = Client(store)
        await client.select()
        untagged, tagged = await client.do("a UID EXPUNGE 2:3")
        assert (untagged, tagged) == (b"* 3 EXPUNGE\r\n* 2 EXPUNGE\r\n", b"a OK EXPUNGE completed\r\n")
        assert client.uids == [1]
        assert await client.do("b UID EXPUNGE 7") == (b"", b"b OK EXPUNGE completed\r\n")

    run(scenario)


def test_expunge_in_a_read_only_mailbox_is_refused(store: Store) -> None:
    put(store, raw_message(1), flags=("\\Deleted",))

    async def scenario() -> None:
        client = Client(store)
        await client.select(readonly=True)
        assert (await client.do("a EXPUNGE"))[1].startswith(b"a NO ")
        assert (await client.do("b UID EXPUNGE 1"))[1].startswith(b"b NO ")
        assert client.uids == [1]

    run(scenario)


def test_expunge_announces_other_sessions_expunges_too(store: Store) -> None:
    for n in range(3):
        put(store, raw_message(n))

    async def scenario() -> None:
        client, other = Client(store), Client(store)
        await client.select()
        await other.select()
        await other.do("x STORE 1 +FLAGS.SILENT (\\Deleted)")
        await other.do("y EXPUNGE")
        await client.do("a STORE 3 +FLAGS.SILENT (\\Deleted)")  # held back: client still has 3 messages
        untagged, _ = await client.do("b EXPUNGE")
        assert untagged == b"* 1 EXPUNGE\r\n* 2 EXPUNGE\r\n"
        assert client.uids == [2]

    run(scenario)


def test_close_expunges_silently_unselect_does_not(store: Store) -> None:
    put(store, raw_message(1), flags=("\\Deleted",))
    put(store, raw_message(2))
    inbox = store.folders.get(ALICE, "INBOX")
    assert inbox is not None

    async def scenario() -> None:
        client = Client(store)
        await client.select()
        assert await client.do("a UNSELECT") == (b"", b"a OK UNSELECT completed\r\n")
        assert client.session.state is State.AUTHENTICATED and client.session.selected is None
        assert len(store.folders.messages(inbox.id)) == 2

        await client.select(readonly=True)
        assert await client.do("b CLOSE") == (b"", b"b OK CLOSE completed\r\n")
        assert len(store.folders.messages(inbox.id)) == 2

        await client.select()
        assert await client.do("c CLOSE") == (b"", b"c OK CLOSE completed\r\n")
        assert client.session.state is State.AUTHENTICATED
        assert [m.uid for m in store.folders.messages(inbox.id)] == [2]

    run(scenario)


def test_check_is_ok_and_sends_pending_updates(store: Store) -> None:
    async def scenario() -> None:
        client = Client(store)
        await client.select()
        put(store, raw_message(1))
        assert await client.do("a CHECK") == (b"* 1 EXISTS\r\n* 1 RECENT\r\n", b"a OK CHECK completed\r\n")

    run(scenario)


def test_large_sets_go_to_the_store_in_batches(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each store call is one SQL IN list (PostgreSQL takes 65535 parameters): big sets are split."""
    monkeypatch.setattr(fetch_handlers, "UID_BATCH", 2)
    for n in range(5):
        put(store, raw_message(n))
    archive = store.folders.get(ALICE, "Archive")
    assert archive is not None

    async def scenario() -> None:
        client = Client(store)
        await client.select()
        untagged, _ = await client.do("a FETCH 1:* (BODY[HEADER.FIELDS (Subject)])")
        assert untagged.count(b"FLAGS (\\Seen \\Recent)") == 5
        untagged, _ = await client.do("b STORE 1:* +FLAGS (\\Deleted)")
        assert untagged.count(b"FETCH (FLAGS (\\Deleted \\Seen \\Recent))") == 5
        assert (await client.do("c UID COPY 1:* Archive"))[1] == (
            b"c OK [COPYUID %d 1:5 1:5] COPY completed\r\n" % archive.uidvalidity)
        untagged, _ = await client.do("d UID EXPUNGE 2:4")
        assert untagged == b"* 4 EXPUNGE\r\n* 3 EXPUNGE\r\n* 2 EXPUNGE\r\n"
        assert client.uids == [1, 5]

    run(scenario)


# --------------------------------------------------------------------------- APPEND


def append_line(tag: str, mailbox: str, message: bytes, extra: str = "") -> bytes:
    extra = f" {extra}" if extra else ""
    return f"{tag} APPEND {mailbox}{extra} {{{len(message)}}}\r\n".encode() + message


def test_append_stores_flags_date_and_summary(store: Store) -> None:
    sent = store.folders.get(ALICE, "Sent")
    assert sent is not None
    message = raw_message(7)

    async def scenario() -> None:
        client = Client(store)
        line = append_line("a", "Sent", message, '(\\Seen $Sent) "21-Nov-2026 10:00:00 +0100"')
        untagged, tagged = await client.do(line)
        assert untagged == b""
        assert tagged == b"a OK [APPENDUID %d 1] APPEND completed\r\n" % sent.uidvalidity
        [meta] = store.folders.messages(sent.id)
        assert meta.flags == {"\\Seen", "$Sent"} and meta.internaldate == WHEN and meta.size == len(message)
        await client.do('s SELECT "Sent"')
        untagged, _ = await client.do("f FETCH 1 INTERNALDATE")
        assert untagged == b'* 1 FETCH (INTERNALDATE "21-Nov-2026 10:00:00 +0100")\r\n'  # the zone it came with
        await client.do("u UNSELECT")
        assert store.folders.read(meta.blob_key) == message
        [listed] = store.list_messages(ALICE, "Sent")
        assert (listed.subject, listed.message_id, listed.from_addr) == ("CR 7", "<m7@peer.example>",
                                                                         "Bob <bob@peer.example>")

        before = datetime.now(UTC)
        _, tagged = await client.do(append_line("b", "Sent", message))
        assert tagged == b"b OK [APPENDUID %d 2] APPEND completed\r\n" % sent.uidvalidity
        meta = store.folders.messages(sent.id)[1]
        assert meta.flags == frozenset() and before.replace(microsecond=0) <= meta.internaldate

    run(scenario)


def test_append_refusals(store: Store) -> None:
    async def scenario() -> None:
        client = Client(store, append_limit=100)
        assert await client.do(append_line("a", "Nowhere", b"x")) == (b"", b"a NO [TRYCREATE] No such mailbox\r\n")
        _, tagged = await client.do(append_line("b", "INBOX", b"x" * 101))
        assert tagged == b"b NO [TOOBIG] The message is larger than 100 octets\r\n"
        _, tagged = await client.do(append_line("c", "INBOX", b""))
        assert tagged.startswith(b"c NO ")
        assert (await client.do(append_line("d", "INBOX", b"x" * 100)))[1].startswith(b"d OK [APPENDUID ")
        _, tagged = await client.do(append_line("e", "Shared/someone@else.example/INBOX", b"x"))
        assert tagged == b"e NO No such mailbox\r\n"

    run(scenario)


def test_append_to_the_selected_mailbox_is_announced_before_the_reply(store: Store) -> None:
    put(store, raw_message(1))
    inbox = store.folders.get(ALICE, "INBOX")
    assert inbox is not None

    async def scenario() -> None:
        client = Client(store)
        await client.select()
        untagged, tagged = await client.do(append_line("a", "inbox", raw_message(2), "(\\Flagged)"))
        assert untagged == b"* 2 EXISTS\r\n* 2 RECENT\r\n"
        assert tagged == b"a OK [APPENDUID %d 2] APPEND completed\r\n" % inbox.uidvalidity
        assert (await client.do("b FETCH 2 (FLAGS)"))[0] == b"* 2 FETCH (FLAGS (\\Flagged \\Recent))\r\n"

    run(scenario)


def test_flag_changes_by_the_store_directly_reach_the_session(store: Store) -> None:
    """A change made outside any session (delivery, another process) is seen at the next command."""
    put(store, raw_message(1))
    inbox = store.folders.get(ALICE, "INBOX")
    assert inbox is not None

    async def scenario() -> None:
        client = Client(store)
        await client.select()
        store.folders.store_flags(inbox.id, [1], FlagMode.ADD, ["\\Seen"])
        untagged, _ = await client.do("a UID FETCH 1 (FLAGS)")
        assert untagged == b"* 1 FETCH (FLAGS (\\Seen \\Recent) UID 1)\r\n* 1 FETCH (UID 1 FLAGS (\\Seen \\Recent))\r\n"

    run(scenario)


# --------------------------------------------------------------------------- \Recent, keywords, names


def test_examine_reports_recent_messages_without_claiming_them(store: Store) -> None:
    """RFC 3501 6.3.2: EXAMINE does not clear \\Recent, but it reports it (EXISTS/RECENT as SELECT)."""
    put(store, raw_message(1))
    put(store, raw_message(2))

    async def scenario() -> None:
        reader = Client(store)
        untagged, tagged = await reader.do("a EXAMINE INBOX")
        assert b"* 2 RECENT\r\n" in untagged and b"[READ-ONLY]" in tagged
        assert (await reader.do("b FETCH 1 (FLAGS)"))[0] == b"* 1 FETCH (FLAGS (\\Recent))\r\n"
        put(store, raw_message(3))
        assert await reader.updates() == b"* 3 EXISTS\r\n* 3 RECENT\r\n"
        writer = Client(store)
        untagged, _ = await writer.do("c SELECT INBOX")
        assert b"* 3 RECENT\r\n" in untagged  # EXAMINE left them \Recent for the first SELECT
        untagged, _ = await Client(store).do("d EXAMINE INBOX")
        assert b"* 0 RECENT\r\n" in untagged  # now claimed

    run(scenario)


def test_a_message_appended_while_select_reads_is_recent_in_one_session_only(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """SELECT claims \\Recent only up to what its view holds: a message appended between the read and
    the claim must not be claimed unseen (nobody would see it \\Recent), nor be \\Recent twice."""
    put(store, raw_message(1))
    read_index = store.folders.index
    appended: list[int] = []

    def index_then_a_delivery(folder_id: int) -> object:
        found = read_index(folder_id)
        if not appended:
            appended.append(put(store, raw_message(2)))
        return found

    monkeypatch.setattr(store.folders, "index", index_then_a_delivery)

    async def scenario() -> None:
        first, second = Client(store), Client(store)
        await first.select()
        await second.select()
        assert first.session.selected is not None and second.session.selected is not None
        assert first.uids == [1] and second.uids == [1, 2]
        assert first.session.selected.recent & second.session.selected.recent == set()
        assert first.session.selected.recent | second.session.selected.recent == {1, 2}

    run(scenario)


def test_a_message_appended_while_refresh_reads_keeps_its_recent_flag(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """The mirror gap: refresh claims only what it has read, so a message appended just after its read
    is claimed (and shown \\Recent) by the next refresh, not claimed unseen and lost."""
    put(store, raw_message(1))
    read_changes = store.folders.changes
    appended: list[int] = []

    def changes_then_a_delivery(folder_id: int, seen: tuple[int, int], *, force: bool = False) -> object:
        found = read_changes(folder_id, seen, force=force)
        if not appended:
            appended.append(put(store, raw_message(3)))
        return found

    async def scenario() -> None:
        client = Client(store)
        await client.select()
        put(store, raw_message(2))
        monkeypatch.setattr(store.folders, "changes", changes_then_a_delivery)
        assert await client.updates() == b"* 2 EXISTS\r\n* 2 RECENT\r\n"
        assert await client.updates() == b"* 3 EXISTS\r\n* 3 RECENT\r\n"
        assert client.session.selected is not None and client.session.selected.recent == {1, 2, 3}

    run(scenario)


@pytest.mark.parametrize("command", ["a FETCH 1 (FLAGS)", "a STORE 1:2 +FLAGS (\\Seen)"])
def test_a_keyword_added_meanwhile_is_announced_before_a_response_shows_it(
        store: Store, monkeypatch: pytest.MonkeyPatch, command: str) -> None:
    """RFC 3501 7.2.6: FLAGS (and PERMANENTFLAGS) name a keyword before any FETCH response shows it,
    also when another session added it after this command's refresh."""
    put(store, raw_message(1), flags=("\\Seen",))
    put(store, raw_message(2))
    inbox = store.folders.get(ALICE, "INBOX")
    assert inbox is not None
    read_metas = store.folders.metas

    def metas_after_another_sessions_store(folder_id: int, uids: list[int]) -> dict:
        store.folders.store_flags(inbox.id, [1], FlagMode.ADD, ["$Label7"])
        return read_metas(folder_id, uids)

    async def scenario() -> None:
        client = Client(store)
        await client.select()
        monkeypatch.setattr(store.folders, "metas", metas_after_another_sessions_store)
        untagged, tagged = await client.do(command)
        assert b" OK " in tagged
        first_use = untagged.index(b"$Label7")
        assert untagged.startswith(b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Label7)\r\n"
                                   b"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Label7 \\*)]")
        assert first_use < untagged.index(b"FETCH")

    run(scenario)


def test_names_that_are_not_modified_utf7_get_no_and_list_answers_nothing(store: Store) -> None:
    """As Dovecot: a well-formed name that is not valid modified UTF-7 names no mailbox (NO), and a LIST
    pattern of that kind matches nothing (an empty OK); never BAD."""
    name = '"!#$&\'+,-.0123456789:;<=>?@^_`|}"'

    async def scenario() -> None:
        client = Client(store)
        for line in (f"a SELECT {name}", f"a EXAMINE {name}", f"a STATUS {name} (MESSAGES)", f"a CREATE {name}",
                     f"a DELETE {name}", f"a RENAME INBOX/x {name}", f"a SUBSCRIBE {name}"):
            untagged, tagged = await client.do(line)
            code = b"CANNOT" if line.startswith(("a CREATE", "a RENAME")) else b"NONEXISTENT"
            assert tagged == b"a NO [%s] Mailbox name is not valid modified UTF-7\r\n" % code, line
            assert untagged == b""
        for line in (f'a LIST "" {name}', f"a LIST {name} *", f'a LSUB "" {name}'):
            assert await client.do(line) == (b"", b"a OK " + line.split()[1].encode() + b" completed\r\n")
        await client.select()
        assert (await client.do(f"b COPY 1:* {name}"))[1].startswith(b"b NO ")

    run(scenario)


def test_structures_fetched_again_come_from_the_cache_without_reading_the_file(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stored message never changes: its ENVELOPE and BODYSTRUCTURE, once built, answer the next FETCH
    (of any session of the process) without reading and parsing the file again; a section still reads it."""
    from mssante_operator.imap.handlers import fetch as fetch_module

    monkeypatch.setattr(fetch_module, "STRUCTURES", fetch_module.StructureCache())
    raw = raw_message(1)
    put(store, raw)
    reads: list[str] = []
    read = store.folders.read
    monkeypatch.setattr(store.folders, "read", lambda key: reads.append(key) or read(key))

    async def scenario() -> None:
        client = Client(store)
        await client.select()
        first, _ = await client.do("a FETCH 1 (ENVELOPE BODYSTRUCTURE)")
        again, _ = await client.do("b FETCH 1 (BODYSTRUCTURE ENVELOPE BODY)")
        structure = MessageStructure.parse(raw)
        assert first == (b"* 1 FETCH (ENVELOPE " + wire.encode(structure.envelope()) + b" BODYSTRUCTURE "
                         + wire.encode(structure.bodystructure(True)) + b")\r\n")
        assert again == (b"* 1 FETCH (BODYSTRUCTURE " + wire.encode(structure.bodystructure(True)) + b" ENVELOPE "
                         + wire.encode(structure.envelope()) + b" BODY "
                         + wire.encode(structure.bodystructure(False)) + b")\r\n")
        assert len(reads) == 1
        await client.do("c FETCH 1 (BODYSTRUCTURE BODY.PEEK[HEADER])")
        assert len(reads) == 2  # a section needs the bytes

    run(scenario)


def test_the_structure_cache_keeps_to_its_size() -> None:
    from mssante_operator.imap.handlers.fetch import StructureCache

    cache = StructureCache(max_bytes=2 * (StructureCache.ENTRY_OVERHEAD + 500))  # an entry: ~400 bytes + overhead
    structure = MessageStructure.parse(raw_message(1))
    for key in ("a", "b", "c", "d", "e"):
        cache.put(key, structure)
    assert cache.get("a") is None and cache.get("c") is None and cache.get("d") and cache.get("e")
