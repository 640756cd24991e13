"""On-disk cache of content-object ciphertext, one file per (version, chunk index).

Only ciphertext is stored: exactly the bytes a codec's ``chunk_span(i)`` names, so a chunk
read back is still authenticated by the codec when it is decrypted. A version's bytes never
change, so entries are never invalidated, only evicted (least recently used first) to keep
the total under a byte budget. The cache is an optimisation: any failure to store (a full
disk, a read-only directory) is logged once and the caller simply goes on uncached.

Thread-safe: readers and writers run in worker threads.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import logging
import os
import tempfile
import threading
import time
from collections import OrderedDict

log = logging.getLogger(__name__)

# After a failed write (ENOSPC...), do not try again for this long.
_WRITE_BACKOFF = 60.0


@functools.lru_cache(maxsize=1024)
def _digest(version_id: str) -> str:
    # Version ids may hold any character: hash them into a safe, fixed-length file name.
    return hashlib.sha256(version_id.encode("utf-8", "surrogateescape")).hexdigest()[:40]


def _entry_name(version_id: str, index: int) -> str:
    return f"{_digest(version_id)}-{index}"


class ChunkCache:
    """LRU cache of ciphertext chunks in ``directory`` (created with mode 0700)."""

    def __init__(self, directory: str, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max(0, int(max_bytes))
        self._lock = threading.Lock()
        self._index: OrderedDict[str, int] = OrderedDict()  # name -> size, oldest first
        self._total = 0
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
        found: list[tuple[float, str, int]] = []
        for sub in os.scandir(self.directory):
            if not sub.is_dir(follow_symlinks=False):
                continue
            for ent in os.scandir(sub.path):
                if ent.name.startswith("."):
                    # An interrupted write: never complete, remove it.
                    _unlink_quietly(ent.path)
                    continue
                try:
                    st = ent.stat(follow_symlinks=False)
                except OSError:
                    continue
                found.append((st.st_mtime, ent.name, st.st_size))
        found.sort()
        for _, name, size in found:
            self._index[name] = size
            self._total += size
        self._evict_locked(0)

    @property
    def total_bytes(self) -> int:
        return self._total

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, key: tuple[str, int]) -> bool:
        with self._lock:
            return _entry_name(*key) in self._index

    # --- operations --------------------------------------------------------------------

    def get(self, version_id: str, index: int, expected_size: int | None = None) -> bytes | None:
        """The cached ciphertext, or None. A file of the wrong size is dropped."""
        name = _entry_name(version_id, index)
        with self._lock:
            if name not in self._index:
                return None
            self._index.move_to_end(name)
        path = self._path(name)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            self._forget(name)
            return None
        if expected_size is not None and len(data) != expected_size:
            log.warning(
                "dropping a damaged cache entry (%d bytes, expected %d)", len(data), expected_size
            )
            self.discard(version_id, index)
            return None
        try:
            # Remember recency across restarts (the index is rebuilt by mtime).
            os.utime(path)
        except OSError:
            pass
        return data

    def put(self, version_id: str, index: int, data: bytes) -> bool:
        """Store a chunk; False (never an exception) when it could not be stored."""
        if len(data) > self.max_bytes or time.monotonic() < self._no_writes_until:
            return False
        name = _entry_name(version_id, index)
        with self._lock:
            if name in self._index:
                self._index.move_to_end(name)
                return True
            self._evict_locked(len(data))
        path = self._path(name)
        tmp = ""
        try:
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
            tmp = ""
        except OSError as exc:
            if tmp:
                _unlink_quietly(tmp)
            self._write_failed(exc)
            return False
        with self._lock:
            if name not in self._index:
                self._index[name] = len(data)
                self._total += len(data)
        return True

    def discard(self, version_id: str, index: int) -> None:
        name = _entry_name(version_id, index)
        self._forget(name)
        _unlink_quietly(self._path(name))

    # --- internals ---------------------------------------------------------------------

    def _forget(self, name: str) -> None:
        with self._lock:
            size = self._index.pop(name, None)
            if size is not None:
                self._total -= size

    def _evict_locked(self, incoming: int) -> None:
        while self._index and self._total + incoming > self.max_bytes:
            name, size = self._index.popitem(last=False)
            self._total -= size
            _unlink_quietly(self._path(name))

    def _write_failed(self, exc: OSError) -> None:
        self._no_writes_until = time.monotonic() + _WRITE_BACKOFF
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            # Make room for the next try: the disk is shared with other users of the cache dir.
            with self._lock:
                self._evict_locked(self._total // 4 + 1)
        if not self._warned:
            self._warned = True
            log.warning(
                "read cache: cannot store in %s (%s); reading uncached for a while",
                self.directory,
                exc.strerror or exc,
            )


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
