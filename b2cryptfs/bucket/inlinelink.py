"""Short symbolic link targets carried by the listing, so that readlink downloads nothing.

A link is a pair like any file: the key object (the file key wrapped for the recipients) and
the content object (the target encrypted with that key). When both are small, a copy of each
also goes into its own object's file info: the key object's bytes in its
``b2cryptfs-link-key``, the content's in the content object's ``b2cryptfs-link``, as URL-safe
base64 without padding (no character grows in B2's percent-encoded headers). A listing then
holds all that opening the pair needs. The copies are the objects' own bytes, so exactly as
encrypted; the objects stay the authority: a copy whose length differs from its object, or
that does not open, is ignored and the objects are read as before.

Re-wrapping a key object (rotate, fsck) uploads it without the copy: a removed recipient's
copy goes with the old version, and purging removes both alike.
"""

from __future__ import annotations

import base64
import binascii

from b2cryptfs.store.base import ObjectInfo

LINK_KEY_INFO = "b2cryptfs-link-key"
LINK_INFO = "b2cryptfs-link"
# Characters per copy: far below B2's 7,000 bytes of file info, and small enough for a
# DirStore's xattr (ext4 keeps all of a file's attributes in one 4 KiB block): targets of up
# to about 1,500 bytes, key objects for up to four RSA-2048 or a dozen X25519 recipients.
INLINE_MAX = 2048


def _encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _decode(text: str) -> bytes | None:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None


def link_copies(key_object: bytes, content: bytes) -> tuple[dict[str, str], dict[str, str]]:
    """(key object info, content object info) entries holding the copies; empty when either
    copy would be over :data:`INLINE_MAX` (the link is then read from its objects)."""
    key_text, content_text = _encode(key_object), _encode(content)
    if len(key_text) > INLINE_MAX or len(content_text) > INLINE_MAX:
        return {}, {}
    return {LINK_KEY_INFO: key_text}, {LINK_INFO: content_text}


def inline_pair(key: ObjectInfo | None, content: ObjectInfo) -> tuple[bytes, bytes] | None:
    """The copies from a pair's listing rows: (key object, content), or None when either is
    missing or is not its object's bytes (length check: the listing gives both sizes)."""
    if key is None:
        return None
    key_text, content_text = key.info.get(LINK_KEY_INFO), content.info.get(LINK_INFO)
    if not key_text or not content_text:
        return None
    key_bytes, content_bytes = _decode(key_text), _decode(content_text)
    if key_bytes is None or content_bytes is None:
        return None
    if len(key_bytes) != key.size or len(content_bytes) != content.size:
        return None
    return key_bytes, content_bytes


class BytesSource:
    """A ContentSource over ciphertext already in memory."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.size = len(data)

    def fetch(self, start: int, end: int) -> bytes:
        return self.data[start:end]
