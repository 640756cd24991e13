"""chmod, chown and utime of a big closed file move no content (issue 7 item 1): the loopback
B2 server counts the requests, on a real mount."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest
from mountutil import Keys, b2_store, mounted, requires_fuse, rsa_keys  # noqa: F401

pytestmark = [
    *requires_fuse,
    pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root"),
]
HEAVY = os.environ.get("B2CRYPTFS_HEAVY") == "1"
# The 50 MB in the heavy run; CI's size is still several upload parts and chunks.
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
