"""The text forms of age X25519 keys: ``age1…`` recipients, ``AGE-SECRET-KEY-1…`` identities.

Key files are the keys layer's business; the age format (b2cryptfs.formats.age) only uses
the key objects. Kept here so that keys never import formats.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from b2cryptfs.errors import FormatError, KeyFileError
from b2cryptfs.keys import bech32
from b2cryptfs.keys.types import X25519Identity, X25519Recipient

RECIPIENT_HRP = "age"
IDENTITY_HRP = "age-secret-key-"


def _decode_key(s: str, hrp: str, what: str, expected: str) -> bytes:
    """The 32 key bytes of a bech32 key string with the given human-readable part."""
    try:
        got_hrp, data = bech32.decode(s.strip())
    except FormatError as e:
        raise KeyFileError(f"invalid age {what}: {e}") from None
    if got_hrp != hrp or len(data) != 32:
        raise KeyFileError(f"invalid age {what}: not {expected}")
    return data


def parse_x25519_recipient(s: str) -> X25519Recipient:
    """An ``age1…`` recipient string."""
    return X25519Recipient(_decode_key(s, RECIPIENT_HRP, "recipient", "an age1… X25519 public key"))


def encode_x25519_recipient(r: X25519Recipient) -> str:
    return bech32.encode(RECIPIENT_HRP, r.public_bytes)


def parse_x25519_identity(s: str) -> X25519Identity:
    """An ``AGE-SECRET-KEY-1…`` identity string."""
    return X25519Identity(
        _decode_key(s, IDENTITY_HRP, "identity", "an AGE-SECRET-KEY-1… X25519 key")
    )


def encode_x25519_identity(i: X25519Identity) -> str:
    return bech32.encode(IDENTITY_HRP, i.secret_bytes).upper()


def generate_x25519_identity() -> X25519Identity:
    key = X25519PrivateKey.generate()
    return X25519Identity(key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()))
