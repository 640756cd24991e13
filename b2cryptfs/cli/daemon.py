"""Running the mount in the background, and where its log lines go.

``run_daemonized`` forks a daemon and keeps the original process waiting on a pipe until the
daemon reports the mount live (exit 0) or reports why it failed (the message is printed on
stderr and becomes the exit status). The caller does every check that can fail *before*
calling it, so most errors never get this far; the pipe covers what can only fail in the
daemon (the FUSE mount itself).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import stat
import sys
import threading
from collections.abc import Callable
from typing import TextIO

from b2cryptfs.errors import B2CryptfsError

log = logging.getLogger(__name__)

SYSLOG_SOCKET = "/dev/log"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Pipe messages, daemon -> waiting parent.
_READY = b"R"
_ERROR = b"E"


# --- logging -------------------------------------------------------------------------------


def _level(debug: bool) -> int:
    return logging.DEBUG if debug else logging.INFO


def _install(handler: logging.Handler, debug: bool) -> None:
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(_level(debug))
    # b2sdk and urllib3 are chatty at DEBUG and may show request details; keep them at INFO
    # unless asked, and never let them log below WARNING in normal runs.
    for noisy in ("b2sdk", "urllib3", "requests"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if debug else logging.WARNING)


def log_to_stderr(debug: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("b2cryptfs: %(levelname)s: %(message)s"))
    _install(handler, debug)


def open_log_file(path: str) -> int:
    """Open (create 0600) a log file for appending; raises OSError."""
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)


def log_to_file(fd: int, debug: bool) -> TextIO:
    """Log to an open file descriptor (taken over); returns the stream."""
    stream = os.fdopen(fd, "a", buffering=1, encoding="utf-8", errors="replace")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    _install(handler, debug)
    return stream


def syslog_available() -> bool:
    try:
        return stat.S_ISSOCK(os.stat(SYSLOG_SOCKET).st_mode)
    except OSError:
        return False


def log_to_syslog(debug: bool) -> None:
    import logging.handlers  # only a daemon without a log file needs it (start-up time)

    handler = logging.handlers.SysLogHandler(
        address=SYSLOG_SOCKET, facility=logging.handlers.SysLogHandler.LOG_DAEMON
    )
    handler.setFormatter(logging.Formatter(f"b2cryptfs[{os.getpid()}]: %(name)s: %(message)s"))
    _install(handler, debug)


# --- systemd readiness ---------------------------------------------------------------------


def sd_notify(message: str) -> None:
    """Tell systemd (Type=notify units) about our state; a no-op outside systemd."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(addr)
            sock.sendall(message.encode())
    except OSError as exc:
        log.debug("sd_notify failed: %s", exc)


# --- daemonizing ---------------------------------------------------------------------------


def _read_all(fd: int) -> bytes:
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 4096)
        except InterruptedError:
            continue
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _redirect_std(fd_numbers: tuple[int, ...]) -> None:
    null = os.open(os.devnull, os.O_RDWR)
    for n in fd_numbers:
        os.dup2(null, n)
    os.close(null)


def run_daemonized(
    serve: Callable[[Callable[[], None]], None],
    *,
    setup_logging: Callable[[], None],
    pid_file: str | None = None,
    prog: str = "b2cryptfs",
    failure_code: int = 1,
) -> int:
    """Fork; the daemon runs ``serve(ready)``; this process returns once ready() was called.

    Returns the exit status for the foreground process (0: mounted). The daemon never
    returns from this function: it exits when ``serve`` returns. An unexpected exception in
    the daemon before it is ready becomes ``failure_code``.
    """
    if threading.active_count() > 1:
        # fork() copies only this thread: a lock another thread holds stays held forever.
        log.warning("forking with %d threads running", threading.active_count())
    sys.stdout.flush()
    sys.stderr.flush()
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid:
        os.close(wfd)
        report = _read_all(rfd)
        os.close(rfd)
        # The first child exits as soon as it has forked the daemon.
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
        if report.startswith(_READY):
            return 0
        if report.startswith(_ERROR):
            code_text, _, message = report[1:].decode("utf-8", "replace").partition(" ")
            print(f"{prog}: error: {message.strip()}", file=sys.stderr)
            return int(code_text) if code_text.isdigit() else 1
        print(f"{prog}: error: the mount daemon exited before the mount was live", file=sys.stderr)
        return 1

    # First child: a new session, so the daemon has no controlling terminal, then fork again
    # so that it can never acquire one.
    try:
        os.close(rfd)
        os.setsid()
        if os.fork():
            os._exit(0)
    except BaseException:
        os._exit(1)
    _daemon_main(serve, wfd, setup_logging, pid_file, failure_code)
    raise AssertionError("unreachable")  # _daemon_main always exits


def _daemon_main(
    serve: Callable[[Callable[[], None]], None],
    wfd: int,
    setup_logging: Callable[[], None],
    pid_file: str | None,
    failure_code: int,
) -> None:
    status = 1
    pipe_open = True

    def report(message: bytes) -> None:
        nonlocal pipe_open
        if not pipe_open:
            return
        pipe_open = False
        with contextlib.suppress(OSError):
            os.write(wfd, message)
        with contextlib.suppress(OSError):
            os.close(wfd)

    def ready() -> None:
        if not pipe_open:
            return
        log.info("mount is live; running in the background (pid %d)", os.getpid())
        sd_notify("READY=1")
        report(_READY)
        # The waiting parent is gone now; whoever ran it may be waiting for EOF on the
        # stdout/stderr it handed us (a pipe), so let go of them.
        _redirect_std((0, 1, 2))

    try:
        os.chdir("/")
        # stdin/stdout are never used; stderr stays connected until ready() so that a
        # message printed by libfuse during the mount still reaches the user.
        _redirect_std((0, 1))
        setup_logging()
        if pid_file:
            _write_pid_file(pid_file)
        serve(ready)
        status = 0
    except B2CryptfsError as exc:
        log.error("%s", exc)
        report(_ERROR + f"{exc.exit_code} {exc}".encode())
        status = exc.exit_code
    except BaseException as exc:  # the daemon must report, whatever happened
        log.exception("mount daemon failed")
        status = failure_code
        report(_ERROR + f"{failure_code} mount failed: {describe_exception(exc)}".encode())
    finally:
        report(
            _ERROR + f"{failure_code} the mount daemon stopped before the mount was live".encode()
        )
        if pid_file:
            with contextlib.suppress(OSError):
                os.unlink(pid_file)
        logging.shutdown()
        os._exit(status)


def describe_exception(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _write_pid_file(path: str) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as fh:
        fh.write(f"{os.getpid()}\n")
    os.replace(tmp, path)
