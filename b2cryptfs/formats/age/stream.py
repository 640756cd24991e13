"""The age payload: a 16-byte nonce, then ChaCha20-Poly1305 STREAM chunks.

Payload key = HKDF-SHA256(ikm = file key, salt = nonce, info = "payload"). Plaintext is cut
into 64 KiB chunks; chunk ``i`` is sealed with the 12-byte nonce ``i`` (11 bytes, big
endian) || ``last`` (1 byte, 1 for the final chunk). Only the final chunk may be shorter
than 64 KiB, and it may be empty only if it is the only one. Because the final chunk is
marked, truncation at a chunk boundary and reordering both fail authentication; because
every chunk but the last is full, the plaintext size follows from the payload length.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any, BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from b2cryptfs.errors import FormatError, IntegrityError

NONCE_SIZE = 16
CHUNK_SIZE = 64 * 1024
TAG_SIZE = 16
ENC_CHUNK_SIZE = CHUNK_SIZE + TAG_SIZE
_MAX_COUNTER = (1 << 88) - 1


def payload_key(file_key: bytes, nonce: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=nonce, info=b"payload").derive(file_key)


def chunk_nonce(index: int, last: bool) -> bytes:
    if not 0 <= index < _MAX_COUNTER:
        raise FormatError("age payload: chunk counter out of range")
    return index.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


def plaintext_size(payload_size: int) -> int:
    """Exact plaintext size of a payload of ``payload_size`` bytes.

    Raises IntegrityError for a length no valid payload has (a truncated or padded object).
    """
    body = payload_size - NONCE_SIZE
    if body == TAG_SIZE:
        return 0  # the single empty chunk of an empty file
    full, rem = divmod(body, ENC_CHUNK_SIZE)
    if body < TAG_SIZE or (rem == 0 and full == 0) or 0 < rem <= TAG_SIZE:
        raise IntegrityError(
            f"age payload: length {payload_size} is impossible (truncated or extended object)"
        )
    return full * CHUNK_SIZE + (rem - TAG_SIZE if rem else 0)


def payload_size(plaintext_size: int) -> int:
    """Payload length for ``plaintext_size`` bytes of plaintext."""
    if plaintext_size == 0:
        return NONCE_SIZE + TAG_SIZE
    chunks = (plaintext_size + CHUNK_SIZE - 1) // CHUNK_SIZE
    return NONCE_SIZE + plaintext_size + chunks * TAG_SIZE


def chunk_span(index: int, size: int) -> tuple[int, int]:
    """Payload byte range ``[start, end)`` of chunk ``index`` for a plaintext of ``size``."""
    count = max(1, (size + CHUNK_SIZE - 1) // CHUNK_SIZE)
    if not 0 <= index < count:
        raise IndexError(f"chunk {index} out of range (file has {count})")
    start = NONCE_SIZE + index * ENC_CHUNK_SIZE
    return start, start + min(CHUNK_SIZE, size - index * CHUNK_SIZE) + TAG_SIZE


class PayloadCipher:
    """Seals and opens single chunks; one AEAD object per file."""

    def __init__(self, file_key: bytes, nonce: bytes) -> None:
        if len(nonce) != NONCE_SIZE:
            raise FormatError("age payload: nonce is not 16 bytes")
        self.nonce = nonce
        key = payload_key(file_key, nonce)
        self._aead = ChaCha20Poly1305(key)

    def seal_chunk(self, index: int, plaintext: bytes, last: bool) -> bytes:
        return self._aead.encrypt(chunk_nonce(index, last), plaintext, None)

    def seal_chunk_into(self, index: int, plaintext: bytes, last: bool, out: memoryview) -> None:
        """seal_chunk, written into ``out`` (exactly ``len(plaintext) + TAG_SIZE`` bytes): into
        a buffer used again it measured half the time of a new buffer per chunk."""
        self._aead.encrypt_into(chunk_nonce(index, last), plaintext, None, out)

    def open_chunk(self, index: int, ciphertext: bytes, last: bool) -> bytes:
        """Plaintext of one chunk; IntegrityError if it is not chunk ``index`` (and last)."""
        nonce = self._chunk_checked(index, ciphertext, last)
        try:
            return self._aead.decrypt(nonce, ciphertext, None)
        except InvalidTag:
            raise _auth_failed(index) from None

    def open_chunk_into(self, index: int, ciphertext: Any, last: bool, out: memoryview) -> None:
        """open_chunk, written into ``out`` (exactly the plaintext's length): no new buffer
        per chunk, no join after it. On failure ``out`` holds nothing to be used."""
        nonce = self._chunk_checked(index, ciphertext, last)
        try:
            self._aead.decrypt_into(nonce, ciphertext, None, out)
        except InvalidTag:
            raise _auth_failed(index) from None

    @staticmethod
    def _chunk_checked(index: int, ciphertext: Any, last: bool) -> bytes:
        """The nonce of chunk ``index``, once its length is one that chunk can have."""
        size = len(memoryview(ciphertext))
        if size < TAG_SIZE or size > ENC_CHUNK_SIZE:
            raise IntegrityError(f"age payload: chunk {index} has an impossible length")
        if not last and size != ENC_CHUNK_SIZE:
            raise IntegrityError(f"age payload: chunk {index} is short but not final")
        if last and index > 0 and size == TAG_SIZE:
            raise IntegrityError("age payload: empty final chunk after other chunks")
        return chunk_nonce(index, last)


def _auth_failed(index: int) -> IntegrityError:
    return IntegrityError(
        f"age payload: chunk {index} fails authentication "
        "(tampered, truncated, reordered or not this key's content)"
    )


def read_full(src: BinaryIO, n: int) -> bytes:
    """Up to ``n`` bytes, fewer only at end of stream (``read`` may return short)."""
    data = src.read(n)
    if data is None or len(data) == n or not data:
        return data or b""
    parts = [data]
    got = len(data)
    while got < n:
        more = src.read(n - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def encrypt(
    src: BinaryIO, dst: BinaryIO, file_key: bytes, *, nonce: bytes | None = None
) -> tuple[int, int]:
    """Write the payload of ``src`` to ``dst``; return (plaintext size, payload size).

    Memory holds two chunks at most, whatever the size; the final chunk is known by reading
    one chunk ahead. ``nonce`` is random unless given; only tests reproducing known
    payloads pass one (each file key is fresh, so the nonce is defence in depth).
    """
    if nonce is None:
        nonce = os.urandom(NONCE_SIZE)
    cipher = PayloadCipher(file_key, nonce)
    dst.write(nonce)
    total, index = 0, 0
    current = read_full(src, CHUNK_SIZE)
    while True:
        ahead = read_full(src, CHUNK_SIZE) if len(current) == CHUNK_SIZE else b""
        last = not ahead
        dst.write(cipher.seal_chunk(index, current, last))
        total += len(current)
        if last:
            return total, payload_size(total)
        current, index = ahead, index + 1


def decrypt(src: BinaryIO, file_key: bytes) -> Iterator[bytes]:
    """Plaintext chunks of a payload read sequentially from ``src`` to its end.

    Chunks are yielded as they authenticate; an error (IntegrityError, or FormatError for a
    missing nonce) is raised where the payload goes wrong, trailing data included. A full
    chunk is tried as non-final first, then as final (a full final chunk is legal), which
    releases the same plaintext as the reference implementation on every test vector.
    """
    nonce = read_full(src, NONCE_SIZE)
    if len(nonce) != NONCE_SIZE:
        raise FormatError("age payload: missing or short nonce")
    cipher = PayloadCipher(file_key, nonce)
    index = 0
    while True:
        current = read_full(src, ENC_CHUNK_SIZE)
        if index > 0 and not current:
            raise IntegrityError("age payload: truncated (final chunk missing)")
        last = len(current) < ENC_CHUNK_SIZE
        if last:
            yield cipher.open_chunk(index, current, True)
            return
        try:
            plaintext = cipher.open_chunk(index, current, False)
        except IntegrityError:
            plaintext, last = cipher.open_chunk(index, current, True), True
        yield plaintext
        if last:
            if src.read(1):
                raise IntegrityError("age payload: data after the final chunk")
            return
        index += 1
