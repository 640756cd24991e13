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
import itertools
import os
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

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
        self._outs: list[memoryview] = []  # where blocks are sealed (_buffer)
        self._job: tuple[list, Future, int] | None = None  # the run in flight (_spill)
        self._inflight: dict[int, Block] = {}
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
        # that prefix without its last chunk; _hashed < 0: the order was broken. Taken by
        # the spill thread (_write_and_hash), off the thread that answers WRITE.
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
        # Here and now (sealing at close, a failed spill's retry): no hand-over.
        self._settle()
        plan = self._plan(blocks)
        try:
            out = self._buffer(0, len(plan))
            _seal_into(plan, out, self._cipher, self._aead)
            done = _write_and_hash(plan, self._file(), out, self._hashing())
        except BaseException:
            self._failed(plan)
            raise
        self._written(plan, done)

    def _plan(self, blocks: list[tuple[int, Block]]) -> list[tuple[int, Block, bytes | None]]:
        """Each block with its private nonce, or None: sealed as payload chunk ``index``.
        The nonces are spent here, before anything can fail (the nonce rule)."""
        plan: list[tuple[int, Block, bytes | None]] = []
        for index, buf in blocks:
            full = (index + 1) * BLOCK <= self.size
            if full and index not in self._used:
                self._used.add(index)
                plan.append((index, buf, None))
            else:
                plan.append((index, buf, os.urandom(_PRIVATE_NONCE)))
        return plan

    def _buffer(self, which: int, count: int) -> memoryview:
        # Two, used again and again: one the spill thread writes, one sealed into meanwhile.
        while len(self._outs) <= which:
            self._outs.append(memoryview(bytearray(RUN * _ENC)))
        return self._outs[which][: count * _ENC]

    def _hashing(self) -> tuple | None:
        return (self._hashed, self._sha, self._sha_prev) if self._hashed >= 0 else None

    def _written(self, plan: list[tuple[int, Block, bytes | None]], hashing: tuple | None) -> None:
        for index, _, private in plan:
            self._on_disk.add(index)
            if private is None:
                self._private.pop(index, None)
            else:
                self._private[index] = private
        if hashing is not None and self._hashed >= 0:
            self._hashed, self._sha, self._sha_prev = hashing

    def _failed(self, plan: list[tuple[int, Block, bytes | None]]) -> None:
        # The slots may be torn: the blocks live in memory until written again.
        for index, buf, _ in plan:
            self._on_disk.discard(index)
            self._private.pop(index, None)
            if index not in self._dirty:
                self._dirty[index] = bytearray(buf)

    # --- sealing while the writer goes on --------------------------------------------------

    def _spill(self, keep: int) -> None:
        """As Staging's, but while a run is written and hashed by the spill thread (pwrite
        and hashlib release the GIL) the caller goes on and seals the next one; one run in
        flight at a time, so memory stays bounded (two runs' buffers). A failed run's
        blocks go back to memory and its OSError is raised by the next spill, flush or seal
        (the one that waits for it)."""
        while len(self._dirty) > keep:
            run = next(runs(itertools.islice(self._dirty, len(self._dirty) - keep)))
            if any(i in self._inflight for i in run):
                # Newer versions of blocks in flight: should that run fail, its blocks
                # must not come back over these (_failed), so it is waited for first.
                self._settle()
            plan = self._plan([(i, self._dirty.pop(i)) for i in run])
            which = 1 - self._job[2] if self._job is not None else 0
            try:
                out = self._buffer(which, len(plan))
                _seal_into(plan, out, self._cipher, self._aead)
                fd = self._file()
                self._settle()
            except BaseException:
                self._failed(plan)
                raise
            self._inflight = {index: buf for index, buf, _ in plan}
            job = _spill_thread().submit(_write_and_hash, plan, fd, out, self._hashing())
            self._job = (plan, job, which)

    def _settle(self) -> None:
        """Wait for the run in flight; raise its error (its blocks are back in memory)."""
        if self._job is None:
            return
        (plan, future, _), self._job = self._job, None
        try:
            done = future.result()
        except BaseException:
            self._failed(plan)
            raise
        finally:
            self._inflight = {}
        self._written(plan, done)

    def flush(self) -> None:
        super().flush()
        self._settle()

    def _peek(self, index: int) -> Block:
        if index not in self._dirty and index in self._inflight:
            return self._inflight[index]  # (the spill thread only reads it)
        return super()._peek(index)

    def _load(self, index: int) -> bytearray:
        if index not in self._dirty and index in self._inflight:
            return bytearray(self._inflight[index])
        return super()._load(index)

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
        self._settle()
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
        self._settle()
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
        self._settle()  # (seal_payload did: nothing is in flight)
        final = max(1, (self.size + BLOCK - 1) // BLOCK) - 1
        if self._base_fd >= 0:
            os.close(self._base_fd)  # (everything it held was copied into this file)
        self._base_fd, self._base_cipher, self._base_limit = self._fd, self._cipher, final
        self._fd = -1
        self._on_disk = set()  # (what is in memory stays: seal_payload left only the final)
        self._fresh_key()

    def close(self) -> None:
        try:
            self._settle()
        except OSError:
            pass  # (nothing of it is wanted any more)
        self._outs = []
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


_SPILL: ThreadPoolExecutor | None = None


def _spill_thread() -> ThreadPoolExecutor:
    # One for the process: runs of every staging take turns (none waits on another).
    global _SPILL
    if _SPILL is None:
        _SPILL = ThreadPoolExecutor(1, thread_name_prefix="staging-spill")
    return _SPILL


def _seal_into(
    plan: list[tuple[int, Block, bytes | None]],
    out: memoryview,
    cipher: stream.PayloadCipher,
    aead: ChaCha20Poly1305,
) -> None:
    """Seal neighbouring blocks into their slots in ``out`` (the caller's thread:
    cryptography keeps the GIL, so a thread would only take turns with it)."""
    for k, (index, buf, private) in enumerate(plan):
        slot = out[k * _ENC : (k + 1) * _ENC]
        if private is None:
            cipher.seal_chunk_into(index, buf, False, slot)  # type: ignore[arg-type]
        else:
            aead.encrypt_into(private, buf, Staging._aad(index), slot)


def _write_and_hash(
    plan: list[tuple[int, Block, bytes | None]],
    fd: int,
    out: memoryview,
    hashing: tuple | None,
) -> tuple | None:
    """Write sealed neighbouring blocks with one pwrite and hash those that extend the
    payload's hashed prefix (any thread: it changes only the file and the hash objects it
    is given). Returns the prefix's new (end, SHA-1, SHA-1 without its last chunk), or
    None."""
    _pwrite_all(fd, out, plan[0][0] * _ENC + stream.NONCE_SIZE)
    if hashing is None:
        return None
    hashed, sha, prev = hashing
    first = next((k for k, (i, _, _) in enumerate(plan) if i == hashed), None)
    if first is None:
        return hashing
    end = first  # the prefix goes on through payload chunks only
    while end < len(plan) and plan[end][2] is None:
        end += 1
    if end > first:
        # Two calls, not one a chunk: each return waits for the GIL.
        sha.update(out[first * _ENC : (end - 1) * _ENC])
        prev = sha.copy()
        sha.update(out[(end - 1) * _ENC : end * _ENC])
    return hashed + end - first, sha, prev


def _pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        done = os.pwrite(fd, view, offset)
        view, offset = view[done:], offset + done
