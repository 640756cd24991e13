"""rsync -a, cp -a and tar of a tree with links, modes, owners and a fifo (issue 7).

The tree is copied into a real mount (DirStore and the loopback B2); a second ``rsync -ai``
must print nothing, before and after a remount, and ``tar --numeric-owner`` of the mount must
equal ``tar`` of the source byte for byte: the mount kept everything tar records (names,
types, the 12 mode bits, uid/gid, mtimes to the nanosecond, link targets, sizes, content).
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from mountutil import (  # noqa: F401
    Keys,
    Mount,
    StoreSpec,
    dir_store,
    mount_store,
    mounted,
    requires_fuse,
    rsa_keys,
)

pytestmark = [
    *requires_fuse,
    pytest.mark.skipif(os.geteuid() != 0, reason="chown to other users needs root"),
    pytest.mark.skipif(shutil.which("rsync") is None, reason="no rsync"),
]

NS = 1_000_000_000
# A target longer than any name (NAME_MAX) but within PATH_MAX: 16 segments of 250 bytes.
LONG_TARGET = "/".join(f"{i:02d}" + "t" * 248 for i in range(16))
# name -> (kind, mode, uid, gid, mtime_ns, atime_ns, payload: content or link target)
TREE: list[tuple[str, str, int, int, int, int, int, str]] = [
    ("plain.txt", "file", 0o644, 0, 0, 1_600_000_000 * NS + 123_456_789, 1_500_000_000 * NS, "hello\n"),
    ("secret", "file", 0o600, 0, 0, 1_600_000_001 * NS + 1, 1_600_000_002 * NS + 2, "s" * 5000),
    ("run.sh", "file", 0o755, 0, 0, 1_600_000_003 * NS, 1_600_000_003 * NS, "#!/bin/sh\necho hi\n"),
    ("setuid", "file", 0o4755, 0, 0, 1_600_000_004 * NS + 999_999_999, 1_600_000_000 * NS, "x"),
    ("theirs", "file", 0o640, 1234, 5678, 1_400_000_000 * NS + 5, 1_400_000_000 * NS + 6, ""),
    ("private", "dir", 0o750, 0, 0, 1_300_000_000 * NS + 7, 1_300_000_000 * NS + 8, ""),
    ("private/data", "file", 0o600, 65534, 65534, 1_300_000_001 * NS, 1_300_000_001 * NS, "d" * 70_000),
    ("shared", "dir", 0o2775, 0, 4242, 1_300_000_002 * NS, 1_300_000_002 * NS, ""),
    ("shared/f", "file", 0o664, 1000, 4242, 1_300_000_003 * NS, 1_300_000_003 * NS, "shared\n"),
    ("tmp", "dir", 0o1777, 0, 0, 1_300_000_004 * NS, 1_300_000_004 * NS, ""),
    ("empty", "dir", 0o755, 0, 0, 1_200_000_000 * NS + 42, 1_200_000_000 * NS + 43, ""),
    ("owned", "dir", 0o700, 65534, 65534, 1_200_000_001 * NS, 1_200_000_001 * NS, ""),
    ("rel", "link", 0o777, 0, 0, 1_100_000_000 * NS + 11, 1_100_000_000 * NS + 11, "secret"),
    ("private/up", "link", 0o777, 1234, 5678, 1_100_000_001 * NS, 1_100_000_001 * NS, "../plain.txt"),
    ("abs", "link", 0o777, 0, 0, 1_100_000_002 * NS, 1_100_000_002 * NS, "/etc/hostname"),
    ("dangling", "link", 0o777, 0, 0, 1_100_000_003 * NS, 1_100_000_003 * NS, "no/such/file"),
    ("long", "link", 0o777, 0, 0, 1_100_000_004 * NS, 1_100_000_004 * NS, LONG_TARGET),
    ("fifo", "fifo", 0o640, 1234, 5678, 1_000_000_000 * NS + 3, 1_000_000_000 * NS + 4, ""),
    ("private/tty", "chr", 0o620, 0, 5, 1_000_000_001 * NS, 1_000_000_001 * NS, "4,64"),
    ("disk", "blk", 0o660, 0, 6, 1_000_000_002 * NS + 9, 1_000_000_002 * NS + 9, "259,65537"),
    ("sock", "sock", 0o755, 1234, 0, 1_000_000_003 * NS, 1_000_000_003 * NS, ""),
]  # fmt: skip
FMT = {
    "file": stat.S_IFREG, "dir": stat.S_IFDIR, "link": stat.S_IFLNK, "fifo": stat.S_IFIFO,
    "chr": stat.S_IFCHR, "blk": stat.S_IFBLK, "sock": stat.S_IFSOCK,
}  # fmt: skip


def _rdev(payload: str) -> int:
    major, minor = payload.split(",")
    return os.makedev(int(major), int(minor))


def make_tree(root: Path) -> None:
    """Build TREE under ``root``; times last, deepest first, so that no later step bumps them."""
    root.mkdir()
    for name, kind, mode, uid, gid, _mt, _at, payload in TREE:
        p = root / name
        if kind == "file":
            p.write_text(payload)
        elif kind == "dir":
            p.mkdir()
        elif kind == "link":
            p.symlink_to(payload)
        elif kind == "fifo":
            os.mkfifo(p)
        elif kind == "sock":
            with socket.socket(socket.AF_UNIX) as sock:
                sock.bind(str(p))  # the node stays when the socket closes
        else:
            os.mknod(p, FMT[kind] | mode, _rdev(payload))
        os.chown(p, uid, gid, follow_symlinks=False)
        if kind != "link":
            os.chmod(p, mode)  # after chown, which clears setuid/setgid
    set_times(root)


def set_times(root: Path) -> None:
    """TREE's times, deepest first; again after a readlink, which moves a link's atime (ext4)."""
    for name, _kind, _mode, _uid, _gid, mtime, atime, _payload in sorted(
        TREE, key=lambda e: -e[0].count("/")
    ):
        os.utime(root / name, ns=(atime, mtime), follow_symlinks=False)
    os.utime(root, ns=(1_000_000_000 * NS, 1_000_000_000 * NS + 1))


def check_tree(root: Path, *, atimes: bool) -> None:
    """What TREE says, read back with lstat/readlink only (no read that could move an atime)."""
    wrong = []
    for name, kind, mode, uid, gid, mtime, atime, payload in TREE:
        st = os.lstat(root / name)
        got = {
            "fmt": stat.S_IFMT(st.st_mode),
            "uid": st.st_uid,
            "gid": st.st_gid,
            "mtime": st.st_mtime_ns,
        }
        want = {
            "fmt": FMT[kind],
            "uid": uid,
            "gid": gid,
            "mtime": mtime,
        }
        if kind != "link":
            got["mode"], want["mode"] = stat.S_IMODE(st.st_mode), mode
        else:
            got["target"], want["target"] = os.readlink(root / name), payload
            got["size"], want["size"] = st.st_size, len(payload.encode())
        if kind == "file":
            got["size"], want["size"] = st.st_size, len(payload.encode())
        if kind in ("chr", "blk"):
            got["rdev"], want["rdev"] = st.st_rdev, _rdev(payload)
        if atimes:
            got["atime"], want["atime"] = st.st_atime_ns, atime
        if got != want:
            wrong.append(f"{name}: got {got}, want {want}")
    assert not wrong, "\n".join(wrong)


def tar_bytes(root: Path) -> bytes:
    """A deterministic archive of ``root``: sorted names, numeric owners, pax (ns mtimes, long
    link targets); atime and ctime left out (reading moves one, nobody can set the other)."""
    res = subprocess.run(
        ["tar", "-C", str(root), "-cf", "-", "--numeric-owner", "--sort=name",
         "--format=posix", "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime",
         "."],
        capture_output=True, timeout=120,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    return res.stdout


def tar_listing(root: Path) -> str:
    """The same archive as ``tar -tv`` lines, to show what differs when the bytes do."""
    res = subprocess.run(
        ["tar", "--numeric-owner", "--full-time", "-tvf", "-"],
        input=tar_bytes(root), capture_output=True, timeout=120,
    )  # fmt: skip
    return res.stdout.decode(errors="replace")


def assert_same_tar(src: Path, copy: Path) -> None:
    a, b = tar_bytes(src), tar_bytes(copy)
    if a != b:
        assert tar_listing(copy) == tar_listing(src)
        pytest.fail("tar archives differ in bytes although their listings agree")


def rsync(*args: str) -> str:
    res = subprocess.run(["rsync", *args], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, (
        f"rsync {' '.join(args)} exited {res.returncode}: {res.stderr[-3000:]}"
    )
    return res.stdout


@pytest.fixture
def src(tmp_path: Path) -> Iterator[Path]:
    old = os.umask(0o022)
    try:
        root = tmp_path / "src"
        make_tree(root)
        check_tree(root, atimes=True)  # the reference filesystem keeps it all
        set_times(root)
        yield root
    finally:
        os.umask(old)


class Remountable:
    def __init__(self, store: StoreSpec, keys: Keys, tmp_path: Path) -> None:
        self.store, self.keys = store, keys
        self.mnt, self.cache = tmp_path / "mnt", tmp_path / "cache"
        self.mount: Mount | None = Mount(store, self.mnt, self.cache, keys.args()).start()

    def remount(self) -> None:
        """A clean unmount (everything uploaded, exit 0), then a fresh daemon."""
        assert self.mount is not None
        m, self.mount = self.mount, None
        m.close(expect_exit=0)
        self.mount = Mount(self.store, self.mnt, self.cache, self.keys.args()).start()

    def close(self, *, check: bool = True) -> None:
        m, self.mount = self.mount, None
        if m is not None:
            m.close(expect_exit=0 if check else None)


@pytest.fixture
def mnt(mount_store: StoreSpec, rsa_keys: Keys, tmp_path: Path) -> Iterator[Remountable]:  # noqa: F811
    m = Remountable(mount_store, rsa_keys, tmp_path)
    try:
        yield m
    finally:
        m.close()


# Encrypted names seal the metadata; the openssl format stores links and nodes our own way.
VARIANTS = {"plain": [], "names": ["-o", "encrypt_names"], "openssl": ["--format", "openssl"]}


@pytest.mark.parametrize(
    "mount_store,variant",
    [("dir", "plain"), ("b2", "plain"), ("dir", "names"), ("b2", "openssl")],
    indirect=["mount_store"],
)
def test_rsync_a_then_nothing_to_do(
    src: Path,
    mount_store: StoreSpec,  # noqa: F811
    rsa_keys: Keys,  # noqa: F811
    tmp_path: Path,
    variant: str,
) -> None:
    mount_store.extra_args = VARIANTS[variant]
    mnt = Remountable(mount_store, rsa_keys, tmp_path)
    try:
        _rsync_round_trip(src, mnt)
        mnt.close()
    finally:
        mnt.close(check=False)


def _rsync_round_trip(src: Path, mnt: Remountable) -> None:
    dst = mnt.mnt / "tree"
    rsync("-a", f"{src}/", f"{dst}/")
    assert rsync("-ai", f"{src}/", f"{dst}/") == "", "a second rsync -ai found changes"
    assert_same_tar(src, dst)
    mnt.remount()
    assert rsync("-ai", f"{src}/", f"{dst}/") == "", "changed by the remount"
    check_tree(dst, atimes=False)
    assert_same_tar(src, dst)
    assert (dst / "rel").read_text() == "s" * 5000  # the link resolves inside the mount
    _special_files_work(dst)
    # And back out (a restore): the copy of the copy is the source again.
    back = mnt.cache.parent / "back"
    rsync("-a", f"{dst}/", f"{back}/")
    assert_same_tar(src, back)


def _special_files_work(dst: Path) -> None:
    """The restored FIFO is a pipe on this machine; device nodes exist but nodev holds."""
    rd = os.open(dst / "fifo", os.O_RDONLY | os.O_NONBLOCK)  # non-blocking: never hangs
    try:
        wr = os.open(dst / "fifo", os.O_WRONLY | os.O_NONBLOCK)
        try:
            os.write(wr, b"through the pipe")
            assert os.read(rd, 100) == b"through the pipe"
        finally:
            os.close(wr)
    finally:
        os.close(rd)
    with pytest.raises(PermissionError):
        (dst / "disk").open("rb")


@pytest.mark.parametrize("mount_store", ["dir", "b2"], indirect=True)
def test_cp_a_keeps_everything(src: Path, mnt: Remountable) -> None:
    dst = mnt.mnt / "copy"
    res = subprocess.run(["cp", "-a", str(src), str(dst)], capture_output=True, text=True)
    assert res.returncode == 0 and res.stderr == "", res.stderr
    check_tree(dst, atimes=True)  # cp -a also sets atimes, to the nanosecond
    mnt.remount()
    check_tree(dst, atimes=True)
    assert_same_tar(src, dst)
    assert rsync("-ai", f"{src}/", f"{dst}/") == ""


@pytest.mark.parametrize(
    "mount_store,variant", [("dir", "plain"), ("b2", "names")], indirect=["mount_store"]
)
def test_rsync_into_the_mount_root(
    src: Path,
    mount_store: StoreSpec,  # noqa: F811
    rsa_keys: Keys,  # noqa: F811
    tmp_path: Path,
    variant: str,
) -> None:
    """``rsync -a SRC/ MNT/`` sets the root's own mode, owner and mtime; ext4 keeps them (in
    the root object, b2cryptfs-format(5))."""
    os.chown(src, 1234, 5678)
    os.chmod(src, 0o750)  # neither the mount's default nor the mounting user
    mount_store.extra_args = VARIANTS[variant]
    mnt = Remountable(mount_store, rsa_keys, tmp_path)
    try:
        rsync("-a", f"{src}/", f"{mnt.mnt}/")
        assert rsync("-ai", f"{src}/", f"{mnt.mnt}/") == ""
        mnt.remount()
        assert rsync("-ai", f"{src}/", f"{mnt.mnt}/") == "", "changed by the remount"
        mnt.close()
    finally:
        mnt.close(check=False)


def test_hard_links_and_xattrs_refused(mnt: Remountable) -> None:
    (mnt.mnt / "a").write_text("one name\n")
    with pytest.raises(OSError) as ei:
        os.link(mnt.mnt / "a", mnt.mnt / "b")
    assert ei.value.errno == errno.EPERM
    assert sorted(os.listdir(mnt.mnt)) == ["a"] and os.stat(mnt.mnt / "a").st_nlink == 1
    assert "hard links are not supported" in mnt.mount.log()
    with pytest.raises(OSError) as ei:  # no xattrs or ACLs: the mode bits are all there is
        os.setxattr(mnt.mnt / "a", "user.comment", b"x")
    assert ei.value.errno == errno.ENOTSUP


@pytest.mark.parametrize("mount_store", ["dir", "b2"], indirect=True)
def test_tar_x_restores_into_the_mount(src: Path, mnt: Remountable) -> None:
    """The restore direction: an archive unpacked into the mount, read back after a remount."""
    archive = tar_bytes(src)
    dst = mnt.mnt / "restored"
    dst.mkdir()
    res = subprocess.run(
        ["tar", "-C", str(dst), "-xpf", "-", "--numeric-owner"],
        input=archive, capture_output=True, timeout=300,
    )  # fmt: skip
    assert res.returncode == 0 and res.stderr == b"", res.stderr.decode(errors="replace")
    mnt.remount()
    assert_same_tar(src, dst)


def _sample_decrypt(store: Path, name: str, keys: Keys) -> bytes:
    """Backblaze's sample decrypt commands, as b2cryptfs-format(5) quotes them."""
    res = subprocess.run(
        f"openssl rsautl -decrypt -inkey {keys.plain_private} -in {store / name}.key.enc"
        f" | openssl enc -aes-256-cbc -d -a -pass stdin -in {store / name}.enc",
        shell=True, capture_output=True, timeout=60,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    return res.stdout


def test_openssl_store_links_are_our_own(rsa_keys: Keys, tmp_path: Path) -> None:  # noqa: F811
    """What mount.b2cryptfs(8) says: the sample's commands see a link as a small file holding
    its target and a FIFO as an empty file; the mount gives both back as they were."""
    spec = dir_store(tmp_path)
    spec.extra_args = ["--format", "openssl"]
    mnt = Remountable(spec, rsa_keys, tmp_path)
    try:
        os.symlink("../some/target", mnt.mnt / "link")
        os.mkfifo(mnt.mnt / "fifo", 0o640)
        mnt.remount()
        assert os.readlink(mnt.mnt / "link") == "../some/target"
        assert stat.S_ISFIFO(os.lstat(mnt.mnt / "fifo").st_mode)
        mnt.close()
    finally:
        mnt.close(check=False)
    assert spec.root is not None
    assert _sample_decrypt(spec.root, "link", rsa_keys) == b"../some/target"
    assert _sample_decrypt(spec.root, "fifo", rsa_keys) == b""


def test_write_only_mount_keeps_metadata(rsa_keys: Keys, tmp_path: Path) -> None:  # noqa: F811
    """Public key only: metadata, links and FIFOs need no private key; a link's target does."""
    spec = dir_store(tmp_path)
    mnt, cache = tmp_path / "mnt", tmp_path / "cache"
    with mounted(spec, mnt, cache, rsa_keys.args()):
        (mnt / "f").write_text("content\n")
        os.symlink("f", mnt / "old-link")
    with mounted(spec, mnt, tmp_path / "cache-wo", rsa_keys.args(write_only=True)):
        os.chmod(mnt / "f", 0o4750)
        os.chown(mnt / "f", 1234, 5678)  # drops setuid, as chown does
        os.utime(mnt / "f", ns=(1_000_000_000_000_000_001, 1_100_000_000_000_000_002))
        os.symlink("f", mnt / "new-link")
        os.mkfifo(mnt / "fifo", 0o600)
        assert os.lstat(mnt / "old-link").st_size == 1
        with pytest.raises(PermissionError):
            os.readlink(mnt / "old-link")
    with mounted(spec, mnt, cache, rsa_keys.args()):
        st = os.stat(mnt / "f")
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o750, 1234, 5678)
        assert (st.st_atime_ns, st.st_mtime_ns) == (10**18 + 1, 11 * 10**17 + 2)
        assert (
            os.readlink(mnt / "new-link") == "f" and (mnt / "new-link").read_text() == "content\n"
        )
        assert stat.S_ISFIFO(os.lstat(mnt / "fifo").st_mode)


