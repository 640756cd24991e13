"""A staging file laid out as the age payload it will be sealed into (the default format).

An age content object is the bare payload (formats/age/stream.py): a 16-byte nonce, then
chunk ``i`` of 64 KiB sealed under payload_key(file key, nonce) with the nonce ``i || last``,
whatever the recipients. So this staging picks its file key and payload nonce up front and
keeps its disk file in exactly that shape: the nonce at 0, block ``i`` at
``16 + i * (65536 + 16)``. A full block that leaves memory for the first time is sealed as
age chunk ``i`` (not last); sealing a file written in order then only seals its final chunk
(``last``: a nonce of its own), truncates the file to the payload's size and makes the key
object, and the file itself becomes the outbox's content file (:meth:`AgeStaging.detach`).

Nonce rule: an index is sealed under the payload key as a non-final chunk at most once,
ever (old ciphertext may survive on the cache disk), and a final chunk at most once per
index. A partial block, or one written again, goes to its slot under the private key of
:class:`Staging` with a random nonce kept in memory. At seal a block in any other form is
sealed as chunk ``i`` only if index ``i`` was never used; otherwise :meth:`seal_payload`
returns None and the caller re-encrypts everything under a fresh key (the generic path).
"""

from __future__ import annotations

import hashlib
import os
import tempfile

from cryptography.exceptions import InvalidTag

from b2cryptfs.bucket.pairs import PairStore
from b2cryptfs.errors import IntegrityError, StagingError
from b2cryptfs.formats import Sealed
from b2cryptfs.formats.age import stream
from b2cryptfs.formats.age.wrap import FILE_KEY_SIZE
from b2cryptfs.vfs.outboxcontent import ContentFile
from b2cryptfs.vfs.staging import BLOCK, RUN, Block, Staging, runs

_ENC = stream.ENC_CHUNK_SIZE
_PRIVATE_NONCE = 12
_READ_BACK = 16 * _ENC


