"""``status`` and ``umount``: what a mount still has to upload, and unmounting that waits.

Both read the read-only ``user.b2cryptfs.status`` xattr of the mount's root (JSON, see
vfs/uploadinfo.py): no control socket, and only who may see the mount may ask.
``fusermount3 -u`` detaches the kernel side at once while the daemon keeps uploading; ``umount
--wait`` first waits for the outbox to empty, then unmounts and waits for the daemon to exit
(it drains what was sealed at the unmount, watched in its outbox directory).
"""

from __future__ import annotations

import argparse
import errno
import glob
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any, TextIO

from b2cryptfs.cli.progress import human
from b2cryptfs.errors import B2CryptfsError, UsageError

XATTR_STATUS = "user.b2cryptfs.status"
FSTYPE = "fuse.b2cryptfs"
_POLL = 0.5  # seconds between looks at a mount's status


class StatusError(B2CryptfsError):
    exit_code = 1


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "status",
        help="show what mounts still have to upload",
        description="For each b2cryptfs mount (all of them, from /proc/self/mountinfo, when "
        "none is named): the store, files and bytes pending (in progress included), in "
        "progress, uploaded since the mount, the upload rate and the last error.",
    )
    p.add_argument("mountpoints", nargs="*", metavar="MOUNTPOINT")
    p.add_argument("--json", action="store_true", help="one JSON object per mount and line")
    p.set_defaults(func=cmd_status)

    u = sub.add_parser(
        "umount",
        help="unmount; with --wait, only once every upload is done",
        description="Without --wait: unmount as fusermount3 -u does (the kernel detaches at "
        "once; the daemon keeps uploading what is pending, then exits) and say how many "
        "uploads remain. With --wait: wait until the outbox is empty (a progress bar on a "
        "terminal), unmount, and wait for the daemon to exit. Exit status: 0 done, 1 uploads "
        "kept failing past --timeout (nothing unmounted) or the unmount failed.",
    )
    u.add_argument("mountpoint", metavar="MOUNTPOINT")
    u.add_argument("--wait", action="store_true", help="return only when every upload is done")
    u.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="with --wait, give up when uploads have failed without any progress for this "
        "long (default 300)",
    )
    u.set_defaults(func=cmd_umount)


# --- finding mounts and asking them ----------------------------------------------------------


