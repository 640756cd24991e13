"""Unpadded, canonical standard base64, the only base64 the age header allows.

"Canonical" means re-encoding the decoded bytes gives back the same text: no padding, no
whitespace, and the unused low bits of the last character are zero. age requires this so
that one header has exactly one encoding (the header MAC covers the text, not the bytes).
"""

from __future__ import annotations

import base64
import binascii
import re

from b2cryptfs.errors import FormatError

_ALPHABET = re.compile(rb"[A-Za-z0-9+/]*")


def encode(data: bytes) -> bytes:
    """Standard base64 without ``=`` padding."""
    return base64.b64encode(data).rstrip(b"=")


def decode(text: bytes | str, what: str = "base64") -> bytes:
    """Decode unpadded canonical base64; anything else raises FormatError."""
    if isinstance(text, str):
        try:
            text = text.encode("ascii")
        except UnicodeEncodeError:
            raise FormatError(f"{what}: not base64") from None
    if not _ALPHABET.fullmatch(text) or len(text) % 4 == 1:
        raise FormatError(f"{what}: not unpadded base64")
    try:
        data = base64.b64decode(text + b"=" * (-len(text) % 4), validate=True)
    except binascii.Error:
        raise FormatError(f"{what}: not base64") from None
    if encode(data) != text:
        raise FormatError(f"{what}: non-canonical base64")
    return data
