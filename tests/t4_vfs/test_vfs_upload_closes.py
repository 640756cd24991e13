"""While files are still being closed (sealed), at most one upload is in flight: the upload
threads share the one interpreter with the closes (vfs/outboxworkers.py, CLOSES_QUIET)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import trio
from vfs_testutil import open_vfs, read_file, run, write_file, x25519_identity

from b2cryptfs.store.dirstore import DirStore
from b2cryptfs.vfs import outboxworkers


class GatedStore(DirStore):
    """A DirStore whose uploads wait for ``release``; counts the uploads in flight."""

    def __init__(self, root: str) -> None:
        super().__init__(root, create=True)
        self.release = threading.Event()
        self.started = threading.Event()
        self._lock = threading.Lock()
        self.in_flight = 0
        self.most = 0

    def _gate(self) -> None:
        with self._lock:
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
        self.started.set()
        assert self.release.wait(30), "the test never released the uploads"

    def _done(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def upload_bytes(self, name, data, info):  # type: ignore[no-untyped-def]
        self._gate()
        try:
            return super().upload_bytes(name, data, info)
        finally:
            self._done()


def test_one_upload_at_a_time_while_files_are_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # However slow the machine, the closes below count as one run of closes.
    monkeypatch.setattr(outboxworkers, "CLOSES_QUIET", 60.0)
    store = GatedStore(str(tmp_path / "store"))
    ident = x25519_identity()
    names = [f"f{i}" for i in range(8)]

    async def main() -> None:
        # settle=0: no entry waits, so without the rule every worker would take one.
        async with open_vfs(tmp_path, store=store, identity=ident) as vfs:
            await write_file(vfs, names[0], b"0")
            await trio.to_thread.run_sync(store.started.wait, 30)
            for i, name in enumerate(names[1:], 1):
                await write_file(vfs, name, str(i).encode())
            await trio.sleep(0.2)  # (room for a wrongly started upload to show)
            assert (store.in_flight, store.most) == (1, 1)
            store.release.set()
            await vfs.outbox.drain()  # draining: all workers again
            for i, name in enumerate(names):
                assert await read_file(vfs, name) == str(i).encode()

    run(main)
