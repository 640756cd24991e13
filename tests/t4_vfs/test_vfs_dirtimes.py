"""Implicit directory mtimes (vfs/dirtimes.py): shown at once, stored once the directory is
quiet, one directory-object write however many names changed; kept across a remount, a
directory rename and fsyncdir; nothing left behind by rmdir."""

from __future__ import annotations

import os
from pathlib import Path

import trio
from vfs_testutil import ino_of, open_vfs, run, x25519_identity

from b2cryptfs.bucket.layout import ROOT_META_OBJECT
from b2cryptfs.bucket.meta import decode_meta
from b2cryptfs.store.dirstore import DirStore
from b2cryptfs.vfs.core import Vfs
from b2cryptfs.vfs.namespace import ROOT_INO


async def touch(vfs: Vfs, parent_ino: int, name: str) -> None:
    fh, _ = await vfs.create(parent_ino, name, 0o644, os.O_WRONLY)
    await vfs.release(fh)


def writes_of(versions: list[dict], name: str) -> int:
    return sum(v["fileName"] == name and v["action"] == "upload" for v in versions)


def test_a_hundred_creates_cost_one_directory_object_write(tmp_path: Path, b2_bucket) -> None:
    ident = x25519_identity()
    store = b2_bucket.store()

    async def main() -> None:
        async with open_vfs(tmp_path, identity=ident, store=store) as vfs:
            d = await vfs.mkdir(ROOT_INO, "d", 0o755)
            for i in range(100):
                await touch(vfs, d.ino, f"f{i:03d}")
            shown = (await vfs.getattr(d.ino)).mtime_ns
            # Stored by the background task once d is quiet, before any unmount.
            with trio.fail_after(60):
                while store.stat("d.b2cryptfs-dir") is None:
                    await trio.sleep(0.2)
            versions = b2_bucket.versions()
            assert writes_of(versions, "d.b2cryptfs-dir") <= 2
            assert writes_of(versions, ROOT_META_OBJECT) <= 2  # the root got d: its mtime too
            obj = store.stat("d.b2cryptfs-dir")
            assert decode_meta(obj.info).mtime_ns == shown
            assert (await vfs.getattr(d.ino)).mtime_ns == shown
        async with open_vfs(tmp_path, identity=ident, store=store) as vfs:
            assert (await vfs.getattr(await ino_of(vfs, "d"))).mtime_ns == shown

    run(main)


def test_fsyncdir_stores_the_pending_mtime_now(tmp_path: Path) -> None:
    ident = x25519_identity()
    store = DirStore(str(tmp_path / "store"), create=True)

    async def main() -> None:
        async with open_vfs(tmp_path, identity=ident, store=store) as vfs:
            d = await vfs.mkdir(ROOT_INO, "d", 0o755)
            await touch(vfs, d.ino, "x")
            shown = (await vfs.getattr(d.ino)).mtime_ns
            fh = await vfs.opendir(d.ino)
            await vfs.fsyncdir(fh)
            await vfs.releasedir(fh)
            obj = store.stat("d.b2cryptfs-dir")
            assert obj is not None and decode_meta(obj.info).mtime_ns == shown
            assert len(vfs.attrs.dir_times) == 1  # the root (d came): not asked for
            fh = await vfs.opendir(ROOT_INO)
            await vfs.fsyncdir(fh)
            assert len(vfs.attrs.dir_times) == 0
            assert store.stat(ROOT_META_OBJECT) is not None

    run(main)


def test_a_pending_mtime_follows_its_directory_and_rmdir_leaves_nothing(tmp_path: Path) -> None:
    ident = x25519_identity()
    store = DirStore(str(tmp_path / "store"), create=True)

    async def main() -> None:
        async with open_vfs(tmp_path, identity=ident, store=store) as vfs:
            a = await vfs.mkdir(ROOT_INO, "a", 0o755)
            await touch(vfs, a.ino, "x")
            shown = (await vfs.getattr(a.ino)).mtime_ns
            await vfs.rename(ROOT_INO, "a", ROOT_INO, "b", 0)
            gone = await vfs.mkdir(ROOT_INO, "gone", 0o755)
            await touch(vfs, gone.ino, "y")
            await vfs.unlink(gone.ino, "y")
            await vfs.rmdir(ROOT_INO, "gone")
        names = {o.name for o in store.iter_all()}
        assert "b.b2cryptfs-dir" in names and "a.b2cryptfs-dir" not in names
        assert not [n for n in names if n.startswith("gone")], names
        async with open_vfs(tmp_path, identity=ident, store=store) as vfs:
            assert (await vfs.getattr(await ino_of(vfs, "b"))).mtime_ns == shown

    run(main)
