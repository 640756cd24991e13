"""kill -9 during rename(src, dst) onto a just-closed dst, with a backlog of pending uploads.

By POSIX the rename is atomic: after the crash, the next mount and its drain, dst is either
the content it had at its last close (and src is intact) or src's content (and src is gone);
every close that returned is still delivered, nothing reads EIO, and fsck finds no broken
pair or orphan key object. Half the trials rename a src that is already stored (the store
copies the pair), half one still queued in the outbox (the entry is retargeted).
"""

from __future__ import annotations

import errno
import os
import random
import threading
import time
from pathlib import Path

import pytest
from mountutil import Keys, Mount, StoreSpec, mount_store, mounted, requires_fuse, rsa_keys  # noqa: F401
from reliability_util import HEAVY, MB, cli, outbox_entries, wait_until

pytestmark = requires_fuse


def _rename_in_background(src: Path, dst: Path) -> tuple[threading.Thread, list[object]]:
    outcome: list[object] = []

    def run() -> None:
        try:
            os.rename(src, dst)
            outcome.append("done")
        except OSError as exc:  # the daemon died under it
            outcome.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, outcome


def _trial(
    spec: StoreSpec, keys: Keys, tmp: Path, n: int, rng: random.Random, *, sizes: tuple[int, int]
) -> dict[str, int]:
    backlog_mb, dst_mb = sizes
    mnt, cache = tmp / "mnt", tmp / "cache"
    d = f"t{n}"
    stored_src = n % 2 == 0
    src_data = rng.randbytes(100 * 1024 + n)
    old_dst = rng.randbytes(dst_mb * MB // 2 + 7)  # an earlier round, already stored
    dst_data = rng.randbytes(dst_mb * MB + n)
    backlog = {f"bk{i}.bin": rng.randbytes(8 * MB + i) for i in range(max(1, backlog_mb // 8))}

    m = Mount(spec, mnt, cache, keys.args())
    try:
        m.start()
        (mnt / d).mkdir()
        (mnt / d / "dst").write_bytes(old_dst)
        if stored_src:
            (mnt / d / "src").write_bytes(src_data)
        store = spec.open()
        wait_until("the first versions to be stored", lambda: not outbox_entries(cache), 120)
        for name, data in backlog.items():
            (mnt / d / name).write_bytes(data)
        if not stored_src:
            (mnt / d / "src").write_bytes(src_data)
        (mnt / d / "dst").write_bytes(dst_data)  # just closed: queued behind the backlog
        t, outcome = _rename_in_background(mnt / d / "src", mnt / d / "dst")
        # A rename takes some ms here: most kills land in its first tens of ms.
        time.sleep(rng.uniform(0.0, 0.25 if n % 4 == 3 else 0.03))
        m.kill9()
        t.join(30)
    finally:
        m.close(expect_exit=None)
    returned = outcome == ["done"]

    # The next mount with the same cache finishes what was interrupted and drains.
    with mounted(spec, mnt, cache, keys.args()):
        wait_until("the outbox to drain", lambda: not outbox_entries(cache), 300)
    with mounted(spec, mnt, tmp / f"fresh{n}", keys.args()):
        for name, data in backlog.items():
            assert (mnt / d / name).read_bytes() == data, f"trial {n}: {name} lost"
        try:
            got = (mnt / d / "dst").read_bytes()
        except OSError as exc:
            pytest.fail(f"trial {n}: dst reads {errno.errorcode.get(exc.errno or 0)}")
        src_exists = (mnt / d / "src").exists()
        if got == src_data:
            assert not src_exists, f"trial {n}: dst is src's content but src is still there"
            outcome_kind = "renamed"
        else:
            assert not returned, f"trial {n}: the rename returned but dst is not src"
            assert got == dst_data, (
                f"trial {n}: dst is {len(got)} bytes: neither its last close "
                f"({'an earlier round' if got == old_dst else 'unknown content'}) nor src"
            )
            assert src_exists and (mnt / d / "src").read_bytes() == src_data
            outcome_kind = "not renamed"
    del store
    return {outcome_kind: 1, "returned": int(returned)}


def _run(spec: StoreSpec, keys: Keys, tmp: Path, trials: int, sizes: tuple[int, int]) -> None:
    rng = random.Random(int(os.environ.get("B2CRYPTFS_RENAME_SEED", "6")))
    totals: dict[str, int] = {}
    for n in range(trials):
        for k, v in _trial(spec, keys, tmp, n, rng, sizes=sizes).items():
            totals[k] = totals.get(k, 0) + v
    report = cli(spec, "fsck", *keys.args(), spec.url, check=False)
    print(f"rename under kill -9 ({spec.kind}): {trials} trials, {totals}")
    assert report.returncode == 0 and report.stdout.strip().endswith("clean"), report.stdout


@pytest.mark.heavy
@pytest.mark.parametrize("mount_store", ["dir", "b2"], indirect=True)
def test_rename_onto_just_closed_file_survives_kill9(
    mount_store: StoreSpec,  # noqa: F811
    rsa_keys: Keys,  # noqa: F811
    tmp_path: Path,
) -> None:
    if HEAVY:
        trials, sizes = 30, (48, 12)
    else:
        trials, sizes = (3, (32, 4)) if mount_store.kind == "dir" else (2, (32, 4))
    trials = int(os.environ.get("B2CRYPTFS_RENAME_TRIALS", trials))
    _run(mount_store, rsa_keys, tmp_path, trials, sizes)
