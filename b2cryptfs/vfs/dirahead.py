"""Read-ahead across a directory: small files opened one after another in listing order.

Programs that read a whole tree (cp -r, tar, rsync, grep -r, a backup) open a directory's
files in the order it lists them, and a small file is one request whose round trip is
most of its cost. Once two files of a directory were opened in a row (the second the
first's successor in the cached listing), the next ``AHEAD_FILES`` small ones are opened
in the background (``Versions.remote``: the key unwrapped, the first range fetched), so
the program's own opens find them ready. Only stored files with a key object copy (one
download each, bucket/keycopy.py) are opened ahead, never a listing fetched for it; an
open out of order stops it, and a file with a newer version in the outbox is skipped. At
most ``AHEAD_FILES`` downloads go unused when the program stops early. Nothing is written,
every check of a normal open is made, and a failure is left for the program's own open to
report (nothing is logged for a file the program may never open).
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Callable

import trio

from b2cryptfs.bucket.keycopy import KEY_COPY_INFO
from b2cryptfs.bucket.pairs import FileEntry
from b2cryptfs.vfs.listings import ListingCache
from b2cryptfs.vfs.namespace import DirState, split
from b2cryptfs.vfs.versions import Versions

log = logging.getLogger("b2cryptfs.vfs.state")

AHEAD_FILES = 4
_DIRS = 16  # directories whose order is remembered (a tree reader is in one at a time)


class DirAhead:
    def __init__(
        self, listings: ListingCache, versions: Versions, pending: Callable[[str], object]
    ) -> None:
        self._listings = listings
        self._versions = versions
        self._pending = pending  # the outbox's newer version of a path, if any
        self._nursery: trio.Nursery | None = None
        self._limiter = trio.CapacityLimiter(AHEAD_FILES)
        self._last: dict[str, str] = {}  # directory -> the leaf opened last there
        self._order: dict[str, tuple[int, int, list[str]]] = {}  # dir -> (id, len, names)
        self._started: set[str] = set()  # version ids opened ahead (or being opened)

    def start(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery

    def _names(self, dirpath: str, ds: DirState) -> list[str]:
        """The cached listing's file names in order (sorted once per listing state)."""
        got = self._order.get(dirpath)
        if got is not None and got[0] == id(ds) and got[1] == len(ds.files):
            return got[2]
        names = sorted(ds.files)
        self._order.pop(dirpath, None)
        while len(self._order) >= _DIRS:
            del self._order[next(iter(self._order))]
        self._order[dirpath] = (id(ds), len(ds.files), names)
        return names

    def opened(self, path: str) -> None:
        """A stored file was opened for reading: open the next ones ahead if in order."""
        if self._nursery is None:
            return
        dirpath, leaf = split(path)
        last = self._last.pop(dirpath, None)
        while len(self._last) >= _DIRS:
            del self._last[next(iter(self._last))]
        self._last[dirpath] = leaf
        if last is None:
            return
        ds = self._listings.cached(dirpath)
        if ds is None:
            return
        names = self._names(dirpath, ds)
        i = bisect.bisect_left(names, leaf)
        if i == 0 or i >= len(names) or names[i] != leaf or names[i - 1] != last:
            return
        if len(self._started) > 16 * AHEAD_FILES:
            self._started.clear()  # the readers' own cache remembers what is open
        for name in names[i + 1 : i + 1 + AHEAD_FILES]:
            entry = ds.files.get(name)
            if entry is None or entry.key is None or KEY_COPY_INFO not in entry.content.info:
                continue
            if self._pending(entry.path) is not None:
                continue  # an open reads the newer version waiting in the outbox instead
            vid = entry.content.version_id
            if vid in self._started or self._versions.readers.get(vid) is not None:
                continue
            self._started.add(vid)
            self._nursery.start_soon(self._open, entry)

    async def _open(self, entry: FileEntry) -> None:
        async with self._limiter:
            try:
                await self._versions.remote(entry, quiet=True)
            except Exception as exc:  # noqa: BLE001 - the program's own open will report it
                log.debug("read-ahead open of %s failed: %s", entry.path, exc)
