"""Hashed API keys and passwords (pure, stdlib).

API keys are long random strings, so one SHA-256 is enough: ``sha256:<hex>``.
Passwords are not: they are stored as PBKDF2-SHA256,
``pbkdf2_sha256$<iterations>$<salt b64>$<hash b64>`` (Django's layout).
Comparisons are constant-time (``hmac.compare_digest``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

PBKDF2_ITERATIONS = 600_000  # OWASP 2023 for PBKDF2-HMAC-SHA256


def hash_api_key(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def parse_key_hash(value: str) -> bytes:
    """The digest in a ``sha256:<hex>`` value; ``ValueError`` if it is not one."""
    scheme, _, digest = value.partition(":")
    if scheme != "sha256" or len(digest) != 64:
        raise ValueError("must be 'sha256:<64 hex digits>' (gatehouse hash api-key)")
    try:
        return bytes.fromhex(digest)
    except ValueError:
        raise ValueError("must be 'sha256:<64 hex digits>' (gatehouse hash api-key)") from None


def key_digest(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()


def hash_password(password: str, *, iterations: int = PBKDF2_ITERATIONS, salt: bytes | None = None) -> str:
    salt = salt if salt is not None else os.urandom(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return f"pbkdf2_sha256${iterations}${_b64(salt)}${_b64(digest)}"


def parse_password_hash(value: str) -> tuple[int, bytes, bytes]:
    """Iterations, salt and digest of a stored password hash."""
    parts = value.split("$")
    problem = "must be 'pbkdf2_sha256$<iterations>$<salt>$<hash>' (gatehouse hash password)"
    if len(parts) != 4 or parts[0] != "pbkdf2_sha256" or not parts[1].isdigit() or int(parts[1]) < 1:
        raise ValueError(problem)
    try:
        return int(parts[1]), _unb64(parts[2]), _unb64(parts[3])
    except ValueError:
        raise ValueError(problem) from None


def verify_password(password: bytes, stored: tuple[int, bytes, bytes]) -> bool:
    iterations, salt, expected = stored
    return hmac.compare_digest(hashlib.pbkdf2_hmac("sha256", password, salt, iterations), expected)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
