"""The on-disk ciphertext chunk cache: LRU bound, persistence, damage, write failures."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

from b2cryptfs.cache.cachedir import CacheDir
from b2cryptfs.cache.chunks import ChunkCache
from b2cryptfs.cache.readers import ByteBoundLRU, MemoryLRU
from b2cryptfs.errors import CacheDirBusy

ROOT = Path(__file__).resolve().parents[2]


def test_put_get_roundtrip_and_mode(tmp_path: Path) -> None:
    cache = ChunkCache(str(tmp_path / "c"), 1 << 20)
    assert cache.get("v1", 0) is None
    assert cache.put("v1", 0, b"abc")
    assert cache.get("v1", 0) == b"abc"
    assert ("v1", 0) in cache and ("v1", 1) not in cache
    assert stat.S_IMODE(os.stat(tmp_path / "c").st_mode) == 0o700


def test_lru_eviction_keeps_total_under_budget(tmp_path: Path) -> None:
    cache = ChunkCache(str(tmp_path / "c"), 3000)
    for i in range(3):
        cache.put("v", i, bytes([i]) * 1000)
    assert cache.get("v", 0) is not None  # 0 becomes the most recently used
    cache.put("v", 3, b"x" * 1000)
    assert cache.total_bytes <= 3000
    assert cache.get("v", 1) is None  # the least recently used went
    assert cache.get("v", 0) == b"\0" * 1000
    assert cache.get("v", 3) == b"x" * 1000
    on_disk = sum(len(files) for _, _, files in os.walk(tmp_path / "c"))
    assert on_disk == len(cache) == 3


def test_survives_restart_and_rebuilds_budget(tmp_path: Path) -> None:
    cache = ChunkCache(str(tmp_path / "c"), 10_000)
    for i in range(5):
        cache.put("ver", i, b"y" * 1000)
    again = ChunkCache(str(tmp_path / "c"), 10_000)
    assert len(again) == 5 and again.total_bytes == 5000
    assert again.get("ver", 4) == b"y" * 1000
    smaller = ChunkCache(str(tmp_path / "c"), 2500)
    assert smaller.total_bytes <= 2500 and len(smaller) == 2


def test_damaged_entry_is_dropped(tmp_path: Path) -> None:
    cache = ChunkCache(str(tmp_path / "c"), 10_000)
    cache.put("v", 7, b"z" * 100)
    assert cache.get("v", 7, expected_size=99) is None
    assert ("v", 7) not in cache
    assert cache.get("v", 7) is None


def test_unwritable_cache_degrades_without_error(tmp_path: Path) -> None:
    # A real write failure (EFBIG under a file size limit) in a child process.
    script = textwrap.dedent(
        f"""
        import resource, signal, sys
        sys.path.insert(0, {str(ROOT)!r})
        from b2cryptfs.cache.chunks import ChunkCache
        cache = ChunkCache({str(tmp_path / "c")!r}, 1 << 30)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1000, resource.RLIM_INFINITY))
        assert cache.put("v", 0, b"a" * 500) is True
        assert cache.put("v", 1, b"b" * 5000) is False
        assert cache.put("v", 2, b"c" * 10) is False  # backing off after a failure
        assert cache.get("v", 0) == b"a" * 500
        assert cache.get("v", 1) is None
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
    assert "cannot store" in out.stderr  # logged once, as a warning


def test_interrupted_write_leftovers_are_removed(tmp_path: Path) -> None:
    cache = ChunkCache(str(tmp_path / "c"), 10_000)
    cache.put("v", 0, b"q")
    sub = next(p for p in (tmp_path / "c").iterdir() if p.is_dir())
    (sub / ".tmpXYZ").write_bytes(b"partial")
    ChunkCache(str(tmp_path / "c"), 10_000)
    assert not (sub / ".tmpXYZ").exists()


def test_memory_lrus() -> None:
    lru: MemoryLRU[str] = MemoryLRU(2)
    lru.put("a", "1")
    lru.put("b", "2")
    assert lru.get("a") == "1"
    lru.put("c", "3")
    assert lru.get("b") is None and lru.get("a") == "1" and len(lru) == 2
    blru = ByteBoundLRU(10)
    blru.put(1, b"12345")
    blru.put(2, b"12345")
    blru.put(3, b"1")
    assert 1 not in blru and blru.get(2) == b"12345"
    blru.discard(2)
    assert 2 not in blru
    blru.put(4, b"x" * 11)  # larger than the bound: not kept
    assert 4 not in blru


def test_cache_dir_is_per_store_private_and_locked(tmp_path: Path) -> None:
    a = CacheDir(str(tmp_path / "root"), "file:///one")
    b = CacheDir(str(tmp_path / "root"), "file:///two")
    try:
        assert a.path != b.path
        for d in (a.path, a.chunks, a.outbox, a.staging):
            assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
        try:
            CacheDir(str(tmp_path / "root"), "file:///one")
        except CacheDirBusy as exc:
            assert "in use" in str(exc)
        else:
            raise AssertionError("a second mount of the same store shared its cache dir")
    finally:
        a.close()
        b.close()
    CacheDir(str(tmp_path / "root"), "file:///one").close()  # free again after close
