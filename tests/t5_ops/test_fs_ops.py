"""The pyfuse3 Operations layer called directly (no kernel): conversions and errno mapping."""

from __future__ import annotations

import errno
import logging
import os
import stat
from pathlib import Path

import pyfuse3
import pytest
from vfs_testutil import open_vfs, run, x25519_identity

from b2cryptfs.errors import IntegrityError, NameCollision
from b2cryptfs.fs.handlers import handler, quiet
from b2cryptfs.fs.mount import fuse_options
from b2cryptfs.fs.operations import Operations
from b2cryptfs.vfs.config import MountConfig
from b2cryptfs.vfs.namespace import ROOT_INO


def fuse_errno(exc_info: pytest.ExceptionInfo[pyfuse3.FUSEError]) -> int:
    return exc_info.value.errno


def test_handler_maps_errors_and_survives_bugs(caplog) -> None:
    @handler
    async def bug() -> None:
        raise ValueError("a bug")

    @handler
    async def expected() -> None:
        raise NameCollision("clash")

    @handler
    async def integrity() -> None:
        raise IntegrityError("tampered")

    @handler
    async def oserror() -> None:
        raise OSError(errno.ENOSPC, "full")

    @quiet
    async def silent() -> None:
        raise RuntimeError("never escapes")

    caplog.set_level(logging.DEBUG)
    for fn, code in [
        (bug, errno.EIO),
        (expected, errno.EEXIST),
        (integrity, errno.EIO),
        (oserror, errno.ENOSPC),
    ]:
        with pytest.raises(pyfuse3.FUSEError) as ei:
            run(fn)
        assert fuse_errno(ei) == code
    assert run(silent) is None
    assert "unexpected error in bug" in caplog.text and "ValueError: a bug" in caplog.text


def test_operations_roundtrip_and_errnos(tmp_path: Path) -> None:
    ident = x25519_identity()

    async def main() -> None:
        async with open_vfs(tmp_path, identity=ident) as vfs:
            ops = Operations(vfs)
            with pytest.raises(pyfuse3.FUSEError) as ei:
                await ops.lookup(ROOT_INO, b"missing", None)
            assert fuse_errno(ei) == errno.ENOENT
            with pytest.raises(pyfuse3.FUSEError) as ei:
                await ops.lookup(ROOT_INO, b"\xff\xfe", None)
            assert fuse_errno(ei) == errno.ENOENT
            with pytest.raises(pyfuse3.FUSEError) as ei:
                await ops.create(ROOT_INO, b"x" * 256, 0o644, os.O_WRONLY, None)
            assert fuse_errno(ei) == errno.ENAMETOOLONG

            fi, attr = await ops.create(ROOT_INO, b"f.txt", 0o100640, os.O_RDWR, None)
            assert stat.S_ISREG(attr.st_mode) and attr.st_mode & 0o777 == 0o640
            assert attr.st_uid == os.getuid() and attr.st_nlink == 1
            assert await ops.write(fi.fh, 0, b"hello") == 5
            assert await ops.read(fi.fh, 1, 3) == b"ell"
            await ops.flush(fi.fh)
            await ops.release(fi.fh)

            entry = await ops.lookup(ROOT_INO, b"f.txt", None)
            assert entry.st_size == 5 and entry.st_ino == attr.st_ino
            assert entry.attr_timeout <= 1.0
            fi = await ops.open(entry.st_ino, os.O_RDONLY, None)
            assert not fi.direct_io  # the page cache makes mmap work
            assert await ops.read(fi.fh, 0, 100) == b"hello"
            await ops.release(fi.fh)
            fi2 = await ops.open(entry.st_ino, os.O_RDONLY, None)
            await ops.release(fi2.fh)
            await vfs.outbox.drain()

            assert b"user.b2cryptfs.format" in await ops.listxattr(entry.st_ino, None)
            assert await ops.getxattr(entry.st_ino, b"user.b2cryptfs.format", None) == b"age"
            with pytest.raises(pyfuse3.FUSEError) as ei:
                await ops.getxattr(entry.st_ino, b"user.nope", None)
            assert fuse_errno(ei) == pyfuse3.ENOATTR
            for other in (b"security.selinux", b"system.posix_acl_access", b"trusted.x"):
                with pytest.raises(pyfuse3.FUSEError) as ei:  # no such namespace at all
                    await ops.getxattr(entry.st_ino, other, None)
                assert fuse_errno(ei) == errno.EOPNOTSUPP
            for call, code in [
                (ops.setxattr(entry.st_ino, b"user.x", b"1", None), errno.ENOTSUP),
                (ops.removexattr(entry.st_ino, b"user.x", None), errno.ENOTSUP),
                (ops.link(entry.st_ino, ROOT_INO, b"hard", None), errno.EPERM),
                (ops.symlink(ROOT_INO, b"f.txt", b"elsewhere", None), errno.EEXIST),
                (ops.readlink(entry.st_ino, None), errno.EINVAL),
                (ops.read(9999, 0, 1), errno.EBADF),
                (ops.rmdir(ROOT_INO, b"f.txt", None), errno.ENOTDIR),
                (ops.unlink(ROOT_INO, b"missing", None), errno.ENOENT),
            ]:
                with pytest.raises(pyfuse3.FUSEError) as ei:
                    await call
                assert fuse_errno(ei) == code

            fields = pyfuse3.SetattrFields()
            new = pyfuse3.EntryAttributes()
            new.st_mode = stat.S_IFREG | 0o600
            # SetattrFields is read-only from Python: only a chmod through the vfs here.
            got = await ops.setattr(entry.st_ino, new, fields, None, None)
            assert got.st_size == 5

            d = await ops.mkdir(ROOT_INO, b"dir", 0o755, None)
            assert stat.S_ISDIR(d.st_mode)
            await ops.rename(ROOT_INO, b"f.txt", d.st_ino, b"g.txt", 0, None)
            await ops.forget([(entry.st_ino, 1), (123456, 5)])  # unknown inodes are fine
            sv = await ops.statfs(None)
            assert sv.f_blocks > 0 and sv.f_namemax == 255
            await ops.unlink(d.st_ino, b"g.txt", None)
            await ops.rmdir(ROOT_INO, b"dir", None)

    run(main)


