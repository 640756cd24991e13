"""Encrypted file names: AES-SIV (RFC 5297) per path segment, in lowercase base32.

Deterministic authenticated encryption: the same plaintext name always gives the same
object name, so a file is found by its name without a lookup table, and a name that was not
made with the key (or was changed) does not decrypt. Each segment is bound to its plaintext
parent path through the associated data, so one name in two directories gives two unrelated
object names (a listing does not reveal that two directories hold the same names) and an
object name moved to another directory no longer decrypts.

Unpadded lowercase RFC 4648 base32 has no dots and no upper case: it is safe on
case-insensitive local stores, and ``X.enc`` and ``X.key.enc`` can never be confused.

This module is crypto only; where the name key is kept is the store layer's business. The
name key itself travels as a whole age file (:func:`wrap_name_key`), so the stock ``age``
tool can recover it.
"""

from __future__ import annotations

import base64
import io
import os
import re
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESSIV

from b2cryptfs.errors import FormatError, InvalidName, NameTooLong
from b2cryptfs.keys.types import Identity, Recipient
from b2cryptfs.store.base import MAX_SEGMENT_BYTES

NAME_KEY_SIZE = 64  # AES-SIV-512: two AES-256 keys (S2V/CMAC and CTR)
SIV_TAG_SIZE = 16
# The store's limit per segment, less the room the bucket layer appends to a file's leaf
# (its longest suffix; b2cryptfs.bucket.layout checks that it fits).
SUFFIX_RESERVE = 8
MAX_ENCODED_SEGMENT = MAX_SEGMENT_BYTES - SUFFIX_RESERVE  # 242
# The longest plaintext segment whose encoding fits: floor(242 * 5 / 8) - 16 = 135 bytes.
MAX_PLAIN_SEGMENT = MAX_ENCODED_SEGMENT * 5 // 8 - SIV_TAG_SIZE
# First associated-data component: separates these ciphertexts from any other use of a key.
_LABEL = b"b2cryptfs name v1"
_BASE32 = re.compile(r"[a-z2-7]+")


def _b32(data: bytes) -> str:
    return base64.b32encode(data).decode("ascii").rstrip("=").lower()


def _unb32(text: str) -> bytes | None:
    if not _BASE32.fullmatch(text):
        return None
    try:
        raw = base64.b32decode(text.upper() + "=" * (-len(text) % 8))
    except ValueError:
        return None
    # Refuse non-canonical spellings (other trailing bits): one name, one object name.
    return raw if _b32(raw) == text else None


def _check_segment(segment: str) -> bytes:
    if not segment or segment in (".", "..") or "/" in segment:
        raise InvalidName(f"invalid name segment {segment!r}")
    try:
        return segment.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidName(f"name is not valid UTF-8: {segment!r}") from None


class NameCipher:
    """Encrypts and decrypts plaintext path segments with one 64-byte name key."""

    def __init__(self, key: bytes) -> None:
        if len(key) != NAME_KEY_SIZE:
            raise FormatError(f"a name key is {NAME_KEY_SIZE} bytes, not {len(key)}")
        self._siv = AESSIV(key)
        self._key = key

    @classmethod
    def generate(cls) -> NameCipher:
        return cls(os.urandom(NAME_KEY_SIZE))

    @property
    def key(self) -> bytes:
        return self._key

    @staticmethod
    def _ad(parent: str) -> list[bytes]:
        return [_LABEL, parent.strip("/").encode("utf-8")]

    def encrypt_segment(self, segment: str, parent: str = "") -> str:
        """The object-name form of one segment whose plaintext parent path is ``parent``.

        Raises InvalidName for an empty, ``.``/``..`` or slash-holding segment and
        NameTooLong past :data:`MAX_PLAIN_SEGMENT` bytes.
        """
        raw = _check_segment(segment)
        if len(raw) > MAX_PLAIN_SEGMENT:
            raise NameTooLong(
                f"name {segment[:40]!r}… is {len(raw)} bytes; with encrypted names a file or "
                f"directory name may have at most {MAX_PLAIN_SEGMENT} bytes"
            )
        return _b32(self._siv.encrypt(raw, self._ad(parent)))

    def decrypt_segment(self, encoded: str, parent: str = "") -> str | None:
        """The plaintext segment, or None if ``encoded`` was not made by this key for this
        parent (a foreign or altered object name)."""
        raw = _unb32(encoded)
        if raw is None or len(raw) <= SIV_TAG_SIZE:
            return None
        try:
            plain = self._siv.decrypt(raw, self._ad(parent))
        except InvalidTag:
            return None
        try:
            segment = plain.decode("utf-8")
        except UnicodeDecodeError:
            return None
        if not segment or segment in (".", "..") or "/" in segment:
            return None
        return segment

    def encrypt_path(self, path: str) -> str:
        """Every segment of a ``/``-separated plaintext path, each under its own parent."""
        out: list[str] = []
        parent = ""
        for segment in path.strip("/").split("/") if path.strip("/") else []:
            out.append(self.encrypt_segment(segment, parent))
            parent = f"{parent}/{segment}" if parent else segment
        return "/".join(out)

    def decrypt_path(self, encoded: str) -> str | None:
        """The plaintext path of an encrypted one, or None if any segment does not decrypt."""
        out: list[str] = []
        parent = ""
        for part in encoded.strip("/").split("/") if encoded.strip("/") else []:
            segment = self.decrypt_segment(part, parent)
            if segment is None:
                return None
            out.append(segment)
            parent = f"{parent}/{segment}" if parent else segment
        return "/".join(out)


def wrap_name_key(key: bytes, recipients: Sequence[Recipient]) -> bytes:
    """A complete age file (header and payload) holding ``key``, for ``recipients``."""
    from b2cryptfs.formats.age.codec import AgeCodec

    payload = io.BytesIO()
    sealed = AgeCodec().seal(io.BytesIO(key), payload, recipients)
    return sealed.key_object + payload.getvalue()


def unwrap_name_key(data: bytes, identities: Sequence[Identity]) -> bytes:
    """The name key from an age file made by :func:`wrap_name_key`.

    Raises NoMatchingIdentity when no identity opens it, FormatError/IntegrityError when it
    is malformed or altered, FormatError when it does not hold a name key.
    """
    from b2cryptfs.formats.age.agefile import decrypt_file

    key = b"".join(decrypt_file(io.BufferedReader(io.BytesIO(data)), identities))
    if len(key) != NAME_KEY_SIZE:
        raise FormatError(f"the name key file holds {len(key)} bytes, not {NAME_KEY_SIZE}")
    return key
