"""Uploads yield to a burst of closes, not to a lone close: a file closed after a quiet
spell goes up at once (dd, cp of one file), while files closed in quick succession (tar x,
a build) wait until the closes pause. On a clock that stands still, so nothing here
depends on how fast the machine is."""

from __future__ import annotations

import threading
from pathlib import Path

import trio
import trio.testing
from vfs_testutil import open_vfs, write_file, x25519_identity

from b2cryptfs.store.dirstore import DirStore
from b2cryptfs.vfs.outboxworkers import BURST_GAP


class CountingStore(DirStore):
    def __init__(self, root: str) -> None:
        super().__init__(root, create=True)
        self.lock = threading.Lock()
        self.uploaded: list[str] = []

    def upload_file(self, name, path, info, **kw):  # type: ignore[no-untyped-def]
        got = super().upload_file(name, path, info, **kw)
        with self.lock:
            self.uploaded.append(name)
        return got


async def _uploads_settle(store: CountingStore, want: int, tries: int = 500) -> list[str]:
    """The content uploads once ``want`` are done, or after ``tries`` looks 10 ms apart
    (real time passes in the threads; the mount's clock stands still)."""
    for _ in range(tries):
        with store.lock:
            if len(store.uploaded) >= want:
                return list(store.uploaded)
        await trio.to_thread.run_sync(threading.Event().wait, 0.01)
    with store.lock:
        return list(store.uploaded)


def test_a_lone_close_uploads_at_once_and_a_burst_waits(tmp_path: Path) -> None:
    store = CountingStore(str(tmp_path / "store"))
    clock = trio.testing.MockClock(rate=0)

    async def main() -> None:
        async with open_vfs(tmp_path, store=store, identity=x25519_identity(), settle=2.0) as vfs:
            await write_file(vfs, "lone", b"one file\n")
            # The clock has not moved: not even BURST_GAP has passed since the close.
            assert await _uploads_settle(store, 1) == ["lone.enc"]
            clock.jump(2 * BURST_GAP)
            for name in ("b1", "b2", "b3"):
                await write_file(vfs, name, name.encode())
            # A burst (closes within BURST_GAP of each other): its uploads wait for a pause.
            # The first of it went out before the second close made it a burst.
            held = await _uploads_settle(store, 3, tries=50)
            assert held[:2] == ["lone.enc", "b1.enc"] and len(held) == 2, held
            clock.jump(2 * BURST_GAP)
            done = await _uploads_settle(store, 4)
            assert sorted(done) == ["b1.enc", "b2.enc", "b3.enc", "lone.enc"]
            await vfs.outbox.drain()

    trio.run(main, clock=clock)
