"""The IMAP server driven by third-party clients over real TLS: imapclient (sync) and aioimaplib (asyncio).

Each test works in folders of its own, so the tests share one operator yet see only their own messages.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import aioimaplib
import pytest
from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError, LoginError
from support.harness import RunningOperator

DOMAIN = "hopital-demo.mssante.fr"
DOCTOR = f"dr.martin@{DOMAIN}"
PARIS = timezone(timedelta(hours=1))
RECENT = b"\\Recent"  # the session that first selects a folder after a delivery sees it \Recent (RFC 3501 2.3.2)

# A laboratory report: an RFC 2047 subject, an 8-bit UTF-8 text part and a small PDF attachment.
REPORT = (
    b'From: "Laboratoire Biolab" <resultats@labo-biolab.mssante.fr>\r\n'
    b"To: Dr Martin <dr.martin@hopital-demo.mssante.fr>\r\n"
    b"Cc: ines.secretaire@hopital-demo.mssante.fr\r\n"
    b"Subject: =?utf-8?q?Glyc=C3=A9mie_=C3=A0_jeun?=\r\n"
    b"Date: Tue, 03 Mar 2026 09:15:00 +0100\r\n"
    b"Message-ID: <cr-42@labo-biolab.mssante.fr>\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="frontiere"\r\n'
    b"\r\n"
    b"--frontiere\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"\r\n"
    b"Glyc\xc3\xa9mie \xc3\xa0 jeun : 0,95 g/l.\r\n"
    b"--frontiere\r\n"
    b'Content-Type: application/pdf; name="cr.pdf"\r\n'
    b'Content-Disposition: attachment; filename="cr.pdf"\r\n'
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    b"JVBERi0xLjQK\r\n"
    b"--frontiere--\r\n"
)


def note(subject: str, body: str = "Rien à signaler.", sender: str = "secretariat@hopital-demo.mssante.fr") -> bytes:
    """A small text/plain message; ``subject`` and ``body`` may hold any UTF-8 text (sent 8-bit)."""
    return (f"From: {sender}\r\nTo: {DOCTOR}\r\nSubject: {subject}\r\nMIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
            f"{body}\r\n").encode()


def password(running: RunningOperator, address: str) -> str:
    return str(running.mailbox(address)["password"])


def tls_context(running: RunningOperator) -> ssl.SSLContext:
    """Trusts only the kit's CA and checks the host name: the server certificate names 127.0.0.1."""
    return running.tls_context(check_hostname=True)


def imaps_client(running: RunningOperator) -> IMAPClient:
    """An imapclient connection on the implicit-TLS port, not yet logged in."""
    client = IMAPClient("127.0.0.1", port=running.port("imaps"), ssl=True, ssl_context=tls_context(running),
                        timeout=10)
    client.normalise_times = False  # keep INTERNALDATE's zone so it can be compared exactly
    return client


@contextmanager
def session(running: RunningOperator, address: str = DOCTOR) -> Iterator[IMAPClient]:
    """An imapclient session logged in over implicit TLS; logged out afterwards."""
    client = imaps_client(running)
    client.login(address, password(running, address))
    try:
        yield client
    finally:
        client.logout()


def new_folder(client: IMAPClient, name: str) -> str:
    """Create ``name`` (which must not exist yet) and return it."""
    assert not client.folder_exists(name)
    client.create_folder(name)
    return name


def lowered(value: Any) -> Any:
    """``value`` with every bytes string in it lower-cased (MIME types, subtypes and parameters)."""
    if isinstance(value, bytes):
        return value.lower()
    if isinstance(value, tuple):
        return tuple(lowered(v) for v in value)
    return value


def untagged(client: IMAPClient, name: str) -> list[bytes]:
    """The untagged responses or response codes ``name`` of the last commands (read from imaplib, underneath)."""
    return [bytes(item) for item in client._imap.untagged_responses.pop(name, [])]


def uid_set(text: bytes) -> list[int]:
    """The UIDs of a uid-set such as ``3:5,8``."""
    uids: list[int] = []
    for part in text.decode().split(","):
        low, _, high = part.partition(":")
        uids += range(int(low), int(high or low) + 1)
    return uids


