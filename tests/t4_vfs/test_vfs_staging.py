"""The encrypted staging file: behaves like a sparse file, never holds plaintext on disk."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from b2cryptfs.errors import StagingError
from b2cryptfs.vfs.staging import BLOCK, Staging


def _disk_bytes(directory: Path, staging: Staging) -> bytes:
    # The file is unlinked: read it through the descriptor.
    return os.pread(staging._fd, 1 << 30, 0)  # noqa: SLF001


def test_random_operations_match_a_bytearray(tmp_path: Path) -> None:
    rng = random.Random(1234)
    st = Staging(str(tmp_path))
    model = bytearray()
    for _ in range(300):
        op = rng.random()
        if op < 0.6:
            off = rng.randrange(0, 5 * BLOCK)
            data = rng.randbytes(rng.choice([1, 100, 4096, BLOCK, BLOCK + 7, 3 * BLOCK]))
            st.write(off, data)
            if off > len(model):
                model.extend(bytes(off - len(model)))
            model[off : off + len(data)] = data
        elif op < 0.8:
            size = rng.randrange(0, 6 * BLOCK)
            st.truncate(size)
            if size < len(model):
                del model[size:]
            else:
                model.extend(bytes(size - len(model)))
        else:
            st.flush()
        assert st.size == len(model)
        off = rng.randrange(0, len(model) + 10)
        n = rng.randrange(0, 3 * BLOCK)
        assert st.read(off, n) == bytes(model[off : off + n])
    assert st.stream().read() == bytes(model)
    st.close()


def test_no_plaintext_and_no_file_name_left(tmp_path: Path) -> None:
    st = Staging(str(tmp_path))
    secret = b"TOP-SECRET-PLAINTEXT-" * 5000
    st.write(0, secret)
    st.write(len(secret) + 3, b"tail-marker-TOP-SECRET")
    st.flush()
    assert os.listdir(tmp_path) == []  # unlinked at once: a crash leaves nothing
    disk = _disk_bytes(tmp_path, st)
    assert len(disk) >= len(secret)
    assert b"TOP-SECRET" not in disk
    assert st.read(0, 21) == b"TOP-SECRET-PLAINTEXT-"
    st.close()


def test_tampered_block_is_detected(tmp_path: Path) -> None:
    st = Staging(str(tmp_path))
    st.write(0, b"a" * BLOCK * 2)
    st.flush()
    raw = bytearray(os.pread(st._fd, 100, 0))  # noqa: SLF001
    raw[50] ^= 1
    os.pwrite(st._fd, bytes(raw), 0)  # noqa: SLF001
    with pytest.raises(StagingError):
        st.read(0, 10)
    st.close()


def test_truncate_then_extend_reads_zeros(tmp_path: Path) -> None:
    st = Staging(str(tmp_path))
    st.write(0, b"x" * (BLOCK + 100))
    st.truncate(10)
    st.truncate(BLOCK + 50)
    assert st.read(0, BLOCK + 50) == b"x" * 10 + bytes(BLOCK + 40)
    st.close()


def test_fill_from_and_stream(tmp_path: Path) -> None:
    src = os.urandom(3 * BLOCK + 11)
    st = Staging(str(tmp_path))
    st.fill_from(lambda off, n: src[off : off + n], len(src), step=BLOCK)
    stream = st.stream()
    parts = []
    while chunk := stream.read(1000):
        parts.append(chunk)
    assert b"".join(parts) == src
    st.close()


def test_block_reads_are_snapshots_whether_held_in_memory_or_on_disk(tmp_path: Path) -> None:
    # Whole-block reads (as sealing does) may skip copies: what they return must still
    # never change with later writes, and holes read as zeros.
    st = Staging(str(tmp_path))
    st.write(0, b"a" * BLOCK)
    st.write(2 * BLOCK, b"c" * BLOCK)
    held = st.read(0, BLOCK)  # still in memory
    st.flush()
    stored = st.read(2 * BLOCK, BLOCK)  # decrypted from the file
    hole = st.read(BLOCK, BLOCK)
    st.write(0, b"x" * BLOCK)
    st.write(2 * BLOCK + 5, b"y")
    st.write(BLOCK + 1, b"z")
    assert (held, stored, hole) == (b"a" * BLOCK, b"c" * BLOCK, bytes(BLOCK))
    assert st.read(0, 3 * BLOCK) == b"x" * BLOCK + b"\0z" + bytes(BLOCK - 2) + (
        b"c" * 5 + b"y" + b"c" * (BLOCK - 6)
    )
    stream = st.stream()
    assert b"".join(iter(lambda: stream.read(BLOCK), b"")) == st.read(0, 3 * BLOCK)
    st.close()
