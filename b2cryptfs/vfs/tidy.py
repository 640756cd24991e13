"""The outbox's clean-up of orphan key objects (and stale keys) left by cut-short sequences.

Deletes and renames note their paths in the tidy log while they run (bucket/tidylog.py,
``PairStore.tidy_log``); an upload that is dropped after its key object may have gone up
(superseded, unlinked or renamed before its content was stored) is noted here. What a
killed daemon left is due at the next mount; what failed half-way in this one is due a few
seconds later. A due path is tidied (``PairStore.tidy_key``) once no upload of it is pending,
and no upload of it starts while that runs. So after a crash, the next mount's outbox leaves
the store as fsck wants it, without a full listing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

from b2cryptfs.bucket.pairs import PairStore
from b2cryptfs.bucket.tidylog import TidyLog
from b2cryptfs.errors import B2CryptfsError
from b2cryptfs.vfs.outboxfiles import OutboxEntry
from b2cryptfs.vfs.threads import ABANDON_ON_CANCEL

log = logging.getLogger("b2cryptfs.vfs.outbox")

# A note of this mount waits this long before it is due: the delete or rename that failed
# may still be in the hands of its caller (seconds), and tidying under it would race it.
_LIVE_DELAY = 5.0
_POLL = 2.0
_RETRY = 30.0


class Tidier:
    def __init__(
        self,
        directory: str,
        pairs: PairStore,
        limiter: trio.CapacityLimiter,
        pending: Callable[[str], list[OutboxEntry]],
    ) -> None:
        # Beside the outbox directory, not in it: that holds the upload entries only.
        self.log = TidyLog(directory.rstrip("/") + "-tidy")
        pairs.tidy_log = self.log
        self.pairs = pairs
        self.limiter = limiter
        self._pending = pending
        self.busy: set[str] = set()  # being tidied: the outbox starts no upload of these
        self._first_seen: dict[str, float] = {}
        self._retry_at: dict[str, float] = {}
        self._left_by_earlier_run = set(self.log.due())

    def dropped(self, entry: OutboxEntry) -> None:
        """An upload is dropped (or moved to another path): its key object may be up."""
        if entry.touched:
            self.log.note(entry.path)

    def due_count(self) -> int:
        return len(self.log.due())

    def _ready(self, now: float) -> list[str]:
        ready = []
        for path in self.log.due():
            seen = self._first_seen.setdefault(path, now)
            if path not in self._left_by_earlier_run and now - seen < _LIVE_DELAY:
                continue
            if self._retry_at.get(path, 0.0) > now or self._pending(path):
                continue
            ready.append(path)
        return ready

    async def tidy_due(self, *, force: bool = False) -> int:
        """Tidy every path that is due now (``force``: also notes of this mount that are
        still young); returns how many are left."""
        now = trio.current_time()
        paths = self.log.due() if force else self._ready(now)
        for path in paths:
            if self._pending(path) or path in self.busy:
                continue
            self.busy.add(path)
            try:
                done = await trio.to_thread.run_sync(
                    self.pairs.tidy_key, path, limiter=self.limiter, **ABANDON_ON_CANCEL
                )
            except B2CryptfsError as exc:
                self._retry_at[path] = trio.current_time() + _RETRY
                log.warning("clean-up of %s after an interrupted change failed: %s", path, exc)
                continue
            finally:
                self.busy.discard(path)
            self.log.tidied(path)
            self._first_seen.pop(path, None)
            self._retry_at.pop(path, None)
            self._left_by_earlier_run.discard(path)
            if done:
                log.info("%s: %s (left by an interrupted change)", path, done)
        return self.due_count()

    async def run(self) -> None:
        while True:
            await self.tidy_due()
            await trio.sleep(_POLL)
