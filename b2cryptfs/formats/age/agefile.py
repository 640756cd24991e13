"""Whole age files (header and payload in one stream), for tools and interop."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import BinaryIO

from b2cryptfs.formats.age import header, stream
from b2cryptfs.formats.age.wrap import AnyIdentity, unlock


def split_file(data: bytes) -> tuple[bytes, bytes]:
    """(key object, content object) of a complete age file: cut after the ``---`` line."""
    hdr, payload = header.split(data)
    return hdr.encode(), payload


def decrypt_file(src: BinaryIO, identities: Sequence[AnyIdentity]) -> Iterator[bytes]:
    """Plaintext chunks of an age file read sequentially (``src`` must be buffered)."""
    file_key = unlock(header.parse(header.read_header(src)), identities)
    yield from stream.decrypt(src, file_key)
