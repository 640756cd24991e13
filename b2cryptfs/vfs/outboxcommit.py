"""The committer: makes freshly sealed outbox entries durable off the close path.

close() seals a file into the outbox without waiting for the disk (vfs/outboxfiles.py); a
kill -9 cannot hurt such an entry (it is in the page cache), a power loss can. One thread
here syncs what was sealed, in batches: every file's data once (fdatasync), then the outbox
directory once for all of their names. A batch goes when its oldest file has waited
``interval`` seconds or when ``batch`` files wait, so a power loss loses at most about the
last ``interval`` of closes, like ext4's commit interval. Whoever needs it sooner syncs
itself (fsync(2) waits for the upload; ``--sync-close`` syncs at close).

Per-file syncs rather than syncfs(2): syncfs also writes out every other dirty file of the
cache's filesystem (staging files, other programs' data), whose cost nobody bounds.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from b2cryptfs.cache.outboxcheck import fsync_dir

log = logging.getLogger("b2cryptfs.vfs.outbox")


class Committer:
    """Syncs added files in batches from its own thread (started at the first add)."""

    def __init__(self, directory: str, *, interval: float = 1.0, batch: int = 256) -> None:
        self.directory = directory
        self.interval = interval
        self.batch = max(1, batch)
        self._cond = threading.Condition()
        self._pending: list[str] = []
        self._since = 0.0  # when the oldest pending file was added (monotonic)
        self._closing = False
        self._thread: threading.Thread | None = None
        # Held while a batch is synced: flush() waits for one the thread is running.
        self._syncing = threading.Lock()
        self.batches = 0  # batches synced (read-only for others)

    def add(self, *paths: str) -> None:
        """Files just written (renamed into the outbox directory) to make durable soon."""
        with self._cond:
            first = not self._pending
            if first:
                self._since = time.monotonic()
            self._pending.extend(paths)
            if self._thread is None and not self._closing:
                self._thread = threading.Thread(
                    target=self._run, name="b2cryptfs-outbox-commit", daemon=True
                )
                self._thread.start()
            if first or len(self._pending) >= self.batch:
                self._cond.notify()  # (the thread sleeps without a timeout when idle)

    def pending(self) -> int:
        with self._cond:
            return len(self._pending)

    def flush(self) -> None:
        """Blocking: everything added so far is durable once this returns."""
        with self._syncing:
            with self._cond:
                paths, self._pending = self._pending, []
            if paths:
                self._sync(paths)

    def close(self) -> None:
        """Blocking: stop the thread and make everything added durable."""
        with self._cond:
            self._closing = True
            self._cond.notify()
            thread = self._thread
        if thread is not None:
            thread.join()
        self.flush()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closing:
                    self._cond.wait()
                if self._closing:
                    return  # close() syncs the rest
                while not self._closing and len(self._pending) < self.batch:
                    left = self._since + self.interval - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                if self._closing:
                    return
            self.flush()

    def sync(self, paths: list[str]) -> None:
        """Blocking: make these files (and the directory) durable now, whoever asks."""
        self._sync(paths)

    def _sync(self, paths: list[str]) -> None:
        for path in paths:
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue  # uploaded (or superseded) and removed meanwhile: nothing to keep
            except OSError as exc:
                log.error("outbox: cannot open %s to make it durable: %s", path, exc)
                continue
            try:
                os.fdatasync(fd)
            except OSError as exc:
                log.error("outbox: %s may not be on the disk: %s", path, exc)
            finally:
                os.close(fd)
        fsync_dir(self.directory)
        self.batches += 1
