"""One-time secrets the patient types: the provisional activation code and the login code.

Both are stored only as argon2 hashes (the same hasher as passwords) and compared in constant time by
argon2's verify. The activation code uses an alphabet without look-alikes (no I, O, 0, 1), as codes
printed on a letter or read aloud must be typed back without doubt.
"""

from __future__ import annotations

import secrets

from argon2.exceptions import InvalidHashError, VerificationError

from mssante_base.passwords import password_hasher

ACTIVATION_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
ACTIVATION_LENGTH = 12
LOGIN_CODE_DIGITS = 6
MIN_PASSWORD = 12  # characters of a patient's password (web activation and the command line)


def new_activation_code() -> str:
    return "".join(secrets.choice(ACTIVATION_ALPHABET) for _ in range(ACTIVATION_LENGTH))


def normal_activation_code(typed: str) -> str:
    """What the patient typed, as compared: spaces and dashes dropped, upper case."""
    return "".join(ch for ch in typed.upper() if ch not in " -")


def new_login_code() -> str:
    return f"{secrets.randbelow(10**LOGIN_CODE_DIGITS):0{LOGIN_CODE_DIGITS}d}"


def hash_code(code: str) -> str:
    return password_hasher().hash(code)


def verify_code(code_hash: str | None, typed: str) -> bool:
    if not code_hash:
        return False
    try:
        return password_hasher().verify(code_hash, typed)
    except (VerificationError, InvalidHashError):
        return False
