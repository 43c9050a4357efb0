"""The hasher of every new password hash, for the operator's accounts and the bridge's patients alike."""

from __future__ import annotations

from argon2 import PasswordHasher

# argon2id parameters of new hashes: OWASP's first recommended configuration.
ARGON2_MEMORY_KIB = 19 * 1024  # 19 MiB
ARGON2_TIME_COST = 2
ARGON2_PARALLELISM = 1


def password_hasher() -> PasswordHasher:
    """The hasher of every new password hash: argon2id, m=19 MiB, t=2, p=1.

    These are the first parameters recommended by the OWASP Password Storage Cheat Sheet
    (https://cheatsheetseries.owasp.org/cheatsheets/Password_Storage_Cheat_Sheet.html, "Argon2id":
    "m=19456 (19 MiB), t=2, p=1"), which it deems as strong as its other configurations that trade
    memory for iterations. argon2-cffi's defaults (RFC 9106 low-memory: 64 MiB, t=3, p=4) cost about
    five times the CPU and three times the memory per login for no gain that OWASP counts. Hashes made
    with other parameters keep verifying: each PHC string carries its own.
    """
    return PasswordHasher(time_cost=ARGON2_TIME_COST, memory_cost=ARGON2_MEMORY_KIB, parallelism=ARGON2_PARALLELISM)

