"""Shared state of the vfs: settings, the parts it holds (listings, versions, outbox,
inodes), the local overlay on listings, and how a path is seen (attributes, content).

Where a file's content comes from, newest first: the node's staging file (open for writing),
the newest pending outbox entry of its path (sealed, not yet uploaded), the remote pair in
the cached listing. Listings are the cached remote level overlaid with the first two.
"""

from __future__ import annotations

import errno
import functools
import inspect
import itertools
import logging
import math
import os
import stat
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio

from b2cryptfs.bucket.pairs import PairStore
from b2cryptfs.cache.cachedir import CacheDir
from b2cryptfs.cache.chunks import ChunkCache
from b2cryptfs.errors import (
    AlreadyExists,
    B2CryptfsError,
    InvalidName,
    NameTooLong,
)
from b2cryptfs.vfs.config import MountConfig
from b2cryptfs.vfs.fserror import OpError
from b2cryptfs.vfs.listings import ListingCache
from b2cryptfs.vfs.namespace import (
    DirState,
    InodeTable,
    Node,
    is_under,
    join,
    split,
)
from b2cryptfs.vfs.openfile import ChunkFetcher
from b2cryptfs.vfs.outbox import Outbox
from b2cryptfs.vfs.versions import Versions
from b2cryptfs.vfs.views import Attr, FileView, Handle

log = logging.getLogger(__name__)
T = TypeVar("T")

# Trio renamed to_thread.run_sync's "cancellable" to "abandon_on_cancel" (0.23).
_ABANDON: dict[str, bool] = (
    {"abandon_on_cancel": True}
    if "abandon_on_cancel" in inspect.signature(trio.to_thread.run_sync).parameters
    else {"cancellable": True}
)

BLKSIZE = 128 * 1024
_FILE_PERM = 0o644
_DIR_PERM = 0o755


