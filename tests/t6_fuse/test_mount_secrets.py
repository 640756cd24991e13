"""No plaintext reaches the disk: not while a file is open, not after close, not after unmount."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest
from mountutil import (  # noqa: F401
    Keys,
    StoreSpec,
    files_containing,
    mount_store,
    mounted,
    requires_fuse,
    rsa_keys,
)

pytestmark = requires_fuse


@pytest.mark.parametrize("mount_store", ["dir", "b2"], indirect=True)
def test_marker_never_on_disk(
    mount_store: StoreSpec,  # noqa: F811
    rsa_keys: Keys,  # noqa: F811
    tmp_path: Path,
) -> None:
    marker = secrets.token_hex(16).encode()
    data = marker * (4 * 2**20 // len(marker))  # 4 MiB of nothing but the marker
    half = len(data) // 2
    mnt, cache = tmp_path / "mnt", tmp_path / "cache"
    # The cache (read cache, staging, outbox), the store if it is on disk, and the log.
    passphrase = rsa_keys.passphrase_file.read_bytes().strip()
    places = [cache] + ([mount_store.root] if mount_store.root else [])

    def assert_clean(when: str, log: Path) -> None:
        for place in places:
            hits = files_containing(place, marker)
            assert not hits, f"plaintext on disk {when}: {hits}"
        if mount_store.kind == "b2":  # the loopback bucket lives in the server's memory
            store = mount_store.open()
            hits = [o.name for o in store.iter_all() if marker in store.read(o)]
            assert not hits, f"plaintext in the bucket {when}: {hits}"
        text = log.read_bytes()
        assert marker not in text, f"plaintext in the log {when}"
        assert passphrase not in text and b"PRIVATE KEY" not in text, f"a secret in the log {when}"

    with mounted(mount_store, mnt, cache, rsa_keys.args(), extra_args=["--debug"]) as m:
        target = mnt / "secret.bin"
        with open(target, "wb") as fh:
            fh.write(data[:half])
            fh.flush()
            # The daemon has the data (a second reader sees it) and holds it encrypted.
            with open(target, "rb") as reader:
                assert reader.read(len(marker) * 4) == data[: len(marker) * 4]
            assert_clean("while the file is open", m.log_path)
            fh.write(data[half:])
            fh.flush()
            assert_clean("while the file is open, all written", m.log_path)
        assert_clean("after close", m.log_path)
        assert target.read_bytes() == data
        assert_clean("after reading it back", m.log_path)
        # A second file, kept open across the checks in the other order: sealed, then read.
        with open(mnt / "other.bin", "wb") as fh:
            fh.write(data[:100_000])
        os.truncate(mnt / "other.bin", 50_000)
        assert (mnt / "other.bin").read_bytes() == data[:50_000]
        assert_clean("after truncate", m.log_path)
    assert_clean("after unmount", m.log_path)

    # The data did reach the store, and a fresh mount (empty cache) reads it back.
    with mounted(mount_store, mnt, tmp_path / "cache2", rsa_keys.args()) as m2:
        assert (mnt / "secret.bin").read_bytes() == data
    places.append(tmp_path / "cache2")
    assert_clean("after a second mount read it", m2.log_path)