def appended_uid(response: bytes) -> int:
    """The UID of an APPENDUID response code (RFC 4315)."""
    match = re.match(rb"\[APPENDUID (\d+) (\d+)\]", response)
    assert match, response
    return int(match.group(2))


# --- imapclient -----------------------------------------------------------------------------------------


def test_imapclient_logs_in_over_implicit_tls(running: RunningOperator) -> None:
    """Implicit TLS, the greeting's capabilities, LOGIN, then the authenticated capabilities."""
    client = imaps_client(running)
    try:
        assert client.welcome.startswith(b"* OK [CAPABILITY IMAP4rev1 ")
        assert b"AUTH=PLAIN" in client.capabilities() and b"LOGINDISABLED" not in client.capabilities()
        with pytest.raises(LoginError, match="AUTHENTICATIONFAILED"):
            client.login(f"nobody@{DOMAIN}", "not a password")
        answer = client.login(DOCTOR, password(running, DOCTOR))
        assert DOCTOR.encode() in answer
        capabilities = set(client.capabilities())
        assert {b"IDLE", b"UIDPLUS", b"MOVE", b"CONDSTORE", b"SPECIAL-USE", b"NAMESPACE", b"ENABLE"} <= capabilities
        assert not any(c.startswith(b"AUTH=") for c in capabilities)  # no more authentication once logged in
        cipher = client.socket().cipher()
        assert cipher is not None and cipher[1] in ("TLSv1.2", "TLSv1.3")
    finally:
        client.logout()


def test_imapclient_over_starttls_lists_folders_with_their_special_use(running: RunningOperator) -> None:
    """STARTTLS on the plain port, AUTHENTICATE PLAIN; LIST with the RFC 6154 attributes, find_special_folder."""
    client = IMAPClient("127.0.0.1", port=running.port("imap"), ssl=False, timeout=10)
    try:
        assert b"LOGINDISABLED" in client.capabilities() and b"STARTTLS" in client.capabilities()
        client.starttls(tls_context(running))
        assert b"LOGINDISABLED" not in client.capabilities() and b"STARTTLS" not in client.capabilities()
        client.plain_login(DOCTOR, password(running, DOCTOR))  # AUTHENTICATE PLAIN, answering the "+" challenge
        folders = {name: set(flags) for flags, delimiter, name in client.list_folders() if delimiter == b"/"}
        assert {"INBOX", "Sent", "Drafts", "Trash", "Junk", "Archive"} <= set(folders)
        for name in ("Sent", "Drafts", "Trash", "Junk", "Archive"):
            assert f"\\{name}".encode() in folders[name], (name, folders[name])
            assert client.find_special_folder(f"\\{name}".encode()) == name
        assert not folders["INBOX"] & {b"\\Sent", b"\\Drafts", b"\\Trash", b"\\Junk", b"\\Archive"}
        assert b"\\Noselect" in folders["Shared"] and b"\\HasChildren" in folders["Shared"]
        top = {name for _flags, _delimiter, name in client.list_folders(pattern="%")}
        assert {"Archive", "Drafts", "INBOX", "Junk", "Sent", "Shared", "Trash"} <= top
        assert not any("/" in name for name in top)  # % stops at the hierarchy delimiter
    finally:
        client.logout()


def test_imapclient_examines_a_folder_read_only(running: RunningOperator) -> None:
    """EXAMINE (RFC 3501 6.3.2): READ-ONLY; FETCH BODY[] sets no \\Seen and \\Recent stays for the next SELECT."""
    with session(running) as client:
        folder = new_folder(client, "Client/Examine")
        uid = appended_uid(client.append(folder, note("lecture seule")))
        selected = client.select_folder(folder, readonly=True)
        assert b"READ-ONLY" in selected and b"READ-WRITE" not in selected and selected[b"EXISTS"] == 1
        assert client.fetch([uid], ["BODY[]"])[uid][b"BODY[]"] == note("lecture seule")
        assert b"\\Seen" not in client.get_flags([uid])[uid]
    with session(running) as later:
        selected = later.select_folder(folder)
        assert selected[b"RECENT"] == 1  # "EXAMINE MUST NOT cause messages to lose the \Recent flag"
        assert set(later.get_flags([uid])[uid]) == {RECENT}


