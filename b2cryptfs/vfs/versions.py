"""The open versions of file content: one reader per stored version, shared by handles.

Opening a stored version unwraps its key and proves the pair (``PairStore.open``, one or two
requests), so the reader is kept, by version id, for every handle and for the next open; a
pending upload is opened from its outbox files instead.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from b2cryptfs.bucket.layout import key_name
from b2cryptfs.bucket.pairs import FileEntry, PairStore
from b2cryptfs.cache.readers import MemoryLRU
from b2cryptfs.errors import B2CryptfsError
from b2cryptfs.vfs.fserror import OpError
from b2cryptfs.vfs.localcontent import LocalContent, LocalFileSource
from b2cryptfs.vfs.openfile import RemoteContent
from b2cryptfs.vfs.outbox import OutboxEntry

log = logging.getLogger("b2cryptfs.vfs.state")


class Versions:
    def __init__(
        self,
        pairs: PairStore,
        store_read: Callable[..., Awaitable[Any]],
        cpu_limiter: trio.CapacityLimiter,
        warn_once: Callable[..., None],
        no_read_key: Callable[[str], OpError],
    ) -> None:
        self._pairs = pairs
        self._store_read = store_read
        self._cpu_limiter = cpu_limiter
        self._warn_once = warn_once
        self._no_read_key = no_read_key
        self.readers: MemoryLRU[RemoteContent] = MemoryLRU(64)
        self._locks: dict[str, trio.Lock] = {}
        # Plaintext sizes learnt by opening (a seed openssl file's size is known only then).
        self.exact_sizes: dict[str, int] = {}

    async def remote(self, entry: FileEntry, *, quiet: bool = False) -> RemoteContent:
        """The reader of a stored version; ``quiet``: log nothing on failure (an open
        made ahead of the program's, which reports it if it comes)."""
        vid = entry.content.version_id
        rc = self.readers.get(vid)
        if rc is not None:
            return rc
        if not self._pairs.can_read:
            raise self._no_read_key(entry.path)
        if entry.key is None:
            if quiet:
                raise OpError(errno.EIO, f"{entry.path}: key object missing")
            self._warn_once(
                f"nokey:{vid}",
                "%s: its key object %s is missing: the file cannot be read",
                entry.path,
                key_name(entry.path),
            )
            raise OpError(errno.EIO, f"{entry.path}: key object missing")
        lock = self._locks.setdefault(vid, trio.Lock())
        async with lock:
            rc = self.readers.get(vid)
            if rc is not None:
                return rc
            source = self._pairs.content_source(entry.content)
            try:
                reader = await self._store_read(
                    f"open of {entry.path}", self._pairs.open, entry, source
                )
            except B2CryptfsError as exc:
                if not quiet:
                    log.warning("%s: cannot open: %s", entry.path, exc)
                raise
            finally:
                self._locks.pop(vid, None)
            rc = RemoteContent(entry, reader, source)
            self.readers.put(vid, rc)
            self.exact_sizes[vid] = reader.plaintext_size
            return rc

    async def local(self, entry: OutboxEntry) -> LocalContent | None:
        """Open a pending upload from its outbox files; None if it was uploaded meanwhile."""
        if not self._pairs.can_read:
            raise self._no_read_key(entry.path)
        identities = self._pairs.identities
        codec = self._pairs.codec_for(entry.format)

        def work() -> LocalContent | None:
            try:
                source = LocalFileSource(entry.content_file)
                key_object = entry.read_key_object()
            except FileNotFoundError:
                return None
            try:
                reader = codec.open(key_object, identities, source, entry.info)
            except BaseException:
                source.close()
                raise
            return LocalContent(reader, source, f"outbox:{entry.seq}")

        return await trio.to_thread.run_sync(work, limiter=self._cpu_limiter)
