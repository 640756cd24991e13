"""Native age X25519 recipients (``age1…``) and identities (``AGE-SECRET-KEY-1…``).

Wrap: an ephemeral X25519 share, HKDF-SHA256(salt = share || recipient, info =
"age-encryption.org/v1/X25519") as a ChaCha20-Poly1305 key, zero nonce, body = sealed
file key. Stanza: ``-> X25519 <share>``.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
)

from b2cryptfs.errors import FormatError
from b2cryptfs.formats.age import b64
from b2cryptfs.formats.age.header import Stanza
from b2cryptfs.keys.agekeys import (  # noqa: F401 - the key text forms, re-exported
    encode_x25519_identity,
    encode_x25519_recipient,
    generate_x25519_identity,
    parse_x25519_identity,
    parse_x25519_recipient,
)
from b2cryptfs.keys.types import X25519Identity, X25519Recipient

STANZA_TYPE = "X25519"
LABEL = b"age-encryption.org/v1/X25519"
_ZERO_NONCE = bytes(12)


def _wrap_key(shared: bytes, share: bytes, recipient: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=share + recipient, info=LABEL).derive(
        shared
    )


def wrap(file_key: bytes, recipient: X25519Recipient) -> Stanza:
    ephemeral = X25519PrivateKey.generate()
    share = ephemeral.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(recipient.public_bytes))
    key = _wrap_key(shared, share, recipient.public_bytes)
    body = ChaCha20Poly1305(key).encrypt(_ZERO_NONCE, file_key, None)
    return Stanza(STANZA_TYPE, (b64.encode(share).decode("ascii"),), body)


def unwrap(stanza: Stanza, identity: X25519Identity) -> bytes | None:
    """The file key, or None if the stanza is not for this identity.

    A malformed X25519 stanza is a header error (FormatError), not a mere mismatch.
    """
    if stanza.type != STANZA_TYPE:
        return None
    if len(stanza.args) != 1:
        raise FormatError("age header: X25519 stanza must have exactly one argument")
    share = b64.decode(stanza.args[0], "age header: X25519 share")
    if len(share) != 32:
        raise FormatError("age header: X25519 share is not 32 bytes")
    if len(stanza.body) != 32:
        raise FormatError("age header: X25519 stanza body is not 32 bytes")
    secret = X25519PrivateKey.from_private_bytes(identity.secret_bytes)
    try:
        # cryptography refuses an all-zero shared secret (a low-order share).
        shared = secret.exchange(X25519PublicKey.from_public_bytes(share))
    except ValueError:
        shared = bytes(32)
    if shared == bytes(32):
        raise FormatError("age header: X25519 share is a low-order point")
    key = _wrap_key(shared, share, identity.recipient().public_bytes)
    try:
        return ChaCha20Poly1305(key).decrypt(_ZERO_NONCE, stanza.body, None)
    except InvalidTag:
        return None
