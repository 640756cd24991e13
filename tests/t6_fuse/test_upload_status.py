"""Uploads made visible: ``b2cryptfs status``, the upload xattrs, ``umount [--wait]``, and a
daemon stopped by SIGTERM after the unmount while the store is unreachable.

Real mounts on the loopback B2 server, its link slowed so that uploads are seen pending."""

from __future__ import annotations

import json
import os
import pty
import random
import secrets
import select
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from mountutil import B2CRYPTFS, Keys, Mount, StoreSpec, force_unmount, is_mounted, rsa_keys  # noqa: F401
from reliability_util import b2_spec, fuse_test, log_lines, outbox_entries, wait_until  # noqa: F401

FILES = 6
SIZE = 192 * 1024
MBPS = 2.0  # about 1 s per file on the wire


def cli(spec: StoreSpec, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*B2CRYPTFS, *args], env=spec.env, capture_output=True, text=True, timeout=timeout
    )


def status(spec: StoreSpec, mnt: Path) -> dict[str, Any]:
    res = cli(spec, "status", "--json", str(mnt))
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def stored(spec: StoreSpec, *, keys: bool = False) -> dict[str, str]:
    """Content objects (or, with ``keys``, key objects) at the server: name -> fileId."""
    out = {}
    for v in spec.server.file_versions(spec.bucket):
        name = v["fileName"]
        if v["action"] == "upload" and name.endswith(".enc") and name.endswith(".key.enc") == keys:
            out[name] = v["fileId"]
    return out


def write_files(mnt: Path, n: int, seed: int) -> dict[str, bytes]:
    rng = random.Random(seed)
    data = {f"f{i}.bin": rng.randbytes(SIZE) for i in range(n)}
    for name, content in data.items():
        (mnt / name).write_bytes(content)
    return data


@fuse_test
def test_status_and_xattrs_match_the_server_and_umount_wait_waits(
    b2_spec: StoreSpec,  # noqa: F811
    rsa_keys: Keys,  # noqa: F811
    tmp_path: Path,
) -> None:
    server, mnt, cache = b2_spec.server, tmp_path / "mnt", tmp_path / "cache"
    m = Mount(b2_spec, mnt, cache, rsa_keys.args())
    try:
        m.start()
        server.configure(bandwidth_mbps=MBPS)
        write_files(mnt, FILES, seed=1)

        def midway() -> dict[str, Any] | None:
            before = len(stored(b2_spec))
            st = status(b2_spec, mnt)
            after = len(stored(b2_spec))
            ok = 0 < st["uploaded_files"] and st["pending_files"] > 1
            return {"st": st, "before": before, "after": after} if ok else None

        seen = wait_until("some files uploaded, some pending", midway, timeout=120)
        st = seen["st"]
        # Every file written is either stored (counted since the mount) or pending.
        assert st["uploaded_files"] + st["pending_files"] == FILES, st
        # ... and the server agrees: what the mount counts as uploaded is stored, and what
        # the server had stored is uploaded or still being confirmed.
        assert st["uploaded_files"] <= seen["after"], seen
        assert seen["before"] <= st["uploaded_files"] + st["uploading_files"], seen
        assert st["pending_bytes"] > 0 and st["store"] == b2_spec.url
        assert st["pid"] == m.pid and Path(st["outbox"]).is_dir()

        # Per file: a stored file shows its B2 fileId; a pending one says so.
        ids = stored(b2_spec)
        done = next(n for n in sorted(ids))
        leaf = done.removesuffix(".enc")
        assert os.getxattr(mnt / leaf, "user.b2cryptfs.version").decode() == ids[done]
        states = {
            f"f{i}.bin": os.getxattr(mnt / f"f{i}.bin", "user.b2cryptfs.upload")
            for i in range(FILES)
        }
        assert states[leaf] == b"stored"
        assert set(states.values()) <= {b"stored", b"pending", b"uploading"}
        assert b"stored" in states.values() and states != dict.fromkeys(states, b"stored")
        # Not listed (copy tools would copy them), and read-only.
        assert "user.b2cryptfs.upload" not in os.listxattr(mnt / leaf)

        # The human form names the mount and its figures.
        text = cli(b2_spec, "status").stdout
        assert str(mnt) in text and "pending:" in text, text

        res = cli(b2_spec, "umount", "--wait", str(mnt))
        # Right after it returns: every object is at the server, nothing is mounted, the
        # daemon is gone.
        final = stored(b2_spec)
        keys = stored(b2_spec, keys=True)
        assert res.returncode == 0, res.stderr
        assert len(final) == FILES and len(keys) == FILES, (final, keys)
        assert not is_mounted(mnt)
        assert m.wait(10) == 0
        assert not outbox_entries(cache)
    finally:
        m.close(expect_exit=None)
        server.configure(bandwidth_mbps=0)


