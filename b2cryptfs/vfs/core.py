"""The vfs facade: a POSIX-like file tree over paired encrypted objects.

The FUSE layer calls this facade with inode numbers and handles; everything here is trio
code with blocking work (store calls, sealing, big decryptions) sent to worker threads
under capacity limiters. Errors are raised as :class:`b2cryptfs.errors.B2CryptfsError`
subclasses whose ``errno`` is what the caller gets. The facade holds the parts and delegates
to them: the shared context (vfs/context.py), inodes (vfs/namespace.py), listings and how a
path is seen (vfs/listings.py, vfs/overlay.py), open files and writes (vfs/content.py),
reads and read-ahead (vfs/reader.py), namespace changes (vfs/tree.py) and the outbox.
"""

from __future__ import annotations

import errno
import logging
import os
from typing import Any

import trio

from b2cryptfs.bucket.layout import NAME_MAX
from b2cryptfs.bucket.pairs import PairStore
from b2cryptfs.cache.cachedir import CacheDir
from b2cryptfs.cache.chunks import ChunkCache
from b2cryptfs.errors import B2CryptfsError
from b2cryptfs.formats import detect_format
from b2cryptfs.vfs.attrs import Attrs
from b2cryptfs.vfs.config import MountConfig
from b2cryptfs.vfs.content import Content
from b2cryptfs.vfs.context import BLKSIZE, VfsContext
from b2cryptfs.vfs.fserror import OpError
from b2cryptfs.vfs.listings import ListingCache
from b2cryptfs.vfs.metadata import Caller
from b2cryptfs.vfs.moves import MoveJournal
from b2cryptfs.vfs.namespace import ROOT_INO, InodeTable, Node, join, split
from b2cryptfs.vfs.openfile import ChunkFetcher
from b2cryptfs.vfs.outbox import Outbox
from b2cryptfs.vfs.overlay import Overlay
from b2cryptfs.vfs.parts import Shared
from b2cryptfs.vfs.reader import Reader
from b2cryptfs.vfs.tree import RENAME_EXCHANGE, RENAME_NOREPLACE, Tree
from b2cryptfs.vfs.versions import Versions
from b2cryptfs.vfs.views import Attr, FileView

log = logging.getLogger(__name__)

XATTR_FORMAT = "user.b2cryptfs.format"
XATTR_RECIPIENTS = "user.b2cryptfs.recipients"

__all__ = ["Attr", "Caller", "FileView", "Vfs", "RENAME_NOREPLACE", "RENAME_EXCHANGE"]


