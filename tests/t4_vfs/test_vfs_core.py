"""The vfs core over a real DirStore, driven directly (no kernel): namespace, writes, reads."""

from __future__ import annotations

import errno
import os
import stat
from collections import Counter
from pathlib import Path

import pytest
import trio
from vfs_testutil import (
    all_bytes_under,
    ino_of,
    listdir,
    open_vfs,
    read_file,
    run,
    write_file,
    x25519_identity,
)

from b2cryptfs.bucket.layout import ROOT_META_OBJECT
from b2cryptfs.bucket.pairs import PairStore
from b2cryptfs.store.dirstore import DirStore
from b2cryptfs.vfs.core import RENAME_NOREPLACE
from b2cryptfs.vfs.fserror import OpError
from b2cryptfs.vfs.namespace import ROOT_INO, PathIndex


class CountingStore(DirStore):
    """A DirStore that counts the requests made to it."""

    def __init__(self, root: str) -> None:
        super().__init__(root, create=True)
        self.calls: Counter[str] = Counter()
        self.reads: Counter[str] = Counter()

    def list_dir(self, prefix):  # type: ignore[no-untyped-def]
        self.calls["list_dir"] += 1
        return super().list_dir(prefix)

    def stat(self, name):  # type: ignore[no-untyped-def]
        self.calls["stat"] += 1
        return super().stat(name)

    def upload_file(self, name, path, info, **kw):  # type: ignore[no-untyped-def]
        self.calls["upload " + name] += 1
        return super().upload_file(name, path, info, **kw)

    def read(self, obj, offset=0, length=None):  # type: ignore[no-untyped-def]
        self.calls["read"] += 1
        self.reads[obj.name] += 1
        return super().read(obj, offset, length)


def errno_of(exc_info: pytest.ExceptionInfo[OpError]) -> int:
    return exc_info.value.errno


@pytest.fixture
def ident():
    return x25519_identity()


def test_write_read_roundtrip_and_store_layout(tmp_path: Path, ident) -> None:
    data = os.urandom(300_000)

    async def main() -> None:
        async with open_vfs(tmp_path, identity=ident) as vfs:
            await vfs.mkdir(ROOT_INO, "docs", 0o755)
            await write_file(vfs, "docs/a.bin", data)
            assert await read_file(vfs, "docs/a.bin") == data
            attr = await vfs.getattr(await ino_of(vfs, "docs/a.bin"))
            assert attr.size == len(data) and attr.blocks == (len(data) + 511) // 512
        names = sorted(os.listdir(tmp_path / "store" / "docs"))
        assert names == [".bzEmpty", "a.bin.enc", "a.bin.key.enc"]
        # Another client (the pair layer directly) reads what the mount wrote.
        pairs = PairStore(DirStore(str(tmp_path / "store")), identities=[ident])
        entry = pairs.stat_file("docs/a.bin")
        assert entry is not None and entry.size == len(data)
        assert pairs.open(entry).read(0, len(data)) == data

    run(main)


def test_listing_needs_no_per_file_request(tmp_path: Path, ident) -> None:
    store = CountingStore(str(tmp_path / "store"))
    pairs = PairStore(store, recipients=[ident.recipient()])
    src = tmp_path / "src"
    sizes = {}
    for i in range(5):
        src.write_bytes(os.urandom(1000 * i))
        pairs.put_file(f"f{i}", str(src), mtime_ms=1_600_000_000_000 + i)
        sizes[f"f{i}"] = 1000 * i

    async def main() -> None:
        async with open_vfs(tmp_path, store=store, identity=ident) as vfs:
            store.calls.clear()
            fh = await vfs.opendir(ROOT_INO)
            entries = dict(await vfs.readdir(fh, 0))
            for name in entries:
                attr = await vfs.lookup(ROOT_INO, name)
                assert attr.size == sizes[name]
                assert attr.mtime_ns == (1_600_000_000_000 + int(name[1:])) * 1_000_000
                await vfs.getattr(attr.ino)
            assert sorted(entries) == sorted(sizes)
            assert store.calls == Counter({"list_dir": 1})

    run(main)


