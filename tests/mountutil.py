"""Harness for real FUSE mounts: the daemon always runs in a subprocess, never in pytest.

``mounted(...)`` starts ``python -m b2cryptfs mount STORE MNT`` (foreground with
``auto_unmount`` by default, or daemonized), waits until the mountpoint is live, yields a
:class:`Mount`, and on exit unmounts with ``fusermount3 -u`` (``-uz`` as a last resort),
waits for the daemon and checks that it exited 0. Cleanup runs even when the test fails: a
leftover mount is a defect.

Fixtures: ``rsa_keys`` (session: an ``openssl genrsa -aes256`` key pair and its passphrase
file), ``mount_store`` (parametrised by the test over "dir" and "b2").
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
B2CRYPTFS = [sys.executable, "-m", "b2cryptfs"]
FUSERMOUNT = shutil.which("fusermount3") or "/bin/fusermount3"
MOUNT_TIMEOUT = 60.0
# Unmount waits for the outbox to drain: generous, but bounded.
EXIT_TIMEOUT = 180.0


def fuse_unavailable() -> str | None:
    """Why real FUSE mounts cannot run here, or None."""
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse"
    if not os.access(FUSERMOUNT, os.X_OK):
        return "no fusermount3"
    try:
        import pyfuse3  # noqa: F401
    except ImportError:
        return "pyfuse3 is not installed"
    return None


_FUSE_MISSING = fuse_unavailable()
# Module marks for real-mount tests: ``pytestmark = requires_fuse``.
requires_fuse = [
    pytest.mark.fuse,
    pytest.mark.skipif(_FUSE_MISSING is not None, reason=f"no FUSE: {_FUSE_MISSING}"),
]


# --- mount table ---------------------------------------------------------------------------


def _unescape(field_text: str) -> str:
    # /proc/self/mountinfo escapes space, tab, newline and backslash as \ooo.
    out, i = [], 0
    while i < len(field_text):
        code = field_text[i + 1 : i + 4]
        if field_text[i] == "\\" and len(code) == 3 and code.isdigit():
            out.append(chr(int(code, 8)))
            i += 4
        else:
            out.append(field_text[i])
            i += 1
    return "".join(out)


def mount_entry(path: str | Path) -> dict[str, str] | None:
    """The mountinfo entry for exactly ``path`` (also for a dead FUSE mount), or None."""
    target = os.path.abspath(path)
    found = None
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            left, _, right = line.partition(" - ")
            parts, rparts = left.split(), right.split()
            if len(parts) >= 5 and _unescape(parts[4]) == target:
                found = {
                    "mountpoint": target,
                    "options": parts[5],
                    "fstype": rparts[0] if rparts else "",
                    "source": _unescape(rparts[1]) if len(rparts) > 1 else "",
                    "super_options": rparts[2] if len(rparts) > 2 else "",
                }
    return found


def is_mounted(path: str | Path) -> bool:
    return mount_entry(path) is not None


def force_unmount(path: str | Path) -> None:
    """Unmount ``path`` if anything is mounted there: ``-u`` with retries, then ``-uz``."""
    for _ in range(20):
        if not is_mounted(path):
            return
        res = subprocess.run([FUSERMOUNT, "-u", str(path)], capture_output=True, text=True)
        if res.returncode == 0:
            return
        time.sleep(0.25)
    if is_mounted(path):
        subprocess.run([FUSERMOUNT, "-uz", str(path)], capture_output=True)


# --- process helpers -----------------------------------------------------------------------

_PR_SET_CHILD_SUBREAPER = 36
_subreaper = False


def become_subreaper() -> None:
    """Adopt orphaned descendants, so that a daemonized mount's exit status can be read.

    The daemon double-forks; as a subreaper this process becomes its parent and can
    waitpid() it. Process-wide and permanent, which is fine for a test run.
    """
    global _subreaper
    if _subreaper:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
    _subreaper = True


def _wait_pid(pid: int, timeout: float) -> int | None:
    """Exit status of an (adopted) child, or None on timeout. Negative: killed by signal."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return _wait_foreign(pid, deadline)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            return None
        time.sleep(0.05)


def _wait_foreign(pid: int, deadline: float) -> int | None:
    # Not our child: we can only see it go away. 0 stands for "gone, status unknown".
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                if fh.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return 0
        except FileNotFoundError:
            return 0
        time.sleep(0.05)
    return None


# --- keys ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Keys:
    private: Path  # encrypted PKCS#8 PEM (openssl genrsa -aes256, OpenSSL 3)
    public: Path  # SubjectPublicKeyInfo PEM (openssl rsa -pubout)
    passphrase_file: Path
    plain_private: Path  # unencrypted copy for `age -d -i` and `openssl rsautl -decrypt`

    def args(self, *, write_only: bool = False) -> list[str]:
        if write_only:
            return ["--public-key", str(self.public)]
        return ["--private-key", str(self.private), "--passphrase-file", str(self.passphrase_file)]

    def o_options(self) -> str:
        return f"private_key={self.private},passphrase_file={self.passphrase_file}"


