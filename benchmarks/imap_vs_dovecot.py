"""Side-by-side IMAP benchmark: the operator and Debian's Dovecot 2.3 under the same load, alternated.

Figures from different runs or machines are not comparable; the ratio operator/Dovecot measured in
one run on one machine is. The benchmark starts both servers itself:

- the operator (`mssante-operator serve`) on a fresh demo kit, its benchmark mailboxes filled through
  the Store as benchmarks/imap.py does;
- Dovecot (`dovecot -F -c CONF`, package dovecot-imapd) with everything in the temporary folder:
  implicit TLS with the kit's operator certificate (the client verifies both against the kit's CA),
  a static passdb (one password for every benchmark user, the operator's accounts get the same one),
  maildirs written directly (the same lab reports, same seed, same arrival times; the operator's
  special-use folders as maildir folders), Dovecot's defaults otherwise (only process and connection
  limits raised so that every benchmark client gets in).

The load: --clients clients, each on its own mailbox of --messages lab reports (~--size bytes),
looping over sessions that look like a mail client's: connect+TLS, LOGIN, LIST and STATUS (often),
SELECT INBOX, FETCH 1:* (FLAGS UID), UID STORE \\Deleted + UID EXPUNGE of the message the client's
previous session appended, then 4-10 commands drawn by weight (header and BODYSTRUCTURE FETCH of a
20-message window, full BODY.PEEK[] of one message, UID STORE of flags and keywords, at most one
APPEND followed by UID FETCH of its FLAGS), LOGOUT. Every draw comes from an RNG seeded by (round,
client), so both servers get the same sequence. After one warm-up session per client on each server,
--rounds rounds alternate: operator for --duration seconds, Dovecot for --duration seconds, and so on.

Printed: per command ops/s, p50 and p99 for each server and the ratios operator/Dovecot (ops/s, p50),
the median and the lowest ops/s ratio; CPU seconds per session of each whole process tree (supervisor,
workers, mes_bridge; Dovecot's master and every child, the ended ones included), measured around each
round; with --idle N, the PSS of each tree with N IDLE TLS clients. The last line is a JSON summary.

The responses are checked (per server): no BAD and no NO; an appended message is \\Recent in the
session that appended it and not in the next one; every keyword STOREd is in FLAGS by the time the
STORE completes, in PERMANENTFLAGS (or \\* is), and in FLAGS at the next SELECT; a full FETCH returns
exactly the bytes loaded (looked up by Message-ID). Any violation makes the exit status 1.

    .venv/bin/python benchmarks/imap_vs_dovecot.py [--clients 20] [--messages 300] [--size 50000]
        [--rounds 3] [--duration 30] [--idle 1000] [--workers N] [--seed 19] [--keep DIR]
    .venv/bin/python benchmarks/imap_vs_dovecot.py --quick     a smoke run in about a minute
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import random
import re
import shutil
import ssl
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from imap import (
    DOMAIN,
    HOST,
    WINDOW,
    Account,
    Stats,
    Target,
    add_accounts,
    configure,
    lab_report,
    load_mailboxes,
    login_command,
    mailbox_messages,
    open_idler,
    percentile,
    raise_fd_limit,
    serving,
    stop_process,
    wait_for_port,
    with_defaults,
    work_folder,
)
from imap_client import ImapClient, ImapError, Response
from process_tree import ServerMemory

from mssante_operator.demo_kit import OPERATOR_CERT, OPERATOR_KEY, create_kit, free_ports
from mssante_operator.store.folders import SPECIAL_FOLDERS

FULL = {"clients": 20, "messages": 300, "size": 50_000, "rounds": 3, "duration": 30.0, "idle": 1000}
QUICK = {"clients": 4, "messages": 40, "size": 50_000, "rounds": 1, "duration": 5.0, "idle": 0}
SERVERS = ("operator", "dovecot")
KEYWORDS = ("$Forwarded", "$Label1", "$MDNSent", "Biologie")
# The commands after SELECT, drawn by weight: reading dominates, as in a mail client.
ACTIONS = {"headers": 4, "bodystructure": 2, "body": 4, "flags": 3, "append": 1}
MAIL_UID = 65534  # nobody: Dovecot's mail processes run unprivileged

_UID = re.compile(rb"UID (\d+)")
_FETCH_FLAGS = re.compile(rb"FLAGS \(([^)]*)\)")
_FLAGS = re.compile(rb"^\* FLAGS \(([^)]*)\)", re.MULTILINE)
_PERMANENT = re.compile(rb"\[PERMANENTFLAGS \(([^)]*)\)\]")
_APPENDUID = re.compile(rb"APPENDUID \d+ (\d+)")
_MESSAGE_ID = re.compile(rb"^Message-ID: *(<[^>\r\n]*>)", re.MULTILINE | re.IGNORECASE)


# --------------------------------------------------------------------------- Dovecot


def dovecot_config(root: Path, kit: Path, port: int, password: str, connections: int) -> Path:
    """A self-contained dovecot.conf under ``root``: implicit TLS on ``port``, static password, maildirs."""
    for sub in ("run", "state", "mail"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    limit = max(100, connections + 50)  # Dovecot runs an imap and an imap-login process per TLS client
    conf = root / "dovecot.conf"
    conf.write_text(f"""# written by benchmarks/imap_vs_dovecot.py