def test_imapclient_manages_folders_with_non_ascii_names(running: RunningOperator) -> None:
    """CREATE, LIST, RENAME, SUBSCRIBE/LSUB, STATUS, DELETE with names imapclient encodes in modified UTF-7."""
    with session(running, f"ines.secretaire@{DOMAIN}") as client:
        client.create_folder("Patients/Hélène Dupont")
        listed = client.list_folders("", "Patients/*")
        assert [(flags, name) for flags, _delim, name in listed] == [((b"\\HasNoChildren",), "Patients/Hélène Dupont")]
        raw_names = client._imap.list('""', '"Patients/*"')[1]  # what went over the wire
        assert raw_names == [b'(\\HasNoChildren) "/" "Patients/H&AOk-l&AOg-ne Dupont"']
        client.rename_folder("Patients/Hélène Dupont", "Patients/Hélène Dupont-Martin")
        assert client.folder_exists("Patients/Hélène Dupont-Martin")
        assert not client.folder_exists("Patients/Hélène Dupont")
        client.subscribe_folder("Patients/Hélène Dupont-Martin")
        assert client.list_sub_folders("", "Patients/*") == [((), b"/", "Patients/Hélène Dupont-Martin")]
        appended_uid(client.append("Patients/Hélène Dupont-Martin", note("Ordonnance"), flags=(b"\\Seen",)))
        status = client.folder_status("Patients/Hélène Dupont-Martin", ["MESSAGES", "UNSEEN", "UIDNEXT"])
        assert status == {b"MESSAGES": 1, b"UNSEEN": 0, b"UIDNEXT": 2}
        assert client.select_folder("Patients/Hélène Dupont-Martin")[b"EXISTS"] == 1
        client.unselect_folder()
        with pytest.raises(IMAPClientError):
            client.search("ALL")  # no folder selected any more
        client.delete_folder("Patients/Hélène Dupont-Martin")
        assert client.list_folders("", "Patients/*") == []
        (pairs,) = client.id_({"name": "pytest", "version": "1"})  # RFC 2971; the 8-bit vendor comes as a literal
        server = dict(zip(pairs[::2], pairs[1::2], strict=True))
        assert server[b"name"] == b"mssante-operator" and server[b"vendor"] == "MSSanté operator".encode()


def test_imapclient_namespace(running: RunningOperator) -> None:
    """NAMESPACE (RFC 2342): personal at the root; a delegate also sees the shared one."""
    with session(running) as client:
        namespaces = client.namespace()
        assert namespaces.personal == (("", "/"),)
        assert namespaces.other is None
        assert namespaces.shared == (("Shared/", "/"),)
    with session(running, f"paul.durand@{DOMAIN}") as client:
        namespaces = client.namespace()
        assert namespaces.personal == (("", "/"),) and namespaces.shared is None