def _dir_mtime_after_remount(mnt: Remountable, explicit: bool) -> tuple[int, int]:
    d = mnt.mnt / ("explicit" if explicit else "implicit")
    d.mkdir()
    if explicit:
        os.utime(d, ns=(1_500_000_000 * NS, 1_500_000_000 * NS))
    (d / "x").write_text("a new name sets its directory's mtime\n")
    (d / "y").write_text("")
    (d / "y").unlink()
    before = os.stat(d).st_mtime_ns
    assert before > 1_500_000_000 * NS
    mnt.remount()
    return before, os.stat(d).st_mtime_ns


def test_directory_mtime_follows_its_entries(mnt: Remountable) -> None:
    before, after = _dir_mtime_after_remount(mnt, explicit=True)
    assert after == before


@pytest.mark.parametrize("mount_store", ["dir", "b2"], indirect=True)
def test_directory_mtime_kept_without_an_explicit_time(mnt: Remountable) -> None:
    before, after = _dir_mtime_after_remount(mnt, explicit=False)
    assert after == before


@pytest.mark.parametrize("mount_store", ["dir", "b2"], indirect=True)
def test_ctime_follows_changes_and_survives_a_remount(mnt: Remountable) -> None:
    """st_ctime is the last change of content, metadata or name, not the mtime (ext4)."""
    f, d = mnt.mnt / "f", mnt.mnt / "d"
    f.write_text("x\n")
    d.mkdir()
    start = os.stat(f).st_ctime_ns
    for p in (f, d):
        os.utime(p, ns=(1_300_000_000 * NS, 1_300_000_000 * NS))  # as rsync -a and tar -x do
        st = os.stat(p)
        assert st.st_mtime_ns == 1_300_000_000 * NS and st.st_ctime_ns >= start
    os.chmod(f, 0o600)
    f.rename(mnt.mnt / "g")
    d.rename(mnt.mnt / "e")
    before = {n: os.stat(mnt.mnt / n).st_ctime_ns for n in ("g", "e")}
    assert min(before.values()) >= start
    mnt.remount()
    assert {n: os.stat(mnt.mnt / n).st_ctime_ns for n in ("g", "e")} == before
