"""File key wrapping: recipients → stanzas, and a header + identities → the file key."""

from __future__ import annotations

from collections.abc import Sequence

from b2cryptfs.errors import FormatError, NoMatchingIdentity, UsageError
from b2cryptfs.formats.age import b64, scrypt, sshrsa, x25519
from b2cryptfs.formats.age.header import Header, Stanza
from b2cryptfs.formats.age.scrypt import ScryptIdentity, ScryptRecipient
from b2cryptfs.keys.types import RsaIdentity, RsaRecipient, X25519Identity, X25519Recipient

FILE_KEY_SIZE = 16

AnyRecipient = RsaRecipient | X25519Recipient | ScryptRecipient
AnyIdentity = RsaIdentity | X25519Identity | ScryptIdentity


def wrap_file_key(file_key: bytes, recipients: Sequence[AnyRecipient]) -> list[Stanza]:
    """One stanza per recipient."""
    if not recipients:
        raise UsageError("no recipients to encrypt to")
    if len(recipients) > 1 and any(isinstance(r, ScryptRecipient) for r in recipients):
        raise UsageError("a passphrase (scrypt) recipient must be the only recipient")
    stanzas = []
    for r in recipients:
        if isinstance(r, RsaRecipient):
            stanzas.append(sshrsa.wrap(file_key, r))
        elif isinstance(r, X25519Recipient):
            stanzas.append(x25519.wrap(file_key, r))
        elif isinstance(r, ScryptRecipient):
            stanzas.append(scrypt.wrap(file_key, r))
        else:
            raise UsageError(f"the age format cannot encrypt to a {type(r).__name__}")
    return stanzas


def unwrap_file_key(header: Header, identities: Sequence[AnyIdentity]) -> bytes:
    """The file key from the first stanza an identity opens (the MAC is not checked here).

    Raises NoMatchingIdentity if none does, FormatError for a malformed stanza of a type
    we handle. Stanzas of unknown types are skipped, as the spec requires.
    """
    stanzas = header.stanzas
    if len(stanzas) != 1 and any(s.type == scrypt.STANZA_TYPE for s in stanzas):
        raise FormatError("age header: an scrypt stanza must be the only stanza")
    for identity in identities:
        if isinstance(identity, RsaIdentity):
            tag = sshrsa.ssh_tag(identity.private_key.public_key())
        for stanza in stanzas:
            if isinstance(identity, RsaIdentity):
                key = sshrsa.unwrap(stanza, identity, tag)
            elif isinstance(identity, X25519Identity):
                key = x25519.unwrap(stanza, identity)
            elif isinstance(identity, ScryptIdentity):
                key = scrypt.unwrap(stanza, identity)
            else:
                raise UsageError(f"the age format cannot decrypt with a {type(identity).__name__}")
            if key is not None:
                if len(key) != FILE_KEY_SIZE:
                    raise FormatError("age header: wrapped file key is not 16 bytes")
                return key
    names = ", ".join(describe_stanza(s) for s in stanzas) or "none"
    raise NoMatchingIdentity(f"no given key can decrypt this age file (its recipients: {names})")


def unlock(header: Header, identities: Sequence[AnyIdentity]) -> bytes:
    """Unwrap the file key and verify the header MAC with it."""
    file_key = unwrap_file_key(header, identities)
    header.verify_mac(file_key)
    return file_key


def describe_stanza(stanza: Stanza) -> str:
    """A short human-readable name for a stanza's recipient."""
    if stanza.type == sshrsa.STANZA_TYPE and len(stanza.args) == 1:
        try:
            tag = b64.decode(stanza.args[0])
        except FormatError:
            tag = b""
        if len(tag) == 4:
            # The tag is the first 32 bits of the hash behind OpenSSH's SHA256: fingerprint,
            # so its first 5 base64 characters (30 bits) are the fingerprint's first 5.
            return f"ssh-rsa SHA256:{stanza.args[0][:5]}..."
        return "ssh-rsa (malformed)"
    if stanza.type == scrypt.STANZA_TYPE:
        return "scrypt (passphrase)"
    return stanza.type
