"""POSIX metadata through the vfs (no kernel): what new entries start with, what setattr
changes and where, and that a metadata change of a closed file moves no content."""

from __future__ import annotations

import errno
import os
import stat
import time
from collections import Counter
from pathlib import Path

import pytest
from vfs_testutil import ino_of, open_vfs, read_file, run, write_file, x25519_identity

from b2cryptfs.bucket.layout import ROOT_META_OBJECT
from b2cryptfs.bucket.meta import Meta
from b2cryptfs.errors import TransientError
from b2cryptfs.store.dirstore import DirStore
from b2cryptfs.vfs.core import Vfs
from b2cryptfs.vfs.fserror import OpError
from b2cryptfs.vfs.metadata import Caller
from b2cryptfs.vfs.namespace import ROOT_INO

ALICE = Caller(1000, 1000, frozenset({1000, 50}))
BOB = Caller(1001, 1001)
ROOT = Caller(0, 0)


class UnreachableStore(DirStore):
    """A DirStore whose uploads fail as a network outage does, until ``reachable``."""

    def __init__(self, root: str) -> None:
        super().__init__(root, create=True)
        self.reachable = False

    def upload_file(self, name, path, info, **kw):  # type: ignore[no-untyped-def]
        if not self.reachable:
            raise TransientError("store unreachable (test)")
        return super().upload_file(name, path, info, **kw)


class MetaCountingStore(DirStore):
    """A DirStore that counts content downloads and uploads, and metadata-only updates."""

    def __init__(self, root: str) -> None:
        super().__init__(root, create=True)
        self.calls: Counter[str] = Counter()

    def read(self, obj, offset=0, length=None):  # type: ignore[no-untyped-def]
        self.calls["read " + obj.name] += 1
        return super().read(obj, offset, length)

    def download(self, obj, path):  # type: ignore[no-untyped-def]
        self.calls["download " + obj.name] += 1
        return super().download(obj, path)

    def upload_file(self, name, path, info, **kw):  # type: ignore[no-untyped-def]
        self.calls["upload " + name] += 1
        return super().upload_file(name, path, info, **kw)

    def upload_bytes(self, name, data, info):  # type: ignore[no-untyped-def]
        self.calls["upload " + name] += 1
        return super().upload_bytes(name, data, info)

    def copy(self, src, dst_name, info=None):  # type: ignore[no-untyped-def]
        self.calls["copy " + dst_name] += 1
        return super().copy(src, dst_name, info)

    def update_info(self, obj, info):  # type: ignore[no-untyped-def]
        self.calls["update_info " + obj.name] += 1
        return super().update_info(obj, info)


@pytest.fixture
def ident():
    return x25519_identity()


def errno_of(exc_info: pytest.ExceptionInfo[OpError]) -> int:
    return exc_info.value.errno


async def attr(vfs: Vfs, path: str):  # type: ignore[no-untyped-def]
    return await vfs.getattr(await ino_of(vfs, path))


async def create_as(vfs: Vfs, path: str, mode: int, who: Caller | None, data: bytes = b"") -> int:
    parent, _, leaf = path.rpartition("/")
    fh, a = await vfs.create(await ino_of(vfs, parent), leaf, mode, os.O_WRONLY, who)
    if data:
        await vfs.write(fh, 0, data)
    await vfs.flush(fh)
    await vfs.release(fh)
    return a.ino


