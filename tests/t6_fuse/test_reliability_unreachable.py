"""A store that cannot be reached.

Reads fail with EIO after ``io_timeout`` instead of waiting out the store's own retries
(with b2sdk's budget, many minutes: a FUSE request cannot be interrupted, so the reading
program would hang in the kernel all that time). Directories already listed stay listed,
and writable, while listing fails; uploads wait in the outbox until the store is back."""

from __future__ import annotations

import errno
import os
import random
import subprocess
from pathlib import Path

import pytest
import trio
from mountutil import B2CRYPTFS, Keys, StoreSpec, mounted, rsa_keys  # noqa: F401
from reliability_util import b2_spec, fuse_test, log_lines, outbox_entries, wait_until  # noqa: F401
from vfs_testutil import (
    ino_of,
    listdir,
    open_vfs,
    parent_and_leaf,
    read_file,
    run,
    write_file,
    x25519_identity,
)

from b2cryptfs.bucket.pairs import PairStore
from b2cryptfs.errors import TransientError
from b2cryptfs.store.dirstore import DirStore
from b2cryptfs.vfs.fserror import OpError
from b2cryptfs.vfs.namespace import ROOT_INO

CHUNK = 64 * 1024
# Far below the store's retry budget with production settings (20 tries, up to 64 s apart).
GUARD = 120


def test_vfs_reads_and_opens_give_up(b2_bucket, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ident = x25519_identity()
    server = b2_bucket.server
    # The retry budget a mount really has (b2sdk's defaults), not the tests' short one.
    store = b2_bucket.store(max_tries=None, backoff=1.0, retry_time=120.0)
    data = random.Random(8).randbytes(5 * CHUNK)

    async def main() -> None:
        async with open_vfs(tmp_path / "w", store=store, identity=ident) as vfs:
            await write_file(vfs, "f.bin", data)
            await write_file(vfs, "g.bin", b"g" * 1000)
        async with open_vfs(tmp_path / "r", store=store, identity=ident, io_timeout=2.0) as vfs:
            fh, _ = await vfs.open(await ino_of(vfs, "f.bin"), os.O_RDONLY)
            assert await vfs.read(fh, 0, 4096) == data[:4096]
            g = await ino_of(vfs, "g.bin")
            server.inject("download", "503", 1_000_000)
            try:
                with trio.fail_after(GUARD):
                    # A read that needs a download, and an open that does.
                    with pytest.raises(OpError) as info:
                        await vfs.read(fh, 3 * CHUNK, 4096)
                    assert info.value.errno == errno.EIO
                    assert "did not answer" in str(info.value)
                    with pytest.raises(OpError) as info:
                        await vfs.open(g, os.O_RDONLY)
                    assert info.value.errno == errno.EIO
            finally:
                server.clear_faults()
            # The store answers again: so does the mount.
            assert await vfs.read(fh, 3 * CHUNK, 4096) == data[3 * CHUNK : 3 * CHUNK + 4096]
            await vfs.release(fh)

    run(main)


class UnreachableStore(DirStore):
    """A real DirStore whose listings and uploads fail as an outage does, on demand."""

    down = False

    def _outage(self) -> None:
        if self.down:
            raise TransientError("B2 unreachable or failing after retries (test outage)")

    def list_dir(self, prefix):  # type: ignore[no-untyped-def]
        self._outage()
        return super().list_dir(prefix)

    def upload_bytes(self, name, data, info):  # type: ignore[no-untyped-def]
        self._outage()
        return super().upload_bytes(name, data, info)

    def upload_file(self, name, path, info, **kw):  # type: ignore[no-untyped-def]
        self._outage()
        return super().upload_file(name, path, info, **kw)


def test_listed_directories_stay_usable_in_an_outage(tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    store = UnreachableStore(str(tmp_path / "store"), create=True)
    ident = x25519_identity()

    # A directory this mount will not have listed when the outage starts.
    (tmp_path / "g.txt").write_bytes(b"in f")
    PairStore(store, recipients=[ident.recipient()]).put_file("f/g.txt", str(tmp_path / "g.txt"))

    async def main() -> None:
        # No listing is trusted for long: every look at a directory asks the store.
        async with open_vfs(tmp_path, store=store, identity=ident, dir_cache_time=0.0) as vfs:
            await write_file(vfs, "a.txt", b"before")
            for name in ("d", "e"):
                await vfs.mkdir(ROOT_INO, name, 0o755)
                await write_file(vfs, f"{name}/{name}.txt", b"in " + name.encode())
            for entry in list(vfs.outbox.pending()):
                await vfs.outbox.wait(entry)
            assert await listdir(vfs) == ["d", "e", "f", "a.txt"]
            assert await listdir(vfs, "d") == ["d.txt"]
            store.down = True

            assert await listdir(vfs) == ["d", "e", "f", "a.txt"]  # as last listed
            with pytest.raises(TransientError):
                await listdir(vfs, "f")  # never listed by this mount
            await write_file(vfs, "d/new.txt", b"during the outage")
            assert await listdir(vfs, "d") == ["d.txt", "new.txt"]
            assert await read_file(vfs, "d/new.txt") == b"during the outage"
            # Deciding that a directory is empty needs a real listing.
            parent, leaf = await parent_and_leaf(vfs, "d")
            with pytest.raises(TransientError):
                await vfs.rmdir(parent, leaf)
            assert len(vfs.outbox) == 1

            store.down = False
            entry = vfs.outbox.latest("d/new.txt")
            assert entry is not None
            await vfs.outbox.wait(entry)
            assert await listdir(vfs, "f") == ["g.txt"]

    run(main)
    assert (tmp_path / "store" / "d" / "new.txt.enc").exists()
    assert "showing the one from" in caplog.text


def cli_has_io_timeout() -> bool:
    res = subprocess.run([*B2CRYPTFS, "mount", "--help"], capture_output=True, text=True)
    return "--io-timeout" in res.stdout


@fuse_test
def test_mount_read_gives_up(
    b2_spec: StoreSpec,  # noqa: F811
    rsa_keys: Keys,  # noqa: F811
    tmp_path: Path,
) -> None:
    if not cli_has_io_timeout():
        pytest.skip("the mount command has no --io-timeout option yet (REQUESTS.md)")
    server, mnt = b2_spec.server, tmp_path / "mnt"
    with mounted(b2_spec, mnt, tmp_path / "cache", rsa_keys.args()):
        (mnt / "f.txt").write_bytes(b"f" * 1000)
        wait_until("the upload", lambda: not outbox_entries(tmp_path / "cache"))
    with mounted(
        b2_spec, mnt, tmp_path / "cache-2", rsa_keys.args(), extra_args=["--io-timeout", "3"]
    ) as m:
        assert os.listdir(mnt) == ["f.txt"]
        server.inject("download", "503", 1_000_000)
        try:
            res = subprocess.run(["cat", str(mnt / "f.txt")], capture_output=True, timeout=GUARD)
        finally:
            server.clear_faults()
        assert res.returncode != 0 and b"Input/output error" in res.stderr
        assert (mnt / "f.txt").read_bytes() == b"f" * 1000
    # The mount's store gives up a little before the io-timeout, with its own line; the
    # vfs bound (test_vfs_reads_and_opens_give_up) is the backstop.
    assert log_lines(m.log(), "ERROR", "f.txt", "did not answer") or log_lines(
        m.log(), "ERROR", "f.txt", "B2 unreachable or failing"
    ), m.log()
