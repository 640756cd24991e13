"""The age staging (vfs/agestaging.py) on a disk that fills up (a real tmpfs): a spill's
blocks go to the file together, and a write that fails is raised (by that write, a later one,
the flush or the seal), changes nothing acknowledged, and works once there is room again;
blocks written again and again keep their newest content."""

from __future__ import annotations

import errno
import hashlib
import random
import shutil
import subprocess
from pathlib import Path

import pytest
from reliability_util import MB, tmpfs
from vfs_testutil import x25519_identity

from b2cryptfs.bucket.pairs import PairStore
from b2cryptfs.formats.age import encode_x25519_identity
from b2cryptfs.store.dirstore import DirStore
from b2cryptfs.vfs.agestaging import AgeStaging, seal_in_place
from b2cryptfs.vfs.outboxcontent import ContentFile
from b2cryptfs.vfs.staging import BLOCK

AGE = shutil.which("age")


@pytest.fixture
def pairs(tmp_path: Path) -> PairStore:
    ident = x25519_identity()
    (tmp_path / "identity.txt").write_text(encode_x25519_identity(ident) + "\n")
    store = DirStore(str(tmp_path / "store"), create=True)
    return PairStore(store, recipients=[ident.recipient()], identities=[ident])


def sealed_plaintext(
    pairs: PairStore, st: AgeStaging, tmp_path: Path, name: str, where: Path | None = None
) -> bytes:
    """Seal as vfs/content.py does (into ``where``, the cache disk, if given); the plaintext
    of the result (``age -d`` where installed)."""
    dest = (where or tmp_path) / f"{name}.content"
    out = ContentFile(str(dest), durable=False)
    with out:
        sealed = seal_in_place(pairs, st, out)
        if sealed is None:
            sealed = pairs.seal(st.stream(), out)  # type: ignore[arg-type]
    data = dest.read_bytes()
    assert hashlib.sha1(data).hexdigest() == out.sha1  # the hash the spill thread took
    joined = tmp_path / f"{name}.age"
    joined.write_bytes(sealed.key_object + data)
    if AGE is None:
        reader = pairs.codec.open(sealed.key_object, pairs.identities, _Source(data))
        return reader.read(0, sealed.plaintext_size + 1)
    cmd = [AGE, "-d", "-i", str(tmp_path / "identity.txt"), str(joined)]
    proc = subprocess.run(cmd, capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return proc.stdout


class _Source:
    def __init__(self, data: bytes) -> None:
        self.data, self.size = data, len(data)

    def fetch(self, start: int, end: int) -> bytes:
        return self.data[start:end]


def test_rewrites_land_in_order(tmp_path: Path, pairs: PairStore) -> None:
    """The same blocks written again and again in 1 MiB writes, aligned or not: the newest
    version is what reads back and seals."""
    rng = random.Random(7)
    staging_dir = tmp_path / "staging"
    staging_dir.mkdir()
    st = AgeStaging(str(staging_dir))
    model = bytearray()
    try:
        for _ in range(60):
            off = rng.randrange(0, 6) * MB + rng.choice([0, 0, 100, BLOCK])
            data = rng.randbytes(MB)
            st.write(off, data)
            model[len(model) :] = bytes(max(0, off - len(model)))
            model[off : off + MB] = data
        assert st.read(0, len(model)) == bytes(model)
        assert sealed_plaintext(pairs, st, tmp_path, "rewrites") == bytes(model)
    finally:
        st.close()


def test_a_full_disk_is_raised_at_seal(tmp_path: Path, pairs: PairStore) -> None:
    """One write() of more than the disk holds is taken (its spill afterwards is best
    effort: the blocks stay in memory); the seal that follows on the same disk (what
    close() does) raises ENOSPC, nothing is lost, and it works once there is room again."""
    with tmpfs(tmp_path / "disk", "8m") as disk:
        filler = disk / "filler"
        filler.write_bytes(b"\0" * (7 * MB))
        st = AgeStaging(str(disk))
        data = random.Random(1).randbytes(3 * MB + 123)
        try:
            assert st.write(0, data) == len(data)
            with pytest.raises(OSError) as info:
                sealed_plaintext(pairs, st, tmp_path, "full", disk)
            assert info.value.errno == errno.ENOSPC
            assert st.read(0, len(data)) == data  # the blocks that did not fit are in memory
            filler.unlink()
            (disk / "full.content").unlink(missing_ok=True)
            assert sealed_plaintext(pairs, st, tmp_path, "room", disk) == data
        finally:
            st.close()


def test_a_full_disk_refuses_writes_and_loses_nothing(tmp_path: Path, pairs: PairStore) -> None:
    """Sequential and random 1 MiB writes into a disk that fills up: ENOSPC is raised by a
    write or the flush, a refused write changes nothing, and every acknowledged byte reads
    back and seals once there is room."""
    rng = random.Random(3)
    with tmpfs(tmp_path / "disk", "16m") as disk:
        filler = disk / "filler"
        filler.write_bytes(b"\0" * (14 * MB))
        st = AgeStaging(str(disk))
        model = bytearray()
        refused = 0
        try:
            for i in range(12):
                off = i * MB if i < 8 else rng.randrange(0, len(model))
                data = rng.randbytes(MB)
                try:
                    st.write(off, data)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
                    refused += 1
                    continue
                model[len(model) :] = bytes(max(0, off - len(model)))
                model[off : off + MB] = data
            try:
                st.flush()
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                refused += 1
            assert refused, "the disk never filled up"
            assert st.size == len(model)
            assert st.read(0, len(model)) == bytes(model)
            filler.unlink()
            st.flush()
            assert st.read(0, len(model)) == bytes(model)
            assert sealed_plaintext(pairs, st, tmp_path, "after") == bytes(model)
        finally:
            st.close()


def test_rewrites_on_a_full_disk_keep_the_newest(tmp_path: Path) -> None:
    """Versions of the same blocks written while the disk is full (some writes refused):
    the staging holds the newest acknowledged one."""
    rng = random.Random(5)
    with tmpfs(tmp_path / "disk", "2m") as disk:
        (disk / "filler").write_bytes(b"\0" * (2 * MB - 64 * 1024))
        for _ in range(20):
            st = AgeStaging(str(disk))
            model = bytearray()
            try:
                for off in (0, MB, 0, MB, 2 * MB):
                    data = rng.randbytes(MB)
                    try:
                        st.write(off, data)
                    except OSError as exc:
                        assert exc.errno == errno.ENOSPC
                        continue
                    model[len(model) :] = bytes(max(0, off - len(model)))
                    model[off : off + MB] = data
                assert st.read(0, len(model) + 1) == bytes(model)
            finally:
                st.close()


def test_blocks_written_again_while_their_run_fails_keep_the_newest(tmp_path: Path) -> None:
    """A run that fails in the spill thread (ENOSPC) must not bring back its blocks' older
    versions over ones written while it was in flight."""
    with tmpfs(tmp_path / "disk", "2m") as disk:
        (disk / "filler").write_bytes(b"\0" * (2 * MB - 64 * 1024))
        st = AgeStaging(str(disk))
        rng = random.Random(13)
        try:
            st.write(0, rng.randbytes(MB))
            st.write(MB, rng.randbytes(MB))  # the first MiB's run goes out, and fails
            newer = rng.randbytes(2 * MB)
            assert st.write(0, newer) == len(newer)  # (its spill afterwards: best effort)
            assert st.read(0, 2 * MB + 1) == newer
        finally:
            st.close()
