"""Hashing of what we must check but never keep: passwords (argon2id), client secrets and tokens."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

# argon2id, memory-hard (RFC 9106 second recommended option: 64 MiB, 3 passes).
_HASHER = PasswordHasher(time_cost=3, memory_cost=64 * 1024, parallelism=1)
# Compared against when the user is unknown, so that timing does not tell which usernames exist.
_DUMMY = _HASHER.hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def verify_password(stored: str | None, password: str) -> bool:
    try:
        return _HASHER.verify(stored or _DUMMY, password) and stored is not None
    except (VerificationError, InvalidHashError):
        return False


def digest(value: str) -> str:
    """SHA-256 of a high-entropy random value (token, code, client secret): a fast hash is enough,
    there is nothing to brute-force, and it lets us look the value up by its hash."""
    return hashlib.sha256(value.encode()).hexdigest()


def same_digest(stored: str | None, value: str) -> bool:
    return stored is not None and hmac.compare_digest(stored, digest(value))


def random_token(nbytes: int = 32) -> str:
    return secrets.token_urlsafe(nbytes)
