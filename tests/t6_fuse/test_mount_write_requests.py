"""What writing small files costs: requests at the loopback server, syncs in the daemon.

Steady state (the directory listed once) a written file is two uploads and no list call;
upload URLs are reused across files (not one b2_get_upload_url each).
The close that seals it syncs nothing (the committer makes its outbox entry durable soon
after); with --sync-close, and at fsync(2), sealing syncs three times (the content file, the
manifest, the directory: man mount.b2cryptfs(8), UNMOUNTING AND THE OUTBOX).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from mountutil import Keys, b2_store, mounted, requires_fuse, rsa_keys  # noqa: F401
from reliability_util import wait_outbox_empty

from b2cryptfs.bucket.keycopy import KEY_COPY_INFO

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
    # -ttt: epoch timestamps, to tell what happened before a close or fsync returned;
    # -y: the path of each descriptor synced.
    return subprocess.Popen(
        ["strace", "-f", "-qq", "-ttt", "-y",
         "-e", "trace=fsync,fdatasync,syncfs,sync,rename,renameat,renameat2",
         "-o", str(out), "-p", str(pid)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip


class Traced:
    """The daemon's sync and rename calls while the block runs (strace -f -p)."""

    def __init__(self, pid: int, trace: Path) -> None:
        self.pid, self.trace = pid, trace

    def __enter__(self) -> Traced:
        self.tracer = syscalls_of_daemon(self.pid, self.trace)
        # strace attaches before it writes its first line; give it a file to wait on.
        deadline = time.monotonic() + 30
        while not self.trace.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # attached to every thread (strace -f -p) before the test acts
        return self

    def __exit__(self, *exc: object) -> None:
        self.tracer.terminate()
        self.tracer.wait(timeout=30)

    def calls(self) -> list[tuple[float, str]]:
        """(when, line) of every finished call, resumed ones included."""
        out = []
        for ln in self.trace.read_text().splitlines():
            parts = ln.split(None, 2)
            if len(parts) == 3 and "unfinished" not in ln:
                out.append((float(parts[1]), parts[2]))
        return out


def _syncs(calls: list[tuple[float, str]], before: float | None = None) -> list[str]:
    """Sync calls (finished before ``before``, if given), one line each."""
    names = ("fsync(", "fdatasync(", "syncfs(", "sync(")
    return [
        ln
        for t, ln in calls
        if (before is None or t <= before)
        and (ln.startswith(names) or (ln.startswith("<...") and "sync resumed" in ln))
    ]


def _file_syncs(lines: list[str]) -> list[str]:
    """Syncs of files, not of the outbox directory (-y shows the path)."""
    return [ln for ln in lines if ".content>" in ln or ".json>" in ln or "/spare-" in ln
            or "/.tmp-" in ln]  # fmt: skip


