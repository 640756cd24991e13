"""Durable notes of the paths whose key object a crash may have left an orphan.

A delete removes the content object first, then the key object; an upload stores the key
object first, then the content. Killed in between, either leaves a key object without its
content: invisible, but reported by fsck. Before such a sequence starts, the path is noted
here (one small fsynced file); once it finished, the note goes. A note that is still there
(left by a killed daemon, or by a delete that failed half-way, or for an upload given up
after its key object went up) is *due*: :meth:`PairStore.tidy_key` removes the orphan, if
there is one, and the note goes. The mount's outbox does that for its own notes
(vfs/outbox.py), never while an upload of the same path is pending.

Blocking, thread-safe; one file per path, named by a hash of it, in the directory given (a
mount uses ``outbox-tidy`` beside its outbox directory).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading

log = logging.getLogger("b2cryptfs.vfs.outbox")


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class TidyLog:
    def __init__(self, directory: str) -> None:
        self.directory = directory
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self._lock = threading.Lock()
        self._due: set[str] = set()
        self._busy: dict[str, int] = {}  # a sequence under way: not due until it ends
        for name in os.listdir(directory):
            full = os.path.join(directory, name)
            if name.startswith(".tmp-"):
                os.unlink(full)
                continue
            try:
                with open(full, encoding="utf-8") as fh:
                    self._due.add(str(json.load(fh)["path"]))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.error("tidy note %s is unusable (%s); leaving it there", full, exc)

    def _file(self, path: str) -> str:
        return os.path.join(self.directory, hashlib.sha256(path.encode()).hexdigest()[:32])

    def _write(self, path: str) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump({"path": path}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self._file(path))
        _fsync_dir(self.directory)

    def begin(self, path: str) -> None:
        """A sequence that may leave an orphan key object at ``path`` starts (durable)."""
        with self._lock:
            if path not in self._busy and path not in self._due:
                self._write(path)
            self._busy[path] = self._busy.get(path, 0) + 1

    def end(self, path: str, *, finished: bool) -> None:
        """The sequence ended; ``finished``: completely (else the note becomes due)."""
        with self._lock:
            left = self._busy.get(path, 0) - 1
            if left > 0:
                self._busy[path] = left
            else:
                self._busy.pop(path, None)
            if not finished:
                self._due.add(path)
            elif left <= 0 and path not in self._due:
                self._drop(path)

    def note(self, path: str) -> None:
        """``path`` may have an orphan key object now (an upload given up half-way)."""
        with self._lock:
            if path not in self._busy and path not in self._due:
                self._write(path)
            self._due.add(path)

    def due(self) -> list[str]:
        with self._lock:
            return sorted(p for p in self._due if p not in self._busy)

    def tidied(self, path: str) -> None:
        """The orphan of a due note is gone (or there was none)."""
        with self._lock:
            self._due.discard(path)
            if path not in self._busy:
                self._drop(path)

    def _drop(self, path: str) -> None:
        try:
            os.unlink(self._file(path))
        except FileNotFoundError:
            pass
