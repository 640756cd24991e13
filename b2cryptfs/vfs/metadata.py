"""POSIX metadata rules of the vfs: who asks (:class:`Caller`), what a new entry starts with,
who may change what, and the defaults shown for entries that carry no metadata.

Plain functions over :class:`b2cryptfs.bucket.meta.Meta`; the stored values are written by
vfs/attrs.py (setattr) and vfs/tree.py (new names). The rules are Linux's (ext4's).
"""

from __future__ import annotations

import errno
import stat
from dataclasses import dataclass

from b2cryptfs.bucket.meta import UNKNOWN, Meta
from b2cryptfs.vfs.fserror import OpError

SUID_SGID = stat.S_ISUID | stat.S_ISGID


@dataclass(frozen=True)
class Caller:
    """The process behind a request: its uid, gid and supplementary groups."""

    uid: int
    gid: int
    groups: frozenset[int] = frozenset()

    @property
    def root(self) -> bool:
        return self.uid == 0

    def in_group(self, gid: int) -> bool:
        return gid == self.gid or gid in self.groups


def shown(meta: Meta | None, perm: int, uid: int, gid: int, ftype: int) -> tuple[int, int, int]:
    """(st_mode, uid, gid) of an entry: its metadata, else the mount's defaults."""
    meta = meta or UNKNOWN
    mode = ftype | (stat.S_IMODE(meta.mode) if meta.mode is not None else perm)
    if meta.file_type is not None:
        mode = meta.file_type | stat.S_IMODE(mode)
    return (
        mode,
        meta.uid if meta.uid is not None else uid,
        meta.gid if meta.gid is not None else gid,
    )


def new_meta(
    caller: Caller | None,
    parent: Meta | None,
    mode: int,
    *,
    default_uid: int,
    default_gid: int,
    rdev: int | None = None,
) -> Meta:
    """A new entry's metadata: the caller's owner (the parent's group under setgid, and a new
    directory inherits the setgid bit), ``mode`` as the kernel passed it (umask applied)."""
    uid = caller.uid if caller is not None else default_uid
    gid = caller.gid if caller is not None else default_gid
    if parent is not None and parent.mode is not None and parent.mode & stat.S_ISGID:
        gid = parent.gid if parent.gid is not None else default_gid
        if stat.S_ISDIR(mode):
            mode |= stat.S_ISGID
    elif (
        caller is not None
        and not caller.root
        and not stat.S_ISDIR(mode)
        and not caller.in_group(gid)
    ):
        mode &= ~stat.S_ISGID
    return Meta(mode=mode, uid=uid, gid=gid, rdev=rdev)


def is_default_dir(meta: Meta, perm: int, uid: int, gid: int) -> bool:
    """Would a new directory with ``meta`` show exactly what the mount shows without it?"""
    return (meta.mode, meta.uid, meta.gid) == (stat.S_IFDIR | perm, uid, gid) and (
        meta.mtime_ns is None and meta.atime_ns is None
    )


def check_chmod(caller: Caller | None, cur_mode: int, cur_uid: int, new_mode: int) -> None:
    if caller is None or caller.root or caller.uid == cur_uid:
        return
    new, cur = stat.S_IMODE(new_mode), stat.S_IMODE(cur_mode)
    if new & ~SUID_SGID == cur & ~SUID_SGID and new & SUID_SGID & ~cur == 0:
        return  # only setuid/setgid cleared: the kernel's doing after another user's write
    raise OpError(errno.EPERM, "only the owner may change the mode")


def chmod_mode(caller: Caller | None, cur_mode: int, gid: int, new_mode: int) -> int:
    """The mode a chmod sets: setgid is dropped when a non-root caller is not in the group."""
    perm = stat.S_IMODE(new_mode)
    if (
        caller is not None
        and not caller.root
        and perm & stat.S_ISGID
        and not stat.S_ISDIR(cur_mode)
        and not caller.in_group(gid)
    ):
        perm &= ~stat.S_ISGID
    return stat.S_IFMT(cur_mode) | perm


def check_chown(
    caller: Caller | None, cur_uid: int, cur_gid: int, uid: int | None, gid: int | None
) -> None:
    if caller is None or caller.root:
        return
    if uid is not None and uid != cur_uid:
        raise OpError(errno.EPERM, "only root may give a file away")
    if gid is not None and gid != cur_gid:
        if caller.uid != cur_uid or not caller.in_group(gid):
            raise OpError(errno.EPERM, "only the owner may change the group, to one of his")


def after_chown(mode: int) -> int:
    """chown of a non-directory clears setuid, and setgid when group-exec is set."""
    if stat.S_ISDIR(mode):
        return mode
    return killed_privs(mode)


def killed_privs(mode: int) -> int:
    """What a write or truncate by a non-root process leaves of setuid/setgid (Linux)."""
    mode &= ~stat.S_ISUID
    if mode & stat.S_IXGRP:
        mode &= ~stat.S_ISGID
    return mode
