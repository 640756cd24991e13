"""A second user on an allow_other mount: the stored owners and modes decide (issue 7 item 4).

Root mounts (DirStore and the loopback B2) with ``--allow-other``; the second user is nobody
(65534:65534, no supplementary groups) through ``setpriv``, running the system's python with
plain os calls, so the kernel (``default_permissions``) checks the real credentials.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from mountutil import Keys, Mount, StoreSpec, mount_store, requires_fuse, rsa_keys  # noqa: F401

NOBODY = 65534
GROUP = 4242  # a group nobody is not in
SYSTEM_PATH = "/usr/bin:/bin"
PYTHON = shutil.which("python3", path=SYSTEM_PATH)
SETPRIV = shutil.which("setpriv", path=SYSTEM_PATH + ":/usr/sbin:/sbin")

pytestmark = [
    *requires_fuse,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount for another user"),
    pytest.mark.skipif(PYTHON is None or SETPRIV is None, reason="needs setpriv and python3"),
]

# Runs as nobody: each op -> "ok", "ok:<value>" or the errno's name.
_AGENT = r"""
import errno, json, os, sys
out = []
for op, path, *args in json.loads(sys.argv[1]):
    try:
        if op == "read":
            with open(path, "rb") as fh:
                res = fh.read().decode()
        elif op == "write":
            fd = os.open(path, os.O_WRONLY)
            os.write(fd, b"more")
            os.close(fd)
            res = None
        elif op == "create":
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, args[0])
            os.write(fd, args[1].encode())
            os.close(fd)
            res = None
        elif op == "mkdir":
            os.mkdir(path, args[0])
            res = None
        elif op == "unlink":
            os.unlink(path)
            res = None
        elif op == "rename":
            os.rename(path, args[0])
            res = None
        elif op == "chmod":
            os.chmod(path, args[0])
            res = None
        elif op == "chown":
            os.chown(path, args[0], args[1])
            res = None
        elif op == "utime":
            os.utime(path, ns=(args[0], args[0]))
            res = None
        elif op == "symlink":
            os.symlink(args[0], path)
            res = None
        elif op == "mkfifo":
            os.mkfifo(path, args[0])
            res = None
        elif op == "touch":  # to the current time: write permission is enough
            os.utime(path)
            res = None
        out.append("ok" if res is None else "ok:" + res)
    except OSError as exc:
        out.append(errno.errorcode.get(exc.errno, str(exc.errno)))
print(json.dumps(out))
"""


def as_nobody(*ops: tuple) -> list[str]:
    """Run ``ops`` as uid/gid 65534 without supplementary groups; one result per op."""
    res = subprocess.run(
        [SETPRIV, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
         PYTHON, "-I", "-c", _AGENT, json.dumps(ops)],
        capture_output=True, text=True, timeout=120, cwd="/",
        env={"PATH": SYSTEM_PATH, "LANG": "C.UTF-8"},
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


@pytest.fixture
def reachable() -> Iterator[Path]:
    """A mountpoint nobody can reach: pytest's own tmp tree is root-only (0700)."""
    top = Path(tempfile.mkdtemp(prefix="b2cryptfs-perm-"))
    top.chmod(0o755)
    try:
        yield top / "mnt"
    finally:
        with contextlib.suppress(OSError):
            (top / "mnt").rmdir()
        with contextlib.suppress(OSError):
            top.rmdir()


def _mount(store: StoreSpec, keys: Keys, mnt: Path, cache: Path) -> Mount:
    return Mount(store, mnt, cache, keys.args(), extra_args=["--allow-other"]).start()


def _owner(p: Path) -> tuple[int, int, int]:
    st = os.lstat(p)
    return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)


def _root_setup(m: Path) -> None:
    """Root's side: a secret, a public file, a root directory, a /tmp, a setgid directory."""
    (m / "secret").write_text("root only\n")
    (m / "secret").chmod(0o600)
    (m / "public").write_text("everyone reads\n")
    (m / "public").chmod(0o644)
    (m / "rootdir").mkdir(0o755)
    (m / "tmp").mkdir()
    (m / "tmp").chmod(0o1777)
    (m / "tmp" / "roots").write_text("mine\n")
    (m / "tmp" / "roots").chmod(0o666)  # writable by all, still not removable by them
    (m / "sgid").mkdir()
    os.chown(m / "sgid", 0, GROUP)
    (m / "sgid").chmod(0o2777)
    (m / "suid").write_text("#!/bin/sh\n")
    (m / "suid").chmod(0o6777)  # anyone may write; a write by another user drops both bits
    (m / "moved").write_text("keeps its group\n")
    os.rename(m / "moved", m / "sgid" / "moved")  # a rename is no creation: gid stays 0
    (m / "given").write_text("given away\n")
    (m / "given").chmod(0o6755)
    os.chown(m / "given", 1234, 1234)  # chown drops setuid, and setgid with group-exec