protocols = imap
listen = {HOST}
base_dir = {root / "run"}
state_dir = {root / "state"}
log_path = {root / "dovecot.log"}
ssl = required
ssl_cert = <{kit / OPERATOR_CERT}
ssl_key = <{kit / OPERATOR_KEY}
mail_location = maildir:{root / "mail"}/%u/Maildir
mail_uid = {MAIL_UID}
mail_gid = {MAIL_UID}
first_valid_uid = {MAIL_UID}
mail_max_userip_connections = {limit}
default_process_limit = {limit}
default_client_limit = {max(1000, 2 * limit)}
passdb {{
  driver = static
  args = password={password}
}}
userdb {{
  driver = static
  args = home={root / "mail"}/%u
}}
service imap-login {{
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    address = {HOST}
    port = {port}
    ssl = yes
  }}
}}
""", encoding="utf-8")
    return conf


def load_maildirs(root: Path, accounts: list[Account], size: int, now: datetime) -> None:
    """Each account's lab reports as maildir files in cur/ (Dovecot indexes them at the first SELECT),
    and the operator's special-use folders as maildir folders; everything owned by the mail user."""
    for index, account in enumerate(accounts):
        maildir = root / account.address / "Maildir"
        for folder in [maildir] + [maildir / f".{name}" for name, _ in SPECIAL_FOLDERS]:
            for sub in ("cur", "new", "tmp"):
                (folder / sub).mkdir(parents=True, exist_ok=True)
            if folder != maildir:
                (folder / "maildirfolder").touch()
        for n, (raw, when) in enumerate(mailbox_messages(index, account, size, now)):
            stamp = int(when.timestamp())
            path = maildir / "cur" / f"{stamp}.M{n}P{os.getpid()}.bench,S={len(raw)},W={len(raw)}:2,"
            path.write_bytes(raw)
            os.utime(path, (stamp, stamp))
    for path in [root, *root.rglob("*")]:
        os.chown(path, MAIL_UID, MAIL_UID)