class AgeStaging(Staging):
    """A Staging whose file, once sealed, is the age payload of its content."""

    def __init__(self, directory: str) -> None:
        super().__init__(directory)
        self._base_fd = -1  # the file handed to the outbox last (read only)
        self._base_cipher: stream.PayloadCipher | None = None
        self._base_limit = 0  # blocks below this not in memory or the file come from it
        self._out: memoryview | None = None  # where blocks are sealed (_write_blocks)
        self._fresh_key()

    def _fresh_key(self) -> None:
        # The key and nonce are picked when the first block leaves memory (_cipher): most
        # files stay in memory, are sealed the generic way and never need them.
        self._payload_cipher: stream.PayloadCipher | None = None
        self.file_key = b""
        self._private: dict[int, bytes] = {}  # block in the private form: its nonce
        self._used: set[int] = set()  # indices sealed as non-final chunks (never again)
        self._used_last: set[int] = set()  # indices sealed as final chunks
        # SHA-1 of the payload's prefix written in order (nonce, chunk 0, 1, ...), and of
        # that prefix without its last chunk; _hashed < 0: the order was broken.
        self._hashed = 0

    @property
    def _cipher(self) -> stream.PayloadCipher:
        if self._payload_cipher is None:
            self.file_key = os.urandom(FILE_KEY_SIZE)
            nonce = os.urandom(stream.NONCE_SIZE)
            self._payload_cipher = stream.PayloadCipher(self.file_key, nonce)
            self._sha = hashlib.sha1(nonce)
            self._sha_prev = self._sha.copy()
        return self._payload_cipher

    # --- the file --------------------------------------------------------------------------

    @staticmethod
    def _slot_offset(index: int) -> int:
        return stream.NONCE_SIZE + index * _ENC

    def _file(self) -> int:
        if self._fd < 0:
            try:
                # No name at all (nothing to leave behind), yet it can be given one at seal.
                fd = os.open(self._directory, os.O_TMPFILE | os.O_RDWR, 0o600)
            except (OSError, AttributeError):
                fd, path = tempfile.mkstemp(dir=self._directory, prefix="stage-")
                os.unlink(path)  # (then the outbox copies it: vfs/outboxcontent.py)
            try:
                _pwrite_all(fd, self._cipher.nonce, 0)
            except BaseException:
                os.close(fd)
                raise
            self._fd = fd
        return self._fd

    @property
    def fd(self) -> int:
        return self._fd

    def _write_block(self, index: int, buf: Block) -> None:
        self._write_blocks([(index, buf)])

    def _write_blocks(self, blocks: list[tuple[int, Block]]) -> None:
        # Sealed into one buffer used again and again, then one pwrite (the slots adjoin).
        fd = self._file()
        if self._out is None:
            self._out = memoryview(bytearray(RUN * _ENC))
        out = self._out[: len(blocks) * _ENC]
        nonces: list[bytes | None] = []
        for k, (index, buf) in enumerate(blocks):
            slot = out[k * _ENC : (k + 1) * _ENC]
            full = (index + 1) * BLOCK <= self.size
            if full and index not in self._used:
                self._used.add(index)  # before anything can fail: the nonce is spent now
                nonces.append(None)
                self._cipher.seal_chunk_into(index, buf, False, slot)  # type: ignore[arg-type]
            else:
                private = os.urandom(_PRIVATE_NONCE)
                nonces.append(private)
                self._aead.encrypt_into(private, buf, self._aad(index), slot)
        try:
            _pwrite_all(fd, out, self._slot_offset(blocks[0][0]))
        except BaseException:
            # The slots may be torn: the blocks live in memory until written again.
            for index, buf in blocks:
                self._on_disk.discard(index)
                self._private.pop(index, None)
                if index not in self._dirty:
                    self._dirty[index] = bytearray(buf)
            raise
        for k, ((index, _), private) in enumerate(zip(blocks, nonces, strict=True)):
            self._on_disk.add(index)
            if private is None:
                self._private.pop(index, None)
                if index == self._hashed:
                    self._sha_prev = self._sha.copy()
                    self._sha.update(out[k * _ENC : (k + 1) * _ENC])
                    self._hashed += 1
            else:
                self._private[index] = private

    def _decrypt(self, index: int) -> bytes:
        raw = os.pread(self._fd, _ENC, self._slot_offset(index))
        if len(raw) != _ENC:
            raise StagingError(f"staging block {index} is short")
        nonce = self._private.get(index)
        try:
            if nonce is None:
                return self._cipher.open_chunk(index, raw, False)
            return self._aead.decrypt(nonce, raw, self._aad(index))
        except (IntegrityError, InvalidTag):
            raise StagingError(f"staging block {index} failed authentication") from None

    def _missing(self, index: int) -> bytes:
        if index < self._base_limit and self._base_cipher is not None:
            raw = os.pread(self._base_fd, _ENC, self._slot_offset(index))
            return self._base_cipher.open_chunk(index, raw, False)
        return super()._missing(index)

    def truncate(self, size: int) -> None:
        super().truncate(size)
        keep_blocks = (size + BLOCK - 1) // BLOCK
        self._private = {i: n for i, n in self._private.items() if i < keep_blocks}
        self._base_limit = min(self._base_limit, keep_blocks)
        if keep_blocks < self._hashed:
            self._hashed = -1  # the hashed prefix is gone: read back at seal

    # --- sealing ---------------------------------------------------------------------------

    def seal_payload(self) -> tuple[int, str] | None:
        """Make the file the complete age payload of the content (blocking); return (its
        size, its SHA-1 in hex), or None when this staging cannot (it has no file, or an
        index would be sealed twice): the caller seals it the generic way then."""
        if self._fd < 0:
            return None
        final = max(1, (self.size + BLOCK - 1) // BLOCK) - 1
        if final in self._used_last:
            return None
        todo = [
            i
            for i in range(final)
            if i in self._dirty or i not in self._on_disk or i in self._private
        ]
        if any(i in self._used for i in todo):
            return None
        for run in runs(todo):
            self._write_blocks([(i, self._peek(i)) for i in run])
            for i in run:
                self._dirty.pop(i, None)
        tail = bytes(self._peek(final))
        # The final block's slot is rewritten: from now on the block lives in memory.
        self._keep(final, bytearray(tail))
        self._on_disk.discard(final)
        self._private.pop(final, None)
        self._used_last.add(final)
        sealed = self._cipher.seal_chunk(final, tail[: self.size - final * BLOCK], True)
        _pwrite_all(self._fd, sealed, self._slot_offset(final))
        size = stream.payload_size(self.size)
        os.ftruncate(self._fd, size)
        if self._hashed == final:
            digest = self._sha.copy()
        elif self._hashed == final + 1:
            digest = self._sha_prev.copy()
        else:
            digest = hashlib.sha1()
            pos, end = 0, self._slot_offset(final)
            while pos < end:
                data = os.pread(self._fd, min(_READ_BACK, end - pos), pos)
                if not data:
                    raise StagingError("staging file shorter than its payload")
                digest.update(data)
                pos += len(data)
        digest.update(sealed)
        return size, digest.hexdigest()

    def detach(self) -> None:
        """The file is now the outbox's content file (sealed by :meth:`seal_payload` and
        given a name there): never write it again. Its blocks are read from it until
        written again; new blocks go to a new file under a new key."""
        final = max(1, (self.size + BLOCK - 1) // BLOCK) - 1
        if self._base_fd >= 0:
            os.close(self._base_fd)  # (everything it held was copied into this file)
        self._base_fd, self._base_cipher, self._base_limit = self._fd, self._cipher, final
        self._fd = -1
        self._on_disk = set()  # (what is in memory stays: seal_payload left only the final)
        self._fresh_key()

    def close(self) -> None:
        self._out = None
        if not self.closed and self._base_fd >= 0:
            os.close(self._base_fd)
            self._base_fd = -1
        super().close()


def seal_in_place(pairs: PairStore, staging: Staging, out: ContentFile) -> Sealed | None:
    """Seal an AgeStaging's content by making its file ``out`` (blocking): no second
    encryption, and no copy where the filesystem lets the file be named. None: the caller
    seals the content the generic way (a small file still in memory, another format, or
    an index that would be sealed twice)."""
    if not isinstance(staging, AgeStaging) or staging.fd < 0:
        return None
    sealed = pairs.seal_age_payload(staging.file_key, staging.size)
    done = staging.seal_payload()
    if done is None:
        return None
    size, sha1 = done
    if out.adopt(staging.fd, size, sha1):
        staging.detach()
    return sealed


def _pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        done = os.pwrite(fd, view, offset)
        view, offset = view[done:], offset + done
