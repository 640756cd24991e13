"""b2sdk (and requests) load only for what b2wire does not do (store/b2sdkpart.py).

A mount that lists, reads and writes small files never imports b2sdk (the daemon says so at
the unmount, with --debug); one that renames a file (a server-side copy and a hide) loads it
then and the rename is stored. B2Store's b2sdk part starts from the account data it holds
(no second authorization). With proxy variables set, requests makes every call.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mountutil import Keys, StoreSpec, mounted, rsa_keys  # noqa: F401
from reliability_util import b2_spec, fuse_test, outbox_entries, versions, wait_until  # noqa: F401

from b2cryptfs.errors import StoreError, TransientError

ROOT = Path(__file__).resolve().parents[2]
NEVER = "b2sdk was never loaded"
LOADED = "b2sdk was loaded"


def test_importing_the_store_loads_neither_b2sdk_nor_requests():
    code = (
        "import sys, b2cryptfs.store.b2store, b2cryptfs.cli.storeopen\n"
        "print([m for m in sys.modules if m.split('.')[0] in ('b2sdk', 'requests', 'urllib3')])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_b2sdk_loads_for_a_copy_and_does_not_authorize_again(b2_bucket):
    store = b2_bucket.store()
    obj = store.upload_bytes("a.enc", b"a" * 100, {"k": "v"})
    assert store._sdk_made is None  # listing, reading and small uploads did not need it
    server = b2_bucket.server
    server.reset_stats()
    copied = store.copy(obj, "b.enc")
    store.hide("a.enc")
    assert store.read(copied) == b"a" * 100 and copied.info == {"k": "v"}
    assert store._sdk_made is not None
    stats = server.stats()
    assert "b2_authorize_account" not in stats and "b2_list_buckets" not in stats, stats
    assert (stats.get("b2_copy_file"), stats.get("b2_hide_file")) == (1, 1), stats


def test_a_file_up_to_a_part_is_one_upload_streamed_over_b2wire(b2_bucket, tmp_path):
    store = b2_bucket.store(part_size=5_000_000, min_part_size=5_000_000, retry_time=60.0)
    server = b2_bucket.server
    data = os.urandom(5_000_000)  # a part's size: still one request
    path = tmp_path / "f"
    path.write_bytes(data)
    sha1 = hashlib.sha1(data).hexdigest()
    server.reset_stats()
    seen: list[int] = []
    obj = store.upload_file("f.enc", str(path), {"k": "v"}, progress=seen.append, sha1=sha1)
    assert server.stats() == {"b2_get_upload_url": 1, "b2_upload_file": 1}
    assert store._sdk_made is None
    # One call per 64 KiB block read for the upload (a progress bar moves in small steps).
    assert seen[-1] == len(data) and seen == sorted(seen)
    assert 10 < len(seen) <= len(data) // 65536 + 2
    assert (obj.size, obj.info) == (len(data), {"k": "v"})
    assert store.read(obj) == data
    # Cut mid-body: tried again from the file's start, with another upload URL.
    server.inject("b2_upload_file", "drop", 3)
    again = store.upload_file("g.enc", str(path), {})
    assert store.read(again) == data
    assert server.fault_counts().get("b2_upload_file") == 3
    # A refused SHA-1 (the file changed since it was hashed) is an error, not a retry loop.
    with pytest.raises(StoreError):
        store.upload_file("h.enc", str(path), {}, sha1="0" * 40)
    assert store._sdk_made is None


def test_a_large_file_goes_in_parallel_parts_over_b2wire(b2_bucket, tmp_path):
    part = 5_000_000
    store = b2_bucket.store(part_size=part, min_part_size=part, retry_time=60.0, backoff=0.05)
    server = b2_bucket.server
    data = os.urandom(3 * part + 123)  # three parts, the tail joined to the last
    path = tmp_path / "big"
    path.write_bytes(data)
    server.reset_stats()
    seen: list[int] = []
    obj = store.upload_file("big.enc", str(path), {"k": "v"}, progress=seen.append)
    stats = server.stats()
    assert stats.get("b2_start_large_file") == stats.get("b2_finish_large_file") == 1, stats
    assert stats.get("b2_upload_part") == 3 and stats.get("b2_get_upload_part_url", 0) <= 3
    assert store._sdk_made is None
    assert obj.info == {"k": "v", "large_file_sha1": hashlib.sha1(data).hexdigest()}
    assert obj.size == len(data) and max(seen) == len(data)
    assert store.read(obj) == data
    # Parts cut mid-body are sent again from their start.
    server.inject("b2_upload_part", "drop", 4)
    again = store.upload_file("again.enc", str(path), {})
    assert store.read(again, part - 5, 10) == data[part - 5 : part + 5]
    assert server.fault_counts().get("b2_upload_part") == 4
    assert store._sdk_made is None


def test_a_large_file_that_cannot_be_sent_is_cancelled(b2_bucket, tmp_path):
    part = 5_000_000
    store = b2_bucket.store(part_size=part, min_part_size=part, retry_time=1.0, backoff=0.05)
    path = tmp_path / "big"
    path.write_bytes(b"\1" * (2 * part))
    b2_bucket.server.inject("b2_upload_part", "503", 10_000)
    with pytest.raises(TransientError) as err:
        store.upload_file("never.enc", str(path), {})
    assert "\n" not in str(err.value) and "never.enc" in str(err.value)
    b2_bucket.server.clear_faults()
    assert b2_bucket.versions() == []  # the started large file was cancelled, parts and all
    assert b2_bucket.server.stats().get("b2_cancel_large_file") == 1
    assert store._sdk_made is None  # cancelled by its id, over b2wire


def test_with_a_proxy_variable_requests_makes_every_call(b2_bucket, monkeypatch, tmp_path):
    # The loopback server is exempt (no_proxy): requests is taken because only it applies
    # those rules; b2wire is not used at all.
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    store = b2_bucket.store(part_size=5_000_000, min_part_size=5_000_000)
    assert store._wire is None and store._sdk_made is not None
    obj = store.upload_bytes("p.enc", b"p" * 1000, {"k": "v"})
    assert [o.name for o in store.list_dir("").objects] == ["p.enc"]
    assert store.read(obj, 10, 20) == b"p" * 20
    big = os.urandom(10_000_001)
    path = tmp_path / "big"
    path.write_bytes(big)
    large = store.upload_file("big.enc", str(path), {})
    out = tmp_path / "out"
    store.download(large, str(out))
    assert out.read_bytes() == big
    store.hide("p.enc")
    assert store.stat("p.enc") is None


@fuse_test
def test_a_mount_of_small_files_never_loads_b2sdk(
    b2_spec: StoreSpec,  # noqa: F811
    rsa_keys: Keys,  # noqa: F811
    tmp_path: Path,
) -> None:
    mnt = tmp_path / "mnt"
    args = [*rsa_keys.args(), "--debug"]
    with mounted(b2_spec, mnt, tmp_path / "cache-1", args) as m:
        (mnt / "a.txt").write_bytes(b"a" * 5000)
        (mnt / "d").mkdir()
        (mnt / "d" / "b.txt").write_bytes(b"b" * 100)
        wait_until("the uploads", lambda: not outbox_entries(tmp_path / "cache-1"), timeout=60)
    assert NEVER in m.log(), m.log()
    with mounted(b2_spec, mnt, tmp_path / "cache-2", args) as m:
        assert sorted(os.listdir(mnt)) == ["a.txt", "d"]
        assert (mnt / "a.txt").read_bytes() == b"a" * 5000
        assert (mnt / "d" / "b.txt").read_bytes() == b"b" * 100
    assert NEVER in m.log(), m.log()
    # A rename needs b2sdk's copy: loaded then, and the rename is stored.
    with mounted(b2_spec, mnt, tmp_path / "cache-2", args) as m:
        os.rename(mnt / "a.txt", mnt / "c.txt")
        wait_until("the rename", lambda: not outbox_entries(tmp_path / "cache-2"), timeout=60)
    assert LOADED in m.log(), m.log()
    hidden = {v["fileName"] for v in versions(b2_spec) if v["action"] == "hide"}
    assert "a.txt.enc" in hidden, hidden
    with mounted(b2_spec, mnt, tmp_path / "cache-3", args):
        assert sorted(os.listdir(mnt)) == ["c.txt", "d"]
        assert (mnt / "c.txt").read_bytes() == b"a" * 5000


class _CountingFile:
    """A real file that counts the bytes read from it."""

    def __init__(self, path: Path) -> None:
        self._f = open(path, "rb")  # noqa: SIM115 - closed by the test
        self.name = str(path)
        self.bytes_read = 0

    def readinto(self, buf) -> int:
        n = self._f.readinto(buf)
        self.bytes_read += n
        return n

    def tell(self) -> int:
        return self._f.tell()

    def seek(self, pos: int) -> int:
        return self._f.seek(pos)

    def close(self) -> None:
        self._f.close()


def test_a_part_body_reads_its_range_once_and_ends_with_its_sha1(tmp_path):
    from b2cryptfs.store.b2large import _HashedRange

    data = os.urandom(3 * (1 << 20) + 77)
    path = tmp_path / "f"
    path.write_bytes(b"head" + data + b"tail")
    f = _CountingFile(path)
    try:
        f.seek(4)
        sent: list[int] = []
        body = _HashedRange(f, len(data), sent.append)
        first = bytes(body.read(1000))  # a stale connection took this much: sent again
        assert body.seek(body.tell()) == 4 and first == data[:1000]
        out = b"".join(bytes(b) for b in iter(lambda: body.read(1 << 20), b""))
        sha1 = hashlib.sha1(data).hexdigest()
        assert out == data + sha1.encode() and body.sha1 == sha1
        # Once per try, no read of its own for the hash (the first try took 1000 bytes).
        assert f.bytes_read == len(data) + 1000 and sum(sent) == len(data) + 1000
        with pytest.raises(ValueError):
            body.seek(5)
    finally:
        f.close()