@contextlib.contextmanager
def dovecot_serving(conf: Path, port: int) -> Iterator[ServerMemory]:
    """Dovecot's master in the foreground (a child, so that its tree is ours to measure); stopped after."""
    process = subprocess.Popen(["dovecot", "-F", "-c", str(conf)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.STDOUT)
    try:
        wait_for_port(port)
        memory = ServerMemory(process.pid)
        try:
            yield memory
        finally:
            memory.stop()
    finally:
        stop_process(process)


# --------------------------------------------------------------------------- checks


@dataclass
class Checks:
    """Protocol violations seen in one server's responses, by kind, with a few examples."""

    counts: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    def violation(self, kind: str, detail: str) -> None:
        self.counts[kind] += 1
        if len(self.examples) < 10:
            self.examples.append(f"{kind}: {detail}"[:200])

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass
class ClientState:
    """What one client remembers of its mailbox on one server between sessions."""

    pending: int | None = None  # UID appended by the previous session, expunged by the next one
    keywords: set[bytes] = field(default_factory=set)  # keywords STOREd so far


def _flags(text: bytes) -> set[bytes]:
    return {flag.lower() for flag in text.split()}


class Refused(ImapError):
    """A command got BAD or NO (already counted as a violation): the session stops there."""


class Session:
    """One mail-client session on one server: timed commands whose responses are checked."""

    def __init__(self, client: ImapClient, stats: Stats, checks: Checks, expected: dict[bytes, bytes]) -> None:
        self.client, self.stats, self.checks, self.expected = client, stats, checks, expected
        self.flags: set[bytes] = set()

    async def run(self, name: str, text: str, *, literal: bytes | None = None, data: bool = False) -> Response:
        """One timed command; BAD or NO is a violation; untagged FLAGS update what the session knows."""
        response = await self.stats.timed(name, self.client.command(text, literal=literal, keep=True, data=data))
        if not response.ok:
            self.checks.violation(f"{response.status} to {name}", response.text.decode(errors="replace"))
            raise Refused(f"{name}: {response.status}")
        for line in response.untagged:
            if (match := _FLAGS.match(line)) is not None:
                self.flags = _flags(match.group(1))
        return response

    def check_body(self, uid: int, response: Response) -> None:
        body = response.literals[0] if response.literals else b""
        match = _MESSAGE_ID.search(body.partition(b"\r\n\r\n")[0])
        digest = self.expected.get(match.group(1)) if match else None
        if digest is None or hashlib.sha256(body).digest() != digest:
            self.checks.violation("FETCH BODY[] differs from the message loaded",
                                  f"UID {uid}: {len(body)} bytes")


async def mail_session(target: Target, account: Account, rng: random.Random, stats: Stats, checks: Checks,
                       state: ClientState, expected: dict[bytes, bytes], appends: list[bytes]) -> None:
    started = time.perf_counter()
    client = await target.connect()
    stats.add("connect+TLS", time.perf_counter() - started)
    try:
        s = Session(client, stats, checks, expected)
        await s.run("LOGIN", login_command(account))
        if rng.random() < 0.6:
            await s.run("LIST", 'LIST "" "*"')
        if rng.random() < 0.5:
            await s.run("STATUS", "STATUS INBOX (MESSAGES UIDNEXT UNSEEN)")
        selected = await s.run("SELECT INBOX", "SELECT INBOX")
        permanent = next((_flags(m.group(1)) for line in selected.untagged
                          if (m := _PERMANENT.search(line)) is not None), set())
        for keyword in state.keywords - s.flags:
            checks.violation("keyword stored earlier missing from FLAGS at SELECT", keyword.decode())
        listing = await s.run("FETCH 1:* (FLAGS UID)", "FETCH 1:* (FLAGS UID)")
        flags: dict[int, set[bytes]] = {}
        for line in listing.untagged:
            uid, found = _UID.search(line), _FETCH_FLAGS.search(line)
            if uid is not None and found is not None:
                flags[int(uid.group(1))] = _flags(found.group(1))
        uids = sorted(flags)
        if state.pending is not None:
            if b"\\recent" in flags.get(state.pending, set()):
                checks.violation("\\Recent in a second session", f"UID {state.pending}")
            await s.run("UID STORE +FLAGS (\\Deleted)", f"UID STORE {state.pending} +FLAGS.SILENT (\\Deleted)")
            await s.run("UID EXPUNGE", f"UID EXPUNGE {state.pending}")
            uids = [u for u in uids if u != state.pending]
            state.pending = None
        appended = False
        for _ in range(rng.randint(4, 10)):
            action = rng.choices(list(ACTIONS), weights=list(ACTIONS.values()))[0]
            if action in ("headers", "bodystructure"):
                start = rng.randrange(0, max(1, len(uids) - WINDOW + 1))
                window = f"{uids[start]}:{uids[min(len(uids), start + WINDOW) - 1]}"
                item = "BODY.PEEK[HEADER]" if action == "headers" else "BODYSTRUCTURE"
                await s.run(f"UID FETCH {WINDOW} x {item}", f"UID FETCH {window} ({item})")
            elif action == "body":
                uid = rng.choice(uids)
                s.check_body(uid, await s.run("UID FETCH 1 x BODY.PEEK[]", f"UID FETCH {uid} (BODY.PEEK[])",
                                              data=True))
            elif action == "flags":
                await _store_flags(s, rng, uids, permanent, state)
            elif not appended:
                appended = True
                await append_message(s, rng, appends, state)
        await s.run("LOGOUT", "LOGOUT")
    finally:
        await client.close()


async def _store_flags(s: Session, rng: random.Random, uids: list[int], permanent: set[bytes],
                       state: ClientState) -> None:
    chosen = ",".join(str(u) for u in rng.sample(uids, min(len(uids), rng.randint(1, 3))))
    kind = rng.randrange(4)
    if kind == 0:
        await store_keyword(s, chosen, rng.choice(KEYWORDS), permanent, state)
    else:
        change = ("+FLAGS.SILENT (\\Seen)", "-FLAGS.SILENT (\\Seen)", "+FLAGS.SILENT (\\Flagged)")[kind - 1]
        await s.run("UID STORE +/-FLAGS", f"UID STORE {chosen} {change}")


async def store_keyword(s: Session, uids: str, keyword: str, permanent: set[bytes], state: ClientState) -> None:
    """STORE a keyword; by its completion the server must have announced it in FLAGS (RFC 3501 7.2.6),
    and PERMANENTFLAGS must have allowed it."""
    await s.run("UID STORE +FLAGS (keyword)", f"UID STORE {uids} +FLAGS.SILENT ({keyword})")
    lowered = keyword.lower().encode()
    state.keywords.add(lowered)
    if lowered not in s.flags:
        s.checks.violation("keyword STOREd but not announced in FLAGS", keyword)
    if lowered not in permanent and b"\\*" not in permanent:
        s.checks.violation("keyword STOREd but not in PERMANENTFLAGS", keyword)


async def append_message(s: Session, rng: random.Random, appends: list[bytes], state: ClientState) -> None:
    """APPEND to the selected INBOX: the new message must be \\Recent in this session (the first to be
    told of it) and, checked by the next session, in no other."""
    response = await s.run("APPEND ~50 KB", "APPEND INBOX (\\Seen)", literal=rng.choice(appends))
    match = _APPENDUID.search(response.text)
    if match is None:
        s.checks.violation("APPEND without APPENDUID", response.text.decode(errors="replace"))
        return
    uid = int(match.group(1))
    state.pending = uid
    fetched = await s.run("UID FETCH 1 x FLAGS", f"UID FETCH {uid} (FLAGS)")
    if not any(b"\\recent" in _flags(m.group(1)) for line in fetched.untagged
               if (m := _FETCH_FLAGS.search(line)) is not None):
        s.checks.violation("appended message not \\Recent in the session that appended it", f"UID {uid}")


# --------------------------------------------------------------------------- rounds


@dataclass
class Server:
    """One server under test: where it listens, its tree, and what the rounds measured."""

    name: str
    target: Target
    memory: ServerMemory
    states: list[ClientState]
    stats: Stats = field(default_factory=Stats)
    checks: Checks = field(default_factory=Checks)
    seconds: float = 0.0
    sessions: int = 0
    cpu: float = 0.0


async def _client(server: Server, index: int, account: Account, seed: int, deadline: float | None,
                  stats: Stats, expected: dict[bytes, bytes], appends: list[bytes]) -> int:
    """One client's sessions until ``deadline`` (one session when None); returns the sessions completed."""
    rng = random.Random(seed)
    done = 0
    while True:
        try:
            await mail_session(server.target, account, rng, stats, server.checks, server.states[index],
                               expected, appends)
            done += 1
        except Refused:
            await asyncio.sleep(0.1)
        except (ImapError, OSError, TimeoutError, asyncio.IncompleteReadError, ssl.SSLError) as exc:
            server.checks.violation("session aborted", repr(exc))
            await asyncio.sleep(0.1)
        if deadline is None or time.perf_counter() >= deadline:
            return done


def run_round(server: Server, accounts: list[Account], seed: int, duration: float | None,
              expected: dict[bytes, bytes], appends: list[bytes]) -> None:
    """Every client on its mailbox for ``duration`` seconds (None: one warm-up session each, not counted)."""
    stats = server.stats if duration is not None else Stats()
    cpu_before = server.memory.cpu_seconds()
    started = time.perf_counter()
    deadline = None if duration is None else started + duration

    async def clients() -> list[int]:
        return list(await asyncio.gather(*(
            _client(server, i, account, seed * 1000 + i, deadline, stats, expected, appends)
            for i, account in enumerate(accounts))))

    sessions = sum(asyncio.run(clients()))
    if duration is not None:
        server.seconds += time.perf_counter() - started
        server.sessions += sessions
        server.cpu += server.memory.cpu_seconds() - cpu_before


def command_rows(servers: dict[str, Server]) -> list[dict[str, Any]]:
    """Per command: ops/s, p50, p99 of each server, and the ratios operator/Dovecot."""
    rows = []
    operator, dovecot = servers["operator"], servers["dovecot"]
    names = list(operator.stats.latencies) + [n for n in dovecot.stats.latencies if n not in operator.stats.latencies]
    for name in names:
        row: dict[str, Any] = {"op": name}
        for server in (operator, dovecot):
            values = sorted(server.stats.latencies.get(name, []))
            row[server.name] = {"count": len(values), "per_s": round(len(values) / max(server.seconds, 1e-9), 1),
                                "p50_ms": round(percentile(values, 0.5) * 1000, 2),
                                "p99_ms": round(percentile(values, 0.99) * 1000, 2)}
        mine, theirs = row["operator"], row["dovecot"]
        row["ratio_per_s"] = round(mine["per_s"] / theirs["per_s"], 2) if theirs["per_s"] else None
        row["ratio_p50"] = round(mine["p50_ms"] / theirs["p50_ms"], 2) if theirs["p50_ms"] > 0 else None
        rows.append(row)
    return rows


def print_comparison(rows: list[dict[str, Any]]) -> None:
    print(f"\n  {'command':<30}{'operator':>26}{'dovecot':>26}{'operator/dovecot':>22}")
    print(f"  {'':<30}" + f"{'ops/s':>10}{'p50 ms':>8}{'p99 ms':>8}" * 2 + f"{'ops/s':>11}{'p50':>11}")
    for r in rows:
        cells = "".join(f"{r[s]['per_s']:>10}{r[s]['p50_ms']:>8}{r[s]['p99_ms']:>8}" for s in SERVERS)
        print(f"  {r['op']:<30}{cells}{_times(r['ratio_per_s']):>11}{_times(r['ratio_p50']):>11}")


def _times(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


# --------------------------------------------------------------------------- IDLE memory


async def _idle_pss(server: Server, accounts: list[Account], count: int) -> dict[str, Any]:
    """PSS of the server's tree with no client, then with ``count`` IDLE TLS clients."""
    await asyncio.sleep(1)
    before = server.memory.pss()
    gate = asyncio.Semaphore(20)
    opening = [open_idler(server.target, accounts[i % len(accounts)], i % len(accounts), gate, [])
               for i in range(count)]
    results = await asyncio.gather(*opening, return_exceptions=True)
    idlers = [r for r in results if not isinstance(r, BaseException)]
    await asyncio.sleep(3)  # let the processes settle
    with_idle = server.memory.pss()
    processes = len(server.memory.tree())
    for idler in idlers:
        with contextlib.suppress(ImapError, OSError):
            idler.client.send(b"DONE\r\n")
        await idler.client.close()
    if len(idlers) < count:
        server.checks.violation("IDLE client failed", f"{count - len(idlers)} of {count}")
    return {"clients": len(idlers), "processes": processes, "pss_before_mb": round(before / 2**20, 1),
            "pss_idle_mb": round(with_idle / 2**20, 1),
            "kb_per_client": round((with_idle - before) / max(1, len(idlers)) / 1024, 1)}


# --------------------------------------------------------------------------- main


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run (about a minute)")
    parser.add_argument("--clients", type=int, help=f"clients, one mailbox each (default {FULL['clients']})")
    parser.add_argument("--messages", type=int, help=f"messages per mailbox (default {FULL['messages']})")
    parser.add_argument("--size", type=int, help=f"bytes per message (default {FULL['size']})")
    parser.add_argument("--rounds", type=int, help=f"rounds per server, alternated (default {FULL['rounds']})")
    parser.add_argument("--duration", type=float, help=f"seconds per round (default {FULL['duration']:g})")
    parser.add_argument("--idle", type=int, help=f"IDLE clients for the memory part (default {FULL['idle']}; "
                                                 "0 in --quick)")
    parser.add_argument("--workers", type=int, default=0, help="the operator's [server] workers (0: one per CPU)")
    parser.add_argument("--seed", type=int, default=19, help="seed of the clients' random work")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    args = with_defaults(parser.parse_args(), FULL, QUICK)
    # what benchmarks/imap.py's configure() reads
    args.mailboxes, args.no_login_cache = args.clients, False
    return args


def main() -> int:
    args = _arguments()
    if shutil.which("dovecot") is None:
        raise SystemExit("dovecot is not installed (apt-get install dovecot-imapd; scripts/bootstrap.sh does)")
    raise_fd_limit(4 * (args.idle + args.clients) + 200)
    with work_folder(args.keep, "mss-imap-vs-dovecot-") as base:
        base.chmod(0o755)  # Dovecot's mail processes (nobody) reach their maildirs through it
        return _run(args, base)


def _run(args: argparse.Namespace, base: Path) -> int:
    home = base / "kit"
    manifest = create_kit(home)
    changes = configure(home, args)
    rng = random.Random(args.seed)
    password = f"pw-{rng.getrandbits(64):016x}"
    accounts = [Account(f"banc.{n:02d}@{DOMAIN}", password, args.messages) for n in range(args.clients)]
    add_accounts(home, accounts)
    now = datetime.now(UTC)
    started = time.perf_counter()
    load_mailboxes(home, accounts, args.size, now=now)
    dovecot_root = base / "dovecot"
    dovecot_port = free_ports(1)[0]
    conf = dovecot_config(dovecot_root, home, dovecot_port, password, args.clients + args.idle)
    load_maildirs(dovecot_root / "mail", accounts, args.size, now)
    expected = {}
    for index, account in enumerate(accounts):
        for raw, _ in mailbox_messages(index, account, args.size, now):
            expected[_MESSAGE_ID.search(raw).group(1)] = hashlib.sha256(raw).digest()  # type: ignore[union-attr]
    appends = [lab_report(random.Random(9000 + n), accounts[0].address, 90_000 + n, args.size, now)
               for n in range(16)]
    expected.update({_MESSAGE_ID.search(raw).group(1): hashlib.sha256(raw).digest()  # type: ignore[union-attr]
                     for raw in appends})
    print(f"{len(accounts)} mailboxes of {args.messages} messages (~{args.size // 1000} KB) loaded into both "
          f"servers in {time.perf_counter() - started:.1f} s; operator config.toml: {json.dumps(changes)}",
          flush=True)

    context = ssl.create_default_context(cafile=str(home / manifest["trust_ca"]))
    context.check_hostname = False
    operator_port = int(manifest["listeners"]["imaps"]["port"])
    log = base / "serve.log"
    with serving(home, operator_port, log, "vs-dovecot", None) as operator_tree, \
            dovecot_serving(conf, dovecot_port) as dovecot_tree:
        servers = {
            "operator": Server("operator", Target(operator_port, context, False), operator_tree,
                               [ClientState() for _ in accounts]),
            "dovecot": Server("dovecot", Target(dovecot_port, context, False), dovecot_tree,
                              [ClientState() for _ in accounts]),
        }
        for server in servers.values():  # a first session each: Dovecot indexes its maildirs, caches fill
            run_round(server, accounts, args.seed, None, expected, appends)
        for number in range(1, args.rounds + 1):
            for server in servers.values():
                run_round(server, accounts, args.seed + number, args.duration, expected, appends)
                print(f"round {number}/{args.rounds} {server.name}: {server.sessions} sessions so far", flush=True)
        idle = {}
        if args.idle:
            for server in servers.values():
                idle[server.name] = asyncio.run(_idle_pss(server, accounts, args.idle))
    return _report(args, servers, idle)


def _report(args: argparse.Namespace, servers: dict[str, Server], idle: dict[str, Any]) -> int:
    rows = command_rows(servers)
    print(f"\n{args.clients} clients, {args.messages} messages of ~{args.size // 1000} KB per mailbox, "
          f"{args.rounds} alternated round(s) of {args.duration:g} s per server, {os.cpu_count()} CPUs")
    print_comparison(rows)
    ratios = [r["ratio_per_s"] for r in rows if r["ratio_per_s"] is not None]
    median, lowest = (statistics.median(ratios), min(ratios)) if ratios else (None, None)
    lowest_op = next((r["op"] for r in rows if r["ratio_per_s"] == lowest), None)
    print(f"\n  operator/dovecot ops/s: median {_times(median)} over {len(ratios)} commands, lowest "
          f"{_times(lowest)} ({lowest_op})")
    cpu = {}
    for server in servers.values():
        cpu[server.name] = {"sessions": server.sessions, "sessions_per_s": round(server.sessions / server.seconds, 2),
                            "cpu_s": round(server.cpu, 2),
                            "cpu_ms_per_session": round(server.cpu * 1000 / max(1, server.sessions), 1)}
    cpu_ratio = round(cpu["operator"]["cpu_ms_per_session"] / max(cpu["dovecot"]["cpu_ms_per_session"], 1e-9), 2)
    for name, c in cpu.items():
        print(f"  {name}: {c['sessions']} sessions ({c['sessions_per_s']}/s), server CPU {c['cpu_s']} s, "
              f"{c['cpu_ms_per_session']} ms per session")
    print(f"  CPU per session operator/dovecot: {cpu_ratio:.2f}x")
    for name, m in idle.items():
        print(f"  {name}: PSS {m['pss_before_mb']} MB with no client, {m['pss_idle_mb']} MB with {m['clients']} "
              f"IDLE TLS clients ({m['kb_per_client']} KB each, {m['processes']} processes)")
    violations = {}
    for server in servers.values():
        violations[server.name] = dict(server.checks.counts)
        print(f"  {server.name} violations: {server.checks.total}")
        for example in server.checks.examples:
            print(f"    {example}")
    summary = {"clients": args.clients, "messages": args.messages, "size": args.size, "rounds": args.rounds,
               "duration": args.duration, "cpus": os.cpu_count(), "rows": rows,
               "median_ratio_per_s": median, "lowest_ratio_per_s": lowest, "lowest_op": lowest_op,
               "cpu": cpu, "cpu_ratio": cpu_ratio, "idle": idle, "violations": violations}
    print(json.dumps(summary))
    return 1 if any(server.checks.total for server in servers.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
