"""age ``scrypt`` (passphrase) recipients and identities.

Stanza: ``-> scrypt <salt16> <log2 N>``; the wrapping key is scrypt(passphrase, salt =
"age-encryption.org/v1/scrypt" || salt, N, r=8, p=1), sealing the file key with
ChaCha20-Poly1305 and a zero nonce. The spec requires an scrypt stanza to be the only one
in its header (enforced in :mod:`wrap`); the identity caps the work factor so that a
hostile header cannot make us spend minutes and gigabytes.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from b2cryptfs.errors import FormatError, UsageError
from b2cryptfs.formats.age import b64
from b2cryptfs.formats.age.header import Stanza

STANZA_TYPE = "scrypt"
LABEL = b"age-encryption.org/v1/scrypt"
DEFAULT_WORK_FACTOR = 18  # what age uses when encrypting (about a second)
MAX_WORK_FACTOR = 22  # what age accepts when decrypting
_DECIMAL = re.compile(r"[1-9][0-9]*")
_ZERO_NONCE = bytes(12)


def _key(passphrase: str, salt: bytes, log_n: int) -> bytes:
    kdf = Scrypt(salt=LABEL + salt, length=32, n=1 << log_n, r=8, p=1)
    return kdf.derive(passphrase.encode("utf-8"))


@dataclass(frozen=True)
class ScryptRecipient:
    passphrase: str = field(repr=False)
    work_factor: int = DEFAULT_WORK_FACTOR
    kind = "scrypt"


@dataclass(frozen=True)
class ScryptIdentity:
    passphrase: str = field(repr=False)
    max_work_factor: int = MAX_WORK_FACTOR
    kind = "scrypt"


def wrap(file_key: bytes, recipient: ScryptRecipient) -> Stanza:
    if not 1 <= recipient.work_factor <= 30:
        raise UsageError("scrypt work factor must be between 1 and 30")
    salt = os.urandom(16)
    key = _key(recipient.passphrase, salt, recipient.work_factor)
    body = ChaCha20Poly1305(key).encrypt(_ZERO_NONCE, file_key, None)
    return Stanza(STANZA_TYPE, (b64.encode(salt).decode("ascii"), str(recipient.work_factor)), body)


def unwrap(stanza: Stanza, identity: ScryptIdentity) -> bytes | None:
    """The file key, or None if the passphrase does not open this stanza."""
    if stanza.type != STANZA_TYPE:
        return None
    if len(stanza.args) != 2:
        raise FormatError("age header: scrypt stanza must have exactly two arguments")
    salt = b64.decode(stanza.args[0], "age header: scrypt salt")
    if len(salt) != 16:
        raise FormatError("age header: scrypt salt is not 16 bytes")
    if not _DECIMAL.fullmatch(stanza.args[1]):
        raise FormatError("age header: scrypt work factor is not a positive decimal")
    # Compare as text lengths first so that a huge number is not even converted.
    log_n = int(stanza.args[1]) if len(stanza.args[1]) <= 3 else identity.max_work_factor + 1
    if log_n > identity.max_work_factor:
        raise FormatError(f"age header: scrypt work factor {stanza.args[1]} is too large")
    if len(stanza.body) != 32:
        raise FormatError("age header: scrypt stanza body is not 32 bytes")
    key = _key(identity.passphrase, salt, log_n)
    try:
        return ChaCha20Poly1305(key).decrypt(_ZERO_NONCE, stanza.body, None)
    except InvalidTag:
        return None
