"""Correctness of the read path's performance machinery (no timing here).

The ciphertext cache stores runs of chunks as extents (one file per run); the fetcher reads
ahead in large, parallel range requests and keeps only undecrypted ciphertext in memory.
These tests check that none of it changes a byte: extents of uneven chunk lengths, reloads,
eviction, damage, and whole files read through the vfs in both formats, cold and cached.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from test_vfs_io import RecordingStore
from vfs_testutil import ino_of, open_vfs, read_file, run, write_file, x25519_identity

from b2cryptfs.cache.chunks import ChunkCache
from b2cryptfs.keys.types import RsaIdentity
from b2cryptfs.vfs import openfile


def files_under(path: Path) -> list[Path]:
    return [p for p in path.rglob("*") if p.is_file()]


# --- the extent cache ------------------------------------------------------------------------


def test_a_run_is_one_file_and_reads_back_chunk_by_chunk(tmp_path: Path) -> None:
    cache = ChunkCache(str(tmp_path / "c"), 1 << 20)
    chunks = [os.urandom(1000) for _ in range(5)] + [os.urandom(17)]
    assert cache.put_run("ver", 10, chunks)
    assert len(files_under(tmp_path / "c")) == 1
    assert len(cache) == 6 and cache.total_bytes == 5017
    for k, c in enumerate(chunks):
        assert cache.get("ver", 10 + k, expected_size=len(c)) == c
    assert cache.get("ver", 9) is None and cache.get("ver", 16) is None
    assert cache.get("other", 10) is None
    got = cache.get_many("ver", [9, 11, 15, 12], lambda i: 17 if i == 15 else 1000)
    assert got == {11: chunks[1], 15: chunks[5], 12: chunks[2]}


def test_uneven_chunk_lengths_split_into_valid_extents(tmp_path: Path) -> None:
    # openssl-format chunks: the first span is shorter, the last one shorter still; a longer
    # chunk after a shorter one must start a new extent.
    lengths = [800, 1000, 1000, 1000, 300, 1200, 1200, 50]
    chunks = [bytes([k]) * n for k, n in enumerate(lengths)]
    cache = ChunkCache(str(tmp_path / "c"), 1 << 20)
    assert cache.put_run("v", 0, chunks)
    assert len(files_under(tmp_path / "c")) > 1
    again = ChunkCache(str(tmp_path / "c"), 1 << 20)  # as the next mount sees it
    assert len(again) == len(chunks) and again.total_bytes == sum(lengths)
    for k, c in enumerate(chunks):
        assert again.get("v", k, expected_size=len(c)) == c


def test_eviction_drops_whole_extents_oldest_first(tmp_path: Path) -> None:
    cache = ChunkCache(str(tmp_path / "c"), 32_000)  # room for eight runs of 4 x 1000
    for v in range(8):
        assert cache.put_run(f"v{v}", 0, [bytes([v]) * 1000] * 4)
    assert len(files_under(tmp_path / "c")) == 8
    assert cache.get("v0", 3) == b"\0" * 1000  # v0 becomes the most recently used
    cache.put_run("new", 0, [b"n" * 1000] * 4)
    assert cache.total_bytes <= 32_000
    assert all(("v1", i) not in cache for i in range(4))  # the least recently used run
    assert all(cache.get("v0", i) == b"\0" * 1000 for i in range(4))
    assert all(cache.get("new", i) == b"n" * 1000 for i in range(4))
    assert len(files_under(tmp_path / "c")) == 8


def test_a_small_cache_stores_long_runs_in_pieces(tmp_path: Path) -> None:
    cache = ChunkCache(str(tmp_path / "c"), 8_000)
    chunks = [bytes([k]) * 1000 for k in range(8)]
    assert cache.put_run("v", 0, chunks)  # larger than an eighth of the cache: split
    assert [cache.get("v", i) for i in range(8)] == chunks
    cache.put("w", 0, b"w" * 1000)
    assert ("v", 0) not in cache and all(("v", i) in cache for i in range(1, 8))


def test_damaged_extent_is_dropped_whole(tmp_path: Path) -> None:
    cache = ChunkCache(str(tmp_path / "c"), 1 << 20)
    cache.put_run("v", 0, [b"x" * 100] * 3)
    (path,) = files_under(tmp_path / "c")
    with open(path, "r+b") as f:
        f.truncate(250)  # the last chunk lost its tail
    assert cache.get("v", 0) is None
    assert all(("v", i) not in cache for i in range(3))
    assert not path.exists()
    # A wrong expected length drops it as well.
    cache.put_run("w", 0, [b"y" * 100] * 2)
    assert cache.get("w", 1, expected_size=99) is None
    assert ("w", 0) not in cache


def test_overlapping_runs_and_discard(tmp_path: Path) -> None:
    cache = ChunkCache(str(tmp_path / "c"), 1 << 20)
    cache.put_run("v", 0, [b"0" * 10, b"1" * 10, b"2" * 10])
    cache.put_run("v", 2, [b"2" * 10, b"3" * 10])  # chunk 2 twice: same bytes
    assert [cache.get("v", i) for i in range(4)] == [b"0" * 10, b"1" * 10, b"2" * 10, b"3" * 10]
    cache.discard("v", 3)
    assert ("v", 3) not in cache and ("v", 2) not in cache  # its whole extent went
    assert cache.get("v", 1) == b"1" * 10
    assert cache.put_run("v", 0, [b"0" * 10, b"1" * 10])  # already there: nothing written
    assert len(files_under(tmp_path / "c")) == 1


def test_nowait_reads_only_what_memory_holds_and_never_drops_it(tmp_path: Path) -> None:
    cache = ChunkCache(str(tmp_path / "c"), 1 << 20)
    chunks = [os.urandom(4096) for _ in range(8)]
    cache.put_run("v", 0, chunks)
    # Just written: in the page cache, so the event loop's fast path gets every chunk.
    assert cache.get_many("v", range(8), lambda i: 4096, nowait=True) == dict(enumerate(chunks))
    (path,) = files_under(tmp_path / "c")
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # evict the clean pages
    finally:
        os.close(fd)
    got = cache.get_many("v", range(8), lambda i: 4096, nowait=True)
    # Whatever the kernel still holds (tmpfs: everything) is right; the rest is left out,
    # not taken for damage.
    assert all(got[i] == chunks[i] for i in got)
    assert all(("v", i) in cache for i in range(8))
    assert cache.get_many("v", range(8), lambda i: 4096) == dict(enumerate(chunks))


def test_short_writes_are_completed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A regular file rarely takes less than asked; make every write a short one.
    real_write = os.write

    def short_writev(fd: int, buffers: list[memoryview]) -> int:
        return real_write(fd, bytes(buffers[0])[:700])

    monkeypatch.setattr(os, "writev", short_writev)
    cache = ChunkCache(str(tmp_path / "c"), 1 << 20)
    chunks = [bytes([k]) * 1000 for k in range(3)] + [b"end"]
    assert cache.put_run("v", 0, chunks)
    monkeypatch.undo()
    assert [ChunkCache(str(tmp_path / "c"), 1 << 20).get("v", i) for i in range(4)] == chunks


def test_foreign_and_legacy_names_on_load(tmp_path: Path) -> None:
    root = tmp_path / "c"
    cache = ChunkCache(str(root), 1 << 20)
    cache.put("v", 4, b"legacy?")
    (path,) = files_under(root)
    digest = path.name.split("-")[0]
    # The layout before extents: one file per chunk named <digest>-<index>.
    (path.parent / f"{digest}-9").write_bytes(b"old layout")
    (path.parent / "not-a-cache-file").write_bytes(b"?")
    (path.parent / f"{digest}-0-3-100").write_bytes(b"z" * 150)  # impossible size
    again = ChunkCache(str(root), 1 << 20)
    assert again.get("v", 9) == b"old layout"
    assert again.get("v", 4) == b"legacy?"
    assert not (path.parent / "not-a-cache-file").exists()
    assert not (path.parent / f"{digest}-0-3-100").exists()
    assert ("v", 0) not in again


# --- whole files through the vfs ---------------------------------------------------------


@pytest.fixture(scope="module")
def rsa_identity() -> RsaIdentity:
    return RsaIdentity(rsa.generate_private_key(public_exponent=65537, key_size=2048))


@pytest.mark.parametrize("fmt", ["age", "openssl"])
def test_sequential_and_scattered_reads_cold_then_cached(
    tmp_path: Path, fmt: str, rsa_identity: RsaIdentity
) -> None:
    ident = x25519_identity() if fmt == "age" else rsa_identity
    store = RecordingStore(str(tmp_path / "store"))
    # Long enough for the read-ahead window to reach its largest size.
    size = openfile.MAX_READAHEAD_BYTES * 2 + 12345
    data = os.urandom(size)
    name = "f.bin.enc"

    async def first() -> None:
        async with open_vfs(tmp_path, store=store, identity=ident, format=fmt) as vfs:
            await write_file(vfs, "f.bin", data)
            await vfs.outbox.drain()
            store.reads.clear()
            assert await read_file(vfs, "f.bin") == data
            await vfs.fetcher.idle()
            # Read-ahead went out in large requests, not one per chunk.
            assert store.reads[name] <= size // openfile.GROUP_BYTES + 12
            # Ciphertext left in memory is bounded (decrypted chunks were dropped from it).
            assert vfs.fetcher.memory._total <= openfile.MEMORY_BYTES
            # Scattered, unaligned reads within and across chunks, some in cached areas.
            fh, _ = await vfs.open(await ino_of(vfs, "f.bin"), os.O_RDONLY)
            for off, n in [(1, 10), (65535, 3), (size - 5, 100), (123_456, 300_000), (0, 1)]:
                assert await vfs.read(fh, off, n) == data[off : off + n]
            await vfs.release(fh)

    async def second() -> None:
        async with open_vfs(tmp_path, store=store, identity=ident, format=fmt) as vfs:
            store.reads.clear()
            assert await read_file(vfs, "f.bin", chunk=100_000) == data
            await vfs.fetcher.idle()
            # Only opening reads the store (the pair check; openssl: the head and the tail);
            # every chunk comes from the cache.
            assert store.reads[name] <= (1 if fmt == "age" else 2)

    run(first)
    run(second)


def test_readers_of_one_file_at_different_places(tmp_path: Path) -> None:
    ident = x25519_identity()
    data = os.urandom(6 * 1024 * 1024 + 77)

    async def main() -> None:
        import trio

        async with open_vfs(tmp_path, identity=ident) as vfs:
            await write_file(vfs, "f", data)
            await vfs.outbox.drain()
            ino = await ino_of(vfs, "f")
            results: dict[int, bytes] = {}

            async def reader(k: int, start: int, step: int) -> None:
                fh, _ = await vfs.open(ino, os.O_RDONLY)
                out = []
                off = start
                while off < len(data):
                    piece = await vfs.read(fh, off, step)
                    if not piece:
                        break
                    out.append(piece)
                    off += len(piece)
                await vfs.release(fh)
                results[k] = b"".join(out)

            async with trio.open_nursery() as n:
                n.start_soon(reader, 0, 0, 128 * 1024)
                n.start_soon(reader, 1, 0, 128 * 1024)  # same place, same time
                n.start_soon(reader, 2, 3_000_001, 50_000)
            assert results[0] == data and results[1] == data
            assert results[2] == data[3_000_001:]

    run(main)


def test_reads_of_several_chunks_reuse_reply_buffers_never_one_still_held(
    tmp_path: Path,
) -> None:
    """A sequential reader's 1 MiB reads are decrypted into the fetcher's kept reply buffers
    (no buffer per read, no join); a reply its caller still holds is never written again."""
    data = os.urandom(8 * 1024 * 1024 + 4321)

    async def body() -> None:
        async with open_vfs(tmp_path, identity=x25519_identity()) as vfs:
            await write_file(vfs, "f", data)
            await vfs.outbox.drain()
            fh, _ = await vfs.open(await ino_of(vfs, "f"), os.O_RDONLY)
            kept, reused, off, step = [], 0, 0, 1 << 20
            while piece := await vfs.read(fh, off, step):
                assert piece == data[off : off + len(piece)]
                if off // step % 3 == 0:
                    kept.append((off, piece))  # held on while later reads go on
                elif isinstance(piece, memoryview):
                    reused += any(piece.obj is b for b in vfs.fetcher.replies._bufs)
                off += len(piece)
                del piece
            await vfs.release(fh)
            assert off == len(data)
            assert all(p == data[o : o + len(p)] for o, p in kept)
            assert reused >= 3
            # A read that had to wait for its chunks (another handle, far from the first
            # one's read-ahead) is decrypted into a reply buffer too.
            fh, _ = await vfs.open(await ino_of(vfs, "f"), os.O_RDONLY)
            far = len(data) - step - 4321
            vfs.fetcher.memory.clear()
            piece = await vfs.read(fh, far, step)
            assert piece == data[far : far + step]
            assert any(memoryview(piece).obj is b for b in vfs.fetcher.replies._bufs)
            await vfs.release(fh)

    run(body)


class RangeStore(RecordingStore):
    """A real DirStore that records every range read: (object name, offset, length)."""

    def __init__(self, root: str) -> None:
        super().__init__(root)
        self.ranges: list[tuple[str, int, int]] = []

    def read(self, obj, offset=0, length=None):  # type: ignore[no-untyped-def]
        data = super().read(obj, offset, length)
        self.ranges.append((obj.name, offset, len(data)))
        return data


def test_a_sequential_read_downloads_each_byte_once_in_few_requests(tmp_path: Path) -> None:
    store = RangeStore(str(tmp_path / "store"))
    size = openfile.MAX_READAHEAD_BYTES * 3 + 4321
    data = os.urandom(size)

    async def body() -> None:
        async with open_vfs(tmp_path, store=store, identity=x25519_identity()) as vfs:
            await write_file(vfs, "f.bin", data)
            await vfs.outbox.drain()
            store.ranges.clear()
            # In the kernel's read size: the read-ahead, not the reads, sizes the requests.
            assert await read_file(vfs, "f.bin", chunk=128 * 1024) == data
            await vfs.fetcher.idle()

    run(body)
    spans = sorted((off, off + n) for name, off, n in store.ranges if name == "f.bin.enc")
    # Back to back from the first byte to the last: no byte twice (the opening's first
    # chunk is not asked for again by the first read), none left out.
    assert spans[0][0] == 0 and spans[-1][1] > size
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end == start, spans
    # Requests of about 2 MiB or more on average (a few smaller ones while the window opens).
    assert len(spans) <= size // (2 << 20) + 8, len(spans)


def test_a_cached_chunk_that_fails_authentication_is_fetched_again(tmp_path: Path) -> None:
    """A cached chunk damaged in place (its length intact, so the cache hands it out) fails
    authentication when decrypted: it is dropped and read from the store again."""
    ident = x25519_identity()
    store = RecordingStore(str(tmp_path / "store"))
    data = os.urandom(6 * 1024 * 1024 + 77)
    name = "f.enc"

    async def first() -> None:
        async with open_vfs(tmp_path, store=store, identity=ident) as vfs:
            await write_file(vfs, "f", data)
            await vfs.outbox.drain()
            fh, _ = await vfs.open(await ino_of(vfs, "f"), os.O_RDONLY)
            assert await vfs.read(fh, 0, 128 * 1024) == data[: 128 * 1024]
            off = 128 * 1024
            while piece := await vfs.read(fh, off, 1 << 20):
                assert piece == data[off : off + len(piece)]
                off += len(piece)
            assert off == len(data)
            await vfs.release(fh)
            await vfs.fetcher.idle()

    async def second() -> None:
        async with open_vfs(tmp_path, store=store, identity=ident) as vfs:
            store.reads.clear()
            assert await read_file(vfs, "f", chunk=1 << 20) == data
            assert store.reads[name] >= 2  # the opening, then the damaged chunk again

    run(first)
    # Damage every cached extent in place (same length, so the cache still hands it out).
    damaged = 0
    for path in files_under(tmp_path / "cache"):
        if path.stat().st_size > 100_000 and "chunks" in path.parts:
            with open(path, "r+b") as f:
                f.seek(70_000)
                byte = f.read(1)
                f.seek(70_000)
                f.write(bytes([byte[0] ^ 1]))
            damaged += 1
    assert damaged
    run(second)
