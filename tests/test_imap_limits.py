"""IMAP connection limits: per client IP (refused at the greeting) and per user (refused at login)."""

from __future__ import annotations

import contextlib
import imaplib
import socket
import ssl
import time
from pathlib import Path

import pytest
from support.harness import make_kit, running_operator

from mssante_base.connection_limits import ConnectionLimiter, KeyedCounter, LimitReached

DOMAIN = "hopital-demo.mssante.fr"


def test_keyed_counter_refuses_past_its_limit_and_frees_on_release() -> None:
    counter = KeyedCounter(2)
    assert counter.acquire("a") and counter.acquire("a") and not counter.acquire("a")
    assert counter.acquire("b") and counter.total == 3
    counter.release("a")
    assert counter.acquire("a") and counter.count("a") == 2


def test_connection_limiter_says_which_limit_was_hit() -> None:
    limiter = ConnectionLimiter(maximum=3, per_ip=2)
    assert limiter.acquire("10.0.0.1") is None and limiter.acquire("10.0.0.1") is None
    assert limiter.acquire("10.0.0.1") is LimitReached.TOO_MANY_FROM_IP
    assert limiter.acquire("10.0.0.2") is None
    assert limiter.acquire("10.0.0.3") is LimitReached.TOO_MANY_OVERALL
    limiter.release("10.0.0.1")
    assert limiter.acquire("10.0.0.3") is None and limiter.open == 3


def _tls(home: Path, manifest: dict) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(home / manifest["trust_ca"]))
    context.check_hostname = False
    return context


def _greeting(address: tuple[str, int], context: ssl.SSLContext) -> tuple[ssl.SSLSocket, bytes]:
    sock = context.wrap_socket(socket.create_connection(address, timeout=5))
    return sock, sock.recv(4096)


def test_imap_refuses_connections_past_the_per_ip_limit_with_bye_unavailable(tmp_path: Path) -> None:
    manifest = make_kit(tmp_path, imap={"max_connections_per_ip": 2})
    address = ("127.0.0.1", int(manifest["listeners"]["imaps"]["port"]))
    context = _tls(tmp_path, manifest)
    with running_operator(tmp_path, manifest):
        first, greeting1 = _greeting(address, context)
        second, greeting2 = _greeting(address, context)
        try:
            assert greeting1.startswith(b"* OK ") and greeting2.startswith(b"* OK ")
            third, refusal = _greeting(address, context)
            with third:
                assert refusal.startswith(b"* BYE [UNAVAILABLE] Too many connections from your address")
            # The STARTTLS listener shares the count: the same address is refused there too.
            with socket.create_connection(("127.0.0.1", int(manifest["listeners"]["imap"]["port"])), 5) as plain:
                assert plain.recv(4096).startswith(b"* BYE [UNAVAILABLE]")
        finally:
            first.close()
        deadline = time.monotonic() + 5
        while True:  # the freed slot goes to the next connection
            fourth, greeting = _greeting(address, context)
            fourth.close()
            if greeting.startswith(b"* OK ") or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        second.close()
    assert greeting.startswith(b"* OK ")


def test_imap_refuses_a_login_past_the_per_user_limit_with_no_limit(tmp_path: Path) -> None:
    manifest = make_kit(tmp_path, imap={"max_connections_per_user": 2})
    account = next(m for m in manifest["mailboxes"] if m["address"] == f"dr.martin@{DOMAIN}")
    other = next(m for m in manifest["mailboxes"] if m.get("password") and m["address"] != account["address"])
    port = int(manifest["listeners"]["imaps"]["port"])
    context = _tls(tmp_path, manifest)
    with running_operator(tmp_path, manifest):
        clients = [imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=context) for _ in range(4)]
        try:
            clients[0].login(account["address"], account["password"])
            clients[1].login(account["address"].upper(), account["password"])
            with pytest.raises(imaplib.IMAP4.error, match=r"\[LIMIT\] too many connections for this account"):
                clients[2].login(account["address"], account["password"])
            clients[3].login(other["address"], other["password"])  # another user is not affected
            clients[0].logout()
            deadline = time.monotonic() + 5
            while True:  # the slot is given back when the connection ends
                try:
                    clients[2].login(account["address"], account["password"])
                    break
                except imaplib.IMAP4.error:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            assert clients[2].state == "AUTH"
        finally:
            for client in clients[1:]:
                with contextlib.suppress(imaplib.IMAP4.error, OSError):
                    client.logout()
