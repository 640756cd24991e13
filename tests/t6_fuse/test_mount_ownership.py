"""Mount options uid=, gid=, umask= for files without stored ownership; statfs; the
passphrase leaves the daemon's environment; mount -t b2cryptfs through /sbin."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from mountutil import dir_store, force_unmount, is_mounted, mounted, requires_fuse, rsa_keys  # noqa: F401
from vfs_testutil import make_config, open_vfs, run, x25519_identity

from b2cryptfs.bucket.factory import make_pairs
from b2cryptfs.store.dirstore import DirStore
from b2cryptfs.vfs.namespace import ROOT_INO


def _seed(tmp_path: Path, ident) -> DirStore:
    """A store with one file and one directory, without any ownership metadata."""
    store = DirStore(str(tmp_path / "store"), create=True)
    pairs = make_pairs(make_config(tmp_path, store, identity=ident), store)
    src = tmp_path / "src.txt"
    src.write_text("seeded")
    pairs.put_file("docs/a.txt", str(src))
    return store


@pytest.mark.parametrize(
    "options,want",
    [
        ({}, (os.getuid(), os.getgid(), 0o644, 0o755)),
        ({"uid": 4321, "gid": 4322, "umask": 0o027}, (4321, 4322, 0o640, 0o750)),
        ({"umask": 0o077}, (os.getuid(), os.getgid(), 0o600, 0o700)),
    ],
)
def test_default_owner_and_mode(tmp_path: Path, options, want) -> None:
    ident = x25519_identity()
    store = _seed(tmp_path, ident)

    async def main() -> None:
        async with open_vfs(tmp_path, store=store, identity=ident, **options) as vfs:
            d = await vfs.lookup(ROOT_INO, "docs")
            f = await vfs.lookup(d.ino, "a.txt")
            assert (f.uid, f.gid, stat.S_IMODE(f.mode)) == want[:3]
            assert (d.uid, d.gid, stat.S_IMODE(d.mode)) == (*want[:2], want[3])
            root = await vfs.getattr(ROOT_INO)
            assert stat.S_IMODE(root.mode) == want[3]

    run(main)


def test_statfs_block_sizes_and_cache_disk_space(tmp_path: Path) -> None:
    async def main() -> None:
        async with open_vfs(tmp_path, identity=x25519_identity()) as vfs:
            st = vfs.statfs()
            disk = os.statvfs(tmp_path / "cache")
            assert st["f_bsize"] == st["f_frsize"]
            free = st["f_bavail"] * st["f_frsize"]
            real = disk.f_bavail * disk.f_frsize
            # The cache disk's free space (other processes write meanwhile: a loose bound).
            assert abs(free - real) <= max(64 << 20, real // 10), (free, real)
            assert st["f_bfree"] == st["f_bavail"] <= st["f_blocks"]

    run(main)


def _drop_metadata(url: str, name: str) -> None:
    """Remove the POSIX metadata from one stored object's info (put stores it today)."""
    from b2cryptfs.bucket.meta import META_KEY
    from b2cryptfs.store import open_store

    store = open_store(url)
    obj = store.stat(name)
    assert obj is not None and META_KEY in obj.info
    store.update_info(obj, {k: v for k, v in obj.info.items() if k != META_KEY})


@pytest.mark.fuse
@pytest.mark.skipif(shutil.which("fusermount3") is None, reason="no FUSE")
def test_mount_options_and_passphrase_dropped(tmp_path: Path, rsa_keys) -> None:  # noqa: F811
    for mark in requires_fuse:
        if mark.name == "skipif" and mark.args[0]:
            pytest.skip(mark.kwargs.get("reason", "no FUSE"))
    store = dir_store(tmp_path)
    src = tmp_path / "a.txt"
    src.write_text("hello")
    env = dict(store.env)
    passphrase = rsa_keys.passphrase_file.read_text().strip()
    env["B2CRYPTFS_PASSPHRASE"] = passphrase
    subprocess.run(
        ["python3", "-m", "b2cryptfs", "put", "-q", "--public-key", str(rsa_keys.public), str(src),
         f"{store.url}/"], env=env, check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    _drop_metadata(store.url, "a.txt.enc")  # as written before metadata was kept
    store.env = env
    mnt = tmp_path / "mnt"
    with mounted(
        store, mnt, tmp_path / "cache", ["--private-key", str(rsa_keys.private)],
        extra_args=["-o", "uid=1234,gid=2345,umask=077"], daemon=True,
    ) as m:  # fmt: skip
        st = os.stat(mnt / "a.txt")
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1234, 2345, 0o600)
        assert stat.S_IMODE(os.stat(mnt).st_mode) == 0o700
        assert (mnt / "a.txt").read_text() == "hello"
        environ = Path(f"/proc/{m.pid}/environ").read_bytes()
        assert b"B2CRYPTFS_PASSPHRASE" not in environ
        assert passphrase.encode() not in environ


@pytest.mark.fuse
def test_mount_t_b2cryptfs(tmp_path: Path, rsa_keys) -> None:  # noqa: F811
    helper = Path("/sbin/mount.b2cryptfs")
    if os.geteuid() != 0 or not helper.exists() or shutil.which("mount") is None:
        pytest.skip("needs root and scripts/install.sh's /sbin/mount.b2cryptfs")
    store = dir_store(tmp_path)
    (store.root / "x").mkdir()
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    opts = f"{rsa_keys.o_options()},cache_dir={tmp_path / 'cache'}"
    proc = subprocess.run(
        ["mount", "-t", "b2cryptfs", str(store.root), str(mnt), "-o", opts],
        env=store.env, capture_output=True, timeout=120,
    )  # fmt: skip
    try:
        assert proc.returncode == 0, proc.stderr
        assert is_mounted(mnt) and os.listdir(mnt) == ["x"]
    finally:
        if is_mounted(mnt):
            subprocess.run(["umount", str(mnt)], timeout=120)
        if is_mounted(mnt):
            force_unmount(mnt)
