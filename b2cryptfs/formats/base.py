"""The codec interface every content format implements.

A file is two objects: the *key object* (small: the wrapped per-file key) and the *content
object* (the encrypted bytes). A codec seals a plaintext stream into that pair and opens a
pair for random-access reading, touching only the ciphertext chunks a read needs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import BinaryIO, Protocol

from b2cryptfs.keys.types import Identity, Recipient


@dataclass
class Sealed:
    """What sealing produced besides the content bytes written to the output stream."""

    key_object: bytes
    plaintext_size: int
    content_size: int
    # File info to store with the content object (for example the openssl key check value).
    info: dict[str, str] = field(default_factory=dict)


class ContentSource(Protocol):
    """Where a reader gets ciphertext from: the store, a cache, or a local file."""

    size: int

    def fetch(self, start: int, end: int) -> bytes:
        """Ciphertext bytes ``[start, end)`` of the content object."""
        ...


class ContentReader(ABC):
    """Random access to the plaintext of one opened pair.

    Plaintext is divided into chunks of ``chunk_size`` bytes (the last may be shorter);
    ``chunk_span(i)`` names the ciphertext bytes needed to decrypt chunk ``i``, so a caller
    with its own cache can fetch them and call ``decrypt_chunk``. ``read`` does it all.
    """

    plaintext_size: int
    chunk_size: int

    def __init__(self, source: ContentSource) -> None:
        self.source = source

    @property
    def chunk_count(self) -> int:
        if self.plaintext_size == 0:
            return 0
        return (self.plaintext_size + self.chunk_size - 1) // self.chunk_size

    @abstractmethod
    def chunk_span(self, index: int) -> tuple[int, int]:
        """Ciphertext byte range ``[start, end)`` that ``decrypt_chunk(index, …)`` needs."""

    @abstractmethod
    def decrypt_chunk(self, index: int, ciphertext: bytes) -> bytes:
        """Plaintext of chunk ``index`` from exactly the bytes of ``chunk_span(index)``.

        Raises :class:`b2cryptfs.errors.IntegrityError` when authentication fails.
        """

    def decrypt_chunk_into(self, index: int, ciphertext: bytes, out: memoryview) -> None:
        """``decrypt_chunk`` written into ``out`` (exactly the chunk's plaintext length);
        a format that can decrypts straight into it. On failure ``out`` holds nothing usable."""
        out[:] = self.decrypt_chunk(index, ciphertext)

    def read(self, offset: int, length: int) -> bytes:
        """Plaintext ``[offset, offset+length)``, clipped at the end of the file."""
        end = min(offset + length, self.plaintext_size)
        if offset >= end:
            return b""
        first, last = offset // self.chunk_size, (end - 1) // self.chunk_size
        start, _ = self.chunk_span(first)
        _, stop = self.chunk_span(last)
        blob = self.source.fetch(start, stop)
        out = []
        for i in range(first, last + 1):
            s, e = self.chunk_span(i)
            out.append(self.decrypt_chunk(i, blob[s - start : e - start]))
        data = b"".join(out)
        skip = offset - first * self.chunk_size
        return data[skip : skip + (end - offset)]


class Codec(ABC):
    """One content format."""

    name: str

    @abstractmethod
    def seal(self, src: BinaryIO, dst: BinaryIO, recipients: Sequence[Recipient]) -> Sealed:
        """Encrypt ``src`` to ``dst`` in bounded memory; return the key object and sizes."""

    @abstractmethod
    def open(
        self,
        key_object: bytes,
        identities: Sequence[Identity],
        source: ContentSource,
        info: dict[str, str] | None = None,
    ) -> ContentReader:
        """Unwrap the file key and prove the pair matches (raises PairMismatch if not)."""

    @abstractmethod
    def rewrap(
        self, key_object: bytes, identities: Sequence[Identity], recipients: Sequence[Recipient]
    ) -> bytes:
        """A new key object for the same content, wrapped to ``recipients`` (key rotation)."""

    @abstractmethod
    def plaintext_size_hint(self, content_size: int, info: dict[str, str]) -> int | None:
        """Exact plaintext size from the listing alone (length and file info), if knowable."""

    @abstractmethod
    def describe_recipients(self, key_object: bytes) -> list[str]:
        """Human-readable recipient list of a key object (types and key fingerprints)."""
