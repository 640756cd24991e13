"""Damaged pairs under a mount: a key object that belongs to another file, tampered content.

Reads fail with EIO and a log line naming the object, only where the damage is; everything
else reads as before. A key object overwritten by a later upload is repaired from its older
versions when the store keeps them (B2)."""

from __future__ import annotations

import errno
import os
import random
from pathlib import Path

import pytest
from mountutil import Keys, StoreSpec, dir_store, mounted, requires_fuse, rsa_keys  # noqa: F401
from reliability_util import b2_spec, log_lines, outbox_entries, wait_until  # noqa: F401

from b2cryptfs.bucket.pairs import INFO_FORMAT

pytestmark = requires_fuse

CHUNK = 64 * 1024
AGE_NONCE, AGE_TAG = 16, 16


def eio(fn) -> bool:  # type: ignore[no-untyped-def]
    with pytest.raises(OSError) as info:
        fn()
    return info.value.errno == errno.EIO


def pread(path: Path, offset: int, length: int) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, length, offset)
    finally:
        os.close(fd)


def test_wrong_key_object_and_tampered_chunk(rsa_keys: Keys, tmp_path: Path) -> None:  # noqa: F811
    store, mnt = dir_store(tmp_path), tmp_path / "mnt"
    rng = random.Random(5)
    a, b = rng.randbytes(100_000), rng.randbytes(5000)
    c = rng.randbytes(4 * CHUNK + 1234)  # five chunks
    with mounted(store, mnt, tmp_path / "cache-1", rsa_keys.args()):
        (mnt / "a.bin").write_bytes(a)
        (mnt / "b.bin").write_bytes(b)
        (mnt / "c.bin").write_bytes(c)

    # a.bin's key object replaced by b.bin's (a directory keeps no older version).
    root = store.root
    (root / "a.bin.key.enc").write_bytes((root / "b.bin.key.enc").read_bytes())
    # One byte flipped in the ciphertext of c.bin's second chunk.
    content = bytearray((root / "c.bin.enc").read_bytes())
    content[AGE_NONCE + (CHUNK + AGE_TAG) + 1000] ^= 0x40
    (root / "c.bin.enc").write_bytes(bytes(content))

    with mounted(store, mnt, tmp_path / "cache-2", rsa_keys.args()) as m:
        assert sorted(os.listdir(mnt)) == ["a.bin", "b.bin", "c.bin"]
        assert eio(lambda: (mnt / "a.bin").read_bytes())
        assert log_lines(m.log(), "ERROR", "a.bin.key.enc"), m.log()
        assert (mnt / "b.bin").read_bytes() == b

        # Only reads that touch the tampered chunk fail.
        assert pread(mnt / "c.bin", 0, 4096) == c[:4096]
        for offset in (2 * CHUNK, 3 * CHUNK + 10, 4 * CHUNK):
            assert pread(mnt / "c.bin", offset, 4096) == c[offset : offset + 4096]
        assert eio(lambda: pread(mnt / "c.bin", CHUNK + 500, 100))
        assert eio(lambda: (mnt / "c.bin").read_bytes())
        assert log_lines(m.log(), "ERROR", "c.bin"), m.log()
        assert pread(mnt / "c.bin", CHUNK - 4096, 4096) == c[CHUNK - 4096 : CHUNK]

        # The mount goes on working.
        (mnt / "new.txt").write_bytes(b"new\n")
        assert (mnt / "new.txt").read_bytes() == b"new\n"
    assert "Traceback" not in m.log(), m.log()


def test_key_object_overwritten_on_b2(
    b2_spec: StoreSpec,  # noqa: F811
    rsa_keys: Keys,  # noqa: F811
    tmp_path: Path,
) -> None:
    mnt, cache = tmp_path / "mnt", tmp_path / "cache"
    a, b = b"file a\n" * 2000, b"file b\n" * 3000
    with mounted(b2_spec, mnt, cache, rsa_keys.args()):
        (mnt / "a.txt").write_bytes(a)
        (mnt / "b.txt").write_bytes(b)
        wait_until("the uploads", lambda: not outbox_entries(cache))

    store = b2_spec.open()
    wrong = store.read(store.stat("b.txt.key.enc"))
    store.upload_bytes("a.txt.key.enc", wrong, {INFO_FORMAT: "age"})

    # The older version of the key object still matches: read, with a warning.
    with mounted(b2_spec, mnt, tmp_path / "cache-2", rsa_keys.args()) as m:
        assert (mnt / "a.txt").read_bytes() == a
        assert (mnt / "b.txt").read_bytes() == b
    assert log_lines(m.log(), "WARNING", "a.txt.key.enc", "older version"), m.log()

    # Without the older versions it cannot be repaired: EIO naming the object.
    for version in store.versions("a.txt.key.enc")[1:]:
        store.delete_version(version)
    assert len(store.versions("a.txt.key.enc")) == 1
    with mounted(b2_spec, mnt, tmp_path / "cache-3", rsa_keys.args()) as m:
        assert eio(lambda: (mnt / "a.txt").read_bytes())
        assert (mnt / "b.txt").read_bytes() == b
    assert log_lines(m.log(), "ERROR", "a.txt.key.enc"), m.log()
