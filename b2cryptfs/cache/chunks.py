"""On-disk cache of content-object ciphertext, kept in *extents* of consecutive chunks.

Only ciphertext is stored: exactly the bytes a codec's ``chunk_span(i)`` names, so a chunk
read back is still checked by the codec when it is decrypted (and its length by this cache).
A version's bytes never change, so entries are never invalidated, only evicted (least
recently used first) to keep the total under a byte budget. The cache is an optimisation:
any failure to store (a full disk, a read-only directory) is logged once and the caller
simply goes on uncached.

An extent is one file holding a run of consecutive chunks of one version, back to back. Its
name says where they belong: ``<version digest>-<first index>-<count>-<chunk length>``; every
chunk but the last has that length and the file size gives the last one's. One file per run
instead of one per chunk matters: creating a file costs far more than writing 64 KiB into
it, and a sequential read stores a run of chunks per range request. Files are written under
a temporary name and renamed into place, so an extent either exists whole or not at all.

Thread-safe: readers and writers run in worker threads.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import itertools
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)

# After a failed write (ENOSPC...), do not try again for this long.
_WRITE_BACKOFF = 60.0

Buffer = bytes | bytearray | memoryview


@functools.lru_cache(maxsize=1024)
def _digest(version_id: str) -> str:
    # Version ids may hold any character: hash them into a safe, fixed-length file name.
    return hashlib.sha256(version_id.encode("utf-8", "surrogateescape")).hexdigest()[:40]


@dataclass(frozen=True)
class _Extent:
    name: str
    digest: str
    first: int
    count: int
    unit: int  # length of every chunk but the last
    size: int  # file size

    def span(self, index: int) -> tuple[int, int]:
        """Byte range of chunk ``index`` within the file."""
        k = index - self.first
        start = k * self.unit
        end = self.size if k == self.count - 1 else start + self.unit
        return start, end


def _parse(name: str, size: int) -> _Extent | None:
    """The extent a file name describes, or None for a name this cache did not write."""
    parts = name.split("-")
    try:
        if len(parts) == 4:
            digest, first, count, unit = parts[0], int(parts[1]), int(parts[2]), int(parts[3])
        elif len(parts) == 2:  # one chunk per file (the layout before extents)
            digest, first, count, unit = parts[0], int(parts[1]), 1, size
        else:
            return None
    except ValueError:
        return None
    if len(digest) != 40 or first < 0 or count < 1 or unit < 0:
        return None
    if size < (count - 1) * unit or (count > 1 and size > count * unit):
        return None
    return _Extent(name, digest, first, count, unit, size)


def _write_all(fd: int, parts: Sequence[Buffer]) -> None:
    """Write every buffer in order, coping with short writes (one syscall when possible)."""
    views = [memoryview(p).cast("B") for p in parts if len(p)]
    while views:
        done = os.writev(fd, views[:512])
        while done and views:
            if done >= len(views[0]):
                done -= len(views[0])
                views.pop(0)
            else:
                views[0] = views[0][done:]
                done = 0


class ChunkCache:
    """LRU cache of ciphertext chunks in ``directory`` (created with mode 0700)."""

    def __init__(self, directory: str, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max(0, int(max_bytes))
        self._lock = threading.Lock()
        self._extents: OrderedDict[str, _Extent] = OrderedDict()  # oldest use first
        self._where: dict[tuple[str, int], str] = {}  # (digest, index) -> extent name
        self._total = 0
        self._subdirs: set[str] = set()
        self._tmp_ids = itertools.count()
        self._no_writes_until = 0.0
        self._warned = False
        os.makedirs(directory, mode=0o700, exist_ok=True)
        os.chmod(directory, 0o700)
        self._load()

    # --- bookkeeping -------------------------------------------------------------------

    def _path(self, name: str) -> str:
        return os.path.join(self.directory, name[:2], name)

    def _load(self) -> None:
        """Rebuild the index from the files left by earlier runs, oldest use first."""
        found: list[tuple[float, _Extent]] = []
        for sub in os.scandir(self.directory):
            if not sub.is_dir(follow_symlinks=False):
                continue
            self._subdirs.add(sub.name)
            for ent in os.scandir(sub.path):
                try:
                    st = ent.stat(follow_symlinks=False)
                except OSError:
                    continue
                ext = None if ent.name.startswith(".") else _parse(ent.name, st.st_size)
                if ext is None:
                    # An interrupted write (never complete) or a stranger: remove it.
                    _unlink_quietly(ent.path)
                    continue
                found.append((st.st_mtime, ext))
        found.sort(key=lambda item: item[0])
        with self._lock:
            for _, ext in found:
                self._add_locked(ext)
            gone = self._evict_locked(0)
        self._unlink_all(gone)

    def _add_locked(self, ext: _Extent) -> None:
        old = self._extents.pop(ext.name, None)
        if old is not None:
            self._total -= old.size
        self._extents[ext.name] = ext
        self._total += ext.size
        for i in range(ext.first, ext.first + ext.count):
            self._where[(ext.digest, i)] = ext.name

    def _drop_locked(self, name: str) -> _Extent | None:
        ext = self._extents.pop(name, None)
        if ext is None:
            return None
        self._total -= ext.size
        for i in range(ext.first, ext.first + ext.count):
            key = (ext.digest, i)
            if self._where.get(key) == name:
                del self._where[key]
        return ext

    @property
    def total_bytes(self) -> int:
        return self._total

    def __len__(self) -> int:
        """Number of cached chunks."""
        return len(self._where)

    def __contains__(self, key: tuple[str, int]) -> bool:
        version_id, index = key
        with self._lock:
            return (_digest(version_id), index) in self._where

    # --- reading -----------------------------------------------------------------------

    def get(self, version_id: str, index: int, expected_size: int | None = None) -> bytes | None:
        """The cached ciphertext, or None. A chunk of the wrong size is dropped."""
        sizes = None if expected_size is None else (lambda _i: expected_size)
        return self.get_many(version_id, [index], sizes).get(index)

    def get_many(
        self,
        version_id: str,
        indices: Iterable[int],
        expected_size: Callable[[int], int] | None = None,
        *,
        nowait: bool = False,
    ) -> dict[int, bytes]:
        """The cached chunks among ``indices`` (one open per extent); misses are left out.

        With ``nowait``, only chunks already in the kernel's page cache are read (the
        event loop may call it: no disk wait for data); the others are left out too.
        """
        digest = _digest(version_id)
        by_extent: dict[str, list[int]] = {}
        with self._lock:
            for i in indices:
                name = self._where.get((digest, i))
                if name is not None:
                    by_extent.setdefault(name, []).append(i)
                    self._extents.move_to_end(name)
            extents = {name: self._extents[name] for name in by_extent}
        out: dict[int, bytes] = {}
        for name, wanted in by_extent.items():
            ext = extents[name]
            got = self._read_extent(ext, wanted, expected_size, nowait)
            if got is None:
                with self._lock:
                    self._drop_locked(name)
                _unlink_quietly(self._path(name))
                continue
            out.update(got)
        return out

    def _read_extent(
        self,
        ext: _Extent,
        wanted: list[int],
        expected_size: Callable[[int], int] | None,
        nowait: bool = False,
    ) -> dict[int, bytes] | None:
        """Chunks of one extent; None if the file is gone or damaged."""
        path = self._path(ext.name)
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return None
        try:
            if os.fstat(fd).st_size != ext.size:
                log.warning("dropping a damaged cache entry (its size changed)")
                return None
            out = {}
            for i in wanted:
                start, end = ext.span(i)
                if expected_size is not None and expected_size(i) != end - start:
                    log.warning(
                        "dropping a damaged cache entry (%d bytes, expected %d)",
                        end - start,
                        expected_size(i),
                    )
                    return None
                if nowait:
                    data = _pread_nowait(fd, end - start, start)
                    if data is None:
                        break  # not in memory: the caller reads it the slow way
                else:
                    data = os.pread(fd, end - start, start)
                if len(data) != end - start:
                    return None
                out[i] = data
            try:
                # Remember recency across restarts (the index is rebuilt by mtime).
                os.utime(fd)
            except OSError:
                pass
            return out
        except OSError:
            return None
        finally:
            os.close(fd)

    # --- writing -----------------------------------------------------------------------

    def put(self, version_id: str, index: int, data: Buffer) -> bool:
        """Store one chunk; False (never an exception) when it could not be stored."""
        return self.put_run(version_id, index, [data])

    def put_run(self, version_id: str, first: int, chunks: Sequence[Buffer]) -> bool:
        """Store consecutive chunks ``first, first+1, …``; False when (some) could not be.

        Runs whose chunks differ in length (other than the last) are split into extents of
        equal-length chunks.
        """
        ok = True
        start = 0
        while start < len(chunks):
            unit = len(chunks[start])
            # A small cache still takes long runs, in pieces it can evict one by one.
            most = start + max(1, self.max_bytes // 8 // max(1, unit))
            stop = start + 1
            while (
                stop < min(len(chunks), most)
                and len(chunks[stop - 1]) == unit
                and len(chunks[stop]) <= unit
            ):
                stop += 1
            # chunks[start:stop]: all of length `unit` except perhaps a shorter last one.
            ok = self._put_extent(version_id, first + start, chunks[start:stop], unit) and ok
            start = stop
        return ok

    def _put_extent(self, version_id: str, first: int, chunks: Sequence[Buffer], unit: int) -> bool:
        size = sum(len(c) for c in chunks)
        if size > self.max_bytes or time.monotonic() < self._no_writes_until:
            return False
        digest = _digest(version_id)
        name = f"{digest}-{first}-{len(chunks)}-{unit}"
        with self._lock:
            if all((digest, first + k) in self._where for k in range(len(chunks))):
                for k in range(len(chunks)):
                    self._extents.move_to_end(self._where[(digest, first + k)])
                return True
            gone = self._evict_locked(size)
        # Files are removed outside the lock: the event loop takes it for lookups.
        self._unlink_all(gone)
        sub = name[:2]
        path = os.path.join(self.directory, sub, name)
        tmp = os.path.join(self.directory, sub, f".{name}.{os.getpid()}.{next(self._tmp_ids)}")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        try:
            if sub not in self._subdirs:
                os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
                self._subdirs.add(sub)
            try:
                fd = os.open(tmp, flags, 0o600)
            except FileNotFoundError:  # its directory was removed behind our back
                os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
                fd = os.open(tmp, flags, 0o600)
            try:
                _write_all(fd, chunks)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except OSError as exc:
            _unlink_quietly(tmp)
            self._write_failed(exc)
            return False
        with self._lock:
            self._add_locked(_Extent(name, digest, first, len(chunks), unit, size))
        return True

    def discard(self, version_id: str, index: int) -> None:
        """Forget a chunk (with the rest of its extent)."""
        with self._lock:
            name = self._where.get((_digest(version_id), index))
            if name is None:
                return
            self._drop_locked(name)
        _unlink_quietly(self._path(name))

    # --- internals ---------------------------------------------------------------------

    def _evict_locked(self, incoming: int) -> list[str]:
        """Forget the least recently used extents until ``incoming`` bytes fit; returns
        their names, for the caller to unlink once the lock is released."""
        gone = []
        while self._extents and self._total + incoming > self.max_bytes:
            name = next(iter(self._extents))
            self._drop_locked(name)
            gone.append(name)
        return gone

    def _unlink_all(self, names: list[str]) -> None:
        for name in names:
            _unlink_quietly(self._path(name))

    def evict_all(self) -> int:
        """Drop the whole read cache (a full disk needs the room for writes); bytes freed."""
        with self._lock:
            before = self._total
            gone = self._evict_locked(self.max_bytes + 1)
            freed = before - self._total
        self._unlink_all(gone)
        return freed

    def _write_failed(self, exc: OSError) -> None:
        self._no_writes_until = time.monotonic() + _WRITE_BACKOFF
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            # Make room for the next try: the disk is shared with other users of the cache dir.
            with self._lock:
                gone = self._evict_locked(self._total // 4 + 1)
            self._unlink_all(gone)
        if not self._warned:
            self._warned = True
            log.warning(
                "read cache: cannot store in %s (%s); reading uncached for a while",
                self.directory,
                exc.strerror or exc,
            )


_RWF_NOWAIT = getattr(os, "RWF_NOWAIT", None)


def _pread_nowait(fd: int, n: int, offset: int) -> bytes | None:
    """``n`` bytes at ``offset`` if the page cache holds them all, else None (no disk wait)."""
    if _RWF_NOWAIT is None:
        return None
    buf = bytearray(n)
    try:
        got = os.preadv(fd, [buf], offset, _RWF_NOWAIT)
    except (BlockingIOError, OSError):
        # EAGAIN: not cached; EOPNOTSUPP: a filesystem without non-blocking reads.
        return None
    if got != n:
        return None  # partly cached (a damaged file is found by the blocking path)
    return bytes(buf)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
