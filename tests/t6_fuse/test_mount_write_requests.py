"""What writing small files costs: requests at the loopback server, syncs in the daemon.

Steady state (the directory listed once) a written file is two uploads and no list call;
the close that seals it makes its outbox entry durable with three syncs (the content file,
the manifest, the directory: man b2cryptfs-format(5)).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest
from mountutil import Keys, b2_store, mounted, requires_fuse, rsa_keys  # noqa: F401
from reliability_util import wait_outbox_empty

pytestmark = requires_fuse

FILES = 20
LISTS = ("b2_list_file_names", "b2_list_file_versions")


def wait_uploads(server, count: int) -> dict:
    deadline = time.monotonic() + 120
    while True:
        stats = server.stats()
        if stats.get("b2_upload_file", 0) >= count or time.monotonic() > deadline:
            return stats
        time.sleep(0.1)


def test_no_list_call_per_file_written(rsa_keys: Keys, tmp_path: Path, b2_server) -> None:  # noqa: F811
    spec = b2_store(tmp_path, b2_server)
    mnt = tmp_path / "mnt"
    with mounted(spec, mnt, tmp_path / "cache", rsa_keys.args()):
        (mnt / "d").mkdir()
        (mnt / "d" / "first.txt").write_bytes(b"warms the listing of d\n")
        wait_uploads(b2_server, 3)  # the directory's marker object, then the pair
        wait_outbox_empty(tmp_path / "cache")
        b2_server.reset_stats()
        for i in range(FILES):
            (mnt / "d" / f"f{i:02d}.txt").write_bytes(b"%d\n" % i * 1000)
        stats = wait_uploads(b2_server, 2 * FILES)
        wait_outbox_empty(tmp_path / "cache")
        stats = b2_server.stats()
        assert (mnt / "d" / "f07.txt").read_bytes() == b"7\n" * 1000
    assert stats.get("b2_upload_file", 0) == 2 * FILES, stats
    assert sum(stats.get(k, 0) for k in LISTS) == 0, stats


def syscalls_of_daemon(pid: int, out: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["strace", "-f", "-qq", "-e", "trace=fsync,fdatasync,rename,renameat,renameat2",
         "-o", str(out), "-p", str(pid)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
def test_close_of_a_small_file_syncs_three_times(
    rsa_keys: Keys,  # noqa: F811
    tmp_path: Path,
    b2_server,
) -> None:
    spec = b2_store(tmp_path, b2_server)
    mnt = tmp_path / "mnt"
    trace = tmp_path / "trace"
    with mounted(spec, mnt, tmp_path / "cache", rsa_keys.args()) as m:
        (mnt / "warm.txt").write_bytes(b"first write: staging and outbox directories exist\n")
        wait_uploads(b2_server, 2)
        assert m.pid is not None
        tracer = syscalls_of_daemon(m.pid, trace)
        try:
            # strace attaches before it writes its first line; give it a file to wait on.
            deadline = time.monotonic() + 30
            while not trace.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.5)  # attached to every thread (strace -f -p) before the write
            with open(mnt / "small.txt", "wb") as f:
                f.write(b"four KiB\n" * 455)
            # Only the close is traced: stop before the upload worker's own work matters
            # (uploads make no sync calls, but keep the window to the close).
        finally:
            tracer.terminate()
            tracer.wait(timeout=30)
        assert (mnt / "small.txt").read_bytes() == b"four KiB\n" * 455
    lines = [ln for ln in trace.read_text().splitlines() if "resumed" not in ln or "= " in ln]
    syncs = [ln for ln in lines if " fsync(" in ln or " fdatasync(" in ln]
    renames = [ln for ln in lines if " rename" in ln]
    # fdatasync of the content file, fsync of the manifest, fsync of the outbox directory.
    assert len(syncs) == 3, "\n".join(lines)
    assert len(renames) == 1, "\n".join(lines)
