"""Listening sockets handed from a supervisor to its workers, and the one-per-wake-up acceptor."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from typing import ClassVar

from mssante_operator.listening import Acceptor, WorkerLoad, bind_listener, export_listeners, inherited_listeners

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
