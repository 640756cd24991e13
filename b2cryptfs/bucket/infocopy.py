"""How an object's bytes are copied into file info (short link targets, key objects of small
files): URL-safe base64 without padding, so that no character grows in B2's percent-encoded
headers, and a bound on the copy's length."""

from __future__ import annotations

import base64
import binascii

# Characters per copy: far below B2's 7,000 bytes of file info, and small enough for a
# DirStore's xattr (ext4 keeps all of a file's attributes in one 4 KiB block): targets of up
# to about 1,500 bytes, key objects for up to four RSA-2048 or a dozen X25519 recipients.
COPY_MAX_CHARS = 2048


def encode_copy(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def decode_copy(text: str) -> bytes | None:
    """The bytes of a copy, or None when it is not valid base64."""
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
