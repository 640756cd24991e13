"""Which sealed files wait the outbox's settle delay before their upload.

A file sealed again within the delay (a writer that closes and re-opens it, or appends), or
one the vfs reports still open for writing, may change again soon: its versions wait so that
they coalesce into one upload. A file nobody is writing is uploaded at once.
"""

from __future__ import annotations

_REMEMBERED = 4096


class SettlePolicy:
    def __init__(self, delay: float) -> None:
        self.delay = delay
        self._sealed_at: dict[str, float] = {}
        self._writers: dict[str, int] = {}  # path -> writers that have it open
        self._rewritten: set[str] = set()  # sealed again within the delay of the seal before

    def sealed(self, path: str, now: float) -> bool:
        """Record a seal of ``path``; True if its entry should wait the delay."""
        last = self._sealed_at.get(path)
        self._sealed_at[path] = now
        if len(self._sealed_at) > _REMEMBERED:
            self._sealed_at = {p: t for p, t in self._sealed_at.items() if now - t < self.delay}
            self._rewritten &= self._sealed_at.keys()
        if last is not None and now - last < self.delay:
            self._rewritten.add(path)
            return True
        self._rewritten.discard(path)
        return path in self._writers

    def writing(self, path: str, open_for_write: bool, now: float) -> bool:
        """Count a writer opening (True) or closing (False) ``path``; True if its queued
        entries may go now."""
        if open_for_write:
            self._writers[path] = self._writers.get(path, 0) + 1
            return False
        left = self._writers.pop(path, 1) - 1
        if left > 0:
            self._writers[path] = left
            return False
        last = self._sealed_at.get(path)
        return path not in self._rewritten or last is None or now - last >= self.delay
