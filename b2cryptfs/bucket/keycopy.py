"""A copy of a small file's key object in its content object's file info.

Opening a stored pair needs both objects; for a small file the key object's download is
half of the requests (and of the time) a fresh read takes. The content object of a small
file therefore carries, in ``b2cryptfs-key-copy``, the key object's bytes as URL-safe base64
without padding, after a tag of the exact key object version they were copied from:
``TAG.BASE64``, TAG being 12 characters of the SHA-256 of that version's id.

The key object stays the authority: a copy is used only while the listed key object is that
very version and of the copy's length (a newer key object, by rotate, fsck --repair or
another writer, makes the copy stale, and the key object is then downloaded as before), and
a copy that does not open is dropped for the key object. The content is uploaded after its
key object (crash order), so the version id is known when the copy is made.
"""

from __future__ import annotations

import base64
import hashlib

from b2cryptfs.bucket.infocopy import COPY_MAX_CHARS, decode_copy, encode_copy
from b2cryptfs.store.base import ObjectInfo

KEY_COPY_INFO = "b2cryptfs-key-copy"
# Content objects up to this size carry the copy: there the key object's download is a large
# part of a read. A bigger file's read is its content's transfer; it is left as it was.
KEY_COPY_MAX_CONTENT = 64 * 1024
_TAG_CHARS = 12


def _tag(version_id: str) -> str:
    digest = hashlib.sha256(version_id.encode("utf-8")).digest()
    return base64.urlsafe_b64encode(digest[:9]).decode("ascii")


def key_copy_info(key: ObjectInfo, key_object: bytes) -> dict[str, str]:
    """The content object's info entry holding a copy of ``key_object`` as stored in the key
    object version ``key``; empty when the copy would be too long."""
    text = encode_copy(key_object)
    if len(text) > COPY_MAX_CHARS:
        return {}
    return {KEY_COPY_INFO: f"{_tag(key.version_id)}.{text}"}


def copied_key(key: ObjectInfo | None, content: ObjectInfo) -> bytes | None:
    """The key object's bytes from the content's copy, or None: no copy, or one not made
    from the listed key object version (stale), or not decoding to its listed size."""
    value = content.info.get(KEY_COPY_INFO)
    if key is None or not value:
        return None
    tag, _, text = value.partition(".")
    if len(tag) != _TAG_CHARS or tag != _tag(key.version_id):
        return None
    data = decode_copy(text)
    return data if data is not None and len(data) == key.size else None


def has_stale_copy(key: ObjectInfo | None, content: ObjectInfo) -> bool:
    """Whether ``content`` carries a copy that is not one of the listed key object."""
    return KEY_COPY_INFO in content.info and copied_key(key, content) is None


def retagged(info: dict[str, str], old: ObjectInfo, new: ObjectInfo) -> dict[str, str] | None:
    """``info`` with its copy tagged for the key object version ``new``, which has the same
    bytes as ``old`` (a rename's server-side copy); None when ``info`` holds no copy, and
    without the copy when it was not a valid one of ``old``."""
    if KEY_COPY_INFO not in info:
        return None
    rest = {k: v for k, v in info.items() if k != KEY_COPY_INFO}
    data = copied_key(old, ObjectInfo(old.name, old.size, old.version_id, 0, info=info))
    if data is None or new.size != old.size:
        return rest
    return {**rest, **key_copy_info(new, data)}
