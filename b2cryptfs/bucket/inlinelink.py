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

from b2cryptfs.bucket.infocopy import COPY_MAX_CHARS, decode_copy, encode_copy
from b2cryptfs.store.base import ObjectInfo

LINK_KEY_INFO = "b2cryptfs-link-key"
LINK_INFO = "b2cryptfs-link"


def link_copies(key_object: bytes, content: bytes) -> tuple[dict[str, str], dict[str, str]]:
    """(key object info, content object info) entries holding the copies; empty when either
    copy would be over :data:`COPY_MAX_CHARS` (the link is then read from its objects)."""
    key_text, content_text = encode_copy(key_object), encode_copy(content)
    if len(key_text) > COPY_MAX_CHARS or len(content_text) > COPY_MAX_CHARS:
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
    key_bytes, content_bytes = decode_copy(key_text), decode_copy(content_text)
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
