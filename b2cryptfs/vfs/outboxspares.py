"""Spare files: empty files made ahead of time, so that sealing renames one into the outbox
instead of creating a file on the close path.

Creating a file allocates an inode, which on some disks (virtual machines, journaled
filesystems under load) costs far more than a rename; a close used to create two. A thread
keeps ``keep`` spares open in the staging directory (on the outbox's filesystem, and cleared
at every mount, so a killed daemon leaves none behind); :meth:`Spares.take` hands one out,
or None when none is ready and the caller creates its file itself.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from collections import deque

log = logging.getLogger("b2cryptfs.vfs.outbox")

PREFIX = "spare-"


class Spares:
    """A pool of empty files in ``directory``, refilled by a thread of its own."""

    def __init__(self, directory: str, *, keep: int = 16) -> None:
        self.directory = directory
        self.keep = max(1, keep)
        self._free: deque[tuple[int, str]] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._thread: threading.Thread | None = None

    def take(self) -> tuple[int, str] | None:
        """(descriptor open for reading and writing, current path) of an empty file that is
        now the caller's to rename and fill, or None."""
        with self._cond:
            if self._closing:
                return None
            spare = self._free.popleft() if self._free else None
            if len(self._free) < self.keep // 2:
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._run, name="b2cryptfs-outbox-spares", daemon=True
                    )
                    self._thread.start()
                self._cond.notify()
            return spare

    def close(self) -> None:
        """Stop the thread and remove the spares left."""
        with self._cond:
            self._closing = True
            self._cond.notify()
            thread = self._thread
        if thread is not None:
            thread.join()
        with self._cond:
            left, self._free = list(self._free), deque()
        for fd, path in left:
            os.close(fd)
            try:
                os.unlink(path)
            except OSError:
                pass

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closing and len(self._free) >= self.keep:
                    self._cond.wait()
                if self._closing:
                    return
            try:
                fd, path = tempfile.mkstemp(dir=self.directory, prefix=PREFIX)
            except OSError as exc:
                # (A full disk: the close path creates its files itself, and fails there.)
                log.debug("outbox: no spare file: %s", exc)
                with self._cond:
                    if not self._closing:
                        self._cond.wait(5.0)
                continue
            with self._cond:
                if self._closing:
                    os.close(fd)
                    os.unlink(path)
                    return
                self._free.append((fd, path))