def make_rsa_keys(directory: Path) -> Keys:
    """The seed procedure's key pair, with its passphrase in a file."""
    directory.mkdir(parents=True, exist_ok=True)
    keys = Keys(
        private=directory / "priv-key.pem",
        public=directory / "pub-key.pem",
        passphrase_file=directory / "passphrase",
        plain_private=directory / "priv-plain.pem",
    )
    if keys.plain_private.exists():
        return keys
    keys.passphrase_file.write_text(secrets.token_urlsafe(18) + "\n")
    pf = f"file:{keys.passphrase_file}"
    run = lambda *a: subprocess.run(a, check=True, capture_output=True)  # noqa: E731
    run("openssl", "genrsa", "-aes256", "-passout", pf, "-out", str(keys.private), "2048")
    run(
        "openssl",
        "rsa",
        "-in",
        str(keys.private),
        "-passin",
        pf,
        "-pubout",
        "-out",
        str(keys.public),
    )
    # age 1.1.1 reads unencrypted PKCS#1 ("RSA PRIVATE KEY") PEM as an ssh-rsa identity.
    run(
        "openssl", "rsa", "-traditional", "-in", str(keys.private), "-passin", pf,
        "-out", str(keys.plain_private),
    )  # fmt: skip
    return keys


@pytest.fixture(scope="session")
def rsa_keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return make_rsa_keys(tmp_path_factory.getbasetemp() / "mount-keys")


# --- stores --------------------------------------------------------------------------------


@dataclass
class StoreSpec:
    """A store for the mount under test, and how to reach it from a subprocess."""

    kind: str  # "dir" | "b2"
    url: str
    env: dict[str, str]
    root: Path | None = None  # DirStore directory
    server: Any = None  # the loopback B2 server (tests/b2fixtures.py B2ServerHandle)
    bucket: str | None = None
    extra_args: list[str] = field(default_factory=list)

    def open(self) -> Any:
        """The same store opened in the test process (for inspecting or seeding it)."""
        if self.kind == "dir":
            from b2cryptfs.store import open_store

            return open_store(self.url)
        from b2cryptfs.store.b2store import B2Store

        s = self.server
        return B2Store(self.bucket, "", realm=s.realm, key_id=s.key_id, key=s.key)


def base_env(home: Path) -> dict[str, str]:
    """Subprocess environment: none of the caller's B2 account, passphrase or key settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("B2_", "B2CRYPTFS_"))}
    home.mkdir(parents=True, exist_ok=True)
    env["HOME"] = str(home)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def dir_store(tmp_path: Path) -> StoreSpec:
    root = tmp_path / "store"
    root.mkdir(exist_ok=True)
    return StoreSpec(kind="dir", url=str(root), env=base_env(tmp_path / "home"), root=root)


def b2_store(tmp_path: Path, server: Any) -> StoreSpec:
    """A fresh bucket on the loopback server, so tests never see each other's files."""
    env = base_env(tmp_path / "home")
    env.update(server.env)
    bucket = f"mnt-{secrets.token_hex(6)}"
    server.create_bucket(bucket)
    return StoreSpec(kind="b2", url=f"b2://{bucket}", env=env, server=server, bucket=bucket)


@pytest.fixture
def mount_store(request: pytest.FixtureRequest, tmp_path: Path) -> StoreSpec:
    """Use with ``@pytest.mark.parametrize("mount_store", ["dir", "b2"], indirect=True)``."""
    kind = getattr(request, "param", "dir")
    if kind == "dir":
        return dir_store(tmp_path)
    return b2_store(tmp_path, request.getfixturevalue("b2_server"))


# --- the mount -----------------------------------------------------------------------------


class MountFailed(AssertionError):
    pass


