"""The age v1 format (C2SP age spec) over ``cryptography`` primitives.

Modules: ``b64`` (canonical base64), ``bech32``, ``header`` (stanzas, MAC), ``x25519``,
``sshrsa``, ``scrypt`` (recipient types), ``wrap`` (file key wrap/unwrap), ``stream``
(STREAM payload), ``codec`` (the key/content object pair), ``agefile`` (whole files).
"""

from b2cryptfs.formats.age.scrypt import ScryptIdentity, ScryptRecipient
from b2cryptfs.formats.age.sshrsa import (
    ssh_fingerprint,
    ssh_rsa_public_line,
    ssh_tag,
    ssh_wire_public_key,
)
from b2cryptfs.formats.age.x25519 import (
    encode_x25519_identity,
    encode_x25519_recipient,
    generate_x25519_identity,
    parse_x25519_identity,
    parse_x25519_recipient,
)

__all__ = [
    "ScryptIdentity",
    "ScryptRecipient",
    "encode_x25519_identity",
    "encode_x25519_recipient",
    "generate_x25519_identity",
    "parse_x25519_identity",
    "parse_x25519_recipient",
    "ssh_fingerprint",
    "ssh_rsa_public_line",
    "ssh_tag",
    "ssh_wire_public_key",
]
