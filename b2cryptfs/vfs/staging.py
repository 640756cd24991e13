"""The staging file of a file open for writing: random access, encrypted at rest.

Plaintext never reaches the disk: the file is cut into blocks of 64 KiB, each stored in its
own fixed-size slot as ``nonce || ChaCha20-Poly1305(block)`` under a random key that exists
only in this object's memory, with the block index as associated data (so blocks cannot be
swapped). The file is unlinked as soon as it is created, so a crash leaves nothing behind
(without the key it would be useless anyway). Holes read as zeros.

A few recently written blocks are kept as plaintext in memory so that small sequential
writes do not re-encrypt a block per write; the file itself is created only when a block
must leave memory, so a small file is written and sealed without one (creating a file is
one of the dearer things a close used to cost). Not thread-safe: the caller serialises access
(the vfs holds the node lock around every call, including a sealing thread's).
"""

from __future__ import annotations

import itertools
import os
import tempfile
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from b2cryptfs.errors import StagingError

BLOCK = 64 * 1024
_NONCE = 12
_TAG = 16
SLOT = _NONCE + BLOCK + _TAG
_MAX_DIRTY = 16  # plaintext blocks kept in memory (1 MiB)
_ZEROS = bytes(BLOCK)  # a hole
RUN = 16  # blocks written together at most
Block = bytes | bytearray  # a block's plaintext


def runs(indices: Iterable[int]) -> Iterator[list[int]]:
    """``indices`` cut into runs of neighbours (each next one 1 more), at most RUN long."""
    run: list[int] = []
    for index in indices:
        if run and (index != run[-1] + 1 or len(run) == RUN):
            yield run
            run = []
        run.append(index)
    if run:
        yield run


