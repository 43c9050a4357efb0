"""Many IMAP sessions at once on one mailbox, through two worker processes (`serve`, SQLite and PostgreSQL).

Twenty sessions SELECT, FETCH, STORE (flags and new keywords), EXPUNGE and APPEND at random for
twenty seconds while IDLE sessions watch, then the invariants are checked:

- a message is \\Recent in at most one selection, ever;
- a FETCH never shows a keyword the session's latest FLAGS response has not named;
- each session's EXISTS/EXPUNGE count never goes wrong (no EXPUNGE beyond it, no shrinking EXISTS, no
  sequence number refused) and ends equal to the store's, with the same UIDs;
- no valid command gets BAD (nor NO [SERVERBUG]);
- every IDLE session, on either worker, is woken by each delivery made through either worker.

No timing is asserted: waits are on responses, with generous deadlines for a loaded machine.
"""

from __future__ import annotations

import random
import re
import socket
import ssl
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from support.harness import (
    DOCTOR,
    configure,
    connect_process,
    kit_store,
    lab_report,
    make_kit,
    peer,
    serve_process,
    signed,
)

SESSIONS = 20
IDLERS = 6
DURATION = 20.0
KEYWORDS = [f"$Kw{n}" for n in range(40)]
WAIT = 90.0  # the most any one expected response may take (a loaded 2-core machine)

_LITERAL = re.compile(rb"\{(\d+)\+?\}\r\n$")
_FETCH = re.compile(rb"^\* (\d+) FETCH \((.*)\)\r\n$", re.DOTALL)
_FLAGS = re.compile(rb"FLAGS \(([^)]*)\)")
_UID = re.compile(rb"UID (\d+)")


def message(n: int) -> bytes:
    return (f"From: stress@hopital-demo.mssante.fr\r\nTo: {DOCTOR}\r\nSubject: stress {n}\r\n"
            f"Message-ID: <stress.{n}.{time.time_ns()}@hopital-demo.mssante.fr>\r\n\r\nbody {n}\r\n").encode()


class Client:
    """One IMAP session over TLS that checks every response it reads against the invariants."""

    def __init__(self, name: str, port: int, context: ssl.SSLContext, recent: dict[int, set[tuple[str, int]]],
                 lock: threading.Lock) -> None:
        self.name = name
        raw = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        self.local_port = raw.getsockname()[1]
        self.sock = context.wrap_socket(raw)
        self.buffer = b""
        self.tag = 0
        self.count: int | None = None  # EXISTS as this session has been told
        self.keywords: set[str] = set()  # lower case, as the latest FLAGS response named them
        self.selection = 0
        self.violations: list[str] = []
        self.recent = recent  # shared: UID -> the (session, selection) pairs it was \Recent in
        self.lock = lock
        self.changed = threading.Condition()
        self.lines: list[bytes] = []  # the untagged lines of the last command
        self.read_line()  # greeting

    # -- reading ---------------------------------------------------------------------------------

    def read_line(self) -> bytes:
        """One response line with its literals."""
        line = b""
        while True:
            while b"\r\n" not in self.buffer:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError(f"{self.name}: closed by the server after {line[:200]!r}")
                self.buffer += chunk
            part, self.buffer = self.buffer.split(b"\r\n", 1)
            line += part + b"\r\n"
            literal = _LITERAL.search(line)
            if literal is None:
                return line
            size = int(literal.group(1))
            while len(self.buffer) < size:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError(f"{self.name}: closed inside a literal")
                self.buffer += chunk
            line += self.buffer[:size]
            self.buffer = self.buffer[size:]

    def fail(self, what: str) -> None:
        self.violations.append(f"{self.name}: {what}")

    def untagged(self, line: bytes) -> None:
        words = line.split()
        if line.startswith(b"* FLAGS ("):
            self.keywords = {flag.decode().lower() for flag in line[9:line.index(b")")].split()
                             if not flag.startswith(b"\\")}
        elif len(words) >= 3 and words[2] == b"EXISTS":
            new = int(words[1])
            if self.count is not None and new < self.count:
                self.fail(f"EXISTS went down from {self.count} to {new} without EXPUNGE")
            self.count = new
        elif len(words) >= 3 and words[2] == b"EXPUNGE":
            seq = int(words[1])
            if self.count is None or not 1 <= seq <= self.count:
                self.fail(f"EXPUNGE {seq} with {self.count} messages")
            else:
                self.count -= 1
        elif (fetch := _FETCH.match(line)) is not None:
            self.fetched(int(fetch.group(1)), fetch.group(2))
        with self.changed:
            self.changed.notify_all()

    def fetched(self, seq: int, data: bytes) -> None:
        if self.count is None or seq > self.count:
            self.fail(f"FETCH {seq} with {self.count} messages")
        flags = _FLAGS.search(data)
        if flags is None:
            return
        names = flags.group(1).decode().split()
        unknown = [name for name in names if not name.startswith("\\") and name.lower() not in self.keywords]
        if unknown:
            self.fail(f"keyword {unknown} shown before a FLAGS response named it")
        uid = _UID.search(data)
        if "\\Recent" in names and uid is not None:
            with self.lock:
                self.recent[int(uid.group(1))].add((self.name, self.selection))

    # -- commands --------------------------------------------------------------------------------

    def command(self, text: bytes, literal: bytes | None = None) -> bytes:
        """Send a command (a LITERAL+ literal appended); return its tagged line, checked."""
        self.tag += 1
        tag = b"t%d" % self.tag
        if literal is not None:
            self.sock.sendall(tag + b" " + text + b" {%d+}\r\n" % len(literal) + literal + b"\r\n")
        else:
            self.sock.sendall(tag + b" " + text + b"\r\n")
        self.lines = []
        while True:
            line = self.read_line()
            if line.startswith(tag + b" "):
                break
            if line.startswith(b"* "):
                self.lines.append(line)
                self.untagged(line)
        status = line.split()[1]
        if status == b"BAD" or b"[SERVERBUG]" in line:
            self.fail(f"{text[:60]!r} -> {line.strip()[:160]!r}")
        return line

    def select(self) -> None:
        self.selection += 1
        self.count = None
        self.command(b"SELECT INBOX")

    def login(self, address: str, password: str) -> None:
        reply = self.command(b'LOGIN "%s" "%s"' % (address.encode(), password.encode()))
        assert b" OK " in reply, reply

    def close(self) -> None:
        try:
            self.command(b"LOGOUT")
        finally:
            self.sock.close()


