"""DkimSigner: signatures dkimpy verifies (RSA, Ed25519), what they protect, canonicalization identical to dkimpy's."""

from __future__ import annotations

import random
import re
import time
from concurrent.futures import ThreadPoolExecutor

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from dkim.canonicalization import Relaxed
from support.harness import lab_report

from mssante_operator.trust_space import dev_pki
from mssante_operator.trust_space.dkim import StaticKeys, sign_message, verify_message
from mssante_operator.trust_space.dkim_signing import DkimSigner, _split, relaxed_body

DOMAIN = "hopital-demo.mssante.fr"
SELECTOR = "out2026"
SENDER = f"dr.durand@{DOMAIN}"


@pytest.fixture(scope="module", params=["rsa", "ed25519"])
def key(request) -> tuple[bytes, str]:
    return dev_pki.make_dkim_key(ed25519=request.param == "ed25519")


@pytest.fixture(scope="module")
def signer(key) -> DkimSigner:
    return DkimSigner(DOMAIN, SELECTOR, key[0])


@pytest.fixture(scope="module")
def published(key) -> StaticKeys:
    return StaticKeys({f"{SELECTOR}._domainkey.{DOMAIN}": key[1]})


def _results(signer: DkimSigner, published: StaticKeys, message: bytes, *, after=None) -> list[str]:
    signed = signer.sign(message) + message
    if after is not None:
        signed = after(signed)
    return [r.result for r in verify_message(signed, published)]


def _tags(field: bytes) -> dict[bytes, bytes]:
    value = re.sub(rb"\s+", b"", field.split(b":", 1)[1])
    return dict(tag.split(b"=", 1) for tag in value.split(b";") if tag)


REPORT = lab_report(SENDER, ["secretariat@clinique-ouest.mssante.fr"], size=50_000, message_id="<cr-7@hopital>")


def test_algorithm_follows_the_key(signer, key):
    expected = "ed25519-sha256" if "k=ed25519" in key[1] else "rsa-sha256"
    assert signer.algorithm == expected
    assert _tags(signer.sign(REPORT))[b"a"] == expected.encode()


def test_a_50k_report_verifies_with_dkimpy(signer, published):
    assert _results(signer, published, REPORT) == ["pass"]


def test_tags_relaxed_timestamped_and_folded(signer):
    field = signer.sign(REPORT)
    tags = _tags(field)
    assert tags[b"c"] == b"relaxed/relaxed"
    assert (tags[b"d"], tags[b"s"], tags[b"i"]) == (DOMAIN.encode(), SELECTOR.encode(), b"@" + DOMAIN.encode())
    assert abs(int(tags[b"t"]) - time.time()) < 60
    assert field.startswith(b"DKIM-Signature: ") and field.endswith(b"\r\n")
    lines = field[:-2].split(b"\r\n")
    assert all(len(line) <= 78 for line in lines)
    assert all(line[:1] == b" " for line in lines[1:])
    assert b"\n" not in field.replace(b"\r\n", b"")


def test_body_hash_is_dkimpys(signer):
    theirs = sign_message(REPORT, domain=DOMAIN, selector=SELECTOR, private_key_pem=dev_pki.make_dkim_key()[0])
    assert _tags(signer.sign(REPORT))[b"bh"] == _tags(theirs)[b"bh"]


def test_signed_headers_are_sign_messages_each_oversigned_once(signer):
    theirs = sign_message(REPORT, domain=DOMAIN, selector=SELECTOR, private_key_pem=dev_pki.make_dkim_key()[0])
    their_names = _tags(theirs)[b"h"].split(b":")
    ours = _tags(signer.sign(REPORT))[b"h"].split(b":")
    present = {b"from", b"to", b"subject", b"date", b"message-id", b"mime-version", b"content-type"}
    assert sorted(set(ours)) == sorted(their_names)
    for name in their_names:
        assert ours.count(name) == (2 if name in present else 1), name


@pytest.mark.parametrize("tamper", [
    pytest.param(lambda m: m.replace(b"Veuillez trouver", b"Veuillez ignorer"), id="body"),
    pytest.param(lambda m: m + b"PS: rappelez-moi\r\n", id="appended-body"),
    pytest.param(lambda m: m.replace(b" de biologie", b" de cardiologie"), id="subject"),
    pytest.param(lambda m: m.replace(b"To: secretariat@", b"To: autre@"), id="to"),
    pytest.param(lambda m: b"From: escroc@evil.example\r\n" + m, id="second-from"),
    pytest.param(lambda m: b"Subject: Urgent, rappelez ce numero\r\n" + m, id="second-subject"),
    pytest.param(lambda m: b"Cc: fuite@evil.example\r\n" + m, id="added-cc"),
    pytest.param(lambda m: m.replace(b"Date:", b"X-Mss-Ins: 1234\r\nDate:", 1), id="added-absent-field"),
])
def test_tampering_fails(signer, published, tamper):
    assert _results(signer, published, REPORT, after=tamper) == ["fail"]


