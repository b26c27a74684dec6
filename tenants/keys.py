"""API key format: "aw_live_" + 40 base62 characters from `secrets`; stored as the SHA-256 of the whole key."""

import hashlib
import secrets
import string

KEY_PREFIX = "aw_live_"
_ALPHABET = string.ascii_letters + string.digits
SECRET_LENGTH = 40
DISPLAY_PREFIX_LENGTH = len(KEY_PREFIX) + 4


def generate_key() -> str:
    return KEY_PREFIX + "".join(secrets.choice(_ALPHABET) for _ in range(SECRET_LENGTH))


def hash_key(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode("utf-8", errors="surrogateescape")).hexdigest()


def display_prefix(raw_key: str) -> str:
    return raw_key[:DISPLAY_PREFIX_LENGTH]
