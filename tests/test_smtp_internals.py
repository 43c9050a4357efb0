"""The private internals of aiosmtpd, asyncio.StreamReader and aiosmtplib that our adapters rely on.

mssante_base/smtp/aiosmtpd_adapter.py and mssante_operator/smtp/aiosmtplib_adapter.py list them; each check
here names the internal it looks at, so an upgrade that renames, removes or reshapes one fails with that name
instead of as a strange session somewhere in the integration tests.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import aiosmtplib
import aiosmtplib.protocol
import pytest
from aiosmtpd.smtp import SMTP

from mssante_base.smtp import aiosmtpd_adapter
from mssante_operator.smtp import aiosmtplib_adapter

ADAPTERS = "mssante_base/smtp/aiosmtpd_adapter.py and mssante_operator/smtp/aiosmtplib_adapter.py"


def _moved(what: str, how: str) -> str:
    return f"{what} {how}: the library changed an internal we rely on; see {ADAPTERS}"


def _member(owner: type, name: str) -> Any:
    found = inspect.getattr_static(owner, name, None)
    assert found is not None, _moved(f"{owner.__module__}.{owner.__qualname__}.{name}", "is gone")
    return getattr(owner, name)


def _check_method(owner: type, name: str, parameters: list[str], coroutine: bool) -> None:
    method = _member(owner, name)
    what = f"{owner.__qualname__}.{name}"
    assert callable(method), _moved(what, "is no longer a method")
    found = [p for p in inspect.signature(method).parameters if p != "self"]
    assert found == parameters, _moved(what, f"now takes {found}, not {parameters}")
    assert inspect.iscoroutinefunction(method) == coroutine, _moved(
        what, "is no longer a coroutine function" if coroutine else "became a coroutine function")


def _check_source(owner: type, name: str, *fragments: str) -> None:
    """``owner.name`` still does what we rely on it doing (calls a hook, reads an attribute)."""
    source = inspect.getsource(_member(owner, name))
    for fragment in fragments:
        assert fragment in source, _moved(f"{owner.__qualname__}.{name}", f"no longer has {fragment!r}")


# --- aiosmtpd.smtp.SMTP -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "parameters", "coroutine"), [
    ("_getaddr", ["arg"], False),
    ("_call_handler_hook", ["command", "args"], True),
    ("_set_post_data_state", [], False),
    ("_timeout_cb", [], False),
    ("_reset_timeout", ["duration"], False),
    ("_create_envelope", [], False),
    ("_handle_client", [], True),
    ("_cb_client_connected", ["reader", "writer"], False),
])
def test_aiosmtpd_methods(name: str, parameters: list[str], coroutine: bool) -> None:
    _check_method(SMTP, name, parameters, coroutine)


@pytest.mark.parametrize(("name", "fragments"), [
    ("smtp_MAIL", ("self._getaddr(", "self._call_handler_hook(")),  # our path reader and checks run
    ("smtp_RCPT", ("self._getaddr(", "self._call_handler_hook(")),
    ("_reset_timeout", ("self._timeout_handle", "self._timeout_cb")),  # our idle timer and its 421
    ("_set_post_data_state", ("self._create_envelope()",)),
    ("smtp_STARTTLS", ("self._original_transport = ",)),  # after_starttls
    ("_cb_client_connected", ("self._reader = reader",)),  # the reader whose class we swap
    ("_handle_client", ("self._reader.readuntil()",)),  # command lines come through StrictLineReader
    ("smtp_HELP", ("__smtp_syntax__", "__smtp_syntax_extended__")),  # keeps_syntax
    ("__init__", ("limit=self.line_length_limit", "self._original_transport", "self._timeout_handle")),
])
def test_aiosmtpd_uses_its_internals_as_we_expect(name: str, fragments: tuple[str, ...]) -> None:
    _check_source(SMTP, name, *fragments)


@pytest.mark.parametrize("command", ["EHLO", "MAIL", "RCPT", "DATA", "AUTH"])
def test_aiosmtpd_commands_carry_their_help_syntax(command: str) -> None:
    method = _member(SMTP, f"smtp_{command}")
    for mark in aiosmtpd_adapter.SYNTAX_MARKS:
        assert hasattr(method, mark), _moved(f"SMTP.smtp_{command}.{mark}", "is gone")
    assert method.__smtp_syntax__.startswith(command)


def test_an_adapted_session_starts_with_the_state_we_read() -> None:
    loop = asyncio.new_event_loop()
    try:
        session = aiosmtpd_adapter.AdaptedSMTP(object(), loop=loop)
        assert session._original_transport is None, _moved("SMTP()._original_transport", "is not None at start")
        assert not session.after_starttls
        assert session.idle_deadline() is None, _moved("SMTP()._timeout_handle", "is armed before a connection")
    finally:
        loop.close()


def test_overrides_keep_the_help_syntax() -> None:
    from mes_bridge.lmtp import BridgeLMTP
    from mssante_base.smtp.server import GuardedSMTP
    from mssante_operator.smtp.submission import SubmissionSMTP

    for cls, commands in [(GuardedSMTP, ["EHLO", "MAIL", "RCPT", "DATA"]), (SubmissionSMTP, ["MAIL", "RCPT", "AUTH"]),
                          (BridgeLMTP, ["MAIL", "RCPT", "DATA", "LHLO"])]:
        for command in commands:
            assert getattr(getattr(cls, f"smtp_{command}"), "__smtp_syntax__", None), f"{cls.__name__} {command}"


# --- asyncio.StreamReader (StrictLineReader.read_data) ---------------------------------------------------


@pytest.mark.parametrize(("name", "kind"), [("_buffer", bytearray), ("_limit", int), ("_eof", bool)])
def test_stream_reader_attributes(name: str, kind: type) -> None:
    async def made_on_a_loop() -> asyncio.StreamReader:  # another test may have left no current loop
        return asyncio.StreamReader(limit=1000)

    reader = asyncio.run(made_on_a_loop())
    assert isinstance(getattr(reader, name, None), kind), _moved(f"asyncio.StreamReader().{name}",
                                                                 f"is no longer a {kind.__name__}")


@pytest.mark.parametrize(("name", "parameters", "coroutine"), [
    ("_wait_for_data", ["func_name"], True),
    ("_maybe_resume_transport", [], False),
])
def test_stream_reader_methods(name: str, parameters: list[str], coroutine: bool) -> None:
    _check_method(asyncio.StreamReader, name, parameters, coroutine)


def test_strict_reader_reads_data_through_those_internals() -> None:
    async def scenario() -> tuple[bytes | None, bytes]:
        reader = aiosmtpd_adapter.StrictLineReader(limit=100)
        reader.feed_data(b"line one\r\n..dot\r\n.\r\nNOOP\r\n")
        payload = await reader.read_data(1000, lambda: None)
        return payload, await reader.readuntil()

    assert asyncio.run(scenario()) == (b"line one\r\n..dot\r\n", b"NOOP\r\n")


# --- aiosmtplib ---------------------------------------------------------------------------------------------


def test_aiosmtplib_session_has_its_protocol() -> None:
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=25)
    assert hasattr(smtp, "protocol") and smtp.protocol is None, _moved("aiosmtplib.SMTP().protocol", "is gone")


@pytest.mark.parametrize(("name", "parameters", "coroutine"), [
    ("write", ["data"], False),
    ("read_response", ["timeout"], True),
    ("_read_response_from_buffer", [], False),
])
def test_aiosmtplib_protocol_methods(name: str, parameters: list[str], coroutine: bool) -> None:
    _check_method(aiosmtplib.protocol.SMTPProtocol, name, parameters, coroutine)


async def _lmtp_server(replies: bytes) -> tuple[asyncio.AbstractServer, int]:
    """A server answering 250 to every command, and ``replies`` in one write after a DATA payload."""

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 test\r\n")
        while line := await reader.readline():
            if line == b"DATA\r\n":
                writer.write(b"354 go\r\n")
                while await reader.readline() != b".\r\n":
                    pass
                writer.write(replies)
            else:
                writer.write(b"250 ok\r\n")
        writer.close()

    server = await asyncio.start_server(session, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def test_replies_arriving_together_are_read_one_by_one() -> None:
    """LMTP's replies after DATA (one per recipient) come in one packet: each is read, none waits for a timeout."""

    async def scenario() -> list[str]:
        server, port = await _lmtp_server(b"250 first\r\n451 second\r\n250-third\r\n250 end\r\n")
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=30)
        try:
            await smtp.connect()
            await smtp.execute_command(b"MAIL", b"FROM:<a@b.fr>")
            assert (await smtp.execute_command(b"DATA")).code == 354
            aiosmtplib_adapter.write_message(smtp, b"Subject: x\r\n\r\nbody\r\n")
            return [str(await aiosmtplib_adapter.read_reply(smtp, 30)) for _ in range(3)]
        finally:
            smtp.close()
            server.close()

    assert asyncio.run(scenario()) == ["250 first", "451 second", "250 third\nend"]