def test_harmless_changes_still_pass(signer, published):
    """Relaxed canonicalization: refolding a header, extra spaces at line ends, trailing blank lines."""
    def rewrap(m: bytes) -> bytes:
        m = m.replace(b"Subject: =?utf-8?q?R=C3=A9sultats?= de", b"Subject:   =?utf-8?q?R=C3=A9sultats?=\r\n\tde")
        return m.replace(b"Bonjour,\r\n", b"Bonjour,  \r\n") + b"\r\n\r\n"
    assert rewrap(REPORT).count(b"\r\n\tde") == rewrap(REPORT).count(b"Bonjour,  ") == 1
    assert _results(signer, published, REPORT, after=rewrap) == ["pass"]


def _message(*headers: bytes, body: bytes = b"Bonjour\r\n") -> bytes:
    return b"".join(h + b"\r\n" for h in headers) + b"\r\n" + body


@pytest.mark.parametrize("message", [
    pytest.param(_message(b"From: " + SENDER.encode(), b"Date: Mon, 4 May 2026 10:00:00 +0200"), id="bare-minimum"),
    pytest.param(_message(b"From: " + SENDER.encode()), id="from-only"),
    pytest.param(_message(b"From: " + SENDER.encode(), b"To: a@b.fr", body=b""), id="empty-body"),
    pytest.param(_message(b"From: " + SENDER.encode(), b"To: a@b.fr", body=b"\r\n\r\n"), id="blank-body"),
    pytest.param(_message(b"From: " + SENDER.encode(), b"To: a@b.fr")[:-2], id="no-body-separator"),
    pytest.param(_message(b"From: " + SENDER.encode(), b"To: a@b.fr,\r\n\tb@c.fr,\r\n  c@d.fr",
                          b"Subject: un sujet\r\n  sur deux lignes"), id="folded-headers"),
    pytest.param(_message("From: Élodie Müller <e.muller@hopital-demo.mssante.fr>".encode(),
                          "Subject: Résultat d'échographie — œdème".encode(),
                          b"Content-Type: text/plain; charset=utf-8",
                          body="Très bien, à demain.\r\n".encode()), id="8bit-utf8-headers"),
    pytest.param(b"From: a@hopital-demo.mssante.fr\nTo: b@c.fr\n\nLF only\nlines \t \n\n", id="lf-line-ends"),
    pytest.param(_message(b"From: " + SENDER.encode(), b"X-Mss-Ins: 1 23 45", b"X-MSS-MES: 1",
                          body=b"tabs\t\tand  spaces  \r\n \r\n"), id="mss-headers"),
])
def test_unusual_messages_verify(signer, published, message):
    assert _results(signer, published, message) == ["pass"]


def test_unreadable_header_block_is_a_value_error(signer):
    with pytest.raises(ValueError, match="header block"):
        signer.sign(b"From: a@b.fr\r\nno colon on this line\r\n\r\nbody\r\n")


def _pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def test_rsa_key_under_2048_bits_is_refused():
    with pytest.raises(ValueError, match="1024 bits refused"):
        DkimSigner(DOMAIN, SELECTOR, _pem(rsa.generate_private_key(public_exponent=65537, key_size=1024)))


def test_other_key_types_are_refused():
    with pytest.raises(ValueError, match="not supported"):
        DkimSigner(DOMAIN, SELECTOR, _pem(ec.generate_private_key(ec.SECP256R1())))


def test_signing_from_many_threads(signer, published):
    messages = [lab_report(SENDER, [f"dr{n}@clinique-ouest.mssante.fr"], message_id=f"<t{n}@h>") for n in range(40)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        fields = list(pool.map(signer.sign, messages))
    assert [r.result for f, m in zip(fields, messages, strict=True) for r in verify_message(f + m, published)] \
        == ["pass"] * len(messages)


# Canonicalization: our C-level body pass and header split against dkimpy's own functions.

BODIES = [
    b"", b"\r\n", b"\r\n\r\n\r\n", b"a", b"a\r\n", b"a \t \r\n\r\n", b" \t", b"\t\r\n \r\n",
    b"x  y\t\tz \r\n", b"lone\rcr \r\r\n", b"cr-then-space\r \r\n", b"lf\nonly \n\n", b"mixed\r\n\n \n",
    b"no final line end  ", b"   leading\r\n", b"a\r\n\r\n\r\nb\r\n\r\n", "é  à\t\r\n".encode(), b" " * 1000,
]


def _dkimpy_body(message: bytes) -> bytes:
    return Relaxed.canonicalize_body(dkim.rfc822_parse(message)[1])


@pytest.mark.parametrize("body", BODIES)
def test_relaxed_body_is_dkimpys(body):
    message = b"From: a@b.fr\r\n\r\n" + body
    assert relaxed_body(_split(message)[1]) == _dkimpy_body(message)


def test_split_and_body_match_dkimpy_on_random_messages():
    rng = random.Random(5)
    alphabet = [b" ", b"\t", b"\r", b"\n", b"\r\n", b"a", b"Z", b"\xc3\xa9", b"  ", b"\r\n\r\n"]
    for _ in range(2000):
        head = rng.choice([b"From: a@b.fr\r\n", b"From: a@b.fr\n", b"From: a@b.fr\r\nTo: c\r\n\t d\r\n", b""])
        separator = rng.choice([b"\r\n", b"\n"])
        body = b"".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 60)))
        message = head + separator + body
        header_block, raw_body = _split(message)
        headers, _ = dkim.rfc822_parse(message)
        assert (dkim.rfc822_parse(header_block)[0] if header_block else []) == headers, message
        assert relaxed_body(raw_body) == _dkimpy_body(message), message