@pytest.mark.parametrize("encrypt_names", [False, True])
def test_new_entries_take_the_callers_owner_and_mode_and_keep_them(
    tmp_path: Path, ident, encrypt_names: bool
) -> None:
    async def main() -> None:
        async with open_vfs(tmp_path, identity=ident, encrypt_names=encrypt_names) as vfs:
            d = await vfs.mkdir(ROOT_INO, "d", 0o750, ALICE)
            assert (d.mode, d.uid, d.gid) == (stat.S_IFDIR | 0o750, 1000, 1000)
            await create_as(vfs, "d/f", 0o4751, ALICE, b"x")  # her write clears setuid
            await create_as(vfs, "d/s", 0o6755, ROOT, b"x")  # root's does not
            link = await vfs.symlink(d.ino, "l", "../somewhere/else", ALICE)
            assert stat.S_ISLNK(link.mode) and link.size == len("../somewhere/else")
            fifo = await vfs.mknod(d.ino, "p", stat.S_IFIFO | 0o640, 0, BOB)
            assert stat.S_ISFIFO(fifo.mode) and fifo.uid == 1001
            dev = await vfs.mknod(d.ino, "c", stat.S_IFCHR | 0o600, os.makedev(1, 3), ROOT)
            assert dev.rdev == os.makedev(1, 3)
        async with open_vfs(tmp_path, identity=ident, encrypt_names=encrypt_names) as vfs:
            d = await attr(vfs, "d")
            assert (d.mode, d.uid, d.gid) == (stat.S_IFDIR | 0o750, 1000, 1000)
            f = await attr(vfs, "d/f")
            assert (f.mode, f.uid, f.gid) == (stat.S_IFREG | 0o751, 1000, 1000)
            assert (await attr(vfs, "d/s")).mode == stat.S_IFREG | 0o6755
            assert await read_file(vfs, "d/f") == b"x"
            link = await attr(vfs, "d/l")
            assert stat.S_ISLNK(link.mode) and (link.uid, link.size) == (1000, 17)
            assert await vfs.readlink(link.ino) == "../somewhere/else"
            p = await attr(vfs, "d/p")
            assert (p.mode, p.uid) == (stat.S_IFIFO | 0o640, 1001)
            c = await attr(vfs, "d/c")
            assert (c.mode, c.rdev, c.uid) == (stat.S_IFCHR | 0o600, os.makedev(1, 3), 0)
            with pytest.raises(OpError) as ei:
                await vfs.readlink(f.ino)
            assert errno_of(ei) == errno.EINVAL

    run(main)


def test_entries_without_metadata_show_the_mount_defaults(tmp_path: Path, ident) -> None:
    async def main() -> None:
        async with open_vfs(tmp_path, identity=ident) as vfs:
            await write_file(vfs, "plain", b"seed")  # no caller: the mount's own
            await vfs.mkdir(ROOT_INO, "dir", 0o755)
        async with open_vfs(tmp_path, identity=ident, uid=4242, gid=4343, umask=0o077) as vfs:
            d = await attr(vfs, "dir")
            assert (d.mode, d.uid, d.gid) == (stat.S_IFDIR | 0o700, 4242, 4343)

    run(main)


def test_setgid_directories_pass_their_group_and_bit_down(tmp_path: Path, ident) -> None:
    async def main() -> None:
        async with open_vfs(tmp_path, identity=ident) as vfs:
            top = await vfs.mkdir(ROOT_INO, "shared", 0o2775, ALICE)
            await vfs.setattr(top.ino, gid=50, caller=ALICE)  # a group ALICE is in
            await create_as(vfs, "shared/f", 0o664, BOB)
            sub = await vfs.mkdir(top.ino, "sub", 0o755, BOB)
            assert (sub.mode, sub.uid, sub.gid) == (stat.S_IFDIR | 0o2755, 1001, 50)
            plain = await vfs.mkdir(ROOT_INO, "plain", 0o755, ALICE)
            await create_as(vfs, "plain/g", 0o644, BOB)
            assert plain.mode & stat.S_ISGID == 0
        async with open_vfs(tmp_path, identity=ident) as vfs:
            f = await attr(vfs, "shared/f")
            assert (f.uid, f.gid) == (1001, 50)
            sub = await attr(vfs, "shared/sub")
            assert (sub.mode, sub.gid) == (stat.S_IFDIR | 0o2755, 50)
            assert (await attr(vfs, "plain/g")).gid == 1001

    run(main)


