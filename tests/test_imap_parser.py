"""IMAP command framing and parsing (RFC 3501 section 9 and the extensions the server announces)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from mssante_operator.imap.commands import (
    AllKey,
    And,
    Append,
    AppendedMessage,
    Authenticate,
    BodySection,
    Capability,
    Check,
    Close,
    Copy,
    Create,
    DateKey,
    DateRelation,
    Delete,
    Enable,
    Examine,
    Expunge,
    Fetch,
    FetchAttribute,
    FlagKey,
    HeaderContains,
    Id,
    Idle,
    List,
    Login,
    Logout,
    Lsub,
    ModSeqKey,
    Move,
    Namespace,
    Noop,
    Not,
    Or,
    Rename,
    Search,
    Select,
    SequenceKey,
    SizeKey,
    StartTLS,
    Status,
    Store,
    StoreMode,
    Subscribe,
    TextContains,
    UnreadableName,
    Unselect,
    Unsubscribe,
)
from mssante_operator.imap.parser import (
    BadCharset,
    CommandFramer,
    Complete,
    LineTooLong,
    LiteralTooBig,
    NeedLiteral,
    ParseError,
    decode_sasl_response,
    is_done_line,
    parse_command,
)
from mssante_operator.imap.sequence import SequenceSet


def seq(text: str) -> SequenceSet:
    return SequenceSet.parse(text)


def parse(line: str | bytes):
    """Parse one command; a str is UTF-8 encoded and gets its CRLF."""
    data = line if isinstance(line, bytes) else line.encode() + b"\r\n"
    return parse_command(data)


def bad(line: str | bytes) -> ParseError:
    with pytest.raises(ParseError) as info:
        parse(line)
    return info.value


def frame(*chunks: bytes) -> bytes:
    """Run lines and literals through a framer the way the network layer does, return the command bytes."""
    framer = CommandFramer()
    event = None
    for chunk in chunks:
        if isinstance(event, NeedLiteral):
            framer.feed_literal(chunk)
            event = None
        else:
            event = framer.feed_line(chunk)
    assert isinstance(event, Complete)
    return event.data


# --------------------------------------------------------------------------- framing


def test_framer_single_line():
    assert CommandFramer().feed_line(b"a1 NOOP\r\n") == Complete(b"a1 NOOP\r\n")


def test_framer_synchronising_literal():
    framer = CommandFramer()
    assert framer.feed_line(b"a1 LOGIN {4}\r\n") == NeedLiteral(4, synchronising=True)
    assert framer.in_command
    framer.feed_literal(b"fred")
    assert framer.feed_line(b" secret\r\n") == Complete(b"a1 LOGIN {4}\r\nfred secret\r\n")
    assert not framer.in_command


def test_framer_non_synchronising_literal():
    framer = CommandFramer()
    assert framer.feed_line(b"a1 LOGIN {4+}\r\n") == NeedLiteral(4, synchronising=False)


def test_framer_several_literals_and_empty_one():
    data = frame(b"a1 LOGIN {4}\r\n", b"fred", b" {0}\r\n", b"", b"\r\n")
    assert data == b"a1 LOGIN {4}\r\nfred {0}\r\n\r\n"
    assert parse(data) == Login("a1", "fred", "")


def test_framer_ignores_brace_inside_quoted_string():
    assert CommandFramer().feed_line(b'a1 LOGIN fred "x{3}"\r\n') == Complete(b'a1 LOGIN fred "x{3}"\r\n')
    assert CommandFramer().feed_line(b'a1 LOGIN fred "x\\"{3}\r\n') == Complete(b'a1 LOGIN fred "x\\"{3}\r\n')


def test_framer_brace_after_closed_quote_is_literal():
    assert CommandFramer().feed_line(b'a1 LOGIN "a\\\\" {3}\r\n') == NeedLiteral(3, True)


def test_framer_bare_lf_is_an_error_and_resets():
    framer = CommandFramer()
    with pytest.raises(ParseError) as info:
        framer.feed_line(b"a1 NOOP\n")
    assert info.value.tag == "a1"
    assert "LF" in info.value.message
    assert framer.feed_line(b"a2 NOOP\r\n") == Complete(b"a2 NOOP\r\n")


def test_framer_unterminated_line():
    with pytest.raises(ParseError):
        CommandFramer().feed_line(b"a1 NOOP")


def test_framer_line_too_long_carries_tag():
    with pytest.raises(LineTooLong) as info:
        CommandFramer(max_line=20).feed_line(b"a7 SEARCH " + b"X" * 20 + b"\r\n")
    assert info.value.tag == "a7"


def test_framer_line_limit_counts_all_lines_of_a_command():
    framer = CommandFramer(max_line=30)
    framer.feed_line(b"a1 LOGIN {1}\r\n")
    framer.feed_literal(b"x")
    with pytest.raises(LineTooLong):
        framer.feed_line(b" " + b"y" * 20 + b"\r\n")
    assert not framer.in_command


@pytest.mark.parametrize(("marker", "synchronising"), [(b"{101}", True), (b"{101+}", False)])
def test_framer_literal_too_big(marker, synchronising):
    framer = CommandFramer(max_literal=100)
    with pytest.raises(LiteralTooBig) as info:
        framer.feed_line(b"t1 APPEND INBOX " + marker + b"\r\n")
    error = info.value
    assert (error.tag, error.size, error.synchronising, error.command) == ("t1", 101, synchronising, "APPEND")
    assert isinstance(error, ParseError)
    assert framer.feed_line(b"t2 NOOP\r\n") == Complete(b"t2 NOOP\r\n")


def test_framer_literal_limit_is_cumulative():
    framer = CommandFramer(max_literal=10)
    framer.feed_line(b"a1 LOGIN {6}\r\n")
    framer.feed_literal(b"123456")
    with pytest.raises(LiteralTooBig):
        framer.feed_line(b" {5}\r\n")


def test_framer_literal_too_big_names_uid_command():
    with pytest.raises(LiteralTooBig) as info:
        CommandFramer(max_literal=1).feed_line(b"a uid SEARCH TEXT {2}\r\n")
    assert info.value.command == "SEARCH"


def test_framer_huge_literal_size_is_too_big():
    with pytest.raises(LiteralTooBig):
        CommandFramer().feed_line(b"a APPEND x {99999999999999999999}\r\n")


def test_framer_misuse():
    framer = CommandFramer()
    with pytest.raises(RuntimeError):
        framer.feed_literal(b"x")
    framer.feed_line(b"a LOGIN {2}\r\n")
    with pytest.raises(RuntimeError):
        framer.feed_line(b"ab\r\n")
    with pytest.raises(ValueError):
        framer.feed_literal(b"abc")


def test_framed_multiappend_parses_every_message():
    """MULTIAPPEND (RFC 3502): literals one after the other, each with its own flags and date."""
    data = frame(b"A003 APPEND saved-messages (\\Seen) {3}\r\n", b"abc", b' "21-Nov-2026 10:00:00 +0100" {2+}\r\n',
                 b"de", b"\r\n")
    command = parse(data)
    assert isinstance(command, Append)
    assert [(m.message, m.flags, m.internal_date is not None) for m in command.messages] == [
        (b"abc", ("\\Seen",), False), (b"de", (), True)]
    with pytest.raises(ParseError):
        parse(frame(b"A004 APPEND box {3}\r\n", b"abc", b" junk\r\n"))


def test_framed_append_parses():
    message = b"From: a@b\r\n\r\nhello\r\n"
    data = frame(b"A003 APPEND saved-messages (\\Seen) {%d+}\r\n" % len(message), message, b"\r\n")
    assert parse(data) == Append("A003", "saved-messages", (AppendedMessage(message, ("\\Seen",)),))


# --------------------------------------------------------------------------- tags, names, separators


@pytest.mark.parametrize("tag", ["a1", "A.001", "x]y", "!#$&'", "*a"[1:], "1", "a-b_c/d"])
def test_valid_tags(tag):
    assert parse(f"{tag} NOOP") == Noop(tag)


@pytest.mark.parametrize(
    "line", ["+a NOOP", "a+b NOOP", "* NOOP", "(a NOOP", 'a"b NOOP', "a{1 NOOP", "a%b NOOP", " NOOP"]
)
def test_invalid_tags_have_no_tag(line):
    assert bad(line).tag is None


@pytest.mark.parametrize("line", ["a1 noop", "a1 NoOp", "a1 NOOP"])
def test_command_names_are_case_insensitive(line):
    assert parse(line) == Noop("a1")


def test_final_crlf_is_optional_for_parse_command():
    assert parse_command(b"a1 NOOP") == Noop("a1")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("", "Empty"),
        ("a1", "Missing command"),
        ("a1 ", "Trailing space"),
        ("a1 FROB", "Unknown command FROB"),
        ("a1  NOOP", "Extra space"),
        ("a1 NOOP ", "trailing space"),
        ("a1 NOOP extra", "extra arguments"),
        ("a1 UID", "Missing"),
        ("a1 UID NOOP", "not a UID command"),
        ("a1 UID LOGIN a b", "not a UID command"),
        ("a1 LOGIN  a b", "Extra space"),
        ("a1 SELECT\tINBOX", "space"),
    ],
)
def test_syntax_errors_carry_tag(line, message):
    error = bad(line)
    assert error.tag == (None if line == "" else "a1")
    assert message.lower() in error.message.lower()


def test_bare_lf_in_parse_command():
    assert "LF" in bad(b"a1 NOOP\n").message


def test_error_message_is_printable():
    message = bad(b"a1 LOGIN a b \xff\x00\r\n").message
    assert message.isprintable() and "\r" not in message


# --------------------------------------------------------------------------- simple commands


@pytest.mark.parametrize(
    ("line", "command"),
    [
        ("a CAPABILITY", Capability("a")),
        ("a NOOP", Noop("a")),
        ("a LOGOUT", Logout("a")),
        ("a STARTTLS", StartTLS("a")),
        ("a NAMESPACE", Namespace("a")),
        ("a CHECK", Check("a")),
        ("a CLOSE", Close("a")),
        ("a UNSELECT", Unselect("a")),
        ("a EXPUNGE", Expunge("a")),
        ("a IDLE", Idle("a")),
    ],
)
def test_commands_without_arguments(line, command):
    assert parse(line) == command
    assert bad(line + " x").tag == "a"


def test_command_names_for_replies():
    assert (Noop.name, Examine.name, Select.name, Fetch.name) == ("NOOP", "EXAMINE", "SELECT", "FETCH")


# --------------------------------------------------------------------------- strings and literals


@pytest.mark.parametrize(
    ("line", "username", "password"),
    [
        ("a LOGIN fred secret", "fred", "secret"),
        ('a LOGIN "fred" "se cret"', "fred", "se cret"),
        ('a LOGIN "f\\"red" "back\\\\slash"', 'f"red', "back\\slash"),
        ('a LOGIN "" ""', "", ""),
        ("a LOGIN fr]ed p]w", "fr]ed", "p]w"),
        ('a LOGIN "jérôme" "pässwörd"', "jérôme", "pässwörd"),
        ("a LOGIN {4}\r\nfred {6+}\r\nsec et", "fred", "sec et"),
        ('a LOGIN {5}\r\nfr"ed "x"', 'fr"ed', "x"),
    ],
)
def test_login_strings(line, username, password):
    assert parse(line) == Login("a", username, password)


def test_login_password_not_in_repr():
    assert "secret" not in repr(parse("a LOGIN fred secret"))


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b'a LOGIN "fr\x00ed" x\r\n', "NUL"),
        (b'a LOGIN "fred x\r\n', "Unterminated"),
        (b'a LOGIN "fr\red" x\r\n', "Unterminated"),
        (b'a LOGIN "fr\\ed" x\r\n', "escape"),
        (b"a LOGIN {4}\r\nfr\x00d x\r\n", "NUL"),
        (b"a LOGIN {10}\r\nfred x\r\n", "shorter"),
        (b"a LOGIN {4}fred x\r\n", "literal"),
        (b"a LOGIN {4}\r\n\xff\xfe\xfd\xfc x\r\n", "UTF-8"),
        (b"a LOGIN fred\r\n", "Missing password"),
        (b"a LOGIN\r\n", "Missing user name"),
        (b"a LOGIN fred a b\r\n", "extra"),
        (b"a LOGIN (fred) x\r\n", "user name"),
        (b"a LOGIN fr%d x\r\n", "space"),
    ],
)
def test_string_errors(line, message):
    assert message.lower() in bad(line).message.lower()


# --------------------------------------------------------------------------- AUTHENTICATE, ID, ENABLE


@pytest.mark.parametrize(
    ("line", "command"),
    [
        ("a AUTHENTICATE PLAIN", Authenticate("a", "PLAIN")),
        ("a authenticate plain", Authenticate("a", "PLAIN")),
        ("a AUTHENTICATE PLAIN AGZyZWQAc2VjcmV0", Authenticate("a", "PLAIN", b"\x00fred\x00secret")),
        ("a AUTHENTICATE EXTERNAL =", Authenticate("a", "EXTERNAL", b"")),
        ("a AUTHENTICATE XOAUTH2 dXNlcj0=", Authenticate("a", "XOAUTH2", b"user=")),
    ],
)
def test_authenticate(line, command):
    assert parse(line) == command


@pytest.mark.parametrize(
    "line", ["a AUTHENTICATE", "a AUTHENTICATE PLAIN AGZ", "a AUTHENTICATE PLAIN ab$c", "a AUTHENTICATE PLAIN =="]
)
def test_authenticate_errors(line):
    assert bad(line).tag == "a"


@pytest.mark.parametrize(
    ("line", "parameters"),
    [
        ("a ID NIL", None),
        ("a ID nil", None),
        ("a ID ()", ()),
        ('a ID ("name" "Thunderbird" "version" "115.0")', (("name", "Thunderbird"), ("version", "115.0"))),
        ('a ID ("name" NIL)', (("name", None),)),
        ('a ID ({4}\r\nname "iPhone Mail")', (("name", "iPhone Mail"),)),
    ],
)
def test_id(line, parameters):
    assert parse(line) == Id("a", parameters)


@pytest.mark.parametrize(
    "line", ["a ID", 'a ID ("name")', "a ID (name x)", 'a ID ("a" "b"', 'a ID ("a" "b" "c")', "a ID NILL"]
)
def test_id_errors(line):
    assert bad(line).tag == "a"


def test_enable():
    assert parse("a ENABLE condstore UTF8=ACCEPT") == Enable("a", ("CONDSTORE", "UTF8=ACCEPT"))


@pytest.mark.parametrize("line", ["a ENABLE", "a ENABLE (CONDSTORE)", 'a ENABLE "CONDSTORE"'])
def test_enable_errors(line):
    assert bad(line).tag == "a"


# --------------------------------------------------------------------------- mailboxes


@pytest.mark.parametrize(
    ("line", "command"),
    [
        ("a SELECT INBOX", Select("a", "INBOX")),
        ("a SELECT inbox", Select("a", "INBOX")),
        ('a SELECT "InBox"', Select("a", "INBOX")),
        ("a SELECT {5}\r\niNbOx", Select("a", "INBOX")),
        ("a SELECT INBOX.Sent", Select("a", "INBOX.Sent")),
        ("a SELECT inbox/sub", Select("a", "inbox/sub")),
        ("a SELECT INBOX (CONDSTORE)", Select("a", "INBOX", condstore=True)),
        ("a SELECT INBOX (condstore)", Select("a", "INBOX", condstore=True)),
        ('a SELECT "~peter/mail/&U,BTFw-/&ZeVnLIqe-"', Select("a", "~peter/mail/台北/日本語")),
        ("a EXAMINE Archive", Examine("a", "Archive")),
        ("a EXAMINE Archive (CONDSTORE)", Examine("a", "Archive", condstore=True)),
    ],
)
def test_select_examine(line, command):
    parsed = parse(line)
    assert parsed == command
    assert parsed.readonly is isinstance(command, Examine)


@pytest.mark.parametrize(
    "line",
    [
        "a SELECT",
        "a SELECT INBOX ()",
        "a SELECT INBOX (QRESYNC (1 2))",
        "a SELECT INBOX CONDSTORE",
        'a SELECT "R\xe9pertoire"',
        "a SELECT a b",
    ],
)
def test_select_errors(line):
    assert bad(line).tag == "a"


@pytest.mark.parametrize("name", ["&Jjo!", "!#$&'+,-.0123456789:;<=>?@^_`|}", "a&", "&AGE-"])
def test_names_that_are_not_modified_utf7_parse_as_unreadable(name):
    """Well-formed IMAP, not valid modified UTF-7: the command parses (NO or an empty LIST follows), not BAD."""
    quoted = '"' + name + '"'
    assert isinstance(parse(f"a SELECT {quoted}").mailbox, UnreadableName)
    assert isinstance(parse(f"a LIST \"\" {quoted}").patterns[0], UnreadableName)
    assert parse(f"a SELECT {quoted}").names_unreadable_mailbox()
    assert not parse("a SELECT R&AOk-pertoire").names_unreadable_mailbox()


@pytest.mark.parametrize(
    ("line", "command"),
    [
        ("a CREATE Drafts", Create("a", "Drafts")),
        ("a CREATE R&AOk-pertoire", Create("a", "Répertoire")),
        ("a CREATE Sent (USE (\\Sent))", Create("a", "Sent", ("\\Sent",))),
        (
            "a CREATE All (use (\\all \\ARCHIVE \\Drafts \\flagged \\Junk \\Trash))",
            Create("a", "All", ("\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Trash")),
        ),
        ("a CREATE X (USE ())", Create("a", "X")),
        ("a CREATE X (USE (\\Important))", Create("a", "X", ("\\Important",))),
        ("a DELETE Drafts", Delete("a", "Drafts")),
        ("a RENAME Old New", Rename("a", "Old", "New")),
        ('a RENAME "a b" {1}\r\nc', Rename("a", "a b", "c")),
        ("a SUBSCRIBE Sent", Subscribe("a", "Sent")),
        ("a UNSUBSCRIBE inbox", Unsubscribe("a", "INBOX")),
    ],
)
def test_mailbox_commands(line, command):
    assert parse(line) == command


@pytest.mark.parametrize(
    "line",
    [
        "a CREATE",
        "a CREATE X (USE (Sent))",
        "a CREATE X (USE \\Sent)",
        "a CREATE X (FOO (\\Sent))",
        "a CREATE X (USE (\\Sent)",
        "a DELETE",
        "a RENAME Old",
        "a SUBSCRIBE a b",
        "a UNSUBSCRIBE",
    ],
)
def test_mailbox_command_errors(line):
    assert bad(line).tag == "a"


@pytest.mark.parametrize(
    ("line", "command"),
    [
        ('a LIST "" *', List("a", "", ("*",))),
        ('a LIST "" ""', List("a", "", ("",))),
        ("a LIST ~/Mail/ %", List("a", "~/Mail/", ("%",))),
        ('a LIST "" "INBOX.%"', List("a", "", ("INBOX.%",))),
        ('a LIST "" foo]*', List("a", "", ("foo]*",))),
        ('a LIST "" &AOk-*', List("a", "", ("é*",))),
        ('a LIST "" {1}\r\n*', List("a", "", ("*",))),
        (
            'a LIST (SPECIAL-USE) "" *',
            List("a", "", ("*",), frozenset({"SPECIAL-USE"}), extended=True),
        ),
        ('a LIST () "" *', List("a", "", ("*",), extended=True)),
        (
            'a LIST "" % RETURN (special-use CHILDREN)',
            List("a", "", ("%",), return_options=frozenset({"SPECIAL-USE", "CHILDREN"}), extended=True),
        ),
        ('a LIST "" % RETURN ()', List("a", "", ("%",), extended=True)),
        ('a LIST "" ("INBOX" Sent*)', List("a", "", ("INBOX", "Sent*"), extended=True)),
        ('a LSUB "" *', Lsub("a", "", "*")),
        ('a LSUB "#news." "comp.mail.*"', Lsub("a", "#news.", "comp.mail.*")),
    ],
)
def test_list_and_lsub(line, command):
    assert parse(line) == command


@pytest.mark.parametrize(
    "line",
    [
        "a LIST",
        'a LIST ""',
        'a LIST (SUBSCRIBED) "" *',
        'a LIST "" * RETURN (STATUS (MESSAGES))',
        'a LIST "" * (CHILDREN)',
        'a LIST "" * RETURN',
        'a LIST "" ()',
        'a LIST "" a(b',
        'a LSUB ""',
    ],
)
def test_list_errors(line):
    assert bad(line).tag == "a"


@pytest.mark.parametrize(
    ("line", "items"),
    [
        ("a STATUS INBOX (MESSAGES)", ("MESSAGES",)),
        (
            "a STATUS blurdybloop (messages recent UIDNEXT uidvalidity UNSEEN HIGHESTMODSEQ SIZE APPENDLIMIT)",
            ("MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "HIGHESTMODSEQ", "SIZE", "APPENDLIMIT"),
        ),
    ],
)
def test_status(line, items):
    assert parse(line) == Status("a", parse(line).mailbox, items)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("a STATUS INBOX", "Missing status items"),
        ("a STATUS INBOX ()", "status item"),
        ("a STATUS INBOX (MESSAGES", "Unclosed"),
        ("a STATUS INBOX (MESSAGES FOO)", "Unknown status item FOO"),
        ("a STATUS INBOX MESSAGES", "("),
    ],
)
def test_status_errors(line, message):
    assert message.lower() in bad(line).message.lower()


# --------------------------------------------------------------------------- APPEND and date-time


@pytest.mark.parametrize(
    ("line", "flags", "when"),
    [
        ("a APPEND INBOX {3}\r\nabc", (), None),
        ("a APPEND INBOX () {3+}\r\nabc", (), None),
        ("a APPEND INBOX (\\seen \\DRAFT $Forwarded) {3}\r\nabc", ("\\Seen", "\\Draft", "$Forwarded"), None),
        (
            'a APPEND INBOX "17-Jul-1996 02:44:25 -0700" {3}\r\nabc',
            (),
            datetime(1996, 7, 17, 2, 44, 25, tzinfo=timezone(-timedelta(hours=7))),
        ),
        (
            'a APPEND INBOX (\\Flagged) " 7-jul-1996 02:44:25 +0530" {3}\r\nabc',
            ("\\Flagged",),
            datetime(1996, 7, 7, 2, 44, 25, tzinfo=timezone(timedelta(hours=5, minutes=30))),
        ),
        ('a APPEND INBOX "7-Jul-1996 00:00:00 +0000" {3}\r\nabc', (), datetime(1996, 7, 7, tzinfo=UTC)),
    ],
)
def test_append(line, flags, when):
    assert parse(line) == Append("a", "INBOX", (AppendedMessage(b"abc", flags, when),))


def test_append_keeps_message_bytes_exactly():
    message = "Subject: é\r\n\r\n\x01\xff".encode("latin-1")
    assert parse(b"a APPEND Sent {%d}\r\n" % len(message) + message + b"\r\n").messages[0].message == message


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("a APPEND INBOX", "Missing message literal"),
        ('a APPEND INBOX "hello"', "date-time"),
        ("a APPEND INBOX hello", "message literal"),
        ("a APPEND INBOX (\\Seen)", "Missing message literal"),
        ("a APPEND INBOX ~{3}\r\nabc", "literal8"),
        ("a APPEND INBOX (\\Recent) {3}\r\nabc", "\\Recent"),
        ("a APPEND INBOX (\\Seen {3}\r\nabc", "flag"),
        ('a APPEND INBOX "32-Jul-1996 02:44:25 -0700" {3}\r\nabc', "Invalid date-time"),
        ('a APPEND INBOX "17-Foo-1996 02:44:25 -0700" {3}\r\nabc', "Invalid date-time"),
        ('a APPEND INBOX "17-Jul-1996 24:44:25 -0700" {3}\r\nabc', "Invalid date-time"),
        ('a APPEND INBOX "17-Jul-1996 02:44:25 -0760" {3}\r\nabc', "Invalid date-time"),
        ('a APPEND INBOX "17-Jul-1996 02:44:25 +2400" {3}\r\nabc', "Invalid date-time"),
        ('a APPEND INBOX "17-Jul-96 02:44:25 -0700" {3}\r\nabc', "date-time"),
        ('a APPEND INBOX "17-Jul-1996 02:44:25" {3}\r\nabc', "date-time"),
        ("a APPEND INBOX 17-Jul-1996 {3}\r\nabc", "message literal"),
        ("a APPEND INBOX {3}\r\nabc extra", "extra"),
    ],
)
def test_append_errors(line, message):
    assert message.lower() in bad(line).message.lower()


# --------------------------------------------------------------------------- flags and STORE


@pytest.mark.parametrize(
    ("line", "command"),
    [
        ("a STORE 1 FLAGS (\\Seen)", Store("a", seq("1"), StoreMode.REPLACE, ("\\Seen",))),
        ("a STORE 1 FLAGS ()", Store("a", seq("1"), StoreMode.REPLACE, ())),
        ("a STORE 2:4 +FLAGS \\Deleted", Store("a", seq("2:4"), StoreMode.ADD, ("\\Deleted",))),
        (
            "a STORE * -flags.silent \\answered $Junk NonJunk",
            Store("a", seq("*"), StoreMode.REMOVE, ("\\Answered", "$Junk", "NonJunk"), silent=True),
        ),
        (
            "a UID STORE 5,7 +FLAGS.SILENT (\\Flagged)",
            Store("a", seq("5,7"), StoreMode.ADD, ("\\Flagged",), True, True),
        ),
        (
            "a STORE 1:* (UNCHANGEDSINCE 12121230045) +FLAGS.SILENT (\\Deleted)",
            Store("a", seq("1:*"), StoreMode.ADD, ("\\Deleted",), True, False, 12121230045),
        ),
        (
            "a UID STORE 1 (unchangedsince 0) FLAGS (\\Draft)",
            Store("a", seq("1"), StoreMode.REPLACE, ("\\Draft",), False, True, 0),
        ),
    ],
)
def test_store(line, command):
    assert parse(line) == command


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("a STORE 1 +FLAGS (\\Recent)", "\\Recent"),
        ("a STORE 1 +FLAGS (\\*)", "\\*"),
        ("a STORE 1 +FLAGS (\\Foo)", "\\Foo"),
        ("a STORE 1 +FLAGS (\\)", "flag"),
        ("a STORE 1 +FLAGS (fo%o)", "flag"),
        ("a STORE 1 +FLAGS (\\Seen", "Unclosed"),
        ("a STORE 1 +FLAGS", "Missing flags"),
        ("a STORE 1 FLAGS ", "Trailing space"),
        ("a STORE 1 +LABELS (x)", "Unknown store item"),
        ("a STORE 1 *FLAGS (x)", "Unknown store item"),
        ("a STORE 1 FLAGS.NOISY (x)", "Unknown store item"),
        ("a STORE 1 (UNCHANGEDSINCE) FLAGS (x)", "mod-sequence"),
        ("a STORE 1 (UNCHANGEDSINCE 1 UNCHANGEDSINCE 2) FLAGS (x)", "Repeated"),
        ("a STORE 1 (FOO 1) FLAGS (x)", "Unsupported"),
        ("a STORE 1 (UNCHANGEDSINCE 9223372036854775808) FLAGS (x)", "mod-sequence"),
        ("a STORE 0 FLAGS (x)", "sequence set"),
        ("a STORE FLAGS (x)", "sequence set"),
    ],
)
def test_store_errors(line, message):
    assert message.lower() in bad(line).message.lower()


# --------------------------------------------------------------------------- COPY, MOVE, EXPUNGE


@pytest.mark.parametrize(
    ("line", "command"),
    [
        ("a COPY 2:4 MEETING", Copy("a", seq("2:4"), "MEETING")),
        ("a UID COPY 1:* inbox", Copy("a", seq("1:*"), "INBOX", uid=True)),
        ('a MOVE 1,3 "Deleted Items"', Move("a", seq("1,3"), "Deleted Items")),
        ("a uid move *:10 Trash", Move("a", seq("10:*"), "Trash", uid=True)),
        ("a UID EXPUNGE 3000:3002", Expunge("a", uid=True, sequence_set=seq("3000:3002"))),
    ],
)
def test_copy_move_expunge(line, command):
    assert parse(line) == command


@pytest.mark.parametrize(
    "line",
    ["a COPY 1", "a COPY Trash", "a MOVE 1:x Trash", "a UID EXPUNGE", "a EXPUNGE 1", "a COPY 1 a b", "a MOVE 0 x"],
)
def test_copy_move_expunge_errors(line):
    assert bad(line).tag == "a"


# --------------------------------------------------------------------------- FETCH


def attrs(*names: str) -> tuple[FetchAttribute, ...]:
    return tuple(FetchAttribute(name) for name in names)


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        ("ALL", attrs("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE")),
        ("fast", attrs("FLAGS", "INTERNALDATE", "RFC822.SIZE")),
        ("FULL", attrs("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY")),
        ("FLAGS", attrs("FLAGS")),
        ("(FLAGS)", attrs("FLAGS")),
        (
            "(envelope flags internaldate rfc822 rfc822.header rfc822.size rfc822.text body bodystructure uid modseq)",
            attrs(
                "ENVELOPE",
                "FLAGS",
                "INTERNALDATE",
                "RFC822",
                "RFC822.HEADER",
                "RFC822.SIZE",
                "RFC822.TEXT",
                "BODY",
                "BODYSTRUCTURE",
                "UID",
                "MODSEQ",
            ),
        ),
    ],
)
def test_fetch_attributes_and_macros(items, expected):
    assert parse(f"a FETCH 1:* {items}").items == expected


@pytest.mark.parametrize(
    ("item", "section", "label"),
    [
        ("BODY[]", BodySection(), "BODY[]"),
        ("BODY.PEEK[]", BodySection(peek=True), "BODY[]"),
        ("body[header]", BodySection(text="HEADER"), "BODY[HEADER]"),
        ("BODY[TEXT]", BodySection(text="TEXT"), "BODY[TEXT]"),
        ("BODY[1]", BodySection(parts=(1,)), "BODY[1]"),
        ("BODY[1.2.3]", BodySection(parts=(1, 2, 3)), "BODY[1.2.3]"),
        ("BODY[1.MIME]", BodySection(parts=(1,), text="MIME"), "BODY[1.MIME]"),
        ("BODY[4.2.HEADER]", BodySection(parts=(4, 2), text="HEADER"), "BODY[4.2.HEADER]"),
        ("BODY[4.2.TEXT]", BodySection(parts=(4, 2), text="TEXT"), "BODY[4.2.TEXT]"),
        (
            "BODY.PEEK[HEADER.FIELDS (From To Message-ID)]",
            BodySection(True, (), "HEADER.FIELDS", ("From", "To", "Message-ID")),
            "BODY[HEADER.FIELDS (From To Message-ID)]",
        ),
        (
            'BODY[HEADER.FIELDS.NOT ("Subject" {4}\r\nDate)]',
            BodySection(False, (), "HEADER.FIELDS.NOT", ("Subject", "Date")),
            "BODY[HEADER.FIELDS.NOT (Subject Date)]",
        ),
        (
            "BODY[1.HEADER.FIELDS (X-Priority)]",
            BodySection(False, (1,), "HEADER.FIELDS", ("X-Priority",)),
            "BODY[1.HEADER.FIELDS (X-Priority)]",
        ),
        (
            'BODY[HEADER.FIELDS ("a b")]',
            BodySection(False, (), "HEADER.FIELDS", ("a b",)),
            'BODY[HEADER.FIELDS ("a b")]',
        ),
        ("BODY[]<0.2048>", BodySection(partial=(0, 2048)), "BODY[]<0>"),
        ("BODY.PEEK[TEXT]<100.50>", BodySection(True, (), "TEXT", (), (100, 50)), "BODY[TEXT]<100>"),
        ("BODY[1.2]<00.1>", BodySection(False, (1, 2), None, (), (0, 1)), "BODY[1.2]<0>"),
    ],
)
def test_fetch_body_sections(item, section, label):
    command = parse(f"a FETCH 1 ({item} FLAGS)")
    assert command.items == (section, FetchAttribute("FLAGS"))
    assert command.items[0].label() == label
    assert parse(f"a FETCH 1 {item}").items == (section,)


def test_fetch_body_without_section_is_bodystructure_lite():
    assert parse("a FETCH 1 BODY").items == attrs("BODY")


@pytest.mark.parametrize(
    ("line", "command"),
    [
        (
            "a UID FETCH 1:* (FLAGS) (CHANGEDSINCE 12345)",
            Fetch("a", seq("1:*"), attrs("FLAGS"), uid=True, changed_since=12345),
        ),
        ("a FETCH 1:* UID (changedsince 0)", Fetch("a", seq("1:*"), attrs("UID"), changed_since=0)),
        ("a FETCH 2,4:5 ALL (CHANGEDSINCE 1)", Fetch("a", seq("2,4:5"), parse("x FETCH 1 ALL").items, changed_since=1)),
    ],
)
def test_fetch_changedsince(line, command):
    assert parse(line) == command


@pytest.mark.parametrize(
    ("line", "labels"),
    [
        ("a FETCH 1 FLAGS", ["FLAGS"]),
        ("a UID FETCH 1 FLAGS", ["UID", "FLAGS"]),
        ("a UID FETCH 1 (FLAGS UID)", ["FLAGS", "UID"]),
        ("a FETCH 1 FLAGS (CHANGEDSINCE 4)", ["FLAGS", "MODSEQ"]),
        ("a UID FETCH 1 (MODSEQ BODY.PEEK[]<0.5>) (CHANGEDSINCE 4)", ["UID", "MODSEQ", "BODY[]<0>"]),
    ],
)
def test_fetch_response_items(line, labels):
    assert [item.label() for item in parse(line).response_items()] == labels


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("a FETCH 1", "Missing fetch items"),
        ("a FETCH 1 ()", "fetch attribute"),
        ("a FETCH 1 (ALL)", "Unknown fetch attribute ALL"),
        ("a FETCH 1 (FLAGS FAST)", "Unknown fetch attribute FAST"),
        ("a FETCH 1 FOO", "Unknown fetch attribute FOO"),
        ("a FETCH 1 (FLAGS", "Unclosed"),
        ("a FETCH 1 (FLAGS  UID)", "Extra space"),
        ("a FETCH 1 BODY.PEEK", "BODY.PEEK"),
        ("a FETCH 1 BODY[", "section"),
        ("a FETCH 1 BODY[MIME]", "Invalid section MIME"),
        ("a FETCH 1 BODY[1.FOO]", "Invalid section"),
        ("a FETCH 1 BODY[0]", "section part"),
        ("a FETCH 1 BODY[01]", "section part"),
        ("a FETCH 1 BODY[1.]", "section"),
        ("a FETCH 1 BODY[HEADER.FIELDS]", "header field names"),
        ("a FETCH 1 BODY[HEADER.FIELDS ()]", "header field"),
        ("a FETCH 1 BODY[HEADER.FIELDS (From]", "Unclosed"),
        ("a FETCH 1 BODY[TEXT (From)]", "']'"),
        ("a FETCH 1 BODY[]<0>", "'.'"),
        ("a FETCH 1 BODY[]<0.0>", "partial length"),
        ("a FETCH 1 BODY[]<0.10", "'>'"),
        ("a FETCH 1 RFC822.PEEK", "Unknown fetch attribute"),
        ("a FETCH 1 BINARY[1]", "Unknown fetch attribute"),
        ("a FETCH 1 FLAGS (CHANGEDSINCE)", "mod-sequence"),
        ("a FETCH 1 FLAGS (CHANGEDSINCE 1 CHANGEDSINCE 2)", "Repeated"),
        ("a FETCH 1 FLAGS (VANISHED)", "Unsupported FETCH modifier VANISHED"),
        ("a FETCH 1 FLAGS ()", "FETCH modifier"),
        ("a FETCH 1 FLAGS (CHANGEDSINCE 1", "Unclosed"),
        ("a FETCH 0 FLAGS", "Invalid sequence set 0"),
        ("a FETCH 1:0 FLAGS", "Invalid sequence set"),
        ("a FETCH 1,,2 FLAGS", "Invalid sequence set"),
        ("a FETCH x FLAGS", "sequence set"),
        ("a FETCH $ FLAGS", "sequence set"),
        ("a FETCH 4294967296 FLAGS", "Invalid sequence set"),
    ],
)
def test_fetch_errors(line, message):
    assert message.lower() in bad(line).message.lower()


# --------------------------------------------------------------------------- SEARCH

_D = date(1994, 2, 1)


@pytest.mark.parametrize(
    ("criteria", "key"),
    [
        ("ALL", AllKey()),
        ("ANSWERED", FlagKey("\\Answered", True)),
        ("DELETED", FlagKey("\\Deleted", True)),
        ("DRAFT", FlagKey("\\Draft", True)),
        ("FLAGGED", FlagKey("\\Flagged", True)),
        ("RECENT", FlagKey("\\Recent", True)),
        ("SEEN", FlagKey("\\Seen", True)),
        ("UNANSWERED", FlagKey("\\Answered", False)),
        ("UNDELETED", FlagKey("\\Deleted", False)),
        ("UNDRAFT", FlagKey("\\Draft", False)),
        ("UNFLAGGED", FlagKey("\\Flagged", False)),
        ("UNSEEN", FlagKey("\\Seen", False)),
        ("NEW", And((FlagKey("\\Recent", True), FlagKey("\\Seen", False)))),
        ("OLD", FlagKey("\\Recent", False)),
        ("KEYWORD $Forwarded", FlagKey("$Forwarded", True)),
        ("UNKEYWORD Junk", FlagKey("Junk", False)),
        ("BCC bob", HeaderContains("bcc", "bob")),
        ("CC bob", HeaderContains("cc", "bob")),
        ('FROM "Smith, John"', HeaderContains("from", "Smith, John")),
        ("TO {3}\r\nbob", HeaderContains("to", "bob")),
        ("SUBJECT ordonnance", HeaderContains("subject", "ordonnance")),
        ('HEADER Message-ID "<a@b>"', HeaderContains("message-id", "<a@b>")),
        ('HEADER X-Spam ""', HeaderContains("x-spam", "")),
        ("BODY hello", TextContains("hello", body_only=True)),
        ("TEXT hello", TextContains("hello", body_only=False)),
        ("BEFORE 1-Feb-1994", DateKey(DateRelation.BEFORE, _D)),
        ("ON 01-feb-1994", DateKey(DateRelation.ON, _D)),
        ('SINCE "1-Feb-1994"', DateKey(DateRelation.SINCE, _D)),
        ("SENTBEFORE 1-Feb-1994", DateKey(DateRelation.BEFORE, _D, sent=True)),
        ("SENTON 1-FEB-1994", DateKey(DateRelation.ON, _D, sent=True)),
        ("SENTSINCE 1-Feb-1994", DateKey(DateRelation.SINCE, _D, sent=True)),
        ("LARGER 1024", SizeKey(larger=True, size=1024)),
        ("SMALLER 0", SizeKey(larger=False, size=0)),
        ("UID 1:*", SequenceKey(True, seq("1:*"))),
        ("2:4,7", SequenceKey(False, seq("2:4,7"))),
        ("*", SequenceKey(False, seq("*"))),
        ("NOT SEEN", Not(FlagKey("\\Seen", True))),
        ("NOT NOT SEEN", Not(Not(FlagKey("\\Seen", True)))),
        ("OR SEEN FLAGGED", Or(FlagKey("\\Seen", True), FlagKey("\\Flagged", True))),
        (
            "OR (FROM a TO b) NOT 1:3",
            Or(And((HeaderContains("from", "a"), HeaderContains("to", "b"))), Not(SequenceKey(False, seq("1:3")))),
        ),
        ("(SEEN)", FlagKey("\\Seen", True)),
        ("((SEEN))", FlagKey("\\Seen", True)),
        ("MODSEQ 620162338", ModSeqKey(620162338)),
        ("MODSEQ 0", ModSeqKey(0)),
        ('MODSEQ "/flags/\\\\draft" all 620162338', ModSeqKey(620162338)),
        ('MODSEQ "/flags/$Junk" PRIV 5', ModSeqKey(5)),
        ("seen", FlagKey("\\Seen", True)),
    ],
)
def test_search_keys(criteria, key):
    assert parse(f"a SEARCH {criteria}") == Search("a", key)


def test_search_several_keys_are_anded():
    assert parse("a UID SEARCH FLAGGED SINCE 1-Feb-1994 NOT FROM Smith") == Search(
        "a",
        And((FlagKey("\\Flagged"), DateKey(DateRelation.SINCE, _D), Not(HeaderContains("from", "Smith")))),
        uid=True,
    )


@pytest.mark.parametrize(
    ("charset", "normalised"), [("UTF-8", "UTF-8"), ("utf-8", "UTF-8"), ('"us-ascii"', "US-ASCII")]
)
def test_search_charset(charset, normalised):
    assert parse(f"a SEARCH CHARSET {charset} ALL") == Search("a", AllKey(), normalised)


def test_search_utf8_literal():
    word = "fièvre".encode()
    line = b"a SEARCH CHARSET UTF-8 SUBJECT {%d}\r\n" % len(word) + word + b"\r\n"
    assert parse(line) == Search("a", HeaderContains("subject", "fièvre"), "UTF-8")


def test_search_utf8_quoted_without_charset():
    assert parse('a SEARCH TEXT "dérivé"').key == TextContains("dérivé", body_only=False)


@pytest.mark.parametrize("charset", ["ISO-8859-1", "KOI8-R", '"WINDOWS-1252"'])
def test_search_bad_charset(charset):
    with pytest.raises(BadCharset) as info:
        parse(f"a2 SEARCH CHARSET {charset} TEXT x")
    assert info.value.tag == "a2"
    assert info.value.charset == charset.strip('"')
    assert info.value.supported == ("UTF-8", "US-ASCII")


@pytest.mark.parametrize(
    ("criteria", "message"),
    [
        ("", "Missing search criteria"),
        ("FOO", "Unknown search key FOO"),
        ("FROM", "Missing argument of FROM"),
        ("HEADER Subject", "Missing search string"),
        ("BEFORE 1994-02-01", "date"),
        ("BEFORE 1-Feb-94", "date"),
        ("ON 31-Feb-2000", "Invalid date"),
        ("ON 1-Fev-2000", "Invalid date"),
        ('ON "1-Feb-2000', "date"),
        ("LARGER x", "size"),
        ("LARGER 4294967296", "size"),
        ("UID", "Missing argument of UID"),
        ("UID x", "sequence set"),
        ("0", "Invalid sequence set 0"),
        ("NOT", "Missing argument of NOT"),
        ("OR SEEN", "Missing second key of OR"),
        ("()", "search key"),
        ("(SEEN", "Unclosed"),
        ("SEEN)", "Unexpected characters"),
        ("KEYWORD \\Seen", "keyword"),
        ("MODSEQ", "Missing argument of MODSEQ"),
        ("MODSEQ x", "mod-sequence"),
        ('MODSEQ "/other/x" all 1', "/flags/"),
        ('MODSEQ "/flags/x" every 1', "entry type"),
        ("MODSEQ 9223372036854775808", "mod-sequence"),
        ("CHARSET UTF-8", "Missing search criteria"),
        ("SEEN  FLAGGED", "Extra space"),
        ("RETURN (BOGUS) SEEN", "Unknown SEARCH result option BOGUS"),
        ("RETURN (MIN)", "Missing search criteria"),
        ("$", "search key"),
        ("SUBJECT \xe9", "search string"),
    ],
)
def test_search_errors(criteria, message):
    line = f"a SEARCH {criteria}".rstrip() if criteria else "a SEARCH"
    assert message.lower() in bad(line.encode("latin-1") + b"\r\n").message.lower()


def test_search_invalid_utf8_literal():
    assert "UTF-8" in bad(b"a SEARCH TEXT {2}\r\n\xff\xfe\r\n").message


@pytest.mark.parametrize(("prefix", "suffix"), [("NOT ", ""), ("(", ")"), ("OR ALL ", "")])
def test_search_nesting_is_bounded(prefix, suffix):
    assert "nested" in bad("a SEARCH " + prefix * 200 + "ALL" + suffix * 200).message


def test_search_moderate_nesting_is_fine():
    assert isinstance(parse("a SEARCH " + "NOT " * 30 + "ALL").key, Not)


# --------------------------------------------------------------------------- IDLE and AUTHENTICATE continuations


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"DONE\r\n", True),
        (b"done\r\n", True),
        (b"DONE", True),
        (b"DONE \r\n", False),
        (b"a1 DONE\r\n", False),
        (b"DONE\n", False),
    ],
)
def test_is_done_line(line, expected):
    assert is_done_line(line) is expected


@pytest.mark.parametrize(
    ("line", "expected"),
    [(b"*\r\n", None), (b"\r\n", b""), (b"AGZyZWQAc2VjcmV0\r\n", b"\x00fred\x00secret"), (b"dXNlcj0=", b"user=")],
)
def test_decode_sasl_response(line, expected):
    assert decode_sasl_response(line) == expected


@pytest.mark.parametrize("line", [b"not base64!\r\n", b"AGZ\r\n", b"* \r\n"])
def test_decode_sasl_response_rejects(line):
    with pytest.raises(ValueError):
        decode_sasl_response(line)