def test_orphans_invisible_and_empty_dirs_kept(tmp_path: Path, ident) -> None:
    store = DirStore(str(tmp_path / "store"), create=True)
    store.upload_bytes("orphan.txt.key.enc", b"key without content", {})
    store.upload_bytes("empty/.bzEmpty", b"", {})

    async def main() -> None:
        async with open_vfs(tmp_path, store=store, identity=ident, dir_cache_time=0.0) as vfs:
            assert await listdir(vfs) == ["empty"]
            await vfs.mkdir(ROOT_INO, "d", 0o755)
            assert (tmp_path / "store" / "d" / ".bzEmpty").exists()
            await write_file(vfs, "d/file", b"x")
            d = await ino_of(vfs, "d")
            with pytest.raises(OpError) as ei:
                await vfs.rmdir(ROOT_INO, "d")
            assert errno_of(ei) == errno.ENOTEMPTY
            with pytest.raises(OpError) as ei:
                await vfs.mkdir(ROOT_INO, "d", 0o755)
            assert errno_of(ei) == errno.EEXIST
            await vfs.unlink(d, "file")
            # The directory stays after its last file went (a fresh listing every time here).
            assert sorted(await listdir(vfs)) == ["d", "empty"]
            assert await listdir(vfs, "d") == []
            await vfs.rmdir(ROOT_INO, "d")
            await vfs.rmdir(ROOT_INO, "empty")
            assert await listdir(vfs) == []
            with pytest.raises(OpError) as ei:
                await vfs.lookup(ROOT_INO, "d")
            assert errno_of(ei) == errno.ENOENT

    run(main)


def test_directory_implied_by_pending_upload_and_nested_mkdir(tmp_path: Path, ident) -> None:
    async def main() -> None:
        async with open_vfs(tmp_path, identity=ident, settle=3600) as vfs:
            a = await vfs.mkdir(ROOT_INO, "a", 0o755)
            b = await vfs.mkdir(a.ino, "b", 0o700)
            assert b.mode & 0o777 == 0o700
            vfs.outbox.writing("a/b/new.txt", True)  # held: as if still open for writing elsewhere
            await write_file(vfs, "a/b/new.txt", b"hello")
            assert await listdir(vfs, "a/b") == ["new.txt"]
            assert not (tmp_path / "store" / "a" / "b" / "new.txt.enc").exists()
            assert await read_file(vfs, "a/b/new.txt") == b"hello"
        assert (tmp_path / "store" / "a" / "b" / "new.txt.enc").exists()

    run(main)


def test_finished_upload_reaches_the_cached_listing(tmp_path: Path, ident) -> None:
    # The outbox only queues what it uploaded; the listing cache takes it in at its next
    # look, so the file is listed (no new listing request) the moment it stops being pending.
    store = CountingStore(str(tmp_path / "store"))

    async def main() -> None:
        async with open_vfs(tmp_path, store=store, identity=ident, dir_cache_time=3600) as vfs:
            await vfs.mkdir(ROOT_INO, "a", 0o755)
            assert await listdir(vfs, "a") == []
            await write_file(vfs, "a/c.txt", b"payload")
            entry = vfs.outbox.latest("a/c.txt")
            assert entry is not None
            assert not vfs.listings.listed("a/c.txt")
            await vfs.outbox.wait(entry)
            assert vfs.outbox.latest("a/c.txt") is None
            store.calls.clear()
            assert vfs.listings.listed("a/c.txt")
            assert vfs.outbox.take_uploaded() == []
            assert await listdir(vfs, "a") == ["c.txt"]
            assert store.calls["list_dir"] == 0
            assert await read_file(vfs, "a/c.txt") == b"payload"

    run(main)


def test_inodes_stable_per_path_and_forget(tmp_path: Path, ident) -> None:
    async def main() -> None:
        async with open_vfs(tmp_path, identity=ident) as vfs:
            ino = await write_file(vfs, "f", b"1")
            assert (await vfs.lookup(ROOT_INO, "f")).ino == ino
            vfs.forget(ino, 10)
            assert (await vfs.lookup(ROOT_INO, "f")).ino == ino
            await write_file(vfs, "f", b"22")
            assert (await vfs.lookup(ROOT_INO, "f")).ino == ino
            await vfs.rename(ROOT_INO, "f", ROOT_INO, "g", 0)
            assert (await vfs.lookup(ROOT_INO, "g")).ino == ino
            await vfs.unlink(ROOT_INO, "g")
            # Still known to the kernel: getattr on it works, with nlink 0.
            assert (await vfs.getattr(ino)).nlink == 0
            vfs.forget(ino, 100)
            with pytest.raises(OpError):
                await vfs.getattr(ino)

    run(main)