def test_chmod_of_an_open_and_of_a_pending_file_goes_up_with_it(tmp_path: Path, ident) -> None:
    store = MetaCountingStore(str(tmp_path / "store"))

    async def main() -> None:
        # A long settle delay keeps a file sealed twice in a row queued (pending).
        async with open_vfs(tmp_path, identity=ident, store=store, settle=60.0) as vfs:
            fh, a = await vfs.create(ROOT_INO, "open", 0o644, os.O_WRONLY, ALICE)
            await vfs.write(fh, 0, b"staged")
            await vfs.setattr(a.ino, mode=0o600, caller=ALICE)  # while open: staged meta
            await vfs.release(fh)
            ino = await create_as(vfs, "pending", 0o644, ALICE, b"one")
            await write_file(vfs, "pending", b"two")
            assert vfs.outbox.latest("pending") is not None
            await vfs.setattr(ino, mode=0o640, uid=7, gid=8, caller=ROOT)
            assert vfs.outbox.latest("pending").meta.mode == stat.S_IFREG | 0o640
            assert (await vfs.getattr(ino)).uid == 7
            await vfs.setattr(ino, mtime_ns=1_500_000_000_123_456_789, caller=ROOT)
        # The first version of "pending" went up at once (or, yielding to the burst of
        # closes, was replaced by the second before its turn), the second waited and took
        # the changes along: no metadata update of a stored object was needed.
        assert store.calls["upload pending.enc"] in (1, 2) and store.calls["upload open.enc"] == 1
        assert not [c for c in store.calls if c.startswith("update_info")]
        async with open_vfs(tmp_path, identity=ident) as vfs:
            o = await attr(vfs, "open")
            assert (o.mode, o.uid) == (stat.S_IFREG | 0o600, 1000)
            p = await attr(vfs, "pending")
            assert (p.mode, p.uid, p.gid) == (stat.S_IFREG | 0o640, 7, 8)
            assert p.mtime_ns == 1_500_000_000_123_456_789
            assert await read_file(vfs, "pending") == b"two"

    run(main)


def test_metadata_of_a_big_closed_file_changes_without_moving_content(
    tmp_path: Path, ident
) -> None:
    store = MetaCountingStore(str(tmp_path / "store"))
    data = os.urandom(50 << 20)

    async def main() -> None:
        async with open_vfs(tmp_path, identity=ident, store=store) as vfs:
            ino = await create_as(vfs, "big", 0o644, ALICE, data)
            await vfs.fsync((await vfs.open(ino, os.O_RDONLY))[0])
            await vfs.outbox.drain()
            await vfs.attrs.dir_times.flush()  # the root's new mtime (the create)
            store.calls.clear()
            await vfs.setattr(ino, mode=0o600, caller=ALICE)
            await vfs.setattr(ino, uid=0, gid=0, caller=ROOT)
            await vfs.setattr(ino, atime_ns=10**18, mtime_ns=2 * 10**18, caller=ROOT)
            a = await vfs.getattr(ino)
            assert (a.mode, a.uid, a.size) == (stat.S_IFREG | 0o600, 0, len(data))
            assert (a.atime_ns, a.mtime_ns) == (10**18, 2 * 10**18)
        moved = [c for c in store.calls if c.split()[0] in ("read", "download", "upload", "copy")]
        assert moved == [], store.calls
        assert store.calls["update_info big.enc"] == 3
        async with open_vfs(tmp_path, identity=ident, store=store) as vfs:
            a = await attr(vfs, "big")
            assert (a.mode, a.uid, a.atime_ns, a.mtime_ns) == (
                stat.S_IFREG | 0o600,
                0,
                10**18,
                2 * 10**18,
            )

    run(main)


def test_a_directory_keeps_its_metadata_across_a_rename(tmp_path: Path, ident) -> None:
    async def main() -> None:
        async with open_vfs(tmp_path, identity=ident) as vfs:
            d = await vfs.mkdir(ROOT_INO, "a", 0o700, ALICE)
            await create_as(vfs, "a/f", 0o600, ALICE, b"data")
            await vfs.setattr(d.ino, mtime_ns=1_400_000_000_000_000_001, caller=ALICE)
            await vfs.rename(ROOT_INO, "a", ROOT_INO, "b", 0)
            b = await attr(vfs, "b")
            assert (b.mode, b.uid, b.mtime_ns) == (
                stat.S_IFDIR | 0o700,
                1000,
                1_400_000_000_000_000_001,
            )
        async with open_vfs(tmp_path, identity=ident) as vfs:
            b = await attr(vfs, "b")
            assert (b.mode, b.uid) == (stat.S_IFDIR | 0o700, 1000)
            assert b.mtime_ns == 1_400_000_000_000_000_001
            assert (await attr(vfs, "b/f")).mode == stat.S_IFREG | 0o600

    run(main)


