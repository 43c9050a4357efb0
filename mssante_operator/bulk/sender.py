"""The submission client of send-bulk: a few authenticated connections draining one shared queue of jobs.

Each connection is TLS (implicit or STARTTLS, 1.2+), presents the APP certificate and authenticates
with ``AUTH EXTERNAL =``. When the server offers PIPELINING, MAIL FROM, every RCPT TO and DATA go in
one write and the replies are read in order: one round trip per message instead of 2 + recipients.

This is a small client on asyncio streams rather than aiosmtplib: aiosmtplib's protocol parses one
reply per read and discards bytes that arrive while no read is pending, so pipelined replies, which
come back together, would be lost or would stall the next read.

A 4xx at MAIL or DATA, or a dropped connection, is tried again a few times with backoff; a 4xx at
RCPT is recorded as temporary (the next run tries it). A worker that cannot connect gives up after
its retries; when every worker has given up, the jobs left are reported as temporary failures.
Problems no retry can fix (server certificate not trusted, authentication refused, no STARTTLS) stop
the whole run with :class:`SubmissionError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from ..smtp.payload import dot_stuffed
from .journal import Outcome, RefusedRecipient

_ENHANCED = re.compile(r"^([245]\.\d{1,3}\.\d{1,3})(?:\s+|$)")
_QUEUE_ID = re.compile(r"\bid[\s=:]+<?([^\s<>]+)>?", re.IGNORECASE)


class SubmissionError(Exception):
    """A problem that retrying cannot fix; the run stops (nothing unsent is journaled)."""


class ConnectionLost(ConnectionError):
    """The server closed the connection, or a reply did not come in time or made no sense."""


@dataclass(frozen=True)
class Server:
    """Where and how to submit. ``context`` holds the client certificate and the CA that signs the server's."""

    host: str
    port: int
    tls: Literal["starttls", "implicit"]
    context: ssl.SSLContext
    helo: str = "send-bulk.localhost"
    timeout: float = 60.0        # per command reply
    data_timeout: float = 600.0  # the reply to the end of DATA (RFC 5321 4.5.3.2.6: 10 minutes)


@dataclass(frozen=True)
class Job:
    """One message to submit; ``load`` builds its bytes when a connection is ready for it."""

    key: str
    sha256: str
    sender: str
    recipients: tuple[str, ...]
    load: Callable[[], bytes]


@dataclass(frozen=True)
class Reply:
    code: int
    text: str

    @property
    def enhanced(self) -> str:
        match = _ENHANCED.match(self.text)
        return match.group(1) if match else ""

    @property
    def detail(self) -> str:
        """The text without its enhanced code (it has its own report column)."""
        return _ENHANCED.sub("", self.text, count=1)

    def refusal(self, recipient: str) -> RefusedRecipient:
        return RefusedRecipient(recipient, self.code, self.enhanced, self.detail, temporary=self.code < 500)

    def __str__(self) -> str:
        return f"{self.code} {self.text}"


@dataclass
class Transaction:
    """What one MAIL…DATA exchange gave; ``again`` are recipients refused by a 4xx at MAIL or DATA."""

    accepted: list[str] = field(default_factory=list)
    refusals: list[RefusedRecipient] = field(default_factory=list)
    again: list[str] = field(default_factory=list)
    again_reply: Reply | None = None
    queue_id: str | None = None

    def refuse_all(self, recipients: Sequence[str], reply: Reply) -> Transaction:
        if reply.code < 500:
            self.again.extend(recipients)
            self.again_reply = reply
        else:
            self.refusals.extend(reply.refusal(r) for r in recipients)
        return self


