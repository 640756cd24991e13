"""The ``age`` codec: key object = age header, content object = age payload.

``cat P.key.enc P.enc`` is therefore a standard age file that ``age -d`` decrypts.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import BinaryIO

from b2cryptfs.errors import IntegrityError, PairMismatch
from b2cryptfs.formats.age import header, stream
from b2cryptfs.formats.age.wrap import (
    FILE_KEY_SIZE,
    AnyIdentity,
    AnyRecipient,
    describe_stanza,
    unlock,
    wrap_file_key,
)
from b2cryptfs.formats.base import Codec, ContentReader, ContentSource, Sealed


class AgeReader(ContentReader):
    """Random access to an age payload: chunk ``i`` is decrypted alone, its position and
    whether it is the last one following from the plaintext size."""

    chunk_size = stream.CHUNK_SIZE

    def __init__(
        self, source: ContentSource, cipher: stream.PayloadCipher, plaintext_size: int
    ) -> None:
        super().__init__(source)
        self.plaintext_size = plaintext_size
        self._cipher = cipher
        # An empty file still has one (empty, final) chunk on disk.
        self._last_index = max(1, self.chunk_count) - 1

    def chunk_span(self, index: int) -> tuple[int, int]:
        return stream.chunk_span(index, self.plaintext_size)

    def decrypt_chunk(self, index: int, ciphertext: bytes) -> bytes:
        self._check_span(index, ciphertext)
        return self._cipher.open_chunk(index, ciphertext, index == self._last_index)

    def decrypt_chunk_into(self, index: int, ciphertext: bytes, out: memoryview) -> None:
        self._check_span(index, ciphertext)
        self._cipher.open_chunk_into(index, ciphertext, index == self._last_index, out)

    def _check_span(self, index: int, ciphertext: bytes) -> None:
        start, end = self.chunk_span(index)
        if len(ciphertext) != end - start:
            raise IntegrityError(
                f"age payload: chunk {index} is {len(ciphertext)} bytes, expected {end - start}"
            )


class AgeCodec(Codec):
    name = "age"

    def seal(self, src: BinaryIO, dst: BinaryIO, recipients: Sequence[AnyRecipient]) -> Sealed:
        file_key = os.urandom(FILE_KEY_SIZE)
        key_object = self.key_object(file_key, recipients)
        plaintext_size, content_size = stream.encrypt(src, dst, file_key)
        return Sealed(key_object, plaintext_size, content_size)

    @staticmethod
    def key_object(file_key: bytes, recipients: Sequence[AnyRecipient]) -> bytes:
        """The key object (age header) of a payload encrypted under ``file_key``: the
        payload does not depend on the recipients, so it may be written first."""
        return header.serialize(wrap_file_key(file_key, recipients), file_key)

    def open(
        self,
        key_object: bytes,
        identities: Sequence[AnyIdentity],
        source: ContentSource,
        info: dict[str, str] | None = None,
    ) -> AgeReader:
        """Unwrap, check the header MAC, then authenticate the first chunk: the header MAC
        proves the key object is intact, the first chunk that the content is its partner.

        Raises FormatError (malformed header), NoMatchingIdentity, IntegrityError (bad MAC or
        impossible content length) or PairMismatch (content not sealed with this key, or its
        first chunk damaged: the two cannot be told apart).
        """
        file_key = unlock(header.parse(key_object), identities)
        size = stream.plaintext_size(source.size)
        first_end = stream.chunk_span(0, size)[1]
        blob = source.fetch(0, first_end)
        if len(blob) != first_end:
            raise IntegrityError("age payload: content object shorter than its listed size")
        reader = AgeReader(source, stream.PayloadCipher(file_key, blob[: stream.NONCE_SIZE]), size)
        try:
            reader.decrypt_chunk(0, blob[stream.NONCE_SIZE :])
        except IntegrityError:
            raise PairMismatch(
                "age: the content object does not belong to this key object "
                "(first chunk fails authentication)"
            ) from None
        return reader

    def rewrap(
        self,
        key_object: bytes,
        identities: Sequence[AnyIdentity],
        recipients: Sequence[AnyRecipient],
    ) -> bytes:
        file_key = unlock(header.parse(key_object), identities)
        return header.serialize(wrap_file_key(file_key, recipients), file_key)

    def plaintext_size_hint(self, content_size: int, info: dict[str, str]) -> int:
        """Always knowable for age. An impossible length (a truncated or extended object)
        raises IntegrityError, a FormatError; it never returns None."""
        return stream.plaintext_size(content_size)

    def describe_recipients(self, key_object: bytes) -> list[str]:
        """E.g. ``["ssh-rsa SHA256:AbCdE...", "X25519"]``; the header MAC is not checked.

        An ssh-rsa stanza only carries 4 bytes of the key's fingerprint hash, so only the
        first 5 characters of its OpenSSH ``SHA256:`` fingerprint are known.
        """
        return [describe_stanza(s) for s in header.parse(key_object).stanzas]
