"""pyfuse3 Operations: the kernel's requests, translated to vfs calls.

This layer only converts: names from bytes, attributes to ``EntryAttributes``, failures to
``FUSEError`` (through :func:`b2cryptfs.fs.errors.handler`). The file tree itself lives in
:mod:`b2cryptfs.vfs.core`.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Sequence

import pyfuse3
import trio

from b2cryptfs.bucket.layout import decode_leaf
from b2cryptfs.errors import InvalidName
from b2cryptfs.fs.handlers import handler, quiet
from b2cryptfs.vfs.core import Attr, Caller, Vfs
from b2cryptfs.vfs.fserror import OpError
from b2cryptfs.vfs.uploadinfo import UPLOAD_XATTRS, upload_xattr

log = logging.getLogger("b2cryptfs.fs")

NAME_MAX = 255  # bytes in one name, as Linux filesystems allow


# Every extended attribute of the mount (vfs/core.py, vfs/uploadinfo.py) is user.b2cryptfs.*
OWN_XATTR_PREFIX = b"user.b2cryptfs."
# The only namespace the mount has attributes in; any other (security.*, system.* for ACLs,
# trusted.*) is not supported at all, which is a different answer from "no such attribute".
USER_XATTR_PREFIX = b"user."


def entry_attributes(attr: Attr) -> pyfuse3.EntryAttributes:
    e = pyfuse3.EntryAttributes()
    e.st_ino = attr.ino
    e.generation = 0
    e.entry_timeout = attr.entry_timeout
    e.attr_timeout = attr.attr_timeout
    e.st_mode = attr.mode
    e.st_nlink = attr.nlink
    e.st_uid = attr.uid
    e.st_gid = attr.gid
    e.st_rdev = attr.rdev
    e.st_size = attr.size
    e.st_blksize = attr.blksize
    e.st_blocks = attr.blocks
    e.st_atime_ns = attr.mtime_ns if attr.atime_ns is None else attr.atime_ns
    e.st_mtime_ns = attr.mtime_ns
    e.st_ctime_ns = attr.ctime_ns
    return e


def _name(raw: bytes) -> str:
    return decode_leaf(raw)


def caller_of(ctx: pyfuse3.RequestContext | None) -> Caller | None:
    """The requesting process as plain ints; its supplementary groups from /proc (the
    kernel does not send them), none if the process is gone. None: no context (the
    mount's own calls), checked as the mount's user."""
    if ctx is None:
        return None
    groups: frozenset[int] = frozenset()
    try:
        with open(f"/proc/{ctx.pid}/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Groups:"):
                    groups = frozenset(int(g) for g in line.split()[1:])
                    break
    except (OSError, ValueError):
        pass
    return Caller(ctx.uid, ctx.gid, groups)


class Operations(pyfuse3.Operations):
    """Every handler is wrapped: an unexpected exception becomes EIO, never a dead mount."""

    supports_dot_lookup = True
    enable_writeback_cache = False

    def __init__(self, vfs: Vfs) -> None:
        super().__init__()
        self.vfs = vfs
        # Set by init(): libfuse replies to the kernel's INIT right after it returns.
        self.initialized = trio.Event()
        # READ requests served and bytes asked: how the kernel cuts reads (a debug line at
        # the unmount; tests check the read-ahead with it).
        self.read_requests = 0
        self.read_bytes = 0

    def init(self) -> None:
        self.initialized.set()

    # --- names and attributes ----------------------------------------------------------

    @handler
    async def lookup(
        self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        if len(name) > NAME_MAX:
            # As ext4: a name no directory can hold (a symlink's target may carry one).
            raise OpError(errno.ENAMETOOLONG, "name longer than NAME_MAX")
        try:
            leaf = _name(name)
        except InvalidName:
            raise OpError(errno.ENOENT) from None  # such a name cannot exist in the store
        return entry_attributes(await self.vfs.lookup(parent_inode, leaf))

    @quiet
    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        for ino, count in inode_list:
            self.vfs.forget(ino, count)

    @handler
    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return entry_attributes(await self.vfs.getattr(inode))

    @handler
    async def setattr(
        self,
        inode: int,
        attr: pyfuse3.EntryAttributes,
        fields: pyfuse3.SetattrFields,
        fh: int | None,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        result = await self.vfs.setattr(
            inode,
            size=attr.st_size if fields.update_size else None,
            mtime_ns=attr.st_mtime_ns if fields.update_mtime else None,
            atime_ns=attr.st_atime_ns if fields.update_atime else None,
            mode=attr.st_mode if fields.update_mode else None,
            uid=attr.st_uid if fields.update_uid else None,
            gid=attr.st_gid if fields.update_gid else None,
            caller=caller_of(ctx),
        )
        return entry_attributes(result)

    @handler
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        data = pyfuse3.StatvfsData()
        for key, value in self.vfs.statfs().items():
            setattr(data, key, value)
        return data

    # --- directories -------------------------------------------------------------------

    @handler
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        return await self.vfs.opendir(inode)

    @handler
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        entries = await self.vfs.readdir(fh, start_id)
        for i, (name, attr) in enumerate(entries, start=start_id + 1):
            if not pyfuse3.readdir_reply(token, name.encode("utf-8"), entry_attributes(attr), i):
                break
            self.vfs.count_lookup(attr.ino)

    @quiet
    async def releasedir(self, fh: int) -> None:
        await self.vfs.releasedir(fh)

    @handler
    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        await self.vfs.fsyncdir(fh)

    @handler
    async def mkdir(
        self, parent_inode: int, name: bytes, mode: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        attr = await self.vfs.mkdir(parent_inode, _name(name), mode, caller_of(ctx))
        return entry_attributes(attr)

    @handler
    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        await self.vfs.rmdir(parent_inode, _name(name))

    # --- files -------------------------------------------------------------------------

    @handler
    async def create(
        self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: pyfuse3.RequestContext
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        fh, attr = await self.vfs.create(parent_inode, _name(name), mode, flags, caller_of(ctx))
        return pyfuse3.FileInfo(fh=fh), entry_attributes(attr)

    @handler
    async def mknod(
        self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        attr = await self.vfs.mknod(parent_inode, _name(name), mode, rdev, caller_of(ctx))
        return entry_attributes(attr)

    @handler
    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        # Only "is it root" matters here: no /proc read on this hot path.
        who = None if ctx is None else Caller(ctx.uid, ctx.gid)
        fh, keep = await self.vfs.open(inode, flags, who)
        # direct_io only where the page cache would show another version (mmap needs it).
        return pyfuse3.FileInfo(fh=fh, keep_cache=keep, direct_io=self.vfs.direct_io(fh))

    @handler
    async def read(self, fh: int, off: int, size: int) -> bytes | memoryview:
        self.read_requests += 1
        self.read_bytes += size
        return await self.vfs.read(fh, off, size)

    @handler
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        return await self.vfs.write(fh, off, buf)

    @handler
    async def flush(self, fh: int) -> None:
        await self.vfs.flush(fh)

    @handler
    async def fsync(self, fh: int, datasync: bool) -> None:
        await self.vfs.fsync(fh)

    @handler
    async def release(self, fh: int) -> None:
        await self.vfs.release(fh)

    @handler
    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        await self.vfs.unlink(parent_inode, _name(name))

    @handler
    async def rename(
        self,
        parent_inode_old: int,
        name_old: bytes,
        parent_inode_new: int,
        name_new: bytes,
        flags: int,
        ctx: pyfuse3.RequestContext,
    ) -> None:
        await self.vfs.rename(
            parent_inode_old, _name(name_old), parent_inode_new, _name(name_new), flags
        )

    # --- refused -----------------------------------------------------------------------

    @handler
    async def link(
        self, inode: int, new_parent_inode: int, new_name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        # Every name is its own pair: a second name would need shared content.
        log.warning("link: hard links are not supported (EPERM); copy the file instead")
        raise OpError(errno.EPERM, "hard links are not supported")

    # --- symbolic links ----------------------------------------------------------------

    @handler
    async def symlink(
        self, parent_inode: int, name: bytes, target: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        link = target.decode("utf-8", "surrogateescape")
        attr = await self.vfs.symlink(parent_inode, _name(name), link, caller_of(ctx))
        return entry_attributes(attr)

    @handler
    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        return (await self.vfs.readlink(inode)).encode("utf-8", "surrogateescape")

    # --- extended attributes -----------------------------------------------------------

    @handler
    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> list[bytes]:
        return [n.encode() for n in await self.vfs.listxattr(inode)]

    @handler
    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        if not name.startswith(OWN_XATTR_PREFIX):
            # Answered here, without the vfs: every attribute we have is under our own prefix.
            if not name.startswith(USER_XATTR_PREFIX):
                # ls -l asks every file for security.selinux and system.posix_acl_access;
                # "not supported" (as a filesystem without that namespace answers) makes it
                # stop asking for the rest of the device, "no data" would not. cp -a, tar
                # and rsync -A take it as "no label, no ACL" as well.
                raise pyfuse3.FUSEError(errno.EOPNOTSUPP)
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR)
        try:
            key = name.decode("utf-8")
        except UnicodeDecodeError:
            raise OpError(pyfuse3.ENOATTR) from None
        try:
            if key in UPLOAD_XATTRS:
                return await upload_xattr(self.vfs, inode, key)
            return await self.vfs.getxattr(inode, key)
        except OpError as exc:
            if exc.errno == errno.ENODATA:
                raise OpError(pyfuse3.ENOATTR) from None
            raise

    @handler
    async def setxattr(
        self, inode: int, name: bytes, value: bytes, ctx: pyfuse3.RequestContext
    ) -> None:
        raise OpError(errno.ENOTSUP, "extended attributes are read-only")

    @handler
    async def removexattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        raise OpError(errno.ENOTSUP, "extended attributes are read-only")
