"""DKIM signing cost per 50 KB lab report, on one core: dkimpy's sign_message against DkimSigner.

Prints mean and p99 time per message and messages per second for dkimpy (RSA 2048, pure-Python
RSA), DkimSigner RSA 2048 and DkimSigner Ed25519, then where the time goes (parsing, body
canonicalization, hashing, the signature itself). Figures only: nothing is asserted.

    .venv/bin/python benchmarks/dkim_sign.py [--messages 400] [--size 50000]
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import dkim  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import padding  # noqa: E402
from dkim.canonicalization import Relaxed  # noqa: E402
from support.harness import lab_report  # noqa: E402

from mssante_operator.trust_space.dev_pki import make_dkim_key  # noqa: E402
from mssante_operator.trust_space.dkim import sign_message  # noqa: E402
from mssante_operator.trust_space.dkim_signing import DkimSigner, _split, relaxed_body  # noqa: E402

DOMAIN = "hopital-demo.mssante.fr"
SELECTOR = "bench"


def _timings(sign: Callable[[bytes], object], messages: list[bytes]) -> list[float]:
    sign(messages[0])  # warm caches and lazy imports outside the measure
    times = []
    for message in messages:
        start = time.perf_counter()
        sign(message)
        times.append(time.perf_counter() - start)
    return times


def _row(label: str, times: list[float]) -> None:
    p99 = sorted(times)[max(0, int(len(times) * 0.99) - 1)]
    mean = statistics.fmean(times)
    print(f"{label:<34} mean {mean * 1000:7.3f} ms   p99 {p99 * 1000:7.3f} ms   {1 / mean:8.0f} msgs/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=400)
    parser.add_argument("--size", type=int, default=50_000)
    args = parser.parse_args()

    messages = [lab_report(f"biologie@{DOMAIN}", ["dr.martin@clinique-ouest.mssante.fr"], size=args.size,
                           message_id=f"<bench-{n}@{DOMAIN}>") for n in range(args.messages)]
    rsa_pem, _ = make_dkim_key()
    ed_pem, _ = make_dkim_key(ed25519=True)
    rsa_signer = DkimSigner(DOMAIN, SELECTOR, rsa_pem)
    ed_signer = DkimSigner(DOMAIN, SELECTOR, ed_pem)
    print(f"{len(messages)} lab reports of {len(messages[0])} bytes, one thread")

    def dkimpy_sign(message: bytes) -> bytes:
        return sign_message(message, domain=DOMAIN, selector=SELECTOR, private_key_pem=rsa_pem)

    # dkimpy is slow: a quarter of the messages is enough for its figures.
    _row("dkimpy sign_message (RSA 2048)", _timings(dkimpy_sign, messages[: max(1, len(messages) // 4)]))
    _row("DkimSigner RSA 2048", _timings(rsa_signer.sign, messages))
    _row("DkimSigner Ed25519", _timings(ed_signer.sign, messages))

    print("\nwhere the time goes, per message:")
    raw_body = _split(messages[0])[1]
    dkimpy_body = dkim.rfc822_parse(messages[0])[1]
    canonical = relaxed_body(raw_body)
    rsa_key = serialization.load_pem_private_key(rsa_pem, password=None)
    ed_key = serialization.load_pem_private_key(ed_pem, password=None)
    steps: list[tuple[str, Callable[[bytes], object]]] = [
        ("dkimpy rfc822_parse (whole message)", dkim.rfc822_parse),
        ("dkimpy relaxed body (regexes)", lambda _m: Relaxed.canonicalize_body(dkimpy_body)),
        ("ours: split header block", _split),
        ("ours: relaxed body (bytes ops)", lambda _m: relaxed_body(raw_body)),
        ("sha256 of the canonical body", lambda _m: hashlib.sha256(canonical).digest()),
        ("OpenSSL RSA 2048 PKCS#1 v1.5 sign", lambda _m: rsa_key.sign(b"h" * 600, padding.PKCS1v15(), hashes.SHA256())),
        ("OpenSSL Ed25519 sign", lambda _m: ed_key.sign(b"h" * 32)),
    ]
    for label, step in steps:
        _row(label, _timings(step, messages))


if __name__ == "__main__":
    main()
