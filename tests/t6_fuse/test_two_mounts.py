"""Two mounts of one store: what one mount does, the other sees whole or not at all.

- A reader on the second mount gets one complete version of a file the first mount keeps
  overwriting (its bytes and its size, checked by content hash) or an I/O error, never a
  prefix, a mix of two versions, or ENOENT for a name that never went away.
- An "already exists" from the store (another mount made the name since this one listed
  its directory) refreshes that listing at once: stat and create below see the name.
"""

from __future__ import annotations

import errno
import hashlib
import os
import random
import threading
import time
from pathlib import Path

import pytest
from mountutil import Keys, StoreSpec, mount_store, mounted, requires_fuse, rsa_keys  # noqa: F401
from reliability_util import HEAVY, outbox_entries, wait_until

pytestmark = requires_fuse

N_FILES = 50


def _sizes(rng: random.Random) -> int:
    # Small and multi-chunk files, and sizes that change a lot between versions.
    return rng.choice([10, 5000, 70_000, 300_000, 1 << 20, 3 << 20])


@pytest.mark.heavy
@pytest.mark.parametrize("mount_store", ["dir", "b2"], indirect=True)
def test_reader_on_second_mount_gets_whole_versions(
    mount_store: StoreSpec,  # noqa: F811
    rsa_keys: Keys,  # noqa: F811
    tmp_path: Path,
) -> None:
    duration = 60.0 if HEAVY else 6.0
    rng = random.Random(int(os.environ.get("B2CRYPTFS_TWO_MOUNTS_SEED", "2")))
    a, b = tmp_path / "a", tmp_path / "b"
    names = [f"f{i:02d}.bin" for i in range(N_FILES)]
    versions: dict[str, set[str]] = {n: set() for n in names}
    lock = threading.Lock()
    fast = ["--dir-cache-time", "1s"]
    with (
        mounted(mount_store, a, tmp_path / "cache-a", rsa_keys.args(), extra_args=fast),
        mounted(mount_store, b, tmp_path / "cache-b", rsa_keys.args(), extra_args=fast),
    ):
        (a / "d").mkdir()
        for n in names:
            data = rng.randbytes(_sizes(rng))
            versions[n].add(hashlib.sha256(data).hexdigest())
            (a / "d" / n).write_bytes(data)
        wait_until(
            "the first versions to be stored", lambda: not outbox_entries(tmp_path / "cache-a"), 120
        )
        # Until b's listings are older than its dir cache time, b may not see d yet: that
        # ENOENT is the cache's, not an overwrite's. From when b sees every name, none is
        # ever missing (a only overwrites), so ENOENT is a failure below.
        wait_until("b to list every file", lambda: all((b / "d" / n).is_file() for n in names), 30)
        stop = threading.Event()
        counts = {"writes": 0, "reads": 0, "errors": 0}
        bad: list[str] = []

        def writer() -> None:
            wrng = random.Random(rng.random())
            while not stop.is_set():
                n = wrng.choice(names)
                data = wrng.randbytes(_sizes(wrng))
                with lock:  # known before any of it can be read
                    versions[n].add(hashlib.sha256(data).hexdigest())
                (a / "d" / n).write_bytes(data)
                counts["writes"] += 1

        def reader() -> None:
            rrng = random.Random(rng.random())
            while not stop.is_set():
                n = rrng.choice(names)
                try:
                    with open(b / "d" / n, "rb") as f:
                        data = f.read()
                        size = os.fstat(f.fileno()).st_size
                except OSError as exc:
                    counts["errors"] += 1
                    key = errno.errorcode.get(exc.errno or 0, str(exc.errno))
                    counts[key] = counts.get(key, 0) + 1
                    if exc.errno not in (errno.EIO, errno.ESTALE):
                        bad.append(f"{n}: {exc}")
                    continue
                counts["reads"] += 1
                digest = hashlib.sha256(data).hexdigest()
                with lock:
                    known = digest in versions[n]
                if not known:
                    bad.append(f"{n}: read {len(data)} bytes (stat: {size}) of no written version")

        threads = [threading.Thread(target=writer)] + [
            threading.Thread(target=reader) for _ in range(2)
        ]
        for t in threads:
            t.start()
        time.sleep(duration)
        stop.set()
        for t in threads:
            t.join(120)
    print(f"two mounts ({mount_store.kind}): {counts}, {len(bad)} bad")
    assert not bad, f"{len(bad)} torn reads of {counts['reads']}: {bad[:5]}"
    assert counts["reads"] > 0 and counts["writes"] > 0
    # Most reads must succeed: an error is allowed, not the rule.
    assert counts["errors"] <= counts["reads"], counts


@pytest.mark.parametrize("mount_store", ["dir", "b2"], indirect=True)
def test_exists_on_store_refreshes_the_listing(
    mount_store: StoreSpec,  # noqa: F811
    rsa_keys: Keys,  # noqa: F811
    tmp_path: Path,
) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    slow = ["--dir-cache-time", "10m"]
    with (
        mounted(mount_store, a, tmp_path / "cache-a", rsa_keys.args(), extra_args=slow),
        mounted(mount_store, b, tmp_path / "cache-b", rsa_keys.args(), extra_args=slow),
    ):
        (a / "e").mkdir()
        # b lists both directories now, and keeps those listings for 10 minutes.
        assert not (b / "d").exists() and not (b / "e" / "f").exists()
        (a / "d").mkdir()
        (a / "e" / "f").write_bytes(b"made by a\n")
        wait_until("f to be stored", lambda: not outbox_entries(tmp_path / "cache-a"), 60)

        with pytest.raises(FileExistsError):
            (b / "d").mkdir()
        assert (b / "d").is_dir(), "mkdir said EEXIST but stat says ENOENT"
        (b / "d" / "x").write_bytes(b"x\n")
        assert (b / "d" / "x").read_bytes() == b"x\n"

        # b's listing of e is older than its attribute timeout (1 s) now: an exclusive
        # create asks the store rather than that listing.
        time.sleep(1.5)
        with pytest.raises(FileExistsError):
            os.close(os.open(b / "e" / "f", os.O_WRONLY | os.O_CREAT | os.O_EXCL))
        assert (b / "e" / "f").read_bytes() == b"made by a\n", "an exclusive create clobbered f"
