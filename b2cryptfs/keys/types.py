"""Key types shared by the formats: recipients (public, to encrypt to) and identities
(private, to decrypt with). Loading and parsing live in the sibling modules."""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import rsa


@dataclass(frozen=True)
class RsaRecipient:
    """An RSA public key: age ``ssh-rsa`` stanzas, or the openssl format's PKCS#1 v1.5 wrap."""

    public_key: rsa.RSAPublicKey
    kind = "ssh-rsa"

    def __hash__(self) -> int:
        return hash(self.public_key.public_numbers())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RsaRecipient) and (
            self.public_key.public_numbers() == other.public_key.public_numbers()
        )


@dataclass(frozen=True)
class X25519Recipient:
    """A native age recipient (``age1…``): 32 raw public key bytes."""

    public_bytes: bytes
    kind = "X25519"


@dataclass(frozen=True)
class RsaIdentity:
    private_key: rsa.RSAPrivateKey
    kind = "ssh-rsa"

    def recipient(self) -> RsaRecipient:
        return RsaRecipient(self.private_key.public_key())


@dataclass(frozen=True)
class X25519Identity:
    """A native age identity (``AGE-SECRET-KEY-1…``): 32 raw secret bytes."""

    secret_bytes: bytes
    kind = "X25519"

    def recipient(self) -> X25519Recipient:
        from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        pub = X25519PrivateKey.from_private_bytes(self.secret_bytes).public_key()
        return X25519Recipient(pub.public_bytes(Encoding.Raw, PublicFormat.Raw))


Recipient = RsaRecipient | X25519Recipient
Identity = RsaIdentity | X25519Identity


def recipient_id(r: Recipient) -> str:
    """A short text naming one recipient: its ``age1…`` string, or ``rsa:`` and a digest of
    an RSA public key (the key itself is too long to keep in B2 file info)."""
    if isinstance(r, RsaRecipient):
        import hashlib

        n = r.public_key.public_numbers()
        return "rsa:" + hashlib.sha256(f"{n.e:x}:{n.n:x}".encode()).hexdigest()[:24]
    from b2cryptfs.keys.agekeys import encode_x25519_recipient

    return encode_x25519_recipient(r)


def recipients_fingerprint(recipients: list[Recipient] | tuple[Recipient, ...]) -> str:
    """A short digest naming a set of recipients (order and duplicates ignored): rotate
    records it with each key object it re-wraps, so that a second run can tell which key
    objects are already wrapped for exactly this set."""
    import hashlib

    ids = sorted({recipient_id(r) for r in recipients})
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()[:32]