def test_fuse_options() -> None:
    cfg = MountConfig(store_url="b2://bucket/pre,fix", mountpoint="/mnt", read_only=True)
    opts = fuse_options(cfg)
    assert opts == {
        "fsname=b2://bucket/pre\\,fix",
        "subtype=b2cryptfs",
        "default_permissions",
        "ro",
    }
    cfg = MountConfig(store_url="/data", mountpoint="/mnt", allow_other=True, fsname="mystore")
    cfg.fuse_options = ["auto_unmount"]  # type: ignore[attr-defined]
    opts = fuse_options(cfg)
    assert {"fsname=mystore", "allow_other", "auto_unmount"} <= opts and "ro" not in opts


def test_run_mount_refuses_before_mounting(tmp_path: Path) -> None:
    from b2cryptfs.cache.cachedir import CacheDir
    from b2cryptfs.errors import B2CryptfsError, CacheDirBusy
    from b2cryptfs.fs.mount import run_mount
    from b2cryptfs.store.dirstore import DirStore

    store = DirStore(str(tmp_path / "store"), create=True)
    ident = x25519_identity()
    cfg = MountConfig(
        store_url=store.url,
        mountpoint=str(tmp_path / "missing"),
        recipients=[ident.recipient()],
        identities=[ident],
        cache_dir=str(tmp_path / "cache"),
    )
    called = []
    with pytest.raises(B2CryptfsError) as ei:
        run_mount(cfg, store, lambda: called.append(1))
    assert "mountpoint" in str(ei.value)
    (tmp_path / "mnt").mkdir()
    cfg.mountpoint = str(tmp_path / "mnt")
    holder = CacheDir(cfg.cache_dir, store.url)  # another mount of the same store
    try:
        with pytest.raises(CacheDirBusy):
            run_mount(cfg, store, lambda: called.append(1))
    finally:
        holder.close()
    assert called == []