def _check_kept(m: Path) -> None:
    """What the second user did and could not do, as root sees it."""
    assert _owner(m / "secret") == (0, 0, 0o600)
    assert (m / "secret").read_text() == "root only\n"
    assert (m / "public").read_text() == "everyone reads\n"
    assert _owner(m / "public") == (0, 0, 0o644)
    assert sorted(os.listdir(m / "rootdir")) == []
    assert _owner(m / "tmp") == (0, 0, 0o1777)
    assert sorted(os.listdir(m / "tmp")) == ["his", "hislink", "roots"]
    assert (os.lstat(m / "tmp" / "hislink").st_uid, os.readlink(m / "tmp" / "hislink")) == (
        NOBODY,
        "his",
    )
    assert _owner(m / "sgid" / "pipe") == (NOBODY, GROUP, 0o640)
    assert stat.S_ISFIFO(os.lstat(m / "sgid" / "pipe").st_mode)
    assert _owner(m / "tmp" / "his") == (NOBODY, NOBODY, 0o2640)
    assert (m / "tmp" / "his").read_text() == "his own\n"
    # Under a setgid directory: the directory's group, and a subdirectory inherits the bit.
    assert _owner(m / "sgid") == (0, GROUP, 0o2777)
    assert _owner(m / "sgid" / "f") == (NOBODY, GROUP, 0o755)  # chmod 2755 dropped setgid
    assert _owner(m / "sgid" / "sub") == (NOBODY, GROUP, 0o2755)
    assert _owner(m / "sgid" / "moved") == (0, 0, 0o644)
    assert _owner(m / "suid") == (0, 0, 0o777)
    assert _owner(m / "given") == (1234, 1234, 0o755)


@pytest.mark.parametrize(
    "mount_store,names",
    [("dir", False), ("b2", False), ("b2", True)],  # encrypted names: the metadata is sealed
    indirect=["mount_store"],
)
def test_second_user_is_held_to_owners_and_modes(
    mount_store: StoreSpec,  # noqa: F811
    rsa_keys: Keys,  # noqa: F811
    tmp_path: Path,
    reachable: Path,
    names: bool,
) -> None:
    if names:
        mount_store.extra_args = ["-o", "encrypt_names"]
    old = os.umask(0o022)
    m = reachable
    mount = _mount(mount_store, rsa_keys, m, tmp_path / "cache")
    try:
        _root_setup(m)
        got = as_nobody(
            ("read", str(m / "secret")),
            ("read", str(m / "public")),
            ("write", str(m / "public")),
            ("create", str(m / "rootdir" / "new"), 0o644, "x"),
            ("mkdir", str(m / "rootdir" / "newdir"), 0o755),
            ("unlink", str(m / "tmp" / "roots")),
            ("rename", str(m / "tmp" / "roots"), str(m / "tmp" / "stolen")),
            ("write", str(m / "tmp" / "roots")),  # 0666: writing is allowed, removing is not
            ("create", str(m / "tmp" / "his"), 0o640, "his own\n"),
            ("create", str(m / "tmp" / "gone"), 0o600, "short-lived\n"),
            ("unlink", str(m / "tmp" / "gone")),
            ("chmod", str(m / "public"), 0o666),
            ("utime", str(m / "public"), 1_000_000_000_000_000_000),
            ("chown", str(m / "tmp" / "his"), 0, 0),
            ("chown", str(m / "tmp" / "his"), NOBODY, GROUP),
            ("chown", str(m / "public"), NOBODY, NOBODY),
            ("create", str(m / "sgid" / "f"), 0o644, ""),
            ("mkdir", str(m / "sgid" / "sub"), 0o755),
            ("write", str(m / "suid")),
            ("touch", str(m / "tmp" / "roots")),
            ("touch", str(m / "public")),
            ("symlink", str(m / "tmp" / "hislink"), "his"),
            ("mkfifo", str(m / "sgid" / "pipe"), 0o640),
            ("symlink", str(m / "rootdir" / "link"), "x"),
            ("create", str(m / "tmp" / "his2"), 0o644, "over?"),
            ("rename", str(m / "tmp" / "his2"), str(m / "tmp" / "roots")),  # sticky target
            ("unlink", str(m / "tmp" / "his2")),
            ("chmod", str(m / "sgid" / "f"), 0o2755),  # his file, but not his group (4242)
            ("chmod", str(m / "tmp" / "his"), 0o2640),  # his group: setgid stays
        )
        assert got == [
            "EACCES",  # read of root's 0600 file
            "ok:everyone reads\n",
            "EACCES",  # write to root's 0644 file
            "EACCES",  # create in root's 0755 directory
            "EACCES",
            "EPERM",  # sticky: not his file, not his directory
            "EPERM",
            "ok",
            "ok",
            "ok",
            "ok",  # his own file in the sticky directory
            "EPERM",  # chmod by a non-owner
            "EPERM",  # an explicit time by a non-owner
            "EPERM",  # chown to another user, by a non-root owner
            "EPERM",  # chgrp to a group he is not in
            "EPERM",
            "ok",
            "ok",
            "ok",
            "ok",  # touch of a file he may write
            "EACCES",  # touch of one he may not
            "ok",
            "ok",
            "EACCES",
            "ok",
            "EPERM",  # not over root's file in a sticky directory
            "ok",
            "ok",
            "ok",
        ]
        assert (m / "tmp" / "roots").read_text() == "more\n"  # "mine\n", overwritten at 0
        _check_kept(m)
        first, mount = mount, None
        first.close(expect_exit=0)
        mount = _mount(mount_store, rsa_keys, m, tmp_path / "cache")
        _check_kept(m)
        # Still enforced after the remount, from what the bucket kept.
        assert as_nobody(("read", str(m / "secret")), ("unlink", str(m / "tmp" / "roots"))) == [
            "EACCES",
            "EPERM",
        ]
    finally:
        if mount is not None:
            mount.close(expect_exit=0)
        os.umask(old)
