"""Listening sockets and a fair accept loop shared by every listener (MTA, later IMAP and submission).

Why not ``loop.create_server``: with several worker processes, asyncio accepts up to *backlog*
connections per wake-up, so the first worker to wake takes a whole burst of sessions and one core
does all the work while the other idles. SO_REUSEPORT spreads by a hash of the client's address and
port, which splits 20 sessions 13/7 as often as 10/10. Here the supervisor binds each port once,
the workers inherit the socket, and each worker accepts **one** connection per wake-up: a worker busy
with TLS and DKIM wakes later than an idle one, so sessions go to whoever has spare CPU.

Peers keep their sessions open for a long time, so the share at connection time matters: each
worker publishes its number of open sessions in a small shared memory (``WorkerLoad``), and a
worker that has more than the least loaded one lets the connection wait a moment for that one.
"""

from __future__ import annotations

import asyncio
import logging
import mmap
import os
import socket
import ssl
import sys
import threading
import time
from asyncio import sslproto
from collections.abc import Callable, Mapping
from typing import Any

log = logging.getLogger(__name__)

LISTEN_BACKLOG = 512
_LOAD_VARIABLE = "MSSANTE_WORKER_LOAD"
_SLOT = 8  # one signed 64-bit counter per worker
DEFER_STEP = 0.002  # a busier worker looks again after this long ...
DEFER_LIMIT = 0.05  # ... and accepts anyway after this long (the other worker may be stuck)


def handshake_failure(error: BaseException) -> str:
    """Why a TLS handshake failed, in a few words for one log line (OpenSSL's reason when there is one)."""
    cause = error.__cause__ if error.__cause__ is not None and not isinstance(error, OSError) else error
    if isinstance(cause, ssl.SSLError) and cause.reason:
        return str(cause.reason)
    return str(cause) or type(cause).__name__


def bind_listener(host: str, port: int) -> socket.socket:
    """A non-blocking TCP listening socket on host:port (IPv4 or IPv6 by the form of host)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class WorkerLoad:
    """Open sessions per worker, in memory shared by the workers of one supervisor.

    Each worker writes only its own counter; reading the others without a lock is fine for a
    balancing hint.
    """

    def __init__(self, fd: int, slot: int, count: int) -> None:
        self.fd, self.slot, self.count = fd, slot, count
        self._memory = mmap.mmap(fd, count * _SLOT)
        self._counters = memoryview(self._memory).cast("q")

    @classmethod
    def create(cls, count: int) -> WorkerLoad:
        """The supervisor's view (it owns no slot): a zeroed anonymous shared memory."""
        fd = os.memfd_create("mssante-worker-load", 0)
        os.ftruncate(fd, count * _SLOT)
        return cls(fd, -1, count)

    def handover(self, slot: int) -> tuple[dict[str, str], int]:
        """Environment and fd that give slot ``slot`` to a (new) worker process."""
        os.set_inheritable(self.fd, True)
        self._counters[slot] = 0  # a restarted worker starts with no sessions
        return {_LOAD_VARIABLE: f"{self.fd},{slot},{self.count}"}, self.fd

    @classmethod
    def inherited(cls, environ: Mapping[str, str] | None = None) -> WorkerLoad | None:
        value = (environ if environ is not None else os.environ).get(_LOAD_VARIABLE)
        if not value:
            return None
        fd, slot, count = (int(part) for part in value.split(","))
        return cls(fd, slot, count)

    def opened(self) -> None:
        self._counters[self.slot] += 1

    def closed(self) -> None:
        self._counters[self.slot] -= 1

    def sessions(self) -> list[int]:
        return list(self._counters)

    def busier_than_another(self) -> bool:
        """True when some other worker has fewer open sessions than this one."""
        mine = self._counters[self.slot]
        return any(n < mine for i, n in enumerate(self._counters) if i != self.slot)


# Each TLS connection of asyncio has its own read buffer, allocated (and zero-filled, so resident) when
# the connection starts and kept until it ends: Python 3.11's asyncio.sslproto.SSLProtocol sizes it by its
# class attribute ``max_size``, 256 KiB, and uses the same size for each read of decrypted data. An IDLE
# client costs its server that whole buffer for hours. There is no public API for it, so we lower the class
# attribute, which changes every TLS connection of the process: implicit TLS (connect_accepted_socket),
# IMAP STARTTLS (StreamWriter.start_tls) and aiosmtpd's STARTTLS all build an SSLProtocol. 32 KiB still
# holds two full TLS records (16 KiB of plaintext each); a larger message (a 50 MB APPEND) just takes more
# reads, the event loop reading the socket again on its next turn while data is waiting. If another
# Python version drops or renames the attribute, its default stays and the operator works as before.
TLS_READ_BUFFER = 32 * 1024

# That buffer only receives the encrypted bytes of one recv(): a selector event loop calls get_buffer(),
# recv_into() and buffer_updated(), which copies the bytes into the connection's own MemoryBIO before
# anything else runs. So the connections of one event loop can share it: the protocol class is swapped
# for a subclass that points each new connection at its thread's buffer (one per thread: two loops in two
# threads may read at the same time), which saves 32 KiB per connection (32 MB for 1,000 IDLE clients).
# Only where CPython 3.11's layout is found (buffer_updated reading ``_ssl_buffer_view``), and not on
# Windows, whose proactor loop keeps the buffer through an overlapped read; uvloop has its own TLS code.
_thread_buffers = threading.local()


