"""rclone's b2 backend (B2 API v1) against the loopback server: the stand-in is not shaped to
one client. Files written by rclone are read through B2Store and the other way round."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess

import pytest

from b2cryptfs.store.base import MTIME_KEY

RCLONE = shutil.which("rclone")
pytestmark = pytest.mark.skipif(RCLONE is None, reason="rclone is not installed")
MB = 1000 * 1000


@pytest.fixture
def rclone(b2_bucket, tmp_path):
    """Run rclone with a b2 remote named "b2t" whose endpoint is the server (config by env)."""
    conf = tmp_path / "rclone.conf"
    conf.write_text("")
    s = b2_bucket.server
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RCLONE_", "B2_"))}
    env.update(
        RCLONE_CONFIG=str(conf),
        RCLONE_CONFIG_B2T_TYPE="b2",
        RCLONE_CONFIG_B2T_ACCOUNT=s.key_id,
        RCLONE_CONFIG_B2T_KEY=s.key,
        RCLONE_CONFIG_B2T_ENDPOINT=s.realm,
        HOME=str(tmp_path),
    )

    def run(*args: str) -> str:
        p = subprocess.run([RCLONE, *args], env=env, capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, f"rclone {args}: {p.stderr[-2000:]}"
        return p.stdout

    return run


def test_rclone_copy_lsf_and_back(b2_bucket, rclone, tmp_path):
    src = tmp_path / "src"
    (src / "sub" / "deeper").mkdir(parents=True)
    files = {
        "a.txt": b"alpha\n",
        "sub/b.bin": os.urandom(100_000),
        "sub/deeper/c name with spaces.txt": b"gamma\n",
        "big.bin": os.urandom(12 * MB),  # above the cutoff below: rclone's large-file path
    }
    for rel, data in files.items():
        (src / rel).write_bytes(data)
    remote = f"b2t:{b2_bucket.name}/rc"
    rclone("copy", str(src), remote, "--b2-upload-cutoff", "5M", "--b2-chunk-size", "5M")
    stats = b2_bucket.server.stats()
    assert stats.get("b2_upload_part", 0) >= 2 and stats.get("b2_finish_large_file") == 1

    assert sorted(rclone("lsf", remote).split("\n")) == ["", "a.txt", "big.bin", "sub/"]
    assert sorted(rclone("lsf", "-R", "--files-only", remote).splitlines()) == sorted(files)
    rclone("check", str(src), remote)

    back = tmp_path / "back"
    rclone("copy", remote, str(back))
    for rel, data in files.items():
        assert (back / rel).read_bytes() == data, rel

    # What rclone stored is plain B2 to our store: names, sizes, its mtime convention.
    store = b2_bucket.store("rc")
    st = store.stat("sub/b.bin")
    assert st is not None and store.read(st) == files["sub/b.bin"]
    assert abs(st.mtime_ms / 1000 - os.stat(src / "sub" / "b.bin").st_mtime) < 0.01
    assert MTIME_KEY in st.info
    big = store.stat("big.bin")
    assert hashlib.sha1(store.read(big)).hexdigest() == hashlib.sha1(files["big.bin"]).hexdigest()
    assert store.list_dir("").prefixes == ["sub/"]


def test_rclone_reads_what_b2store_wrote(b2_bucket, rclone):
    store = b2_bucket.store()
    store.upload_bytes("w/x.enc", b"written by b2cryptfs", {MTIME_KEY: "1600000000000"})
    store.upload_bytes("w/y.enc", b"second", {})
    assert rclone("lsf", f"b2t:{b2_bucket.name}/w").split() == ["x.enc", "y.enc"]
    assert rclone("cat", f"b2t:{b2_bucket.name}/w/x.enc") == "written by b2cryptfs"
    line = rclone("lsl", f"b2t:{b2_bucket.name}/w/x.enc")
    assert "2020-09-13" in line  # rclone shows src_last_modified_millis as the mtime
    rclone("delete", f"b2t:{b2_bucket.name}/w/y.enc")
    assert [o.name for o in store.iter_all()] == ["w/x.enc"]
