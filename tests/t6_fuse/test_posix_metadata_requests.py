"""chmod, chown and utime of a big closed file move no content (issue 7 item 1): the loopback
B2 server counts the requests, on a real mount."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
from pathlib import Path

import pytest
from mountutil import Keys, b2_store, mounted, requires_fuse, rsa_keys  # noqa: F401
from test_mount_bigdir import sealed_pair

pytestmark = [
    *requires_fuse,
    pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root"),
]
HEAVY = os.environ.get("B2CRYPTFS_HEAVY") == "1"
# The issue's 50 MB in the heavy run; CI's size is still several upload parts and chunks.
SIZE = (50 if HEAVY else 12) << 20
CONTENT_CALLS = (
    "b2_download_file_by_id",
    "b2_download_file_by_name",
    "b2_upload_file",
    "b2_upload_part",
    "b2_start_large_file",
)


@pytest.mark.heavy
def test_metadata_change_of_a_closed_file_moves_no_content(
    b2_server,
    rsa_keys: Keys,  # noqa: F811
    tmp_path: Path,
) -> None:
    spec = b2_store(tmp_path, b2_server)
    mnt, cache = tmp_path / "mnt", tmp_path / "cache"
    data = os.urandom(1 << 20) * (SIZE >> 20)
    with mounted(spec, mnt, cache, rsa_keys.args()):
        (mnt / "big").write_bytes(data)
    b2_server.reset_stats()
    with mounted(spec, mnt, cache, rsa_keys.args()):
        os.chmod(mnt / "big", 0o640)
        os.chown(mnt / "big", 1234, 5678)
        os.utime(mnt / "big", ns=(1_500_000_000_123_456_789, 1_600_000_000_987_654_321))
        st = os.stat(mnt / "big")
    calls = b2_server.stats()
    assert {c: calls[c] for c in CONTENT_CALLS if calls.get(c)} == {}, calls
    assert calls.get("b2_copy_file", 0) + calls.get("b2_copy_part", 0) >= 1, calls
    want = (0o640, 1234, 5678, 1_500_000_000_123_456_789, 1_600_000_000_987_654_321, SIZE)
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_atime_ns, st.st_mtime_ns,
            st.st_size) == want  # fmt: skip
    with mounted(spec, mnt, tmp_path / "cache-2", rsa_keys.args()):
        st = os.stat(mnt / "big")
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_atime_ns, st.st_mtime_ns,
                st.st_size) == want  # fmt: skip
        digest = hashlib.sha256((mnt / "big").read_bytes()).digest()
    assert digest == hashlib.sha256(data).digest()


FILES, DIRS = 2000, 50
PER_ENTRY = ("b2_download_file_by_id", "b2_download_file_by_name", "b2_get_file_info")


def test_ls_ln_shows_stored_metadata_from_the_listing_alone(
    b2_server,
    rsa_keys: Keys,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Objects written as b2cryptfs-format(5) describes (the documented metadata line, a
    directory object beside each directory): modes, owners and times with no per-entry request."""
    spec = b2_store(tmp_path, b2_server)
    key_object, content = sealed_pair(rsa_keys, b"x" * 10)
    files = [f"big/f{i:04d}" for i in range(FILES)]
    for first, mode, uid in ((0, 0o600, 1234), (1, 0o4755, 4321)):  # even and odd names
        chunk = files[first::2]
        b2_server.seed(spec.bucket, [f"{n}.key.enc" for n in chunk], data=key_object,
                       info={"b2cryptfs-format": "age"})  # fmt: skip
        b2_server.seed(spec.bucket, [f"{n}.enc" for n in chunk], data=content, info={
            "b2cryptfs-format": "age", "src_last_modified_millis": "1700000000123",
            "b2cryptfs-meta": f"1 {stat.S_IFREG | mode:o} {uid} 77 1700000000123456789 - -",
        })  # fmt: skip
    dirs = [f"big/d{i:03d}" for i in range(DIRS)]
    b2_server.seed(spec.bucket, [f"{d}/.bzEmpty" for d in dirs], size=0)
    b2_server.seed(spec.bucket, [f"{d}.b2cryptfs-dir" for d in dirs], size=0, info={
        "b2cryptfs-meta": f"1 {stat.S_IFDIR | 0o2750:o} 65534 88 1600000000000000001 - -",
    })  # fmt: skip

    mnt = tmp_path / "mnt"
    with mounted(spec, mnt, tmp_path / "cache", rsa_keys.args()):
        b2_server.reset_stats()
        res = subprocess.run(
            ["ls", "-ln", "--time-style=+%s", str(mnt / "big")],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        calls = b2_server.stats()
        assert res.returncode == 0, res.stderr
        st = os.stat(mnt / "big" / "d007")
        assert st.st_mtime_ns == 1600000000000000001
        st = os.stat(mnt / "big" / "f0001")
        assert st.st_mtime_ns == 1700000000123456789
    rows = {r.split()[-1]: r.split()[:6] for r in res.stdout.splitlines()[1:]}
    assert len(rows) == FILES + DIRS
    assert rows["f0000"][:5] == ["-rw-------", "1", "1234", "77", "10"]
    assert rows["f0001"][:5] == ["-rwsr-xr-x", "1", "4321", "77", "10"]
    assert rows["d007"][0] == "drwxr-s---" and rows["d007"][2:4] == ["65534", "88"]
    assert {r[5] for n, r in rows.items() if n[0] == "f"} == {"1700000000"}
    assert not {k: v for k, v in calls.items() if k in PER_ENTRY and v}, calls


def test_lstat_of_a_link_downloads_nothing(b2_server, rsa_keys: Keys, tmp_path: Path) -> None:  # noqa: F811
    spec = b2_store(tmp_path, b2_server)
    mnt, cache = tmp_path / "mnt", tmp_path / "cache"
    target = "../" + "t" * 3000
    with mounted(spec, mnt, cache, rsa_keys.args()):
        os.symlink(target, mnt / "link")
        os.lchown(mnt / "link", 1234, 5678)
    with mounted(spec, mnt, tmp_path / "cache-2", rsa_keys.args()):
        b2_server.reset_stats()
        st = os.lstat(mnt / "link")
        calls = b2_server.stats()
        assert os.readlink(mnt / "link") == target  # after the count: this one must download
    assert stat.S_ISLNK(st.st_mode) and st.st_size == len(target), st
    assert (st.st_uid, st.st_gid) == (1234, 5678)
    assert not {k: v for k, v in calls.items() if k in PER_ENTRY and v}, calls
