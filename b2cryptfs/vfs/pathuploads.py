"""Waiting for and cancelling the uploads of one path (unlink, rename, metadata changes)."""

from __future__ import annotations

from b2cryptfs.vfs.outbox import Outbox
from b2cryptfs.vfs.outboxfiles import UPLOADING, OutboxEntry


async def settle_path(outbox: Outbox, path: str) -> OutboxEntry | None:
    """Wait until no entry of ``path`` is uploading; return the queued one, if any, for the
    caller to edit (with no await in between) or cancel."""
    while True:
        entries = outbox.entries_for(path)
        uploading = [e for e in entries if e.state == UPLOADING]
        if not uploading:
            return max(entries, key=lambda e: e.seq) if entries else None
        # The attempt, not success: an upload failing (store unreachable) is queued again
        # after it, and the caller's edit or cancel must not wait for the store to return.
        await uploading[0].attempted.wait()


async def cancel_path(outbox: Outbox, path: str) -> None:
    """Forget every pending upload of ``path`` (waits for one in progress)."""
    while True:
        entry = await settle_path(outbox, path)
        if entry is None:
            return
        outbox.discard(entry)