def test_imapclient_appends_with_flags_and_date_then_fetches_every_item(running: RunningOperator) -> None:
    """APPEND with flags and INTERNALDATE; FETCH ENVELOPE, BODYSTRUCTURE, BODY.PEEK[], FLAGS, INTERNALDATE."""
    with session(running) as client:
        folder = new_folder(client, "Client/Append")
        when = datetime(2026, 3, 3, 9, 20, 5, tzinfo=PARIS)
        uid = appended_uid(client.append(folder, REPORT, flags=(b"\\Flagged", b"$Urgent"), msg_time=when))
        selected = client.select_folder(folder)
        assert selected[b"EXISTS"] == 1 and selected[b"UIDNEXT"] == uid + 1
        assert b"$Urgent" in selected[b"FLAGS"]  # the keywords in use join the system flags
        data = client.fetch([uid], ["ENVELOPE", "BODYSTRUCTURE", "BODY.PEEK[]", "FLAGS", "INTERNALDATE",
                                    "RFC822.SIZE"])[uid]
        assert data[b"BODY[]"] == REPORT
        assert data[b"RFC822.SIZE"] == len(REPORT)
        assert set(data[b"FLAGS"]) == {b"\\Flagged", b"$Urgent", RECENT}  # BODY.PEEK did not set \Seen
        assert data[b"INTERNALDATE"] == when and data[b"INTERNALDATE"].utcoffset() == timedelta(hours=1)

        envelope = data[b"ENVELOPE"]
        assert envelope.date == datetime(2026, 3, 3, 9, 15, tzinfo=PARIS)
        assert envelope.subject == b"=?utf-8?q?Glyc=C3=A9mie_=C3=A0_jeun?="
        assert [(a.name, a.mailbox, a.host) for a in envelope.from_] == [
            (b"Laboratoire Biolab", b"resultats", b"labo-biolab.mssante.fr")]
        assert envelope.sender == envelope.from_ and envelope.reply_to == envelope.from_  # RFC 3501 defaults
        assert [(a.name, a.mailbox, a.host) for a in envelope.to] == [(b"Dr Martin", b"dr.martin", DOMAIN.encode())]
        assert [(a.name, a.mailbox, a.host) for a in envelope.cc] == [
            (None, b"ines.secretaire", DOMAIN.encode())]
        assert envelope.bcc is None and envelope.in_reply_to is None
        assert envelope.message_id == b"<cr-42@labo-biolab.mssante.fr>"

        structure = data[b"BODYSTRUCTURE"]
        assert structure.is_multipart
        parts, subtype = structure[0], structure[1]
        assert subtype.lower() == b"mixed" and len(parts) == 2  # MIME names are case-insensitive
        text, pdf = parts
        text_body = "Glycémie à jeun : 0,95 g/l.".encode()  # the CRLF before a boundary is the boundary's
        assert lowered(text[:7]) == (b"text", b"plain", (b"charset", b"utf-8"), None, None, b"8bit", len(text_body))
        pdf_size = len(b"JVBERi0xLjQK")
        assert lowered(pdf[:7]) == (b"application", b"pdf", (b"name", b"cr.pdf"), None, None, b"base64", pdf_size)

        parts_data = client.fetch([uid], ["BODY.PEEK[1]", "BODY.PEEK[HEADER.FIELDS (SUBJECT)]"])[uid]
        assert parts_data[b"BODY[1]"] == text_body
        assert parts_data[b"BODY[HEADER.FIELDS (SUBJECT)]"] == b"Subject: =?utf-8?q?Glyc=C3=A9mie_=C3=A0_jeun?=\r\n\r\n"
        assert set(client.get_flags([uid])[uid]) == {b"\\Flagged", b"$Urgent", RECENT}
        client.fetch([uid], ["BODY[TEXT]"])  # a non-peek fetch sets \Seen
        assert b"\\Seen" in client.get_flags([uid])[uid]


def test_imapclient_search_with_utf8_criteria(running: RunningOperator) -> None:
    """SEARCH with CHARSET UTF-8 (literal strings), on decoded headers and bodies, with flags, dates and OR."""
    with session(running) as client:
        folder = new_folder(client, "Client/Search")
        uids = {
            "report": appended_uid(client.append(folder, REPORT, flags=(b"\\Seen",),
                                                 msg_time=datetime(2026, 3, 3, 9, 20, tzinfo=UTC))),
            "ecg": appended_uid(client.append(folder, note("ECG de contrôle", "Tracé sans anomalie."),
                                              flags=(b"\\Flagged",), msg_time=datetime(2026, 3, 10, 8, 0, tzinfo=UTC))),
            "rdv": appended_uid(client.append(folder, note("Rendez-vous", "Prévoir une échographie cardiaque.",
                                                           sender="accueil@clinique-ouest.mssante.fr"),
                                              msg_time=datetime(2026, 4, 1, 8, 0, tzinfo=UTC))),
        }
        client.select_folder(folder)
        assert sorted(client.search("ALL")) == sorted(uids.values())
        assert client.search(["SUBJECT", "glycémie"], charset="UTF-8") == [uids["report"]]  # RFC 2047 decoded
        assert client.search(["SUBJECT", "CONTRÔLE"], charset="UTF-8") == [uids["ecg"]]  # case-insensitive
        assert client.search(["BODY", "échographie"], charset="UTF-8") == [uids["rdv"]]
        assert client.search(["TEXT", "à jeun"], charset="UTF-8") == [uids["report"]]
        assert client.search(["FROM", "clinique-ouest"]) == [uids["rdv"]]
        assert client.search(["HEADER", "Message-ID", "cr-42@"]) == [uids["report"]]
        assert client.search(["FLAGGED"]) == [uids["ecg"]]
        assert sorted(client.search(["UNSEEN"])) == sorted([uids["ecg"], uids["rdv"]])
        assert client.search(["SINCE", datetime(2026, 3, 15).date()]) == [uids["rdv"]]
        assert client.search(["BEFORE", datetime(2026, 3, 4).date()]) == [uids["report"]]
        assert sorted(client.search(["OR", "FLAGGED", "SEEN"])) == sorted([uids["report"], uids["ecg"]])
        assert client.search(["NOT", "SUBJECT", "rendez"]) == sorted([uids["report"], uids["ecg"]])
        assert client.search(["LARGER", 500]) == [uids["report"]]
        assert client.search(["SUBJECT", "absent de partout"], charset="UTF-8") == []
        with pytest.raises(IMAPClientError, match=r"BADCHARSET \(UTF-8 US-ASCII\)"):
            client.search(["SUBJECT", "x"], charset="KOI8-R")


