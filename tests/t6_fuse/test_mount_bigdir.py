"""A directory of 10,000 files lists with `ls -l` in a few list calls and no per-file request."""

from __future__ import annotations

import io
import os
import subprocess
import time
from pathlib import Path

from mountutil import Keys, b2_store, mounted, requires_fuse, rsa_keys  # noqa: F401

pytestmark = requires_fuse

COUNT = 10_000
MAX_LIST_CALLS = 12
# Requests that would mean the mount looked at files one by one.
PER_FILE = ("b2_download_file_by_id", "b2_download_file_by_name", "b2_get_file_info")


def sealed_pair(keys: Keys, plaintext: bytes) -> tuple[bytes, bytes]:
    """(key object, content object) of one real age pair; it is valid under any name."""
    from b2cryptfs.formats import get_codec
    from b2cryptfs.keys.loader import load_recipients

    out = io.BytesIO()
    sealed = get_codec("age").seal(io.BytesIO(plaintext), out, load_recipients(str(keys.public)))
    return sealed.key_object, out.getvalue()


def test_ls_l_of_10000_files(rsa_keys: Keys, tmp_path: Path, b2_server) -> None:  # noqa: F811
    spec = b2_store(tmp_path, b2_server)
    plaintext = b"one of ten thousand\n"
    key_object, content = sealed_pair(rsa_keys, plaintext)
    mtime_ms = 1_700_000_000_123
    names = [f"big/f{i:05d}.txt" for i in range(COUNT)]
    # The same layout and file info the mount itself writes (key objects first).
    key_info = {"b2cryptfs-format": "age"}
    content_info = {"b2cryptfs-format": "age", "src_last_modified_millis": str(mtime_ms)}
    # Every one a real pair: one sealed pair is valid under any name.
    b2_server.seed(spec.bucket, [f"{n}.key.enc" for n in names], data=key_object, info=key_info)
    b2_server.seed(spec.bucket, [f"{n}.enc" for n in names], data=content, info=content_info)

    mnt = tmp_path / "mnt"
    with mounted(spec, mnt, tmp_path / "cache", rsa_keys.args()):
        b2_server.reset_stats()
        started = time.monotonic()
        res = subprocess.run(
            ["ls", "-l", "--time-style=+%s", str(mnt / "big")],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        elapsed = time.monotonic() - started
        stats = b2_server.stats()
        assert res.returncode == 0, res.stderr
        # Real pairs: any one of them decrypts (after the counted listing).
        assert (mnt / "big" / "f04321.txt").read_bytes() == plaintext

    lines = res.stdout.splitlines()
    assert lines[0].startswith("total")
    entries = [line.split() for line in lines[1:]]
    assert [e[-1] for e in entries] == [os.path.basename(n) for n in names]
    # Exact plaintext sizes and mtimes, from the listing alone.
    assert {e[4] for e in entries} == {str(len(plaintext))}
    assert {e[5] for e in entries} == {str(mtime_ms // 1000)}

    list_calls = stats.get("b2_list_file_names", 0) + stats.get("b2_list_file_versions", 0)
    assert 1 <= list_calls <= MAX_LIST_CALLS, stats
    assert not {k: v for k, v in stats.items() if k in PER_FILE and v}, stats
    print(f"ls -l of {COUNT} files: {elapsed:.1f}s, requests {stats}")
