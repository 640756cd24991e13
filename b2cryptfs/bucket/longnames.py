"""Long names: a segment whose object name would pass the store's segment limit.

Such a segment is stored under a fixed-length stand-in, ``b2cryptfs-long-`` + base32 of a
32-byte digest of the full name (67 characters), and the full name rides in the file info of
the object a listing returns: the content object for a file, the directory object for a
directory. With plain names the digest is SHA-256 of the UTF-8 name; with encrypted names it
is HMAC-SHA256 under a key derived from the name key, over the plaintext parent and the name
(so it reveals nothing and is bound to its directory, as encrypted segments are), and the
full name in the info is sealed with the metadata cipher.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = ["LONG_NAME_INFO", "LONG_PREFIX", "LongNamer", "is_long"]

# No dot (encrypted leaves have none either) and a '-', which base32 never has.
LONG_PREFIX = "b2cryptfs-long-"
# File info key holding the full name of a long-named entry.
LONG_NAME_INFO = "b2cryptfs-name"
_HKDF_LABEL = b"b2cryptfs long name v1"


def is_long(segment: str) -> bool:
    return segment.startswith(LONG_PREFIX) and len(segment) == len(LONG_PREFIX) + 52


def _b32(digest: bytes) -> str:
    return base64.b32encode(digest).decode().rstrip("=").lower()


class LongNamer:
    """Stand-in segments for long names; keyed when names are encrypted."""

    def __init__(self, name_key: bytes | None = None) -> None:
        self._key = (
            HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_LABEL).derive(name_key)
            if name_key is not None
            else None
        )

    def segment(self, leaf: str, parent: str = "") -> str:
        raw = leaf.encode("utf-8")
        if self._key is None:
            return LONG_PREFIX + _b32(hashlib.sha256(raw).digest())
        msg = parent.strip("/").encode("utf-8") + b"\0" + raw
        return LONG_PREFIX + _b32(hmac.new(self._key, msg, hashlib.sha256).digest())