class Mount:
    """One mount daemon in a subprocess."""

    def __init__(
        self,
        store: StoreSpec,
        mountpoint: Path,
        cache_dir: Path,
        key_args: Sequence[str],
        *,
        extra_args: Sequence[str] = (),
        daemon: bool = False,
        auto_unmount: bool = True,
        env: dict[str, str] | None = None,
    ) -> None:
        self.store = store
        self.mountpoint = Path(mountpoint)
        self.cache_dir = Path(cache_dir)
        self.daemon = daemon
        self.env = dict(store.env if env is None else env)
        self.log_path = (
            self.cache_dir.parent / f"mount-{self.mountpoint.name}-{time.monotonic_ns()}.log"
        )
        self.pid_file = self.log_path.with_suffix(".pid")
        self.argv = [
            *B2CRYPTFS, "mount", store.url, str(self.mountpoint), *key_args,
            "--cache-dir", str(self.cache_dir), *store.extra_args, *extra_args,
        ]  # fmt: skip
        if auto_unmount:
            self.argv += ["-o", "auto_unmount"]
        if daemon:
            self.argv += ["--log-file", str(self.log_path), "--pid-file", str(self.pid_file)]
        else:
            self.argv.append("-f")
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None
        self.returncode: int | None = None
        self.killed = False

    # -- lifecycle --

    def start(self) -> Mount:
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        if self.daemon:
            become_subreaper()
            res = subprocess.run(
                self.argv, env=self.env, capture_output=True, text=True, timeout=MOUNT_TIMEOUT
            )
            if res.returncode != 0:
                raise MountFailed(f"mount exited {res.returncode}: {res.stderr.strip()}")
            if not is_mounted(self.mountpoint):
                raise MountFailed("mount returned 0 but the mountpoint is not mounted")
            self.pid = int(self.pid_file.read_text())
            return self
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                self.argv, env=self.env, stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        self.pid = self.proc.pid
        deadline = time.monotonic() + MOUNT_TIMEOUT
        while not is_mounted(self.mountpoint):
            if self.proc.poll() is not None:
                self.returncode = self.proc.returncode
                raise MountFailed(f"mount exited {self.proc.returncode}: {self.log().strip()}")
            if time.monotonic() > deadline:
                self._kill_and_clean()
                raise MountFailed(f"mount not live after {MOUNT_TIMEOUT}s: {self.log()}")
            time.sleep(0.05)
        # Live in the kernel; the first request is served once the daemon's loop runs.
        os.stat(self.mountpoint)
        return self

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait(self, timeout: float = EXIT_TIMEOUT) -> int | None:
        """Wait for the daemon to exit; its exit status (None: still running)."""
        if self.returncode is not None:
            return self.returncode
        if self.proc is not None:
            try:
                self.returncode = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                return None
        elif self.pid is not None:
            self.returncode = _wait_pid(self.pid, timeout)
        return self.returncode

    def unmount(self, timeout: float = EXIT_TIMEOUT) -> int:
        """``fusermount3 -u``, then wait for the daemon; returns its exit status."""
        force_unmount(self.mountpoint)
        code = self.wait(timeout)
        if code is None:
            self._kill_and_clean()
            raise MountFailed(f"daemon still running {timeout}s after unmount:\n{self.log()}")
        return code

    def terminate(self, timeout: float = EXIT_TIMEOUT) -> int:
        """SIGTERM the daemon; returns its exit status."""
        assert self.pid is not None
        os.kill(self.pid, signal.SIGTERM)
        code = self.wait(timeout)
        if code is None:
            self._kill_and_clean()
            raise MountFailed(f"daemon ignored SIGTERM for {timeout}s:\n{self.log()}")
        return code

    def kill9(self) -> None:
        """SIGKILL the daemon (no chance to drain anything), then clear the dead mount."""
        self._kill_and_clean()

    def _kill_and_clean(self) -> None:
        if self.pid is not None and self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            self.wait(30)
            self.killed = True
        # auto_unmount usually cleans up; a dead mount without it needs a lazy unmount.
        deadline = time.monotonic() + (5 if "auto_unmount" in self.argv else 0)
        while is_mounted(self.mountpoint) and time.monotonic() < deadline:
            time.sleep(0.05)
        force_unmount(self.mountpoint)

    def close(self, expect_exit: int | None = 0) -> None:
        """Make sure nothing is left mounted or running; check the exit status."""
        if self.pid is None:  # never started
            force_unmount(self.mountpoint)
            return
        try:
            if self.returncode is None and not self.killed:
                code = self.unmount()
            else:
                code = self.returncode
                force_unmount(self.mountpoint)
        finally:
            if is_mounted(self.mountpoint):
                force_unmount(self.mountpoint)
        if expect_exit is not None and not self.killed and code != expect_exit:
            raise MountFailed(f"mount daemon exited {code}, expected {expect_exit}:\n{self.log()}")


@contextlib.contextmanager
def mounted(
    store: StoreSpec,
    mountpoint: Path,
    cache_dir: Path,
    key_args: Sequence[str],
    *,
    extra_args: Sequence[str] = (),
    daemon: bool = False,
    auto_unmount: bool = True,
    expect_exit: int | None = 0,
) -> Iterator[Mount]:
    m = Mount(
        store,
        mountpoint,
        cache_dir,
        key_args,
        extra_args=extra_args,
        daemon=daemon,
        auto_unmount=auto_unmount,
    )
    try:
        m.start()
    except BaseException:
        m.close(expect_exit=None)
        raise
    failed = True
    try:
        yield m
        failed = False
    finally:
        # Any exception from the test wins over a complaint about the exit status.
        if failed:
            m.close(expect_exit=None)
        else:
            m.close(expect_exit=expect_exit)


# --- looking at files ----------------------------------------------------------------------


def tree_snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every regular file under ``root``: relative path -> (content, mtime in ms)."""
    snap: dict[str, tuple[bytes, int]] = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            p = Path(dirpath) / name
            st = p.lstat()
            snap[str(p.relative_to(root))] = (p.read_bytes(), st.st_mtime_ns // 1_000_000)
    return snap


def files_containing(root: Path, needle: bytes) -> list[str]:
    """Paths of files under ``root`` whose bytes contain ``needle``."""
    hits = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            p = Path(dirpath) / name
            with contextlib.suppress(OSError):
                if needle in p.read_bytes():
                    hits.append(str(p))
    return hits
