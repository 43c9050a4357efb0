"""SASL payload parsers: PLAIN, LOGIN, EXTERNAL, OAUTHBEARER, XOAUTH2, and the error challenges."""

from __future__ import annotations

import base64
import json

import pytest

from mssante_operator.auth import sasl
from mssante_operator.auth.sasl import SaslCancelled, SaslError

TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"


# -- framing helpers ----------------------------------------------------------------------------------


def test_decode_response_base64_empty_and_cancel():
    assert sasl.decode_response(base64.b64encode(b"\x00u\x00p").decode()) == b"\x00u\x00p"
    assert sasl.decode_response(b"AHUAcA==") == b"\x00u\x00p"
    assert sasl.decode_response("=") == b""
    assert sasl.decode_response("") == b""
    with pytest.raises(SaslCancelled):
        sasl.decode_response("*")
    with pytest.raises(SaslError, match="base64"):
        sasl.decode_response("not base64!")
    with pytest.raises(SaslError, match="base64"):
        sasl.decode_response("é".encode())


def test_encode_challenge():
    assert sasl.encode_challenge(b"Username:") == "VXNlcm5hbWU6"
    assert sasl.encode_challenge(b"") == ""


def test_mechanisms_depend_on_tls_certificate_and_tokens():
    assert sasl.mechanisms(tls=False, client_certificate=True, tokens=True) == []
    assert sasl.mechanisms(tls=True) == ["PLAIN", "LOGIN"]
    assert sasl.mechanisms(tls=True, client_certificate=True) == ["EXTERNAL", "PLAIN", "LOGIN"]
    assert sasl.mechanisms(tls=True, client_certificate=True, tokens=True) == [
        "EXTERNAL", "OAUTHBEARER", "XOAUTH2", "PLAIN", "LOGIN",
    ]


# -- PLAIN --------------------------------------------------------------------------------------------


def test_plain_without_authzid():
    creds = sasl.parse_plain(b"\x00dr.martin@h.fr\x00s3cret pass")
    assert (creds.authzid, creds.authcid, creds.password) == ("", "dr.martin@h.fr", "s3cret pass")


def test_plain_with_authzid_and_utf8():
    creds = sasl.parse_plain("cardiologie@h.fr\x00inès@h.fr\x00mot-de-passe-été".encode())
    assert creds.authzid == "cardiologie@h.fr"
    assert creds.authcid == "inès@h.fr"
    assert creds.password == "mot-de-passe-été"


def test_plain_password_not_in_repr():
    creds = sasl.parse_plain(b"\x00user\x00hunter2")
    assert "hunter2" not in repr(creds)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"user password", "two NUL"),
        (b"user\x00password", "two NUL"),
        (b"a\x00b\x00c\x00d", "two NUL"),
        (b"\x00\x00password", "identity is empty"),
        (b"\x00user\x00", "password is empty"),
        (b"\x00us\xffer\x00pw", "UTF-8"),
        (b"\x00user\x00p\xc3", "UTF-8"),
        (b"\x00user\r\nX\x00pw", "control"),
        (b"zz\x07\x00user\x00pw", "control"),
        (b"\x00" + b"u" * 1025 + b"\x00pw", "too long"),
        (b"\x00user\x00" + b"p" * 1025, "too long"),
        (b"\x00user\x00" + b"p" * 5000, "too long"),
    ],
)
def test_plain_malformed(payload, message):
    with pytest.raises(SaslError, match=message):
        sasl.parse_plain(payload)


def test_plain_accepts_255_octet_fields():
    creds = sasl.parse_plain(b"a" * 255 + b"\x00" + b"b" * 255 + b"\x00" + b"c" * 255)
    assert len(creds.authcid) == len(creds.password) == 255


# -- LOGIN --------------------------------------------------------------------------------------------


def test_login_fields():
    assert sasl.parse_login_field(b"dr.martin@h.fr") == "dr.martin@h.fr"
    assert sasl.parse_login_field(b"pass word\t", "password") == "pass word\t"
    with pytest.raises(SaslError, match="empty"):
        sasl.parse_login_field(b"")
    with pytest.raises(SaslError, match="NUL"):
        sasl.parse_login_field(b"a\x00b", "password")
    with pytest.raises(SaslError, match="control"):
        sasl.parse_login_field(b"user\nname")
    with pytest.raises(SaslError, match="too long"):
        sasl.parse_login_field(b"x" * 2000, "password")


# -- EXTERNAL -----------------------------------------------------------------------------------------


def test_external():
    assert sasl.parse_external(b"").authzid == ""
    assert sasl.parse_external(b"cardiologie@h.fr").authzid == "cardiologie@h.fr"
    with pytest.raises(SaslError):
        sasl.parse_external(b"a\x00b")
    with pytest.raises(SaslError):
        sasl.parse_external(b"\xff")


# -- OAUTHBEARER --------------------------------------------------------------------------------------


def test_oauthbearer_rfc7628_example():
    # RFC 7628 section 4.1 (with a JWT-shaped token).
    payload = f"n,a=user@example.com,\x01host=server.example.com\x01port=143\x01auth=Bearer {TOKEN}\x01\x01"
    creds = sasl.parse_oauthbearer(payload.encode())
    assert creds.mechanism == "OAUTHBEARER"
    assert creds.token == TOKEN
    assert creds.user == "user@example.com"
    assert creds.host == "server.example.com"
    assert creds.port == 143
    assert TOKEN not in repr(creds)