class VfsState:
    """State and lookups shared by the operations (see :class:`b2cryptfs.vfs.core.Vfs`)."""

    def __init__(
        self,
        pairs: PairStore,
        config: MountConfig,
        cache: CacheDir,
        *,
        settle: float = 2.0,
        retry_base: float = 1.0,
    ) -> None:
        self.pairs = pairs
        self.config = config
        self.cache = cache
        self.uid = os.getuid() if config.uid is None else config.uid
        self.gid = os.getgid() if config.gid is None else config.gid
        umask = config.umask
        self.file_perm = _FILE_PERM if umask is None else 0o666 & ~umask
        self.dir_perm = _DIR_PERM if umask is None else 0o777 & ~umask
        self.timeout = max(0.0, min(1.0, config.dir_cache_time))
        self.table = InodeTable()
        self.listings = ListingCache(pairs, config.dir_cache_time, self._store)
        self._meta = trio.Lock()
        self._handles: dict[int, Handle] = {}
        self._dir_handles: dict[int, tuple[Node, list[tuple[str, Attr]] | None]] = {}
        self._fh_numbers = itertools.count(1)
        self.store_limiter = trio.CapacityLimiter(max(1, config.store_threads))
        self.cpu_limiter = trio.CapacityLimiter(max(1, min(4, os.cpu_count() or 1)))
        self.disk_cache = (
            ChunkCache(cache.chunks, config.cache_size) if config.cache_size > 0 else None
        )
        self.versions = Versions(
            pairs, self._store_read, self.cpu_limiter, self._warn_once, self._no_read_key
        )
        self.readers = self.versions.readers
        self.exact_sizes = self.versions.exact_sizes
        self.outbox = Outbox(
            cache.outbox,
            pairs,
            trio.CapacityLimiter(max(1, config.upload_workers)),
            workers=config.upload_workers,
            settle=settle,
            retry_base=retry_base,
            on_uploaded=lambda entry, result: self.listings.uploaded(entry.path, result),
        )
        self._fetcher: ChunkFetcher | None = None
        self.mount_time_ns = time.time_ns()
        self._warned: set[str] = set()

    @property
    def fetcher(self) -> ChunkFetcher:
        assert self._fetcher is not None, "Vfs.start() was not called"
        return self._fetcher

    async def _store(self, fn: Callable[..., T], *args: Any) -> T:
        return await trio.to_thread.run_sync(
            functools.partial(fn, *args), limiter=self.store_limiter
        )

    async def _store_read(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        """A store call that only reads, bounded by ``io_timeout`` (EIO past it).

        The worker thread cannot be stopped: it is abandoned and finishes on its own (its
        result unused), still holding its store slot until then.
        """
        call = functools.partial(fn, *args)
        return await self._bounded(
            what,
            lambda: trio.to_thread.run_sync(call, limiter=self.store_limiter, **_ABANDON),
        )

    async def _bounded(self, what: str, fn: Callable[[], Awaitable[T]]) -> T:
        """Await ``fn()``, or fail with EIO once ``io_timeout`` has passed."""
        timeout = self.config.io_timeout
        with trio.move_on_after(timeout if timeout > 0 else math.inf):
            return await fn()
        raise OpError(errno.EIO, f"{what}: the store did not answer within {timeout:g} s")

    def _free_cache_space(self) -> int:
        """Blocking: empty the on-disk read cache to make room on a full disk; bytes freed.

        Writes (staging and outbox files) share the cache directory's disk with the read
        cache, which is only an optimisation: it yields.
        """
        disk = self.disk_cache
        if disk is None:
            return 0
        freed = disk.evict_all()
        if freed:
            log.warning("cache disk full: dropped %d bytes of read cache to make room", freed)
        return freed

    async def _with_room(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Run ``fn``; if the cache disk is full, drop the read cache and try once more."""
        try:
            return await fn()
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            if not await trio.to_thread.run_sync(self._free_cache_space):
                raise
        return await fn()

    def _warn_once(self, key: str, message: str, *args: object) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message, *args)
        else:
            log.debug(message, *args)

    def _no_read_key(self, path: str) -> OpError:
        self._warn_once(
            "write-only",
            "%s: cannot read existing content: this mount has no private key (write-only); "
            "creating, replacing, renaming and deleting files still work",
            path,
        )
        return OpError(errno.EACCES, f"{path}: write-only mount")

    def _check_writable(self) -> None:
        if self.config.read_only:
            raise OpError(errno.EROFS, "read-only mount")
        if not self.pairs.can_write:
            self._warn_once("no-recipient", "this mount has no public key: it cannot write")
            raise OpError(errno.EACCES, "no public key to encrypt to")

    def _new_fh(self) -> int:
        return next(self._fh_numbers)

    def _overlay(self, dirpath: str) -> tuple[set[str], set[str]]:
        """Files and subdirectories of ``dirpath`` that exist only locally so far."""
        files = self.outbox.index.files(dirpath)
        dirs = self.outbox.index.dirs(dirpath)
        cut = len(dirpath) + 1 if dirpath else 0
        for path in [n.path for n in self.table.staged()]:  # open files: few
            if not is_under(path, dirpath):
                continue
            head, sep, _ = path[cut:].partition("/")
            (dirs if sep else files).add(head)
        return files, dirs

    def _view_sync(self, path: str, ds: DirState | None) -> FileView | None:
        remote = ds.files.get(split(path)[1]) if ds is not None else None
        node = self.table.by_path.get(path)
        if node is not None and not node.is_dir and node.staging is not None:
            st = node.staging
            return FileView(st.size, node.content_mtime_ns, True, remote, None, node)
        pending = self.outbox.latest(path)
        if pending is not None:
            return FileView(
                pending.plaintext_size, pending.mtime_ms * 1_000_000, True, remote, pending, None
            )
        if remote is None:
            return None
        size = remote.size
        if size is None:
            size = self.exact_sizes.get(remote.content.version_id)
        exact = size is not None
        return FileView(
            size if size is not None else remote.size_estimate,
            remote.mtime_ms * 1_000_000,
            exact,
            remote,
            None,
            None,
        )

    async def _view(self, path: str) -> FileView | None:
        if not path:
            return None
        return self._view_sync(path, await self.listings.get(split(path)[0]))

    async def _existing_kind(self, path: str) -> str:
        """Kind of a path that must exist: "dir" or "file", else ENOENT."""
        kind = await self._kind(path)
        if kind is None:
            raise OpError(errno.ENOENT)
        return kind

    async def _kind(self, path: str) -> str | None:
        """Kind of a path: "dir", "file" or None (a name both ways shows as a directory)."""
        if path == "":
            return "dir"
        parent, leaf = split(path)
        ds = await self.listings.get(parent)
        if (
            leaf in ds.dirs
            or self.outbox.index.has_dir(parent, leaf)
            or any(is_under(n.path, path) for n in self.table.staged())
        ):
            return "dir"
        if self._view_sync(path, ds) is not None:
            return "file"
        return None

    async def _children(self, dirpath: str) -> tuple[dict[str, FileView], set[str]]:
        ds = await self.listings.get(dirpath)
        ofiles, odirs = self._overlay(dirpath)
        dirs = set(ds.dirs) | odirs
        files: dict[str, FileView] = {}
        for leaf in set(ds.files) | ofiles:
            if leaf in dirs:
                self._warn_once(
                    f"both:{join(dirpath, leaf)}",
                    "%s is both a file and a directory in the store; showing the directory",
                    join(dirpath, leaf),
                )
                continue
            view = self._view_sync(join(dirpath, leaf), ds)
            if view is not None:
                files[leaf] = view
        return files, dirs

    def _dir_attr(self, node: Node) -> Attr:
        mtime = node.dir_mtime_ns or self.mount_time_ns
        return Attr(
            ino=node.ino,
            mode=stat.S_IFDIR | (node.perm if node.perm is not None else self.dir_perm),
            nlink=1,  # "unknown": tools must not count subdirectories from it
            uid=node.uid if node.uid is not None else self.uid,
            gid=node.gid if node.gid is not None else self.gid,
            size=4096,
            mtime_ns=mtime,
            ctime_ns=mtime,
            blocks=8,
            blksize=BLKSIZE,
            attr_timeout=self.timeout,
            entry_timeout=self.timeout,
        )

    def _file_attr(self, node: Node, view: FileView) -> Attr:
        node.last_size = view.size
        node.last_mtime_ns = view.mtime_ns
        timeout = self.timeout if view.exact else 0.0
        return Attr(
            ino=node.ino,
            mode=stat.S_IFREG | (node.perm if node.perm is not None else self.file_perm),
            nlink=0 if node.unlinked else 1,
            uid=node.uid if node.uid is not None else self.uid,
            gid=node.gid if node.gid is not None else self.gid,
            size=view.size,
            mtime_ns=view.mtime_ns,
            ctime_ns=view.mtime_ns,
            blocks=(view.size + 511) // 512,
            blksize=BLKSIZE,
            attr_timeout=timeout,
            entry_timeout=self.timeout,
        )

    def _stale_attr(self, node: Node) -> Attr:
        """Attributes of a node whose name is gone (still open, or not yet forgotten)."""
        if node.is_dir:
            return self._dir_attr(node)
        size = node.staging.size if node.staging is not None else node.last_size
        view = FileView(size, node.content_mtime_ns or node.last_mtime_ns, True, None, None, None)
        return self._file_attr(node, view)

    async def _exact(self, view: FileView) -> FileView:
        """Make a size exact by opening the pair (seed files carry no size), if we can."""
        if view.exact or view.remote is None or not self.pairs.can_read:
            return view
        try:
            rc = await self.versions.remote(view.remote)
        except B2CryptfsError as exc:
            self._warn_once(
                f"size:{view.remote.content.version_id}",
                "%s: cannot read its exact size (%s); showing an estimate",
                view.remote.path,
                exc,
            )
            return view
        view.size = rc.size
        view.exact = True
        return view

    async def _attr_of(self, node: Node) -> Attr:
        if node.is_dir:
            return self._dir_attr(node)
        if node.unlinked:
            return self._stale_attr(node)
        view = await self._view(node.path)
        if view is None:
            raise OpError(errno.ENOENT, f"{node.path}: no longer exists")
        return self._file_attr(node, await self._exact(view))

    def _dir_node(self, ino: int) -> Node:
        node = self.table.get(ino)
        if not node.is_dir:
            raise OpError(errno.ENOTDIR, f"{node.path}: not a directory")
        if node.unlinked:
            raise OpError(errno.ENOENT, f"{node.path}: directory was removed")
        return node

    async def _keep_dir(self, dirpath: str) -> None:
        """A directory left empty keeps existing in the store through a marker object."""
        if not dirpath or self.config.read_only:
            return
        ds = self.listings.cached(dirpath)
        if ds is None or ds.files or ds.dirs or ds.has_marker:
            return
        ofiles, odirs = self._overlay(dirpath)
        if ofiles or odirs:
            return
        try:
            await self._store(self.pairs.mkdir, dirpath)
        except AlreadyExists:
            pass
        except B2CryptfsError as exc:
            log.warning("%s: could not keep the empty directory (%s)", dirpath, exc)
            return
        self.listings.set_marker(dirpath)

    def _check_collision(self, path: str, files: dict[str, FileView], ignore: str = "") -> None:
        """Refuse ``P.key`` next to ``P`` and the reverse (they would share an object)."""
        for obj, other in self.pairs.collision_names(path):
            if other != ignore and split(other)[1] in files:
                log.warning(
                    "refusing to create %s: %s exists and the two would share the object %s",
                    path,
                    other,
                    obj,
                )
                raise OpError(errno.EEXIST, f"{path}: collides with {other}")

    def _check_name(self, parent: str, leaf: str, *, is_dir: bool) -> str:
        """A new name's path, or ENAMETOOLONG/EINVAL if the store would refuse it."""
        try:
            return self.pairs.check_new_name(parent, leaf, is_dir=is_dir)
        except NameTooLong as exc:
            raise OpError(errno.ENAMETOOLONG, str(exc)) from None
        except InvalidName as exc:
            raise OpError(errno.EINVAL, str(exc)) from None

    def _handle(self, fh: int) -> Handle:
        handle = self._handles.get(fh)
        if handle is None:
            raise OpError(errno.EBADF, f"unknown file handle {fh}")
        return handle
