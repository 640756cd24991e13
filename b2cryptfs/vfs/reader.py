"""The read path: which content an open file reads (pinned at open), and read-ahead.

A handle reads one version of a file from open to close: an empty file, a sealed outbox
entry still waiting for upload (local), or a stored pair through the chunk fetcher and the
ciphertext cache (remote). Read-ahead is decided here alone; the fetcher only fetches the
chunks it is told to.
"""

from __future__ import annotations

import errno
from collections.abc import Callable

import trio

from b2cryptfs.errors import IntegrityError, NotFound
from b2cryptfs.vfs.context import VfsContext
from b2cryptfs.vfs.dirahead import DirAhead
from b2cryptfs.vfs.fserror import OpError
from b2cryptfs.vfs.localcontent import LocalContent
from b2cryptfs.vfs.namespace import split
from b2cryptfs.vfs.openfile import AHEAD_GROUP_BYTES, MAX_READAHEAD_BYTES, ChunkFetcher
from b2cryptfs.vfs.outboxfiles import UPLOADING
from b2cryptfs.vfs.overlay import Overlay
from b2cryptfs.vfs.versions import Versions
from b2cryptfs.vfs.views import FileView, Handle

# A read within this many chunks of where the last one ended still counts as sequential.
_SEQUENTIAL_SLACK_CHUNKS = 4
_FIRST_WINDOW_CHUNKS = 32
# How often an open follows a file that another mount keeps replacing.
_REPINS = 3
# A file overwritten again and again may lose the pending version an open looked at before
# it is opened: the open looks again this many times (each look finds a newer one).
_PIN_TRIES = 8


