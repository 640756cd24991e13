"""The durable upload queue: sealed pairs waiting in the cache directory to be uploaded.

An entry's files are written by :mod:`b2cryptfs.vfs.outboxfiles`; it exists exactly when its
manifest does, and what a killed daemon left is uploaded by the next mount. Sealing does not
wait for the disk unless ``sync_close``: the committer (vfs/outboxcommit.py) makes entries
durable soon after, and :meth:`Outbox.close` at a clean stop marks them all durable.

Workers upload entries oldest first, key object first, one at a time per path; a newer entry
replaces a queued one. Only a file that may still be written waits the settle delay
(vfs/settle.py); the others yield to a burst of closes (two or more, each within
``BURST_GAP`` of the last), for at most the settle delay: uploads share the CPU and the interpreter with the
writer, and a program writing many small files should not wait for them. Transient failures are retried with backoff; any other failure is logged and the entry stays
on disk for the next mount. Statistics and failure log lines: ``Outbox.stats``.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections import deque
from collections.abc import Callable, Iterator

import trio

from b2cryptfs.bucket.meta import Meta
from b2cryptfs.bucket.pairs import FileEntry, PairStore
from b2cryptfs.cache.outboxcheck import take_clean_mark
from b2cryptfs.vfs.namespace import PathIndex
from b2cryptfs.vfs.outboxcommit import Committer
from b2cryptfs.vfs.outboxcontent import ContentFile, WrittenContent
from b2cryptfs.vfs.outboxfiles import (
    CANCELLED,
    DONE,
    FAILED,
    QUEUED,
    UPLOADING,
    OutboxEntry,
    discard_files,
    mark_clean,
    rewrite_manifest,
    scan_dir,
    write_entry,
)
from b2cryptfs.vfs.outboxspares import Spares
from b2cryptfs.vfs.outboxstats import OutboxStats
from b2cryptfs.vfs.outboxworkers import BURST_GAP, UploadWorkers
from b2cryptfs.vfs.settle import SettlePolicy
from b2cryptfs.vfs.tidy import Tidier

__all__ = ["ContentFile", "Outbox", "OutboxEntry", "WrittenContent"]

log = logging.getLogger(__name__)

# While draining at unmount, give up on an entry (it stays on disk) after this many failures.
_DRAIN_ATTEMPTS = 3


class Outbox(UploadWorkers):
    """The queue and its upload workers. Call :meth:`scan` once, then :meth:`run`."""

    def __init__(
        self,
        directory: str,
        pairs: PairStore,
        limiter: trio.CapacityLimiter,
        *,
        workers: int = 4,
        settle: float = 2.0,
        retry_base: float = 1.0,
        sync_close: bool = False,
        spares_dir: str | None = None,
    ) -> None:
        self.directory = directory
        # Seal durably (three syncs per entry) instead of leaving it to the committer.
        self.sync_close = sync_close
        self.committer = Committer(directory)
        # Files for sealing made ahead of time (None: created on the spot).
        self.spares = Spares(spares_dir) if spares_dir is not None else None
        self.pairs = pairs
        self.limiter = limiter
        self.workers = max(1, workers)
        self.settle = settle
        self.retry_base = retry_base
        # Finished uploads (path, stored pair) for the listing cache to take: the outbox
        # knows nothing above it; whoever shows listings drains this before each look.
        self._uploaded: deque[tuple[str, FileEntry]] = deque()
        self._entries: dict[int, OutboxEntry] = {}
        self._by_path: dict[str, dict[int, OutboxEntry]] = {}
        # Where pending paths are, for listings (every entry in _entries is pending).
        self.index = PathIndex()
        self._next_seq = 1
        self._wakeup = trio.Event()
        self.draining = False  # drain() has begun (read-only for others)
        self.stats = OutboxStats()  # read-only for everyone else
        self._settle = SettlePolicy(settle)  # which entries wait the delay (register)
        os.makedirs(directory, mode=0o700, exist_ok=True)
        os.chmod(directory, 0o700)
        self.tidier = Tidier(directory, pairs, limiter, self.entries_for)  # orphan keys
        self._held: set[str] = set()  # paths whose uploads must not start now (hold)
        self._last_seal = float("-inf")  # trio time of the last register()
        self._burst_started = False  # that seal came within BURST_GAP of the one before
        self._running: set[OutboxEntry] = set()  # in _upload (few: one per worker)

    def put(
        self,
        path: str,
        mtime_ms: int,
        write_content: Callable[[ContentFile], WrittenContent],
        *,
        durable: bool = False,
    ) -> Callable[[], OutboxEntry]:
        """The one way into the outbox: a blocking job (for a worker thread) that has
        ``write_content`` write the sealed content to the (write-only) file it is given,
        then writes the entry's manifest (on the disk when the job returns if ``durable``
        or ``sync_close``, else soon after: the committer); on any failure nothing of it is
        left. Register the entry it returns with :meth:`register`. The job may be run again
        after a failure (disk full)."""
        seq, content_path = self._allocate()
        durable, spares = durable or self.sync_close, self.spares

        def job() -> OutboxEntry:
            try:
                with ContentFile(content_path, durable=durable, spares=spares) as out:
                    written = write_content(out)
                entry = write_entry(
                    self.directory,
                    seq,
                    path,
                    mtime_ms,
                    written,
                    content=out,
                    durable=durable,
                    spares=spares,
                )
            except BaseException:
                discard_files(self.directory, seq)
                raise
            if not durable:
                self.committer.add(entry.content_file, entry.manifest_file)
            return entry

        return job

    def reserve_seq(self, above: int = 0) -> int:
        """A fresh sequence number (over ``above``) for a record kept beside the entries
        (a rename intent, vfs/moves.py): it orders with them."""
        self._next_seq = max(self._next_seq, above + 1)
        return self._allocate()[0]

    def _allocate(self) -> tuple[int, str]:
        """A fresh sequence number and the content file path to write the sealed content to."""
        seq = self._next_seq
        self._next_seq += 1
        return seq, os.path.join(self.directory, f"{seq:012d}.content")

    def scan(self) -> list[OutboxEntry]:
        """Load entries left by an earlier run (blocking; call before :meth:`run`). Unless
        that run stopped cleanly (:meth:`close`), each entry's content is checked first and
        torn ones are dropped."""
        clean = take_clean_mark(self.directory)
        found, next_seq = scan_dir(self.directory, verify=not clean)
        self._next_seq = max(self._next_seq, next_seq)
        for entry in found:
            self._add(entry)
        if found:
            log.info("outbox: %d upload(s) left by an earlier run will be retried", len(found))
        return found

    def _add(self, entry: OutboxEntry, *, wake: bool = True) -> None:
        # A newer version of a path replaces an older one that has not started uploading.
        for old in self.entries_for(entry.path):
            if old.state in (QUEUED, FAILED) and old.seq < entry.seq:
                self.discard(old)
        self._insert(entry)
        if wake:
            self._wake()

    def register(self, entry: OutboxEntry, *, settle: bool = True) -> None:
        """Queue an entry made durable by a :meth:`put` job (settling: vfs/settle.py)."""
        now = trio.current_time()
        busy = self._settle.sealed(entry.path, now)
        entry.not_before = now + self.settle if settle and busy else 0.0
        entry.yields_until = now + self.settle if settle else 0.0
        # Within a burst the workers look again when it may have ended (_eligible) anyway:
        # not woken by every seal, each to scan the whole queue.
        in_burst = now - self._last_seal < BURST_GAP and entry.yields_until > now
        # A burst starts with the second seal within BURST_GAP: a lone close (dd, cp of
        # one file) is uploaded at once, not BURST_GAP later.
        self._burst_started = now - self._last_seal < BURST_GAP
        self._last_seal = now
        self._add(entry, wake=not in_burst)

    def writing(self, path: str, open_for_write: bool) -> None:
        """Whether ``path`` is still open for writing; at the last close it need not wait
        (an empty file still does: touch; chmod; rm must leave nothing in the bucket)."""
        if not self._settle.writing(path, open_for_write, trio.current_time()):
            return
        for entry in self.entries_for(path):
            if entry.state == QUEUED and entry.not_before > 0.0 and entry.plaintext_size:
                entry.not_before = 0.0
                self._wake()

    def _insert(self, entry: OutboxEntry) -> None:
        late = bool(self._entries) and entry.seq < next(reversed(self._entries))
        self._entries[entry.seq] = entry
        if late:
            # Sealed out of order (sealing runs in threads): keep the dict in sequence order,
            # which is the upload order, so that _eligible need not sort on every wake-up.
            self._entries = dict(sorted(self._entries.items()))
        self._by_path.setdefault(entry.path, {})[entry.seq] = entry
        self.index.add(entry.path)

    def _remove(self, entry: OutboxEntry) -> None:
        if self._entries.pop(entry.seq, None) is None:
            return
        same = self._by_path.get(entry.path, {})
        same.pop(entry.seq, None)
        if not same:
            self._by_path.pop(entry.path, None)
        self.index.remove(entry.path)

    def discard(self, entry: OutboxEntry) -> None:
        """Forget an entry for good (cancelled, or its name removed while it was sealed)."""
        entry.state = CANCELLED
        self.stats.forget(entry)
        self.tidier.dropped(entry)
        self._remove(entry)
        discard_files(self.directory, entry.seq)
        entry.done.set()
        entry.attempted.set()

    @contextlib.contextmanager
    def hold(self, path: str) -> Iterator[None]:
        """No upload of ``path`` starts inside (one already running goes on: settle first),
        so that the store can be changed under it across awaits (unlink)."""
        self._held.add(path)
        try:
            yield
        finally:
            self._held.discard(path)
            self._wake()

    def _wake(self) -> None:
        self._wakeup.set()
        self._wakeup = trio.Event()

    def entries_for(self, path: str) -> list[OutboxEntry]:
        return [e for e in self._by_path.get(path, {}).values() if e.pending]

    def latest(self, path: str) -> OutboxEntry | None:
        entries = self.entries_for(path)
        return max(entries, key=lambda e: e.seq) if entries else None

    def pending(self) -> Iterator[OutboxEntry]:
        """Pending entries, oldest first."""
        for seq in sorted(self._entries):
            entry = self._entries.get(seq)
            if entry is not None and entry.pending:
                yield entry

    def __len__(self) -> int:
        return sum(1 for e in self._entries.values() if e.pending)

    def retarget(self, entry: OutboxEntry, new_path: str, ctime_ns: int | None = None) -> None:
        """Upload a queued entry under another path (rename before upload); ``ctime_ns``,
        the rename's change time, goes into the metadata it is uploaded with."""
        assert entry.state in (QUEUED, FAILED)
        old = entry.path
        self.tidier.dropped(entry)  # its key object may be up under the old path
        if ctime_ns is not None and entry.meta is not None:
            self._persist(entry, path=new_path, meta=entry.meta.updated(ctime_ns=ctime_ns))
        else:
            self._persist(entry, path=new_path)
        entry.path = old  # the indexes are keyed by the old path until moved
        self._remove(entry)
        entry.path = new_path
        self._insert(entry)
        for other in self.entries_for(new_path):
            if other is not entry and other.state in (QUEUED, FAILED):
                self.discard(other)
        if entry.state == FAILED:
            entry.state = QUEUED
        self._wake()

    def set_meta(self, entry: OutboxEntry, meta: Meta) -> None:
        """New metadata for a queued entry (uploaded with it; its mtime wins when set). It
        waits the settle delay again: touch, chmod, rm and cp -p come in quick runs."""
        assert entry.state in (QUEUED, FAILED)
        mtime_ms = entry.mtime_ms if meta.mtime_ns is None else meta.mtime_ns // 1_000_000
        self._persist(entry, meta=meta, mtime_ms=mtime_ms)
        entry.not_before = max(entry.not_before, trio.current_time() + self.settle)

    def _persist(self, entry: OutboxEntry, **changes: object) -> None:
        """Change an entry and its manifest together: if the manifest cannot be written, the
        entry is left as it was."""
        before = {name: getattr(entry, name) for name in changes}
        for name, value in changes.items():
            setattr(entry, name, value)
        try:
            rewrite_manifest(entry)
        except OSError:
            for name, value in before.items():
                setattr(entry, name, value)
            raise

    async def wait(
        self, entry: OutboxEntry, *, max_attempts: int | None = None
    ) -> FileEntry | None:
        """Upload ``entry`` now and wait for the result (None if it was superseded). Raises
        the failure; with ``max_attempts``, also gives up (raising the last transient error)
        after that many failed attempts, leaving the entry queued."""
        if entry.yields_until:
            # It yields no more, and neither does anything else: the burst is over (the
            # workers skip the rest of the queue during one, _eligible).
            entry.yields_until = 0.0
            self._last_seal = float("-inf")
            self._wake()
        if entry.state == QUEUED and entry.not_before > trio.current_time():
            entry.not_before = 0.0
            self._wake()
        start = entry.attempts
        while True:
            if entry.state == DONE:
                return entry.result
            if entry.state == CANCELLED:
                return None
            if entry.state == FAILED:
                assert entry.error is not None
                raise entry.error
            if max_attempts is not None and entry.attempts - start >= max_attempts:
                assert entry.error is not None
                raise entry.error
            await entry.attempted.wait()

    def take_uploaded(self) -> list[tuple[str, FileEntry]]:
        """Uploads finished since the last call, oldest first: (path, stored pair)."""
        done = list(self._uploaded)
        self._uploaded.clear()
        return done

    def make_durable(self, entry: OutboxEntry) -> None:
        """Blocking: the entry's files on the disk now (before a record that refers to it:
        vfs/moves.py), not when the committer gets to them."""
        self.committer.sync([entry.content_file, entry.manifest_file])

    def close(self) -> None:
        """Blocking, at a clean stop (nothing is sealed after it): make every entry left
        durable and say so, so that the next scan need not check them."""
        if self.spares is not None:
            self.spares.close()
        self.committer.close()
        mark_clean(self.directory)

    async def drain(self) -> int:
        """Upload everything queued; return how many entries are left on disk."""
        self.draining = True
        for entry in self._entries.values():
            if entry.state == QUEUED:
                entry.not_before = min(entry.not_before, trio.current_time())
        self._wake()
        while True:
            active = [
                e
                for e in self._entries.values()
                if e.state == UPLOADING
                or (e.state == QUEUED and e.drain_failures < _DRAIN_ATTEMPTS)
            ]
            if not active:
                break
            waits = [e for e in active if e.state == UPLOADING] or active
            await waits[0].attempted.wait()
        if not len(self):  # (with uploads left the store is likely out of reach: next mount)
            await self.tidier.tidy_due(force=True)
        left = len(self)
        if left:
            log.warning(
                "%d upload(s) could not be completed; they stay in %s for the next mount",
                left,
                self.directory,
            )
        return left
