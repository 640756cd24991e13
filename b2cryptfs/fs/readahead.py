"""The kernel's read-ahead for this mount, widened once the FUSE INIT is answered.

The kernel cuts a sequential read of a FUSE file into READ requests no larger than the
mount's read-ahead (the bdi's ``read_ahead_kb``, 128 KiB by default), and each request costs
the daemon a fixed amount of Python work. FUSE's INIT can only lower that value (the reply
sets it to the smaller of the two), so a larger one is written to sysfs after the reply.
Only root may write there: anyone else, or a read-only /sys, keeps the kernel's value.
"""

from __future__ import annotations

import logging
import os

import trio

log = logging.getLogger(__name__)

DEFAULT_KIB = 1024  # 1 MiB READs; 2048 and 4096 measured no faster
MOUNTINFO = "/proc/self/mountinfo"
BDI_DIR = "/sys/class/bdi"
FSTYPE = "fuse.b2cryptfs"  # the mount's subtype (fs/mount.py fuse_options)


def _unescape(text: str) -> str:
    # mountinfo writes space, tab, newline and backslash as \ooo.
    out, i = [], 0
    while i < len(text):
        code = text[i + 1 : i + 4]
        if text[i] == "\\" and len(code) == 3 and code.isdigit():
            out.append(chr(int(code, 8)))
            i += 4
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def mount_device(mount_path: str, mountinfo: str = MOUNTINFO) -> str | None:
    """``major:minor`` of the newest b2cryptfs mount on ``mount_path``, None if none.

    ``mount_path`` is resolved (os.path.realpath) before the mount is made: once it is
    live, resolving it, like a stat(), asks this very daemon, which may be busy doing this.
    The device number is read from mountinfo for the same reason."""
    found = None
    try:
        with open(mountinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                fields = line.split()
                try:
                    fstype = fields[fields.index("-", 6) + 1]
                except (ValueError, IndexError):
                    continue
                if fstype == FSTYPE and _unescape(fields[4]) == mount_path:
                    found = fields[2]  # later lines are mounts made later (on top)
    except OSError:
        return None
    return found


def set_read_ahead(
    mount_path: str, kib: int, bdi_dir: str = BDI_DIR, mountinfo: str = MOUNTINFO
) -> bool:
    """Write ``kib`` as the read-ahead of the mount on ``mount_path`` (resolved before the
    mount was made); whether it took. Never raises."""
    device = mount_device(mount_path, mountinfo)
    if device is None:
        log.debug("read-ahead left as it is: no mount of %s in %s", mount_path, mountinfo)
        return False
    path = os.path.join(bdi_dir, device, "read_ahead_kb")
    try:
        with open(path, "w", encoding="ascii") as f:
            f.write(f"{kib}\n")
    except OSError as exc:
        log.debug("read-ahead left as it is: %s: %s", path, exc.strerror or exc)
        return False
    log.debug("read-ahead of the mount (bdi %s) set to %d KiB", device, kib)
    return True


async def widen_after_init(initialized: trio.Event, mount_path: str | None, kib: int) -> None:
    """Once INIT is answered, set the read-ahead.

    ``initialized`` is set by the Operations' init(), which libfuse calls just before it
    sends the reply, within the same trio step. This task then runs before the handler of
    any later request (no thread: reading /proc and writing /sys do not block), so even the
    first READ after the mount is cut to the new size."""
    if kib <= 0 or mount_path is None:
        return  # 0: the kernel's value; None: a file descriptor mount, no path to look up
    await initialized.wait()
    set_read_ahead(mount_path, kib)
