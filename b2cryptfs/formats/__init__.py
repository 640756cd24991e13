"""Content formats: ``age`` (default) and ``openssl`` (Backblaze's sample procedure)."""

from __future__ import annotations

from b2cryptfs.errors import FormatError
from b2cryptfs.formats.base import Codec, ContentReader, ContentSource, Sealed

__all__ = [
    "Codec",
    "ContentReader",
    "ContentSource",
    "Sealed",
    "detect_format",
    "estimate_plaintext_size",
    "get_codec",
    "sniff_format",
]

FORMATS = ("age", "openssl")
AGE_MAGIC = b"age-encryption.org/v1\n"
# base64 of b"Salted__": every content object `openssl enc -a -salt` writes starts with it.
OPENSSL_MAGIC = b"U2FsdGVkX1"
# RSA modulus sizes: an openssl-format key object is exactly one RSA block.
_RSA_BLOCK_SIZES = frozenset({128, 256, 384, 512, 768, 1024})
_AGE_OVERHEAD = 16  # an age payload's nonce; each chunk's tag makes the estimate an upper bound


def get_codec(name: str, *, openssl_md: str = "auto") -> Codec:
    """The codec for a format name; ``openssl_md`` is auto, sha256 or md5."""
    if name == "age":
        from b2cryptfs.formats.age.codec import AgeCodec

        return AgeCodec()
    if name == "openssl":
        from b2cryptfs.formats.openssl import OpensslCodec

        return OpensslCodec(md=openssl_md)
    raise FormatError(f"unknown format {name!r} (expected one of: {', '.join(FORMATS)})")


def detect_format(key_object_head: bytes, content_head: bytes = b"") -> str:
    """Which format a pair is in, from the first bytes of its objects.

    The age key object is an age header; the openssl content object is base64 of
    ``Salted__``. An age payload starts with a random nonce, so the key object decides.
    """
    if key_object_head.startswith(AGE_MAGIC[:21]):
        return "age"
    if content_head.startswith(OPENSSL_MAGIC) or (not content_head and key_object_head):
        return "openssl"
    raise FormatError("neither an age header nor an openssl 'Salted__' object")


def _openssl_layout(content_size: int) -> bool:
    """Could this many bytes be `openssl enc -a` output (64-char base64 lines + newlines)?"""
    full, rest = divmod(content_size, 65)
    if rest:
        chars = rest - 1
        if chars <= 0 or chars % 4:
            return False
    raw = full * 48 + (rest - 1) * 3 // 4 if rest else full * 48
    return raw >= 32


def sniff_format(key_size: int, content_size: int) -> str:
    """The format of a pair another tool wrote (no format file info), from sizes alone:
    the seed's objects are one RSA block and base64 text; anything else is taken for age."""
    if key_size in _RSA_BLOCK_SIZES and _openssl_layout(content_size):
        return "openssl"
    return "age"


def estimate_plaintext_size(fmt: str | None, content_size: int) -> int:
    """An upper bound of the plaintext size when the exact one is not known without a read
    (``fmt`` None: the format is unknown too)."""
    if fmt == "age" or fmt is None and not _openssl_layout(content_size):
        return max(content_size - _AGE_OVERHEAD, 0)
    # openssl: base64 lines of salt header + ciphertext; the padding is unknown.
    full, rest = divmod(content_size, 65)
    raw = full * 48 + (max(rest - 1, 0) * 3 // 4)
    return max(raw - 16 - 1, 0)
