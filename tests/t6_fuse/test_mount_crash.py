"""Kill -9 right after a close: the next mount with the same cache uploads the outbox (and
drops a torn entry, which only a power loss can leave, instead of uploading it)."""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path

import pytest
from mountutil import (  # noqa: F401
    Keys,
    Mount,
    StoreSpec,
    b2_store,
    is_mounted,
    mount_store,
    mounted,
    requires_fuse,
    rsa_keys,
)
from reliability_util import cli, log_lines, outbox_entries, wait_outbox_empty

pytestmark = requires_fuse


@pytest.mark.parametrize("mount_store", ["dir", "b2"], indirect=True)
def test_kill9_after_close_then_next_mount_uploads(
    mount_store: StoreSpec,  # noqa: F811
    rsa_keys: Keys,  # noqa: F811
    tmp_path: Path,
) -> None:
    data = random.Random(9).randbytes(6 * 2**20 + 12345)
    small = b"small file\n" * 100
    mnt, cache = tmp_path / "mnt", tmp_path / "cache"
    server = mount_store.server

    m = Mount(mount_store, mnt, cache, rsa_keys.args())
    try:
        m.start()
        (mnt / "dir").mkdir()
        (mnt / "dir" / "small.txt").write_bytes(small)
        if server is not None:
            # A slow link: the upload is certainly still running when the daemon dies.
            server.configure(bandwidth_mbps=4)
        with open(mnt / "dir" / "big.bin", "wb") as fh:
            fh.write(data)
        m.kill9()  # right after close() returned
    finally:
        m.close(expect_exit=None)
        if server is not None:
            server.configure(bandwidth_mbps=0)
    assert m.killed and not is_mounted(mnt)

    store = mount_store.open()
    uploaded = store.stat("dir/big.bin.enc") is not None
    pending = outbox_entries(cache)
    # close() made the file durable: it is either in the store already or in the outbox.
    assert uploaded or pending, "the closed file is neither uploaded nor in the outbox"
    if server is not None:
        assert not uploaded and pending, "the slow upload should not have finished"

    # The next mount, same store and cache directory, uploads what was left.
    with mounted(mount_store, mnt, cache, rsa_keys.args()):
        deadline = time.monotonic() + 120
        while outbox_entries(cache) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not outbox_entries(cache), "the outbox did not drain"
        assert (mnt / "dir" / "big.bin").read_bytes() == data
    assert store.stat("dir/big.bin.enc") is not None
    assert store.stat("dir/big.bin.key.enc") is not None

    # Read back through a fresh cache: the store itself holds the complete file.
    with mounted(mount_store, mnt, tmp_path / "fresh-cache", rsa_keys.args()):
        assert (mnt / "dir" / "big.bin").read_bytes() == data
        assert (mnt / "dir" / "small.txt").read_bytes() == small


def test_a_torn_entry_left_by_a_killed_daemon_is_dropped_not_uploaded(
    rsa_keys: Keys,  # noqa: F811
    tmp_path: Path,
    b2_server,
) -> None:
    """A power loss can leave a manifest whose content never reached the disk (close does
    not wait for it). Made here by hand in what a kill -9 left: fsck reports it, the next
    mount logs one ERROR naming the file, never uploads it, and uploads the intact one."""
    spec = b2_store(tmp_path, b2_server)
    mnt, cache = tmp_path / "mnt", tmp_path / "cache"
    m = Mount(spec, mnt, cache, rsa_keys.args())
    try:
        m.start()
        (mnt / "warm.txt").write_bytes(b"the root is listed\n")
        b2_server.configure(latency_ms=60_000)  # nothing uploads before the kill
        (mnt / "torn.txt").write_bytes(b"closed just before the power went\n" * 100)
        (mnt / "whole.txt").write_bytes(b"closed just before, reached the disk\n" * 100)
        m.kill9()
    finally:
        m.close(expect_exit=None)
        b2_server.configure(latency_ms=0)
    manifests = {json.loads(p.read_bytes())["path"]: p for p in outbox_entries(cache)}
    assert {"torn.txt", "whole.txt"} <= set(manifests), manifests
    manifests["torn.txt"].with_suffix(".content").write_bytes(b"")  # its data never written

    res = cli(spec, "fsck", "--cache-dir", str(cache), spec.url, check=False)
    torn = [ln for ln in res.stdout.splitlines() if ln.startswith("torn-upload")]
    assert len(torn) == 1 and "'torn.txt'" in torn[0], res.stdout
    assert res.returncode == 1, res.stdout

    with mounted(spec, mnt, cache, rsa_keys.args()) as m2:
        wait_outbox_empty(cache)
        assert sorted(os.listdir(mnt)) == ["warm.txt", "whole.txt"]
        assert (mnt / "whole.txt").read_bytes() == b"closed just before, reached the disk\n" * 100
        errors = log_lines(m2.log(), "ERROR")
    assert len(errors) == 1, errors
    assert "'torn.txt'" in errors[0] and "torn" in errors[0] and "not uploaded" in errors[0]
    store = spec.open()
    assert store.stat("whole.txt.enc") is not None
    assert store.stat("torn.txt.enc") is None