def test_other_writer_shows_after_expiry_own_changes_at_once(tmp_path: Path, ident) -> None:
    store = DirStore(str(tmp_path / "store"), create=True)
    other = PairStore(store, recipients=[ident.recipient()])
    src = tmp_path / "src"
    src.write_bytes(b"from elsewhere")

    async def main() -> None:
        async with open_vfs(tmp_path, store=store, identity=ident, dir_cache_time=0.3) as vfs:
            assert vfs.timeout <= 0.3
            assert await listdir(vfs) == []
            await trio.to_thread.run_sync(other.put_file, "theirs", str(src))
            await write_file(vfs, "mine", b"1")
            assert "mine" in await listdir(vfs)
            await trio.sleep(0.35)
            assert sorted(await listdir(vfs)) == ["mine", "theirs"]
            assert await read_file(vfs, "theirs") == b"from elsewhere"

    run(main)


def test_overwrite_patch_append_truncate(tmp_path: Path, ident) -> None:
    base = os.urandom(200_000)

    async def main() -> None:
        async with open_vfs(tmp_path, identity=ident) as vfs:
            ino = await write_file(vfs, "f", base)
            await vfs.outbox.drain()
            model = bytearray(base)
            # Write into the middle of an existing (uploaded) file: copy on open.
            fh, _ = await vfs.open(ino, os.O_RDWR)
            await vfs.write(fh, 70_000, b"PATCH")
            model[70_000:70_005] = b"PATCH"
            assert await vfs.read(fh, 69_998, 9) == bytes(model[69_998:70_007])
            # Append past the end with a hole.
            await vfs.write(fh, len(model) + 10, b"END")
            model += bytes(10) + b"END"
            await vfs.release(fh)
            assert await read_file(vfs, "f") == bytes(model)
            # truncate(2) of a closed file, then ftruncate through a handle.
            await vfs.setattr(ino, size=1000)
            del model[1000:]
            assert (await vfs.getattr(ino)).size == 1000
            fh, _ = await vfs.open(ino, os.O_WRONLY)
            await vfs.setattr(ino, size=5000)
            model += bytes(4000)
            await vfs.release(fh)
            assert await read_file(vfs, "f") == bytes(model)
            # O_TRUNC replaces everything.
            fh, _ = await vfs.open(ino, os.O_WRONLY | os.O_TRUNC)
            await vfs.write(fh, 0, b"new")
            await vfs.release(fh)
            assert await read_file(vfs, "f") == b"new"
        # A new mount (same store and cache) sees the final content.
        async with open_vfs(tmp_path, identity=ident) as vfs:
            assert await read_file(vfs, "f") == b"new"

    run(main)


def test_empty_file_and_mknod(tmp_path: Path, ident) -> None:
    async def main() -> None:
        async with open_vfs(tmp_path, identity=ident) as vfs:
            await write_file(vfs, "empty", b"")
            attr = await vfs.mknod(ROOT_INO, "node", 0o100644)
            assert attr.size == 0
            fifo = await vfs.mknod(ROOT_INO, "fifo", 0o010644)
            assert stat.S_ISFIFO(fifo.mode)
            with pytest.raises(OpError) as ei:
                await vfs.mknod(ROOT_INO, "odd", 0o170644)  # no such file type
            assert errno_of(ei) == errno.EINVAL
        async with open_vfs(tmp_path, identity=ident) as vfs:
            assert await read_file(vfs, "empty") == b""
            assert await read_file(vfs, "node") == b""
            assert sorted(await listdir(vfs)) == ["empty", "fifo", "node"]

    run(main)