def test_oauthbearer_without_authzid_and_case_insensitive_scheme():
    creds = sasl.parse_oauthbearer(f"n,,\x01auth=bearer {TOKEN}\x01\x01".encode())
    assert creds.user == ""
    assert creds.token == TOKEN
    assert creds.port is None


def test_oauthbearer_escaped_authzid():
    creds = sasl.parse_oauthbearer(f"y,a=we=2Cird=3Dname@x,\x01auth=Bearer {TOKEN}\x01\x01".encode())
    assert creds.user == "we,ird=name@x"


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (f"n,a=u@x,auth=Bearer {TOKEN}", "no \\^A separator"),
        (f"n,a=u@x\x01auth=Bearer {TOKEN}\x01\x01", "GS2 header"),
        (f"p=tls-unique,,\x01auth=Bearer {TOKEN}\x01\x01", "channel binding"),
        (f"x,,\x01auth=Bearer {TOKEN}\x01\x01", "channel-binding flag"),
        (f"n,b=u@x,\x01auth=Bearer {TOKEN}\x01\x01", "malformed authzid"),
        (f"n,a=,\x01auth=Bearer {TOKEN}\x01\x01", "malformed authzid"),
        (f"n,a=u=41@x,\x01auth=Bearer {TOKEN}\x01\x01", "escape"),
        (f"n,a=u,v@x,\x01auth=Bearer {TOKEN}\x01\x01", "unescaped"),
        (f"n,,\x01auth=Bearer {TOKEN}\x01", "\\^A\\^A"),
        ("n,,\x01host=x\x01\x01", "no auth"),
        ("n,,\x01\x01", "no auth"),
        (f"n,,\x01auth=Bearer {TOKEN}\x01auth=Bearer x\x01\x01", "repeats"),
        (f"n,,\x01au th=Bearer {TOKEN}\x01\x01", "malformed key"),
        (f"n,,\x01auth=Basic {TOKEN}\x01\x01", "Bearer"),
        ("n,,\x01auth=Bearer \x01\x01", "Bearer"),
        ("n,,\x01auth=Bearer tok en\x01\x01", "Bearer"),
        (f"n,,\x01auth=Bearer {TOKEN}\x01port=99999\x01\x01", "port"),
        (f"n,,\x01auth=Bearer {TOKEN}\x01port=abc\x01\x01", "port"),
        (f"n,,\x01auth=Bearer {TOKEN}\x01host=a\x00b\x01\x01", "control"),
        ("n,,\x01auth=Bearer " + "a" * 20000 + "\x01\x01", "too long"),
    ],
)
def test_oauthbearer_malformed(payload, message):
    with pytest.raises(SaslError, match=message):
        sasl.parse_oauthbearer(payload.encode())


def test_oauthbearer_abort():
    assert sasl.is_oauthbearer_abort(b"\x01")
    assert not sasl.is_oauthbearer_abort(b"")
    with pytest.raises(SaslError):
        sasl.parse_oauthbearer(b"\x01")


def test_oauthbearer_error_challenge():
    challenge = json.loads(sasl.oauthbearer_error(scope="openid scope_all"))
    assert challenge == {"status": "invalid_token", "schemes": "bearer", "scope": "openid scope_all"}
    assert sasl.oauthbearer_error() == b'{"status":"invalid_token","schemes":"bearer"}'
    with_config = json.loads(sasl.oauthbearer_error(openid_configuration="https://idp/.well-known/openid-configuration"))
    assert with_config["openid-configuration"].startswith("https://idp/")


# -- XOAUTH2 ------------------------------------------------------------------------------------------


def test_xoauth2_google_format():
    payload = f"user=dr.martin@h.fr\x01auth=Bearer {TOKEN}\x01\x01".encode()
    creds = sasl.parse_xoauth2(payload)
    assert (creds.mechanism, creds.user, creds.token) == ("XOAUTH2", "dr.martin@h.fr", TOKEN)


def test_xoauth2_google_documented_example():
    # https://developers.google.com/gmail/imap/xoauth2-protocol: base64 of the initial client response.
    line = (
        "dXNlcj1zb21ldXNlckBleGFtcGxlLmNvbQFhdXRoPUJlYXJlciB5YTI5LnZGOWRmdDRxbVRjMk52YjNSbGNrQmhkSFJoZG1semRHRXVZ"
        "Mjl0Q2cBAQ=="
    )
    creds = sasl.parse_xoauth2(sasl.decode_response(line))
    assert creds.user == "someuser@example.com"
    assert creds.token == "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg"


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (f"user=u@x\x01auth=Bearer {TOKEN}", "\\^A\\^A"),
        ("user=u@x\x01\x01", "no auth"),
        (f"user=u@x\x01auth=Bearer {TOKEN}\x01user=v@x\x01\x01", "repeats"),
        (f"user=u\x00@x\x01auth=Bearer {TOKEN}\x01\x01", "control"),
        (f"user=u@x\x01auth=Token {TOKEN}\x01\x01", "Bearer"),
        (b"user=\xff\x01auth=Bearer x\x01\x01".decode("latin-1"), "UTF-8"),
    ],
)
def test_xoauth2_malformed(payload, message):
    data = payload.encode("latin-1") if "\xff" in payload else payload.encode()
    with pytest.raises(SaslError, match=message):
        sasl.parse_xoauth2(data)


def test_xoauth2_error_challenge():
    assert json.loads(sasl.xoauth2_error(scope="https://mail.example/")) == {
        "status": "401", "schemes": "bearer", "scope": "https://mail.example/",
    }