def random_work(client: Client, rng: random.Random, until: float, serial: list[int]) -> None:
    """SELECT, FETCH, STORE, EXPUNGE and APPEND at random on INBOX until ``until``."""
    while time.monotonic() < until:
        count = client.count or 0
        roll = rng.random()
        seq = rng.randint(1, count) if count else 0
        if roll < 0.05:
            client.select()
        elif roll < 0.35 and count:
            low = rng.randint(1, count)
            client.command(b"FETCH %d:%d (UID FLAGS)" % (low, min(count, low + rng.randint(0, 10))))
        elif roll < 0.45 and count:
            client.command(b"UID FETCH 1:* (FLAGS)")
        elif roll < 0.60 and count:
            flag = rng.choice([b"\\Seen", b"\\Flagged", b"\\Answered"])
            client.command(b"STORE %d %sFLAGS (%s)" % (seq, rng.choice([b"+", b"-"]), flag))
        elif roll < 0.72 and count:
            client.command(b"STORE %d +FLAGS (%s)" % (seq, rng.choice(KEYWORDS).encode()))
        elif roll < 0.84 and count:
            client.command(b"STORE %d +FLAGS.SILENT (\\Deleted)" % seq)
            client.command(rng.choice([b"EXPUNGE", b"UID EXPUNGE 1:*"]))
        elif roll < 0.96:
            with client.lock:
                serial[0] += 1
                n = serial[0]
            client.command(b"APPEND INBOX ()", message(n))
        else:
            client.command(b"NOOP")


def idle(client: Client, stop: threading.Event) -> None:
    """IDLE until ``stop``, reading every update the server pushes."""
    client.tag += 1
    tag = b"t%d" % client.tag
    client.sock.sendall(tag + b" IDLE\r\n")
    assert client.read_line().startswith(b"+ ")
    client.sock.settimeout(0.5)
    try:
        while not stop.is_set():
            try:
                line = client.read_line()
            except TimeoutError:
                continue
            client.untagged(line)
    finally:
        client.sock.settimeout(WAIT)
    client.sock.sendall(b"DONE\r\n")
    while not (line := client.read_line()).startswith(tag + b" "):
        client.untagged(line)
    assert b" OK " in line, line


def worker_of(supervisor: int, local_ports: list[int], server_port: int) -> dict[int, int]:
    """Which worker process holds each client connection (client port -> worker pid), from /proc."""
    children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
    owner: dict[str, int] = {}
    for pid in children:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = fd.readlink().as_posix()
            except OSError:
                continue
            if target.startswith("socket:["):
                owner[target[8:-1]] = int(pid)
    found: dict[int, int] = {}
    for row in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = row.split()
        local, remote, inode = fields[1], fields[2], fields[9]
        if int(local.split(":")[1], 16) == server_port and inode in owner:
            port = int(remote.split(":")[1], 16)
            if port in local_ports:
                found[port] = owner[inode]
    return found