def test_pending_upload_is_listed_read_and_survives_a_crash(tmp_path: Path, ident) -> None:
    data = os.urandom(100_000)
    store_dir = tmp_path / "store"

    async def crashed_mount() -> None:
        async with open_vfs(tmp_path, identity=ident, settle=3600, drain=False) as vfs:
            vfs.outbox.writing("pending.bin", True)  # still open for writing elsewhere
            ino = await write_file(vfs, "pending.bin", data)
            await vfs.setattr(ino, mtime_ns=1_500_000_000_123_000_000)
            assert await listdir(vfs) == ["pending.bin"]
            attr = await vfs.getattr(ino)
            assert attr.size == len(data) and attr.mtime_ns == 1_500_000_000_123_000_000
            assert await read_file(vfs, "pending.bin") == data
            assert not (store_dir / "pending.bin.enc").exists()
            # Killed here: no drain.

    async def next_mount() -> None:
        async with open_vfs(tmp_path, identity=ident) as vfs:
            # Listed at once, from the outbox, before it is uploaded.
            assert await listdir(vfs) == ["pending.bin"]
            assert await read_file(vfs, "pending.bin") == data

    run(crashed_mount)
    outbox = next((tmp_path / "cache").iterdir()) / "outbox"
    assert sorted(p.suffix for p in outbox.iterdir()) == [".content", ".json"]
    assert data[:64] not in all_bytes_under(tmp_path / "cache")
    run(next_mount)
    assert os.listdir(outbox) == []
    pairs = PairStore(DirStore(str(store_dir)), identities=[ident])
    entry = pairs.stat_file("pending.bin")
    assert entry is not None and entry.mtime_ms == 1_500_000_000_123
    assert pairs.open(entry).read(0, len(data)) == data


def test_a_closed_file_is_uploaded_without_the_settle_delay(tmp_path: Path, ident) -> None:
    async def main() -> None:
        async with open_vfs(tmp_path, identity=ident, settle=3600) as vfs:
            await write_file(vfs, "closed", b"nobody writes it any more")
            entry = vfs.outbox.latest("closed")
            assert entry is not None
            with trio.fail_after(60):  # an hour's settle would time out here
                await entry.done.wait()
            assert (tmp_path / "store" / "closed.enc").exists()

    run(main)


def test_later_write_supersedes_queued_one(tmp_path: Path, ident) -> None:
    store = CountingStore(str(tmp_path / "store"))

    async def main() -> None:
        async with open_vfs(tmp_path, store=store, identity=ident, settle=3600) as vfs:
            # The first version of a file nobody writes any more goes up at once; the ones
            # sealed again within the settle delay wait, and a newer one replaces them.
            await write_file(vfs, "f", b"first")
            await vfs.outbox.wait(vfs.outbox.latest("f"))
            await write_file(vfs, "f", b"second")
            await write_file(vfs, "f", b"third")
            assert len(vfs.outbox) == 1
            assert await read_file(vfs, "f") == b"third"

    run(main)
    pairs = PairStore(store, identities=[ident])
    entry = pairs.stat_file("f")
    assert entry is not None and pairs.open(entry).read(0, 100) == b"third"
    assert store.calls["upload f.enc"] == 2  # "second" never went up


def test_utimens_on_uploaded_file_keeps_content(tmp_path: Path, ident) -> None:
    async def main() -> None:
        async with open_vfs(tmp_path, identity=ident) as vfs:
            ino = await write_file(vfs, "f", b"payload")
            await vfs.outbox.drain()
            attr = await vfs.setattr(ino, mtime_ns=1_234_567_890_000_000_000)
            assert attr.mtime_ns == 1_234_567_890_000_000_000
            await vfs.setattr(ino, mode=0o100755, uid=1234, gid=4321)
            attr = await vfs.getattr(ino)
            assert (attr.mode & 0o777, attr.uid, attr.gid) == (0o755, 1234, 4321)
        pairs = PairStore(DirStore(str(tmp_path / "store")), identities=[ident])
        entry = pairs.stat_file("f")
        assert entry is not None and entry.mtime_ms == 1_234_567_890_000
        assert pairs.open(entry).read(0, 100) == b"payload"

    run(main)


def test_unlink_removes_pair_and_pending_upload(tmp_path: Path, ident) -> None:
    async def main() -> None:
        async with open_vfs(tmp_path, identity=ident, settle=3600) as vfs:
            vfs.outbox.writing(
                "gone-before-upload", True
            )  # held: as if still open for writing elsewhere
            await write_file(vfs, "gone-before-upload", b"x")
            await vfs.unlink(ROOT_INO, "gone-before-upload")
            assert len(vfs.outbox) == 0
            await write_file(vfs, "uploaded", b"y")
            await vfs.outbox.drain()
            assert (tmp_path / "store" / "uploaded.enc").exists()
            await vfs.unlink(ROOT_INO, "uploaded")
            assert await listdir(vfs) == []
            with pytest.raises(OpError) as ei:
                await vfs.unlink(ROOT_INO, "uploaded")
            assert errno_of(ei) == errno.ENOENT
        # Nothing but the root's own object (its mtime changed).
        assert sorted(os.listdir(tmp_path / "store")) == [ROOT_META_OBJECT, ".b2cryptfs-tmp"]

    run(main)


