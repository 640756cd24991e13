"""Implicit directory mtimes, stored lazily: a dirty set written once a directory is quiet.

A create, unlink, rename or mkdir sets its directory's mtime to now (as on ext4). Storing it
at once would cost one directory-object upload per name; instead the directory is marked
dirty and its new mtime is shown from memory, and a background task writes it once nothing
has changed there for :data:`QUIET` seconds (or, for a directory that never rests, every
:data:`MAX_DELAY` seconds): one small upload per directory per quiet period, whatever the
number of names. An unmount and ``fsyncdir`` write every dirty one; a killed daemon may lose
the last ones (ext4 may lose unsynced metadata on power loss the same way).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable

import trio

from b2cryptfs.errors import B2CryptfsError
from b2cryptfs.vfs.namespace import Node

log = logging.getLogger(__name__)

QUIET = 1.5  # seconds without a change before a directory's mtime is stored
MAX_DELAY = 30.0  # a directory changing all the time is still stored this often
RETRY = 10.0  # after a failed write (store unreachable), the next try


class DirTimes:
    """The dirty directories and the task that stores their mtimes.

    ``write(node)`` stores one directory's pending times (``node.dir_mtime_ns``, and the
    change time of a renamed one, ``node.dir_ctime_ns``) and clears them; it runs under ``lock``, the namespace lock, so that no rename or rmdir moves the
    directory while its object is written.
    """

    def __init__(self, write: Callable[[Node], Awaitable[None]], lock: trio.Lock) -> None:
        self._write = write
        self.lock = lock
        # node -> (first change, last change) since it was last stored (trio clock)
        self._dirty: dict[Node, tuple[float, float]] = {}
        self._wake = trio.Event()

    def __len__(self) -> int:
        return len(self._dirty)

    def changed(self, node: Node) -> None:
        """``node``'s mtime changed in memory (``node.dir_mtime_ns``): store it later."""
        now = trio.current_time()
        first = self._dirty.get(node, (now, now))[0]
        self._dirty[node] = (first, now)
        self._wake.set()

    def stored(self, node: Node) -> None:
        """``node``'s metadata was just stored with its pending mtime (an explicit change)."""
        self._dirty.pop(node, None)

    def _due_in(self, now: float) -> float:
        """Seconds until the next directory is due (inf: none is dirty)."""
        return min(
            (min(last + QUIET, first + MAX_DELAY) - now for first, last in self._dirty.values()),
            default=math.inf,
        )

    async def run(self) -> None:
        """Store each dirty directory once it is due; forever (cancelled at unmount)."""
        while True:
            wait = self._due_in(trio.current_time())
            if wait > 0:
                self._wake = trio.Event()
                with trio.move_on_after(wait):
                    await self._wake.wait()
                continue
            now = trio.current_time()
            due = [
                n
                for n, (first, last) in self._dirty.items()
                if min(last + QUIET, first + MAX_DELAY) <= now
            ]
            for node in due:
                if not await self._store(node):
                    # Try again later, not in a loop while the store is unreachable.
                    self._dirty[node] = (now + RETRY - MAX_DELAY, now + RETRY - QUIET)

    async def flush(self, nodes: list[Node] | None = None) -> int:
        """Store the dirty directories among ``nodes`` (None: all) now; how many failed."""
        todo = list(self._dirty) if nodes is None else [n for n in nodes if n in self._dirty]
        failed = 0
        for node in todo:
            failed += not await self._store(node)
        return failed

    async def _store(self, node: Node) -> bool:
        async with self.lock:
            if self._dirty.pop(node, None) is None:
                return True  # stored meanwhile (an explicit change, another flush)
            if node.unlinked or (node.dir_mtime_ns is None and node.dir_ctime_ns is None):
                return True  # removed, or nothing pending any more
            try:
                await self._write(node)
            except B2CryptfsError as exc:
                log.warning("%s: its new mtime could not be stored (%s)", node.path or "/", exc)
                self.changed(node)
                return False
            return True
