"""Kill -9 right after a close: the next mount with the same cache uploads the outbox."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
from mountutil import (  # noqa: F401
    Keys,
    Mount,
    StoreSpec,
    is_mounted,
    mount_store,
    mounted,
    requires_fuse,
    rsa_keys,
)
from reliability_util import outbox_entries

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