def wait_until(condition: Any, clients: list[Client], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, what
        for client in clients:
            with client.changed:
                client.changed.wait(0.05)


def test_twenty_sessions_on_one_mailbox_through_two_workers(tmp_path: Path, store_url: str) -> None:
    """On SQLite (other workers' changes found by polling) and PostgreSQL (by NOTIFY)."""
    home = tmp_path / "home"
    manifest = make_kit(home, store_url=store_url)
    configure(home, server={"workers": 2}, imap={"max_connections_per_user": 100})
    account = next(m for m in manifest["mailboxes"] if m["address"] == DOCTOR)
    labo = peer(manifest, "labo")
    recent: dict[int, set[tuple[str, int]]] = defaultdict(set)
    lock = threading.Lock()
    port = int(manifest["listeners"]["imaps"]["port"])
    context = ssl.create_default_context(cafile=str(home / manifest["trust_ca"]))
    context.check_hostname = False
    with serve_process(home, manifest) as supervisor:
        deadline = time.monotonic() + WAIT
        while (home / "serve.log").read_text(errors="replace").count(" ready") < 2:
            assert time.monotonic() < deadline, "both workers never said ready"
            time.sleep(0.1)

        def connect(name: str) -> Client:
            client = Client(name, port, context, recent, lock)
            client.login(account["address"], account["password"])
            client.select()
            return client

        seeder = connect("seeder")
        for n in range(30):
            seeder.command(b"APPEND INBOX ()", message(-n - 1))
        seeder.close()

        workers = [connect(f"s{n}") for n in range(SESSIONS)]
        idlers = [connect(f"idle{n}") for n in range(IDLERS)]
        while len(set(worker_of(supervisor.pid, [c.local_port for c in idlers], port).values())) < 2:
            assert len(idlers) < 4 * IDLERS, "every IDLE session landed on one worker"
            idlers.append(connect(f"idle{len(idlers)}"))
        owners = worker_of(supervisor.pid, [c.local_port for c in workers + idlers], port)
        assert len(set(owners.values())) == 2, owners

        stop = threading.Event()
        errors: list[BaseException] = []

        def guarded(target: Any, *args: Any) -> None:
            try:
                target(*args)
            except BaseException as exc:  # reported below
                errors.append(exc)

        idle_threads = [threading.Thread(target=guarded, args=(idle, c, stop)) for c in idlers]
        for thread in idle_threads:
            thread.start()
        serial = [0]
        until = time.monotonic() + DURATION
        work_threads = [threading.Thread(target=guarded, args=(random_work, c, random.Random(n), until, serial))
                        for n, c in enumerate(workers)]
        for thread in work_threads:
            thread.start()
        for thread in work_threads:
            thread.join(DURATION + WAIT)
        assert not errors, errors

        def store_uids() -> list[int]:
            with kit_store(home) as store:
                inbox = store.folders.get(DOCTOR, "INBOX")
                assert inbox is not None
                return store.folders.uids(inbox.id)

        # Quiet now: every IDLE session catches up by itself, then each delivery through either worker
        # (an APPEND on each, an SMTP delivery) must wake every one of them.
        expected = len(store_uids())
        wait_until(lambda: all(c.count == expected for c in idlers), idlers,
                   f"IDLE sessions did not catch up with {expected} messages: {[c.count for c in idlers]}")
        by_worker: dict[int, Client] = {}
        for client in workers:
            by_worker.setdefault(owners[client.local_port], client)
        while len(by_worker) < 2:  # an APPEND through each worker: connect until one lands on the other
            assert len(workers) < 3 * SESSIONS, "every session landed on one worker"
            workers.append(connect(f"s{len(workers)}"))
            found = worker_of(supervisor.pid, [workers[-1].local_port], port)
            by_worker.setdefault(found[workers[-1].local_port], workers[-1])

        def by_smtp() -> None:
            with connect_process(home, manifest, labo) as smtp:
                smtp.sendmail(labo["sender"], [DOCTOR], signed(home, labo, lab_report(labo["sender"], [DOCTOR])))

        deliveries = [*(lambda c=c: c.command(b"APPEND INBOX ()", message(0)) for c in by_worker.values()), by_smtp]
        for deliver in deliveries * 2:
            expected += 1
            deliver()
            wait_until(lambda n=expected: all(c.count == n for c in idlers), idlers,
                       f"a delivery did not wake every IDLE session: {[c.count for c in idlers]} != {expected}")

        stop.set()
        for thread in idle_threads:
            thread.join(WAIT)
        assert not errors, errors
        final = store_uids()
        for client in workers + idlers:
            client.command(b"NOOP")
            assert client.count == len(final), (client.name, client.count, len(final))
            assert b" OK " in client.command(b"UID SEARCH ALL")
            found = [int(uid) for line in client.lines if line.startswith(b"* SEARCH") for uid in line.split()[2:]]
            assert sorted(found) == final, client.name
            client.close()

    violations = [v for client in workers + idlers for v in client.violations]
    assert not violations, violations[:20]
    twice = {uid: where for uid, where in recent.items() if len(where) > 1}
    assert not twice, twice
    assert serial[0] > SESSIONS  # the work did happen
