"""The mount as a daemon and as a mount(8) helper: readiness, exit paths, errors before fork."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mountutil import (  # noqa: F401
    B2CRYPTFS,
    ROOT,
    Keys,
    Mount,
    StoreSpec,
    b2_store,
    become_subreaper,
    dir_store,
    force_unmount,
    is_mounted,
    mount_entry,
    mount_store,
    mounted,
    requires_fuse,
    rsa_keys,
)

from b2cryptfs.cli.daemon import syslog_available

pytestmark = requires_fuse


def _wait_gone(pid: int, timeout: float = 120) -> int | None:
    """Exit status of an adopted daemon (we are its subreaper), or None on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return None
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    return None


def _one_line(res: subprocess.CompletedProcess[str], code: int, text: str) -> None:
    assert res.returncode == code, (res.returncode, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and text in lines[0] and "Traceback" not in res.stderr, res.stderr


def test_daemon_returns_when_live_and_sigterm_drains(rsa_keys: Keys, tmp_path: Path) -> None:  # noqa: F811
    spec = dir_store(tmp_path)
    mnt, cache = tmp_path / "mnt", tmp_path / "cache"
    m = Mount(spec, mnt, cache, rsa_keys.args(), daemon=True, auto_unmount=False)
    try:
        m.start()  # returned: the mount must be usable at once
        assert m.pid is not None and m.pid != os.getpid()
        entry = mount_entry(mnt)
        assert entry is not None and entry["fstype"].startswith("fuse")
        (mnt / "a.txt").write_bytes(b"written to a daemonized mount\n")
        code = m.terminate()
    finally:
        m.close(expect_exit=None)
    assert code == 0, m.log()
    assert not is_mounted(mnt)
    assert not m.pid_file.exists()
    # SIGTERM drained the outbox before exiting: both objects are in the store.
    assert (spec.root / "a.txt.enc").exists() and (spec.root / "a.txt.key.enc").exists()
    assert not list(cache.glob("*/outbox/*.json"))


def test_umount_ends_daemon_cleanly(rsa_keys: Keys, tmp_path: Path) -> None:  # noqa: F811
    spec = dir_store(tmp_path)
    mnt = tmp_path / "mnt"
    with mounted(spec, mnt, tmp_path / "cache", rsa_keys.args()) as m:
        (mnt / "f").write_bytes(b"x" * 1000)
        subprocess.run(["umount", str(mnt)], check=True, capture_output=True)
        assert m.wait() == 0, m.log()
    assert (spec.root / "f.enc").exists()


def test_busy_mountpoint_is_refused(rsa_keys: Keys, tmp_path: Path, tmp_path_factory) -> None:  # noqa: F811
    spec = dir_store(tmp_path)
    mnt = tmp_path / "mnt"
    with mounted(spec, mnt, tmp_path / "cache", rsa_keys.args()) as m:
        res = subprocess.run(
            [*B2CRYPTFS, "mount", spec.url, str(mnt), *rsa_keys.args(), "--cache-dir",
             str(tmp_path / "cache-2")],
            env=spec.env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        _one_line(res, 32, "busy")
        # The same store with the same cache directory is refused too (one outbox, one mount).
        other = tmp_path / "mnt2"
        other.mkdir()
        res = subprocess.run(
            [*B2CRYPTFS, "mount", spec.url, str(other), *rsa_keys.args(), "--cache-dir",
             str(tmp_path / "cache")],
            env=spec.env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert res.returncode != 0 and not is_mounted(other), res.stderr
        assert len(res.stderr.strip().splitlines()) == 1, res.stderr
        assert m.returncode is None  # the first mount is untouched


# --- mount(8), mount.fuse3 and fstab -------------------------------------------------------

# mount(8) drops PATH before running a helper; mount.fuse3 then runs `b2cryptfs` through
# /bin/sh, whose search path without PATH is this one.
SH_DEFAULT_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
MOUNT_FUSE3 = shutil.which("mount.fuse3", path=":".join(SH_DEFAULT_PATH))


def _installed() -> str | None:
    for d in SH_DEFAULT_PATH:
        if os.access(os.path.join(d, "b2cryptfs"), os.X_OK):
            return os.path.join(d, "b2cryptfs")
    return None


needs_installed = pytest.mark.skipif(
    _installed() is None or shutil.which("mount") is None,
    reason="b2cryptfs is not installed where mount(8) finds it (/usr/local/bin, /usr/bin ...): "
    "pip-install the project and link the entry point there",
)


def _helper_bin(tmp_path: Path) -> Path:
    """A directory with a `b2cryptfs` program that runs this checkout (kept in tmp)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    wrapper = bindir / "b2cryptfs"
    wrapper.write_text(
        f'#!/bin/sh\nPYTHONPATH="{ROOT}" exec "{sys.executable}" -m b2cryptfs "$@"\n'
    )
    wrapper.chmod(0o755)
    return bindir


def _daemon_checks(mnt: Path, pid_file: Path, spec: StoreSpec, name: str) -> None:
    """Use the mount, unmount it with umount(8), and see the daemon exit 0 after draining."""
    assert is_mounted(mnt)
    entry = mount_entry(mnt)
    assert entry is not None and entry["fstype"] == "fuse.b2cryptfs", entry
    pid = int(pid_file.read_text())
    (mnt / name).write_text("mounted by a helper\n")
    assert (mnt / name).read_text() == "mounted by a helper\n"
    subprocess.run(["umount", str(mnt)], check=True, capture_output=True)
    assert _wait_gone(pid) == 0
    assert spec.root is not None and (spec.root / f"{name}.enc").exists()


@pytest.mark.skipif(MOUNT_FUSE3 is None, reason="no mount.fuse3")
def test_mount_fuse3_runs_the_helper(rsa_keys: Keys, tmp_path: Path) -> None:  # noqa: F811
    """mount.fuse3 as mount(8) runs it for `-t fuse.b2cryptfs`: it adds dev,suid, drops nofail
    and _netdev, and runs `b2cryptfs STORE MNT -o OPTS` through /bin/sh."""
    spec = dir_store(tmp_path)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    pid_file = tmp_path / "daemon.pid"
    opts = (
        f"rw,nofail,_netdev,noatime,{rsa_keys.o_options()},cache_dir={tmp_path / 'cache'},"
        f"pid_file={pid_file},log_file={tmp_path / 'daemon.log'}"
    )
    env = {k: v for k, v in spec.env.items() if k not in ("PYTHONPATH", "HOME")}
    env["PATH"] = str(_helper_bin(tmp_path))  # only to find the wrapper
    become_subreaper()
    res = subprocess.run(
        [MOUNT_FUSE3, spec.url, str(mnt), "-t", "fuse.b2cryptfs", "-o", opts],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    try:
        assert res.returncode == 0, res.stderr
        _daemon_checks(mnt, pid_file, spec, "via-mount-fuse3.txt")
    finally:
        force_unmount(mnt)


@needs_installed
def test_mount_t_fuse_b2cryptfs(rsa_keys: Keys, tmp_path: Path) -> None:  # noqa: F811
    spec = dir_store(tmp_path)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    pid_file = tmp_path / "daemon.pid"
    opts = f"{rsa_keys.o_options()},cache_dir={tmp_path / 'cache'},pid_file={pid_file},nofail"
    become_subreaper()
    res = subprocess.run(
        ["mount", "-t", "fuse.b2cryptfs", spec.url, str(mnt), "-o", opts],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    try:
        assert res.returncode == 0, res.stderr
        _daemon_checks(mnt, pid_file, spec, "via-mount.txt")
    finally:
        force_unmount(mnt)


@needs_installed
def test_fstab_line(rsa_keys: Keys, tmp_path: Path) -> None:  # noqa: F811
    spec = dir_store(tmp_path)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    pid_file = tmp_path / "daemon.pid"
    fstab = tmp_path / "fstab"
    opts = (
        f"_netdev,nofail,noauto,x-systemd.automount,{rsa_keys.o_options()},"
        f"cache_dir={tmp_path / 'cache'},pid_file={pid_file}"
    )
    fstab.write_text(f"# test fstab\n{spec.url}  {mnt}  fuse.b2cryptfs  {opts}  0  0\n")
    become_subreaper()
    res = subprocess.run(
        ["mount", "--fstab", str(fstab), str(mnt)], capture_output=True, text=True, timeout=60
    )
    try:
        assert res.returncode == 0, res.stderr
        _daemon_checks(mnt, pid_file, spec, "via-fstab.txt")
    finally:
        force_unmount(mnt)


def test_helper_runs_without_path_or_home(rsa_keys: Keys, tmp_path: Path) -> None:  # noqa: F811
    """mount.fuse3's form, `b2cryptfs STORE MNT -o OPTS`, in a near-empty environment."""
    spec = dir_store(tmp_path)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    pid_file = tmp_path / "daemon.pid"
    opts = (
        f"{rsa_keys.o_options()},cache_dir={tmp_path / 'cache'},pid_file={pid_file},"
        "auto_unmount,debug"
    )
    become_subreaper()
    res = subprocess.run(
        [sys.executable, "-m", "b2cryptfs", spec.url, str(mnt), "-o", opts],
        env={"PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    try:
        assert res.returncode == 0, res.stderr
        pid = int(pid_file.read_text())
        (mnt / "x").write_bytes(b"no PATH, no HOME\n")
        # fusermount3 is found without PATH too (auto_unmount runs it).
        os.kill(pid, signal.SIGTERM)
        assert _wait_gone(pid) == 0
        assert not is_mounted(mnt)
    finally:
        force_unmount(mnt)
    assert (spec.root / "x.enc").exists()
    # No --log-file: syslog if there is one, else mount.log in the store's cache directory.
    if not syslog_available():
        (log,) = (tmp_path / "cache").glob("*/mount.log")
        text = log.read_text()
        assert " DEBUG " in text and "mount is live" in text, text
        assert rsa_keys.passphrase_file.read_text().strip() not in text


# --- B2 errors are reported before forking -------------------------------------------------


def test_b2_errors_before_fork(rsa_keys: Keys, tmp_path: Path, b2_server) -> None:  # noqa: F811
    spec = b2_store(tmp_path, b2_server)
    mnt = tmp_path / "mnt"
    mnt.mkdir()

    def attempt(url: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*B2CRYPTFS, "mount", url, str(mnt), *rsa_keys.args(), "--cache-dir",
             str(tmp_path / "cache")],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    res = attempt("b2://no-such-bucket", spec.env)
    _one_line(res, 5, "no-such-bucket")
    bad = {**spec.env, "B2_APPLICATION_KEY": "K00" + "x" * 28}
    res = attempt(spec.url, bad)
    assert res.returncode == 5 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert not is_mounted(mnt)


def test_b2_credentials_file_for_fstab(rsa_keys: Keys, tmp_path: Path, b2_server) -> None:  # noqa: F811
    spec = b2_store(tmp_path, b2_server)
    creds = tmp_path / "b2.env"
    creds.write_text("".join(f"{k}={v}\n" for k, v in b2_server.env.items()))
    creds.chmod(0o600)
    # No B2 variables in the environment: only the file names the account.
    spec.env = {k: v for k, v in spec.env.items() if not k.startswith("B2_")}
    spec.extra_args = ["-o", f"b2_credentials={creds}"]
    mnt = tmp_path / "mnt"
    with mounted(spec, mnt, tmp_path / "cache", rsa_keys.args()):
        (mnt / "f.txt").write_text("via a credentials file\n")
    assert any(v["fileName"] == "f.txt.enc" for v in b2_server.file_versions(spec.bucket))


# --- the passphrase prompt and systemd readiness -------------------------------------------


def test_passphrase_prompt_comes_before_the_fork(rsa_keys: Keys, tmp_path: Path) -> None:  # noqa: F811
    """Without a passphrase file the terminal is asked, then the daemon starts."""
    import pty

    spec = dir_store(tmp_path)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    pid_file = tmp_path / "daemon.pid"
    argv = [
        *B2CRYPTFS, "mount", spec.url, str(mnt), "--private-key", str(rsa_keys.private),
        "--cache-dir", str(tmp_path / "cache"), "--pid-file", str(pid_file),
        "--log-file", str(tmp_path / "daemon.log"),
    ]  # fmt: skip
    become_subreaper()
    child, fd = pty.fork()
    if child == 0:  # pragma: no cover - the child execs at once
        os.execve(argv[0], argv, spec.env)
    output = b""
    try:
        deadline = time.monotonic() + 60
        while b"assphrase" not in output and time.monotonic() < deadline:
            output += os.read(fd, 1024)
        assert b"assphrase" in output, output
        assert not is_mounted(mnt)  # nothing is mounted while it asks
        os.write(fd, rsa_keys.passphrase_file.read_bytes())
        while True:
            try:
                chunk = os.read(fd, 1024)
            except OSError:  # EIO: the terminal's last user is gone
                break
            if not chunk:
                break
            output += chunk
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0, output
        assert is_mounted(mnt)
        pid = int(pid_file.read_text())
        (mnt / "typed.txt").write_text("after a typed passphrase\n")
        os.kill(pid, signal.SIGTERM)
        assert _wait_gone(pid) == 0
    finally:
        os.close(fd)
        force_unmount(mnt)
    assert rsa_keys.passphrase_file.read_text().strip() not in (tmp_path / "daemon.log").read_text()


def test_foreground_mount_notifies_systemd(rsa_keys: Keys, tmp_path: Path) -> None:  # noqa: F811
    import socket

    spec = dir_store(tmp_path)
    sock_path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(sock_path))
        sock.settimeout(60)
        spec.env = {**spec.env, "NOTIFY_SOCKET": str(sock_path)}
        with mounted(spec, tmp_path / "mnt", tmp_path / "cache", rsa_keys.args()):
            assert sock.recv(4096) == b"READY=1"


def test_failure_inside_the_daemon_reaches_the_caller(rsa_keys: Keys, tmp_path: Path) -> None:  # noqa: F811
    """What can only fail after the fork (the FUSE mount itself) is still reported by the
    waiting parent, with a non-zero status, and leaves nothing running."""
    spec = dir_store(tmp_path)
    pid_file = tmp_path / "daemon.pid"
    # mount.fuse3's drop_privileges form names an open /dev/fuse descriptor; this one is not.
    res = subprocess.run(
        [*B2CRYPTFS, "mount", spec.url, "/dev/fd/99", *rsa_keys.args(), "--cache-dir",
         str(tmp_path / "cache"), "--pid-file", str(pid_file), "--log-file",
         str(tmp_path / "daemon.log")],
        env=spec.env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert res.returncode != 0
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("b2cryptfs: error:") and "/dev/fd/99" in last, res.stderr
    assert "Traceback" not in res.stderr
    assert not pid_file.exists()  # the daemon is gone
    assert "/dev/fd/99" in (tmp_path / "daemon.log").read_text()


# --- the harness itself --------------------------------------------------------------------


def test_harness_cleans_up_after_a_failing_test(rsa_keys: Keys, tmp_path: Path) -> None:  # noqa: F811
    spec = dir_store(tmp_path)
    mnt = tmp_path / "mnt"
    with pytest.raises(ZeroDivisionError):
        with mounted(spec, mnt, tmp_path / "cache", rsa_keys.args()) as m:
            (mnt / "written-before-the-failure").write_bytes(b"x")
            1 / 0  # noqa: B018
    assert not is_mounted(mnt)
    assert (spec.root / "written-before-the-failure.enc").exists()
    assert m.returncode == 0, m.log()
    # kill9: nothing is left mounted either (auto_unmount, else a lazy unmount).
    for auto in (True, False):
        m = Mount(spec, mnt, tmp_path / "cache", rsa_keys.args(), auto_unmount=auto)
        try:
            m.start()
            m.kill9()
        finally:
            m.close(expect_exit=None)
        assert m.killed and m.returncode == -signal.SIGKILL and not is_mounted(mnt)
