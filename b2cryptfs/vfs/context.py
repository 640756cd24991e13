"""The context every part of the vfs shares: settings, the pair store, the cache directory,
the capacity limiters and the store-call helpers (worker threads, ``io_timeout``).
"""

from __future__ import annotations

import errno
import functools
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio

from b2cryptfs.bucket.pairs import PairStore
from b2cryptfs.cache.cachedir import CacheDir
from b2cryptfs.cache.chunks import ChunkCache
from b2cryptfs.vfs.config import MountConfig
from b2cryptfs.vfs.fserror import OpError
from b2cryptfs.vfs.threads import ABANDON_ON_CANCEL

log = logging.getLogger("b2cryptfs.vfs.state")
T = TypeVar("T")


BLKSIZE = 128 * 1024
_FILE_PERM = 0o644
_DIR_PERM = 0o755


class VfsContext:
    """Settings and shared helpers, handed to each part of the vfs."""

    def __init__(self, pairs: PairStore, config: MountConfig, cache: CacheDir) -> None:
        self.pairs = pairs
        self.config = config
        self.cache = cache
        self.uid = os.getuid() if config.uid is None else config.uid
        self.gid = os.getgid() if config.gid is None else config.gid
        umask = config.umask
        self.file_perm = _FILE_PERM if umask is None else 0o666 & ~umask
        self.dir_perm = _DIR_PERM if umask is None else 0o777 & ~umask
        self.timeout = max(0.0, min(1.0, config.dir_cache_time))
        self.store_limiter = trio.CapacityLimiter(max(1, config.store_threads))
        self.cpu_limiter = trio.CapacityLimiter(max(1, min(4, os.cpu_count() or 1)))
        self.disk_cache = (
            ChunkCache(cache.chunks, config.cache_size) if config.cache_size > 0 else None
        )
        self.mount_time_ns = time.time_ns()
        self._warned: set[str] = set()

    async def store(self, fn: Callable[..., T], *args: Any) -> T:
        return await trio.to_thread.run_sync(
            functools.partial(fn, *args), limiter=self.store_limiter
        )

    async def store_read(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        """A store call that only reads, bounded by ``io_timeout`` (EIO past it).

        The worker thread cannot be stopped: it is abandoned and finishes on its own (its
        result unused), still holding its store slot until then.
        """
        call = functools.partial(fn, *args)
        return await self.bounded(
            what,
            lambda: trio.to_thread.run_sync(call, limiter=self.store_limiter, **ABANDON_ON_CANCEL),
        )

    async def bounded(self, what: str, fn: Callable[[], Awaitable[T]]) -> T:
        """Await ``fn()``, or fail with EIO once ``io_timeout`` has passed."""
        timeout = self.config.io_timeout
        with trio.move_on_after(timeout if timeout > 0 else math.inf):
            return await fn()
        raise OpError(errno.EIO, f"{what}: the store did not answer within {timeout:g} s")

    def free_cache_space(self) -> int:
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

    async def with_room(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Run ``fn``; if the cache disk is full, drop the read cache and try once more."""
        try:
            return await fn()
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            if not await trio.to_thread.run_sync(self.free_cache_space):
                raise
        return await fn()

    def warn_once(self, key: str, message: str, *args: object) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message, *args)
        else:
            log.debug(message, *args)

    def no_read_key(self, path: str) -> OpError:
        self.warn_once(
            "write-only",
            "%s: cannot read existing content: this mount has no private key (write-only); "
            "creating, replacing, renaming and deleting files still work",
            path,
        )
        return OpError(errno.EACCES, f"{path}: write-only mount")

    def check_writable(self) -> None:
        if self.config.read_only:
            raise OpError(errno.EROFS, "read-only mount")
        if not self.pairs.can_write:
            self.warn_once("no-recipient", "this mount has no public key: it cannot write")
            raise OpError(errno.EACCES, "no public key to encrypt to")
