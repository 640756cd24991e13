"""A full cache disk: reads go on uncached, a write that does not fit fails loudly (ENOSPC),
nothing else is touched, and the mount works again once there is room."""

from __future__ import annotations

import errno
import hashlib
import os
import random
from pathlib import Path

import pytest
from mountutil import Keys, dir_store, mounted, rsa_keys  # noqa: F401
from reliability_util import MB, fuse_test, log_lines, outbox_entries, tmpfs

from b2cryptfs.vfs.staging import BLOCK, Staging

BIG = 20 * MB  # more than twice the cache disk


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_in_pieces(path: Path, data: bytes, piece: int = MB) -> None:
    with open(path, "wb") as fh:
        for off in range(0, len(data), piece):
            fh.write(data[off : off + piece])


@fuse_test
def test_full_cache_disk(rsa_keys: Keys, tmp_path: Path) -> None:  # noqa: F811
    store = dir_store(tmp_path)
    mnt = tmp_path / "mnt"
    big = random.Random(1).randbytes(BIG)
    existing = b"an existing file\n" * 1000
    with mounted(store, mnt, tmp_path / "cache-big", rsa_keys.args()):
        (mnt / "big.bin").write_bytes(big)
        (mnt / "existing.txt").write_bytes(existing)

    with (
        tmpfs(tmp_path / "disk", "8m") as disk,
        mounted(store, mnt, disk / "cache", rsa_keys.args()) as m,
    ):
        # A file bigger than the whole cache disk reads fine: the read cache gives up.
        assert sha((mnt / "big.bin").read_bytes()) == sha(big)

        # A write that cannot fit: the writer is told, at write() or at close().
        with pytest.raises(OSError) as info:
            write_in_pieces(mnt / "huge.bin", big)
        assert info.value.errno == errno.ENOSPC, info.value
        assert log_lines(m.log(), "WARNING", "No space left on device"), m.log()

        # Nothing else is affected, and nothing half-written went to the store.
        assert (mnt / "existing.txt").read_bytes() == existing
        assert sha((mnt / "big.bin").read_bytes()) == sha(big)
        assert not (store.root / "huge.bin.enc").exists()
        assert not outbox_entries(disk / "cache")

        # Room again: removing the partial file frees its staging space at once.
        os.unlink(mnt / "huge.bin")
        st = os.statvfs(disk)
        assert st.f_bavail * st.f_frsize > 6 * MB
        after = random.Random(2).randbytes(3 * MB)
        write_in_pieces(mnt / "after.bin", after)
        assert (mnt / "after.bin").read_bytes() == after
        assert sorted(os.listdir(mnt)) == ["after.bin", "big.bin", "existing.txt"]

    with mounted(store, mnt, tmp_path / "cache-check", rsa_keys.args()):
        assert sorted(os.listdir(mnt)) == ["after.bin", "big.bin", "existing.txt"]
        assert (mnt / "after.bin").read_bytes() == after
        assert (mnt / "existing.txt").read_bytes() == existing


def test_staging_loses_nothing_on_a_full_disk(tmp_path: Path) -> None:
    """Writes refused by a full disk change nothing; everything acknowledged reads back."""
    with tmpfs(tmp_path / "disk", "2m") as disk:
        filler = disk / "filler"
        filler.write_bytes(b"\0" * (1536 * 1024))
        staging = Staging(str(disk))
        model = bytearray()
        rng = random.Random(3)
        refused = 0
        try:
            for i in range(40):  # 40 blocks of 64 KiB: more than the disk holds
                data = rng.randbytes(BLOCK)
                try:
                    staging.write(i * BLOCK, data)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
                    refused += 1
                    break
                model[i * BLOCK : (i + 1) * BLOCK] = data
            assert refused, "the disk never filled up"
            assert staging.size == len(model)
            assert staging.read(0, len(model)) == bytes(model)
            with pytest.raises(OSError):
                staging.flush()
            assert staging.read(0, len(model)) == bytes(model)

            filler.unlink()  # room again: the same writes now succeed
            for i in range(len(model) // BLOCK, 24):
                data = rng.randbytes(BLOCK)
                staging.write(i * BLOCK, data)
                model[i * BLOCK : (i + 1) * BLOCK] = data
            staging.flush()
            assert staging.read(0, len(model)) == bytes(model)
        finally:
            staging.close()
