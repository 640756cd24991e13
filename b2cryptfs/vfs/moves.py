"""Rename intents: a file rename is written down before it changes anything, so that a
kill -9 part way through is finished by the next mount.

``rename(old, new)`` onto a file makes several changes that cannot happen at once: the
pending uploads of ``new`` are superseded (discarded), then either the queued entry of
``old`` is retargeted to ``new`` or, for a stored ``old``, both objects are copied to the new
names and the old ones removed. A directory store keeps no older versions to fall back to,
so a crash in between would lose ``new`` (its last close dropped from the outbox), bring back
an older version of it, or leave a key object that does not fit its content.

So the intent goes first: ``N.move.json`` in the outbox directory, N a sequence number of
the outbox (every entry of ``new`` it supersedes is older), made durable before anything
else and removed (durably) once all is done. :meth:`MoveJournal.recover` replays what a
crash left, idempotently, after the outbox scan and before any upload starts.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass

import trio

from b2cryptfs.bucket.pairs import FileEntry
from b2cryptfs.errors import B2CryptfsError, NotFound
from b2cryptfs.vfs.context import VfsContext
from b2cryptfs.vfs.fserror import OpError
from b2cryptfs.vfs.outbox import Outbox
from b2cryptfs.vfs.outboxfiles import FAILED, QUEUED, UPLOADING, OutboxEntry

log = logging.getLogger("b2cryptfs.vfs.outbox")

SUFFIX = ".move.json"


@dataclass(frozen=True)
class Move:
    seq: int
    old: str
    new: str
    # The queued entry of ``old`` that becomes ``new`` (None: ``old`` is a stored pair).
    entry: int | None


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse it; the rename or unlink is done
    finally:
        os.close(fd)


class MoveJournal:
    """Rename intents of one outbox directory."""

    def __init__(self, ctx: VfsContext, outbox: Outbox) -> None:
        self.ctx = ctx
        self.outbox = outbox
        self.directory = outbox.directory

    def _file(self, seq: int) -> str:
        return os.path.join(self.directory, f"{seq:012d}{SUFFIX}")

    # --- the records -------------------------------------------------------------------

    def _record(self, old: str, new: str, entry: OutboxEntry | None) -> Move:
        """Blocking but short (a few fsyncs, in the trio thread on purpose: no upload can
        start between the checks before it and the changes after it)."""
        move = Move(self.outbox.reserve_seq(), old, new, None if entry is None else entry.seq)
        if entry is not None:
            # The entry the intent moves must outlive a power loss as the intent does (a
            # close need not wait for the disk; ext4 likewise flushes a file renamed over
            # another at the rename).
            self.outbox.make_durable(entry)
        data = json.dumps({"old": old, "new": new, "entry": move.entry}).encode()
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self._file(move.seq))
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        _fsync_dir(self.directory)
        return move

    def _drop(self, move: Move) -> None:
        # Durably: a stale intent replayed after later changes would undo them.
        try:
            os.unlink(self._file(move.seq))
        except FileNotFoundError:
            return
        _fsync_dir(self.directory)

    def load(self) -> list[Move]:
        """Intents left by an earlier run, oldest first (blocking; after ``Outbox.scan``)."""
        moves: list[Move] = []
        for name in sorted(os.listdir(self.directory)):
            stem = name[: -len(SUFFIX)]
            if not name.endswith(SUFFIX) or not stem.isdigit():
                continue
            try:
                with open(os.path.join(self.directory, name), "rb") as f:
                    m = json.load(f)
                entry = m.get("entry")
                moves.append(
                    Move(
                        int(stem),
                        str(m["old"]),
                        str(m["new"]),
                        None if entry is None else int(entry),
                    )
                )
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.error("outbox: rename intent %s is unusable (%s); leaving it there", name, exc)
        if moves:
            # New entries must come after them (they order the entries they supersede).
            self.outbox.reserve_seq(above=moves[-1].seq)
        return moves

    # --- at run time -------------------------------------------------------------------

    def _supersede(self, move: Move) -> None:
        """Discard the entries of ``new`` older than the intent (none is uploading)."""
        for e in self.outbox.entries_for(move.new):
            if e.seq < move.seq and e.seq != move.entry:
                self.outbox.discard(e)

    async def quiet(self, old: str, new: str) -> OutboxEntry | None:
        """Wait until no upload of ``old`` or ``new`` is running; old's queued entry."""
        while True:
            running = [
                e
                for e in self.outbox.entries_for(old) + self.outbox.entries_for(new)
                if e.state == UPLOADING
            ]
            if not running:
                return self.outbox.latest(old)
            await running[0].attempted.wait()

    def move_pending(self, entry: OutboxEntry, new: str) -> None:
        """``entry`` (queued, of a file with no stored version) becomes ``new``'s upload.
        Call right after :meth:`quiet`, with no await in between."""
        assert entry.state in (QUEUED, FAILED)
        move = self._record(entry.path, new, entry)
        self._supersede(move)
        try:
            # ext4 sets the change time on rename; a queued upload carries it.
            self.outbox.retarget(entry, new, time.time_ns())
        except OSError as exc:
            # The intent stays: the next mount finishes the rename.
            log.error("rename %s -> %s: outbox: %s", move.old, new, exc)
            raise OpError(exc.errno or errno.EIO, f"outbox: {exc}") from None
        self._drop(move)

    async def move_stored(self, old: str, new: str) -> FileEntry:
        """Rename the stored pair ``old`` onto ``new`` (call right after :meth:`quiet`,
        when ``old`` has no queued entry)."""
        move = self._record(old, new, None)
        self._supersede(move)
        try:
            # The renamed file's change time goes with the copy (ext4 sets it on rename).
            moved = await self.ctx.store(self.ctx.pairs.rename, old, new, time.time_ns())
        except NotFound:
            self._drop(move)
            raise
        except B2CryptfsError as exc:
            # Part of it may be done: never undo it, finish it (the next mount, or fsck).
            log.error("rename %s -> %s failed (%s); the next mount finishes it", old, new, exc)
            raise
        self._drop(move)
        return moved

    # --- at the next mount -------------------------------------------------------------

    async def recover(self, moves: list[Move]) -> None:
        """Finish interrupted renames, oldest first, before any upload starts; each is
        dropped once done. Raises on a store failure (the rest stay for a retry)."""
        for move in moves:
            self._supersede(move)
            if move.entry is not None:
                entry = next((e for e in self.outbox.pending() if e.seq == move.entry), None)
                if entry is not None and entry.path == move.old:
                    self.outbox.retarget(entry, move.new)
            else:
                try:
                    await self.ctx.store(self.ctx.pairs.finish_rename, move.old, move.new)
                except NotFound as exc:
                    log.error(
                        "outbox: the rename of %s to %s cannot be finished: %s",
                        move.old,
                        move.new,
                        exc,
                    )
            log.info("outbox: finished the interrupted rename of %s to %s", move.old, move.new)
            self._drop(move)

    async def recover_forever(self, retry: float = 5.0) -> None:
        """:meth:`recover` until it succeeds (the store may be unreachable at mount)."""
        delay = retry
        while True:
            await trio.sleep(delay)
            try:
                await self.recover(await trio.to_thread.run_sync(self.load))
                return
            except B2CryptfsError as exc:
                log.warning("outbox: interrupted renames not finished yet (%s); retrying", exc)
            delay = min(60.0, delay * 2)