def test_unlinked_open_file_is_not_uploaded(tmp_path: Path, ident) -> None:
    async def main() -> None:
        async with open_vfs(tmp_path, identity=ident) as vfs:
            fh, attr = await vfs.create(ROOT_INO, "tmp", 0o600, os.O_RDWR)
            await vfs.write(fh, 0, b"scratch")
            await vfs.unlink(ROOT_INO, "tmp")
            assert await vfs.read(fh, 0, 100) == b"scratch"
            assert (await vfs.getattr(attr.ino)).size == 7
            await vfs.release(fh)
        assert not (tmp_path / "store" / "tmp.enc").exists()

    run(main)


def test_rename_files(tmp_path: Path, ident) -> None:
    store = CountingStore(str(tmp_path / "store"))

    async def main() -> None:
        async with open_vfs(tmp_path, store=store, identity=ident, settle=3600) as vfs:
            # rsync's pattern: write a temporary name, set the mtime, rename: one upload.
            ino = await write_file(vfs, ".f.tmp123", b"rsynced")
            await vfs.setattr(ino, mtime_ns=1_400_000_000_000_000_000)
            await vfs.rename(ROOT_INO, ".f.tmp123", ROOT_INO, "f", 0)
            assert await listdir(vfs) == ["f"]
            await vfs.outbox.drain()
            assert sorted(os.listdir(tmp_path / "store")) == [
                ".b2cryptfs-tmp",
                "f.enc",
                "f.key.enc",
            ]
            # Rename of an uploaded file over another one replaces it.
            await write_file(vfs, "g", b"old g")
            await vfs.outbox.drain()
            with pytest.raises(OpError) as ei:
                await vfs.rename(ROOT_INO, "f", ROOT_INO, "g", RENAME_NOREPLACE)
            assert errno_of(ei) == errno.EEXIST
            d = await vfs.mkdir(ROOT_INO, "d", 0o755)
            await vfs.rename(ROOT_INO, "f", d.ino, "g", 0)
            await vfs.rename(d.ino, "g", ROOT_INO, "g", 0)
            assert sorted(await listdir(vfs)) == ["d", "g"]
            assert await read_file(vfs, "g") == b"rsynced"
            assert (await vfs.lookup(ROOT_INO, "g")).ino == ino
            assert (await vfs.getattr(ino)).mtime_ns == 1_400_000_000_000_000_000

    run(main)
    pairs = PairStore(store, identities=[ident])
    assert sorted(pairs.list_dir("").files) == ["g"]
    assert pairs.list_dir("d").has_marker and not pairs.list_dir("d").files


def test_rename_directory_tree(tmp_path: Path, ident) -> None:
    async def main() -> None:
        async with open_vfs(tmp_path, identity=ident) as vfs:
            a = await vfs.mkdir(ROOT_INO, "a", 0o755)
            sub = await vfs.mkdir(a.ino, "sub", 0o755)
            await vfs.mkdir(a.ino, "empty", 0o755)
            await write_file(vfs, "a/x", b"x")
            await write_file(vfs, "a/sub/y", b"y")
            y_ino = await ino_of(vfs, "a/sub/y")
            with pytest.raises(OpError) as ei:
                await vfs.rename(ROOT_INO, "a", sub.ino, "inside", 0)
            assert errno_of(ei) == errno.EINVAL
            other = await vfs.mkdir(ROOT_INO, "full", 0o755)
            await write_file(vfs, "full/z", b"z")
            with pytest.raises(OpError) as ei:
                await vfs.rename(ROOT_INO, "a", ROOT_INO, "full", 0)
            assert errno_of(ei) == errno.ENOTEMPTY
            await vfs.unlink(other.ino, "z")
            await vfs.rename(ROOT_INO, "a", ROOT_INO, "full", 0)
            assert sorted(await listdir(vfs)) == ["full"]
            assert sorted(await listdir(vfs, "full")) == ["empty", "sub", "x"]
            assert await read_file(vfs, "full/sub/y") == b"y"
            assert await ino_of(vfs, "full/sub/y") == y_ino

    run(main)
    root = tmp_path / "store"
    assert not (root / "a").exists()
    assert sorted(os.listdir(root / "full" / "sub")) == [".bzEmpty", "y.enc", "y.key.enc"]
    assert os.listdir(root / "full" / "empty") == [".bzEmpty"]