@fuse_test
def test_umount_without_wait_says_what_remains_and_the_daemon_finishes(
    b2_spec: StoreSpec,  # noqa: F811
    rsa_keys: Keys,  # noqa: F811
    tmp_path: Path,
) -> None:
    server, mnt, cache = b2_spec.server, tmp_path / "mnt", tmp_path / "cache"
    m = Mount(b2_spec, mnt, cache, rsa_keys.args())
    try:
        m.start()
        server.configure(bandwidth_mbps=MBPS)
        write_files(mnt, 3, seed=2)
        res = cli(b2_spec, "umount", str(mnt))
        assert res.returncode == 0, res.stderr
        assert not is_mounted(mnt)
        assert "still to upload" in res.stderr and "daemon" in res.stderr, res.stderr
        assert len(stored(b2_spec)) < 3, "the uploads were not slow enough"
        # The daemon outlives the mount until the outbox is empty, then exits cleanly.
        assert m.wait(120) == 0, m.log()
        assert len(stored(b2_spec)) == 3
        assert not outbox_entries(cache)
    finally:
        m.close(expect_exit=None)
        server.configure(bandwidth_mbps=0)


@fuse_test
def test_sigterm_after_unmount_with_the_store_down_stops_and_the_next_mount_uploads(
    b2_spec: StoreSpec,  # noqa: F811
    rsa_keys: Keys,  # noqa: F811
    tmp_path: Path,
) -> None:
    server, mnt, cache = b2_spec.server, tmp_path / "mnt", tmp_path / "cache"
    # Transfers retry inside the store for as long as --io-timeout before the outbox sees a
    # failure: a short one, so the outage reaches the outbox soon.
    m = Mount(b2_spec, mnt, cache, [*rsa_keys.args(), "--io-timeout", "5"])
    try:
        m.start()
        server.inject("upload", "503", 1_000_000)
        data = write_files(mnt, 2, seed=3)
        # The store's own retries spent: one WARNING for the outage, and status shows it.
        wait_until(
            "the outage warning",
            lambda: log_lines(m.log(), "WARNING", "uploads keep failing"),
            timeout=180,
        )
        assert len(log_lines(m.log(), "WARNING", "keep failing")) == 1, m.log()
        st = status(b2_spec, mnt)
        assert st["failing_files"] >= 1 and st["last_error"] and st["last_error_at"], st
        assert st["pending_files"] == 2 and st["uploaded_files"] == 0, st
        assert {f["path"] for f in st["failing"]} <= {"f0.bin", "f1.bin"}, st
        assert all(f["consecutive_failures"] >= 1 for f in st["failing"]), st
        res = cli(b2_spec, "umount", "--wait", "--timeout", "1", str(mnt))
        assert res.returncode == 1 and "keep failing" in res.stderr, res.stderr
        assert len(res.stderr.strip().splitlines()) == 1 and is_mounted(mnt)

        force_unmount(mnt)  # fusermount3 -u: the daemon goes on retrying
        assert m.wait(2) is None, "the daemon did not try to drain"
        os.kill(m.pid, signal.SIGTERM)
        code = m.wait(15)
        assert code is not None, f"the daemon ignored SIGTERM after the unmount:\n{m.log()}"
        assert code != 0
        assert log_lines(m.log(), "2 file(s) wait in the outbox"), m.log()
    finally:
        m.close(expect_exit=None)
        server.clear_faults()
    assert len(outbox_entries(cache)) == 2
    assert not stored(b2_spec)

    m2 = Mount(b2_spec, mnt, cache, rsa_keys.args())
    try:
        m2.start()
        wait_until("the next mount to upload", lambda: not outbox_entries(cache), timeout=120)
        for name, content in data.items():
            assert (mnt / name).read_bytes() == content
    finally:
        m2.close()
    assert len(stored(b2_spec)) == 2


