"""A mount's start-up: only young cycle-collector passes until the mount is ready, the usual
ones after it (b2cryptfs/vfs/collector.py), and no import of what only some mounts use."""

from __future__ import annotations

import gc
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mountutil import (  # noqa: F401
    B2CRYPTFS,
    ROOT,
    Keys,
    StoreSpec,
    b2_store,
    base_env,
    mount_store,
    mounted,
    requires_fuse,
    rsa_keys,
)

FROZEN = "start-up heap frozen"


def _frozen_line(log: str) -> str | None:
    return next((line for line in log.splitlines() if FROZEN in line), None)


@pytest.mark.parametrize(
    ("mount_store", "daemon"),
    [
        pytest.param(*case, marks=requires_fuse)
        for case in (("dir", False), ("b2", False), ("b2", True))
    ],
    indirect=["mount_store"],
)
def test_the_collector_runs_as_usual_once_the_mount_is_ready(
    mount_store: StoreSpec,  # noqa: F811
    daemon: bool,
    rsa_keys: Keys,  # noqa: F811
    tmp_path: Path,
) -> None:
    # A B2 store in the foreground is the early mount (made while the store opens); the
    # daemon is forked while start-up still pauses the older passes. Either way they must
    # come back: without them a daemon keeps every cycle that outlives a young pass.
    mnt = tmp_path / "mnt"
    with mounted(
        mount_store, mnt, tmp_path / "cache", rsa_keys.args(), extra_args=["--debug"], daemon=daemon
    ) as m:
        (mnt / "a.txt").write_bytes(b"one\n")
        assert sorted(p.name for p in mnt.iterdir()) == ["a.txt"]
        deadline = time.monotonic() + 30
        while (line := _frozen_line(m.log())) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert line is not None, m.log()
        assert line.endswith("thresholds " + ",".join(map(str, gc.get_threshold()))), line
        count = int(line.split(FROZEN + ": ")[1].split()[0])
        assert count > 10_000, line  # the modules and the store's client, at least


def test_a_mount_that_fails_leaves_the_collector_as_it_was(tmp_path: Path) -> None:
    code = (
        "import gc, sys\n"
        "from b2cryptfs.cli.main import main\n"
        "before = gc.get_threshold()\n"
        "rc = main(['mount', sys.argv[1], sys.argv[2]])\n"
        "print(rc, gc.get_threshold() == before)\n"
    )
    store, mnt = tmp_path / "store", tmp_path / "no-such-mountpoint"
    store.mkdir()
    res = subprocess.run(
        [sys.executable, "-c", code, str(store), str(mnt)],
        capture_output=True, text=True, env=base_env(tmp_path / "home"), cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert res.stdout.split() == ["32", "True"], (res.stdout, res.stderr)  # 32: MountError
    assert "mountpoint does not exist" in res.stderr, res.stderr


# Imported by a mount only when it needs them: tracemalloc when B2CRYPTFS_TRACEMALLOC asks,
# b2sdk and requests for what b2wire does not do (store/b2sdkpart.py).
NOT_AT_START_UP = ("tracemalloc", "b2sdk", "requests", "urllib3")


def test_the_mount_start_up_imports_no_module_it_does_not_use(tmp_path: Path) -> None:
    # What a mount imports before its root is listed: the command, the keys, the store,
    # the pair layer and the FUSE layer.
    code = (
        "import sys\n"
        "from b2cryptfs.cli.main import build_parser\n"
        "build_parser('mount')\n"
        "import b2cryptfs.cli.common, b2cryptfs.keys.loader, b2cryptfs.keys.passphrase\n"
        "import b2cryptfs.store.b2store, b2cryptfs.bucket.namekey, b2cryptfs.bucket.factory\n"
        "import b2cryptfs.fs.mount\n"
        "print(' '.join(sorted(sys.modules)))\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True, text=True, env=base_env(tmp_path / "home"), cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    loaded = set(res.stdout.split())
    assert {"b2cryptfs.fs.mount", "b2cryptfs.store.b2wire", "pyfuse3", "trio"} <= loaded
    assert not loaded & set(NOT_AT_START_UP), sorted(loaded & set(NOT_AT_START_UP))