def readahead_window(previous: int, sequential: bool, chunk_size: int) -> int:
    """Chunks to keep fetched ahead of a reader: grows while reads stay sequential."""
    if not sequential:
        return 0
    most = max(1, MAX_READAHEAD_BYTES // chunk_size)
    return min(most, max(_FIRST_WINDOW_CHUNKS, previous * 2))


def topup(last: int, upto: int, window: int, unit: int) -> tuple[int, int] | None:
    """After a read ending in chunk ``last``, with chunks up to ``upto`` (excluded) fetched
    or asked for: the chunks ``(first, count)`` to fetch ahead now, or None.

    In whole read-ahead requests of ``unit`` chunks: no small request for a remainder. A
    small window is topped up once half of it is read. A window of several requests is kept
    full one request at a time, as soon as a whole one is missing: each then goes out as far
    ahead as the window reaches (topped up by halves, the nearest part of a top-up was
    needed after half a window of reads: sooner than a request takes at 20 ms RTT).
    """
    first = max(last + 1, upto)
    lacking = last + window + 1 - first
    if window >= 2 * unit:
        return (first, lacking // unit * unit) if lacking >= unit else None
    if upto - last > window // 2:
        return None
    return first, -(-lacking // unit) * unit


class Reader:
    """Reads of committed content (not of staging files) and the read-ahead policy."""

    def __init__(self, ctx: VfsContext, overlay: Overlay, versions: Versions) -> None:
        self.ctx = ctx
        self.overlay = overlay
        self.versions = versions
        self._fetcher: ChunkFetcher | None = None
        self.ahead = DirAhead(overlay.listings, versions, overlay.outbox.latest)

    def start(self, nursery: trio.Nursery) -> None:
        self._fetcher = ChunkFetcher(self.ctx.disk_cache, self.ctx.store_limiter, nursery)
        self.ahead.start(nursery)

    @property
    def fetcher(self) -> ChunkFetcher:
        assert self._fetcher is not None, "Vfs.start() was not called"
        return self._fetcher

    async def pin(self, handle: Handle, view: FileView) -> str | None:
        """Attach the content a read-only view of the file comes from; its version."""
        if view.exact and view.size == 0:
            handle.empty = True
            return view.version
        local, view = await self._local_or_settled(handle.node.path, view)
        if local is not None:
            handle.local = local
            return local.version
        if view.pending is not None or view.remote is None:
            raise OpError(errno.EIO, f"{handle.node.path}: its pending upload vanished")
        assert view.remote is not None
        for _ in range(_REPINS):
            try:
                handle.remote = await self.versions.remote(view.remote)
                break
            except NotFound:
                # Replaced since it was listed (by another mount; a directory store keeps
                # no old versions): list again and pin the version that replaced it.
                path = handle.node.path
                await self.overlay.listings.get(split(path)[0], fresh=True)
                fresh = await self.overlay.view(path)
                if fresh is None:
                    raise OpError(errno.ENOENT, f"{path}: removed meanwhile") from None
                if fresh.pending is not None or (fresh.exact and fresh.size == 0):
                    return await self.pin(handle, fresh)
                if fresh.remote is None:
                    raise OpError(errno.EIO, f"{path}: its content vanished") from None
                view = fresh
        else:
            raise OpError(errno.EIO, f"{handle.node.path}: replaced again at every open")
        self.ahead.opened(handle.node.path)
        return view.remote.content.version_id

    async def _local_or_settled(
        self, path: str, view: FileView
    ) -> tuple[LocalContent | None, FileView]:
        """The pending upload a view names, opened; or, if it was uploaded or replaced
        meanwhile, None and the view that followed (its stored version, or a newer pending
        one, tried again)."""
        for _ in range(_PIN_TRIES):
            entry = view.pending
            if entry is None:
                break
            local = await self.versions.local(entry)
            if local is not None:
                return local, view
            if entry.state == UPLOADING:
                # Its upload removes its files in the upload's thread, before the queue hears
                # the outcome: until then the view still names it. Wait for that outcome.
                await entry.attempted.wait()
            view = await self.overlay.view(path) or view
        return None, view

    def must_bypass_cache(self, handle: Handle, others: list[Handle]) -> bool:
        """Whether a handle just pinned must read past the kernel's page cache.

        The kernel cuts reads at the size it last got in attributes and shares one page
        cache between the handles of an inode: a version of another size than the kernel
        believes (another mount replaced the file since) would read as a prefix, and two
        versions open at once would mix in the cache. Such a handle gets direct_io.
        """
        node = handle.node
        if handle.empty:
            size = 0
        elif handle.local is not None:
            size = handle.local.reader.plaintext_size
        else:
            assert handle.remote is not None
            size = handle.remote.size
        if node.kernel_size is not None and size != node.kernel_size:
            return True
        return any(not h.direct and h.version not in (None, handle.version) for h in others)

    async def read(self, handle: Handle, offset: int, size: int) -> bytes | memoryview:
        """Read the handle's pinned content (pinning it first if it has none yet)."""
        node = handle.node
        if handle.local is None and handle.remote is None and not handle.empty:
            view = await self.overlay.view(node.path)
            if view is None:
                raise OpError(errno.ENOENT)
            await self.pin(handle, view)
        if handle.empty:
            return b""
        if handle.local is not None:
            return await trio.to_thread.run_sync(
                handle.local.read, offset, size, limiter=self.ctx.cpu_limiter
            )
        assert handle.remote is not None
        rc = handle.remote
        ready = self.fetcher.read_ready(rc, offset, size)
        if ready is not None:
            self._read_ahead(handle, offset, len(ready))
            return ready
        # Before waiting: the read-ahead goes out with this read's own request, not one
        # round trip after it (a sequential reader that waits would wait at every step).
        self._read_ahead(handle, offset, max(0, min(size, rc.size - offset)))
        try:
            data = await self.ctx.bounded(
                f"read of {node.path}", lambda: self.fetcher.read(rc, offset, size)
            )
        except IntegrityError as exc:
            # Name the damaged object in the log line (the codec knows only chunk numbers).
            raise type(exc)(f"{rc.entry.content.name}: {exc}") from None
        except NotFound as exc:
            # The pinned version was replaced while open (a directory store keeps no old
            # versions): an error, never bytes of another version; not ENOENT, the name is
            # still there.
            raise OpError(errno.EIO, f"{node.path}: {exc}") from None
        return data

    def _read_ahead(self, handle: Handle, offset: int, got: int) -> None:
        """After a read of ``got`` bytes at ``offset``: widen, keep or drop the window."""
        rc = handle.remote
        assert rc is not None
        cs = rc.reader.chunk_size
        sequential = abs(offset - handle.next_off) <= _SEQUENTIAL_SLACK_CHUNKS * cs
        handle.readahead = readahead_window(handle.readahead, sequential, cs)
        handle.next_off = offset + got
        if not handle.readahead:
            handle.ahead_upto = 0
        elif got:
            last = (offset + got - 1) // cs
            unit = max(1, AHEAD_GROUP_BYTES // cs)
            top = topup(last, handle.ahead_upto, handle.readahead, unit)
            if top is not None:
                first, step = top
                self.fetcher.prefetch(rc, first, first + step - 1, handle.readahead)
                handle.ahead_upto = first + step

    async def blocking_reader(self, view: FileView) -> tuple[Callable[[int, int], bytes], int]:
        """A blocking read function over a view's committed content, and its size."""
        if view.pending is not None:
            local, view = await self._local_or_settled(view.pending.path, view)
            if local is not None:
                return local.read, local.reader.plaintext_size
        if view.remote is None:
            raise OpError(errno.EIO, "the file's content vanished")
        rc = await self.versions.remote(view.remote)
        return rc.reader.read, rc.size