def shared_tls_read_buffer(size: int = TLS_READ_BUFFER) -> bytearray:
    """This thread's TLS read buffer of at least ``size`` bytes, shared by its connections (see above)."""
    buffer: bytearray | None = getattr(_thread_buffers, "buffer", None)
    if buffer is None or len(buffer) < size:
        buffer = _thread_buffers.buffer = bytearray(size)
        _thread_buffers.view = memoryview(buffer)
    return buffer


class _SharedBufferSSLProtocol(sslproto.SSLProtocol):
    """asyncio's TLS protocol reading into its thread's shared buffer instead of one of its own."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # allocates its own buffer, dropped here at once
        self._ssl_buffer = shared_tls_read_buffer(self.max_size)
        self._ssl_buffer_view = _thread_buffers.view


def _share_tls_read_buffer() -> bool:
    """Every TLS connection of this process made from now on shares its thread's read buffer, where safe."""
    if issubclass(sslproto.SSLProtocol, _SharedBufferSSLProtocol):
        return True
    if sys.platform == "win32" or "_ssl_buffer_view" not in sslproto.SSLProtocol.buffer_updated.__code__.co_names:
        return False
    sslproto.SSLProtocol = _SharedBufferSSLProtocol  # type: ignore[misc]  # looked up at each connection
    return True


def limit_tls_read_buffer(size: int = TLS_READ_BUFFER) -> bool:
    """Make asyncio's TLS connections read into ``size`` bytes, not 256 KiB, shared by the connections of a
    thread where this Python allows it; False if this Python cannot."""
    try:
        current = sslproto.SSLProtocol.max_size
    except AttributeError:
        log.debug("asyncio.sslproto.SSLProtocol.max_size not found: TLS read buffers keep their default size")
        return False
    if not isinstance(current, int):
        return False
    if current > size:
        sslproto.SSLProtocol.max_size = size
    _share_tls_read_buffer()
    return True


class Acceptor:
    """Accepts connections on one listening socket, one per wake-up, and starts a protocol on each."""

    def __init__(
        self,
        sock: socket.socket,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        *,
        tls: ssl.SSLContext | None = None,
        handshake_timeout: float = 30.0,
        load: WorkerLoad | None = None,
    ) -> None:
        self.sock = sock
        self._load = load
        self._deferred_since: float | None = None
        self._last_look = 0.0
        self._factory = protocol_factory
        self._tls = tls
        self._handshake_timeout = handshake_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handshakes: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def start(self) -> None:
        limit_tls_read_buffer()  # for TLS now or after STARTTLS: see TLS_READ_BUFFER
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.sock.fileno(), self._accept_one)

    def _accept_one(self) -> None:
        if self._defer():
            return
        try:
            conn, address = self.sock.accept()
        except (BlockingIOError, InterruptedError):
            return  # another worker took it
        except OSError as exc:  # EMFILE and friends: keep the listener, say why
            log.error("accept failed: %s", exc)
            return
        conn.setblocking(False)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        assert self._loop is not None
        if self._load is not None:
            self._load.opened()  # the handshake counts as a session: it costs as much
        task = self._loop.create_task(self._connect(conn, address[0] if address else "?"))
        self._handshakes.add(task)
        task.add_done_callback(self._handshakes.discard)

    async def _connect(self, conn: socket.socket, peer: str) -> None:
        assert self._loop is not None
        try:
            await self._loop.connect_accepted_socket(
                self._factory, conn, ssl=self._tls,
                ssl_handshake_timeout=self._handshake_timeout if self._tls is not None else None,
            )
        except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError: one line, no traceback
            log.info("TLS handshake failed peer=%s reason=%s", peer, handshake_failure(exc))
            conn.close()
        finally:
            if self._load is not None:
                self._load.closed()

    def _defer(self) -> bool:
        """Leave a pending connection to a less loaded worker for a moment (see the module's note)."""
        if self._load is None or not self._load.busier_than_another():
            self._deferred_since = None
            return False
        now = time.monotonic()
        if self._deferred_since is None or now - self._last_look > 10 * DEFER_STEP:  # a new connection
            self._deferred_since = now
        self._last_look = now
        if now - self._deferred_since >= DEFER_LIMIT:
            self._deferred_since = None
            return False
        assert self._loop is not None
        self._loop.remove_reader(self.sock.fileno())
        self._loop.call_later(DEFER_STEP, self._resume)
        return True

    def _resume(self) -> None:
        if self.sock.fileno() != -1:
            assert self._loop is not None
            self._loop.add_reader(self.sock.fileno(), self._accept_one)

    def close(self) -> None:
        """Stop accepting; sessions already open carry on."""
        if self._loop is not None:
            self._loop.remove_reader(self.sock.fileno())
        for task in self._handshakes:
            task.cancel()
        self.sock.close()