def test_name_limits(tmp_path: Path, ident) -> None:
    async def main() -> None:
        async with open_vfs(tmp_path, identity=ident) as vfs:
            ok = "a" * 242
            fh, _ = await vfs.create(ROOT_INO, ok, 0o644, os.O_WRONLY)
            await vfs.release(fh)
            for bad, code in [
                ("b" * 256, errno.ENAMETOOLONG),  # NAME_MAX is 255
                ("é" * 128, errno.ENAMETOOLONG),  # 256 bytes
                ("ctl\x01name", errno.EINVAL),
                ("new\nline", errno.EINVAL),
            ]:
                with pytest.raises(OpError) as ei:
                    await vfs.create(ROOT_INO, bad, 0o644, os.O_WRONLY)
                assert errno_of(ei) == code, bad
                with pytest.raises(OpError) as ei:
                    await vfs.rename(ROOT_INO, ok, ROOT_INO, bad, 0)
                assert errno_of(ei) == code, bad
            await vfs.mkdir(ROOT_INO, "d" * 250, 0o755)
            with pytest.raises(OpError) as ei:
                await vfs.mkdir(ROOT_INO, "d" * 256, 0o755)
            assert errno_of(ei) == errno.ENAMETOOLONG
            with pytest.raises(OpError) as ei:
                await vfs.mkdir(ROOT_INO, "tab\there", 0o755)
            assert errno_of(ei) == errno.EINVAL
            assert sorted(await listdir(vfs)) == sorted([ok, "d" * 250])
            # The whole object name (path + ".key.enc") must stay within 1,024 bytes.
            parent = ROOT_INO
            for i in range(4):
                parent = (await vfs.mkdir(parent, str(i) * 250, 0o755)).ino
            # 4 * 251 bytes of directories + a 13-byte leaf + 8 is 1025 bytes; 12 fit.
            with pytest.raises(OpError) as ei:
                await vfs.create(parent, "f" * 13, 0o644, os.O_WRONLY)
            assert errno_of(ei) == errno.ENAMETOOLONG
            fh, _ = await vfs.create(parent, "f" * 12, 0o644, os.O_WRONLY)
            await vfs.release(fh)

    run(main)


def test_key_suffix_collisions_refused(tmp_path: Path, ident, caplog) -> None:
    async def main() -> None:
        async with open_vfs(tmp_path, identity=ident) as vfs:
            await write_file(vfs, "a", b"a")
            with pytest.raises(OpError) as ei:
                await vfs.create(ROOT_INO, "a.key", 0o644, os.O_WRONLY)
            assert errno_of(ei) == errno.EEXIST
            await write_file(vfs, "b.key", b"b")
            with pytest.raises(OpError) as ei:
                await vfs.create(ROOT_INO, "b", 0o644, os.O_WRONLY)
            assert errno_of(ei) == errno.EEXIST
            with pytest.raises(OpError) as ei:
                await vfs.rename(ROOT_INO, "a", ROOT_INO, "b", 0)
            assert errno_of(ei) == errno.EEXIST

    run(main)
    assert "would share the object" in caplog.text


def test_xattrs(tmp_path: Path, ident) -> None:
    async def main() -> None:
        async with open_vfs(tmp_path, identity=ident) as vfs:
            ino = await write_file(vfs, "f", b"data")
            assert await vfs.listxattr(ino) == [
                "user.b2cryptfs.format",
                "user.b2cryptfs.recipients",
            ]
            assert await vfs.getxattr(ino, "user.b2cryptfs.format") == b"age"
            pending = await vfs.getxattr(ino, "user.b2cryptfs.recipients")
            await vfs.outbox.drain()
            uploaded = await vfs.getxattr(ino, "user.b2cryptfs.recipients")
            assert pending == uploaded and b"X25519" in uploaded
            with pytest.raises(OpError) as ei:
                await vfs.getxattr(ino, "user.other")
            assert errno_of(ei) == errno.ENODATA
            assert await vfs.listxattr(ROOT_INO) == []

    run(main)


def test_statfs_is_large_and_plausible(tmp_path: Path, ident) -> None:
    async def main() -> None:
        async with open_vfs(tmp_path, identity=ident) as vfs:
            st = vfs.statfs()
            assert st["f_blocks"] * st["f_frsize"] >= 1 << 40
            assert 0 < st["f_bavail"] <= st["f_blocks"]
            assert st["f_namemax"] == 255  # NAME_MAX, as ext4 (long names have stand-ins)

    run(main)