def test_open_unlinked_file_stays_usable_and_gone(tmp_path: Path, ident) -> None:
    async def main() -> None:
        async with open_vfs(tmp_path, identity=ident) as vfs:
            await write_file(vfs, "f", b"A" * 100)
            await vfs.outbox.drain()
            ino = await ino_of(vfs, "f")
            fh, _ = await vfs.open(ino, os.O_RDWR)
            await vfs.unlink(ROOT_INO, "f")
            await vfs.write(fh, 50, b"B" * 100)
            assert await vfs.read(fh, 0, 1000) == b"A" * 50 + b"B" * 100
            await vfs.release(fh)
        async with open_vfs(tmp_path, identity=ident) as vfs:
            with pytest.raises(OpError) as ei:
                await ino_of(vfs, "f")
            assert errno_of(ei) == errno.ENOENT

    run(main)


def test_a_directory_mtime_follows_its_names(tmp_path: Path, ident) -> None:
    store = MetaCountingStore(str(tmp_path / "store"))

    async def main() -> None:
        async with open_vfs(tmp_path, identity=ident, store=store) as vfs:
            plain = await vfs.mkdir(ROOT_INO, "plain", 0o755)
            d = await vfs.mkdir(ROOT_INO, "d", 0o755)
            await vfs.setattr(d.ino, mtime_ns=1_500_000_000_123_456_789)
            before = (await vfs.getattr(plain.ino)).mtime_ns
            store.calls.clear()
            for i in range(20):
                await create_as(vfs, f"plain/x{i}", 0o644, None)
            # The new mtime shows at once, from memory: no request for it yet.
            assert not [c for c in store.calls if "b2cryptfs-dir" in c]
            plain_shown = (await vfs.getattr(plain.ino)).mtime_ns
            assert plain_shown >= before
            await create_as(vfs, "d/x", 0o644, None)
            shown = (await vfs.getattr(d.ino)).mtime_ns
            assert shown > 1_500_000_000_123_456_789  # newer than the explicit one
            assert not [c for c in store.calls if "b2cryptfs-dir" in c]
        # Stored at the unmount (if not before, once quiet): one upload per directory.
        assert store.calls["upload plain.b2cryptfs-dir"] == 1
        assert store.calls["upload d.b2cryptfs-dir"] == 1
        async with open_vfs(tmp_path, identity=ident) as vfs:
            assert (await attr(vfs, "d")).mtime_ns == shown
            assert (await attr(vfs, "plain")).mtime_ns == plain_shown

    run(main)


@pytest.mark.parametrize("encrypt_names", [False, True], ids=["plain", "encnames"])
def test_the_root_keeps_its_metadata_across_a_remount(
    tmp_path: Path, ident, encrypt_names: bool
) -> None:
    store = MetaCountingStore(str(tmp_path / "store"))

    async def main() -> None:
        async with open_vfs(
            tmp_path, identity=ident, store=store, encrypt_names=encrypt_names
        ) as vfs:
            root = await vfs.getattr(ROOT_INO)
            assert stat.S_IMODE(root.mode) == 0o755 and root.uid == os.getuid()  # defaults
            store.calls.clear()  # (the name key, made at the start)
            await vfs.setattr(ROOT_INO, mode=0o2750, caller=ROOT)
            await vfs.setattr(ROOT_INO, uid=1234, gid=5678, caller=ROOT)
            await vfs.setattr(ROOT_INO, mtime_ns=1_300_000_000_000_000_007, caller=ROOT)
            # Each change is one upload of the root object, nothing else.
            assert store.calls == Counter({f"upload {ROOT_META_OBJECT}": 3})
            await vfs.mkdir(ROOT_INO, "d", 0o755, ALICE)
            d = await attr(vfs, "d")
            assert d.gid == 5678 and d.mode & stat.S_ISGID  # setgid passes down from the root
        store.calls.clear()
        async with open_vfs(
            tmp_path, identity=ident, store=store, encrypt_names=encrypt_names
        ) as vfs:
            root = await vfs.getattr(ROOT_INO)  # read from the root's listing
            assert (root.mode, root.uid, root.gid) == (stat.S_IFDIR | 0o2750, 1234, 5678)
            assert not [c for c in store.calls if ROOT_META_OBJECT in c]  # no request of its own
            await ino_of(vfs, "d")

    run(main)


