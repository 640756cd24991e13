"""Reading remote file content: versions through the ciphertext cache (outbox entries are
read by vfs/localcontent.py).

A :class:`RemoteContent` is one opened remote version (its reader holds the unwrapped file
key, in memory only). Reads fetch only the chunks they need: from a small in-memory map,
then the on-disk ciphertext cache, then the store, several chunks per range request.
Fetches run in the vfs's own nursery so that one reader's interrupted request does not
abort a fetch others wait for, and sequential reads schedule read-ahead fetches.

Costs that shaped this (measured through the real mount, see bench/mount.py): every range
request costs about 2 ms of CPU in the HTTP client whatever its size, so read-ahead asks for
runs of up to AHEAD_GROUP_BYTES, yet in several parallel requests, as links are often limited
per connection; creating a cache file costs more than writing 64 KiB into it, so each
fetched run is stored as one cache extent; and ciphertext held in memory is what bounds the
daemon's RSS, so a chunk leaves the in-memory map once it has been decrypted for a reader
(a chunk a read ends inside of stays decrypted in the small per-version map; the kernel's
page cache does the rest). Reads are answered by vfs/ready.py, into reused reply buffers.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import trio

from b2cryptfs.bucket.pairs import FileEntry, StoreSource
from b2cryptfs.cache.chunks import ChunkCache
from b2cryptfs.cache.readers import ByteBoundLRU, MemoryLRU
from b2cryptfs.errors import IntegrityError
from b2cryptfs.formats import ContentReader
from b2cryptfs.vfs import ready
from b2cryptfs.vfs.replybufs import ReplyBuffers

log = logging.getLogger(__name__)

GROUP_BYTES = 1 << 20  # ciphertext per range request a reader waits for
AHEAD_GROUP_BYTES = 4 << 20  # at most this much ciphertext per read-ahead range request
AHEAD_PARALLEL = 4  # a read-ahead is split into at least this many requests (if >= 1 MiB)
MAX_READAHEAD_BYTES = 16 << 20
# Fetched ciphertext not yet decrypted (read-ahead lands here): room for two full windows.
MEMORY_BYTES = 2 * MAX_READAHEAD_BYTES
_PLAIN_CHUNKS = 8  # decrypted chunks kept per open version
# A file larger than 1/STREAM_CACHE_SHARE of the disk cache is not kept there by its read-ahead.
STREAM_CACHE_SHARE = 4
_THREAD_DECRYPT = 3  # decrypt in a worker thread from this many chunks on


@dataclass(eq=False)
class RemoteContent:
    """One opened remote version."""

    entry: FileEntry
    reader: ContentReader
    source: StoreSource
    plain: MemoryLRU[bytes] = field(default_factory=lambda: MemoryLRU(_PLAIN_CHUNKS))

    @property
    def version_id(self) -> str:
        return self.entry.content.version_id

    @property
    def size(self) -> int:
        return self.reader.plaintext_size

    def span_len(self, index: int) -> int:
        s, e = self.reader.chunk_span(index)
        return e - s


class _Fetch:
    def __init__(self) -> None:
        self.event = trio.Event()
        self.data: dict[int, bytes] = {}
        self.error: BaseException | None = None


class ChunkFetcher:
    """Gets ciphertext chunks of remote versions, shared by every open file."""

    def __init__(
        self,
        disk: ChunkCache | None,
        limiter: trio.CapacityLimiter,
        nursery: trio.Nursery,
    ) -> None:
        self.disk = disk
        self.limiter = limiter
        self.nursery = nursery
        self.memory = ByteBoundLRU(MEMORY_BYTES)
        self.replies = ReplyBuffers()
        self._inflight: dict[tuple[str, int], _Fetch] = {}
        self._running = 0

    # --- fetching ----------------------------------------------------------------------

    async def get(self, rc: RemoteContent, indices: Sequence[int]) -> dict[int, bytes]:
        """Ciphertext of the given chunks (each exactly its ``chunk_span``)."""
        vid = rc.version_id
        out: dict[int, bytes] = {}
        missing = []
        for i in indices:
            data = self.memory.get((vid, i))
            if data is not None:
                out[i] = data
            else:
                missing.append(i)
        if not missing:
            return out
        # The opening's range holds the first chunk: a first read of several chunks asks
        # only for the others (no byte downloaded twice).
        recalled = {}
        for i in missing:
            s, e = rc.reader.chunk_span(i)
            blob = rc.source.recall(s, e)
            if blob is not None:
                recalled[i] = blob
        if recalled:
            out.update(recalled)
            if self.disk is not None:
                self.nursery.start_soon(self._keep, rc, recalled)
            missing = [i for i in missing if i not in recalled]
            if not missing:
                return out
        disk = self.disk
        idle = [i for i in missing if (vid, i) not in self._inflight]
        if disk is not None and idle and any((vid, i) in disk for i in idle):
            # Cached chunks the page cache holds are read right here: a worker thread round
            # trip would cost more than the read (random reads of a cached file).
            got = disk.get_many(vid, idle, rc.span_len, nowait=True)
            if got:
                out.update(got)
                missing = [i for i in missing if i not in got]
                idle = [i for i in idle if i not in got]
                if not missing:
                    return out
        self._start(rc, idle, GROUP_BYTES)
        waits = {i: self._inflight.get((vid, i)) for i in missing}
        for i, fetch in waits.items():
            if fetch is None:  # finished already (cannot happen without an await, but be safe)
                out[i] = (await self._fetch_direct(rc, [i]))[i]
                continue
            await fetch.event.wait()
            if fetch.error is not None:
                raise fetch.error
            out[i] = fetch.data[i]
        return out

    def prefetch(self, rc: RemoteContent, first: int, last: int, window: int = 0) -> None:
        """Bring chunks ``first..last`` into memory (from the disk cache or the store).

        ``window``: the reader's whole read-ahead, in chunks, of which this is a top-up;
        requests are sized by it (a top-up of half the window goes out in two requests,
        not four half-size ones: each request costs the same fixed CPU whatever its size).
        """
        vid = rc.version_id
        want = [
            i
            for i in range(max(0, first), min(last, rc.reader.chunk_count - 1) + 1)
            if (vid, i) not in self.memory and (vid, i) not in self._inflight
        ]
        if not want:
            return
        # Several requests in flight: a link's per-connection rate is often what limits a
        # transfer; each request large enough that its fixed cost is small.
        span = max(len(want), window) * rc.reader.chunk_size
        limit = min(AHEAD_GROUP_BYTES, max(GROUP_BYTES, span // AHEAD_PARALLEL))
        self._start(rc, want, limit, prefetch=True)

    @staticmethod
    def _groups(
        rc: RemoteContent, indices: Sequence[int], limit: int = GROUP_BYTES
    ) -> list[list[int]]:
        """Runs of consecutive chunks, each of about ``limit`` bytes (of plaintext: 16
        chunks of 64 KiB per MiB, whatever the format's ciphertext overhead)."""
        most = max(1, limit // rc.reader.chunk_size)
        groups: list[list[int]] = []
        for i in sorted(indices):
            if groups and groups[-1][-1] == i - 1 and len(groups[-1]) < most:
                groups[-1].append(i)
            else:
                groups.append([i])
        return groups

    def _start(
        self, rc: RemoteContent, indices: Sequence[int], limit: int, prefetch: bool = False
    ) -> None:
        for group in self._groups(rc, indices, limit):
            fetch = _Fetch()
            for i in group:
                self._inflight[(rc.version_id, i)] = fetch
            self.nursery.start_soon(self._run, rc, group, fetch, prefetch)

    async def _run(
        self, rc: RemoteContent, group: list[int], fetch: _Fetch, prefetch: bool
    ) -> None:
        self._running += 1
        try:
            await self._run_one(rc, group, fetch, prefetch)
        finally:
            self._running -= 1

    async def _run_one(
        self, rc: RemoteContent, group: list[int], fetch: _Fetch, prefetch: bool
    ) -> None:
        vid = rc.version_id
        fresh: dict[int, bytes] = {}
        disk = self.disk
        try:
            data: dict[int, bytes] = {}
            if disk is not None and any((vid, i) in disk for i in group):
                data = await trio.to_thread.run_sync(disk.get_many, vid, group, rc.span_len)
            # One request per run of chunks the cache lacked (all of them when cold).
            for run_ in self._groups(rc, [i for i in group if i not in data], AHEAD_GROUP_BYTES):
                fresh.update(await self._fetch_direct(rc, run_))
            data.update(fresh)
            fetch.data = data
            for i, d in data.items():
                self.memory.put((vid, i), d)
        except BaseException as exc:  # noqa: BLE001 - handed to the waiters
            fetch.error = exc
            if prefetch:
                log.debug("read-ahead of %s failed: %s", rc.entry.path, exc)
            if isinstance(exc, trio.Cancelled):
                raise
        finally:
            for i in group:
                if self._inflight.get((vid, i)) is fetch:
                    del self._inflight[(vid, i)]
            fetch.event.set()
        if fresh and self.keeps(rc, prefetch):
            await self._keep(rc, fresh)

    def keeps(self, rc: RemoteContent, prefetch: bool) -> bool:
        """Whether chunks just downloaded go into the disk cache.

        Not those a sequential reader's read-ahead brought for a file larger than a quarter of
        the cache: one pass over it would push out most of what the cache holds, and writing
        it cost more than the read itself (a 1 GiB read: 4-5 s of kernel time against 1-1.5 s
        without). The kernel's page cache still keeps what was read last; chunks a read
        waited for (random access) are kept whatever the size."""
        disk = self.disk
        return disk is not None and (not prefetch or rc.size * STREAM_CACHE_SHARE <= disk.max_bytes)

    async def _keep(self, rc: RemoteContent, fresh: dict[int, bytes]) -> None:
        """Store downloaded chunks in the disk cache, one extent per run."""
        disk, vid = self.disk, rc.version_id
        if disk is None:
            return
        self._running += 1
        try:
            runs = self._groups(rc, list(fresh), 1 << 62)
            await trio.to_thread.run_sync(
                lambda: [disk.put_run(vid, r[0], [fresh[i] for i in r]) for r in runs]
            )
        finally:
            self._running -= 1

    async def _fetch_direct(self, rc: RemoteContent, group: list[int]) -> dict[int, bytes]:
        """One range request for a run of chunks, from the store (never a cache)."""
        start, _ = rc.reader.chunk_span(group[0])
        _, end = rc.reader.chunk_span(group[-1])
        blob = rc.source.recall(start, end)
        spans = [rc.reader.chunk_span(i) for i in group]
        sizes = [e - s for s, e in spans]
        if blob is None and len(group) > 1 and sum(sizes) == end - start:
            # Chunks back to back (age; openssl's base64 spans overlap): each into a buffer
            # of its own (reused heap memory, no copies).
            parts = await trio.to_thread.run_sync(
                rc.source.fetch_chunks, start, sizes, limiter=self.limiter
            )
            if [len(p) for p in parts] != sizes:
                raise IntegrityError(
                    f"{rc.entry.path}: short read of its content object ({sum(map(len, parts))}"
                    f" of {end - start} bytes)"
                )
            return dict(zip(group, parts, strict=True))
        if blob is None:
            blob = await trio.to_thread.run_sync(rc.source.fetch, start, end, limiter=self.limiter)
        if len(blob) != end - start:
            raise IntegrityError(
                f"{rc.entry.path}: short read of its content object ({len(blob)} of "
                f"{end - start} bytes)"
            )
        if len(group) == 1:
            return {group[0]: blob}
        # Views, not copies: the chunks share the one buffer the range was received into.
        whole = memoryview(blob)
        return {i: whole[s - start : e - start] for i, (s, e) in zip(group, spans, strict=True)}

    async def idle(self) -> None:
        """Wait until no fetch runs (read-ahead and its cache writes included)."""
        while self._running:
            await trio.sleep(0.01)

    def forget_chunk(self, vid: str, index: int) -> None:
        self.memory.discard((vid, index))
        if self.disk is not None:
            self.disk.discard(vid, index)

    # --- reading -----------------------------------------------------------------------

    def read_ready(self, rc: RemoteContent, offset: int, length: int) -> bytes | memoryview | None:
        """The plaintext if every chunk it needs is in memory, else None; never waits
        (vfs/ready.py)."""
        return ready.read_ready(rc, self.memory, self.replies, offset, length)

    async def read(self, rc: RemoteContent, offset: int, length: int) -> bytes | memoryview:
        """Plaintext ``[offset, offset+length)`` of a remote version, clipped at its end."""
        span = ready.chunk_span(rc.reader, offset, length)
        if span is None:
            return b""
        end, first, last = span
        cs = rc.reader.chunk_size
        plain: dict[int, bytes] = {}
        need = []
        for i in range(first, last + 1):
            p = rc.plain.get(i)
            if p is not None:
                plain[i] = p
            else:
                need.append(i)
        vid = rc.version_id
        if need:
            cipher = await self.get(rc, need)
            # Decrypted right here, into a reply buffer, as a read finding everything in
            # memory is: the hand-off to a thread, its wait for the GIL among the fetch
            # threads and a join cost more than the decryption (4-5 ms of a first 1 MiB READ).
            for i, c in cipher.items():
                self.memory.put((vid, i), c)
            data = ready.read_ready(rc, self.memory, self.replies, offset, length)
            if data is not None:
                return data
            try:
                plain.update(await self._decrypt(rc, cipher))
            except IntegrityError as exc:
                # Possibly a damaged cached copy: drop it and read the store once more.
                log.warning("%s: %s; fetching it again from the store", rc.entry.path, exc)
                for i in need:
                    await trio.to_thread.run_sync(self.forget_chunk, rc.version_id, i)
                fresh: dict[int, bytes] = {}
                for group in self._groups(rc, need):
                    fresh.update(await self._fetch_direct(rc, group))
                plain.update(await self._decrypt(rc, fresh))
            for i in need:
                rc.plain.put(i, plain[i])
                # Decrypted: its ciphertext is in the disk cache (or on its way there) and
                # no longer worth memory.
                self.memory.discard((vid, i))
        return ready.assemble(plain, offset, end, cs)

    @staticmethod
    async def _decrypt(rc: RemoteContent, cipher: dict[int, bytes]) -> dict[int, bytes]:
        def work() -> dict[int, bytes]:
            return {i: rc.reader.decrypt_chunk(i, c) for i, c in cipher.items()}

        if len(cipher) >= _THREAD_DECRYPT:
            return await trio.to_thread.run_sync(work)
        return work()