def test_no_plaintext_on_disk_anywhere(tmp_path: Path, ident) -> None:
    marker = b"PLAINTEXT-MARKER-0123456789" * 4000

    async def main() -> None:
        async with open_vfs(tmp_path, identity=ident, settle=3600) as vfs:
            await write_file(vfs, "queued", marker)  # sealed, waits in the outbox
            fh, _ = await vfs.create(ROOT_INO, "open", 0o644, os.O_WRONLY)
            await vfs.write(fh, 0, marker)  # staged, still open
            for node in vfs.table.staged():
                node.staging.flush()  # force the in-memory blocks out to the file
            on_disk = all_bytes_under(tmp_path / "cache")
            assert b"PLAINTEXT-MARKER" not in on_disk
            await vfs.release(fh)
            await vfs.outbox.drain()
            assert await read_file(vfs, "queued") == marker  # fills the chunk cache
            await vfs.fetcher.idle()
        on_disk = all_bytes_under(tmp_path / "cache")
        assert b"PLAINTEXT-MARKER" not in on_disk
        assert b"PLAINTEXT-MARKER" not in all_bytes_under(tmp_path / "store")

    run(main)


def test_path_index_counts_pending_paths() -> None:
    idx = PathIndex()
    idx.add("a/b/c")
    idx.add("a/b/d")
    idx.add("a/b/c")
    idx.add("top")
    assert idx.files("") == {"top"} and idx.dirs("") == {"a"}
    assert idx.dirs("a") == {"b"} and idx.files("a/b") == {"c", "d"}
    idx.remove("a/b/c")
    assert idx.files("a/b") == {"c", "d"}
    idx.remove("a/b/c")
    idx.remove("a/b/d")
    assert idx.dirs("") == set() and idx.files("a/b") == set()


def test_read_only_mount_writes_nothing(tmp_path: Path, ident) -> None:
    async def leave_pending() -> None:
        async with open_vfs(tmp_path, identity=ident, settle=3600, drain=False) as vfs:
            vfs.outbox.writing("left", True)  # held: as if still open for writing elsewhere
            await write_file(vfs, "left", b"for later")

    async def read_only() -> None:
        async with open_vfs(tmp_path, identity=ident, read_only=True) as vfs:
            assert await read_file(vfs, "left") == b"for later"
            ino = await ino_of(vfs, "left")
            for call in (
                vfs.open(ino, os.O_WRONLY),
                vfs.create(ROOT_INO, "new", 0o644, os.O_WRONLY),
                vfs.mkdir(ROOT_INO, "d", 0o755),
                vfs.unlink(ROOT_INO, "left"),
                vfs.setattr(ino, size=0),
            ):
                with pytest.raises(OpError) as ei:
                    await call
                assert errno_of(ei) == errno.EROFS
        assert not (tmp_path / "store" / "left.enc").exists()

    async def read_write() -> None:
        async with open_vfs(tmp_path, identity=ident):
            pass

    run(leave_pending)
    run(read_only)
    run(read_write)
    assert (tmp_path / "store" / "left.enc").exists()


def test_close_makes_written_data_durable(tmp_path: Path, ident) -> None:
    async def main() -> None:
        async with open_vfs(tmp_path, identity=ident, settle=3600) as vfs:
            for name in ("f", "empty"):
                vfs.outbox.writing(name, True)  # held: as if still open for writing elsewhere
            fh, _ = await vfs.create(ROOT_INO, "f", 0o644, os.O_WRONLY)
            await vfs.flush(fh)  # a shell's dup-and-close before writing: nothing to seal
            assert len(vfs.outbox) == 0
            await vfs.write(fh, 0, b"data")
            await vfs.flush(fh)  # close(2) returns: the content is in the outbox
            assert len(vfs.outbox) == 1
            entry = vfs.outbox.latest("f")
            assert entry is not None and os.path.exists(entry.manifest_file)
            await vfs.release(fh)
            assert len(vfs.outbox) == 1  # nothing new to seal at the last close
            fh, _ = await vfs.create(ROOT_INO, "empty", 0o644, os.O_WRONLY)
            await vfs.flush(fh)
            await vfs.release(fh)
            assert vfs.outbox.latest("empty") is not None

    run(main)
