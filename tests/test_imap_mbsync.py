"""Two-way synchronisation with a real Debian IMAP client: isync's ``mbsync`` against the operator over TLS.

mbsync keeps a Maildir in step with the server: new messages, flags and deletions travel both ways. The server
side is inspected and changed with the standard library's imaplib.
"""

from __future__ import annotations

import email
import imaplib
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from email.policy import default as default_policy
from pathlib import Path

import pytest
from support.harness import RunningOperator

DOMAIN = "hopital-demo.mssante.fr"
ORG = f"cardiologie@{DOMAIN}"
MBSYNC = shutil.which("mbsync")
pytestmark = pytest.mark.skipif(MBSYNC is None, reason="mbsync (Debian package isync) is not installed")

# isync 1.4 matches the server name against the certificate's DNS names only, never its IP addresses: it
# connects to "localhost", a DNS name of the kit's server certificate (which also names 127.0.0.1).
HOST = "localhost"
ARRIVED = datetime(2026, 2, 14, 10, 30, tzinfo=UTC)  # an arrival date, kept by mbsync's CopyArrivalDate
# Maildir flag letters (in the order Maildir requires) and the IMAP flags they stand for.
MAILDIR_FLAGS = {"D": "\\Draft", "F": "\\Flagged", "R": "\\Answered", "S": "\\Seen", "T": "\\Deleted"}


def account(running: RunningOperator, local: str) -> tuple[str, str]:
    """Address and password of a demo mailbox."""
    entry = running.mailbox(local)
    return entry["address"], entry["password"]


@contextmanager
def imap(running: RunningOperator, local: str) -> Iterator[imaplib.IMAP4_SSL]:
    """An imaplib session on the implicit-TLS port, logged in as ``local``."""
    context = running.tls_context()
    client = imaplib.IMAP4_SSL(HOST, running.port("imaps"), ssl_context=context, timeout=10)
    client.login(*account(running, local))
    try:
        yield client
    finally:
        client.logout()


def message(subject: str, body: str = "Compte rendu joint.") -> bytes:
    """A small text message with CRLF line ends, as IMAP carries it."""
    return (f"From: secretariat@{DOMAIN}\r\nTo: dr.martin@{DOMAIN}\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject.replace(' ', '.')}@{DOMAIN}>\r\nMIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
            f"{body}\r\n").encode()


def append(client: imaplib.IMAP4, folder: str, raw: bytes, flags: str = "", when: datetime | None = None) -> None:
    """APPEND ``raw`` to ``folder`` with ``flags`` and, if given, ``when`` as INTERNALDATE."""
    date = imaplib.Time2Internaldate(when) if when else None
    typ, data = client.append(folder, f"({flags})" if flags else None, date, raw)
    assert typ == "OK", data


