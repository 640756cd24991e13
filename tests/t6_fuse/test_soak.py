"""Memory under a mixed load: 8 readers and 4 writers on one mount (loopback B2).

The daemon's RSS is sampled the whole time and printed. It must stay under the bound
whatever the run length, and it must not keep growing: once the caches are warm, the RSS of
the second half of the run may rise only a little. The heavy form runs 10 minutes
(B2CRYPTFS_SOAK_SECONDS overrides); CI runs a reduced form of about 20 s.

To find what grows, run the heavy form with ``B2CRYPTFS_TRACEMALLOC=DIR`` in the
environment (b2cryptfs/fs/memdebug.py): the daemon dumps tracemalloc snapshots there.
"""

from __future__ import annotations

import os
import random
import threading
import time
from pathlib import Path

import pytest
from mountutil import Keys, Mount, StoreSpec, requires_fuse, rsa_keys  # noqa: F401
from reliability_util import HEAVY, MB, b2_spec  # noqa: F401

pytestmark = requires_fuse

SECONDS = float(os.environ.get("B2CRYPTFS_SOAK_SECONDS", 600 if HEAVY else 20))
READERS, WRITERS = 8, 4
FILES = 24
RSS_LIMIT = 200 * MB
# Growth allowed between the first and the last quarter of the second half of the run
# (caches warm up in the first half; the daemon trims its heap every 10 s, a sawtooth):
# the reduced form is short and may still be warming up on a slow machine.
GROWTH_LIMIT = (24 if SECONDS >= 300 else 48) * MB


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


class Load:
    def __init__(self, mnt: Path) -> None:
        self.mnt = mnt
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.reads = self.writes = 0
        self.threads = [
            threading.Thread(target=self._guard, args=(self._reader, i), daemon=True)
            for i in range(READERS)
        ] + [
            threading.Thread(target=self._guard, args=(self._writer, i), daemon=True)
            for i in range(WRITERS)
        ]

    def _guard(self, fn, i: int) -> None:  # noqa: ANN001
        try:
            fn(random.Random(i))
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.errors.append(exc)

    def _reader(self, rng: random.Random) -> None:
        while not self.stop.is_set():
            p = self.mnt / f"f{rng.randrange(FILES)}.bin"
            with open(p, "rb") as fh:
                if rng.random() < 0.5:
                    fh.read()
                else:  # random ranges, as a program seeking about would
                    size = os.fstat(fh.fileno()).st_size
                    for _ in range(8):
                        fh.seek(rng.randrange(max(1, size)))
                        fh.read(64 * 1024)
            self.reads += 1

    def _writer(self, rng: random.Random) -> None:
        while not self.stop.is_set():
            n = rng.randrange(FILES)
            data = rng.randbytes(rng.randrange(64 * 1024, 3 * MB))
            (self.mnt / f"f{n}.bin").write_bytes(data)
            self.writes += 1
            time.sleep(0.2)


@pytest.mark.heavy
def test_rss_stays_bounded_under_readers_and_writers(
    b2_spec: StoreSpec,  # noqa: F811
    rsa_keys: Keys,  # noqa: F811
    tmp_path: Path,
) -> None:
    mnt, cache = tmp_path / "mnt", tmp_path / "cache"
    env = dict(b2_spec.env)  # (which leaves out the caller's B2CRYPTFS_* settings)
    for name in ("B2CRYPTFS_TRACEMALLOC", "B2CRYPTFS_TRACEMALLOC_EVERY"):
        if name in os.environ:
            env[name] = os.environ[name]
    m = Mount(b2_spec, mnt, cache, rsa_keys.args(), env=env)
    samples: list[tuple[float, int]] = []
    try:
        m.start()
        assert m.pid is not None
        rng = random.Random(5)
        for i in range(FILES):
            (mnt / f"f{i}.bin").write_bytes(rng.randbytes(rng.randrange(256 * 1024, 4 * MB)))
        load = Load(mnt)
        start = time.monotonic()
        for t in load.threads:
            t.start()
        step = max(1.0, SECONDS / 60)
        while (now := time.monotonic() - start) < SECONDS and not load.errors:
            samples.append((now, rss(m.pid)))
            time.sleep(step)
        samples.append((time.monotonic() - start, rss(m.pid)))
        load.stop.set()
        for t in load.threads:
            t.join(120)
        assert not load.errors, load.errors[0]
    finally:
        m.close(expect_exit=None)
    print(f"\nsoak {SECONDS:g} s: {load.reads} reads, {load.writes} writes; RSS (s: MB):")
    print("  " + ", ".join(f"{t:.0f}: {r / MB:.0f}" for t, r in samples))
    peak = max(r for _, r in samples)
    assert peak <= RSS_LIMIT, f"RSS peaked at {peak / MB:.0f} MB"
    half = [r for t, r in samples if t >= SECONDS / 2]
    q = max(1, len(half) // 4)
    early, late = sorted(half[:q])[q // 2], sorted(half[-q:])[q // 2]
    assert late - early <= GROWTH_LIMIT, (
        f"RSS still grows: {early / MB:.0f} MB -> {late / MB:.0f} MB in the second half"
    )
