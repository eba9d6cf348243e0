"""Users' secrets at rest and in transit to pilots: AES-256-GCM under EWMS_SECRETS_KEY, and
the fetch tokens that let one taskforce's pilots read its task's secrets.

Two keys are derived from the configured one (HMAC-SHA256 with a fixed label each), so the
encryption key never signs anything. A ciphertext is bound to its owner and key name (the
GCM associated data): a stored value copied to another user's or key's row does not decrypt.
A fetch token is `<taskforce uuid>.<HMAC of it>`: every replica derives the same one, a TMS
asking twice gets the same one, and nothing is stored; it stops working when the workflow
ends (the route checks that).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
"""What a secret's key may be (it becomes part of an environment variable name)."""
ENV_PREFIX = "EWMS_SECRET_"
_NONCE = 12
_VERSION = "v1"


class SecretsKeyError(ValueError):
    """EWMS_SECRETS_KEY is not a base64 encoding of 32 bytes."""


class Undecryptable(Exception):
    """A stored value does not decrypt under this key (another key, or tampered with)."""


def parse_key(text: str) -> bytes:
    """The 32 key bytes from their base64 text (URL-safe or standard, as Fernet keys are)."""
    raw = text.strip()
    try:
        key = base64.urlsafe_b64decode(raw.replace("+", "-").replace("/", "_") + "=" * (-len(raw) % 4))
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != 32:
        raise SecretsKeyError(
            "EWMS_SECRETS_KEY: expected the base64 encoding of 32 random bytes "
            "(make one with `ewms-server secrets-key`)"
        )
    return key


def new_key_text() -> str:
    """A fresh EWMS_SECRETS_KEY value."""
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


class SecretsBox:
    """Encrypts, decrypts and mints fetch tokens with keys derived from EWMS_SECRETS_KEY."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(hmac.digest(key, b"ewms-secrets-encrypt", "sha256"))
        self._mac = hmac.digest(key, b"ewms-secrets-fetch-token", "sha256")

    def __repr__(self) -> str:
        return "SecretsBox(<key hidden>)"

    @staticmethod
    def _aad(owner: str, key: str) -> bytes:
        return f"{_VERSION}\0{owner}\0{key}".encode()

    def encrypt(self, owner: str, key: str, value: str) -> str:
        nonce = os.urandom(_NONCE)
        sealed = self._aead.encrypt(nonce, value.encode(), self._aad(owner, key))
        return f"{_VERSION}:" + base64.b64encode(nonce + sealed).decode()

    def decrypt(self, owner: str, key: str, stored: str) -> str:
        version, _, body = stored.partition(":")
        try:
            raw = base64.b64decode(body, validate=True)
            if version != _VERSION or len(raw) <= _NONCE:
                raise ValueError
            return self._aead.decrypt(raw[:_NONCE], raw[_NONCE:], self._aad(owner, key)).decode()
        except (ValueError, binascii.Error, InvalidTag):
            raise Undecryptable(
                f"secret {key!r} of {owner!r} does not decrypt with EWMS_SECRETS_KEY"
            ) from None

    def fetch_token(self, taskforce_uuid: str) -> str:
        return f"{taskforce_uuid}.{self._sign(taskforce_uuid)}"

    def taskforce_of(self, token: str) -> str | None:
        """The taskforce a fetch token was minted for; None when it is not one of ours."""
        uuid, _, mac = token.strip().rpartition(".")
        if not uuid or not hmac.compare_digest(mac.encode(), self._sign(uuid).encode()):
            return None
        return uuid

    def _sign(self, uuid: str) -> str:
        digest = hmac.digest(self._mac, uuid.encode(), hashlib.sha256)
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")
