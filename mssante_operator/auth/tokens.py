"""OAuth2 bearer tokens (JWT access tokens, Pro Santé Connect style) checked against the issuer's JWKS.

A token is accepted only when all of these hold:

- it is a JWS signed with RS256 or ES256 (never ``none``, never an HMAC algorithm: a public key must
  not become a shared secret), by a key of the configured JWKS whose type matches the algorithm;
- it carries ``exp``, ``iat``, ``iss``, ``aud`` and ``sub``; ``iss`` is the configured issuer, ``aud``
  names the configured audience, ``exp``/``nbf``/``iat`` hold within a leeway (60 s by default);
- the configured subject claim holds the professional's national identifier, from which we take the
  RPPS (see :func:`rpps_from_claim`).

The JWKS comes from a local file or an ``https://`` URL (plain ``http://`` only to the loopback, for
tests and local proxies). Keys are cached; a token whose ``kid`` is unknown triggers a reload, at most
once per ``refresh_interval`` so that a stream of forged ``kid`` values cannot hammer the issuer; the
keys are also reloaded when older than ``max_age`` so that a key the issuer withdrew stops being
trusted. :meth:`TokenValidator.validate` may block on the network: callers run it off the event loop.

Errors carry a reason that is safe to log; the token itself is never put in a message or a log.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mssante_base.errors import TemporaryFailure
from mssante_base.fetch import http_get

from .certificates import rpps_from_national_id

# PyJWT is imported by the functions that use it: every process imports this module (the
# authenticator names TokenError), but only one configured with [auth] token_issuer needs PyJWT.
if TYPE_CHECKING:
    from jwt import PyJWK

log = logging.getLogger(__name__)

ALGORITHMS = ("RS256", "ES256")
_KEY_TYPES = {"RS256": "RSA", "ES256": "EC"}
REQUIRED_CLAIMS = ("exp", "iat", "iss", "aud", "sub")
DEFAULT_RPPS_CLAIM = "SubjectNameID"
MAX_TOKEN_LENGTH = 16384
MAX_JWKS_SIZE = 1 << 20
_LOOPBACK = {"localhost", "127.0.0.1", "::1"}


class TokenError(Exception):
    """The token is not acceptable; ``reason`` is safe to log (it never quotes the token)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TokenKeysUnavailable(TemporaryFailure):
    """The issuer's keys could not be loaded and none are cached: answer a temporary failure."""


@dataclass(frozen=True)
class TokenIdentity:
    """Who a valid token names: the RPPS, the token's ``sub``, and all its claims."""

    rpps: str
    subject: str
    claims: Mapping[str, Any] = field(repr=False)


