"""What the outbox tells about its uploads: counters, the recent rate, the last error, and
the log lines about failing uploads.

Read-only for everyone but :class:`b2cryptfs.vfs.outbox.Outbox`, which reports each upload's
outcome here. ``b2cryptfs status`` and the status xattrs (:mod:`b2cryptfs.vfs.uploadinfo`)
read :meth:`OutboxStats.snapshot`.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

import trio

from b2cryptfs.vfs.outboxfiles import FAILED, UPLOADING, OutboxEntry, rewrite_manifest

log = logging.getLogger("b2cryptfs.vfs.outbox")

# The upload rate is averaged over the uploads finished this recently (seconds).
RATE_WINDOW = 20.0
# The status names at most this many failing entries (the most failed first).
MAX_FAILING_SHOWN = 20
# An upload that keeps failing with transient errors this often and this long is reported as
# stuck (a WARNING naming it, the status, the manifest fsck reads), though still retried: a
# store that refuses one file for good can look like a flaky one.
STUCK_FAILURES = 10
STUCK_SECONDS = 15 * 60.0


@dataclass
class _Failing:
    """Consecutive failures of one entry (forgotten when it is uploaded or dropped)."""

    count: int
    since: float  # trio clock
    warned: bool = False


class OutboxStats:
    def __init__(self) -> None:
        self._started: float | None = None  # trio clock, set by start()
        self._failing: dict[int, _Failing] = {}
        self._stuck_seqs: set[int] = set()  # reported stuck in this mount
        self._outage_since: float | None = None  # first failure since the last success
        self._recent: deque[tuple[float, int]] = deque()
        self.uploaded_files = 0
        self.uploaded_bytes = 0
        self.last_error: str | None = None
        self.last_error_at: float | None = None  # wall clock (time.time())

    def start(self) -> None:
        self._started = trio.current_time()

    # --- what the outbox reports -----------------------------------------------------------

    def forget(self, entry: OutboxEntry) -> None:
        """The entry is gone (superseded or cancelled)."""
        self._failing.pop(entry.seq, None)
        self._stuck_seqs.discard(entry.seq)

    def _record_error(self, entry: OutboxEntry, message: str) -> None:
        self.last_error = f"{entry.path}: {message}"
        self.last_error_at = time.time()

    def failed_for_good(self, entry: OutboxEntry, message: str) -> None:
        """A failure that is not retried in this mount: the entry is stuck."""
        self._failing.pop(entry.seq, None)
        self._record_error(entry, message)
        self._stuck(entry, message, "it is not retried by this mount", logging.ERROR)

    def _stuck(
        self, entry: OutboxEntry, message: str, how: str, level: int = logging.WARNING
    ) -> None:
        """Report an upload that may never succeed, once per entry and mount: a WARNING
        (an ERROR when it failed for good) naming it, the status (``stuck``), and its
        manifest (what fsck reads)."""
        if entry.seq in self._stuck_seqs:
            return
        self._stuck_seqs.add(entry.seq)
        entry.stuck = message
        try:
            rewrite_manifest(entry)
        except OSError:
            pass  # the log line and the status still say it
        log.log(
            level,
            "upload of %s is stuck: %s; %s. It is kept in the outbox (%s) and tried again at "
            "each mount; remove or rename the file, or fix the store",
            entry.path,
            message,
            how,
            entry.manifest_file,
        )

    def failed(self, entry: OutboxEntry, exc: BaseException, pending: int) -> None:
        """A transient failure; the entry will be retried.

        Reaching the outbox, it means the store's own retries (tens of seconds of them) are
        spent: worth one WARNING per outage, not one per retry or per file. An entry that
        failed before says nothing more, so that one bad file among good ones does not flap
        between warnings and recoveries.
        """
        now = trio.current_time()
        self._record_error(entry, str(exc))
        failing = self._failing.get(entry.seq)
        if failing is None:
            failing = self._failing[entry.seq] = _Failing(0, now)
        failing.count += 1
        if failing.count >= STUCK_FAILURES and now - failing.since >= STUCK_SECONDS:
            self._stuck(
                entry, str(exc), f"it failed {failing.count} times in {now - failing.since:.0f} s"
            )
        if failing.warned:
            return
        failing.warned = True
        if self._outage_since is None:
            self._outage_since = now
            log.warning(
                "uploads keep failing (%s: %s); %d file(s) wait in the outbox and are retried",
                entry.path,
                exc,
                pending,
            )

    def uploaded(self, entry: OutboxEntry, pending: int) -> None:
        now = trio.current_time()
        failing = self._failing.pop(entry.seq, None)
        self._stuck_seqs.discard(entry.seq)
        if self._outage_since is not None:
            log.info(
                "uploads go through again (after %.0f s of failures); %d file(s) still pending",
                now - self._outage_since,
                pending,
            )
            self._outage_since = None
        elif failing is not None and failing.warned:
            log.info(
                "upload of %s went through after %d failed attempt(s) in %.0f s",
                entry.path,
                failing.count,
                now - failing.since,
            )
        self.uploaded_files += 1
        self.uploaded_bytes += entry.content_size
        self._recent.append((now, entry.content_size))

    # --- what others read --------------------------------------------------------------------

    def rate(self) -> float:
        """Bytes per second uploaded lately (finished uploads of the last few seconds)."""
        now = trio.current_time()
        while self._recent and self._recent[0][0] < now - RATE_WINDOW:
            self._recent.popleft()
        if not self._recent:
            return 0.0
        started = self._started if self._started is not None else now
        span = max(1.0, now - max(started, now - RATE_WINDOW))
        return sum(n for _, n in self._recent) / span

    def snapshot(self, entries: Iterable[OutboxEntry]) -> dict[str, object]:
        """JSON-able figures. ``pending_*`` counts every entry not yet stored, those in
        progress (``uploading_*``) and those failed for good (``failed_files``, kept for the
        next mount) included; bytes are ciphertext. ``failing`` names the entries failing now,
        with their consecutive failures."""
        pending = [e for e in entries if e.pending]
        uploading = [e for e in pending if e.state == UPLOADING]
        now = trio.current_time()
        failing = sorted(
            (
                {
                    "path": e.path,
                    "consecutive_failures": f.count,
                    "failing_for_seconds": round(now - f.since, 1),
                }
                for e in pending
                if (f := self._failing.get(e.seq)) is not None
            ),
            key=lambda d: -int(d["consecutive_failures"]),  # type: ignore[call-overload]
        )
        stuck = [e for e in pending if e.stuck is not None]
        return {
            "stuck_files": len(stuck),
            "stuck": [
                {"path": e.path, "error": e.stuck, "attempts": e.attempts}
                for e in stuck[:MAX_FAILING_SHOWN]
            ],
            "failing": failing[:MAX_FAILING_SHOWN],
            "pending_files": len(pending),
            "pending_bytes": sum(e.content_size for e in pending),
            "uploading_files": len(uploading),
            "uploading_bytes": sum(e.content_size for e in uploading),
            "failed_files": sum(1 for e in pending if e.state == FAILED),
            "failing_files": len(self._failing),
            "consecutive_failures": max((f.count for f in self._failing.values()), default=0),
            "uploaded_files": self.uploaded_files,
            "uploaded_bytes": self.uploaded_bytes,
            "rate_bytes_per_second": round(self.rate(), 1),
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
        }

    def upload_state(self, entries: list[OutboxEntry]) -> dict[str, object] | None:
        """How the newest of one path's pending ``entries`` fares (None: nothing pending)."""
        if not entries:
            return None
        newest = max(entries, key=lambda e: e.seq)
        failing = self._failing.get(newest.seq)
        return {
            "state": "uploading" if any(e.state == UPLOADING for e in entries) else "pending",
            "attempts": newest.attempts,
            "consecutive_failures": failing.count if failing else 0,
            "error": str(newest.error) if newest.error is not None else None,
        }