@fuse_test
def test_systemd_status_lines(
    b2_spec: StoreSpec,  # noqa: F811
    rsa_keys: Keys,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Under systemd (NOTIFY_SOCKET), READY=1 and then STATUS= lines about the uploads."""
    server, mnt, cache = b2_spec.server, tmp_path / "mnt", tmp_path / "cache"
    name = f"b2cryptfs-test-{secrets.token_hex(6)}"
    got: list[str] = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(0.1)

        def received(needle: str) -> bool:
            try:
                while True:
                    got.append(sock.recv(4096).decode())
            except TimeoutError:
                pass
            return any(needle in msg for msg in got)

        def wait_for(what: str, needle: str) -> None:
            try:
                wait_until(what, lambda: received(needle), 60)
            except AssertionError as exc:
                raise AssertionError(f"{exc}; received: {got}") from None

        m = Mount(
            b2_spec, mnt, cache, rsa_keys.args(), env={**b2_spec.env, "NOTIFY_SOCKET": "@" + name}
        )
        try:
            m.start()
            wait_for("READY=1", "READY=1")
            # About 1.5 s per file on the wire, the 3 side by side (4 upload workers): shorter
            # than the 2 s between two refreshes of the figures, so the line saying they are
            # pending must come when they start, not at the next refresh.
            server.configure(bandwidth_mbps=MBPS / 2)
            write_files(mnt, 3, seed=4)
            wait_for("a pending STATUS= line", "pending (")
            server.configure(bandwidth_mbps=0)
            wait_for("the final STATUS= line", "3 file(s) uploaded, none")
        finally:
            m.close(expect_exit=None)
            server.configure(bandwidth_mbps=0)
    assert all(msg.startswith(("READY=1", "STATUS=")) for msg in got), got


def run_on_pty(argv: list[str], env: dict[str, str], timeout: float = 300) -> tuple[int, bytes]:
    """Run ``argv`` with a pseudo-terminal as stdin/stdout/stderr; (exit status, output)."""
    pid, fd = pty.fork()
    if pid == 0:
        try:
            os.execvpe(argv[0], argv, env)
        finally:
            os._exit(127)
    shown = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.5)
            if ready:
                try:
                    data = os.read(fd, 4096)
                except OSError:  # EIO: the child is gone
                    break
                if not data:
                    break
                shown += data
    finally:
        os.close(fd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), shown


@fuse_test
def test_umount_wait_shows_a_progress_bar_on_a_terminal(
    b2_spec: StoreSpec,  # noqa: F811
    rsa_keys: Keys,  # noqa: F811
    tmp_path: Path,
) -> None:
    server, mnt, cache = b2_spec.server, tmp_path / "mnt", tmp_path / "cache"
    m = Mount(b2_spec, mnt, cache, rsa_keys.args())
    try:
        m.start()
        server.configure(bandwidth_mbps=MBPS)
        write_files(mnt, 4, seed=5)
        code, shown = run_on_pty([*B2CRYPTFS, "umount", "--wait", str(mnt)], b2_spec.env)
        assert code == 0, shown
        assert b"uploading: " in shown and b"/4 files" in shown, shown
        assert len(stored(b2_spec)) == 4 and not is_mounted(mnt)
        assert m.wait(10) == 0
    finally:
        m.close(expect_exit=None)
        server.configure(bandwidth_mbps=0)


@fuse_test
def test_an_outage_is_one_warning_and_its_end_one_info_line(
    b2_spec: StoreSpec,  # noqa: F811
    rsa_keys: Keys,  # noqa: F811
    tmp_path: Path,
) -> None:
    server, mnt, cache = b2_spec.server, tmp_path / "mnt", tmp_path / "cache"
    # Transfers retry inside the store for as long as --io-timeout before the outbox sees a
    # failure: a short one, so the outage reaches the outbox soon.
    m = Mount(b2_spec, mnt, cache, [*rsa_keys.args(), "--io-timeout", "5"])
    try:
        m.start()
        server.inject("upload", "503", 1_000_000)
        write_files(mnt, 3, seed=6)
        wait_until("the outage warning", lambda: log_lines(m.log(), "WARNING", "keep failing"))
        # Retried more than once each, still a single warning.
        wait_until(
            "more failed attempts",
            lambda: status(b2_spec, mnt)["consecutive_failures"] >= 2,
            timeout=120,
        )
        server.clear_faults()
        wait_until("the uploads", lambda: not outbox_entries(cache), timeout=120)
        wait_until("the recovery line", lambda: log_lines(m.log(), "INFO", "go through again"))
        assert len(log_lines(m.log(), "WARNING", "keep failing")) == 1, m.log()
        assert len(log_lines(m.log(), "INFO", "go through again")) == 1, m.log()
        st = status(b2_spec, mnt)
        assert st["failing_files"] == 0 and st["uploaded_files"] == 3, st
        assert ".bin: " in st["last_error"], st  # the last error stays on show
    finally:
        m.close(expect_exit=None)
        server.clear_faults()
    assert len(stored(b2_spec)) == 3
