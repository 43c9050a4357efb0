"""IMAP benchmark: a mixed mail-client load, login and full-FETCH capacity, mailbox scaling, 1,000 IDLE clients.

Runs the real operator (`mssante-operator serve`, as its own process, a fresh start for each part) on
a fresh demo kit to which it adds its own PER mailboxes (annuaire.json entries and argon2 hashes in
credentials.json, written before the server starts). The mailboxes are filled in-process through the
Store API (group commits, as SMTP delivery does) before any clock starts: lab reports, multipart/mixed
with a text part and a base64 PDF attachment, ~50 KB each. The load generator is a raw asyncio IMAP
client over TLS (benchmarks/imap_client.py) so that timings are the server's, not a library's.

1. mixed: N clients on N mailboxes, each looping for --duration seconds over a mail-client session:
   connect+TLS, LOGIN, SELECT INBOX, FETCH 1:* (FLAGS UID), UID FETCH of BODY.PEEK[HEADER] and of
   BODYSTRUCTURE for 20 messages, BODY.PEEK[] of 3 messages (one command each), UID STORE +FLAGS,
   APPEND (LITERAL+), UID STORE +FLAGS (\\Deleted) and UID EXPUNGE of the appended message, LOGOUT.
   Prints ops/s, p50 and p99 per command, then the capacity of LOGIN (connect, LOGIN, LOGOUT loops;
   and the same without LOGIN, to tell the TLS handshake from the password check) and of full-message
   FETCH (logged-in clients fetching one BODY.PEEK[] per command) on their own.
2. scale: SELECT, FETCH of a 50-message window (FLAGS ENVELOPE) and a single BODY.PEEK[] on
   mailboxes of 300, 3,000 and 30,000 messages.
3. idle: --idle clients log in, SELECT INBOX (on the benchmark mailboxes, in turn) and IDLE; prints the
   server's RSS (supervisor and workers) before, at the peak of the logins and with every client idle,
   then how fast one APPEND to a mailbox, and then one APPEND to every mailbox, wake the idlers.

    .venv/bin/python benchmarks/imap.py [--clients 20] [--mailboxes 20] [--messages 300] [--size 50000]
        [--duration 60] [--capacity-duration 20] [--idle 1000] [--scale 300,3000,30000]
        [--skip-mixed] [--skip-capacity] [--skip-scale] [--skip-idle] [--workers N] [--starttls]
        [--no-login-cache] [--pyspy PREFIX] [--keep DIR]
    .venv/bin/python benchmarks/imap.py --quick     a smoke run of every part in about a minute

config.toml gets [imap] max_connections, max_connections_per_ip and max_connections_per_user high
enough for every benchmark client (all on 127.0.0.1, the IDLE clients sharing the benchmark mailboxes;
the limits count per worker), and [server] workers with --workers; the changes are printed. With
--no-login-cache it gets [auth] cache_ttl = "0": every LOGIN pays a full argon2 verification.

With --pyspy PREFIX (or BENCH_PYSPY=PREFIX) each part is recorded by py-spy (every worker) into
PREFIX-<part>.txt (raw, collapsed stacks) and the top functions are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import itertools
import json
import math
import os
import random
import re
import resource
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import tomllib
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any, TypeVar

import tomli_w

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from imap_client import ImapClient, ImapError, Response  # noqa: E402
from process_tree import ServerMemory  # noqa: E402

from mssante_base.annuaire import BalKind, MailboxEntry  # noqa: E402
from mssante_base.message.headers import summarise  # noqa: E402
from mssante_base.passwords import password_hasher  # noqa: E402
from mssante_operator.config import load_settings  # noqa: E402
from mssante_operator.demo_kit import ANNUAIRE_FILE, CREDENTIALS_FILE, create_kit  # noqa: E402
from mssante_operator.store import NewMessage, Store  # noqa: E402

T = TypeVar("T")
DOMAIN = "hopital-demo.mssante.fr"
LABO = "resultats@labo-biolab.mssante.fr"
HOST = "127.0.0.1"
WINDOW = 20  # messages per header / BODYSTRUCTURE FETCH in the mixed loop
FULL_FETCHES = 3  # BODY.PEEK[] commands per mixed loop
SCALE_WINDOW = 50

FULL = {"clients": 20, "mailboxes": 20, "messages": 300, "size": 50_000, "duration": 60.0,
        "capacity_duration": 20.0, "idle": 1000, "scale": "300,3000,30000", "scale_rounds": 20}
QUICK = {"clients": 4, "mailboxes": 4, "messages": 60, "size": 50_000, "duration": 5.0,
         "capacity_duration": 4.0, "idle": 60, "scale": "300,3000", "scale_rounds": 5}


# --------------------------------------------------------------------------- messages


_FIRST = ("Camille", "Lucas", "Léa", "Hugo", "Chloé", "Louis", "Manon", "Gabriel", "Inès", "Jules", "Zoé", "Éloïse")
_LAST = ("Martin", "Bernard", "Dubois", "Thomas", "Robert", "Richard", "Petit", "Durand", "Leroy", "Moreau")


def _encoded_word(text: str) -> str:
    """An RFC 2047 B-encoded word, as mail clients write non-ASCII subjects."""
    return "=?utf-8?b?" + base64.b64encode(text.encode()).decode() + "?="


def fake_pdf(rng: random.Random, size: int) -> bytes:
    """A PDF-looking file of ``size`` bytes: header, a few objects, one compressed (random) stream."""
    head = (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n"
            b"2 0 obj\n<< /Type /Pages /Kids [3 0 R] /Count 1 >>\nendobj\n"
            b"3 0 obj\n<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R >>\nendobj\n")
    tail = b"\nendstream\nendobj\nxref\n0 5\ntrailer\n<< /Size 5 /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n"
    stream_size = max(64, size - len(head) - len(tail) - 60)
    stream = b"4 0 obj\n<< /Length %d /Filter /FlateDecode >>\nstream\n" % stream_size
    return head + stream + rng.randbytes(stream_size) + tail % (len(head) + 9)


def lab_report(rng: random.Random, to: str, number: int, size: int, when: datetime) -> bytes:
    """A laboratory report of about ``size`` bytes: multipart/mixed, a text part and a base64 PDF."""
    patient = f"{rng.choice(_FIRST)} {rng.choice(_LAST).upper()}"
    dossier = rng.randrange(100_000, 999_999)
    boundary = f"=_bench_{rng.getrandbits(64):016x}"
    text = (f"Bonjour Docteur,\r\n\r\nVeuillez trouver ci-joint le compte rendu de biologie de {patient}"
            f" (dossier {dossier}), prélèvement du {when:%d/%m/%Y}.\r\n"
            "Résultats validés par le biologiste. Glycémie à jeun : 5,1 mmol/L ; HbA1c : 6,2 %.\r\n\r\n"
            "Laboratoire BioLab — 12 rue des Analyses, 69003 Lyon\r\n")
    header = (f"Return-Path: <{LABO}>\r\n"
              f"Received: from smtp.labo-biolab.mssante.fr (127.0.0.1) by mx.{DOMAIN}; {format_datetime(when)}\r\n"
              f"From: Laboratoire BioLab <{LABO}>\r\n"
              f"To: {to}\r\n"
              f"Subject: {_encoded_word(f'Résultats de biologie — {patient} — dossier {dossier}')}\r\n"
              f"Date: {format_datetime(when)}\r\n"
              f"Message-ID: <cr.{number}.{rng.getrandbits(48):012x}@labo-biolab.mssante.fr>\r\n"
              "MIME-Version: 1.0\r\n"
              f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n'
              "X-Mailer: BioLab SIL 7.2\r\n\r\n")
    text_part = (f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n"
                 "Content-Transfer-Encoding: 8bit\r\n\r\n").encode() + text.encode()
    pdf_head = (f"\r\n--{boundary}\r\nContent-Type: application/pdf; name=\"CR-{dossier}.pdf\"\r\n"
                f"Content-Disposition: attachment; filename=\"CR-{dossier}.pdf\"\r\n"
                "Content-Transfer-Encoding: base64\r\n\r\n").encode()
    end = f"--{boundary}--\r\n".encode()
    fixed = len(header) + len(text_part) + len(pdf_head) + len(end)
    pdf_size = max(256, (size - fixed) * 57 // 78)  # base64: 4/3, plus CRLF every 76 characters
    encoded = base64.encodebytes(fake_pdf(rng, pdf_size)).replace(b"\n", b"\r\n")
    return header.encode() + text_part + pdf_head + encoded + end


def new_message(raw: bytes, received: datetime) -> NewMessage:
    summary = summarise(raw)
    results = f"mx.{DOMAIN}; dkim=pass header.d=labo-biolab.mssante.fr"
    return NewMessage(raw=raw, message_id=summary.message_id, from_addr=summary.from_text,
                      subject=summary.subject, authentication_results=results, received_at=received)


# --------------------------------------------------------------------------- kit


@dataclass(frozen=True)
class Account:
    address: str
    password: str
    messages: int


def add_accounts(home: Path, accounts: list[Account]) -> None:
    """Annuaire entries (PER) and argon2 hashes (the product's default parameters) for ``accounts``."""
    annuaire_path = home / ANNUAIRE_FILE
    annuaire = json.loads(annuaire_path.read_text(encoding="utf-8"))
    for n, account in enumerate(accounts):
        entry = MailboxEntry(address=account.address, kind=BalKind.PER, display_name=f"Dr Banc {n:04d}",
                             rpps=f"8{n:010d}", service="Benchmark", profession_code="10",
                             profession_label="Médecin")
        annuaire["entries"].append(entry.to_json())
    annuaire_path.write_text(json.dumps(annuaire, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")

    hasher = password_hasher()  # what the product writes; argon2 releases the GIL: hash on every core
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        hashes = list(pool.map(lambda a: hasher.hash(a.password), accounts))
    credentials_path = home / CREDENTIALS_FILE
    credentials = json.loads(credentials_path.read_text(encoding="utf-8"))
    credentials.update({a.address: h for a, h in zip(accounts, hashes, strict=True)})
    credentials_path.write_text(json.dumps(credentials, indent=2) + "\n", encoding="utf-8")
    credentials_path.chmod(0o600)


def configure(home: Path, args: argparse.Namespace) -> dict[str, Any]:
    """config.toml changes for the benchmark: the worker count, and IMAP connection limits that let every
    benchmark client in (all come from 127.0.0.1, and the IDLE clients share the benchmark mailboxes).
    The limits count per worker process, and a worker may take more than its half. Returns the changes."""
    path = home / "config.toml"
    config = tomllib.loads(path.read_text(encoding="utf-8"))
    changes: dict[str, Any] = {}
    if args.workers:
        changes["server"] = {"workers": args.workers}
    if args.no_login_cache:
        changes["auth"] = {"cache_ttl": "0"}
    clients = args.idle + 2 * max(args.clients, args.mailboxes) + 50
    imap = config.get("imap", {})
    limits = {"max_connections": max(imap.get("max_connections", 5000), clients),
              "max_connections_per_ip": max(imap.get("max_connections_per_ip", 500), clients),
              "max_connections_per_user": max(imap.get("max_connections_per_user", 20),
                                              args.idle // max(1, args.mailboxes) + args.clients + 10)}
    changes["imap"] = limits
    for section, values in changes.items():
        config.setdefault(section, {}).update(values)
    path.write_text(tomli_w.dumps(config), encoding="utf-8")
    return changes


def mailbox_messages(index: int, account: Account, size: int, now: datetime) -> Iterator[tuple[bytes, datetime]]:
    """The lab reports of the ``index``-th account, oldest first, with their arrival times: the same bytes
    for the same arguments (a seeded generator), so that another server can be loaded with them too."""
    rng = random.Random(index)
    for n in range(account.messages):
        when = now - timedelta(minutes=37 * (account.messages - n))
        yield lab_report(rng, account.address, n, size, when), when


def load_mailboxes(home: Path, accounts: list[Account], size: int, batch: int = 500,
                   now: datetime | None = None) -> int:
    """Fill each account's INBOX with its lab reports through the Store (group commits), in-process."""
    settings = load_settings(home)
    store = Store(settings.database_url, settings.path(settings.storage.blob_dir))
    loaded = 0
    try:
        store.migrate()
        now = now or datetime.now(UTC)
        for index, account in enumerate(accounts):
            messages = mailbox_messages(index, account, size, now)
            while items := [(new_message(raw, when), [account.address])
                            for raw, when in itertools.islice(messages, batch)]:
                store.deliver_many(items)
                loaded += len(items)
            store.folders.ensure_account(account.address)  # the special-use folders, as a first login would
    finally:
        store.close()
    return loaded


# --------------------------------------------------------------------------- measuring


def percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


@dataclass
class Stats:
    """Latencies (seconds) and failures per operation name, in first-seen order."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: Counter[str] = field(default_factory=Counter)
    received: int = 0

    def add(self, name: str, seconds: float, response: Response | None = None) -> None:
        self.latencies[name].append(seconds)
        if response is not None:
            self.received += response.received
            if not response.ok:
                self.errors[name] += 1

    async def timed(self, name: str, operation: Awaitable[Response]) -> Response:
        started = time.perf_counter()
        response = await operation
        self.add(name, time.perf_counter() - started, response)
        return response

    def rows(self, elapsed: float) -> list[dict[str, Any]]:
        rows = []
        for name, values in self.latencies.items():
            ordered = sorted(values)
            rows.append({"op": name, "count": len(values), "per_s": round(len(values) / elapsed, 1),
                         "p50_ms": round(percentile(ordered, 0.5) * 1000, 1),
                         "p99_ms": round(percentile(ordered, 0.99) * 1000, 1),
                         "max_ms": round(ordered[-1] * 1000, 1), "errors": self.errors[name]})
        return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    print(f"  {'command':<38}{'ops':>8}{'ops/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'errors':>8}")
    for r in rows:
        print(f"  {r['op']:<38}{r['count']:>8}{r['per_s']:>9}{r['p50_ms']:>9}{r['p99_ms']:>9}{r['max_ms']:>9}"
              f"{r['errors']:>8}")


def _mb(value: float) -> float:
    return round(value / 2**20, 1)


@contextlib.contextmanager
def serving(home: Path, port: int, log: Path, part: str, pyspy: str | None) -> Iterator[ServerMemory]:
    """`mssante-operator serve` as a child process, ready (every worker accepting); stopped afterwards."""
    argv = [sys.executable, "-m", "mssante_operator.cli", "--log-level", "WARNING", "serve", "--home", str(home)]
    with log.open("ab") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        spy: subprocess.Popen[bytes] | None = None
        try:
            wait_for_port(port)
            time.sleep(2)  # let every worker reach accept()
            memory = ServerMemory(process.pid)
            if pyspy:
                spy = subprocess.Popen(
                    [str(ROOT / ".venv" / "bin" / "py-spy"), "record", "-o", f"{pyspy}-{part}.txt", "-f", "raw",
                     "--subprocesses", "-p", str(process.pid)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(1)
            try:
                yield memory
            finally:
                memory.stop()
                if spy is not None:
                    spy.send_signal(signal.SIGINT)
                    spy.wait(60)
        finally:
            stop_process(process)


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, a minute to stop, then SIGKILL."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_for_port(port: int, timeout: float = 60.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((HOST, port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


# Leaf frames of threads waiting for work (py-spy counts some of them as active): left out.
_IDLE_LEAVES = ("_worker (concurrent/futures/thread.py)", "EpollSelector.select (selectors.py)",
                "Supervisor.run (mssante_operator/workers.py)", "Condition.wait (threading.py)")


def pyspy_top(path: Path, count: int = 15) -> None:
    """Print the functions with the most samples in a py-spy raw file: on top of the stack (self) and
    anywhere in it (inclusive); frames are `function (file)`, lines merged, idle waits left out.

    py-spy sees Python threads only: the lanes argon2 hashes with are native threads, so password
    verification shows far below its real cost (the server CPU per LOGIN printed above is the truth)."""
    if not path.exists():
        print(f"  (no py-spy output at {path})")
        return
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    frame_re = re.compile(r"^(.*) \((.*?)(?::\d+)?\)$")
    for line in path.read_text(errors="replace").splitlines():
        stack, _, samples = line.rpartition(" ")
        if not samples.isdigit():
            continue
        n = int(samples)
        frames = []
        for frame in stack.split(";"):
            if frame.startswith(("process ", "thread ")):
                continue
            match = frame_re.match(frame)
            if match:
                name, file = match.groups()
                frame = f"{name} ({_short(file)})"
            frames.append(frame)
        if not frames or frames[-1].startswith(_IDLE_LEAVES):
            continue
        total += n
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    if not total:
        print(f"  py-spy {path.name}: no busy samples")
        return
    print(f"  py-spy {path.name}: {total} busy samples (idle waits left out)")
    print("  self:")
    for frame, n in own.most_common(count):
        print(f"    {100 * n / total:5.1f}%  {frame}")
    print("  inclusive (mssante_operator only):")
    ours = [(f, n) for f, n in inclusive.most_common() if "mssante_operator" in f]
    for frame, n in ours[:count]:
        print(f"    {100 * n / total:5.1f}%  {frame}")


def _short(file: str) -> str:
    for marker in ("site-packages/", "/lib/python3", "/work/main/"):
        if marker in file:
            return file.split(marker, 1)[1]
    return file


# --------------------------------------------------------------------------- IMAP sessions


@dataclass
class Target:
    port: int
    context: ssl.SSLContext
    starttls: bool

    async def connect(self) -> ImapClient:
        return await ImapClient.connect(HOST, self.port, self.context, starttls=self.starttls)


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def login_command(account: Account) -> str:
    return f"LOGIN {_quote(account.address)} {_quote(account.password)}"


_UID = re.compile(rb"UID (\d+)")
_APPENDUID = re.compile(rb"APPENDUID \d+ (\d+)")
_EXISTS = re.compile(rb"^\* (\d+) EXISTS")


def expect_ok(response: Response, what: str) -> Response:
    if not response.ok:
        raise ImapError(f"{what}: {response.status} {response.text.decode(errors='replace')}")
    return response


async def mixed_session(index: int, target: Target, account: Account, deadline: float, stats: Stats,
                        appends: list[bytes]) -> int:
    """One client's loops until ``deadline``; returns the number of complete loops."""
    rng = random.Random(1000 + index)
    loops = 0
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        try:
            client = await target.connect()
        except (OSError, TimeoutError, ImapError):
            stats.errors["connect+TLS"] += 1
            await asyncio.sleep(0.1)
            continue
        stats.add("connect+TLS", time.perf_counter() - started)
        try:
            await _mixed_loop(client, rng, account, stats, appends, loops)
            loops += 1
        except (ImapError, OSError, asyncio.IncompleteReadError) as exc:
            stats.errors["loop aborted"] += 1
            print(f"  client {index}: {exc}", file=sys.stderr)
        finally:
            await client.close()
    return loops


async def _mixed_loop(client: ImapClient, rng: random.Random, account: Account, stats: Stats,
                      appends: list[bytes], loop: int) -> None:
    expect_ok(await stats.timed("LOGIN", client.command(login_command(account))), "LOGIN")
    expect_ok(await stats.timed("SELECT INBOX", client.command("SELECT INBOX")), "SELECT")
    listing = expect_ok(await stats.timed("FETCH 1:* (FLAGS UID)", client.command("FETCH 1:* (FLAGS UID)", keep=True)),
                      "FETCH 1:*")
    uids = [int(m.group(1)) for line in listing.untagged if (m := _UID.search(line))]
    if len(uids) < WINDOW:
        raise ImapError(f"only {len(uids)} messages in {account.address}")
    start = rng.randrange(0, len(uids) - WINDOW + 1)
    window = f"{uids[start]}:{uids[start + WINDOW - 1]}"
    await stats.timed(f"UID FETCH {WINDOW} x BODY.PEEK[HEADER]",
                      client.command(f"UID FETCH {window} (BODY.PEEK[HEADER])"))
    await stats.timed(f"UID FETCH {WINDOW} x BODYSTRUCTURE", client.command(f"UID FETCH {window} (BODYSTRUCTURE)"))
    read = rng.sample(uids, FULL_FETCHES)
    for uid in read:
        await stats.timed("UID FETCH 1 x BODY.PEEK[] (full)", client.command(f"UID FETCH {uid} (BODY.PEEK[])"))
    change = "+FLAGS.SILENT (\\Seen \\Flagged)" if loop % 2 == 0 else "-FLAGS.SILENT (\\Flagged)"
    await stats.timed("UID STORE +/-FLAGS", client.command(f"UID STORE {','.join(map(str, read))} {change}"))
    appended = expect_ok(await stats.timed("APPEND ~50 KB (LITERAL+)",
                                         client.command("APPEND INBOX (\\Seen)", literal=rng.choice(appends))),
                       "APPEND")
    match = _APPENDUID.search(appended.text)
    if match is None:
        raise ImapError(f"APPEND without APPENDUID: {appended.text!r}")
    uid = match.group(1).decode()
    await stats.timed("UID STORE +FLAGS (\\Deleted)", client.command(f"UID STORE {uid} +FLAGS.SILENT (\\Deleted)"))
    await stats.timed("UID EXPUNGE", client.command(f"UID EXPUNGE {uid}"))
    await stats.timed("LOGOUT", client.command("LOGOUT"))


async def connect_session(target: Target, account: Account | None, deadline: float, stats: Stats) -> None:
    """Capacity of LOGIN: connect, LOGIN, LOGOUT, again; without an account, what a connection alone
    costs (connect with its TLS handshake, LOGOUT)."""
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        try:
            client = await target.connect()
        except (OSError, TimeoutError, ImapError):
            stats.errors["connect+TLS"] += 1
            continue
        stats.add("connect+TLS", time.perf_counter() - started)
        try:
            if account is not None:
                await stats.timed("LOGIN", client.command(login_command(account)))
            await stats.timed("LOGOUT", client.command("LOGOUT"))
        except (ImapError, OSError) as exc:
            stats.errors["loop aborted"] += 1
            print(f"  connect client: {exc}", file=sys.stderr)
        finally:
            await client.close()


async def fetch_session(index: int, target: Target, account: Account, deadline: float, stats: Stats) -> None:
    """Capacity of full-message FETCH: one logged-in client fetching one random BODY.PEEK[] at a time."""
    rng = random.Random(2000 + index)
    client = await target.connect()
    try:
        expect_ok(await client.command(login_command(account)), "LOGIN")
        expect_ok(await client.command("SELECT INBOX"), "SELECT")
        listing = await client.command("UID FETCH 1:* (UID)", keep=True)
        uids = [int(m.group(1)) for line in listing.untagged if (m := _UID.search(line))]
        while time.perf_counter() < deadline:
            await stats.timed("UID FETCH 1 x BODY.PEEK[] (full)",
                              client.command(f"UID FETCH {rng.choice(uids)} (BODY.PEEK[])"))
        await client.command("LOGOUT")
    finally:
        await client.close()


async def run_clients(sessions: list[Awaitable[T]]) -> tuple[list[T], float]:
    started = time.perf_counter()
    results = await asyncio.gather(*sessions)
    return list(results), time.perf_counter() - started


def cpu_meter(memory: ServerMemory) -> Callable[[int], dict[str, float]]:
    """Call the result with an operation count: server and client CPU ms per operation since now."""
    server_before, client_before = memory.cpu_seconds(), time.process_time()

    def per(ops: int) -> dict[str, float]:
        ops = max(ops, 1)
        return {"server_cpu_ms_per_op": round((memory.cpu_seconds() - server_before) * 1000 / ops, 2),
                "client_cpu_ms_per_op": round((time.process_time() - client_before) * 1000 / ops, 2)}

    return per


def run_mixed(args: argparse.Namespace, target: Target, accounts: list[Account], appends: list[bytes],
              memory: ServerMemory) -> dict[str, Any]:
    stats = Stats()
    memory.reset_peak()
    meter = cpu_meter(memory)
    deadline = time.perf_counter() + args.duration
    loops, elapsed = asyncio.run(run_clients([
        mixed_session(i, target, accounts[i % len(accounts)], deadline, stats, appends) for i in range(args.clients)]))
    rows = stats.rows(elapsed)
    total_ops = sum(r["count"] for r in rows)
    result = {"seconds": round(elapsed, 1), "loops": sum(loops), "loops_per_s": round(sum(loops) / elapsed, 2),
              "ops": total_ops, "ops_per_s": round(total_ops / elapsed, 1), "rows": rows,
              "errors": dict(stats.errors), "received_mb_per_s": _mb(stats.received / elapsed),
              "peak_rss_mb": _mb(memory.peak), **meter(total_ops)}
    print(f"\nmixed load: {args.clients} clients on {len(accounts)} mailboxes of {args.messages} messages "
          f"(~{args.size // 1000} KB), {result['seconds']} s, {'STARTTLS' if args.starttls else 'implicit TLS'}")
    print_table(rows)
    print(f"  loops: {result['loops']} ({result['loops_per_s']}/s); all commands: {result['ops_per_s']}/s; "
          f"received {result['received_mb_per_s']} MB/s; server CPU {result['server_cpu_ms_per_op']} ms/op, "
          f"client CPU {result['client_cpu_ms_per_op']} ms/op; server peak RSS {result['peak_rss_mb']} MB")
    if stats.errors:
        print(f"  errors: {dict(stats.errors)}")
    return result


def run_capacity(args: argparse.Namespace, target: Target, accounts: list[Account],
                 memory: ServerMemory) -> dict[str, Any]:
    results: dict[str, Any] = {}
    tests = {
        "login": ("LOGIN capacity: connect, LOGIN, LOGOUT", "LOGIN", args.capacity_duration,
                  lambda deadline, stats: [connect_session(target, accounts[i % len(accounts)], deadline, stats)
                                           for i in range(args.clients)]),
        "connect": ("the same without LOGIN: connect (TLS handshake), LOGOUT", "connect+TLS",
                    args.capacity_duration / 2,
                    lambda deadline, stats: [connect_session(target, None, deadline, stats)
                                             for _ in range(args.clients)]),
        "fetch": ("full-message FETCH capacity: one BODY.PEEK[] per command, logged-in clients",
                  "UID FETCH 1 x BODY.PEEK[] (full)", args.capacity_duration,
                  lambda deadline, stats: [fetch_session(i, target, accounts[i % len(accounts)], deadline, stats)
                                           for i in range(args.clients)]),
    }
    for name, (label, key, duration, sessions) in tests.items():
        stats = Stats()
        meter = cpu_meter(memory)
        _, elapsed = asyncio.run(run_clients(sessions(time.perf_counter() + duration, stats)))
        rows = stats.rows(elapsed)
        main_row = next(r for r in rows if r["op"] == key)
        results[name] = {"seconds": round(elapsed, 1), "rows": rows, "errors": dict(stats.errors),
                         **meter(main_row["count"])}
        print(f"\n{label} ({args.clients} clients, {results[name]['seconds']} s)")
        print_table(rows)
        print(f"  server CPU {results[name]['server_cpu_ms_per_op']} ms per {key}, "
              f"client CPU {results[name]['client_cpu_ms_per_op']} ms")
    tls = results["connect"]["server_cpu_ms_per_op"]
    print(f"\n  LOGIN alone (argon2 verification, annuaire, folders check): about "
          f"{results['login']['server_cpu_ms_per_op'] - tls:.0f} ms of server CPU; a TLS connection {tls} ms")
    return results


# --------------------------------------------------------------------------- scale


async def _scale(target: Target, accounts: list[Account], rounds: int) -> list[dict[str, Any]]:
    results = []
    for account in accounts:
        rng = random.Random(account.messages)
        client = await target.connect()
        times: dict[str, list[float]] = defaultdict(list)
        try:
            expect_ok(await client.command(login_command(account)), "LOGIN")
            uids: list[int] = []
            exists = 0
            for _ in range(rounds):
                started = time.perf_counter()
                selected = expect_ok(await client.command("SELECT INBOX", keep=True), "SELECT")
                times["select"].append(time.perf_counter() - started)
                exists = next(int(m.group(1)) for line in selected.untagged if (m := _EXISTS.match(line)))
                first = rng.randrange(1, max(2, exists - SCALE_WINDOW + 2))
                started = time.perf_counter()
                expect_ok(await client.command(f"FETCH {first}:{first + SCALE_WINDOW - 1} (FLAGS ENVELOPE)"), "FETCH")
                times["window"].append(time.perf_counter() - started)
                if not uids:
                    listing = await client.command("UID SEARCH ALL", keep=True)
                    uids = [int(u) for line in listing.untagged if line.startswith(b"* SEARCH")
                            for u in line.split()[2:]]
                started = time.perf_counter()
                expect_ok(await client.command(f"UID FETCH {rng.choice(uids)} (BODY.PEEK[])"), "FETCH BODY")
                times["body"].append(time.perf_counter() - started)
            await client.command("LOGOUT")
        finally:
            await client.close()
        row: dict[str, Any] = {"messages": exists}
        for key, values in times.items():
            ordered = sorted(values)
            row[f"{key}_p50_ms"] = round(percentile(ordered, 0.5) * 1000, 1)
            row[f"{key}_p90_ms"] = round(percentile(ordered, 0.9) * 1000, 1)
        results.append(row)
    return results


def run_scale(args: argparse.Namespace, target: Target, accounts: list[Account],
              memory: ServerMemory) -> dict[str, Any]:
    rss_before = memory.rss()
    rows = asyncio.run(_scale(target, accounts, args.scale_rounds))
    print(f"\nscaling: {args.scale_rounds} rounds per mailbox, one client at a time (ms)")
    print(f"  {'messages':>9}{'SELECT p50':>12}{'p90':>8}{'FETCH 50 (FLAGS ENVELOPE) p50':>31}{'p90':>8}"
          f"{'1 x BODY.PEEK[] p50':>21}{'p90':>8}")
    for r in rows:
        print(f"  {r['messages']:>9}{r['select_p50_ms']:>12}{r['select_p90_ms']:>8}{r['window_p50_ms']:>31}"
              f"{r['window_p90_ms']:>8}{r['body_p50_ms']:>21}{r['body_p90_ms']:>8}")
    if len(rows) > 1:
        first, last = rows[0], rows[-1]
        print(f"  {last['messages']} / {first['messages']} messages: SELECT x"
              f"{last['select_p50_ms'] / max(first['select_p50_ms'], 0.01):.1f}, FETCH window x"
              f"{last['window_p50_ms'] / max(first['window_p50_ms'], 0.01):.1f}, FETCH body x"
              f"{last['body_p50_ms'] / max(first['body_p50_ms'], 0.01):.1f}")
    print(f"  server RSS {_mb(rss_before)} MB before, peak {_mb(memory.peak)} MB")
    return {"rows": rows, "rss_before_mb": _mb(rss_before), "peak_rss_mb": _mb(memory.peak)}


# --------------------------------------------------------------------------- IDLE


@dataclass
class Idler:
    client: ImapClient
    mailbox: int
    tag: bytes


async def open_idler(target: Target, account: Account, mailbox: int, gate: asyncio.Semaphore,
                      login_times: list[float]) -> Idler:
    async with gate:
        client = await target.connect()
        try:
            started = time.perf_counter()
            expect_ok(await client.command(login_command(account)), "LOGIN")
            login_times.append(time.perf_counter() - started)
            expect_ok(await client.command("SELECT INBOX"), "SELECT")
            tag = await client.idle()
        except BaseException:
            await client.close()
            raise
        return Idler(client, mailbox, tag)


def _spread(start: float, seen: list[float | None]) -> dict[str, Any]:
    delays = sorted((t - start) * 1000 for t in seen if t is not None)
    return {"woken": len(delays), "of": len(seen),
            "min_ms": round(delays[0], 1) if delays else None,
            "p50_ms": round(percentile(delays, 0.5), 1) if delays else None,
            "p99_ms": round(percentile(delays, 0.99), 1) if delays else None,
            "max_ms": round(delays[-1], 1) if delays else None}


async def _idle(args: argparse.Namespace, target: Target, accounts: list[Account], memory: ServerMemory,
                appends: list[bytes]) -> dict[str, Any]:
    result: dict[str, Any] = {"clients": args.idle}
    await asyncio.sleep(1)
    result["rss_baseline_mb"] = _mb(memory.rss())
    result["pss_baseline_mb"] = _mb(memory.pss())
    memory.reset_peak()
    # The deliverers log in first (not selected, so they do not idle): one per mailbox.
    deliverers = []
    for account in accounts:
        client = await target.connect()
        expect_ok(await client.command(login_command(account)), "LOGIN")
        deliverers.append(client)
    gate = asyncio.Semaphore(args.idle_concurrency)
    login_times: list[float] = []
    started = time.perf_counter()
    opening = [asyncio.ensure_future(open_idler(target, accounts[i % len(accounts)], i % len(accounts), gate,
                                                 login_times)) for i in range(args.idle)]
    idlers: list[Idler] = []
    failures = 0
    for n, future in enumerate(asyncio.as_completed(opening), start=1):
        try:
            idlers.append(await future)
        except (ImapError, OSError, TimeoutError) as exc:
            failures += 1
            if failures <= 5:
                print(f"  idle client failed: {exc!r}", file=sys.stderr)
        if n % 200 == 0:
            print(f"  {n} clients idle after {time.perf_counter() - started:.0f} s", flush=True)
    ramp = time.perf_counter() - started
    ordered = sorted(login_times)
    result.update({"idle": len(idlers), "failed": failures, "ramp_s": round(ramp, 1),
                   "logins_per_s_during_ramp": round(len(login_times) / ramp, 1),
                   "login_p50_ms": round(percentile(ordered, 0.5) * 1000, 1),
                   "login_p99_ms": round(percentile(ordered, 0.99) * 1000, 1),
                   "peak_rss_during_ramp_mb": _mb(memory.peak)})
    await asyncio.sleep(3)  # let the workers settle (freed argon2 memory, pending refreshes)
    rss = memory.rss()
    result["rss_idle_mb"] = _mb(rss)
    result["pss_idle_mb"] = _mb(memory.pss())
    result["rss_per_process_mb"] = [_mb(v) for v in memory.per_process()]
    result["kb_per_idle_client"] = round((rss - result["rss_baseline_mb"] * 2**20) / max(1, len(idlers)) / 1024, 1)

    # One delivery: the idlers of mailbox 0 must each get an EXISTS (in-process for the worker that
    # took the APPEND, by the SQLite poll for the other).
    group = [idler for idler in idlers if idler.mailbox == 0]
    waits = [asyncio.ensure_future(idler.client.wait_for(b"EXISTS\r\n", 10)) for idler in group]
    t0 = time.perf_counter()
    appended = await deliverers[0].command("APPEND INBOX", literal=appends[0])
    append_ms = (time.perf_counter() - t0) * 1000
    result["one_delivery"] = {"append_ms": round(append_ms, 1), **_spread(t0, list(await asyncio.gather(*waits)))}
    if not appended.ok:
        result["one_delivery"]["append_error"] = appended.text.decode(errors="replace")

    # A delivery to every mailbox at once: every idler must wake.
    await asyncio.sleep(1)
    waits = [asyncio.ensure_future(idler.client.wait_for(b"EXISTS\r\n", 15)) for idler in idlers]
    memory.reset_peak()
    cpu_before = memory.cpu_seconds()
    t0 = time.perf_counter()
    replies = await asyncio.gather(*(client.command("APPEND INBOX", literal=appends[i % len(appends)])
                                     for i, client in enumerate(deliverers)))
    append_all_ms = (time.perf_counter() - t0) * 1000
    woken = _spread(t0, list(await asyncio.gather(*waits)))
    cpu_ms = (memory.cpu_seconds() - cpu_before) * 1000
    result["every_mailbox"] = {"appends": len(replies), "appends_failed": sum(not r.ok for r in replies),
                               "all_appends_ms": round(append_all_ms, 1), **woken,
                               "server_cpu_ms_per_woken": round(cpu_ms / max(1, woken["woken"]), 2),
                               "peak_rss_mb": _mb(memory.peak)}
    result["rss_after_wake_mb"] = _mb(memory.rss())

    async def finish(idler: Idler) -> None:
        with contextlib.suppress(ImapError, OSError, TimeoutError):
            idler.client.send(b"DONE\r\n")
            await asyncio.wait_for(idler.client.read_until_tagged(idler.tag), 30)
            await asyncio.wait_for(idler.client.command("LOGOUT"), 30)
        await idler.client.close()

    await asyncio.gather(*(finish(idler) for idler in idlers))
    for client in deliverers:
        with contextlib.suppress(ImapError, OSError):
            await client.command("LOGOUT")
        await client.close()
    return result


def run_idle(args: argparse.Namespace, target: Target, accounts: list[Account], memory: ServerMemory,
             appends: list[bytes]) -> dict[str, Any]:
    print(f"\nIDLE: opening {args.idle} clients ({args.idle_concurrency} logging in at a time) ...", flush=True)
    r = asyncio.run(_idle(args, target, accounts, memory, appends))
    print(f"  {r['idle']} clients idle ({r['failed']} failed) after {r['ramp_s']} s: "
          f"{r['logins_per_s_during_ramp']} logins/s (LOGIN p50 {r['login_p50_ms']} ms, p99 {r['login_p99_ms']} ms)")
    print(f"  server RSS: {r['rss_baseline_mb']} MB with no client, peak {r['peak_rss_during_ramp_mb']} MB while "
          f"they logged in, {r['rss_idle_mb']} MB with {r['idle']} idle ({r['kb_per_idle_client']} KB each; "
          f"per process {r['rss_per_process_mb']}); PSS {r['pss_baseline_mb']} -> {r['pss_idle_mb']} MB")
    one, every = r["one_delivery"], r["every_mailbox"]
    print(f"  one APPEND ({one['append_ms']} ms) woke {one['woken']}/{one['of']} idlers of that mailbox: "
          f"min {one['min_ms']} ms, p50 {one['p50_ms']} ms, p99 {one['p99_ms']} ms, max {one['max_ms']} ms")
    print(f"  {every['appends']} APPENDs at once (all done in {every['all_appends_ms']} ms) woke "
          f"{every['woken']}/{every['of']} idlers: min {every['min_ms']} ms, p50 {every['p50_ms']} ms, "
          f"p99 {every['p99_ms']} ms, max {every['max_ms']} ms; server CPU {every['server_cpu_ms_per_woken']} ms "
          f"per idler woken; peak RSS {every['peak_rss_mb']} MB")
    return r


# --------------------------------------------------------------------------- main


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: small numbers for every part")
    parser.add_argument("--clients", type=int, help=f"concurrent clients (default {FULL['clients']})")
    parser.add_argument("--mailboxes", type=int, help=f"benchmark mailboxes (default {FULL['mailboxes']})")
    parser.add_argument("--messages", type=int, help=f"messages per mailbox (default {FULL['messages']})")
    parser.add_argument("--size", type=int, help=f"bytes per message (default {FULL['size']})")
    parser.add_argument("--duration", type=float, help=f"seconds of mixed load (default {FULL['duration']:g})")
    parser.add_argument("--capacity-duration", type=float,
                        help=f"seconds per capacity test (default {FULL['capacity_duration']:g})")
    parser.add_argument("--idle", type=int, help=f"IDLE clients (default {FULL['idle']})")
    parser.add_argument("--idle-concurrency", type=int, default=20, help="IDLE clients logging in at once")
    parser.add_argument("--scale", help=f"mailbox sizes for the scaling test (default {FULL['scale']})")
    parser.add_argument("--scale-rounds", type=int, help=f"timings per mailbox size (default {FULL['scale_rounds']})")
    parser.add_argument("--skip-mixed", action="store_true")
    parser.add_argument("--skip-capacity", action="store_true")
    parser.add_argument("--skip-scale", action="store_true")
    parser.add_argument("--skip-idle", action="store_true")
    parser.add_argument("--workers", type=int, default=0, help="[server] workers (0: the kit's default, one per CPU)")
    parser.add_argument("--starttls", action="store_true", help="the STARTTLS port instead of implicit TLS")
    parser.add_argument("--no-login-cache", action="store_true",
                        help="[auth] cache_ttl = \"0\": every LOGIN verifies argon2 (the cold rate)")
    parser.add_argument("--pyspy", default=os.environ.get("BENCH_PYSPY"), help="record each part with py-spy")
    parser.add_argument("--keep", type=Path, help="build the kit in this folder and keep it")
    return with_defaults(parser.parse_args(), FULL, QUICK)


def with_defaults(args: argparse.Namespace, full: dict[str, Any], quick: dict[str, Any]) -> argparse.Namespace:
    """The options not given take the --quick or the full run's value."""
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


@contextlib.contextmanager
def work_folder(keep: Path | None, prefix: str) -> Iterator[Path]:
    """A fresh folder for the run: ``keep`` (emptied, kept afterwards), or a temporary one."""
    if keep is None:
        with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
            yield Path(tmp)
        return
    shutil.rmtree(keep, ignore_errors=True)
    keep.mkdir(parents=True)
    yield keep


def raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard == resource.RLIM_INFINITY else max(soft, min(hard, max(needed, 65536)))
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft != resource.RLIM_INFINITY and soft < needed:
        raise SystemExit(f"open files limited to {soft}; {needed} needed (raise the hard limit: ulimit -Hn)")


def main() -> None:
    args = _arguments()
    raise_fd_limit(2 * args.idle + 200)  # the server (a child) inherits the limit
    scale_sizes = [] if args.skip_scale else [int(s) for s in args.scale.split(",") if s.strip()]
    results: dict[str, Any] = {"cpus": os.cpu_count(), "args": {k: v for k, v in vars(args).items()
                                                                if isinstance(v, int | float | str | bool)}}
    with work_folder(args.keep, "mss-imap-bench-") as base:
        home = base / "kit"
        started = time.perf_counter()
        manifest = create_kit(home)
        changes = configure(home, args)
        results["config"] = changes
        print(f"config.toml: {json.dumps(changes)}")
        rng = random.Random(7)
        accounts = [Account(f"banc.{n:02d}@{DOMAIN}", f"pw-{rng.getrandbits(64):016x}", args.messages)
                    for n in range(args.mailboxes)]
        scale_accounts = [Account(f"volume.{count}@{DOMAIN}", f"pw-{rng.getrandbits(64):016x}", count)
                          for count in scale_sizes]
        add_accounts(home, accounts + scale_accounts)
        total = sum(a.messages for a in accounts + scale_accounts)
        print(f"kit with {len(accounts) + len(scale_accounts)} extra mailboxes in "
              f"{time.perf_counter() - started:.1f} s; loading {total} messages of ~{args.size} bytes ...",
              flush=True)
        started = time.perf_counter()
        loaded = load_mailboxes(home, accounts + scale_accounts, args.size)
        load_s = time.perf_counter() - started
        print(f"loaded {loaded} messages in {load_s:.1f} s ({loaded / load_s:.0f}/s)", flush=True)
        results["load"] = {"messages": loaded, "seconds": round(load_s, 1)}

        name = "imap" if args.starttls else "imaps"
        port = int(manifest["listeners"][name]["port"])
        context = ssl.create_default_context(cafile=str(home / manifest["trust_ca"]))
        context.check_hostname = False
        target = Target(port, context, args.starttls)
        appends = [lab_report(random.Random(9000 + n), accounts[0].address, 90_000 + n, args.size, datetime.now(UTC))
                   for n in range(16)]
        log = base / "serve.log"
        workers = args.workers or os.cpu_count() or 1
        print(f"server: {workers} worker(s), SQLite, listener {name} (log {log})")

        if not (args.skip_mixed and args.skip_capacity):
            with serving(home, port, log, "mixed", args.pyspy) as memory:
                if not args.skip_mixed:
                    results["mixed"] = run_mixed(args, target, accounts, appends, memory)
                if not args.skip_capacity:
                    results["capacity"] = run_capacity(args, target, accounts, memory)
            if args.pyspy:
                pyspy_top(Path(f"{args.pyspy}-mixed.txt"))
        if scale_accounts:
            with serving(home, port, log, "scale", args.pyspy) as memory:
                results["scale"] = run_scale(args, target, scale_accounts, memory)
            if args.pyspy:
                pyspy_top(Path(f"{args.pyspy}-scale.txt"))
        if not args.skip_idle and args.idle:
            with serving(home, port, log, "idle", args.pyspy) as memory:
                results["idle"] = run_idle(args, target, accounts, memory, appends)
            if args.pyspy:
                pyspy_top(Path(f"{args.pyspy}-idle.txt"))
        _summary(results)
        _server_errors(log, args.keep is None)
        print(json.dumps(results))


def _server_errors(log: Path, temporary: bool) -> None:
    """Say what the server logged at ERROR (counted by message); keep a copy of a temporary log."""
    if not log.exists():
        return
    text = log.read_text(errors="replace")
    errors = Counter(line.split(" ERROR ", 1)[1][:160] for line in text.splitlines() if " ERROR " in line)
    if not errors and "Traceback" not in text:
        return
    kept = log
    if temporary:
        kept = Path(tempfile.gettempdir()) / "mss-imap-bench-serve.log"
        shutil.copyfile(log, kept)
    print(f"\nthe server logged errors (log kept in {kept}):")
    for message, count in errors.most_common(10):
        print(f"  {count} x {message}")


def _summary(results: dict[str, Any]) -> None:
    print("\ntargets:")
    capacity = results.get("capacity")
    if capacity:
        login = next(r for r in capacity["login"]["rows"] if r["op"] == "LOGIN")
        fetch = next(r for r in capacity["fetch"]["rows"] if r["op"].startswith("UID FETCH 1 x"))
        print(f"  logins/s >= 60: {login['per_s']} {'met' if login['per_s'] >= 60 else 'MISSED'}")
        print(f"  full-message FETCH/s >= 100: {fetch['per_s']} {'met' if fetch['per_s'] >= 100 else 'MISSED'}")
    mixed = results.get("mixed")
    if mixed:
        rates = {r["op"]: r["per_s"] for r in mixed["rows"]}
        print(f"  (in the mixed load: {rates.get('LOGIN')} logins/s and "
              f"{rates.get('UID FETCH 1 x BODY.PEEK[] (full)')} full-message FETCH/s, one LOGIN per three FETCH)")
    idle = results.get("idle")
    if idle:
        ok = idle["rss_idle_mb"] < 300 and idle["failed"] == 0
        print(f"  {idle['clients']} IDLE clients under 300 MB RSS: {idle['rss_idle_mb']} MB "
              f"(peak while logging in {idle['peak_rss_during_ramp_mb']} MB) {'met' if ok else 'MISSED'}")
    scale = results.get("scale")
    if scale and len(scale["rows"]) > 1:
        first, last = scale["rows"][0], scale["rows"][-1]
        flat = all(last[k] <= 2 * max(first[k], 1.0) for k in ("select_p50_ms", "window_p50_ms", "body_p50_ms"))
        print(f"  SELECT and FETCH flat from {first['messages']} to {last['messages']} messages (within 2x): "
              f"SELECT {first['select_p50_ms']} -> {last['select_p50_ms']} ms, FETCH window "
              f"{first['window_p50_ms']} -> {last['window_p50_ms']} ms, body {first['body_p50_ms']} -> "
              f"{last['body_p50_ms']} ms {'met' if flat else 'MISSED'}")


if __name__ == "__main__":
    main()