def _unescape(text: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo.
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and text[i + 1 : i + 4].isdigit() and len(text[i + 1 : i + 4]) == 3:
            out.append(chr(int(text[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def b2cryptfs_mounts(mountinfo: str = "/proc/self/mountinfo") -> Iterator[tuple[str, str]]:
    """(mountpoint, source) of every b2cryptfs mount."""
    try:
        with open(mountinfo, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return
    for line in lines:
        fields, sep, tail = line.partition(" - ")
        if not sep:
            continue
        fstype, _, rest = tail.partition(" ")
        if fstype == FSTYPE:
            yield _unescape(fields.split(" ")[4]), _unescape(rest.partition(" ")[0])


def read_status(mountpoint: str) -> dict[str, Any]:
    """The mount's status; StatusError in one line if it cannot be had."""
    try:
        raw = os.getxattr(mountpoint, XATTR_STATUS)
    except FileNotFoundError:
        raise StatusError(f"{mountpoint}: no such directory") from None
    except OSError as exc:
        if exc.errno in (errno.ENODATA, errno.ENOTSUP):
            raise StatusError(
                f"{mountpoint}: not a b2cryptfs mount (or one without status)"
            ) from None
        if exc.errno == errno.ENOTCONN:
            raise StatusError(f"{mountpoint}: the mount's daemon is gone") from None
        raise StatusError(f"{mountpoint}: {exc.strerror or exc}") from None
    try:
        status = json.loads(raw)
    except ValueError:
        raise StatusError(f"{mountpoint}: unreadable status") from None
    if not isinstance(status, dict):
        raise StatusError(f"{mountpoint}: unreadable status")
    return status


def _files(n: int) -> str:
    return f"{n} file" if n == 1 else f"{n} files"


def describe(mountpoint: str, st: dict[str, Any]) -> str:
    lines = [f"{mountpoint}: {st.get('store', '?')}" + (" (read-only)" if st["read_only"] else "")]
    lines.append(
        f"  pending:     {_files(st['pending_files'])}, {human(st['pending_bytes'])}"
        f" ({st['uploading_files']} in progress, {human(st['uploading_bytes'])})"
    )
    if st.get("writing_files"):
        lines.append(f"  open:        {_files(st['writing_files'])} being written")
    lines.append(
        f"  uploaded:    {_files(st['uploaded_files'])}, {human(st['uploaded_bytes'])} since "
        f"the mount; {human(st['rate_bytes_per_second'])}/s lately"
    )
    if st.get("stuck_files"):
        # Uploads that may never succeed: named, so that someone acts on them.
        lines.append(f"  stuck:       {_files(st['stuck_files'])} the store keeps refusing")
        for f in st.get("stuck", [])[:5]:
            lines.append(f"               {f['path']}: {f['error']}")
    if st.get("last_error"):
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(st["last_error_at"]))
        failing = st.get("failing_files", 0)
        lines.append(f"  last error:  {st['last_error']} (at {when})")
        if failing:
            lines.append(
                f"  failing:     {_files(failing)}, up to {st['consecutive_failures']} "
                "failed attempts in a row"
            )
            for f in st.get("failing", [])[:3]:
                lines.append(
                    f"               {f['path']}: {f['consecutive_failures']} in a row, "
                    f"for {f['failing_for_seconds']:.0f} s"
                )
    return "\n".join(lines)


def cmd_status(args: argparse.Namespace) -> int:
    targets = args.mountpoints or [mp for mp, _ in b2cryptfs_mounts()]
    if not targets:
        print("no b2cryptfs mounts", file=sys.stderr)
        return 0
    failed = 0
    for mp in targets:
        try:
            st = read_status(mp)
        except StatusError as exc:
            print(f"b2cryptfs: error: {exc}", file=sys.stderr)
            failed += 1
            continue
        if args.json:
            print(json.dumps({"mountpoint": mp, **st}, sort_keys=True))
        else:
            print(describe(mp, st))
    return 1 if failed else 0


# --- unmounting ------------------------------------------------------------------------------


def _alive(pid: int) -> bool:
    """Whether the process still runs (a zombie waiting for its parent does not)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _outbox_left(outbox: str) -> int:
    return len(glob.glob(os.path.join(glob.escape(outbox), "*.json")))


def _unmount(mountpoint: str) -> None:
    tool = shutil.which("fusermount3") or shutil.which("fusermount")
    argv = [tool, "-u", mountpoint] if tool else ["umount", mountpoint]
    try:
        res = subprocess.run(argv, capture_output=True, text=True)
    except OSError as exc:
        raise StatusError(f"cannot run {argv[0]}: {exc.strerror or exc}") from None
    if res.returncode != 0:
        detail = (res.stderr.strip().splitlines() or [f"exit status {res.returncode}"])[-1]
        raise StatusError(f"cannot unmount {mountpoint}: {detail}")


class _Progress:
    """The upload progress bar on a terminal (nothing otherwise)."""

    def __init__(self, out: TextIO | None, first: dict[str, Any]) -> None:
        self.out = out
        self.base_files = first["uploaded_files"]
        self.base_bytes = first["uploaded_bytes"]

    def show(self, st: dict[str, Any]) -> None:
        if self.out is None:
            return
        done_files = st["uploaded_files"] - self.base_files
        done_bytes = st["uploaded_bytes"] - self.base_bytes
        total_files = done_files + st["pending_files"]
        total_bytes = done_bytes + st["pending_bytes"]
        pct = 100 * done_bytes // total_bytes if total_bytes else 100
        text = (
            f"uploading: {done_files}/{total_files} files, {human(done_bytes)} / "
            f"{human(total_bytes)} {pct:3d}%  {human(st['rate_bytes_per_second'])}/s"
        )
        if st.get("failing_files"):
            text += "  (retrying after errors)"
        self.out.write(f"\r\x1b[K{text}")
        self.out.flush()

    def line(self, text: str) -> None:
        if self.out is not None:
            self.out.write(f"\r\x1b[K{text}")
            self.out.flush()

    def close(self) -> None:
        if self.out is not None:
            self.out.write("\r\x1b[K")
            self.out.flush()


def _wait_outbox_empty(mountpoint: str, timeout: float, bar: _Progress) -> dict[str, Any]:
    """Poll until nothing is pending; StatusError when failures last ``timeout`` seconds
    with no upload finishing."""
    st = read_status(mountpoint)
    progress_at = time.monotonic()
    last_done = st["uploaded_files"]
    # Uploads that failed for good (not transient) are not retried by this mount, and a
    # read-only mount uploads nothing: neither is worth waiting for.
    while st["pending_files"] > st["failed_files"] and not st["read_only"]:
        bar.show(st)
        time.sleep(_POLL)
        st = read_status(mountpoint)
        now = time.monotonic()
        if st["uploaded_files"] != last_done or not st["failing_files"]:
            last_done = st["uploaded_files"]
            progress_at = now
        elif now - progress_at > timeout:
            bar.close()
            raise StatusError(
                f"uploads keep failing ({st['last_error']}); {_files(st['pending_files'])} "
                f"pending; {mountpoint} left mounted"
            )
    return st


def _wait_daemon(
    pid: int, outbox: str, timeout: float, bar: _Progress, *, read_only: bool = False
) -> None:
    """After the unmount the daemon uploads what was sealed then, and exits."""
    progress_at = time.monotonic()
    left = _outbox_left(outbox)
    while _alive(pid):
        now_left = _outbox_left(outbox)
        if now_left != left:
            left, progress_at = now_left, time.monotonic()
        if left:
            bar.line(f"unmounted; the daemon uploads the last {_files(left)}")
        if time.monotonic() - progress_at > timeout:
            bar.close()
            raise StatusError(
                f"unmounted, but the daemon (pid {pid}) still has {_files(left)} to upload "
                f"after {timeout:.0f} s without progress"
            )
        time.sleep(0.1)
    bar.close()
    left = _outbox_left(outbox)
    if left and not read_only:
        raise StatusError(
            f"unmounted; {_files(left)} could not be uploaded and wait for the next mount"
        )


def cmd_umount(args: argparse.Namespace) -> int:
    mountpoint = os.path.abspath(args.mountpoint)
    if args.timeout <= 0:
        raise UsageError("--timeout must be positive")
    try:
        st: dict[str, Any] | None = read_status(mountpoint)
    except StatusError:
        if args.wait:
            raise
        st = None  # a dead or foreign mount: unmount it all the same
    if not args.wait:
        _unmount(mountpoint)
        if st is not None and st["pending_files"]:
            print(
                f"b2cryptfs: unmounted {mountpoint}; {_files(st['pending_files'])} "
                f"({human(st['pending_bytes'])}) still to upload: the daemon (pid {st['pid']}) "
                "goes on until they are stored (or the next mount does)",
                file=sys.stderr,
            )
        return 0
    assert st is not None
    bar = _Progress(sys.stderr if sys.stderr.isatty() else None, st)
    st = _wait_outbox_empty(mountpoint, args.timeout, bar)
    _unmount(mountpoint)
    _wait_daemon(
        int(st["pid"]), str(st["outbox"]), args.timeout, bar, read_only=bool(st["read_only"])
    )
    return 0
