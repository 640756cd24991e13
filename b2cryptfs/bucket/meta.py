"""POSIX metadata of one entry, kept in ONE file-info entry of its content object.

The value is a compact versioned text: ``1 MODE UID GID MTIME_NS ATIME_NS RDEV [CTIME_NS]``
(mode in octal with its file-type bits, ``-`` for a field that is unknown; the change time
only where known: readers of the seven fields ignore it). In an encrypted-names
store the same text is sealed with ChaCha20-Poly1305 under a key derived from the name key
(HKDF-SHA256, its own label) and stored as ``e1.`` + base64url(nonce || ciphertext), so that
owners and modes stay out of plaintext. Objects without the entry (seed buckets, older files)
decode as :data:`UNKNOWN`; the mount then shows its defaults.
"""

from __future__ import annotations

import base64
import binascii
import os
import stat
from dataclasses import dataclass, replace

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from b2cryptfs.errors import IntegrityError

__all__ = ["META_KEY", "PATH_MAX", "UNKNOWN", "Meta", "MetaCipher", "decode_meta", "encode_meta"]

META_KEY = "b2cryptfs-meta"
PATH_MAX = 4096  # a symbolic link's target, in bytes, as Linux allows
_PLAIN_VERSION = "1"
_SEALED_PREFIX = "e1."
_HKDF_LABEL = b"b2cryptfs metadata key v1"
_AAD = b"b2cryptfs-meta v1"
_NONCE = 12


@dataclass(frozen=True)
class Meta:
    """st_mode (type and all 12 permission bits), owner, times in ns, rdev; None = unknown."""

    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    mtime_ns: int | None = None
    atime_ns: int | None = None
    rdev: int | None = None
    # The last change of the entry's metadata or name (chmod, chown, utime, rename); the
    # change time shown is the later of it and the mtime (content and names change that).
    ctime_ns: int | None = None

    @property
    def known(self) -> bool:
        return any(
            v is not None
            for v in (
                self.mode,
                self.uid,
                self.gid,
                self.mtime_ns,
                self.atime_ns,
                self.rdev,
                self.ctime_ns,
            )
        )

    def shown_ctime(self, mtime_ns: int) -> int:
        """The change time to show for an entry whose mtime shows as ``mtime_ns``."""
        return mtime_ns if self.ctime_ns is None else max(self.ctime_ns, mtime_ns)

    @property
    def file_type(self) -> int | None:
        """``stat.S_IFMT(mode)`` or None when the mode is unknown."""
        return None if self.mode is None else stat.S_IFMT(self.mode)

    @property
    def is_symlink(self) -> bool:
        return self.file_type == stat.S_IFLNK

    @property
    def is_special(self) -> bool:
        """FIFO, socket or device: a metadata-only entry with empty content."""
        return self.file_type in (stat.S_IFIFO, stat.S_IFSOCK, stat.S_IFCHR, stat.S_IFBLK)

    def updated(self, **changes: int | None) -> Meta:
        return replace(self, **changes)


UNKNOWN = Meta()


def _field(v: int | None, fmt: str = "d") -> str:
    return "-" if v is None else format(v, fmt)


def _text(meta: Meta) -> str:
    fields = [
        _PLAIN_VERSION,
        _field(meta.mode, "o"),
        _field(meta.uid),
        _field(meta.gid),
        _field(meta.mtime_ns),
        _field(meta.atime_ns),
        _field(meta.rdev),
    ]
    if meta.ctime_ns is not None:
        fields.append(_field(meta.ctime_ns))
    return " ".join(fields)


def _parse(text: str) -> Meta:
    parts = text.split(" ")
    if not parts or parts[0] != _PLAIN_VERSION:
        # A newer writer's format: show defaults rather than guess (nothing is lost: the
        # entry is only replaced when someone changes the metadata here).
        return UNKNOWN
    if len(parts) < 7:
        raise IntegrityError(f"malformed {META_KEY} value {text[:40]!r}")

    def num(s: str, base: int = 10) -> int | None:
        if s == "-":
            return None
        try:
            value = int(s, base)
        except ValueError:
            raise IntegrityError(f"malformed {META_KEY} value {text[:40]!r}") from None
        if value < 0:
            raise IntegrityError(f"negative field in {META_KEY} value {text[:40]!r}")
        return value

    ctime = num(parts[7]) if len(parts) > 7 else None
    return Meta(
        num(parts[1], 8),
        num(parts[2]),
        num(parts[3]),
        num(parts[4]),
        num(parts[5]),
        num(parts[6]),
        ctime,
    )


class MetaCipher:
    """AEAD for metadata values, keyed from the name key by HKDF (a key of its own)."""

    def __init__(self, name_key: bytes) -> None:
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_LABEL).derive(
            name_key
        )
        self._aead = ChaCha20Poly1305(key)

    def seal(self, text: str) -> str:
        nonce = os.urandom(_NONCE)
        ct = self._aead.encrypt(nonce, text.encode(), _AAD)
        return _SEALED_PREFIX + base64.urlsafe_b64encode(nonce + ct).decode().rstrip("=")

    def open(self, value: str) -> str:
        body = value[len(_SEALED_PREFIX) :]
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            return self._aead.decrypt(raw[:_NONCE], raw[_NONCE:], _AAD).decode()
        except (binascii.Error, ValueError, InvalidTag, UnicodeDecodeError):
            raise IntegrityError(
                f"{META_KEY}: metadata does not authenticate (tampered?)"
            ) from None


def encode_meta(meta: Meta, cipher: MetaCipher | None = None) -> str:
    """The file-info value for ``meta`` (sealed when ``cipher`` is given)."""
    text = _text(meta)
    return cipher.seal(text) if cipher is not None else text


def decode_meta(info: dict[str, str], cipher: MetaCipher | None = None) -> Meta:
    """The metadata in an object's file info; :data:`UNKNOWN` when there is none.

    Raises IntegrityError for a value that is sealed but does not authenticate, a sealed
    value where no key is held, or a plaintext value in a store whose metadata is sealed
    (someone wrote owners/modes beside the encryption: refuse rather than trust it).
    """
    value = info.get(META_KEY)
    if value is None:
        return UNKNOWN
    if value.startswith(_SEALED_PREFIX):
        if cipher is None:
            raise IntegrityError(f"{META_KEY} is encrypted and this store has no name key")
        return _parse(cipher.open(value))
    if cipher is not None:
        raise IntegrityError(f"{META_KEY} is in plaintext in a store with encrypted metadata")
    return _parse(value)