def test_imapclient_sets_adds_and_removes_flags(running: RunningOperator) -> None:
    """STORE FLAGS, +FLAGS and -FLAGS (with their untagged FETCH answers), keywords included."""
    with session(running) as client:
        folder = new_folder(client, "Client/Flags")
        first = appended_uid(client.append(folder, note("un")))
        second = appended_uid(client.append(folder, note("deux"), flags=(b"\\Answered",)))
        client.select_folder(folder)  # the first to select: both messages are \Recent in this session
        assert {uid: set(f) for uid, f in client.set_flags([first], [b"\\Seen", b"$Suivi"]).items()} == {
            first: {b"\\Seen", b"$Suivi", RECENT}}
        answered = client.add_flags([first, second], [b"\\Flagged"])
        assert set(answered[first]) == {b"\\Seen", b"$Suivi", b"\\Flagged", RECENT}
        assert set(answered[second]) == {b"\\Answered", b"\\Flagged", RECENT}
        removed = client.remove_flags([first, second], [b"\\Flagged", b"$Suivi"])
        assert set(removed[first]) == {b"\\Seen", RECENT} and set(removed[second]) == {b"\\Answered", RECENT}
        assert client.set_flags([second], []) == {second: (RECENT,)}  # \Recent cannot be stored away
        assert client.add_flags([first], [b"\\Draft"], silent=True) is None
        with pytest.raises(IMAPClientError, match="Recent"):  # nor removed
            client.remove_flags([first], [RECENT])
        assert {uid: set(flags) for uid, flags in client.get_flags([first, second]).items()} == {
            first: {b"\\Seen", b"\\Draft", RECENT}, second: {RECENT}}
    with session(running) as later:  # another session sees the stored flags, without \Recent
        later.select_folder(folder)
        assert {uid: set(flags) for uid, flags in later.get_flags([first, second]).items()} == {
            first: {b"\\Seen", b"\\Draft"}, second: set()}


def test_imapclient_copies_moves_and_expunges_by_uid(running: RunningOperator) -> None:
    """COPY (COPYUID), MOVE (RFC 6851) and UID EXPUNGE (RFC 4315) leave exactly the right messages."""
    with session(running) as client:
        source = new_folder(client, "Client/Source")
        target = new_folder(client, "Client/Target")
        uids = [appended_uid(client.append(source, note(f"message {n}"))) for n in range(4)]
        client.select_folder(source)
        for name in ("COPYUID", "EXPUNGE"):  # start clean
            untagged(client, name)

        client.copy(uids[:2], target)
        _validity, copied, created = untagged(client, "COPYUID")[0].split()
        assert (uid_set(copied), uid_set(created)) == (uids[:2], [1, 2])
        assert client.folder_status(target, ["MESSAGES"])[b"MESSAGES"] == 2
        assert sorted(client.search("ALL")) == uids  # COPY leaves the source alone

        client.move([uids[2]], target)
        _validity, moved, created = untagged(client, "COPYUID")[0].split()
        assert (uid_set(moved), uid_set(created)) == ([uids[2]], [3])
        assert untagged(client, "EXPUNGE") == [b"3"]
        assert sorted(client.search("ALL")) == [uids[0], uids[1], uids[3]]
        assert client.folder_status(target, ["MESSAGES"])[b"MESSAGES"] == 3

        client.add_flags([uids[0], uids[1]], [b"\\Deleted"])
        client.uid_expunge([uids[0]])
        assert untagged(client, "EXPUNGE") == [b"1"]  # only the one named, though two are \Deleted
        assert sorted(client.search("ALL")) == [uids[1], uids[3]]  # the other \Deleted one stays
        assert b"\\Deleted" in client.get_flags([uids[1]])[uids[1]]

        client.select_folder(target)
        subjects = sorted(d[b"BODY[HEADER.FIELDS (SUBJECT)]"] for d in
                          client.fetch(client.search("ALL"), ["BODY.PEEK[HEADER.FIELDS (SUBJECT)]"]).values())
        assert subjects == [f"Subject: message {n}\r\n\r\n".encode() for n in range(3)]


