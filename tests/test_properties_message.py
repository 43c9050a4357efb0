"""Property-based tests of ``imap/message.py`` (Hypothesis): BODYSTRUCTURE and BODY[section] against the raw bytes.

MIME trees are generated (text and binary leaves, multiparts with preambles and epilogues, nested
message/rfc822 parts, CRLF or bare-LF bodies), written out, and parsed back: every section is the exact
slice of the bytes that was written for it, and every size and line count in BODYSTRUCTURE is that of
those bytes. On any bytes at all, parsing and every FETCH view of the result never fail (a failure
would be logged and papered over, so the test also requires that nothing was logged).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from mssante_operator.imap.message import MessageStructure
from mssante_operator.imap.wire import Concat, encode


@dataclass(frozen=True)
class Leaf:
    maintype: str
    subtype: str
    header: bytes  # the part's header lines, without the blank line
    body: bytes


@dataclass(frozen=True)
class Multipart:
    subtype: str
    boundary: str
    header: bytes
    preamble: bytes
    children: tuple[Node, ...]
    epilogue: bytes


@dataclass(frozen=True)
class Rfc822:
    header: bytes
    inner: Message


@dataclass(frozen=True)
class Message:
    header: bytes
    content: Node  # the message's own Content-Type is in ``header``


Node = Leaf | Multipart | Rfc822


def body_of(node: Node | Message, eol: bytes = b"\r\n") -> bytes:
    """The bytes of a node's body (what BODY[n] returns for a part), with ``eol`` as the writer's line end."""
    if isinstance(node, Leaf):
        return node.body
    if isinstance(node, Rfc822):
        return raw_of(node.inner, eol)
    if isinstance(node, Message):
        return body_of(node.content, eol)
    delimiter = b"--" + node.boundary.encode()
    out = node.preamble + (eol if node.preamble else b"")
    for index, child in enumerate(node.children):
        out += (eol if index else b"") + delimiter + eol + child.header + eol + body_of(child, eol)
    return out + eol + delimiter + b"--" + eol + node.epilogue


def raw_of(message: Message, eol: bytes = b"\r\n") -> bytes:
    return message.header + eol + body_of(message, eol)


# --- strategies ------------------------------------------------------------------------------------


def free_of(boundaries: tuple[str, ...]) -> st.SearchStrategy[bytes]:
    """Bytes (bodies, preambles, epilogues) in which no boundary line of the enclosing parts can start."""
    pieces = st.sampled_from([b"\r\n", b"\n", b"\r", b"-", b"--", b".", b" ", b"x", b"\r\n\r\n", b"=_", b"\t",
                              b"\xc3\xa9"])
    return (st.binary(max_size=60) | st.lists(pieces, max_size=25).map(b"".join)).filter(
        lambda data: not any(b"--" + b.encode() in data for b in boundaries)
    )


TEXT_TYPES = [("text", "plain"), ("text", "html"), ("application", "pdf"), ("image", "png"), ("application", "xml")]


@st.composite
def leaf(draw: st.DrawFn, boundaries: tuple[str, ...]) -> Leaf:
    maintype, subtype = draw(st.sampled_from(TEXT_TYPES))
    params = draw(st.sampled_from(["", '; charset="utf-8"', "; name=a.pdf", "; charset=us-ascii; format=flowed"]))
    lines = [f"Content-Type: {maintype}/{subtype}{params}"]
    if draw(st.booleans()):
        lines.append("Content-Transfer-Encoding: " + draw(st.sampled_from(["7bit", "base64", "quoted-printable"])))
    if draw(st.booleans()):
        lines.append('Content-Disposition: attachment;\r\n filename="r\xe9sultat.pdf"')
    header = "".join(line + "\r\n" for line in lines).encode("utf-8")
    return Leaf(maintype, subtype, header, draw(free_of(boundaries)))


@st.composite
def node(draw: st.DrawFn, boundaries: tuple[str, ...] = (), depth: int = 0) -> Node:
    kind = draw(st.sampled_from(["leaf", "leaf", "multipart", "rfc822"] if depth < 3 else ["leaf"]))
    if kind == "leaf":
        return draw(leaf(boundaries))
    if kind == "rfc822":
        inner = draw(message(boundaries, depth + 1))
        return Rfc822(b"Content-Type: message/rfc822\r\n", inner)
    boundary = f"=_b{depth}_{draw(st.integers(0, 10**6))}"
    own = (*boundaries, boundary)
    subtype = draw(st.sampled_from(["mixed", "alternative", "related"]))
    children = tuple(draw(st.lists(node(own, depth + 1), min_size=1, max_size=3)))
    header = f'Content-Type: multipart/{subtype};\r\n boundary="{boundary}"\r\n'.encode()
    return Multipart(subtype, boundary, header, draw(free_of(own)), children, draw(free_of(own)))


@st.composite
def message(draw: st.DrawFn, boundaries: tuple[str, ...] = (), depth: int = 0) -> Message:
    content = draw(node(boundaries, depth))
    subject = draw(st.sampled_from(["Compte rendu", "=?utf-8?q?R=C3=A9sultats?=", "a\r\n folded"]))
    header = f"From: Dr Martin <dr.martin@hopital.test>\r\nSubject: {subject}\r\nMIME-Version: 1.0\r\n".encode()
    return Message(header + content.header, content)


# --- checks ----------------------------------------------------------------------------------------


def check_part(structure: MessageStructure, node: Node, path: tuple[int, ...], shape: list, eol: bytes) -> None:
    """BODY[path] and BODY[path.MIME] are the bytes written for ``node``; ``shape`` is its BODYSTRUCTURE."""
    assert structure.section(path, None) == body_of(node, eol)
    assert structure.section(path, "MIME") == node.header + eol
    check_shape(structure, node, path, shape, eol)


def check_shape(structure: MessageStructure, node: Node, path: tuple[int, ...], shape: list, eol: bytes) -> None:
    body = body_of(node, eol)
    if isinstance(node, Multipart):
        children = shape[0]
        assert isinstance(children, Concat)
        assert shape[1] == node.subtype.upper()
        assert len(children) == len(node.children)
        for number, (child, child_shape) in enumerate(zip(node.children, children, strict=True), start=1):
            check_part(structure, child, (*path, number), child_shape, eol)
        return
    if isinstance(node, Rfc822):
        assert shape[:2] == ["MESSAGE", "RFC822"]
        assert shape[6] == len(body)
        assert shape[9] == body.count(b"\n")
        inner = node.inner
        assert structure.section(path, "HEADER") == inner.header + eol
        assert structure.section(path, "TEXT") == body_of(inner, eol)
        check_message(structure, inner, path, shape[8], eol)
        return
    assert shape[:2] == [node.maintype.upper(), node.subtype.upper()]
    assert shape[6] == len(body)
    if node.maintype == "text":
        assert shape[7] == body.count(b"\n")


def check_message(structure: MessageStructure, message: Message, path: tuple[int, ...], shape: list,
                  eol: bytes) -> None:
    """A message's content: a multipart's parts are path.n; a single part's body is path.1."""
    if isinstance(message.content, Multipart):
        check_shape(structure, message.content, path, shape, eol)
    else:
        assert structure.section((*path, 1), None) == body_of(message.content, eol)
        check_shape(structure, message.content, (*path, 1), shape, eol)


