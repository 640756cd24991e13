"""The directory listings of a mount: cached for ``dir_cache_time``, edited in place.

Each listing is one ``PairStore.list_dir`` (one B2 request). The mount's own changes edit
the cached listing; a listing running meanwhile may or may not see a change, so each one is
also recorded and replayed onto that listing when it returns. When the store is
unreachable, the last listing stays in use.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from b2cryptfs.bucket.meta import Meta
from b2cryptfs.bucket.pairs import DirListing, FileEntry, PairStore
from b2cryptfs.errors import TransientError
from b2cryptfs.vfs.collector import collector_paused
from b2cryptfs.vfs.namespace import DirState, is_under, split

log = logging.getLogger("b2cryptfs.vfs.state")


class ListingCache:
    """Listings by directory path; ``run`` runs a blocking store call in a worker thread."""

    def __init__(
        self,
        pairs: PairStore,
        ttl: float,
        run: Callable[[Callable[..., DirListing], str], Awaitable[Any]],
        uploads: Callable[[], list[tuple[str, FileEntry]]] = list,
    ) -> None:
        self._pairs = pairs
        # Where finished uploads come from (the outbox's take_uploaded): taken in before
        # every look, so a file never shows neither pending nor listed.
        self._uploads = uploads
        self.ttl = ttl
        self._run = run
        self._dirs: dict[str, DirState] = {}
        self._replay: dict[str, list[Callable[[DirState], None]]] = {}
        self._locks: dict[str, trio.Lock] = {}

    def catch_up(self) -> None:
        """Apply the uploads finished since the last look."""
        for path, result in self._uploads():
            self.uploaded(path, result)

    def cached(self, dirpath: str) -> DirState | None:
        """The cached listing of ``dirpath`` (however old), or None."""
        self.catch_up()
        return self._dirs.get(dirpath)

    def put(self, dirpath: str, ds: DirState) -> None:
        """Take ``ds`` as the listing of ``dirpath`` (a directory this mount just made)."""
        self.catch_up()
        self._dirs[dirpath] = ds

    # In-place changes of cached listings. A listing running meanwhile may or may not see a
    # change, so each one is also recorded and replayed onto that listing when it returns.

    def edit(self, dirpath: str, change: Callable[[DirState], None]) -> None:
        self.catch_up()
        ds = self._dirs.get(dirpath)
        if ds is not None:
            change(ds)
        replay = self._replay.get(dirpath)
        if replay is not None:
            replay.append(change)

    def set_file(self, dirpath: str, leaf: str, entry: FileEntry | None) -> None:
        def change(ds: DirState) -> None:
            if entry is None:
                ds.files.pop(leaf, None)
            else:
                ds.files[leaf] = entry

        self.edit(dirpath, change)

    def set_dir(self, dirpath: str, leaf: str, exists: bool) -> None:
        def change(ds: DirState) -> None:
            if exists:
                ds.dirs.add(leaf)
            else:
                ds.dirs.discard(leaf)
                ds.dir_metas.pop(leaf, None)

        self.edit(dirpath, change)

    def set_dir_meta(self, dirpath: str, leaf: str, meta: Meta | None) -> None:
        def change(ds: DirState) -> None:
            if meta is None:
                ds.dir_metas.pop(leaf, None)
            else:
                ds.dir_metas[leaf] = meta

        self.edit(dirpath, change)

    def set_own_meta(self, dirpath: str, meta: Meta | None) -> None:
        """The root's own metadata (its root object) was stored anew."""

        def change(ds: DirState) -> None:
            ds.own_meta = meta

        self.edit(dirpath, change)

    def set_marker(self, dirpath: str) -> None:
        def change(ds: DirState) -> None:
            ds.has_marker = True

        self.edit(dirpath, change)

    def uploaded(self, path: str, result: FileEntry) -> None:
        """A pending file is now this stored pair (the outbox finished uploading it)."""
        parent, leaf = split(path)
        self.set_file(parent, leaf, result)
        # Parents that existed only through the pending upload now exist in the store.
        path = parent
        while path:
            up, name = split(path)
            self.set_dir(up, name, True)
            path = up

    async def get(self, dirpath: str, *, fresh: bool = False) -> DirState:
        self.catch_up()
        ds = self._dirs.get(dirpath)
        asked = trio.current_time()
        if ds is not None and not fresh and asked - ds.fetched < self.ttl:
            return ds
        lock = self._locks.setdefault(dirpath, trio.Lock())
        async with lock:
            ds = self._dirs.get(dirpath)
            if ds is not None and ds.fetched >= asked:
                return ds  # listed by someone else while we waited
            started = trio.current_time()
            replay: list[Callable[[DirState], None]] = []
            self._replay[dirpath] = replay
            try:
                listing = await self._run(self._list, dirpath)
                # Uploads that finished meanwhile: onto the old listing and into replay
                # (the listing may predate them), while replay is still recorded.
                self.catch_up()
            except TransientError as exc:
                if ds is None or fresh:
                    raise
                # The store is unreachable: keep showing what was listed (and writing into
                # it: uploads wait in the outbox), asking again after dir_cache_time.
                log.warning(
                    "listing /%s failed (%s); showing the one from %.0f s ago",
                    dirpath,
                    exc,
                    started - ds.fetched,
                )
                ds.fetched = started
                return ds
            finally:
                del self._replay[dirpath]
            ds = DirState.from_listing(listing, started)
            for change in replay:
                change(ds)
            self._dirs[dirpath] = ds
            return ds

    def _list(self, dirpath: str) -> DirListing:
        """Blocking: one listing, built without the cycle collector's passes."""
        with collector_paused():
            return self._pairs.list_dir(dirpath)

    def listed(self, path: str) -> bool:
        """Does the cached listing hold a stored version of ``path``?"""
        self.catch_up()
        parent, leaf = split(path)
        ds = self._dirs.get(parent)
        return ds is not None and leaf in ds.files

    def forget(self, top: str) -> None:
        self.catch_up()
        for d in [d for d in self._dirs if d == top or is_under(d, top)]:
            del self._dirs[d]
