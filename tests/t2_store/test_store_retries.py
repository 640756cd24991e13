"""Transient failures are retried until the caller's deadline, not a fixed number of times.

Connections dropped mid-body (the loopback server's ``drop`` fault) on downloads and on
uploads, 3, 5 and 10 in a row: through B2Store and through a real mount, the transfer
completes with the right bytes. A fault that lasts ends in one TransientError line.
"""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

import pytest
from mountutil import Keys, StoreSpec, mounted, rsa_keys  # noqa: F401
from reliability_util import b2_spec, fuse_test, outbox_entries, versions, wait_until  # noqa: F401

from b2cryptfs.bucket.layout import ROOT_META_OBJECT
from b2cryptfs.errors import TransientError
from b2cryptfs.store.b2sdkhttp import B2SDK_INTERNALS, check_b2sdk_internals

MB = 1000 * 1000
PART = 5 * MB
COUNTS = [3, 5, 10]


@pytest.fixture
def store(b2_bucket):
    # A budget far above what the drops need: they must not run it out.
    return b2_bucket.store(
        retry_time=120.0, backoff=0.2, part_size=PART, min_part_size=PART, max_part_size=3 * PART
    )


@pytest.mark.parametrize("count", COUNTS)
def test_dropped_downloads_are_retried_until_they_complete(b2_bucket, store, count, tmp_path):
    data = random.Random(count).randbytes(3 * MB)
    obj = store.upload_bytes("d.enc", data, {})
    server = b2_bucket.server
    server.inject("download", "drop", count)
    assert store.read(obj, 1000, 2 * MB) == data[1000 : 1000 + 2 * MB]
    server.inject("download", "drop", count)
    store.download(obj, str(tmp_path / "out"))
    assert (tmp_path / "out").read_bytes() == data
    # Small objects too (no bytes arrive before the cut).
    small = store.upload_bytes("s.enc", b"small" * 20, {})
    server.inject("download", "drop", count)
    assert store.read(small) == b"small" * 20
    assert server.fault_counts().get("b2_download_file_by_id") == 3 * count


def test_a_scattered_read_resumes_into_the_right_buffers(b2_bucket, store):
    # read_into fills one buffer per chunk; a cut mid-body resumes at the byte where it
    # stopped, whichever buffer that falls in (empty buffers included).
    data = random.Random(7).randbytes(3 * MB)
    obj = store.upload_bytes("r.enc", data, {})
    sizes = [65552, 0, 65552, 1, 1_000_000, 7, 65552, 0]
    for drops in (0, 3):
        b2_bucket.server.inject("download", "drop", drops)
        buffers = [bytearray(n) for n in sizes]
        store.read_into(obj, 12345, buffers)
        assert b"".join(buffers) == data[12345 : 12345 + sum(sizes)]
    with pytest.raises(ValueError):
        store.read_into(obj, len(data) - 10, [bytearray(11)])


@pytest.mark.parametrize("count", COUNTS)
def test_dropped_uploads_are_retried_until_they_complete(b2_bucket, store, count, tmp_path):
    server = b2_bucket.server
    data = random.Random(count).randbytes(300_000)
    server.inject("b2_upload_file", "drop", count)
    obj = store.upload_bytes("u.enc", data, {"k": "v"})
    assert store.read(obj) == data
    assert server.fault_counts().get("b2_upload_file") == count
    # A large file: its parts are cut.
    big = random.Random(-count).randbytes(2 * PART + 1)
    path = tmp_path / "big"
    path.write_bytes(big)
    server.inject("b2_upload_part", "drop", count)
    obj = store.upload_file("big.enc", str(path), {})
    assert obj.info["large_file_sha1"] == hashlib.sha1(big).hexdigest()
    assert store.read(obj) == big
    assert server.fault_counts().get("b2_upload_part") == count
    live = sorted(v["fileName"] for v in b2_bucket.versions() if v["action"] == "upload")
    assert live == ["big.enc", "u.enc"]


def test_more_drops_than_b2sdk_would_retry(b2_bucket):
    # b2sdk's upload manager tries 5 times, its downloads resume a few times; the
    # store's own loop goes on as long as its deadline allows (short pauses: 12 drops in a
    # row would otherwise take a minute of backoff).
    store = b2_bucket.store(retry_time=120.0, backoff=0.05)
    server = b2_bucket.server
    obj = store.upload_bytes("x.enc", b"x" * 1000, {})
    server.inject("download", "drop", 12)
    assert store.read(obj) == b"x" * 1000
    server.inject("b2_upload_file", "drop", 12)
    assert store.read(store.upload_bytes("y.enc", b"y" * 1000, {})) == b"y" * 1000
    counts = server.fault_counts()
    assert (counts.get("b2_download_file_by_id"), counts.get("b2_upload_file")) == (12, 12)


def test_a_lasting_outage_ends_in_one_transient_error_line(b2_bucket):
    store = b2_bucket.store(retry_time=2.0, backoff=0.2)
    obj = store.upload_bytes("d.enc", b"data" * 100, {})
    b2_bucket.server.inject("download", "drop", 1_000_000)
    with pytest.raises(TransientError) as err:
        store.read(obj)
    msg = str(err.value)
    assert "\n" not in msg and "d.enc" in msg and "tries" in msg
    # Many tries within the budget, not a fixed three.
    assert b2_bucket.server.fault_counts()["b2_download_file_by_id"] > 3
    b2_bucket.server.clear_faults()
    b2_bucket.server.inject("b2_upload_file", "503", 1_000_000)
    with pytest.raises(TransientError) as err:
        store.upload_bytes("never.enc", b"n", {})
    assert "\n" not in str(err.value) and "never.enc" in str(err.value)


def test_b2sdk_internals_are_still_there():
    problems = check_b2sdk_internals()
    assert problems == [], (
        "b2sdk changed internals that b2cryptfs/store/b2sdkhttp.py overrides to bound its HTTP "
        f"retries ({', '.join(B2SDK_INTERNALS)}): {'; '.join(problems)}. Adapt _http_class "
        "(or drop the override if b2sdk now has a public retry setting)."
    )


# --- through a mount -----------------------------------------------------------------------


@fuse_test
@pytest.mark.parametrize("count", COUNTS)
def test_mount_reads_and_uploads_through_dropped_connections(
    b2_spec: StoreSpec,  # noqa: F811
    rsa_keys: Keys,  # noqa: F811
    tmp_path: Path,
    count: int,
) -> None:
    server, mnt = b2_spec.server, tmp_path / "mnt"
    data = random.Random(count).randbytes(3 << 20)
    with mounted(b2_spec, mnt, tmp_path / "cache-1", rsa_keys.args()):
        server.inject("upload", "drop", count)
        (mnt / "f.bin").write_bytes(data)
        wait_until("the upload", lambda: not outbox_entries(tmp_path / "cache-1"), timeout=120)
    assert server.fault_counts().get("b2_upload_file", 0) >= count
    live = {v["fileName"] for v in versions(b2_spec) if v["action"] == "upload"}
    assert live == {"f.bin.enc", "f.bin.key.enc", ROOT_META_OBJECT}  # (the root's new mtime)
    # A fresh cache: every byte is downloaded, through `count` cut connections.
    with mounted(b2_spec, mnt, tmp_path / "cache-2", rsa_keys.args()) as m:
        assert os.listdir(mnt) == ["f.bin"]
        server.inject("download", "drop", count)
        assert (mnt / "f.bin").read_bytes() == data
        assert "Input/output error" not in m.log()
    assert server.fault_counts().get("b2_download_file_by_id", 0) >= count
