"""IMAP extensions beyond IMAP4rev1 and CONDSTORE, each with its RFC's example (issue: IMAP extensions)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from test_imap_handlers import ALICE, Client, alice_store, put, raw_message, run

from mssante_operator.imap.parser import parse_command
from mssante_operator.imap.session import BASE_CAPABILITIES
from mssante_operator.imap.wire import format_internaldate
from mssante_operator.store import Store


@pytest.fixture(name="store")
def _store(tmp_path: Path) -> Iterator[Store]:
    yield from alice_store(tmp_path)


def test_status_size_is_the_sum_of_the_messages_sizes(store: Store) -> None:
    """RFC 8438 3: ``A042 STATUS blurdybloop (SIZE)`` -> ``* STATUS blurdybloop (SIZE 44421)``."""
    store.folders.create(ALICE, "blurdybloop")
    sizes = []
    for n, body in enumerate((b"x" * 44000, b"y" * 21)):
        put(store, raw_message(n, body), "blurdybloop")
        sizes.append(len(raw_message(n, body)))
    assert "STATUS=SIZE" in BASE_CAPABILITIES

    async def scenario() -> None:
        client = Client(store)
        untagged, tagged = await client.do("A042 STATUS blurdybloop (SIZE)")
        assert untagged == f"* STATUS \"blurdybloop\" (SIZE {sum(sizes)})\r\n".encode()
        assert tagged == b"A042 OK STATUS completed\r\n"
        untagged, _ = await client.do("A043 STATUS blurdybloop (MESSAGES SIZE UNSEEN)")
        assert untagged == f"* STATUS \"blurdybloop\" (MESSAGES 2 SIZE {sum(sizes)} UNSEEN 2)\r\n".encode()

    run(scenario)


def test_within_older_and_younger_split_the_mailbox_by_internal_date(store: Store) -> None:
    """RFC 5032 3: ``a1 SEARCH UNSEEN YOUNGER 259200`` finds the unseen messages of the last three days;
    OLDER n and YOUNGER n split every message between them; a zero interval is a syntax error."""
    now = datetime.now(UTC)
    ages = [timedelta(days=10), timedelta(days=4), timedelta(days=2), timedelta(hours=5), timedelta(minutes=1)]
    for n, age in enumerate(ages, start=1):
        put(store, raw_message(n), flags=("\\Seen",) if n == 4 else (), when=now - age)
    assert "WITHIN" in BASE_CAPABILITIES

    async def scenario() -> None:
        client = Client(store)
        await client.select()
        untagged, tagged = await client.do("a1 SEARCH UNSEEN YOUNGER 259200")
        assert (untagged, tagged) == (b"* SEARCH 3 5\r\n", b"a1 OK SEARCH completed\r\n")
        assert (await client.do("a2 SEARCH OLDER 259200"))[0] == b"* SEARCH 1 2\r\n"
        assert (await client.do("a3 SEARCH YOUNGER 259200"))[0] == b"* SEARCH 3 4 5\r\n"
        assert (await client.do("a4 UID SEARCH OLDER 3600 YOUNGER 86400"))[0] == b"* SEARCH 4\r\n"
        assert (await client.do("a5 SEARCH NOT OLDER 60000000"))[0] == b"* SEARCH 1 2 3 4 5\r\n"

    run(scenario)


def test_within_refuses_a_zero_or_missing_interval() -> None:
    from mssante_operator.imap.parser import ParseError

    for line in (b"a SEARCH OLDER 0", b"a SEARCH YOUNGER", b"a SEARCH YOUNGER -5"):
        with pytest.raises(ParseError):
            parse_command(line)


def _smith_mailbox(store: Store) -> None:
    """Eleven messages; FLAGGED ones 2, 5, 10, 11, and 5 is from Smith (RFC 4731's examples then find 2,10:11)."""
    for n in range(1, 12):
        sender = "From: Smith <smith@peer.example>" if n == 5 else "From: Bob <bob@peer.example>"
        raw = raw_message(n).replace(b"From: Bob <bob@peer.example>", sender.encode("ascii"))
        put(store, raw, flags=("\\Flagged",) if n in (2, 5, 10, 11) else ())


def test_esearch_answers_the_rfc_4731_examples(store: Store) -> None:
    _smith_mailbox(store)
    assert "ESEARCH" in BASE_CAPABILITIES

    async def scenario() -> None:
        client = Client(store)
        await client.select()
        criteria = 'FLAGGED SINCE 1-Feb-1994 NOT FROM "Smith"'
        assert await client.do(f"A282 SEARCH RETURN (MIN COUNT) {criteria}") == (
            b'* ESEARCH (TAG "A282") MIN 2 COUNT 3\r\n', b"A282 OK SEARCH completed\r\n")
        assert (await client.do(f"A283 SEARCH RETURN () {criteria}"))[0] == b'* ESEARCH (TAG "A283") ALL 2,10:11\r\n'
        assert (await client.do('A284 SEARCH RETURN (MIN) FLAGGED FROM "Nobody"'))[0] == b'* ESEARCH (TAG "A284")\r\n'
        assert (await client.do("A285 UID SEARCH RETURN (MIN MAX) 1:5000"))[0] == (
            b'* ESEARCH (TAG "A285") UID MIN 1 MAX 11\r\n')
        assert (await client.do("A286 SEARCH RETURN (ALL) 1:500 UNFLAGGED"))[0] == (
            b'* ESEARCH (TAG "A286") ALL 1,3:4,6:9\r\n')
        assert (await client.do("A287 SEARCH RETURN (COUNT) KEYWORD Absent"))[0] == (
            b'* ESEARCH (TAG "A287") COUNT 0\r\n')
        # RFC 7162 3.1.5 with RFC 4731: the highest MODSEQ of what was found.
        untagged, _ = await client.do("A288 SEARCH RETURN (COUNT) MODSEQ 1")
        assert untagged.startswith(b"* OK [HIGHESTMODSEQ ")  # MODSEQ in a search enables CONDSTORE
        assert untagged.splitlines()[-1].startswith(b'* ESEARCH (TAG "A288") COUNT 11 MODSEQ ')
        untagged, tagged = await client.do("A289 SEARCH RETURN (MIN) CHARSET UTF-8 FLAGGED")
        assert untagged == b'* ESEARCH (TAG "A289") MIN 2\r\n' and tagged.startswith(b"A289 OK")

    run(scenario)


def test_esearch_refuses_unknown_result_options() -> None:
    from mssante_operator.imap.parser import ParseError

    with pytest.raises(ParseError):
        parse_command(b"a SEARCH RETURN (SOMETHING) ALL")


def test_multiappend_stores_every_message_or_none(store: Store) -> None:
    """RFC 3502 6: ``A003 APPEND saved-messages (\\Seen) {310} ... {383} ...`` stores both, one APPENDUID set;
    one message over APPENDLIMIT refuses them all and stores nothing."""
    store.folders.create(ALICE, "saved-messages")
    first, second = raw_message(1), raw_message(2) + b"a second one\r\n"
    assert "MULTIAPPEND" in BASE_CAPABILITIES

    async def scenario() -> None:
        client = Client(store, append_limit=1000)
        line = (b"A003 APPEND saved-messages (\\Seen) {%d}\r\n%s (\\Flagged) \"21-Nov-2026 10:00:00 +0100\" {%d}\r\n%s"
                % (len(first), first, len(second), second))
        _, tagged = await client.do(line)
        folder = store.folders.get(ALICE, "saved-messages")
        assert folder is not None
        assert tagged == b"A003 OK [APPENDUID %d 1:2] APPEND completed\r\n" % folder.uidvalidity
        stored = store.folders.messages(folder.id)
        assert [(m.uid, sorted(m.flags)) for m in stored] == [(1, ["\\Seen"]), (2, ["\\Flagged"])]
        assert [store.folders.read(m.blob_key) for m in stored] == [first, second]
        assert stored[1].internaldate.utcoffset().total_seconds() == 3600

        too_big = b"x" * 2000
        line = b"A004 APPEND saved-messages {%d}\r\n%s {%d}\r\n%s" % (len(first), first, len(too_big), too_big)
        _, tagged = await client.do(line)
        assert tagged.startswith(b"A004 NO [TOOBIG]")
        assert len(store.folders.messages(folder.id)) == 2  # the first of that command was not stored either

    run(scenario)


def test_objectid_mailbox_ids_survive_rename_and_email_ids_follow_copies(store: Store) -> None:
    """RFC 8474 4 and 5's examples: CREATE gives [MAILBOXID], SELECT and STATUS repeat it, RENAME keeps it,
    a re-created name gets another; FETCH EMAILID is the same for a message and its copy, THREADID NIL;
    SEARCH EMAILID finds the message."""
    assert "OBJECTID" in BASE_CAPABILITIES

    async def scenario() -> None:
        client = Client(store)
        _, created = await client.do("3 create foo")
        assert created.startswith(b"3 OK [MAILBOXID (M") and created.endswith(b")] CREATE completed\r\n")
        foo = created[len(b"3 OK [MAILBOXID (") : created.index(b")]")]
        _, bar = await client.do("4 create bar")
        assert bar.startswith(b"4 OK [MAILBOXID (") and foo not in bar
        assert (await client.do("5 create foo"))[1].startswith(b"5 NO [ALREADYEXISTS]")
        untagged, _ = await client.do('6 select "foo"')
        assert b"* OK [MAILBOXID (" + foo + b")] Ok\r\n" in untagged
        assert (await client.do("7 status foo (mailboxid)"))[0] == b'* STATUS "foo" (MAILBOXID (' + foo + b"))\r\n"
        await client.do("8 unselect")
        await client.do("9 rename foo renamed")
        assert (await client.do("10 status renamed (mailboxid)"))[0] == (
            b'* STATUS "renamed" (MAILBOXID (' + foo + b"))\r\n")
        await client.do("11 create foo")
        again = (await client.do("12 status foo (mailboxid)"))[0]
        assert foo not in again

        put(store, raw_message(1), when=datetime.now(UTC))
        await client.select()
        fetched, _ = await client.do("28 fetch 1 (emailid threadid)")
        assert fetched.startswith(b"* 1 FETCH (EMAILID (E") and fetched.endswith(b") THREADID NIL)\r\n")
        email = fetched[len(b"* 1 FETCH (EMAILID (") : fetched.index(b") THREADID")]
        await client.do("29 copy 1 renamed")
        assert (await client.do("30 search emailid " + email.decode()))[0] == b"* SEARCH 1\r\n"
        assert (await client.do("31 search threadid T1"))[0] == b"* SEARCH\r\n"
        await client.select("renamed")
        copied, _ = await client.do("32 fetch 1 (emailid)")
        assert copied == b"* 1 FETCH (EMAILID (" + email + b"))\r\n"

    run(scenario)


def test_savedate_is_when_the_message_entered_its_folder(store: Store) -> None:
    """RFC 8514: FETCH SAVEDATE and SEARCH SAVEDBEFORE/SAVEDON/SAVEDSINCE/SAVEDATESUPPORTED; a copy's save date
    is the COPY's time, its INTERNALDATE the original's."""
    long_ago = datetime(2019, 1, 1, 12, 0, tzinfo=UTC)
    put(store, raw_message(1), when=long_ago)
    assert "SAVEDATE" in BASE_CAPABILITIES

    async def scenario() -> None:
        client = Client(store)
        await client.select()
        fetched, _ = await client.do("a FETCH 1 (INTERNALDATE SAVEDATE)")
        today = datetime.now(UTC)
        assert b'INTERNALDATE " 1-Jan-2019 12:00:00 +0000"' in fetched
        assert b'SAVEDATE "' + format_internaldate(today)[:11].encode() in fetched
        day = today.strftime("%d-%b-%Y")
        assert (await client.do(f"b SEARCH SAVEDON {day}"))[0] == b"* SEARCH 1\r\n"
        assert (await client.do(f"c SEARCH SAVEDBEFORE {day}"))[0] == b"* SEARCH\r\n"
        assert (await client.do("d SEARCH SAVEDSINCE 1-Jan-2019 SAVEDATESUPPORTED"))[0] == b"* SEARCH 1\r\n"
        assert (await client.do("e SEARCH BEFORE 2-Jan-2019"))[0] == b"* SEARCH 1\r\n"  # the internal date stays
        await client.do("f COPY 1 Archive")
        await client.select("Archive")
        copied, _ = await client.do("g FETCH 1 (INTERNALDATE SAVEDATE)")
        assert b'INTERNALDATE " 1-Jan-2019 12:00:00 +0000"' in copied
        assert b'SAVEDATE "' + format_internaldate(today)[:11].encode() in copied

    run(scenario)