class Connection:
    """One authenticated SMTP session; not shared between tasks."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, server: Server) -> None:
        self._reader, self._writer, self._server = reader, writer, server
        self.extensions: dict[str, str] = {}

    @classmethod
    async def open(cls, server: Server) -> Connection:
        """Connect, secure, authenticate. Raises ConnectionLost (try later) or SubmissionError (give up)."""
        implicit = server.tls == "implicit"
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(
                server.host, server.port, ssl=server.context if implicit else None,
                server_hostname=server.host if implicit else None), server.timeout)
            connection = cls(reader, writer, server)
            await connection._start(secured=implicit)
        except ssl.SSLCertVerificationError as exc:
            raise SubmissionError(f"TLS: the server certificate is not trusted: {exc.verify_message}") from exc
        except ssl.SSLError as exc:
            if isinstance(exc, ssl.SSLEOFError):
                raise ConnectionLost(f"TLS: {exc.reason or exc}") from exc
            raise SubmissionError(f"TLS: {exc.reason or exc}") from exc
        except (OSError, TimeoutError) as exc:
            if isinstance(exc, ConnectionLost):
                raise
            raise ConnectionLost(f"cannot connect to {server.host}:{server.port}: {exc or 'timeout'}") from exc
        return connection

    async def _start(self, *, secured: bool) -> None:
        greeting = await self._reply()
        if greeting.code != 220:
            _fail("greeting", greeting)
        await self._ehlo()
        if not secured:
            if "STARTTLS" not in self.extensions:
                raise SubmissionError("the server does not offer STARTTLS")
            reply = await self.command("STARTTLS")
            if reply.code != 220:
                _fail("STARTTLS", reply)
            await self._writer.start_tls(self._server.context, server_hostname=self._server.host)
            await self._ehlo()
        if "EXTERNAL" not in self.extensions.get("AUTH", "").upper().split():
            raise SubmissionError("the server does not offer AUTH EXTERNAL")
        reply = await self.command("AUTH EXTERNAL =")  # "=": empty authzid, the certificate says who we are
        if reply.code == 334:
            reply = await self.command("")
        if reply.code != 235:
            _fail("authentication", reply)

    async def _ehlo(self) -> None:
        reply = await self.command(f"EHLO {self._server.helo}")
        if reply.code != 250:
            _fail("EHLO", reply)
        self.extensions = {}
        for line in reply.text.split("\n")[1:]:
            keyword, _, value = line.partition(" ")
            self.extensions[keyword.upper()] = value

    async def command(self, line: str) -> Reply:
        await self._write(line.encode("ascii") + b"\r\n")
        return await self._reply()

    async def transaction(self, sender: str, recipients: Sequence[str], message: bytes) -> Transaction:
        """MAIL, RCPT for each recipient, DATA; pipelined when offered. Network trouble raises ConnectionLost."""
        mail = f"MAIL FROM:<{sender}>"
        if "SIZE" in self.extensions:
            mail += f" SIZE={len(message)}"
        if "8BITMIME" in self.extensions and not message.isascii():
            mail += " BODY=8BITMIME"
        commands = [mail, *(f"RCPT TO:<{r}>" for r in recipients), "DATA"]
        if "PIPELINING" in self.extensions:
            await self._write("".join(f"{c}\r\n" for c in commands).encode("ascii"))
            replies = [await self._reply() for _ in commands]
        else:
            replies = await self._one_by_one(commands)
        mail_reply, rcpt_replies, data_reply = replies[0], replies[1:len(commands) - 1], replies[-1]
        result = Transaction()
        if mail_reply.code != 250:
            await self._abort(data_reply)
            return result.refuse_all(recipients, mail_reply)
        for recipient, reply in zip(recipients, rcpt_replies, strict=False):
            if reply.code in (250, 251):
                result.accepted.append(recipient)
            else:
                result.refusals.append(reply.refusal(recipient))
        if not result.accepted or data_reply.code != 354:
            await self._abort(data_reply)
            accepted, result.accepted = result.accepted, []
            return result.refuse_all(accepted, data_reply) if accepted else result
        await self._write(dot_stuffed(message))
        final = await self._reply(self._server.data_timeout)
        if final.code != 250:
            await self._abort(None)
            accepted, result.accepted = result.accepted, []
            return result.refuse_all(accepted, final)
        match = _QUEUE_ID.search(final.text)
        result.queue_id = match.group(1) if match else final.text
        return result

    async def _one_by_one(self, commands: list[str]) -> list[Reply]:
        """Without PIPELINING: stop at a refused MAIL, and skip DATA when no recipient was accepted."""
        replies = [await self.command(commands[0])]
        skipped = Reply(503, "5.5.1 not sent")
        if replies[0].code != 250:
            return replies + [skipped] * (len(commands) - 1)
        for command in commands[1:-1]:
            replies.append(await self.command(command))
        ok = any(r.code in (250, 251) for r in replies[1:])
        return [*replies, await self.command("DATA") if ok else skipped]

    async def _abort(self, data_reply: Reply | None) -> None:
        """End a failed transaction: an empty message if DATA was nonetheless accepted, then RSET."""
        if data_reply is not None and data_reply.code == 354:
            await self._write(b".\r\n")
            await self._reply(self._server.data_timeout)
        reply = await self.command("RSET")
        if reply.code != 250:
            raise ConnectionLost(f"RSET refused: {reply}")

    async def close(self) -> None:
        with contextlib.suppress(OSError, TimeoutError, ConnectionLost):
            await asyncio.wait_for(self.command("QUIT"), 5)
        await self.abandon()

    async def abandon(self) -> None:
        """Close without QUIT (the session is broken)."""
        self._writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(self._writer.wait_closed(), 5)

    async def _write(self, data: bytes) -> None:
        self._writer.write(data)
        await self._writer.drain()

    async def _reply(self, timeout: float | None = None) -> Reply:
        lines: list[str] = []
        while True:
            try:
                line = await asyncio.wait_for(self._reader.readline(), timeout or self._server.timeout)
            except TimeoutError as exc:
                raise ConnectionLost("no reply from the server in time") from exc
            except ValueError as exc:  # a line beyond the reader's limit
                raise ConnectionLost("reply line too long") from exc
            if not line.endswith(b"\n"):
                raise ConnectionLost("connection closed by the server")
            if len(line) < 4 or not line[:3].isdigit() or line[3:4] not in (b" ", b"-", b"\r"):
                raise ConnectionLost("malformed reply from the server")
            lines.append(line[4:].rstrip(b"\r\n").decode("utf-8", "replace"))
            if line[3:4] != b"-":
                return Reply(int(line[:3]), "\n".join(lines))


def _fail(stage: str, reply: Reply) -> None:
    """A refusal while setting the session up: try later on 4xx, give up on 5xx."""
    if reply.code < 500:
        raise ConnectionLost(f"{stage}: {reply}")
    raise SubmissionError(f"{stage} refused: {reply}")


class _Run:
    """The shared queue and the workers of one send_all call."""

    def __init__(self, server: Server, jobs: Sequence[Job], on_outcome: Callable[[Outcome], None],
                 retries: int, backoff: Sequence[float]) -> None:
        self.server, self.on_outcome, self.retries, self.backoff = server, on_outcome, retries, backoff
        self.queue = deque(jobs)
        self.unavailable = ""  # why the last worker that gave up could not connect

    async def worker(self) -> None:
        connection: Connection | None = None
        try:
            while self.queue:
                job = self.queue.popleft()
                outcome, connection, reachable = await self._deliver(job, connection)
                self.on_outcome(outcome)
                if not reachable:
                    return  # could not even connect: leave the queue to the other workers
        finally:
            if connection is not None:
                await connection.close()

    async def _deliver(self, job: Job, connection: Connection | None) -> tuple[Outcome, Connection | None, bool]:
        """Submit one job, retrying dropped connections and 4xx at MAIL/DATA; False: the server is unreachable."""
        try:
            message = job.load()
        except OSError as exc:
            reply = Reply(0, f"cannot read {job.key}: {exc.strerror or exc}")
            return _outcome(job, Transaction(), job.recipients, reply), connection, True
        pending, done = list(job.recipients), Transaction()
        problem, reachable = Reply(0, ""), True
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(self.backoff[min(attempt - 1, len(self.backoff) - 1)])
            try:
                if connection is None:
                    reachable = False
                    connection = await Connection.open(self.server)
                    reachable = True
                result = await connection.transaction(job.sender, pending, message)
            except ConnectionLost as exc:
                if connection is not None:
                    await connection.abandon()
                connection, problem = None, Reply(0, str(exc))
                self.unavailable = str(exc)
                continue
            done.accepted += result.accepted
            done.refusals += result.refusals
            done.queue_id = " ".join(filter(None, (done.queue_id, result.queue_id))) or None
            pending = result.again
            if not pending:
                return _outcome(job, done), connection, True
            problem = result.again_reply or problem
        return _outcome(job, done, pending, problem), connection, reachable


def _outcome(job: Job, done: Transaction, pending: Sequence[str] = (), problem: Reply | None = None) -> Outcome:
    refusals = list(done.refusals)
    if pending and problem is not None:
        refusals += [RefusedRecipient(r, problem.code, problem.enhanced, problem.detail, temporary=True)
                     for r in pending]
    return Outcome(job.key, job.sha256, tuple(done.accepted), tuple(refusals), done.queue_id)


async def send_all(server: Server, jobs: Sequence[Job], on_outcome: Callable[[Outcome], None], *,
                   connections: int = 4, retries: int = 3, backoff: Sequence[float] = (1.0, 5.0, 15.0)) -> None:
    """Submit every job over up to ``connections`` sessions; ``on_outcome`` is called once per job."""
    run = _Run(server, jobs, on_outcome, retries, backoff)
    workers = [asyncio.create_task(run.worker()) for _ in range(max(1, min(connections, len(jobs))))]
    try:
        done, _ = await asyncio.wait(workers, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            if task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
    finally:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
    reason = Reply(0, f"not sent: {run.unavailable or 'server unavailable'}")
    while run.queue:
        job = run.queue.popleft()
        on_outcome(_outcome(job, Transaction(), job.recipients, reason))
