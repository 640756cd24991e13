"""age ``ssh-rsa`` recipients: RSA-OAEP-SHA256 of the file key, as in the age spec.

Stanza: ``-> ssh-rsa <tag>`` where the tag is the first 4 bytes of SHA-256 of the key's
SSH wire encoding (the hash behind OpenSSH's ``SHA256:`` fingerprint), letting a reader
skip stanzas for other keys without an RSA operation.
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from b2cryptfs.errors import FormatError, KeyFileError
from b2cryptfs.formats.age import b64
from b2cryptfs.formats.age.header import Stanza
from b2cryptfs.keys.rsacheck import ensure_checked
from b2cryptfs.keys.types import RsaIdentity, RsaRecipient

STANZA_TYPE = "ssh-rsa"
LABEL = b"age-encryption.org/v1/ssh-rsa"
# age refuses to encrypt to smaller RSA keys.
MIN_BITS = 2048


def _string(b: bytes) -> bytes:
    return len(b).to_bytes(4, "big") + b


def _mpint(n: int) -> bytes:
    # SSH mpint: minimal two's-complement big-endian, so a set top bit gets a zero byte.
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    if raw and raw[0] & 0x80:
        raw = b"\0" + raw
    return _string(raw)


def ssh_wire_public_key(pub: rsa.RSAPublicKey) -> bytes:
    """The SSH wire encoding (RFC 4253): string "ssh-rsa", mpint e, mpint n."""
    nums = pub.public_numbers()
    return _string(b"ssh-rsa") + _mpint(nums.e) + _mpint(nums.n)


def ssh_rsa_public_line(pub: rsa.RSAPublicKey) -> str:
    """The OpenSSH ``ssh-rsa AAAA…`` public key line (no comment), as ``age -R`` reads."""
    return "ssh-rsa " + base64.b64encode(ssh_wire_public_key(pub)).decode("ascii")


def ssh_fingerprint(pub: rsa.RSAPublicKey) -> str:
    """OpenSSH's ``SHA256:…`` fingerprint, as ``ssh-keygen -l`` prints it."""
    digest = hashlib.sha256(ssh_wire_public_key(pub)).digest()
    return "SHA256:" + b64.encode(digest).decode("ascii")


def ssh_tag(pub: rsa.RSAPublicKey) -> str:
    """The stanza argument naming ``pub``: 4 bytes of its fingerprint hash, base64."""
    return b64.encode(hashlib.sha256(ssh_wire_public_key(pub)).digest()[:4]).decode("ascii")


def _oaep() -> padding.OAEP:
    return padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=LABEL)


def wrap(file_key: bytes, recipient: RsaRecipient) -> Stanza:
    if recipient.public_key.key_size < MIN_BITS:
        raise KeyFileError(f"RSA key of {recipient.public_key.key_size} bits is too small for age")
    body = recipient.public_key.encrypt(file_key, _oaep())
    return Stanza(STANZA_TYPE, (ssh_tag(recipient.public_key),), body)


def unwrap(stanza: Stanza, identity: RsaIdentity, tag: str | None = None) -> bytes | None:
    """The file key, or None if the stanza is not for this identity.

    ``tag`` may be passed precomputed (it is the same for every stanza).
    """
    if stanza.type != STANZA_TYPE:
        return None
    if len(stanza.args) != 1:
        raise FormatError("age header: ssh-rsa stanza must have exactly one argument")
    if stanza.args[0] != (tag or ssh_tag(identity.private_key.public_key())):
        return None
    ensure_checked(identity.private_key)
    try:
        return identity.private_key.decrypt(stanza.body, _oaep())
    except ValueError:
        return None