class Vfs:
    """The mount's file tree. Create, then ``await start(nursery)``; ``shutdown()`` at the end."""

    def __init__(
        self,
        pairs: PairStore,
        config: MountConfig,
        cache: CacheDir,
        *,
        settle: float = 2.0,
        retry_base: float = 1.0,
    ) -> None:
        ctx = self.ctx = VfsContext(pairs, config, cache)
        self.table = InodeTable()
        self.outbox = Outbox(
            cache.outbox,
            pairs,
            trio.CapacityLimiter(max(1, config.upload_workers)),
            workers=config.upload_workers,
            settle=settle,
            retry_base=retry_base,
            sync_close=config.sync_close or config.sync_upload,
        )
        # Finished uploads reach the listings through the listing cache's own look-ups.
        self.listings = ListingCache(
            pairs, config.dir_cache_time, ctx.store, uploads=self.outbox.take_uploaded
        )
        self.versions = Versions(
            pairs, ctx.store_read, ctx.cpu_limiter, ctx.warn_once, ctx.no_read_key
        )
        shared = Shared(ctx, self.table, self.listings, self.outbox)
        self.overlay = Overlay(shared, self.versions)
        self.reader = Reader(ctx, self.overlay, self.versions)
        self.content = Content(shared, self.overlay, self.reader)
        self.moves = MoveJournal(ctx, self.outbox)
        self.attrs = Attrs(shared, self.overlay, self.content)
        self.tree = Tree(shared, self.overlay, self.content, self.moves, self.attrs)
        self._dir_handles: dict[int, tuple[Node, list[tuple[str, Attr]] | None]] = {}
        self._uploading = False  # the upload workers run (after the rename recovery)

    @property
    def config(self) -> MountConfig:
        return self.ctx.config

    @property
    def pairs(self) -> PairStore:
        return self.ctx.pairs

    @property
    def disk_cache(self) -> ChunkCache | None:
        return self.ctx.disk_cache

    @property
    def timeout(self) -> float:
        return self.ctx.timeout

    @property
    def fetcher(self) -> ChunkFetcher:
        return self.reader.fetcher

    async def start(self, nursery: trio.Nursery) -> None:
        found = await trio.to_thread.run_sync(self.outbox.scan)
        self.reader.start(nursery)
        if not self.ctx.config.read_only:
            nursery.start_soon(self.attrs.dir_times.run)
        if self.ctx.config.read_only:
            # A read-only mount writes nothing to the store, not even earlier leftovers.
            if found:
                log.warning(
                    "%d upload(s) left by an earlier mount wait for a read-write mount",
                    len(found),
                )
            return
        await nursery.start(self._uploads)

    async def _uploads(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        # Renames a crash interrupted are finished before any upload: an upload must never
        # land before (and be undone by) the rename it follows.
        moves = await trio.to_thread.run_sync(self.moves.load)
        try:
            await self.moves.recover(moves)
        except B2CryptfsError as exc:
            log.warning("outbox: interrupted renames not finished yet (%s); retrying", exc)
            task_status.started()
            await self.moves.recover_forever()
        else:
            self._uploading = True  # before start() returns: shutdown may follow at once
            task_status.started()
        self._uploading = True
        await self.outbox.run()

    async def shutdown(self) -> int:
        """Seal whatever is still being written, then drain the outbox; at the end (even a
        cancelled drain's) make what is left in it durable and mark the stop clean.

        Returns how many uploads are left on disk for the next mount.
        """
        try:
            return await self._seal_and_drain()
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(self.outbox.close)

    async def _seal_and_drain(self) -> int:
        for node in list(self.table.staged()):
            if node.dirty:
                try:
                    await self.content.seal(node)
                except Exception as exc:  # noqa: BLE001 - one file must not stop the rest
                    log.error("%s: could not be saved at unmount: %s", node.path, exc)
        if self.ctx.config.read_only:
            return len(self.outbox)
        if not self._uploading:
            # Interrupted renames are still unfinished (the store is unreachable): no upload
            # may start before them, so nothing can drain; all of it waits on disk.
            log.warning("%d upload(s) wait for the next mount", len(self.outbox))
            return len(self.outbox)
        # Directory mtimes not stored yet: a clean unmount keeps them all.
        if await self.attrs.dir_times.flush():
            log.warning("some directory mtimes could not be stored (see above)")
        return await self.outbox.drain()

    async def lookup(self, parent_ino: int, name: str) -> Attr:
        parent = self.overlay.dir_node(parent_ino)
        if name == ".":
            node = parent
        elif name == "..":
            node = self.table.node_for(split(parent.path)[0], True) if parent.path else parent
        else:
            path = join(parent.path, name)
            kind = await self.overlay.existing_kind(path)
            node = self.table.node_for(path, kind == "dir")
        attr = await self.overlay.attr_of(node)
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
        return await self.overlay.attr_of(self.table.get(ino))

    async def opendir(self, ino: int) -> int:
        node = self.overlay.dir_node(ino)
        fh = self.content.new_fh()
        self._dir_handles[fh] = (node, None)
        return fh

    async def readdir(self, fh: int, start: int) -> list[tuple[str, Attr]]:
        """Entries from index ``start`` on; the listing is taken once per open directory."""
        node, entries = self._dir_handles[fh]
        if entries is None or start == 0:
            files, dirs = await self.overlay.children(node.path)
            entries = []
            for leaf in sorted(dirs):
                child = self.table.node_for(join(node.path, leaf), True)
                entries.append((leaf, self.overlay.dir_attr(child)))
            for leaf in sorted(files):
                child = self.table.node_for(join(node.path, leaf), False)
                entries.append((leaf, self.overlay.file_attr(child, files[leaf])))
            self._dir_handles[fh] = (node, entries)
        return entries[start:]

    async def releasedir(self, fh: int) -> None:
        self._dir_handles.pop(fh, None)

    async def fsyncdir(self, fh: int) -> None:
        """Store the directory's pending mtime now (vfs/dirtimes.py); EIO if that fails."""
        node, _ = self._dir_handles[fh]
        if await self.attrs.dir_times.flush([node]):
            raise OpError(errno.EIO, f"{node.path or '/'}: its mtime could not be stored")

    # --- file content (vfs/content.py) ------------------------------------------------

    async def open(self, ino: int, flags: int, caller: Caller | None = None) -> tuple[int, bool]:
        """Open a file; returns (handle, keep the kernel's page cache)."""
        return await self.content.open(ino, flags, privileged=caller is None or caller.root)

    def direct_io(self, fh: int) -> bool:
        return self.content.direct_io(fh)

    async def read(self, fh: int, offset: int, size: int) -> bytes | memoryview:
        return await self.content.read(fh, offset, size)

    async def write(self, fh: int, offset: int, data: bytes) -> int:
        return await self.content.write(fh, offset, data)

    async def flush(self, fh: int) -> None:
        await self.content.flush(fh)

    async def fsync(self, fh: int) -> None:
        await self.content.fsync(fh)

    async def release(self, fh: int) -> None:
        await self.content.release(fh)

    async def setattr(self, ino: int, **changes: Any) -> Attr:
        """Change size, times, mode or owner (keyword arguments of :meth:`Attrs.setattr`)."""
        return await self.attrs.setattr(ino, **changes)

    # --- namespace (vfs/tree.py) ----------------------------------------------------

    async def mkdir(
        self, parent_ino: int, name: str, mode: int, caller: Caller | None = None
    ) -> Attr:
        return await self.tree.mkdir(parent_ino, name, mode, caller)

    async def rmdir(self, parent_ino: int, name: str) -> None:
        await self.tree.rmdir(parent_ino, name)

    async def create(
        self, parent_ino: int, name: str, mode: int, flags: int, caller: Caller | None = None
    ) -> tuple[int, Attr]:
        return await self.tree.create(parent_ino, name, mode, flags, caller)

    async def mknod(
        self, parent_ino: int, name: str, mode: int, rdev: int = 0, caller: Caller | None = None
    ) -> Attr:
        return await self.tree.mknod(parent_ino, name, mode, rdev, caller)

    async def symlink(
        self, parent_ino: int, name: str, target: str, caller: Caller | None = None
    ) -> Attr:
        return await self.tree.symlink(parent_ino, name, target, caller)

    async def readlink(self, ino: int) -> str:
        return await self.tree.readlink(ino)

    async def unlink(self, parent_ino: int, name: str) -> None:
        await self.tree.unlink(parent_ino, name)

    async def rename(
        self, old_parent_ino: int, old_name: str, new_parent_ino: int, new_name: str, flags: int
    ) -> None:
        await self.tree.rename(old_parent_ino, old_name, new_parent_ino, new_name, flags)

    # --- extended attributes, statfs ------------------------------------------------

    async def listxattr(self, ino: int) -> list[str]:
        node = self.table.get(ino)
        if node.is_dir or node.unlinked:
            return []
        return [XATTR_FORMAT, XATTR_RECIPIENTS]

    async def getxattr(self, ino: int, name: str) -> bytes:
        node = self.table.get(ino)
        if node.is_dir or node.unlinked or name not in (XATTR_FORMAT, XATTR_RECIPIENTS):
            raise OpError(errno.ENODATA)
        view = await self.overlay.view(node.path)
        if view is None:
            raise OpError(errno.ENOENT)
        if view.staged is not None or (view.pending is None and view.remote is None):
            if name == XATTR_FORMAT:
                return self.ctx.pairs.format.encode()
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
            key_object = await self.ctx.store_read(
                f"key object of {node.path}", self.ctx.pairs.read_key_object, remote.key
            )
            fmt = remote.format or detect_format(key_object[:64])
            if name == XATTR_FORMAT:
                return fmt.encode()
        lines = self.ctx.pairs.codec_for(fmt).describe_recipients(key_object)
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
            disk = os.statvfs(self.ctx.cache.path)
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
            "f_namemax": NAME_MAX,  # bytes per name, long names included (bucket/layout.py)
        }

    def root_attr(self) -> Attr:
        return self.overlay.dir_attr(self.table.get(ROOT_INO))
