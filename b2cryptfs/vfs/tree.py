"""The namespace operations of the vfs: make and remove directories, create, unlink and
rename files and directories (one metadata lock serialises them).
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import time
from collections.abc import Callable
from typing import Any

import trio

from b2cryptfs.bucket.meta import PATH_MAX, Meta
from b2cryptfs.bucket.moves import move_files
from b2cryptfs.bucket.pairs import FileEntry
from b2cryptfs.errors import AlreadyExists, B2CryptfsError, NotFound
from b2cryptfs.vfs.attrs import Attrs
from b2cryptfs.vfs.content import Content
from b2cryptfs.vfs.fserror import OpError
from b2cryptfs.vfs.metadata import Caller, is_default_dir, new_meta
from b2cryptfs.vfs.moves import MoveJournal
from b2cryptfs.vfs.namespace import DirState, Node, is_under, join, split
from b2cryptfs.vfs.overlay import Overlay
from b2cryptfs.vfs.parts import Part, Shared
from b2cryptfs.vfs.pathuploads import cancel_path, settle_path
from b2cryptfs.vfs.views import Attr

log = logging.getLogger("b2cryptfs.vfs.core")

RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2


class Tree(Part):
    """mkdir, rmdir, create, mknod, unlink and rename, over the parts they change."""

    def __init__(
        self, shared: Shared, overlay: Overlay, content: Content, moves: MoveJournal, attrs: Attrs
    ) -> None:
        super().__init__(shared)
        self.overlay = overlay
        self.content = content
        self.moves = moves
        self.attrs = attrs  # directory mtimes follow their names
        self._meta = attrs.dir_times.lock  # one namespace lock (pending mtimes take it)
        self._targets: dict[str, str] = {}  # link targets by content version (immutable)

    def _new_meta(
        self, caller: Caller | None, parent: Node, mode: int, rdev: int | None = None
    ) -> Meta:
        return new_meta(
            caller,
            self.overlay.dir_meta(parent),
            mode,
            default_uid=self.ctx.uid,
            default_gid=self.ctx.gid,
            rdev=rdev,
        )

    async def mkdir(
        self, parent_ino: int, name: str, mode: int, caller: Caller | None = None
    ) -> Attr:
        self.ctx.check_writable()
        parent = self.overlay.dir_node(parent_ino)
        path = self.overlay.check_name(parent.path, name, is_dir=True)
        meta: Meta | None = self._new_meta(caller, parent, stat.S_IFDIR | stat.S_IMODE(mode))
        assert meta is not None
        now = time.time_ns()
        if is_default_dir(meta, self.ctx.dir_perm, self.ctx.uid, self.ctx.gid):
            meta = None  # no directory object to write now: its mtime is stored later
        else:
            meta = meta.updated(mtime_ns=now)
        async with self._meta:
            if await self.overlay.kind(path) is not None:
                raise OpError(errno.EEXIST, f"{path}: exists")
            try:
                await self.ctx.store(self.ctx.pairs.mkdir, path, meta)
            except AlreadyExists:
                # Another mount made it since this one listed: list again at once, so that
                # a stat or a create below it sees it now, not after dir_cache_time.
                await self.listings.get(parent.path, fresh=True)
                raise OpError(errno.EEXIST, f"{path}: exists") from None
            self.listings.set_dir(parent.path, name, True)
            self.listings.set_dir_meta(parent.path, name, meta)
            self.listings.put(path, DirState({}, set(), True, trio.current_time()))
            node = self.table.node_for(path, True)
            node.meta = meta
            if meta is None:
                await self.attrs.dir_changed(node, now)
            await self.attrs.dir_changed(parent, now)
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
            self.listings.set_dir(parent.path, name, False)  # (and its metadata)
            self.listings.forget(path)
            self.table.detach(path)
            await self.attrs.dir_changed(parent)
            await self.overlay.keep_dir(parent.path)

    async def create(
        self, parent_ino: int, name: str, mode: int, flags: int, caller: Caller | None = None
    ) -> tuple[int, Attr]:
        self.ctx.check_writable()
        parent = self.overlay.dir_node(parent_ino)
        path = self.overlay.check_name(parent.path, name, is_dir=False)
        meta = self._new_meta(caller, parent, stat.S_IFREG | stat.S_IMODE(mode))
        async with self._meta:
            # The name and its would-be collisions only, not the whole directory: a create
            # must not cost more in a big directory.
            kind = await self.overlay.kind(path)
            listed = self.listings.cached(parent.path)
            if (
                flags & os.O_EXCL
                and kind is None
                and (listed is None or trio.current_time() - listed.fetched > self.ctx.timeout)
            ):
                # Exclusive: the name must not exist anywhere, so ask the store (another
                # mount may have made it since this one listed), at most once per attribute
                # timeout (cp -a creates each file so).
                await self.listings.get(parent.path, fresh=True)
                if await self.overlay.kind(path) is not None:
                    raise OpError(errno.EEXIST, f"{path}: exists")
            if kind == "dir":
                raise OpError(errno.EISDIR, f"{path}: is a directory")
            if kind is None:
                self.overlay.check_collision(path, await self.overlay.files_among(path))
                await self.attrs.dir_changed(parent)
            node = self.table.node_for(path, False)
            await self.content.truncate_to_empty(node)
            node.meta = meta
            privileged = caller is None or caller.root
            fh = self.content.add_new(node, flags, privileged=privileged)
            node.lookups += 1
            return fh, await self.overlay.attr_of(node)

    async def mknod(
        self, parent_ino: int, name: str, mode: int, rdev: int = 0, caller: Caller | None = None
    ) -> Attr:
        kind = stat.S_IFMT(mode)
        if kind in (0, stat.S_IFREG):
            fh, attr = await self.create(parent_ino, name, mode, os.O_WRONLY, caller)
            await self.content.release(fh)
            return attr
        if kind not in (stat.S_IFIFO, stat.S_IFSOCK, stat.S_IFCHR, stat.S_IFBLK):
            raise OpError(errno.EINVAL, f"mknod: unknown file type {kind:o}")
        device = rdev if kind in (stat.S_IFCHR, stat.S_IFBLK) else None
        return await self._put_entry(
            parent_ino,
            name,
            caller,
            mode,
            lambda path, meta: (self.ctx.pairs.put_special, path, meta),
            device,
        )

    async def symlink(
        self, parent_ino: int, name: str, target: str, caller: Caller | None = None
    ) -> Attr:
        if len(target.encode("utf-8", "surrogateescape")) >= PATH_MAX:
            raise OpError(errno.ENAMETOOLONG, f"{name}: link target longer than PATH_MAX")
        return await self._put_entry(
            parent_ino,
            name,
            caller,
            stat.S_IFLNK | 0o777,
            lambda path, meta: (self.ctx.pairs.put_link, path, target, meta),
        )

    async def _put_entry(
        self,
        parent_ino: int,
        name: str,
        caller: Caller | None,
        mode: int,
        call: Callable[[str, Meta], tuple[Any, ...]],
        rdev: int | None = None,
    ) -> Attr:
        """A symbolic link or special file: a small pair uploaded at once (no outbox)."""
        self.ctx.check_writable()
        parent = self.overlay.dir_node(parent_ino)
        path = self.overlay.check_name(parent.path, name, is_dir=False)
        meta = self._new_meta(caller, parent, mode, rdev).updated(mtime_ns=time.time_ns())
        async with self._meta:
            files, dirs = await self.overlay.children(parent.path)
            if name in dirs or name in files:
                raise OpError(errno.EEXIST, f"{path}: exists")
            self.overlay.check_collision(path, files)
            fn, *args = call(path, meta)
            entry = await self.ctx.store(fn, *args)
            self.listings.set_file(parent.path, name, entry)
            await self.attrs.dir_changed(parent)
            node = self.table.node_for(path, False)
            node.lookups += 1
            return await self.overlay.attr_of(node)

    async def readlink(self, ino: int) -> str:
        node = self.table.get(ino)
        view = None if node.is_dir or node.unlinked else await self.overlay.view(node.path)
        if view is None or view.remote is None or not view.meta.is_symlink:
            raise OpError(errno.EINVAL, f"{node.path}: not a symbolic link")
        remote = view.remote
        target = self._targets.get(remote.content.version_id)
        if target is None:
            target = await self.ctx.store_read(
                f"link {node.path}", self.ctx.pairs.read_link, remote
            )
            if len(self._targets) > 4096:
                self._targets.clear()
            self._targets[remote.content.version_id] = target
        return target

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
                if node.open_count and node.staging is None:
                    # Still open: its descriptors keep the content (ext4's open-unlinked
                    # inode), copied locally before the objects go.
                    await self.content.keep_content(node)
                node.dirty = False  # content written to a deleted name is never uploaded
                self.table.detach(path)
            # The stored version goes first, its newer pending uploads after (none may start
            # meanwhile): a crash in between leaves the newest close, never an older one.
            await settle_path(self.outbox, path)
            with self.outbox.hold(path):
                ds = await self.listings.get(parent.path)
                if name in ds.files:
                    try:
                        await self.ctx.store(self.ctx.pairs.delete, path)
                    except NotFound:
                        pass
                    self.listings.set_file(parent.path, name, None)
                await cancel_path(self.outbox, path)
            await self.attrs.dir_changed(parent)
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
                moved = self.table.by_path.get(new)
                if moved is not None:
                    self.attrs.renamed_dir(moved)
            await self.attrs.dir_changed(old_parent)
            if new_parent is not old_parent:
                await self.attrs.dir_changed(new_parent)
            await self.overlay.keep_dir(old_parent.path)

    async def _rename_file(self, old: str, new: str) -> None:
        old_dir, old_leaf = split(old)
        new_dir, new_leaf = split(new)
        node = self.table.by_path.get(old)
        if node is not None and node.dirty:
            # Newest content first into the outbox, so that it moves like any pending upload.
            await self.content.seal(node)
        replaced = self.table.by_path.get(new)
        if replaced is not None and not replaced.is_dir:
            if replaced.open_count and replaced.staging is None:
                await self.content.keep_content(replaced)  # as unlink: descriptors keep it
            async with replaced.lock:  # a seal in progress registers its entry first
                replaced.dirty = False  # never uploaded under the name it lost
                self.table.detach(new)
        await self.listings.get(old_dir)
        while True:
            entry = await self.moves.quiet(old, new)
            if entry is None or not self.listings.listed(old):
                break
            # A stored version of old exists too: its newest content goes up first, so
            # that the store rename moves it.
            await self.content.wait_upload(entry)
        # From here to the intent, no await: no upload of either name may start in between.
        moved: FileEntry | None = None
        if entry is not None:
            self.moves.move_pending(entry, new)
        else:
            moved = await self.moves.move_stored(old, new)
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
            ds = self.listings.cached(old_parent)
            meta = ds.dir_metas.get(old_leaf) if ds is not None else None
            node = self.table.by_path.get(old)
            meta = meta or (node.meta if node is not None else None)
            self.listings.forget(old)
            self.listings.forget(new)
            self.listings.set_dir(old_parent, old_leaf, False)
            self.listings.set_dir(new_parent, new_leaf, True)
            self.listings.set_dir_meta(new_parent, new_leaf, meta)
        self.table.move(old, new)

    def _rename_tree(self, old: str, new: str) -> None:
        """Blocking: move every pair and marker from ``old/`` to ``new/``.

        Each level's marker and directory object are copied before they are removed, and
        each file before its old objects are; every file resolves at all times.
        """
        levels: list[str] = []
        stack = [old]
        while stack:
            d = stack.pop()
            levels.append(d)
            listing = self.ctx.pairs.list_dir(d)
            target = new + d[len(old) :]
            # Marker and directory object (the metadata) are copied before anything goes.
            self.ctx.pairs.move_dir_objects(d, target)
            moves = [(listing.files[leaf], join(target, leaf)) for leaf in sorted(listing.files)]
            move_files(self.ctx.pairs, moves)
            stack.extend(join(d, leaf) for leaf in sorted(listing.dirs))
        for d in reversed(levels):
            try:
                self.ctx.pairs.rmdir(d)
            except B2CryptfsError as exc:
                log.warning("rename: %s could not be removed after moving its files: %s", d, exc)