def rpps_from_claim(value: object) -> str | None:
    """The RPPS held by a PSC identity claim, or None.

    Pro Santé Connect names a professional by the national PS identifier, IdNat_PS, in
    ``SubjectNameID`` (and ``preferred_username``). For a professional registered in RPPS,
    IdNat_PS = ``"8"`` + RPPS (11 digits), so a 12-digit value starting with 8 gives the RPPS by
    dropping that 8; an 11-digit value is taken as an RPPS already. Other prefixes (``0`` + ADELI…)
    name professionals without an RPPS, who have no PER mailbox to map to.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        return None
    return rpps_from_national_id(value)


def _safe(text: object, limit: int = 40) -> str:
    """A header value fit for a log line: printable ASCII, bounded."""
    return "".join(c if 32 <= ord(c) < 127 else "?" for c in str(text))[:limit]


class JwksSource:
    """A JWKS read from a local file or fetched from a URL (blocking; ``fetch`` is injectable)."""

    def __init__(
        self, location: str | Path, *, timeout: float = 5.0,
        fetch: Callable[[str, float], bytes] | None = None,
    ) -> None:
        self.location = str(location)
        self.timeout = timeout
        parsed = urllib.parse.urlsplit(self.location)
        self.is_url = parsed.scheme in ("http", "https")
        if self.is_url:
            if parsed.scheme == "http" and parsed.hostname not in _LOOPBACK:
                raise ValueError(f"JWKS URL {self.location} must use https")
            if not parsed.hostname:
                raise ValueError(f"JWKS URL {self.location} has no host")
        self._fetch = fetch or _http_get

    def read(self) -> bytes:
        """The JWKS document; raises OSError (file, network) on failure."""
        if self.is_url:
            return self._fetch(self.location, self.timeout)
        return Path(self.location).read_bytes()


def _http_get(url: str, timeout: float) -> bytes:
    return http_get(url, timeout=timeout, max_bytes=MAX_JWKS_SIZE, accept="application/json")


def parse_jwks(data: bytes) -> dict[str | None, PyJWK]:
    """The usable signing keys of a JWKS document, by ``kid`` (None for a key without one).

    Keys of other types, encryption keys (``use`` = ``enc``) and keys declaring an algorithm we do not
    accept are skipped. Raises ValueError when the document is not a JWKS.
    """
    import jwt
    from jwt import PyJWK

    try:
        document = json.loads(data)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError("JWKS is not valid JSON") from exc
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("JWKS has no 'keys' list")
    keys: dict[str | None, PyJWK] = {}
    for raw in document["keys"]:
        if not isinstance(raw, dict) or raw.get("use", "sig") != "sig":
            continue
        kty = raw.get("kty")
        if kty == "RSA":
            expected = "RS256"
        elif kty == "EC" and raw.get("crv") == "P-256":
            expected = "ES256"
        else:
            continue  # other key types and curves cannot verify an accepted algorithm
        if raw.get("alg", expected) != expected:
            continue
        try:
            key = PyJWK(raw)
        except jwt.PyJWTError as exc:
            log.warning("JWKS key %s skipped: %s", _safe(raw.get("kid")), exc)
            continue
        kid = raw.get("kid")
        keys[str(kid) if kid is not None else None] = key
    return keys


class TokenValidator:
    """Validates bearer tokens of one issuer for one audience and maps them to an RPPS. Thread-safe."""

    def __init__(
        self,
        issuer: str,
        audience: str | Iterable[str],
        jwks: str | Path | JwksSource,
        *,
        rpps_claim: str = DEFAULT_RPPS_CLAIM,
        leeway: float = 60.0,
        refresh_interval: float = 60.0,
        max_age: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not issuer:
            raise ValueError("issuer must be set")
        self.issuer = issuer
        self.audience = [audience] if isinstance(audience, str) else list(audience)
        if not self.audience or not all(self.audience):
            raise ValueError("audience must be set")
        self.source = jwks if isinstance(jwks, JwksSource) else JwksSource(jwks)
        self.rpps_claim = rpps_claim
        self.leeway = leeway
        self.refresh_interval = refresh_interval
        self.max_age = max_age
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: dict[str | None, PyJWK] = {}
        self._loaded_at: float | None = None
        self._attempted_at: float | None = None

    # -- keys --------------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Reload the JWKS now; on failure keep the cached keys (raise TokenKeysUnavailable if none)."""
        with self._lock:
            self._refresh_locked()

    def _refresh_locked(self) -> None:
        self._attempted_at = self._clock()
        try:
            keys = parse_jwks(self.source.read())
        except (OSError, ValueError) as exc:
            if not self._keys:
                raise TokenKeysUnavailable(f"JWKS {self.source.location} cannot be loaded: {exc}") from exc
            log.error("JWKS %s not reloaded, keeping the cached keys: %s", self.source.location, exc)
            return
        if not keys:
            log.warning("JWKS %s holds no usable RS256/ES256 signing key", self.source.location)
        self._keys = keys
        self._loaded_at = self._attempted_at

    def _may_reload(self, now: float) -> bool:
        return self._attempted_at is None or now - self._attempted_at >= self.refresh_interval

    def _key_for(self, kid: str | None) -> PyJWK:
        with self._lock:
            now = self._clock()
            stale = self._loaded_at is None or now - self._loaded_at >= self.max_age
            if stale and self._may_reload(now):
                self._refresh_locked()
            key = self._pick(kid)
            if key is None and self._may_reload(now):
                self._refresh_locked()  # a key rotation at the issuer: look again, within the rate limit
                key = self._pick(kid)
            if key is None:
                if self._loaded_at is None:
                    raise TokenKeysUnavailable(f"JWKS {self.source.location} has not been loaded yet")
                raise TokenError("unknown signing key" if kid is not None else "no key id and several keys")
            return key

    def _pick(self, kid: str | None) -> PyJWK | None:
        if kid is not None:
            return self._keys.get(kid)
        # No kid in the token: acceptable only when the JWKS leaves no choice.
        return next(iter(self._keys.values())) if len(self._keys) == 1 else None

    # -- tokens ------------------------------------------------------------------------------------

    def validate(self, token: str) -> TokenIdentity:
        """Check ``token`` and return who it names; raises TokenError (or TokenKeysUnavailable)."""
        if not token or len(token) > MAX_TOKEN_LENGTH:
            raise TokenError("token is empty or too long")
        import jwt

        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise TokenError("malformed token") from exc
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            raise TokenError(f"algorithm {_safe(alg)} is not accepted")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise TokenError("malformed key id")
        key = self._key_for(kid)
        if key.key_type != _KEY_TYPES[alg]:
            raise TokenError(f"algorithm {alg} does not match the key type {key.key_type}")
        try:
            claims = jwt.decode(
                token, key=key.key, algorithms=[alg], audience=self.audience, issuer=self.issuer,
                leeway=self.leeway,
                options={"require": list(REQUIRED_CLAIMS), "verify_signature": True, "verify_exp": True,
                         "verify_iat": True, "verify_nbf": True, "verify_iss": True, "verify_aud": True},
            )
        except jwt.ExpiredSignatureError as exc:
            raise TokenError("token expired") from exc
        except jwt.ImmatureSignatureError as exc:
            raise TokenError("token not yet valid") from exc
        except jwt.InvalidAudienceError as exc:
            raise TokenError("wrong audience") from exc
        except jwt.InvalidIssuerError as exc:
            raise TokenError("wrong issuer") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise TokenError(f"missing claim {_safe(exc.claim)}") from exc
        except jwt.InvalidSignatureError as exc:
            raise TokenError("bad signature") from exc
        except jwt.PyJWTError as exc:
            raise TokenError(f"invalid token ({type(exc).__name__})") from exc
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise TokenError("sub is not a string")
        if self.rpps_claim not in claims:
            raise TokenError(f"missing claim {_safe(self.rpps_claim)}")
        rpps = rpps_from_claim(claims[self.rpps_claim])
        if rpps is None:
            raise TokenError(f"claim {_safe(self.rpps_claim)} holds no RPPS")
        return TokenIdentity(rpps=rpps, subject=subject, claims=claims)
