"""The vfs core: a POSIX-like file tree over paired encrypted objects.

The FUSE layer calls this facade with inode numbers and handles; everything here is trio
code with blocking work (store calls, sealing, big decryptions) sent to worker threads
under capacity limiters. Errors are raised as :class:`b2cryptfs.errors.B2CryptfsError`
subclasses whose ``errno`` is what the caller gets. This module holds the life cycle and the
namespace operations; file content is in :mod:`b2cryptfs.vfs.content`, shared state and
listings in :mod:`b2cryptfs.vfs.state`.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import time

import trio

from b2cryptfs.bucket.pairs import FileEntry
from b2cryptfs.errors import AlreadyExists, B2CryptfsError, NotFound
from b2cryptfs.formats import detect_format
from b2cryptfs.vfs.content import ContentOps
from b2cryptfs.vfs.fserror import OpError
from b2cryptfs.vfs.namespace import (
    ROOT_INO,
    DirState,
    is_under,
    join,
    split,
)
from b2cryptfs.vfs.openfile import (
    ChunkFetcher,
)
from b2cryptfs.vfs.state import BLKSIZE
from b2cryptfs.vfs.views import Attr, FileView, Handle

log = logging.getLogger(__name__)

XATTR_FORMAT = "user.b2cryptfs.format"
XATTR_RECIPIENTS = "user.b2cryptfs.recipients"
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2

__all__ = ["Attr", "FileView", "Vfs", "RENAME_NOREPLACE", "RENAME_EXCHANGE"]


class Vfs(ContentOps):
    """The mount's file tree. Create, then ``await start(nursery)``; ``shutdown()`` at the end."""

    async def start(self, nursery: trio.Nursery) -> None:
        found = await trio.to_thread.run_sync(self.outbox.scan)
        self._fetcher = ChunkFetcher(self.disk_cache, self.store_limiter, nursery)
        if self.config.read_only:
            # A read-only mount writes nothing to the store, not even earlier leftovers.
            if found:
                log.warning(
                    "%d upload(s) left by an earlier mount wait for a read-write mount",
                    len(found),
                )
            return
        await nursery.start(self.outbox.run)

    async def shutdown(self) -> int:
        """Seal whatever is still being written, then drain the outbox.

        Returns how many uploads are left on disk for the next mount.
        """
        for node in list(self.table.staged()):
            if node.dirty:
                try:
                    await self._seal(node)
                except Exception as exc:  # noqa: BLE001 - one file must not stop the rest
                    log.error("%s: could not be saved at unmount: %s", node.path, exc)
        if self.config.read_only:
            return len(self.outbox)
        return await self.outbox.drain()

    async def lookup(self, parent_ino: int, name: str) -> Attr:
        parent = self._dir_node(parent_ino)
        if name == ".":
            node = parent
        elif name == "..":
            node = self.table.node_for(split(parent.path)[0], True) if parent.path else parent
        else:
            path = join(parent.path, name)
            kind = await self._existing_kind(path)
            node = self.table.node_for(path, kind == "dir")
        attr = await self._attr_of(node)
        node.lookups += 1
        return attr

    def count_lookup(self, ino: int) -> None:
        """The kernel took a reference (readdirplus entry)."""
        node = self.table.by_ino.get(ino)
        if node is not None:
            node.lookups += 1

    def forget(self, ino: int, count: int) -> None:
        self.table.forget(ino, count)

    async def getattr(self, ino: int) -> Attr:
        return await self._attr_of(self.table.get(ino))

    async def opendir(self, ino: int) -> int:
        node = self._dir_node(ino)
        fh = self._new_fh()
        self._dir_handles[fh] = (node, None)
        return fh

    async def readdir(self, fh: int, start: int) -> list[tuple[str, Attr]]:
        """Entries from index ``start`` on; the listing is taken once per open directory."""
        node, entries = self._dir_handles[fh]
        if entries is None or start == 0:
            files, dirs = await self._children(node.path)
            entries = []
            for leaf in sorted(dirs):
                child = self.table.node_for(join(node.path, leaf), True)
                entries.append((leaf, self._dir_attr(child)))
            for leaf in sorted(files):
                child = self.table.node_for(join(node.path, leaf), False)
                entries.append((leaf, self._file_attr(child, files[leaf])))
            self._dir_handles[fh] = (node, entries)
        return entries[start:]

    async def releasedir(self, fh: int) -> None:
        self._dir_handles.pop(fh, None)

    async def mkdir(self, parent_ino: int, name: str, mode: int) -> Attr:
        self._check_writable()
        parent = self._dir_node(parent_ino)
        path = self._check_name(parent.path, name, is_dir=True)
        async with self._meta:
            if await self._kind(path) is not None:
                raise OpError(errno.EEXIST, f"{path}: exists")
            try:
                await self._store(self.pairs.mkdir, path)
            except AlreadyExists:
                raise OpError(errno.EEXIST, f"{path}: exists") from None
            self.listings.set_dir(parent.path, name, True)
            self.listings.put(path, DirState({}, set(), True, trio.current_time()))
            node = self.table.node_for(path, True)
            node.perm = mode & 0o7777 if mode & 0o7777 else None
            node.dir_mtime_ns = time.time_ns()
        node.lookups += 1
        return self._dir_attr(node)

    async def rmdir(self, parent_ino: int, name: str) -> None:
        self._check_writable()
        parent = self._dir_node(parent_ino)
        path = join(parent.path, name)
        async with self._meta:
            kind = await self._existing_kind(path)
            if kind != "dir":
                raise OpError(errno.ENOTDIR)
            # Emptiness is decided on a fresh listing: another writer may have added files.
            await self.listings.get(path, fresh=True)
            files, dirs = await self._children(path)
            if files or dirs:
                raise OpError(errno.ENOTEMPTY, f"{path}: not empty")
            await self._store(self.pairs.rmdir, path)
            self.listings.set_dir(parent.path, name, False)
            self.listings.forget(path)
            self.table.detach(path)
            await self._keep_dir(parent.path)

    async def create(self, parent_ino: int, name: str, mode: int, flags: int) -> tuple[int, Attr]:
        self._check_writable()
        parent = self._dir_node(parent_ino)
        path = self._check_name(parent.path, name, is_dir=False)
        async with self._meta:
            files, dirs = await self._children(parent.path)
            if name in dirs:
                raise OpError(errno.EISDIR, f"{path}: is a directory")
            if name not in files:
                self._check_collision(path, files)
            node = self.table.node_for(path, False)
            await self._truncate_to_empty(node)
            if mode & 0o7777:
                node.perm = mode & 0o7777
            handle = Handle(
                self._new_fh(), node, readable=(flags & os.O_ACCMODE) != os.O_WRONLY, writable=True
            )
            node.open_count += 1
            self._handles[handle.fh] = handle
            node.lookups += 1
            node.cache_version = None
            return handle.fh, await self._attr_of(node)

    async def mknod(self, parent_ino: int, name: str, mode: int) -> Attr:
        if not stat.S_ISREG(mode):
            raise OpError(errno.EPERM, "only regular files can be stored")
        fh, attr = await self.create(parent_ino, name, mode, os.O_WRONLY)
        await self.release(fh)
        return attr

    async def unlink(self, parent_ino: int, name: str) -> None:
        self._check_writable()
        parent = self._dir_node(parent_ino)
        path = join(parent.path, name)
        async with self._meta:
            kind = await self._existing_kind(path)
            if kind == "dir":
                raise OpError(errno.EISDIR)
            node = self.table.by_path.get(path)
            if node is not None:
                node.dirty = False  # content written to a deleted name is never uploaded
                self.table.detach(path)
            await self.outbox.cancel_path(path)
            ds = await self.listings.get(parent.path)
            if name in ds.files:
                try:
                    await self._store(self.pairs.delete, path)
                except NotFound:
                    pass
                self.listings.set_file(parent.path, name, None)
            await self._keep_dir(parent.path)

    async def rename(
        self, old_parent_ino: int, old_name: str, new_parent_ino: int, new_name: str, flags: int
    ) -> None:
        self._check_writable()
        if flags & RENAME_EXCHANGE:
            raise OpError(errno.EINVAL, "exchanging names is not supported")
        old_parent = self._dir_node(old_parent_ino)
        new_parent = self._dir_node(new_parent_ino)
        old = join(old_parent.path, old_name)
        async with self._meta:
            kind = await self._existing_kind(old)
            if kind == "file":
                new = self._check_name(new_parent.path, new_name, is_dir=False)
            else:
                new = self._check_name(new_parent.path, new_name, is_dir=True)
            if new == old:
                return
            target = await self._kind(new)
            if target is not None and flags & RENAME_NOREPLACE:
                raise OpError(errno.EEXIST)
            if kind == "file":
                if target == "dir":
                    raise OpError(errno.EISDIR)
                files, _ = await self._children(new_parent.path)
                self._check_collision(new, files, ignore=old)
                await self._rename_file(old, new)
            else:
                if target == "file":
                    raise OpError(errno.ENOTDIR)
                if is_under(new, old):
                    raise OpError(errno.EINVAL, "cannot move a directory into itself")
                if target == "dir":
                    files, dirs = await self._children(new)
                    if files or dirs:
                        raise OpError(errno.ENOTEMPTY)
                    await self._store(self.pairs.rmdir, new)
                    self.listings.set_dir(new_parent.path, new_name, False)
                    self.listings.forget(new)
                    self.table.detach(new)
                await self._rename_dir(old, new)
            await self._keep_dir(old_parent.path)

    async def _rename_file(self, old: str, new: str) -> None:
        old_dir, old_leaf = split(old)
        new_dir, new_leaf = split(new)
        node = self.table.by_path.get(old)
        if node is not None and node.dirty:
            # Newest content first into the outbox, so that it moves like any pending upload.
            await self._seal(node)
        await self.outbox.cancel_path(new)
        entry = await self.outbox.settle_path(old)
        remote_old = (await self.listings.get(old_dir)).files.get(old_leaf)
        moved: FileEntry | None = None
        if entry is not None and remote_old is None:
            try:
                self.outbox.retarget(entry, new)
            except OSError as exc:
                raise OpError(exc.errno or errno.EIO, f"outbox: {exc}") from None
        else:
            if entry is not None:
                await self._wait_upload(entry)
            moved = await self._store(self.pairs.rename, old, new)
        self.listings.set_file(old_dir, old_leaf, None)
        if moved is not None:
            # (A retargeted upload leaves the target's stored version listed: it still
            # exists, and an unlink before the upload must remove it.)
            self.listings.set_file(new_dir, new_leaf, moved)
        self.table.move(old, new)

    async def _rename_dir(self, old: str, new: str) -> None:
        # Everything under the directory must be in the store before it is moved there.
        for node in list(self.table.staged()):
            if is_under(node.path, old) and node.dirty:
                await self._seal(node)
        for entry in list(self.outbox.pending()):
            if is_under(entry.path, old):
                await self._wait_upload(entry)
        try:
            await self._store(self._rename_tree, old, new)
        finally:
            old_parent, old_leaf = split(old)
            new_parent, new_leaf = split(new)
            self.listings.forget(old)
            self.listings.forget(new)
            self.listings.set_dir(old_parent, old_leaf, False)
            self.listings.set_dir(new_parent, new_leaf, True)
        self.table.move(old, new)

    def _rename_tree(self, old: str, new: str) -> None:
        """Blocking: move every pair and marker from ``old/`` to ``new/``.

        The new directory's marker comes first and the old markers go last; each file is
        copied before its old objects are removed, so every file resolves at all times.
        """
        try:
            self.pairs.mkdir(new)
        except AlreadyExists:
            pass
        levels: list[str] = []
        stack = [old]
        while stack:
            d = stack.pop()
            levels.append(d)
            listing = self.pairs.list_dir(d)
            target = new + d[len(old) :]
            if listing.has_marker and d != old:
                try:
                    self.pairs.mkdir(target)
                except AlreadyExists:
                    pass
            for leaf in sorted(listing.files):
                self.pairs.rename(join(d, leaf), join(target, leaf))
            stack.extend(join(d, leaf) for leaf in sorted(listing.dirs))
        for d in reversed(levels):
            try:
                self.pairs.rmdir(d)
            except B2CryptfsError as exc:
                log.warning("rename: %s could not be removed after moving its files: %s", d, exc)

    async def listxattr(self, ino: int) -> list[str]:
        node = self.table.get(ino)
        if node.is_dir or node.unlinked:
            return []
        return [XATTR_FORMAT, XATTR_RECIPIENTS]

    async def getxattr(self, ino: int, name: str) -> bytes:
        node = self.table.get(ino)
        if node.is_dir or node.unlinked or name not in (XATTR_FORMAT, XATTR_RECIPIENTS):
            raise OpError(errno.ENODATA)
        view = await self._view(node.path)
        if view is None:
            raise OpError(errno.ENOENT)
        if view.staged is not None or (view.pending is None and view.remote is None):
            if name == XATTR_FORMAT:
                return self.pairs.format.encode()
            raise OpError(errno.ENODATA, "not sealed yet")
        if view.pending is not None:
            pending = view.pending
            if name == XATTR_FORMAT:
                return pending.format.encode()
            key_object = await trio.to_thread.run_sync(pending.read_key_object)
            fmt = pending.format
        else:
            remote = view.remote
            assert remote is not None
            if name == XATTR_FORMAT and remote.format is not None:
                return remote.format.encode()
            if remote.key is None:
                raise OpError(errno.ENODATA, "key object missing")
            key_object = await self._store_read(
                f"key object of {node.path}", self.pairs.read_key_object, remote.key
            )
            fmt = remote.format or detect_format(key_object[:64])
            if name == XATTR_FORMAT:
                return fmt.encode()
        lines = self.pairs.codec_for(fmt).describe_recipients(key_object)
        return "\n".join(lines).encode()

    def statfs(self) -> dict[str, int]:
        # A bucket has no meaningful capacity: report a large, plausible one. What limits
        # writes is the cache disk (files are staged there until uploaded): its free space.
        # One block size for both fields, so that tools using either agree.
        frsize = BLKSIZE
        blocks = (256 << 40) // frsize  # 256 TiB
        used = sum(e.content_size for e in self.outbox.pending()) // frsize
        free = blocks - used
        try:
            disk = os.statvfs(self.cache.path)
            free = min(free, disk.f_bavail * disk.f_frsize // frsize)
        except OSError:
            pass
        return {
            "f_bsize": frsize,
            "f_frsize": frsize,
            "f_blocks": blocks,
            "f_bfree": free,
            "f_bavail": free,
            "f_files": 1 << 32,
            "f_ffree": (1 << 32) - 1,
            "f_favail": (1 << 32) - 1,
            "f_namemax": 242,
        }

    def root_attr(self) -> Attr:
        return self._dir_attr(self.table.get(ROOT_INO))