def test_ctime_follows_metadata_and_name_changes_and_survives_a_remount(
    tmp_path: Path, ident
) -> None:
    store = MetaCountingStore(str(tmp_path / "store"))
    past = 1_300_000_000_000_000_000

    async def main() -> None:
        async with open_vfs(tmp_path, identity=ident, store=store) as vfs:
            ino = await create_as(vfs, "f", 0o644, ALICE, b"data")
            await vfs.outbox.drain()
            d = await vfs.mkdir(ROOT_INO, "d", 0o700, ALICE)
            start = time.time_ns()
            await vfs.setattr(ino, mtime_ns=past, caller=ALICE)  # rsync's utime: to the past
            f = await vfs.getattr(ino)
            assert f.mtime_ns == past and f.ctime_ns >= start  # not shown as the mtime
            store.calls.clear()
            await vfs.setattr(ino, mode=0o644, caller=ALICE)  # the mode it has: no change
            assert (await vfs.getattr(ino)).ctime_ns == f.ctime_ns and not store.calls
            await vfs.setattr(d.ino, mtime_ns=past, caller=ALICE)
            assert (await vfs.getattr(d.ino)).ctime_ns >= start
            before_rename = time.time_ns()
            await vfs.rename(ROOT_INO, "f", ROOT_INO, "g", 0)
            await vfs.rename(ROOT_INO, "d", ROOT_INO, "e", 0)
            g = await attr(vfs, "g")
            e = await attr(vfs, "e")
            assert g.mtime_ns == past and g.ctime_ns >= before_rename
            assert e.mtime_ns == past and e.ctime_ns >= before_rename
        async with open_vfs(tmp_path, identity=ident, store=store) as vfs:
            assert (await attr(vfs, "g")).ctime_ns == g.ctime_ns
            assert (await attr(vfs, "e")).ctime_ns == e.ctime_ns
            assert (await attr(vfs, "e")).mtime_ns == past

    run(main)


def test_entries_stored_without_a_ctime_show_their_mtime(tmp_path: Path, ident) -> None:
    async def main() -> None:
        async with open_vfs(tmp_path, identity=ident) as vfs:
            vfs.pairs.put_bytes("old", b"seed", Meta(mode=stat.S_IFREG | 0o600, mtime_ns=10**18))
            vfs.pairs.put_bytes("plain", b"seed")  # no metadata at all
            old = await attr(vfs, "old")
            assert old.ctime_ns == old.mtime_ns == 10**18
            plain = await attr(vfs, "plain")
            assert plain.ctime_ns == plain.mtime_ns

    run(main)


def test_a_rename_before_the_upload_sets_the_ctime_it_is_uploaded_with(
    tmp_path: Path, ident
) -> None:
    past = 1_300_000_000_000_000_000

    store = UnreachableStore(str(tmp_path / "store"))

    async def main() -> None:
        async with open_vfs(tmp_path, identity=ident, store=store, retry_base=0.05) as vfs:
            # Its upload fails (the store is unreachable): the file stays queued.
            ino = await create_as(vfs, "f", 0o644, ALICE, b"data")
            await vfs.setattr(ino, mtime_ns=past, caller=ALICE)
            assert vfs.outbox.latest("f") is not None  # still queued
            before_rename = time.time_ns()
            await vfs.rename(ROOT_INO, "f", ROOT_INO, "g", 0)
            assert vfs.outbox.latest("g") is not None  # the queued upload was retargeted
            g = await attr(vfs, "g")
            assert g.mtime_ns == past and g.ctime_ns >= before_rename
            store.reachable = True
        async with open_vfs(tmp_path, identity=ident) as vfs:
            stored = await attr(vfs, "g")
            assert stored.mtime_ns == past and stored.ctime_ns == g.ctime_ns

    run(main)
