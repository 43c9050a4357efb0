"""SASL payloads parsed into data: pure functions shared by the IMAP server and SMTP submission.

The servers deal with the protocol framing (``AUTHENTICATE`` / ``AUTH``, continuation lines, the
initial response); this module turns the client's payload into a small frozen dataclass, or raises
:class:`SaslError` when the payload is malformed. Nothing here decides who may log in: that is the
authenticator's job.

Mechanisms:

- PLAIN (RFC 4616): ``[authzid] NUL authcid NUL passwd`` in UTF-8.
- LOGIN (draft-murchison-sasl-login, still what many clients send): user name, then password, each in
  its own exchange; :func:`parse_login_field` checks one of them.
- EXTERNAL (RFC 4422 appendix A): the identity comes from TLS; the payload is an optional authzid.
- OAUTHBEARER (RFC 7628): ``gs2-header ^A auth=Bearer <token> ^A [host=… ^A port=… ^A] ^A``.
- XOAUTH2 (Google): ``user=<u> ^A auth=Bearer <token> ^A ^A``.

Secrets (passwords, tokens) are kept out of the dataclasses' ``repr`` so that they cannot reach a
log by accident.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field

PLAIN = "PLAIN"
LOGIN = "LOGIN"
EXTERNAL = "EXTERNAL"
OAUTHBEARER = "OAUTHBEARER"
XOAUTH2 = "XOAUTH2"

# RFC 4616 asks servers to accept at least 255 octets per field; 1 KiB leaves room and bounds work.
MAX_FIELD = 1024
# PSC access tokens are a few KiB of JWT; 16 KiB is generous and still bounds what a client can send.
MAX_BEARER_PAYLOAD = 16384

# LOGIN's challenges, as nearly every server sends them (clients ignore the text).
LOGIN_USERNAME_CHALLENGE = b"Username:"
LOGIN_PASSWORD_CHALLENGE = b"Password:"

_KVSEP = "\x01"
_KEY = re.compile(r"[A-Za-z]+")
# RFC 6750 b64token.
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_BEARER = re.compile(r"bearer +(.+)", re.IGNORECASE)


class SaslError(ValueError):
    """The client's SASL payload is malformed; the message says why (it never quotes a secret)."""


class SaslCancelled(SaslError):
    """The client answered ``*``: it cancels the exchange (RFC 4954, RFC 3501)."""


@dataclass(frozen=True)
class PlainCredentials:
    """A PLAIN (or LOGIN) exchange: who, as whom, and the password (hidden from repr)."""

    authcid: str
    password: str = field(repr=False)
    authzid: str = ""


@dataclass(frozen=True)
class ExternalRequest:
    """An EXTERNAL exchange: only the identity the client asks to act as ("" = derive it from TLS)."""

    authzid: str = ""


@dataclass(frozen=True)
class BearerCredentials:
    """An OAUTHBEARER or XOAUTH2 exchange: the token (hidden from repr) and the user it names.

    ``user`` is OAUTHBEARER's authzid (``a=``) or XOAUTH2's ``user=``; "" when absent.
    """

    mechanism: str
    token: str = field(repr=False)
    user: str = ""
    host: str = ""
    port: int | None = None