def test_imapclient_idle_is_woken_by_an_append_from_another_connection(running: RunningOperator) -> None:
    """IDLE (RFC 2177): another session's APPEND arrives as EXISTS, promptly; DONE ends the IDLE."""
    with session(running) as watcher, session(running) as writer:
        folder = new_folder(writer, "Client/Idle")
        appended_uid(writer.append(folder, note("déjà là")))
        assert watcher.select_folder(folder)[b"EXISTS"] == 1
        watcher.idle()
        assert watcher.idle_check(timeout=0.3) == []  # nothing happens while nothing changes
        uid = appended_uid(writer.append(folder, note("nouveau compte rendu")))
        responses = watcher.idle_check(timeout=30)  # pushed at once; a busy machine may take its time
        _text, more = watcher.idle_done()
        assert (2, b"EXISTS") in responses + more and (2, b"RECENT") in responses + more
        assert watcher.search(["SUBJECT", "nouveau"]) == [uid]


def test_imapclient_condstore(running: RunningOperator) -> None:
    """ENABLE CONDSTORE; MODSEQ per message; FETCH CHANGEDSINCE; SEARCH MODSEQ; HIGHESTMODSEQ in STATUS."""
    with session(running) as client, session(running) as other:
        folder = new_folder(client, "Client/Condstore")
        uids = [appended_uid(client.append(folder, note(f"n°{n}"))) for n in range(3)]
        assert client.enable("CONDSTORE") == [b"CONDSTORE"]
        selected = client.select_folder(folder)
        highest = selected[b"HIGHESTMODSEQ"]
        modseqs = {uid: data[b"MODSEQ"][0] for uid, data in client.fetch(uids, ["MODSEQ"]).items()}
        assert sorted(modseqs) == uids and max(modseqs.values()) == highest
        assert client.fetch(uids, ["FLAGS"], modifiers=[f"CHANGEDSINCE {highest}"]) == {}

        other.select_folder(folder)
        other.add_flags([uids[1]], [b"\\Seen"])
        changed = client.fetch(uids, ["FLAGS"], modifiers=[f"CHANGEDSINCE {highest}"])
        assert list(changed) == [uids[1]]
        assert set(changed[uids[1]][b"FLAGS"]) == {b"\\Seen", RECENT}  # \Recent: this session selected first
        new_modseq = changed[uids[1]][b"MODSEQ"][0]  # CHANGEDSINCE implies MODSEQ (RFC 7162 3.1.4.1)
        assert new_modseq > highest

        found = client.search(["MODSEQ", highest + 1])
        assert list(found) == [uids[1]] and found.modseq == new_modseq
        assert client.folder_status(folder, ["HIGHESTMODSEQ"])[b"HIGHESTMODSEQ"] == new_modseq
        stored = client.fetch([uids[1]], ["MODSEQ"])[uids[1]][b"MODSEQ"][0]
        assert stored == new_modseq


def test_imapclient_idle_reports_flag_changes_with_modseq_once_condstore_is_enabled(running: RunningOperator) -> None:
    """After ENABLE CONDSTORE, another session's STORE reaches an IDLE client as FETCH with UID and MODSEQ."""
    with session(running) as watcher, session(running) as writer:
        folder = new_folder(writer, "Client/IdleFlags")
        uid = appended_uid(writer.append(folder, note("à relire")))
        watcher.enable("CONDSTORE")
        highest = watcher.select_folder(folder)[b"HIGHESTMODSEQ"]
        writer.select_folder(folder)
        watcher.idle()
        writer.add_flags([uid], [b"\\Flagged"])
        responses = watcher.idle_check(timeout=5)
        responses += watcher.idle_done()[1]
        fetches = [r for r in responses if len(r) > 2 and r[1] == b"FETCH"]
        assert len(fetches) == 1 and fetches[0][0] == 1
        items = fetches[0][2]
        fields = dict(zip(items[::2], items[1::2], strict=True))
        assert set(fields[b"FLAGS"]) == {b"\\Flagged", RECENT} and fields[b"UID"] == uid
        assert fields[b"MODSEQ"][0] > highest