def _warm_mount(mnt: Path, b2_server) -> None:  # noqa: ANN001
    (mnt / "warm.txt").write_bytes(b"first write: staging and outbox directories exist\n")
    wait_uploads(b2_server, 2)
    time.sleep(1.5)  # warm.txt's entry is stored and gone: the committer has nothing left


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
def test_close_does_not_sync_and_the_committer_syncs_soon_after(
    rsa_keys: Keys,  # noqa: F811
    tmp_path: Path,
    b2_server,
) -> None:
    spec = b2_store(tmp_path, b2_server)
    mnt = tmp_path / "mnt"
    with mounted(spec, mnt, tmp_path / "cache", rsa_keys.args()) as m:
        _warm_mount(mnt, b2_server)
        assert m.pid is not None
        with Traced(m.pid, tmp_path / "trace") as traced:
            with open(mnt / "small.txt", "wb") as f:
                f.write(b"four KiB\n" * 455)
            closed = time.time()
            # The committer syncs within about a second of the close; the upload may have
            # removed the files by then (nothing to sync), the directory it syncs anyway.
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not any(
                "outbox>" in ln for ln in _syncs(traced.calls())
            ):
                time.sleep(0.1)
        assert (mnt / "small.txt").read_bytes() == b"four KiB\n" * 455
    calls = traced.calls()
    dump = "\n".join(f"{t:.6f} {ln}" for t, ln in calls) + f"\nclosed at {closed:.6f}"
    assert _file_syncs(_syncs(calls, before=closed)) == [], dump
    assert not [ln for ln in _syncs(calls, before=closed) if "outbox>" in ln], dump
    after = _syncs(calls)
    assert any("outbox>" in ln for ln in after), dump
    # One manifest rename on the close path.
    assert len([ln for t, ln in calls if t <= closed and "rename" in ln]) == 1, dump


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
def test_sync_close_syncs_three_times_and_fsync_waits_for_the_disk(
    rsa_keys: Keys,  # noqa: F811
    tmp_path: Path,
    b2_server,
) -> None:
    spec = b2_store(tmp_path, b2_server)
    mnt = tmp_path / "mnt"
    extra = ["--sync-close"]
    with mounted(spec, mnt, tmp_path / "cache", rsa_keys.args(), extra_args=extra) as m:
        _warm_mount(mnt, b2_server)
        assert m.pid is not None
        with Traced(m.pid, tmp_path / "trace") as traced:
            started = time.time()
            with open(mnt / "small.txt", "wb") as f:
                f.write(b"four KiB\n" * 455)
            closed = time.time()
        calls = traced.calls()
        syncs = [ln for ln in _syncs(calls, before=closed)]
        # fdatasync of the content file, fsync of the manifest, fsync of the outbox directory.
        dump = "\n".join(f"{t:.6f} {ln}" for t, ln in calls) + f"\n{started=} {closed=}"
        assert len(syncs) == 3, dump
        assert len(_file_syncs(syncs)) == 2, dump
    # Without --sync-close, fsync(2) makes the entry durable before it waits for the upload.
    with mounted(spec, mnt, tmp_path / "cache", rsa_keys.args()) as m:
        assert m.pid is not None
        with Traced(m.pid, tmp_path / "trace2") as traced:
            with open(mnt / "synced.txt", "wb") as f:
                f.write(b"durable\n" * 100)
                written = time.time()
                os.fsync(f.fileno())
                synced = time.time()
        calls = [(t, ln) for t, ln in traced.calls() if t >= written]
        dump = "\n".join(f"{t:.6f} {ln}" for t, ln in calls) + f"\n{written=} {synced=}"
        assert len(_file_syncs(_syncs(calls, before=synced))) == 2, dump
        assert any("outbox>" in ln for ln in _syncs(calls, before=synced)), dump


SMALL_FILES = 40


def test_small_files_cost_two_uploads_each_and_few_upload_urls(
    rsa_keys: Keys,  # noqa: F811
    tmp_path: Path,
    b2_server,
) -> None:
    spec = b2_store(tmp_path, b2_server)
    mnt = tmp_path / "mnt"
    with mounted(spec, mnt, tmp_path / "cache1", rsa_keys.args()):
        (mnt / "d").mkdir()
        wait_outbox_empty(tmp_path / "cache1")
        b2_server.reset_stats()
        for i in range(SMALL_FILES):
            (mnt / "d" / f"s{i:03d}").write_bytes(bytes([i]) * 4096)
        wait_outbox_empty(tmp_path / "cache1")
        stats = b2_server.stats()
    uploads = stats.get("b2_upload_file", 0)
    # (the directory's new mtime may add an upload of its own)
    assert 2 * SMALL_FILES <= uploads <= 2 * SMALL_FILES + 2, stats
    # At most one per upload thread (8), with room for a retried one; not one per file.
    assert stats.get("b2_get_upload_url", 0) <= 12, stats
    assert not any(k.startswith("b2_list") for k in stats), stats
    versions = [
        v
        for v in b2_server.file_versions(spec.bucket)
        if v["fileName"].startswith("d/s") and v["action"] == "upload"
    ]
    contents = [v for v in versions if not v["fileName"].endswith(".key.enc")]
    assert len(versions) == 2 * SMALL_FILES and len(contents) == SMALL_FILES
    # Each small content object carries its key object's copy (one download to read back).
    assert all(KEY_COPY_INFO in v["fileInfo"] for v in contents)