class Recorder(logging.Handler):
    """The errors ``message.py`` logs when it papers over a failure of its own."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextmanager
def no_error_logged() -> Iterator[None]:
    logger, recorder = logging.getLogger("mssante_operator.imap.message"), Recorder()
    logger.addHandler(recorder)
    try:
        yield
    finally:
        logger.removeHandler(recorder)
    assert not recorder.messages


@settings(max_examples=250, deadline=None)
@given(message(), st.booleans())
def test_sections_and_sizes_are_those_of_the_raw_bytes(message: Message, bare_lf: bool) -> None:
    eol = b"\n" if bare_lf else b"\r\n"
    if bare_lf:  # the same message with bare LF line ends: a stored message keeps what the sender wrote
        message = _with_lf(message)
    raw = raw_of(message, eol)
    if bare_lf:
        assume(b"\r" not in raw)  # a body ending with CR, then the LF of a boundary line, would be ambiguous
    with no_error_logged():
        structure = MessageStructure.parse(raw)
        assert structure.section((), None) == raw
        assert structure.header_bytes() + structure.text_bytes() == raw
        assert structure.section((), "HEADER") == message.header + eol
        check_message(structure, message, (), structure.bodystructure(), eol)
        encode(structure.bodystructure(False))
        encode(structure.envelope())


def _with_lf(value: object) -> object:
    """A tree with every CRLF in its bytes made LF (boundaries and types unchanged)."""
    if isinstance(value, bytes):
        return value.replace(b"\r\n", b"\n")
    if isinstance(value, tuple):
        return tuple(_with_lf(item) for item in value)
    if isinstance(value, Leaf | Multipart | Rfc822 | Message):
        return type(value)(*(_with_lf(getattr(value, f)) for f in value.__dataclass_fields__))
    return value


def everything(structure: MessageStructure) -> None:
    """Every FETCH view of a message, as a client may ask for it."""
    encode(structure.bodystructure())
    encode(structure.bodystructure(False))
    encode(structure.envelope())
    structure.body_text()
    structure.addresses("from")
    structure.header_values("subject")
    for parts in [(), (1,), (1, 1), (2,), (1, 2, 1), (3, 1)]:
        for text in (None, "HEADER", "TEXT", "MIME", "HEADER.FIELDS", "HEADER.FIELDS.NOT"):
            structure.section(parts, text, ("From", "Subject"))


mime_junk = st.lists(st.sampled_from([
    b"Content-Type: multipart/mixed; boundary=b\r\n", b"Content-Type: message/rfc822\r\n", b"\r\n", b"\n",
    b"--b\r\n", b"--b--\r\n", b"--b", b"Content-Type: multipart/digest; boundary=\"c\"\r\n", b"--c\r\n",
    b"Content-Transfer-Encoding: base64\r\n", b"QUJD\r\n", b"From: a@b\r\n", b"To: <@r:x@y>, g: a, b;\r\n",
    b"Content-Type: text/plain; name*0*=utf-8''%C3; name*1=x\r\n", b" folded\r\n", b"\xff\xfe", b"=?utf-8?b?w6k=?=",
    b"Content-Disposition: inline; (comment\r\n", b"Subject: \"unclosed\r\n", b"\x00",
]), max_size=40).map(b"".join)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400) | mime_junk)
def test_any_bytes_parse_and_every_view_works(raw: bytes) -> None:
    with no_error_logged():
        everything(MessageStructure.parse(raw))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400) | mime_junk)
def test_a_header_only_parse_answers_header_views_as_the_full_parse_does(raw: bytes) -> None:
    """FETCH of ENVELOPE and header sections alone parses only the header (parse_header): the same answers."""
    with no_error_logged():
        full, head = MessageStructure.parse(raw), MessageStructure.parse_header(raw)
        assert encode(head.envelope()) == encode(full.envelope())
        assert head.header_bytes() == full.header_bytes()
        for text in ("HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT"):
            assert head.section((), text, ("From", "Subject")) == full.section((), text, ("From", "Subject"))