def decode_response(text: str | bytes) -> bytes:
    """The bytes of one base64 client response line (without CRLF).

    ``=`` is an empty response (RFC 4954 initial response), ``*`` cancels (raises SaslCancelled).
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError as exc:
            raise SaslError("response is not base64") from exc
    text = text.strip()
    if text == "*":
        raise SaslCancelled("authentication cancelled by the client")
    if text in ("", "="):
        return b""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SaslError("response is not base64") from exc


def encode_challenge(data: bytes) -> str:
    """A server challenge as base64 text (empty data gives "", which servers send as a bare ``+``)."""
    return base64.b64encode(data).decode("ascii")


def mechanisms(*, tls: bool, client_certificate: bool = False, tokens: bool = False) -> list[str]:
    """The mechanisms to advertise on a connection.

    Nothing before TLS: a password or a token must never cross the network in clear (RFC 8314 spirit;
    the servers offer STARTTLS first). EXTERNAL only when the client presented a certificate, bearer
    mechanisms only when token validation is configured.
    """
    if not tls:
        return []
    offered = []
    if client_certificate:
        offered.append(EXTERNAL)
    if tokens:
        offered += [OAUTHBEARER, XOAUTH2]
    offered += [PLAIN, LOGIN]
    return offered


def _text(data: bytes, what: str, *, limit: int = MAX_FIELD) -> str:
    if len(data) > limit:
        raise SaslError(f"{what} is too long")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SaslError(f"{what} is not valid UTF-8") from exc


def _identity(data: bytes, what: str) -> str:
    """An authcid/authzid: UTF-8 without control characters (they could forge log lines)."""
    value = _text(data, what)
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise SaslError(f"{what} contains control characters")
    return value


def parse_plain(data: bytes) -> PlainCredentials:
    """Parse a PLAIN message (RFC 4616): ``[authzid] NUL authcid NUL passwd``."""
    if len(data) > 3 * MAX_FIELD + 2:
        raise SaslError("PLAIN message is too long")
    parts = data.split(b"\x00")
    if len(parts) != 3:
        raise SaslError("PLAIN message must hold exactly two NUL separators")
    authzid, authcid, password = parts
    if not authcid:
        raise SaslError("PLAIN authentication identity is empty")
    if not password:
        raise SaslError("PLAIN password is empty")
    return PlainCredentials(
        authcid=_identity(authcid, "authentication identity"),
        password=_text(password, "password"),
        authzid=_identity(authzid, "authorization identity"),
    )


def parse_login_field(data: bytes, what: str = "user name") -> str:
    """One LOGIN answer (user name or password): non-empty UTF-8, no NUL, bounded."""
    if not data:
        raise SaslError(f"LOGIN {what} is empty")
    if b"\x00" in data:
        raise SaslError(f"LOGIN {what} contains NUL")
    if what == "password":
        return _text(data, what)
    return _identity(data, what)


def parse_external(data: bytes) -> ExternalRequest:
    """Parse an EXTERNAL message: the optional authzid (empty: use the certificate's identity)."""
    return ExternalRequest(authzid=_identity(data, "authorization identity") if data else "")


def _bearer_token(value: str) -> str:
    match = _BEARER.fullmatch(value)
    if not match or not _B64TOKEN.fullmatch(match.group(1)):
        raise SaslError("auth must be 'Bearer <token>'")
    return match.group(1)


def _kvpairs(text: str, what: str) -> dict[str, str]:
    """``key=value ^A`` pairs up to the final ``^A`` (``text`` holds them and the terminator)."""
    if not text.endswith(_KVSEP * 2) and text != _KVSEP:
        raise SaslError(f"{what} message must end with ^A^A")
    pairs: dict[str, str] = {}
    for item in text[:-2].split(_KVSEP) if text != _KVSEP else []:
        key, sep, value = item.partition("=")
        if not sep or not _KEY.fullmatch(key):
            raise SaslError(f"{what} holds a malformed key=value pair")
        key = key.lower()
        if key in pairs:
            raise SaslError(f"{what} repeats the key {key!r}")
        if any((ord(c) < 32 and c not in "\t\r\n") or ord(c) == 127 for c in value):
            raise SaslError(f"{what} value of {key!r} contains control characters")
        pairs[key] = value
    return pairs


def _saslname(value: str) -> str:
    """Decode an RFC 5801 saslname (``=2C`` is ``,``, ``=3D`` is ``=``; any other ``=`` is an error)."""
    out = []
    i = 0
    while i < len(value):
        if value[i] == "=":
            code = value[i + 1 : i + 3]
            if code not in ("2C", "3D"):
                raise SaslError("OAUTHBEARER authzid holds a bad '=' escape")
            out.append("," if code == "2C" else "=")
            i += 3
        elif value[i] == ",":
            raise SaslError("OAUTHBEARER authzid holds an unescaped ','")
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


def _gs2_authzid(header: str) -> str:
    """The authzid of an OAUTHBEARER GS2 header ``n,a=user@x,`` (channel binding is not supported)."""
    flag, sep, rest = header.partition(",")
    if not sep or not rest.endswith(","):
        raise SaslError("OAUTHBEARER GS2 header is malformed")
    if flag.startswith("p="):
        raise SaslError("OAUTHBEARER channel binding is not supported")
    if flag not in ("n", "y"):
        raise SaslError("OAUTHBEARER GS2 header has a bad channel-binding flag")
    authzid = rest[:-1]
    if not authzid:
        return ""
    if not authzid.startswith("a=") or len(authzid) == 2:
        raise SaslError("OAUTHBEARER GS2 header has a malformed authzid")
    value = _saslname(authzid[2:])
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise SaslError("OAUTHBEARER authzid contains control characters")
    return value


def parse_oauthbearer(data: bytes) -> BearerCredentials:
    """Parse an OAUTHBEARER client response (RFC 7628 section 3.1).

    The lone ``^A`` a client sends after the server's error challenge is not a credential: test it
    with :func:`is_oauthbearer_abort` first.
    """
    text = _text(data, "OAUTHBEARER message", limit=MAX_BEARER_PAYLOAD)
    header, sep, rest = text.partition(_KVSEP)
    if not sep:
        raise SaslError("OAUTHBEARER message has no ^A separator")
    user = _gs2_authzid(header)
    pairs = _kvpairs(rest, "OAUTHBEARER")
    if "auth" not in pairs:
        raise SaslError("OAUTHBEARER message has no auth value")
    port = None
    if "port" in pairs:
        if not pairs["port"].isdigit() or not 0 < int(pairs["port"]) < 65536:
            raise SaslError("OAUTHBEARER port is not a port number")
        port = int(pairs["port"])
    return BearerCredentials(
        mechanism=OAUTHBEARER, token=_bearer_token(pairs["auth"]), user=user,
        host=pairs.get("host", ""), port=port,
    )


def is_oauthbearer_abort(data: bytes) -> bool:
    """True for the ``^A`` a client answers to the error challenge; the server then answers NO / 535."""
    return data == b"\x01"


def parse_xoauth2(data: bytes) -> BearerCredentials:
    """Parse an XOAUTH2 client response: ``user=<u> ^A auth=Bearer <token> ^A ^A``."""
    text = _text(data, "XOAUTH2 message", limit=MAX_BEARER_PAYLOAD)
    pairs = _kvpairs(text, "XOAUTH2")
    if "auth" not in pairs:
        raise SaslError("XOAUTH2 message has no auth value")
    user = pairs.get("user", "")
    if any(ord(c) < 32 or ord(c) == 127 for c in user):
        raise SaslError("XOAUTH2 user contains control characters")
    return BearerCredentials(mechanism=XOAUTH2, token=_bearer_token(pairs["auth"]), user=user)


def oauthbearer_error(scope: str = "", openid_configuration: str = "", status: str = "invalid_token") -> bytes:
    """The JSON of the server's error challenge after a failed OAUTHBEARER (RFC 7628 section 3.2.2).

    Sent base64-encoded as a continuation; the client answers ``^A`` and the server then fails the
    exchange. ``openid_configuration`` is the discovery URL clients may use to get a new token.
    """
    body: dict[str, str] = {"status": status, "schemes": "bearer"}
    if scope:
        body["scope"] = scope
    if openid_configuration:
        body["openid-configuration"] = openid_configuration
    return json.dumps(body, separators=(",", ":")).encode("utf-8")


def xoauth2_error(scope: str = "", status: str = "401") -> bytes:
    """The JSON of Google's XOAUTH2 error challenge; the client answers an empty response."""
    body: dict[str, str] = {"status": status, "schemes": "bearer"}
    if scope:
        body["scope"] = scope
    return json.dumps(body, separators=(",", ":")).encode("utf-8")
