"""The outbox's upload workers: which entry goes next, one upload and what its outcome does
to the entry (retry with backoff, failed for good, done). A base of :class:`Outbox`
(vfs/outbox.py), which owns the queue these read and change."""

from __future__ import annotations

import logging
import random
from collections import deque

import trio

from b2cryptfs.bucket.pairs import FileEntry, PairStore
from b2cryptfs.errors import B2CryptfsError, TransientError
from b2cryptfs.vfs.outboxfiles import DONE, FAILED, QUEUED, UPLOADING, OutboxEntry, discard_files
from b2cryptfs.vfs.outboxstats import OutboxStats
from b2cryptfs.vfs.threads import ABANDON_ON_CANCEL
from b2cryptfs.vfs.tidy import Tidier

log = logging.getLogger("b2cryptfs.vfs.outbox")

_MAX_BACKOFF = 60.0
# Seals closer together than this (seconds) are a burst, which uploads yield to.
BURST_GAP = 0.05
# Workers that take only small entries (content up to SMALL_ENTRY bytes), beside the
# configured ones: a small file's upload is two round trips with next to no transfer, so
# more of them in flight use the link's latency, not its bandwidth or the memory.
SMALL_WORKERS = 8
SMALL_ENTRY = 64 * 1024


class UploadWorkers:
    """The worker half of the outbox; the attributes below are set by Outbox.__init__."""

    directory: str
    pairs: PairStore
    limiter: trio.CapacityLimiter
    workers: int
    retry_base: float
    draining: bool
    stats: OutboxStats
    tidier: Tidier
    _entries: dict[int, OutboxEntry]
    _running: set[OutboxEntry]
    _held: set[str]
    _last_seal: float
    _burst_started: bool
    _wakeup: trio.Event
    _uploaded: deque[tuple[str, FileEntry]]

    def _remove(self, entry: OutboxEntry) -> None:
        raise NotImplementedError

    def _wake(self) -> None:
        raise NotImplementedError

    def _eligible(self, now: float, small: bool = False) -> tuple[OutboxEntry | None, float]:
        """The next entry to upload (``small``: of the small ones only), and when to look
        again if none is ready."""
        busy = {e.path for e in self._running if e.state == UPLOADING and e.seq in self._entries}
        busy |= self.tidier.busy | self._held
        later = float("inf")
        in_burst = self._burst_started and not self.draining
        burst_ends = self._last_seal + BURST_GAP if in_burst else now
        for e in self._entries.values():
            if e.state != QUEUED or e.path in busy:
                continue
            if small and e.content_size > SMALL_ENTRY:
                # Not for this worker; the path's later entries wait behind it all the same.
                busy.add(e.path)
                continue
            if e.not_before <= now and (burst_ends <= now or e.yields_until <= now):
                return e, now
            later = min(later, max(e.not_before, min(burst_ends, e.yields_until)))
            if burst_ends > now and e.yields_until > now:
                # In a burst the entries after this one (sealed later) yield longer: this
                # worker is woken for each seal's burst end, so do not scan them every time.
                break
            # Keep one path's entries in order: never overtake an older one of the same path.
            busy.add(e.path)
        return None, later

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the upload workers until cancelled."""
        self.stats.start()
        async with trio.open_nursery() as nursery:
            for _ in range(self.workers):
                nursery.start_soon(self._worker)
            small_threads = trio.CapacityLimiter(SMALL_WORKERS)
            for _ in range(SMALL_WORKERS if self.workers > 0 else 0):
                nursery.start_soon(self._worker, small_threads)
            nursery.start_soon(self.tidier.run)
            task_status.started()

    async def _worker(self, small_threads: trio.CapacityLimiter | None = None) -> None:
        """One worker; with ``small_threads`` (its own threads), for small entries only."""
        while True:
            entry, when = self._eligible(trio.current_time(), small=small_threads is not None)
            if entry is None:
                wakeup = self._wakeup
                with trio.move_on_at(when):
                    await wakeup.wait()
                continue
            await self._upload(entry, small_threads or self.limiter)

    async def _upload(self, entry: OutboxEntry, limiter: trio.CapacityLimiter) -> None:
        entry.state = UPLOADING
        entry.touched = True
        self._running.add(entry)
        try:
            result = await trio.to_thread.run_sync(
                self._upload_blocking, entry, limiter=limiter, **ABANDON_ON_CANCEL
            )
        except TransientError as exc:
            entry.attempts += 1
            entry.error = exc
            entry.state = QUEUED
            # Exponential backoff with jitter; short pauses while draining at unmount.
            cap = 5.0 if self.draining else _MAX_BACKOFF
            base = self.retry_base * 2.0 ** min(entry.attempts - 1, 6)
            entry.not_before = trio.current_time() + min(cap, base * random.uniform(0.5, 1.0))
            entry.drain_failures += int(self.draining)
            self.stats.failed(entry, exc, len(self))  # logs when uploads start failing
        except B2CryptfsError as exc:
            self._failed(entry, exc, str(exc))
        except Exception as exc:  # noqa: BLE001 - a worker must survive anything
            log.exception("upload of %s failed unexpectedly", entry.path)
            self._failed(entry, exc, f"{type(exc).__name__}: {exc}")
        else:
            entry.result = result
            entry.error = None
            entry.state = DONE
            self.stats.uploaded(entry, len(self))
            self._remove(entry)  # (its files are gone: _upload_blocking)
            self._uploaded.append((entry.path, result))
            entry.done.set()
            log.debug("uploaded %s (%d bytes)", entry.path, entry.plaintext_size)
        finally:
            self._running.discard(entry)
            entry.attempted.set()
            entry.attempted = trio.Event()
            self._wake()

    def _failed(self, entry: OutboxEntry, exc: BaseException, message: str) -> None:
        entry.attempts += 1
        entry.error = exc
        entry.state = FAILED
        self.stats.failed_for_good(entry, message)  # logs it, marks the entry stuck
        entry.done.set()

    def _upload_blocking(self, entry: OutboxEntry) -> FileEntry:
        # No collision stat (a billed list call): the vfs checked its listing at create.
        e, key_object = entry, entry.read_key_object()
        stored = self.pairs.upload_pair(
            e.path,
            key_object,
            e.content_file,
            e.info,
            e.mtime_ms,
            e.meta,
            check=False,
            # Taken at seal time: the store need not read the file to hash it again.
            content_sha1=e.content_sha1,
        )
        # Stored: the entry is done with (here, not in the trio thread: three unlinks).
        discard_files(self.directory, e.seq)
        return stored