class Staging:
    """An encrypted, sparse, random-access temporary file of plaintext ``size`` bytes."""

    def __init__(self, directory: str) -> None:
        self._directory = directory
        self._fd = -1  # created by the first block that leaves memory (_file)
        self._aead = ChaCha20Poly1305(ChaCha20Poly1305.generate_key())
        self.size = 0
        self._on_disk: set[int] = set()
        self._dirty: OrderedDict[int, bytearray] = OrderedDict()
        self.closed = False

    # --- blocks ------------------------------------------------------------------------

    @staticmethod
    def _aad(index: int) -> bytes:
        return index.to_bytes(8, "big")

    def _load(self, index: int) -> bytearray:
        """Block ``index`` as a buffer to change (kept by the caller with ``_keep``)."""
        buf = self._dirty.get(index)
        if buf is not None:
            return buf
        if index not in self._on_disk:
            return bytearray(self._missing(index))
        return bytearray(self._decrypt(index))

    def _peek(self, index: int) -> bytes | bytearray:
        """Block ``index`` to read only (not copied: the caller must not change it)."""
        buf = self._dirty.get(index)
        if buf is not None:
            return buf
        if index not in self._on_disk:
            return self._missing(index)
        return self._decrypt(index)

    def _missing(self, index: int) -> bytes:
        """A block that is neither in memory nor in the file: a hole."""
        return _ZEROS

    def _decrypt(self, index: int) -> bytes:
        raw = os.pread(self._fd, SLOT, index * SLOT)
        if len(raw) != SLOT:
            raise StagingError(f"staging block {index} is short")
        view = memoryview(raw)
        try:
            return self._aead.decrypt(view[:_NONCE], view[_NONCE:], self._aad(index))
        except InvalidTag:
            raise StagingError(f"staging block {index} failed authentication") from None

    def _keep(self, index: int, buf: bytearray) -> None:
        self._dirty[index] = buf
        self._dirty.move_to_end(index)

    def _spill(self, keep: int) -> None:
        """Encrypt the oldest in-memory blocks to the file until at most ``keep`` remain.

        A block leaves memory only once it is on disk: when the disk is full the OSError
        propagates and every block is still held (in memory or in the file), never lost.
        Neighbouring blocks go together (:meth:`_write_blocks`).
        """
        while len(self._dirty) > keep:
            run = next(runs(itertools.islice(self._dirty, len(self._dirty) - keep)))
            self._write_blocks([(i, self._dirty[i]) for i in run])
            for index in run:
                del self._dirty[index]

    def _write_blocks(self, blocks: list[tuple[int, Block]]) -> None:
        """Encrypt neighbouring blocks ``(index, plaintext)`` to the file."""
        for index, buf in blocks:
            self._write_block(index, buf)

    def _file(self) -> int:
        if self._fd < 0:
            fd, path = tempfile.mkstemp(dir=self._directory, prefix="stage-")
            os.unlink(path)
            self._fd = fd
        return self._fd

    @staticmethod
    def _slot_offset(index: int) -> int:
        return index * SLOT

    def _write_block(self, index: int, buf: Block) -> None:
        nonce = os.urandom(_NONCE)
        sealed = self._aead.encrypt(nonce, buf, self._aad(index))
        fd = self._file()
        done = os.pwritev(fd, [nonce, sealed], index * SLOT)
        if done < SLOT:  # a short write (rare): the rest one piece at a time
            data = memoryview(nonce + sealed)
            while done < len(data):
                done += os.pwrite(fd, data[done:], index * SLOT + done)
        self._on_disk.add(index)

    def flush(self) -> None:
        """Encrypt every in-memory block to the file (OSError if the disk is full)."""
        self._spill(0)

    # --- file operations ---------------------------------------------------------------

    def write(self, offset: int, data: bytes) -> int:
        """Write all of ``data`` or, on OSError (a full disk), none of it.

        Blocks beyond the in-memory allowance are spilled to the file first: if that fails
        the write is refused before anything changes. After the write, spilling is best
        effort (the new blocks are safe in memory; a later write or flush reports a full
        disk), which bounds memory to the allowance plus one write.
        """
        self._spill(_MAX_DIRTY)
        view = memoryview(data)
        pos = offset
        while view:
            index, within = divmod(pos, BLOCK)
            n = min(BLOCK - within, len(view))
            if n == BLOCK:
                # A copy, not a view of ``data``: views kept the request's buffer alive and
                # measured slower in a mount (the next request then needs fresh pages).
                buf = bytearray(view[:n])
            else:
                buf = self._load(index)
                buf[within : within + n] = view[:n]
            self._keep(index, buf)
            view = view[n:]
            pos += n
        self.size = max(self.size, offset + len(data))
        try:
            self._spill(_MAX_DIRTY)
        except OSError:
            pass
        return len(data)

    def read(self, offset: int, length: int) -> bytes:
        end = min(offset + length, self.size)
        out = []
        pos = offset
        while pos < end:
            index, within = divmod(pos, BLOCK)
            n = min(BLOCK - within, end - pos)
            block = self._peek(index)
            if n == BLOCK and type(block) is bytes and end - offset == BLOCK:
                return block  # one whole block read (sealing reads so): no copy at all
            out.append(memoryview(block)[within : within + n])
            pos += n
        return b"".join(out)  # the one copy (a block kept in memory may change later)

    def truncate(self, size: int) -> None:
        if size < self.size:
            keep_blocks = (size + BLOCK - 1) // BLOCK
            for index in [i for i in self._dirty if i >= keep_blocks]:
                del self._dirty[index]
            self._on_disk = {i for i in self._on_disk if i < keep_blocks}
            if self._fd >= 0:
                os.ftruncate(self._fd, self._slot_offset(keep_blocks))
            within = size % BLOCK
            if within:
                # Zero the tail of the last block so that a later extension reads zeros.
                index = size // BLOCK
                buf = self._load(index)
                buf[within:] = bytes(BLOCK - within)
                self._keep(index, buf)
        self.size = size

    def fill_from(
        self, read: Callable[[int, int], bytes], size: int, step: int = 16 * BLOCK
    ) -> None:
        """Copy ``size`` bytes of plaintext from ``read(offset, length)`` (copy on open)."""
        pos = 0
        while pos < size:
            data = read(pos, min(step, size - pos))
            if not data:
                raise StagingError(f"source ended at {pos} of {size} bytes")
            self.write(pos, data)
            # Encrypt as we go: a big file must not sit in memory.
            self.flush()
            pos += len(data)

    def stream(self) -> _PlainStream:
        """A file-like plaintext reader of the whole content (for sealing; the blocks still
        in memory are read from there)."""
        return _PlainStream(self)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._dirty.clear()
            if self._fd >= 0:
                os.close(self._fd)


class _PlainStream:
    """Minimal ``read(n)`` interface over a Staging, as the codecs' seal() expects."""

    def __init__(self, staging: Staging) -> None:
        self._s = staging
        self._pos = 0

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = self._s.size - self._pos
        data = self._s.read(self._pos, n)
        self._pos += len(data)
        return data

    def readinto(self, b: bytearray | memoryview) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)
