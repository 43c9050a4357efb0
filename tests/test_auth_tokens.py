"""Bearer tokens: PSC-style JWTs signed by keys of a local JWKS, and every way they must be refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.server
import json
import threading
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from mssante_operator.auth.tokens import (
    JwksSource,
    TokenError,
    TokenKeysUnavailable,
    TokenValidator,
    parse_jwks,
    rpps_from_claim,
)

ISSUER = "https://auth.esw.esante.gouv.fr/auth/realms/esante-wallet"
AUDIENCE = "mssante-operator"
IDNAT = "810001234567"


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def jwk(public_key, kid: str, **extra) -> dict:
    algorithm = RSAAlgorithm if isinstance(public_key, rsa.RSAPublicKey) else ECAlgorithm
    data = json.loads(algorithm.to_jwk(public_key))
    data.update({"kid": kid, "use": "sig", **extra})
    return data


def write_jwks(path: Path, *keys: dict) -> Path:
    path.write_text(json.dumps({"keys": list(keys)}), encoding="utf-8")
    return path


@pytest.fixture
def jwks_file(tmp_path, rsa_key, ec_key) -> Path:
    return write_jwks(
        tmp_path / "jwks.json",
        jwk(rsa_key.public_key(), "rsa1", alg="RS256"),
        jwk(ec_key.public_key(), "ec1"),
    )


def claims(**overrides) -> dict:
    now = int(time.time())
    data = {
        "iss": ISSUER, "aud": AUDIENCE, "sub": "f:550dc1c8:" + IDNAT, "iat": now, "exp": now + 300,
        "SubjectNameID": IDNAT, "preferred_username": IDNAT, "scope": "openid scope_all",
    }
    data.update(overrides)
    return {key: value for key, value in data.items() if value is not None}


def sign(key, kid: str | None = "rsa1", alg: str = "RS256", **overrides) -> str:
    headers = {"kid": kid} if kid is not None else {}
    return jwt.encode(claims(**overrides), key, algorithm=alg, headers=headers)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def validator(jwks, **kwargs) -> TokenValidator:
    return TokenValidator(ISSUER, AUDIENCE, jwks, **kwargs)


def refused(v: TokenValidator, token: str, reason: str) -> TokenError:
    with pytest.raises(TokenError, match=reason) as info:
        v.validate(token)
    if token:
        assert token not in str(info.value) and token not in info.value.reason
    return info.value


# -- accepted tokens ----------------------------------------------------------------------------------


def test_rs256_psc_token(jwks_file, rsa_key):
    identity = validator(jwks_file).validate(sign(rsa_key))
    assert identity.rpps == "10001234567"
    assert identity.subject == "f:550dc1c8:" + IDNAT
    assert identity.claims["scope"] == "openid scope_all"
    assert IDNAT not in repr(identity).replace(identity.subject, "")


def test_es256_token(jwks_file, ec_key):
    assert validator(jwks_file).validate(sign(ec_key, kid="ec1", alg="ES256")).rpps == "10001234567"


def test_audience_list_and_token_with_several_audiences(jwks_file, rsa_key):
    v = TokenValidator(ISSUER, ["other", AUDIENCE], jwks_file)
    assert v.validate(sign(rsa_key, aud=["account", AUDIENCE])).rpps == "10001234567"


def test_leeway_accepts_a_token_expired_seconds_ago(jwks_file, rsa_key):
    now = int(time.time())
    assert validator(jwks_file).validate(sign(rsa_key, iat=now - 400, exp=now - 30)).rpps
    refused(validator(jwks_file, leeway=0), sign(rsa_key, iat=now - 400, exp=now - 30), "expired")


def test_custom_claim_and_bare_rpps(jwks_file, rsa_key):
    v = validator(jwks_file, rpps_claim="preferred_username")
    assert v.validate(sign(rsa_key, preferred_username="10009876543", SubjectNameID=None)).rpps == "10009876543"


def test_token_without_kid_when_the_jwks_has_one_key(tmp_path, rsa_key):
    jwks = write_jwks(tmp_path / "one.json", jwk(rsa_key.public_key(), "only"))
    assert validator(jwks).validate(sign(rsa_key, kid=None)).rpps == "10001234567"


# -- refused tokens -----------------------------------------------------------------------------------


def test_expired(jwks_file, rsa_key):
    now = int(time.time())
    refused(validator(jwks_file), sign(rsa_key, iat=now - 1000, exp=now - 300), "token expired")


def test_not_yet_valid(jwks_file, rsa_key):
    now = int(time.time())
    refused(validator(jwks_file), sign(rsa_key, nbf=now + 600), "not yet valid")
    refused(validator(jwks_file), sign(rsa_key, iat=now + 600, exp=now + 900), "not yet valid|invalid token")


def test_wrong_audience(jwks_file, rsa_key):
    refused(validator(jwks_file), sign(rsa_key, aud="another-service"), "wrong audience")


def test_wrong_issuer(jwks_file, rsa_key):
    refused(validator(jwks_file), sign(rsa_key, iss="https://evil.example/realms/x"), "wrong issuer")


@pytest.mark.parametrize("claim", ["exp", "iat", "iss", "aud", "sub"])
def test_required_claims(jwks_file, rsa_key, claim):
    refused(validator(jwks_file), sign(rsa_key, **{claim: None}), f"missing claim {claim}")


def test_rpps_claim_missing_or_not_an_rpps(jwks_file, rsa_key):
    v = validator(jwks_file)
    refused(v, sign(rsa_key, SubjectNameID=None), "missing claim SubjectNameID")
    refused(v, sign(rsa_key, SubjectNameID="0751234567"), "holds no RPPS")  # ADELI-based IdNat_PS
    refused(v, sign(rsa_key, SubjectNameID=["810001234567"]), "holds no RPPS")
    refused(v, sign(rsa_key, sub=12), "invalid token|sub")


def test_alg_none(jwks_file):
    header = b64url(json.dumps({"alg": "none", "typ": "JWT", "kid": "rsa1"}).encode())
    token = f"{header}.{b64url(json.dumps(claims()).encode())}."
    refused(validator(jwks_file), token, "algorithm none is not accepted")


def test_hs256_with_the_public_key_as_secret(jwks_file, rsa_key):
    # The classic key-confusion attack: sign with HMAC using the issuer's public key PEM as the secret.
    secret = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signing_input = (
        f"{b64url(json.dumps({'alg': 'HS256', 'typ': 'JWT', 'kid': 'rsa1'}).encode())}."
        f"{b64url(json.dumps(claims()).encode())}"
    )
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    refused(validator(jwks_file), f"{signing_input}.{b64url(signature)}", "algorithm HS256 is not accepted")


def test_algorithm_not_matching_the_key_type(jwks_file, ec_key):
    token = jwt.encode(claims(), ec_key, algorithm="ES256", headers={"kid": "rsa1"})
    refused(validator(jwks_file), token, "does not match the key type")


def test_other_asymmetric_algorithms_refused(jwks_file, rsa_key):
    refused(validator(jwks_file), sign(rsa_key, alg="RS512"), "algorithm RS512 is not accepted")
    refused(validator(jwks_file), sign(rsa_key, alg="PS256"), "algorithm PS256 is not accepted")


def test_bad_signature(jwks_file, tmp_path):
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    refused(validator(jwks_file), sign(other, kid="rsa1"), "bad signature")


def test_tampered_payload(jwks_file, rsa_key):
    header, _, signature = sign(rsa_key).split(".")
    forged = b64url(json.dumps(claims(SubjectNameID="899999999999")).encode())
    refused(validator(jwks_file), f"{header}.{forged}.{signature}", "bad signature")


def test_malformed_and_oversized(jwks_file):
    v = validator(jwks_file)
    refused(v, "not-a-jwt", "malformed")
    refused(v, "a.b.c", "malformed")
    refused(v, "", "empty or too long")
    refused(v, "a" * 20000, "empty or too long")
    header = b64url(json.dumps({"alg": "RS256", "kid": 5}).encode())
    refused(v, f"{header}.e30.c2ln", "malformed")


def test_token_without_kid_when_several_keys(jwks_file, rsa_key):
    refused(validator(jwks_file), sign(rsa_key, kid=None), "no key id")


# -- the JWKS: cache, refresh on unknown kid, rate limit, max age ---------------------------------------


class CountingSource(JwksSource):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.reads = 0

    def read(self) -> bytes:
        self.reads += 1
        return super().read()


def test_unknown_kid_refreshes_at_most_every_interval(jwks_file, rsa_key):
    now = [1000.0]
    source = CountingSource(jwks_file)
    v = validator(source, refresh_interval=60, clock=lambda: now[0])
    assert v.validate(sign(rsa_key)).rpps
    assert source.reads == 1
    assert v.validate(sign(rsa_key)).rpps
    assert source.reads == 1  # cached
    now[0] += 61
    refused(v, sign(rsa_key, kid="forged-1"), "unknown signing key")
    assert source.reads == 2
    for index in range(5):
        refused(v, sign(rsa_key, kid=f"forged-{index}"), "unknown signing key")
    assert source.reads == 2  # no more than one reload per interval
    now[0] += 61
    refused(v, sign(rsa_key, kid="forged-x"), "unknown signing key")
    assert source.reads == 3


def test_key_rotation_is_picked_up(tmp_path, rsa_key):
    now = [1000.0]
    path = write_jwks(tmp_path / "jwks.json", jwk(rsa_key.public_key(), "rsa1"))
    v = validator(path, refresh_interval=30, clock=lambda: now[0])
    assert v.validate(sign(rsa_key)).rpps
    new_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    write_jwks(path, jwk(rsa_key.public_key(), "rsa1"), jwk(new_key.public_key(), "rsa2"))
    now[0] += 31
    assert v.validate(sign(new_key, kid="rsa2")).rpps == "10001234567"


def test_withdrawn_key_stops_working_after_max_age(tmp_path, rsa_key):
    now = [1000.0]
    path = write_jwks(tmp_path / "jwks.json", jwk(rsa_key.public_key(), "rsa1"))
    v = validator(path, max_age=600, clock=lambda: now[0])
    assert v.validate(sign(rsa_key)).rpps
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    write_jwks(path, jwk(other.public_key(), "rsa9"))
    now[0] += 100
    assert v.validate(sign(rsa_key)).rpps  # still cached
    now[0] += 600
    refused(v, sign(rsa_key), "unknown signing key")


def test_jwks_unavailable(tmp_path, rsa_key):
    now = [1000.0]
    path = tmp_path / "missing.json"
    v = validator(path, clock=lambda: now[0])
    with pytest.raises(TokenKeysUnavailable):
        v.validate(sign(rsa_key))
    with pytest.raises(TokenKeysUnavailable):  # within the interval: not retried, still temporary
        v.validate(sign(rsa_key))
    write_jwks(path, jwk(rsa_key.public_key(), "rsa1"))
    now[0] += 61
    assert v.validate(sign(rsa_key)).rpps
    path.write_text("garbage", encoding="utf-8")
    now[0] += 4000
    assert v.validate(sign(rsa_key)).rpps  # reload failed: the cached keys are kept


def test_parse_jwks_skips_unusable_keys(rsa_key, ec_key):
    p384 = ec.generate_private_key(ec.SECP384R1()).public_key()
    document = {"keys": [
        jwk(rsa_key.public_key(), "sig"),
        jwk(rsa_key.public_key(), "enc", use="enc"),
        jwk(rsa_key.public_key(), "rs512", alg="RS512"),
        jwk(p384, "p384"),
        {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
        {"kty": "RSA", "kid": "broken", "n": "AQAB"},
        "not a key",
        jwk(ec_key.public_key(), "ec"),
    ]}
    assert sorted(k for k in parse_jwks(json.dumps(document).encode()) if k) == ["ec", "sig"]
    with pytest.raises(ValueError):
        parse_jwks(b"{}")
    with pytest.raises(ValueError):
        parse_jwks(b"\xff")


def test_rpps_from_claim():
    assert rpps_from_claim("810001234567") == "10001234567"
    assert rpps_from_claim(810001234567) == "10001234567"
    assert rpps_from_claim("10001234567") == "10001234567"
    assert rpps_from_claim(True) is None
    assert rpps_from_claim(None) is None
    assert rpps_from_claim("0751234567") is None


# -- URLs -----------------------------------------------------------------------------------------------


def test_jwks_url_rules():
    with pytest.raises(ValueError, match="https"):
        JwksSource("http://idp.example/jwks")
    with pytest.raises(ValueError, match="no host"):
        JwksSource("https:///jwks")
    assert JwksSource("https://idp.example/jwks").is_url
    assert JwksSource("http://127.0.0.1:8080/jwks").is_url
    assert not JwksSource("/etc/mssante/jwks.json").is_url


def test_jwks_from_injected_fetch(rsa_key):
    calls = []

    def fetch(url, timeout):
        calls.append((url, timeout))
        return json.dumps({"keys": [jwk(rsa_key.public_key(), "rsa1")]}).encode()

    source = JwksSource("https://auth.esw.esante.gouv.fr/jwks", timeout=3.0, fetch=fetch)
    assert validator(source).validate(sign(rsa_key)).rpps
    assert calls == [("https://auth.esw.esante.gouv.fr/jwks", 3.0)]


def test_jwks_over_loopback_http(rsa_key):
    body = json.dumps({"keys": [jwk(rsa_key.public_key(), "rsa1")]}).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/jwks"
        assert validator(url).validate(sign(rsa_key)).rpps == "10001234567"
    finally:
        server.shutdown()
        server.server_close()
