"""Modified UTF-7 for mailbox names (RFC 3501 section 5.1.3).

Printable US-ASCII stands for itself, ``&`` is written ``&-``, and every other run of characters is
UTF-16BE in base64 with ``,`` for ``/`` and no padding, between ``&`` and ``-``.

Decoding accepts only the canonical form (the one :func:`encode_mailbox` produces), as RFC 3501
intends when it forbids alternate spellings: one wire name per mailbox, so two clients can never
reach the same mailbox under two names, nor create look-alike twins.
"""

from __future__ import annotations

import base64
import binascii
import re

_SHIFTED = re.compile(r"&([A-Za-z0-9+,]*)-")


def _printable(ch: str) -> bool:
    """Characters 0x20-0x7e are written as themselves (``&`` escaped as ``&-``)."""
    return " " <= ch <= "~"


def encode_mailbox(name: str) -> str:
    """The modified UTF-7 wire form of a Unicode mailbox name."""
    out: list[str] = []
    run: list[str] = []
    for ch in name:
        if _printable(ch):
            if run:
                out.append(_encode_run("".join(run)))
                run.clear()
            out.append("&-" if ch == "&" else ch)
        else:
            run.append(ch)
    if run:
        out.append(_encode_run("".join(run)))
    return "".join(out)


def _encode_run(text: str) -> str:
    """``&<modified base64 of UTF-16BE>-`` for a run of non-printable characters."""
    encoded = base64.b64encode(text.encode("utf-16-be"), altchars=b"+,").rstrip(b"=")
    return f"&{encoded.decode('ascii')}-"


def decode_mailbox(name: str) -> str:
    """The Unicode name for a modified UTF-7 wire name; ValueError when it is malformed or not canonical."""
    out: list[str] = []
    pos = 0
    while pos < len(name):
        ch = name[pos]
        if ch == "&":
            match = _SHIFTED.match(name, pos)
            if match is None:
                raise ValueError(f"'&' at offset {pos} is not closed by '-' or holds a non-base64 character")
            out.append(_decode_run(match.group(1)) if match.group(1) else "&")
            pos = match.end()
        elif _printable(ch):
            out.append(ch)
            pos += 1
        else:
            raise ValueError(f"character {ch!r} must be encoded in modified UTF-7")
    decoded = "".join(out)
    if encode_mailbox(decoded) != name:
        raise ValueError("mailbox name is not in canonical modified UTF-7 (split or padded base64 runs)")
    return decoded


def _decode_run(encoded: str) -> str:
    """Decode one base64 run, refusing padding, odd byte counts, lone surrogates and encoded ASCII."""
    if len(encoded) % 4 == 1:
        raise ValueError(f"truncated base64 in '&{encoded}-'")
    try:
        raw = base64.b64decode(encoded + "=" * (-len(encoded) % 4), altchars=b"+,", validate=True)
        text = raw.decode("utf-16-be")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise ValueError(f"invalid UTF-16 in '&{encoded}-'") from exc
    if any(_printable(ch) for ch in text):
        raise ValueError(f"'&{encoded}-' encodes printable US-ASCII, which must stand for itself")
    return text
