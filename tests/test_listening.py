"""Listening sockets handed from a supervisor to its workers, and the one-per-wake-up acceptor."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import subprocess
import sys
import threading
from asyncio import sslproto
from pathlib import Path
from typing import ClassVar

import pytest
from support.harness import make_kit

from mssante_base.listening import (
    TLS_READ_BUFFER,
    Acceptor,
    WorkerLoad,
    bind_listener,
    limit_tls_read_buffer,
    shared_tls_read_buffer,
)
from mssante_base.trust.tls import server_context
from mssante_operator.config import load_settings
from mssante_operator.listening import export_listeners, inherited_listeners

_CHILD = """
import socket
from mssante_operator.listening import inherited_listeners
sock = inherited_listeners()["mta"]
sock.setblocking(True)
conn, _ = sock.accept()
conn.sendall(b"hello from the worker\\n")
conn.close()
"""


def test_a_child_process_accepts_on_the_socket_its_parent_bound() -> None:
    sock = bind_listener("127.0.0.1", 0)
    port = sock.getsockname()[1]
    environment, fds = export_listeners({"mta": sock})
    child = subprocess.Popen([sys.executable, "-c", _CHILD], pass_fds=fds, env={**os.environ, **environment})
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
            assert client.makefile("rb").readline() == b"hello from the worker\n"
        assert child.wait(10) == 0
    finally:
        child.kill()
        sock.close()


def test_no_inherited_sockets_without_the_variable() -> None:
    assert inherited_listeners({}) == {}


class _Greeter(asyncio.Protocol):
    made: ClassVar[list[_Greeter]] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        _Greeter.made.append(self)
        assert isinstance(transport, asyncio.Transport)
        transport.write(b"220 hello\r\n")
        transport.close()


def test_the_acceptor_starts_one_protocol_per_connection_and_stops_on_close() -> None:
    async def scenario() -> None:
        acceptor = Acceptor(bind_listener("127.0.0.1", 0), _Greeter)
        acceptor.start()
        for _ in range(5):
            reader, writer = await asyncio.open_connection("127.0.0.1", acceptor.port)
            assert await reader.readline() == b"220 hello\r\n"
            writer.close()
        acceptor.close()
        assert acceptor.sock.fileno() == -1

    _Greeter.made.clear()
    asyncio.run(scenario())
    assert len(_Greeter.made) == 5


def test_worker_load_is_shared_and_marks_the_busier_worker() -> None:
    supervisor = WorkerLoad.create(2)
    first = WorkerLoad.inherited(supervisor.handover(0)[0])
    second = WorkerLoad.inherited(supervisor.handover(1)[0])
    assert first is not None and second is not None
    first.opened()
    first.opened()
    second.opened()
    assert supervisor.sessions() == [2, 1]
    assert first.busier_than_another() and not second.busier_than_another()
    first.closed()
    assert not first.busier_than_another()
    supervisor.handover(0)  # a restarted worker starts from zero
    assert second.busier_than_another()


class _Echo(asyncio.Protocol):
    transports: ClassVar[list[asyncio.BaseTransport]] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        _Echo.transports.append(transport)

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


def _tls_pair(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A kit's server context (no client certificate) and a client context trusting it."""
    make_kit(tmp_path)
    settings = load_settings(tmp_path)
    tls = server_context(settings.path(settings.tls.cert), settings.path(settings.tls.key),
                         settings.path(settings.trust_space.ca_bundle), client_cert=False)
    client_tls = ssl.create_default_context(cafile=str(settings.path(settings.trust_space.ca_bundle)))
    client_tls.check_hostname = False
    return tls, client_tls


def test_tls_connections_read_into_a_small_buffer_and_still_carry_large_messages(tmp_path: Path) -> None:
    tls, client_tls = _tls_pair(tmp_path)
    message = os.urandom(200_000)  # a dozen TLS records, six times the buffer

    async def scenario() -> tuple[bytes, int | None]:
        acceptor = Acceptor(bind_listener("127.0.0.1", 0), _Echo, tls=tls)
        acceptor.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", acceptor.port, ssl=client_tls)
        writer.write(message)
        echoed = await reader.readexactly(len(message))
        # CPython 3.11's layout, looked at only if it is there: the size is what matters.
        buffer = getattr(getattr(_Echo.transports[0], "_ssl_protocol", None), "_ssl_buffer", None)
        writer.close()
        acceptor.close()
        return echoed, None if buffer is None else len(buffer)

    _Echo.transports.clear()
    echoed, buffer_size = asyncio.run(scenario())
    assert echoed == message
    assert sslproto.SSLProtocol.max_size == TLS_READ_BUFFER
    assert buffer_size in (TLS_READ_BUFFER, None)
    if sys.version_info[:2] == (3, 11):
        assert buffer_size == TLS_READ_BUFFER


def test_the_tls_buffer_limit_gives_up_quietly_without_the_attribute(monkeypatch: pytest.MonkeyPatch) -> None:
    bare = type("SSLProtocol", (), {})  # another Python's protocol, without the attribute
    monkeypatch.setattr(sslproto, "SSLProtocol", bare)
    assert limit_tls_read_buffer() is False
    assert sslproto.SSLProtocol is bare and not hasattr(bare, "max_size")


def test_tls_connections_of_one_thread_share_one_read_buffer_and_keep_their_bytes_apart(tmp_path: Path) -> None:
    """An idle TLS connection holds no read buffer of its own: the bytes read are copied out at once."""
    tls, client_tls = _tls_pair(tmp_path)
    messages = [os.urandom(150_000) for _ in range(3)]  # sent at once: their reads interleave

    async def echo(port: int, message: bytes) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_tls)
        writer.write(message)
        echoed = await reader.readexactly(len(message))
        writer.close()
        return echoed

    async def scenario() -> tuple[list[bytes], set[int]]:
        acceptor = Acceptor(bind_listener("127.0.0.1", 0), _Echo, tls=tls)
        acceptor.start()
        echoed = await asyncio.gather(*(echo(acceptor.port, message) for message in messages))
        buffers = {id(getattr(getattr(t, "_ssl_protocol", None), "_ssl_buffer", None)) for t in _Echo.transports}
        acceptor.close()
        return list(echoed), buffers

    _Echo.transports.clear()
    echoed, buffers = asyncio.run(scenario())
    assert echoed == messages
    if sys.version_info[:2] == (3, 11):  # CPython 3.11's layout: one buffer for the three server connections
        assert len(buffers) == 1


def test_threads_running_their_own_event_loop_get_their_own_tls_read_buffer() -> None:
    """Two loops in two threads may read at the same time: each thread reads into its own buffer."""
    limit_tls_read_buffer()
    seen: list[int] = []

    def buffer_of_this_thread() -> None:
        seen.append(id(shared_tls_read_buffer()))

    threads = [threading.Thread(target=buffer_of_this_thread) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    buffer_of_this_thread()
    buffer_of_this_thread()
    assert len(set(seen[:2])) == 2 and seen[2] == seen[3] and seen[2] not in seen[:2]
