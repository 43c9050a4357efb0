"""A stopping operator says BYE to every IMAP client and closes its connection, with no error in the log."""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from pathlib import Path

import pytest
from support.harness import make_kit, running_operator

BYE = b"* BYE server shutting down\r\n"


def _read_until_closed(sock: socket.socket | ssl.SSLSocket, received: list[bytes]) -> None:
    """Collect what the server sends until it closes (run in a thread while the operator stops)."""
    try:
        while chunk := sock.recv(4096):
            received.append(chunk)
    except (OSError, ssl.SSLError):
        pass
    finally:
        sock.close()


def _command(sock: ssl.SSLSocket, line: bytes, tag: bytes) -> bytes:
    sock.sendall(line)
    reply = b""
    while tag + b" " not in reply and not reply.startswith(b"+ "):
        chunk = sock.recv(4096)
        assert chunk, reply
        reply += chunk
    return reply


def test_stopping_the_operator_says_bye_to_each_imap_connection(tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    manifest = make_kit(tmp_path)
    account = next(m for m in manifest["mailboxes"] if m.get("password"))
    caplog.set_level(logging.INFO)
    readers: list[threading.Thread] = []
    received: list[list[bytes]] = [[], [], []]
    with running_operator(tmp_path, manifest) as running:
        context = running.tls_context()
        imaps = ("127.0.0.1", running.port("imaps"))
        greeted = context.wrap_socket(socket.create_connection(imaps, timeout=10))
        assert greeted.recv(4096).startswith(b"* OK ")
        idling = context.wrap_socket(socket.create_connection(imaps, timeout=10))
        assert idling.recv(4096).startswith(b"* OK ")
        assert b"a OK" in _command(idling, f'a LOGIN "{account["address"]}" "{account["password"]}"\r\n'.encode(),
                                   b"a")
        assert b"b OK" in _command(idling, b"b SELECT INBOX\r\n", b"b")
        assert _command(idling, b"c IDLE\r\n", b"c").startswith(b"+ ")
        plain = socket.create_connection(("127.0.0.1", running.port("imap")), timeout=10)  # before STARTTLS
        assert plain.recv(4096).startswith(b"* OK ")
        for sock, into in zip((greeted, idling, plain), received, strict=True):
            readers.append(threading.Thread(target=_read_until_closed, args=(sock, into)))
            readers[-1].start()
    for reader in readers:
        reader.join(15)
        assert not reader.is_alive()  # the server closed the connection
    for into in received:
        assert b"".join(into) == BYE
    assert "closing 3 IMAP connections" in caplog.text
    errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert not errors, [record.getMessage() for record in errors]
    assert "CancelledError" not in caplog.text
