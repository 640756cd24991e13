"""A file removed or renamed while open: still readable and writable through its descriptor, never
back under its old name, uploaded under the new one (issue 7 item 5), end to end on a real
mount, DirStore and the loopback B2."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from mountutil import Keys, Mount, StoreSpec, mount_store, mounted, requires_fuse, rsa_keys  # noqa: F401

pytestmark = requires_fuse

DATA = bytes(range(256)) * 1200  # 300 KiB: several chunks, so the read goes to the store


def _live_objects(store: StoreSpec, stem: str) -> list[str]:
    """Objects for ``stem`` that a listing still shows (B2: latest version not a hide marker)."""
    if store.kind == "dir":
        assert store.root is not None
        return sorted(p.name for p in store.root.iterdir() if p.name.startswith(stem + "."))
    latest: dict[str, str] = {}
    for v in sorted(store.server.file_versions(store.bucket), key=lambda v: v["uploadTimestamp"]):
        latest[v["fileName"]] = v["action"]
    return sorted(n for n, a in latest.items() if n.startswith(stem + ".") and a != "hide")


def _read_fd(fd: int) -> bytes:
    os.lseek(fd, 0, os.SEEK_SET)
    parts = []
    while chunk := os.read(fd, 1 << 16):
        parts.append(chunk)
    return b"".join(parts)


@pytest.mark.parametrize("mount_store", ["dir", "b2"], indirect=True)
def test_open_unlink_read(mount_store: StoreSpec, rsa_keys: Keys, tmp_path: Path) -> None:  # noqa: F811
    mnt, cache = tmp_path / "mnt", tmp_path / "cache"
    m = Mount(mount_store, mnt, cache, rsa_keys.args()).start()
    try:
        (mnt / "up").write_bytes(DATA)
        (mnt / "fresh").write_bytes(b"")
        m.close(expect_exit=0)  # "up" is in the bucket now, read back from there below
        assert _live_objects(mount_store, "up") == ["up.enc", "up.key.enc"]
        m = Mount(mount_store, mnt, cache, rsa_keys.args()).start()

        up = os.open(mnt / "up", os.O_RDONLY)
        rw = os.open(mnt / "fresh", os.O_RDWR)
        try:
            os.write(rw, b"written before the unlink\n")
            os.unlink(mnt / "up")
            os.unlink(mnt / "fresh")
            assert sorted(os.listdir(mnt)) == []
            os.write(rw, b"and after it\n")
            assert os.fstat(up).st_size == len(DATA)
            assert _read_fd(up) == DATA
            assert os.pread(up, 100, 70_000) == DATA[70_000:70_100]
            assert _read_fd(rw) == b"written before the unlink\nand after it\n"
        finally:
            # An open descriptor would keep the mount busy (and the daemon up) to the end.
            os.close(up)
            os.close(rw)
        time.sleep(2)  # the issue: a removed file reappeared a moment later
        assert sorted(os.listdir(mnt)) == []
        m.close(expect_exit=0)
        m = Mount(mount_store, mnt, cache, rsa_keys.args()).start()
        assert sorted(os.listdir(mnt)) == [], "came back after a remount"
        assert _live_objects(mount_store, "up") == []
        assert _live_objects(mount_store, "fresh") == []
        m.close(expect_exit=0)
    finally:
        m.close(expect_exit=None)


@pytest.mark.parametrize("mount_store", ["dir", "b2"], indirect=True)
def test_renamed_while_open_goes_up_under_its_new_name(
    mount_store: StoreSpec,  # noqa: F811
    rsa_keys: Keys,  # noqa: F811
    tmp_path: Path,
) -> None:
    mnt, cache = tmp_path / "mnt", tmp_path / "cache"
    with mounted(mount_store, mnt, cache, rsa_keys.args()):
        (mnt / "target").write_text("replaced atomically\n")
        fd = os.open(mnt / "draft", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.write(fd, b"before the rename, ")
            os.rename(mnt / "draft", mnt / "target")  # over an existing file
            os.write(fd, b"after it")
            os.fchmod(fd, 0o640)
        finally:
            os.close(fd)
        assert sorted(os.listdir(mnt)) == ["target"]
    with mounted(mount_store, mnt, cache, rsa_keys.args()):
        assert sorted(os.listdir(mnt)) == ["target"]
        assert (mnt / "target").read_bytes() == b"before the rename, after it"
        assert os.stat(mnt / "target").st_mode & 0o7777 == 0o640
    assert _live_objects(mount_store, "draft") == []
