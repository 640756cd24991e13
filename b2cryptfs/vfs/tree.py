"""The namespace operations of the vfs: make and remove directories, create, unlink and
rename files and directories (one metadata lock serialises them).
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import time

import trio

from b2cryptfs.bucket.moves import move_files
from b2cryptfs.bucket.pairs import FileEntry
from b2cryptfs.errors import AlreadyExists, B2CryptfsError, NotFound
from b2cryptfs.vfs.content import Content
from b2cryptfs.vfs.context import VfsContext
from b2cryptfs.vfs.fserror import OpError
from b2cryptfs.vfs.listings import ListingCache
from b2cryptfs.vfs.namespace import DirState, InodeTable, is_under, join, split
from b2cryptfs.vfs.outbox import Outbox
from b2cryptfs.vfs.overlay import Overlay
from b2cryptfs.vfs.views import Attr

log = logging.getLogger("b2cryptfs.vfs.core")

RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2


class Tree:
    """mkdir, rmdir, create, mknod, unlink and rename, over the parts they change."""

    def __init__(
        self,
        ctx: VfsContext,
        table: InodeTable,
        listings: ListingCache,
        outbox: Outbox,
        overlay: Overlay,
        content: Content,
    ) -> None:
        self.ctx = ctx
        self.table = table
        self.listings = listings
        self.outbox = outbox
        self.overlay = overlay
        self.content = content
        self._meta = trio.Lock()

    async def mkdir(self, parent_ino: int, name: str, mode: int) -> Attr:
        self.ctx.check_writable()
        parent = self.overlay.dir_node(parent_ino)
        path = self.overlay.check_name(parent.path, name, is_dir=True)
        async with self._meta:
            if await self.overlay.kind(path) is not None:
                raise OpError(errno.EEXIST, f"{path}: exists")
            try:
                await self.ctx.store(self.ctx.pairs.mkdir, path)
            except AlreadyExists:
                raise OpError(errno.EEXIST, f"{path}: exists") from None
            self.listings.set_dir(parent.path, name, True)
            self.listings.put(path, DirState({}, set(), True, trio.current_time()))
            node = self.table.node_for(path, True)
            node.perm = mode & 0o7777 if mode & 0o7777 else None
            node.dir_mtime_ns = time.time_ns()
        node.lookups += 1
        return self.overlay.dir_attr(node)

    async def rmdir(self, parent_ino: int, name: str) -> None:
        self.ctx.check_writable()
        parent = self.overlay.dir_node(parent_ino)
        path = join(parent.path, name)
        async with self._meta:
            kind = await self.overlay.existing_kind(path)
            if kind != "dir":
                raise OpError(errno.ENOTDIR)
            # Emptiness is decided on a fresh listing: another writer may have added files.
            await self.listings.get(path, fresh=True)
            files, dirs = await self.overlay.children(path)
            if files or dirs:
                raise OpError(errno.ENOTEMPTY, f"{path}: not empty")
            await self.ctx.store(self.ctx.pairs.rmdir, path)
            self.listings.set_dir(parent.path, name, False)
            self.listings.forget(path)
            self.table.detach(path)
            await self.overlay.keep_dir(parent.path)

    async def create(self, parent_ino: int, name: str, mode: int, flags: int) -> tuple[int, Attr]:
        self.ctx.check_writable()
        parent = self.overlay.dir_node(parent_ino)
        path = self.overlay.check_name(parent.path, name, is_dir=False)
        async with self._meta:
            files, dirs = await self.overlay.children(parent.path)
            if name in dirs:
                raise OpError(errno.EISDIR, f"{path}: is a directory")
            if name not in files:
                self.overlay.check_collision(path, files)
            node = self.table.node_for(path, False)
            await self.content.truncate_to_empty(node)
            if mode & 0o7777:
                node.perm = mode & 0o7777
            fh = self.content.add_new(node, flags)
            node.lookups += 1
            return fh, await self.overlay.attr_of(node)

    async def mknod(self, parent_ino: int, name: str, mode: int) -> Attr:
        if not stat.S_ISREG(mode):
            raise OpError(errno.EPERM, "only regular files can be stored")
        fh, attr = await self.create(parent_ino, name, mode, os.O_WRONLY)
        await self.content.release(fh)
        return attr

    async def unlink(self, parent_ino: int, name: str) -> None:
        self.ctx.check_writable()
        parent = self.overlay.dir_node(parent_ino)
        path = join(parent.path, name)
        async with self._meta:
            kind = await self.overlay.existing_kind(path)
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
                    await self.ctx.store(self.ctx.pairs.delete, path)
                except NotFound:
                    pass
                self.listings.set_file(parent.path, name, None)
            await self.overlay.keep_dir(parent.path)

    async def rename(
        self, old_parent_ino: int, old_name: str, new_parent_ino: int, new_name: str, flags: int
    ) -> None:
        self.ctx.check_writable()
        if flags & RENAME_EXCHANGE:
            raise OpError(errno.EINVAL, "exchanging names is not supported")
        old_parent = self.overlay.dir_node(old_parent_ino)
        new_parent = self.overlay.dir_node(new_parent_ino)
        old = join(old_parent.path, old_name)
        async with self._meta:
            kind = await self.overlay.existing_kind(old)
            if kind == "file":
                new = self.overlay.check_name(new_parent.path, new_name, is_dir=False)
            else:
                new = self.overlay.check_name(new_parent.path, new_name, is_dir=True)
            if new == old:
                return
            target = await self.overlay.kind(new)
            if target is not None and flags & RENAME_NOREPLACE:
                raise OpError(errno.EEXIST)
            if kind == "file":
                if target == "dir":
                    raise OpError(errno.EISDIR)
                files, _ = await self.overlay.children(new_parent.path)
                self.overlay.check_collision(new, files, ignore=old)
                await self._rename_file(old, new)
            else:
                if target == "file":
                    raise OpError(errno.ENOTDIR)
                if is_under(new, old):
                    raise OpError(errno.EINVAL, "cannot move a directory into itself")
                if target == "dir":
                    files, dirs = await self.overlay.children(new)
                    if files or dirs:
                        raise OpError(errno.ENOTEMPTY)
                    await self.ctx.store(self.ctx.pairs.rmdir, new)
                    self.listings.set_dir(new_parent.path, new_name, False)
                    self.listings.forget(new)
                    self.table.detach(new)
                await self._rename_dir(old, new)
            await self.overlay.keep_dir(old_parent.path)

    async def _rename_file(self, old: str, new: str) -> None:
        old_dir, old_leaf = split(old)
        new_dir, new_leaf = split(new)
        node = self.table.by_path.get(old)
        if node is not None and node.dirty:
            # Newest content first into the outbox, so that it moves like any pending upload.
            await self.content.seal(node)
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
                await self.content.wait_upload(entry)
            moved = await self.ctx.store(self.ctx.pairs.rename, old, new)
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
                await self.content.seal(node)
        for entry in list(self.outbox.pending()):
            if is_under(entry.path, old):
                await self.content.wait_upload(entry)
        try:
            await self.ctx.store(self._rename_tree, old, new)
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
            self.ctx.pairs.mkdir(new)
        except AlreadyExists:
            pass
        levels: list[str] = []
        stack = [old]
        while stack:
            d = stack.pop()
            levels.append(d)
            listing = self.ctx.pairs.list_dir(d)
            target = new + d[len(old) :]
            if listing.has_marker and d != old:
                try:
                    self.ctx.pairs.mkdir(target)
                except AlreadyExists:
                    pass
            moves = [(listing.files[leaf], join(target, leaf)) for leaf in sorted(listing.files)]
            move_files(self.ctx.pairs, moves)
            stack.extend(join(d, leaf) for leaf in sorted(listing.dirs))
        for d in reversed(levels):
            try:
                self.ctx.pairs.rmdir(d)
            except B2CryptfsError as exc:
                log.warning("rename: %s could not be removed after moving its files: %s", d, exc)
