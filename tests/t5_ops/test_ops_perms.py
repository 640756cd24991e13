"""Ownership and permission rules (Linux's) below the kernel: who may chmod and chown, what
a write, a truncate and a chown clear, and the caller the Operations layer passes down."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from types import SimpleNamespace

import pyfuse3
import pytest
from vfs_testutil import open_vfs, run, x25519_identity

from b2cryptfs.fs.operations import Operations, caller_of
from b2cryptfs.vfs.core import Vfs
from b2cryptfs.vfs.fserror import OpError
from b2cryptfs.vfs.metadata import Caller
from b2cryptfs.vfs.namespace import ROOT_INO

ALICE = Caller(1000, 1000, frozenset({1000, 50}))
BOB = Caller(1001, 1001)
ROOT = Caller(0, 0)


def ctx_of(uid: int, gid: int, pid: int = 0) -> pyfuse3.RequestContext:
    # RequestContext cannot be built from Python; the Operations layer reads these fields.
    return SimpleNamespace(uid=uid, gid=gid, pid=pid, umask=0o022)  # type: ignore[return-value]


async def new_file(vfs: Vfs, name: str, mode: int, who: Caller, data: bytes = b"") -> int:
    fh, a = await vfs.create(ROOT_INO, name, mode, os.O_RDWR, who)
    if data:
        await vfs.write(fh, 0, data)
    await vfs.release(fh)
    return a.ino


def eperm(exc_info: pytest.ExceptionInfo[OpError]) -> bool:
    return exc_info.value.errno == errno.EPERM


def test_caller_from_the_request_context() -> None:
    me = caller_of(ctx_of(os.getuid(), os.getgid(), os.getpid()))
    assert me is not None and (me.uid, me.gid) == (os.getuid(), os.getgid())
    assert me.groups == frozenset(os.getgroups())
    gone = caller_of(ctx_of(1234, 5678, pid=2**22 + 12345))  # no such process: no groups
    assert gone == Caller(1234, 5678)
    assert caller_of(None) is None


def test_operations_pass_the_callers_owner_down(tmp_path: Path) -> None:
    async def main() -> None:
        async with open_vfs(tmp_path, identity=x25519_identity()) as vfs:
            ops = Operations(vfs)
            d = await ops.mkdir(ROOT_INO, b"d", 0o750, ctx_of(1000, 1000))
            assert (d.st_uid, d.st_gid, d.st_mode) == (1000, 1000, stat.S_IFDIR | 0o750)
            fi, f = await ops.create(d.st_ino, b"f", 0o640, os.O_WRONLY, ctx_of(1001, 1002))
            await ops.release(fi.fh)
            assert (f.st_uid, f.st_gid) == (1001, 1002)
            link = await ops.symlink(d.st_ino, b"l", b"f", ctx_of(1003, 1003))
            assert stat.S_ISLNK(link.st_mode) and link.st_uid == 1003
            assert await ops.readlink(link.st_ino, None) == b"f"
            dev = await ops.mknod(
                d.st_ino, b"null", stat.S_IFCHR | 0o666, os.makedev(1, 3), ctx_of(0, 0)
            )
            assert dev.st_rdev == os.makedev(1, 3) and stat.S_ISCHR(dev.st_mode)
            got = await ops.getattr(dev.st_ino, None)
            assert got.st_rdev == os.makedev(1, 3)

    run(main)


def test_only_the_owner_or_root_may_chmod(tmp_path: Path) -> None:
    async def main() -> None:
        async with open_vfs(tmp_path, identity=x25519_identity()) as vfs:
            ino = await new_file(vfs, "f", 0o644, ALICE)
            with pytest.raises(OpError) as ei:
                await vfs.setattr(ino, mode=0o666, caller=BOB)
            assert eperm(ei)
            assert (await vfs.setattr(ino, mode=0o600, caller=ALICE)).mode & 0o777 == 0o600
            assert (await vfs.setattr(ino, mode=0o4644, caller=ROOT)).mode & 0o7777 == 0o4644
            # The kernel clearing setuid after BOB's write comes as BOB's chmod: allowed.
            assert (await vfs.setattr(ino, mode=0o644, caller=BOB)).mode & 0o7777 == 0o644
            # setgid is dropped when the owner is not in the file's group.
            await vfs.setattr(ino, gid=4444, caller=ROOT)
            assert (await vfs.setattr(ino, mode=0o2755, caller=ALICE)).mode & 0o7777 == 0o755

    run(main)


def test_chown_rules(tmp_path: Path) -> None:
    async def main() -> None:
        async with open_vfs(tmp_path, identity=x25519_identity()) as vfs:
            ino = await new_file(vfs, "f", 0o755, ALICE)
            with pytest.raises(OpError) as ei:
                await vfs.setattr(ino, uid=1001, caller=ALICE)  # giving a file away
            assert eperm(ei)
            with pytest.raises(OpError) as ei:
                await vfs.setattr(ino, gid=1001, caller=ALICE)  # a group she is not in
            assert eperm(ei)
            with pytest.raises(OpError) as ei:
                await vfs.setattr(ino, gid=50, caller=BOB)  # not his file
            assert eperm(ei)
            a = await vfs.setattr(ino, uid=1000, gid=50, caller=ALICE)  # her own group: fine
            assert (a.uid, a.gid) == (1000, 50)
            # chown clears setuid, and setgid when group-exec is set, even by root.
            await vfs.setattr(ino, mode=0o6755, caller=ROOT)
            a = await vfs.setattr(ino, uid=1001, caller=ROOT)
            assert (a.uid, a.mode & 0o7777) == (1001, 0o755)
            await vfs.setattr(ino, mode=0o2745, caller=ROOT)  # setgid without group-exec
            assert (await vfs.setattr(ino, gid=0, caller=ROOT)).mode & 0o7777 == 0o2745
            # A directory keeps its setgid bit through a chown.
            d = await vfs.mkdir(ROOT_INO, "d", 0o2775, ALICE)
            assert (await vfs.setattr(d.ino, gid=50, caller=ALICE)).mode & 0o7777 == 0o2775

    run(main)


def test_write_and_truncate_by_others_clear_setuid_setgid(tmp_path: Path) -> None:
    async def main() -> None:
        async with open_vfs(tmp_path, identity=x25519_identity()) as vfs:
            ino = await new_file(vfs, "f", 0o6777, ROOT, b"data")
            assert (await vfs.getattr(ino)).mode & 0o7777 == 0o6777
            fh, _ = await vfs.open(ino, os.O_WRONLY, ROOT)
            await vfs.write(fh, 0, b"D")  # root's write keeps them
            await vfs.release(fh)
            assert (await vfs.getattr(ino)).mode & 0o7777 == 0o6777
            fh, _ = await vfs.open(ino, os.O_WRONLY, BOB)
            await vfs.write(fh, 0, b"B")
            await vfs.release(fh)
            assert (await vfs.getattr(ino)).mode & 0o7777 == 0o777
            # setgid without group-exec stays (it is not an executable's); truncate too.
            ino2 = await new_file(vfs, "g", 0o6745, ROOT, b"data")
            a = await vfs.setattr(ino2, size=2, caller=BOB)
            assert (a.size, a.mode & 0o7777) == (2, 0o2745)

    run(main)
