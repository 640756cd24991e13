"""What put and get keep of a local entry besides its bytes: type, mode, owner, mtime, rdev.

``put`` records them (:func:`meta_of`); ``get`` gives them back (:func:`restore`) as cp and
tar do: the mtime always, the mode less the umask unless ``-p``, the owner only as root.
Links, FIFOs, sockets and devices are made by :func:`make_node`.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import TYPE_CHECKING

from b2cryptfs.errors import B2CryptfsError

if TYPE_CHECKING:  # the bucket layer is imported by the commands, not by --help
    from b2cryptfs.bucket.meta import Meta

_SETID = stat.S_ISUID | stat.S_ISGID

KIND_NAMES = {
    stat.S_IFIFO: "FIFO",
    stat.S_IFSOCK: "socket",
    stat.S_IFCHR: "character device",
    stat.S_IFBLK: "block device",
    stat.S_IFLNK: "symbolic link",
    stat.S_IFDIR: "directory",
}


def kind_name(mode: int) -> str:
    return KIND_NAMES.get(stat.S_IFMT(mode), "special file")


def meta_of(st: os.stat_result) -> Meta:
    """The metadata put stores for a local entry (lstat'ed, or stat'ed with -L)."""
    from b2cryptfs.bucket.meta import Meta

    device = stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
    return Meta(
        mode=st.st_mode,
        uid=st.st_uid,
        gid=st.st_gid,
        mtime_ns=st.st_mtime_ns,
        rdev=st.st_rdev if device else None,
    )


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def is_root() -> bool:
    return os.geteuid() == 0


def mode_to_set(meta: Meta, *, is_dir: bool, preserve: bool) -> int:
    """The permission bits get gives a file or directory it writes.

    Without a stored mode (seed files, older objects): 0666/0777 less the umask, as cp. With
    one: that mode less the umask and without setuid/setgid/sticky, unless ``preserve``
    (tar -p); setuid/setgid also go when the stored owner cannot be given back."""
    mask = current_umask()
    if meta.mode is None:
        return (0o777 if is_dir else 0o666) & ~mask
    mode = stat.S_IMODE(meta.mode)
    if not preserve:
        return mode & 0o777 & ~mask
    if not is_root() and (meta.uid, meta.gid) != (os.geteuid(), os.getegid()):
        mode &= ~_SETID
    return mode


def restore(
    path: str,
    meta: Meta,
    fallback_mtime_ns: int | None,
    *,
    preserve: bool,
    is_dir: bool = False,
) -> None:
    """Owner (root only), mode and times of ``path`` (not followed when it is a link)."""
    link = os.path.islink(path)
    if is_root() and meta.uid is not None and meta.gid is not None:
        os.chown(path, meta.uid, meta.gid, follow_symlinks=False)  # before chmod: clears setid
    if not link:
        os.chmod(path, mode_to_set(meta, is_dir=is_dir, preserve=preserve))
    mtime = meta.mtime_ns if meta.mtime_ns is not None else fallback_mtime_ns
    if mtime is not None:
        atime = meta.atime_ns if meta.atime_ns is not None else mtime
        os.utime(path, ns=(atime, mtime), follow_symlinks=False)


class CannotCreate(B2CryptfsError):
    """A special file that cannot be made here (a device without root)."""

    exit_code = 1


def make_node(path: str, meta: Meta, target: str | None = None) -> None:
    """Create a symbolic link (``target``), FIFO, socket or device at ``path``."""
    if target is not None:
        os.symlink(target, path)
        return
    assert meta.mode is not None
    kind = stat.S_IFMT(meta.mode)
    try:
        os.mknod(path, kind | 0o600, meta.rdev or 0)
    except PermissionError as e:
        if kind in (stat.S_IFCHR, stat.S_IFBLK) and e.errno == errno.EPERM:
            raise CannotCreate(f"{path}: cannot create a {kind_name(kind)} (needs root)") from None
        raise