def server_messages(client: imaplib.IMAP4, folder: str) -> dict[str, set[str]]:
    """Subject -> IMAP flags (without \\Recent) of every message of ``folder`` on the server."""
    typ, data = client.select(f'"{folder}"', readonly=False)
    assert typ == "OK", data
    typ, data = client.fetch("1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert typ == "OK", data
    found: dict[str, set[str]] = {}
    for item in data:
        if not isinstance(item, tuple):
            continue
        flags = set(re.search(rb"FLAGS \(([^)]*)\)", item[0]).group(1).decode().split()) - {"\\Recent"}
        subject = email.message_from_bytes(item[1], policy=default_policy)["Subject"]
        found[str(subject)] = flags
    client.unselect()
    return found


def set_server_flags(client: imaplib.IMAP4, folder: str, subject: str, change: str, flags: str) -> None:
    """STORE ``change`` (+FLAGS, -FLAGS) ``flags`` on the message of ``folder`` with that subject."""
    client.select(f'"{folder}"')
    typ, data = client.uid("SEARCH", "SUBJECT", f'"{subject}"')
    assert typ == "OK" and len(data[0].split()) == 1, data
    typ, data = client.uid("STORE", data[0].decode(), change, f"({flags})")
    assert typ == "OK", data
    client.unselect()


@dataclass
class MaildirMessage:
    """One message file of a Maildir folder."""

    path: Path
    flags: str  # Maildir info letters, e.g. "FS"
    raw: bytes


@dataclass
class Mbsync:
    """An mbsync configuration for one account, syncing ``patterns`` with a Maildir in ``root``."""

    running: RunningOperator
    local: str
    root: Path
    patterns: str
    auth: str = "LOGIN"  # the IMAP LOGIN command; "PLAIN" goes through Cyrus SASL (AUTHENTICATE PLAIN)

    @property
    def config(self) -> Path:
        return self.root / "mbsyncrc"

    @property
    def maildir(self) -> Path:
        return self.root / "mail"

    def write_config(self) -> None:
        """The mbsyncrc: an IMAPS account checked against the kit's CA only, a Maildir, one two-way channel."""
        address, password = account(self.running, self.local)
        self.maildir.mkdir(parents=True, exist_ok=True)
        self.config.write_text(f"""\
IMAPAccount operator
Host {HOST}
Port {self.running.port("imaps")}
User {address}
Pass {password}
SSLType IMAPS
SSLVersions TLSv1.2 TLSv1.3
CertificateFile {self.running.home / self.running.manifest["trust_ca"]}
SystemCertificates no
AuthMechs {self.auth}

IMAPStore server
Account operator

MaildirStore local
Path {self.maildir}/
Inbox {self.maildir}/INBOX
SubFolders Verbatim

Channel sync
Far :server:
Near :local:
Patterns {self.patterns}
Create Both
Expunge Both
SyncState *
Sync All
CopyArrivalDate yes
""")

    def run(self) -> str:
        """Run ``mbsync sync``; its output, after checking that it succeeded."""
        if not self.config.exists():
            self.write_config()
        done = subprocess.run([MBSYNC, "-V", "-c", str(self.config), "sync"], capture_output=True, text=True,
                              timeout=60, check=False)
        output = done.stdout + done.stderr
        assert done.returncode == 0, output
        return output

    def folder(self, name: str) -> Path:
        """The Maildir folder that mirrors server folder ``name`` (SubFolders Verbatim: same path)."""
        return self.maildir / name

    def messages(self, name: str) -> dict[str, MaildirMessage]:
        """Subject -> the message of Maildir folder ``name`` (new/ and cur/)."""
        found: dict[str, MaildirMessage] = {}
        for sub in ("new", "cur"):
            for path in (self.folder(name) / sub).iterdir():
                raw = path.read_bytes()
                subject = str(email.message_from_bytes(raw, policy=default_policy)["Subject"])
                info = path.name.partition(":2,")[2]
                assert subject not in found, f"{subject} twice in {name}"
                found[subject] = MaildirMessage(path, info, raw)
        return found

    def deliver_locally(self, name: str, raw: bytes, flags: str = "", unique: str = "") -> Path:
        """Put a message in Maildir folder ``name`` as a mail client would (new/ without flags, else cur/)."""
        folder = self.folder(name)
        for sub in ("tmp", "new", "cur"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        base = f"{int(time.time())}.{unique or 'p1'}_{len(list((folder / 'new').iterdir()))}.client"
        path = folder / ("cur" if flags else "new") / (f"{base}:2,{flags}" if flags else base)
        path.write_bytes(raw.replace(b"\r\n", b"\n"))  # a Maildir holds LF line ends
        return path

    @staticmethod
    def reflag(msg: MaildirMessage, flags: str) -> Path:
        """Give a Maildir message new flags by renaming it, as a mail client does."""
        target = msg.path.parent.parent / "cur" / f"{msg.path.name.partition(':2,')[0]}:2,{''.join(sorted(flags))}"
        msg.path.rename(target)
        return target


def without_tuid(raw: bytes) -> bytes:
    """``raw`` without the X-TUID header mbsync adds to every message it propagates (to recover its UID)."""
    return re.sub(rb"^X-TUID: \S+\r?\n", b"", raw, count=1, flags=re.MULTILINE)


def imap_flags(maildir_flags: str) -> set[str]:
    return {MAILDIR_FLAGS[letter] for letter in maildir_flags}


def test_server_messages_and_folders_arrive_in_the_maildir(running: RunningOperator, tmp_path: Path) -> None:
    """INBOX and other folders (nested and delegated ones too) come down with their contents and flags."""
    with imap(running, "dr.martin") as client:
        client.create("Dossiers/Cardiologie")
        append(client, "INBOX", message("Bilan sanguin", "Glycémie à jeun : 0,95 g/l."), when=ARRIVED)
        append(client, "INBOX", message("ECG de contrôle"), "\\Seen \\Flagged")
        append(client, "Archive", message("Ancien courrier"), "\\Seen \\Answered")
        append(client, "Dossiers/Cardiologie", message("Échographie"), "\\Draft")
        append(client, f"Shared/{ORG}/INBOX", message("Avis du service"))  # dr.martin is a delegate of the ORG box

    sync = Mbsync(running, "dr.martin", tmp_path, f"INBOX Archive Dossiers/* Shared/{ORG}/INBOX")
    sync.run()

    inbox = sync.messages("INBOX")
    assert set(inbox) == {"Bilan sanguin", "ECG de contrôle"}
    expected = message("Bilan sanguin", "Glycémie à jeun : 0,95 g/l.").replace(b"\r\n", b"\n")
    assert without_tuid(inbox["Bilan sanguin"].raw) == expected
    assert inbox["Bilan sanguin"].path.stat().st_mtime == ARRIVED.timestamp()  # CopyArrivalDate: INTERNALDATE
    assert inbox["Bilan sanguin"].flags == "" and inbox["ECG de contrôle"].flags == "FS"
    assert inbox["Bilan sanguin"].path.parent.name == "new" and inbox["ECG de contrôle"].path.parent.name == "cur"
    archive = sync.messages("Archive")
    assert {s: m.flags for s, m in archive.items()} == {"Ancien courrier": "RS"}
    assert {s: m.flags for s, m in sync.messages("Dossiers/Cardiologie").items()} == {"Échographie": "D"}
    assert set(sync.messages(f"Shared/{ORG}/INBOX")) == {"Avis du service"}
    assert (sync.maildir / "INBOX" / ".mbsyncstate").exists()

    before = sorted(p for p in sync.maildir.rglob("*") if p.is_file() and not p.name.startswith("."))
    sync.run()  # nothing changed: a second run downloads, renames and removes nothing
    assert sorted(p for p in sync.maildir.rglob("*") if p.is_file() and not p.name.startswith(".")) == before


def test_maildir_messages_and_folders_are_uploaded(running: RunningOperator, tmp_path: Path) -> None:
    """A message dropped into a Maildir folder reaches the server, and a new Maildir folder is created there."""
    sync = Mbsync(running, "ines.secretaire", tmp_path, "INBOX Projets", auth="PLAIN")
    assert "Authenticating with SASL mechanism PLAIN" in sync.run()  # an empty first sync, as a new client does
    draft = sync.deliver_locally("INBOX", message("Brouillon de lettre", "À relire avant envoi."), unique="a")
    os.utime(draft, (ARRIVED.timestamp(), ARRIVED.timestamp()))  # becomes the INTERNALDATE (CopyArrivalDate)
    sync.deliver_locally("Projets", message("Réunion de service"), flags="FS", unique="b")
    output = sync.run()
    assert "Creating far side box Projets" in output

    with imap(running, "ines.secretaire") as client:
        assert server_messages(client, "INBOX") == {"Brouillon de lettre": set()}
        assert server_messages(client, "Projets") == {"Réunion de service": {"\\Flagged", "\\Seen"}}
        client.select("INBOX")
        typ, data = client.fetch("1", "(INTERNALDATE BODY.PEEK[])")
        assert b'INTERNALDATE "' in data[0][0]
        internal = imaplib.Internaldate2tuple(data[0][0])
        assert internal is not None and time.mktime(internal) == ARRIVED.timestamp()
        assert typ == "OK"
        assert without_tuid(data[0][1]) == message("Brouillon de lettre", "À relire avant envoi.")  # CRLF again
        typ, lines = client.list('""', "Projets")
        assert typ == "OK" and lines == [b'(\\HasNoChildren) "/" "Projets"']

    uploaded = sync.messages("INBOX")["Brouillon de lettre"]
    assert ",U=" in uploaded.path.name  # mbsync recorded the server UID it got (APPENDUID)


def test_flag_changes_travel_both_ways(running: RunningOperator, tmp_path: Path) -> None:
    """Flags changed by renaming Maildir files reach the server; flags stored on the server reach the Maildir."""
    with imap(running, "paul.durand") as client:
        client.create("Suivi")
        append(client, "Suivi", message("Patient A"))
        append(client, "Suivi", message("Patient B"), "\\Seen")
        append(client, "Suivi", message("Patient C"), "\\Seen \\Flagged")
    sync = Mbsync(running, "paul.durand", tmp_path, "Suivi")
    sync.run()
    local = sync.messages("Suivi")
    assert {s: m.flags for s, m in local.items()} == {"Patient A": "", "Patient B": "S", "Patient C": "FS"}

    sync.reflag(local["Patient A"], "S")  # read in the mail client
    sync.reflag(local["Patient B"], "FRS")  # answered and flagged
    sync.reflag(local["Patient C"], "S")  # unflagged
    sync.run()
    with imap(running, "paul.durand") as client:
        assert server_messages(client, "Suivi") == {
            "Patient A": {"\\Seen"}, "Patient B": {"\\Seen", "\\Flagged", "\\Answered"}, "Patient C": {"\\Seen"}}
        set_server_flags(client, "Suivi", "Patient A", "+FLAGS", "\\Flagged \\Answered")
        set_server_flags(client, "Suivi", "Patient B", "-FLAGS", "\\Seen \\Flagged")
    sync.run()
    local = sync.messages("Suivi")
    assert {s: imap_flags(m.flags) for s, m in local.items()} == {
        "Patient A": {"\\Seen", "\\Flagged", "\\Answered"}, "Patient B": {"\\Answered"}, "Patient C": {"\\Seen"}}


def test_deletions_travel_both_ways_and_are_expunged(running: RunningOperator, tmp_path: Path) -> None:
    """A message removed or trashed in the Maildir is expunged on the server, and the other way round."""
    with imap(running, "paul.durand") as client:
        client.create("Corbeille/Essais")
        for n in range(1, 6):
            append(client, "Corbeille/Essais", message(f"Essai {n}"))
    sync = Mbsync(running, "paul.durand", tmp_path, "Corbeille/Essais")
    sync.run()
    local = sync.messages("Corbeille/Essais")
    assert set(local) == {f"Essai {n}" for n in range(1, 6)}

    local["Essai 1"].path.unlink()  # deleted by the mail client
    sync.reflag(local["Essai 2"], "T")  # marked deleted (Maildir "trashed")
    with imap(running, "paul.durand") as client:
        set_server_flags(client, "Corbeille/Essais", "Essai 3", "+FLAGS", "\\Deleted")  # deleted on the server...
        set_server_flags(client, "Corbeille/Essais", "Essai 4", "+FLAGS", "\\Deleted")
        client.select('"Corbeille/Essais"')
        typ, data = client.uid("SEARCH", "SUBJECT", '"Essai 4"')
        typ, data = client.uid("EXPUNGE", data[0].decode())  # ... and one of them already expunged there
        assert typ == "OK"
        assert server_messages(client, "Corbeille/Essais") == {
            "Essai 1": set(), "Essai 2": set(), "Essai 3": {"\\Deleted"}, "Essai 5": set()}
    sync.run()

    assert set(sync.messages("Corbeille/Essais")) == {"Essai 5"}
    with imap(running, "paul.durand") as client:
        assert server_messages(client, "Corbeille/Essais") == {"Essai 5": set()}