# --- aioimaplib -----------------------------------------------------------------------------------------


async def aio_session(running: RunningOperator, address: str = DOCTOR) -> aioimaplib.IMAP4_SSL:
    """An aioimaplib client logged in over implicit TLS."""
    client = aioimaplib.IMAP4_SSL("127.0.0.1", running.port("imaps"), ssl_context=tls_context(running), timeout=10)
    await client.wait_hello_from_server()
    response = await client.login(address, password(running, address))
    assert response.result == "OK", response
    assert client.get_state() == "AUTH"
    return client


def test_aioimaplib_logs_in_appends_fetches_and_logs_out(running: RunningOperator) -> None:
    """An asyncio session: login over TLS, select, append, fetch, search, logout."""

    async def scenario() -> None:
        client = await aio_session(running)
        created = await client.create("Aio/Lecture")
        assert created.result == "OK", created
        selected = await client.select("Aio/Lecture")
        assert selected.result == "OK" and b"0 EXISTS" in selected.lines
        assert client.get_state() == "SELECTED"

        appended = await client.append(REPORT, mailbox="Aio/Lecture", flags="(\\Flagged)",
                                       date=datetime(2026, 3, 3, 9, 20, tzinfo=UTC))
        assert appended.result == "OK", appended
        uid = appended_uid(appended.lines[-1])
        assert b"1 EXISTS" in appended.lines  # the selected folder grew: told at once

        fetched = await client.fetch("1", "(UID FLAGS INTERNALDATE BODY.PEEK[])")
        assert fetched.result == "OK", fetched
        head = fetched.lines[0]
        assert head.startswith(b"1 FETCH (") and f"UID {uid}".encode() in head
        assert b"FLAGS (\\Flagged \\Recent)" in head and b'INTERNALDATE " 3-Mar-2026 09:20:00 +0000"' in head
        assert head.endswith(f"BODY[] {{{len(REPORT)}}}".encode())
        assert bytes(fetched.lines[1]) == REPORT and fetched.lines[2] == b")"

        # aioimaplib sends CHARSET utf-8 and its arguments verbatim (8-bit text would go out as a bare atom,
        # which RFC 3501 forbids): an ASCII string here, the UTF-8 searches are imapclient's, with literals.
        found = await client.search("SUBJECT", '"JEUN"')
        assert found.result == "OK" and found.lines[0] == b"1"
        missing = await client.search("FROM", '"clinique-ouest"')
        assert missing.result == "OK" and missing.lines[0] == b""

        response = await client.logout()
        assert response.result == "OK" and any(line.startswith(b"BYE") for line in response.lines)
        assert client.get_state() == "LOGOUT"

    asyncio.run(scenario())


def test_aioimaplib_idle_is_woken_by_another_sessions_append(running: RunningOperator) -> None:
    """IDLE in asyncio: the push arrives as EXISTS when another session appends; DONE completes the command."""

    async def scenario() -> None:
        watcher, writer = await aio_session(running), await aio_session(running)
        assert (await writer.create("Aio/Idle")).result == "OK"
        assert (await watcher.select("Aio/Idle")).result == "OK"
        idle = await watcher.idle_start(timeout=10)
        assert watcher.has_pending_idle()

        appended = await writer.append(note("résultat urgent"), mailbox="Aio/Idle")
        assert appended.result == "OK", appended
        pushed = await watcher.wait_server_push(timeout=30)  # pushed at once; a busy machine may take its time
        assert b"1 EXISTS" in pushed, pushed

        watcher.idle_done()
        done = await asyncio.wait_for(idle, 5)
        assert done.result == "OK", done
        fetched = await watcher.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert "Subject: résultat urgent".encode() in bytes(fetched.lines[1])
        for client in (watcher, writer):
            assert (await client.logout()).result == "OK"

    asyncio.run(scenario())
