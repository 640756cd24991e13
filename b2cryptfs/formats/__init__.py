"""Content formats: ``age`` (default) and ``openssl`` (Backblaze's sample procedure)."""

from __future__ import annotations

from b2cryptfs.errors import FormatError
from b2cryptfs.formats.base import Codec, ContentReader, ContentSource, Sealed

__all__ = ["Codec", "ContentReader", "ContentSource", "Sealed", "get_codec", "detect_format"]

FORMATS = ("age", "openssl")
AGE_MAGIC = b"age-encryption.org/v1\n"
# base64 of b"Salted__": every content object `openssl enc -a -salt` writes starts with it.
OPENSSL_MAGIC = b"U2FsdGVkX1"


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
