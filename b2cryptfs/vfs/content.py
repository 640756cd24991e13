"""File content of the vfs: open, read, write, truncate, set mtime, seal and upload.

Reads go to the reader (vfs/reader.py) unless the file is being written; writes go to an
encrypted staging file, sealed into the outbox (``Outbox.put``) at the last close (or fsync)
and uploaded in the background.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import time

import trio

from b2cryptfs.bucket.meta import UNKNOWN, Meta
from b2cryptfs.errors import B2CryptfsError
from b2cryptfs.vfs.agestaging import AgeStaging, seal_in_place
from b2cryptfs.vfs.fserror import OpError
from b2cryptfs.vfs.metadata import killed_privs
from b2cryptfs.vfs.namespace import Node
from b2cryptfs.vfs.outbox import ContentFile, OutboxEntry, WrittenContent
from b2cryptfs.vfs.overlay import Overlay
from b2cryptfs.vfs.parts import Part, Shared
from b2cryptfs.vfs.reader import Reader
from b2cryptfs.vfs.staging import Staging
from b2cryptfs.vfs.views import Handle

log = logging.getLogger(__name__)

# Content up to this size is sealed in the trio thread (without durable syncs).
INLINE_SEAL = 64 * 1024


class Content(Part):
    """Open files: their handles, reads (through the reader), writes into staging files,
    and sealing what was written into the outbox (``Outbox.put``) for upload."""

    def __init__(self, shared: Shared, overlay: Overlay, reader: Reader) -> None:
        super().__init__(shared)
        self.overlay = overlay
        self.reader = reader
        self.handles: dict[int, Handle] = {}
        self._fh_numbers = itertools.count(1)

    def new_fh(self) -> int:
        """A fresh handle number (file and directory handles share the numbering)."""
        return next(self._fh_numbers)

    def handle(self, fh: int) -> Handle:
        handle = self.handles.get(fh)
        if handle is None:
            raise OpError(errno.EBADF, f"unknown file handle {fh}")
        return handle

    def add_new(self, node: Node, flags: int, *, privileged: bool = True) -> int:
        """A handle on a file just created (open for writing, maybe reading)."""
        readable = (flags & os.O_ACCMODE) != os.O_WRONLY
        handle = Handle(self.new_fh(), node, readable=readable, writable=True)
        handle.privileged = privileged
        node.open_count += 1
        self.handles[handle.fh] = handle
        self.outbox.writing(node.path, True)  # its seals wait the settle delay meanwhile
        node.cache_version = None
        return handle.fh

    def _new_staging(self) -> Staging:
        # In the age format the staging file is laid out as the payload it is sealed into.
        if self.ctx.pairs.format == "age":
            return AgeStaging(self.ctx.cache.staging)
        return Staging(self.ctx.cache.staging)

    async def truncate_to_empty(self, node: Node, meta: Meta | None = None) -> None:
        """Start the node's content over, empty and dirty (O_TRUNC, or a new file); ``meta``:
        what the file had (its staging content is sealed with it)."""
        async with node.lock:
            if node.staging is None:
                node.meta = meta
                self.table.set_staging(node, self._new_staging())
            else:
                node.staging.truncate(0)
            node.dirty = True
            node.content_mtime_ns = time.time_ns()

    async def open(self, ino: int, flags: int, *, privileged: bool = True) -> tuple[int, bool]:
        """Open a file; returns (handle, keep the kernel's page cache). Writes through a
        handle opened by a non-root process clear setuid/setgid."""
        node = self.table.get(ino)
        log.debug("open %s flags=%#o", node.path, flags)
        if node.is_dir:
            raise OpError(errno.EISDIR)
        acc = flags & os.O_ACCMODE
        readable = acc in (os.O_RDONLY, os.O_RDWR)
        writable = acc in (os.O_WRONLY, os.O_RDWR)
        if writable:
            self.ctx.check_writable()
        view = None if node.unlinked else await self.overlay.view(node.path)
        if view is None and node.staging is None:
            raise OpError(errno.ENOENT, f"{node.path}: no longer exists")
        handle = Handle(self.new_fh(), node, readable, writable)
        handle.privileged = privileged
        if writable and flags & os.O_TRUNC:
            await self.truncate_to_empty(node, view.meta if view is not None else node.meta)
        version: str | None = None
        if readable and node.staging is None:
            assert view is not None
            version = handle.version = await self.reader.pin(handle, view)
            others = [h for h in self.handles.values() if h.node is node]
            handle.direct = self.reader.must_bypass_cache(handle, others)
        node.open_count += 1
        self.handles[handle.fh] = handle
        if writable:
            self.outbox.writing(node.path, True)
        keep = version is not None and node.cache_version == version
        if not handle.direct:
            node.cache_version = version
        return handle.fh, keep

    def direct_io(self, fh: int) -> bool:
        """Must the kernel send this handle's reads here, past its page cache?"""
        return self.handle(fh).direct

    async def read(self, fh: int, offset: int, size: int) -> bytes | memoryview:
        handle = self.handle(fh)
        node = handle.node
        if not handle.readable:
            raise OpError(errno.EBADF)
        if node.staging is not None:
            async with node.lock:
                if node.staging is not None:
                    return node.staging.read(offset, size)
        return await self.reader.read(handle, offset, size)

    async def _ensure_staging(self, node: Node, *, need_content: bool) -> Staging:
        """The node's staging file, filled with the current content if needed (node locked)."""
        if node.staging is not None:
            return node.staging
        view = None if node.unlinked else await self.overlay.view(node.path)

        async def fill() -> Staging:
            staging = self._new_staging()
            try:
                if need_content and view is not None and not (view.exact and view.size == 0):
                    read, size = await self.reader.blocking_reader(view)
                    await trio.to_thread.run_sync(
                        staging.fill_from, read, size, limiter=self.ctx.store_limiter
                    )
            except BaseException:
                staging.close()
                raise
            return staging

        staging = await self.ctx.with_room(fill)
        self.table.set_staging(node, staging)
        node.content_mtime_ns = view.mtime_ns if view is not None else time.time_ns()
        if view is not None:
            node.meta = view.meta
        return staging

    async def keep_content(self, node: Node) -> None:
        """Copy a file's content into a staging file (it is being unlinked while open)."""
        async with node.lock:
            await self._ensure_staging(node, need_content=True)

    async def write(self, fh: int, offset: int, data: bytes) -> int:
        handle = self.handle(fh)
        if not handle.writable:
            raise OpError(errno.EBADF)
        node = handle.node
        async with node.lock:
            staging = await self._ensure_staging(node, need_content=True)

            async def put() -> int:
                return staging.write(offset, data)

            # All or nothing: a full disk refuses the write before anything changes.
            await self.ctx.with_room(put)
            node.dirty = True
            node.content_mtime_ns = time.time_ns()
            meta = node.meta
            if not handle.privileged and meta is not None and meta.mode is not None:
                node.meta = meta.updated(mode=killed_privs(meta.mode))
        return len(data)

    async def seal(self, node: Node, *, durable: bool = False) -> OutboxEntry | None:
        """Seal a node's dirty staging content into a new outbox entry (on the local disk
        before this returns if ``durable``: fsync)."""
        async with node.lock:
            staging = node.staging
            if not node.dirty or staging is None:
                return None
            if node.unlinked:
                node.dirty = False
                return None
            path = node.path
            mtime_ms = node.content_mtime_ns // 1_000_000
            pairs = self.ctx.pairs
            seen = (node.meta, node.content_mtime_ns)
            meta = (node.meta or UNKNOWN).updated(mtime_ns=node.content_mtime_ns)

            def write_content(out: ContentFile) -> WrittenContent:
                sealed = seal_in_place(pairs, staging, out)
                if sealed is None:
                    sealed = pairs.seal(staging.stream(), out)  # type: ignore[arg-type]
                return WrittenContent(
                    sealed.key_object, sealed.info, pairs.format, sealed.plaintext_size, meta
                )

            work = self.outbox.put(path, mtime_ms, write_content, durable=durable)

            async def seal() -> OutboxEntry:
                if staging.size <= INLINE_SEAL and not (durable or self.outbox.sync_close):
                    # Less work than handing it to a thread and back (no disk sync: the
                    # committer's; the files were made ahead of time: vfs/outboxspares.py).
                    return work()
                return await trio.to_thread.run_sync(work, limiter=self.ctx.cpu_limiter)

            try:
                entry = await self.ctx.with_room(seal)
            except OSError as exc:
                log.error("%s: cannot seal it into the outbox: %s", path, exc.strerror or exc)
                raise OpError(exc.errno or errno.EIO, str(exc)) from None
            node.dirty = False
            if node.unlinked:
                # Unlinked while it was being sealed (unlink does not wait for the seal, and
                # FUSE sends the release of a closed file after close() returned): the entry
                # must not bring the name back.
                self.outbox.discard(entry)
                return None
            if (node.meta, node.content_mtime_ns) != seen:  # a setattr meanwhile
                latest = (node.meta or UNKNOWN).updated(mtime_ns=node.content_mtime_ns)
                try:
                    self.outbox.set_meta(entry, latest)
                except OSError as exc:
                    log.error("%s: its new mode/owner/times are lost: %s", path, exc)
            self.outbox.register(entry, settle=not self.ctx.config.sync_upload)
            log.debug("%s: sealed %d bytes for upload", path, entry.plaintext_size)
            return entry

    async def wait_upload(self, entry: OutboxEntry) -> None:
        try:
            await self.outbox.wait(entry, max_attempts=3)
        except B2CryptfsError as exc:
            log.error("%s: upload failed: %s", entry.path, exc)
            raise OpError(errno.EIO, str(exc)) from None
        except Exception as exc:  # noqa: BLE001 - reported as EIO, logged by the outbox
            raise OpError(errno.EIO, str(exc)) from None

    async def flush(self, fh: int) -> None:
        # close(2): once it returns, what was written is in the outbox (a kill -9 cannot lose
        # it; a power loss within about a second can, unless sync_close: vfs/outboxcommit.py).
        handle = self.handle(fh)
        if not handle.writable:
            return
        node = handle.node
        if node.dirty and node.staging is not None and node.staging.size == 0:
            # Shells open (O_TRUNC), dup and close a descriptor before writing to it: an
            # empty new file is sealed at the last close instead of at each of those.
            if self.outbox.latest(node.path) is None and not self.listings.listed(node.path):
                return
        entry = await self.seal(node)
        if self.ctx.config.sync_upload:
            # close itself reports whether the upload worked.
            entry = entry or self.outbox.latest(node.path)
            if entry is not None:
                await self.wait_upload(entry)

    async def fsync(self, fh: int) -> None:
        handle = self.handle(fh)
        node = handle.node
        # Durable at once: should the upload fail, the entry must outlive a power loss.
        entry = await self.seal(node, durable=True) if handle.writable else None
        entry = entry or (None if node.unlinked else self.outbox.latest(node.path))
        if entry is not None:
            await self.wait_upload(entry)

    async def release(self, fh: int) -> None:
        handle = self.handles.pop(fh, None)
        if handle is None:
            return
        node = handle.node
        last = node.open_count == 1
        try:
            # A truncate(2) while only readers had it open is sealed by the last close.
            if node.dirty and (handle.writable or last):
                await self.seal(node)
        except B2CryptfsError as exc:
            log.error(
                "%s: not saved at close: %s (its content stays staged; the next close, fsync "
                "or the unmount tries again)",
                node.path,
                exc,
            )
        finally:
            node.open_count -= 1
            if handle.writable and not any(
                h.node is node and h.writable for h in self.handles.values()
            ):
                self.outbox.writing(node.path, False)  # the last writer: uploads may go
            if handle.local is not None:
                handle.local.close()
            if node.open_count == 0 and node.staging is not None and not node.dirty:
                async with node.lock:
                    if node.open_count == 0 and node.staging is not None and not node.dirty:
                        self.table.set_staging(node, None)
            self.table.release(node)

    async def truncate(self, node: Node, size: int) -> bool:
        """truncate(2)/ftruncate(2); False when nothing changed (a closed file already of
        that size: no copy, no upload)."""
        self.ctx.check_writable()
        if size < 0:
            raise OpError(errno.EINVAL)
        if node.staging is None and not node.unlinked:
            view = await self.overlay.view(node.path)
            if view is not None and view.exact and view.size == size:
                return False
        async with node.lock:
            staging = await self._ensure_staging(node, need_content=size > 0)
            staging.truncate(size)
            node.dirty = True
            node.content_mtime_ns = time.time_ns()
        if node.open_count == 0:
            # truncate(2) of a closed file: upload it now, as a close would.
            await self.seal(node)
            async with node.lock:
                if node.open_count == 0 and node.staging is not None and not node.dirty:
                    self.table.set_staging(node, None)
        return True
