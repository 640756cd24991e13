"""The window in which an upload has removed its outbox files (in the upload's thread) but the
queue has not heard the outcome yet: the file's view still names the pending entry, whose files
are gone. Found by the heavy crash loop: an append in that window got EIO ("the file's content
vanished"). Opening the file there must wait for the upload and use the stored version."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import pytest
import trio
from vfs_testutil import ino_of, open_vfs, read_file, run, write_file, x25519_identity

from b2cryptfs.errors import TransientError
from b2cryptfs.store.dirstore import DirStore
from b2cryptfs.vfs.metadata import Caller
from b2cryptfs.vfs.namespace import ROOT_INO
from b2cryptfs.vfs.outboxfiles import UPLOADING, discard_files

ROOT = Caller(0, 0)


class HeldStore(DirStore):
    """A DirStore whose content uploads wait until ``release`` is set (a slow network)."""

    def __init__(self, root: str) -> None:
        super().__init__(root, create=True)
        self.started = threading.Event()
        self.release = threading.Event()

    def upload_file(self, name, path, info, **kw):  # type: ignore[no-untyped-def]
        # Read the content before waiting, as a network upload streams it from its start.
        copy = f"{path}.held"
        shutil.copyfile(path, copy)
        try:
            self.started.set()
            assert self.release.wait(30), "the test never released the upload"
            return super().upload_file(name, copy, info, **kw)
        finally:
            os.unlink(copy)


def test_append_in_the_window_after_the_upload_removed_its_files(tmp_path: Path) -> None:
    ident = x25519_identity()
    store = HeldStore(str(tmp_path / "store"))
    old, extra = os.urandom(5000), os.urandom(3000)

    async def main() -> None:
        async with open_vfs(tmp_path, store=store, identity=ident) as vfs:
            await write_file(vfs, "a", old)
            await trio.to_thread.run_sync(store.started.wait, 30)
            (entry,) = [e for e in vfs.outbox.pending() if e.path == "a"]
            assert entry.state == UPLOADING
            # What the upload's thread does once the pair is stored, before the queue knows
            # (the held upload has its own copy of the content).
            discard_files(entry.directory, entry.seq)

            async def release_soon() -> None:
                await trio.sleep(0.2)
                store.release.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(release_soon)
                fh, _ = await vfs.open(await ino_of(vfs, "a"), os.O_WRONLY | os.O_APPEND)
                await vfs.write(fh, len(old), extra)
                await vfs.flush(fh)
                await vfs.release(fh)
            assert await read_file(vfs, "a") == old + extra

    run(main)


class OfflineStore(DirStore):
    """A DirStore that is unreachable: each content upload fails, the first one only once
    the test lets it (so a change can come while it is in flight)."""

    def __init__(self, root: str) -> None:
        super().__init__(root, create=True)
        self.started = threading.Event()
        self.release = threading.Event()

    def upload_file(self, name, path, info, **kw):  # type: ignore[no-untyped-def]
        self.started.set()
        assert self.release.wait(30), "the test never released the upload"
        raise TransientError("store unreachable (test)")


@pytest.mark.parametrize("change", ["unlink", "chmod", "utime"])
def test_a_change_during_a_failing_upload_does_not_wait_for_the_store(
    tmp_path: Path, change: str
) -> None:
    """Offline, an upload attempt fails and the entry is queued again: an unlink, chmod or
    utime that came meanwhile waits for that attempt, not for the store to come back."""
    store = OfflineStore(str(tmp_path / "store"))

    async def main() -> None:
        async with open_vfs(tmp_path, store=store, identity=x25519_identity(), drain=False) as vfs:
            await write_file(vfs, "a", b"offline\n")
            await trio.to_thread.run_sync(store.started.wait, 30)
            ino = await ino_of(vfs, "a")

            async def release_soon() -> None:
                await trio.sleep(0.1)
                store.release.set()

            with trio.fail_after(20):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(release_soon)
                    if change == "unlink":
                        await vfs.unlink(ROOT_INO, "a")
                    elif change == "chmod":
                        await vfs.setattr(ino, mode=0o600, caller=ROOT)
                    else:
                        await vfs.setattr(ino, mtime_ns=1_400_000_000_000_000_000, caller=ROOT)
            if change == "unlink":
                assert vfs.outbox.latest("a") is None
            else:
                entry = vfs.outbox.latest("a")
                assert entry is not None and entry.meta is not None
                if change == "chmod":
                    assert entry.meta.mode & 0o777 == 0o600
                else:
                    assert entry.meta.mtime_ns == 1_400_000_000_000_000_000

    run(main)
