"""Opening a mount's store in a thread while the keys load.

Opening a B2 store is mostly waiting: the store's import (b2wire and http.client; b2sdk only
later, for what b2wire does not do), then authorization, the bucket's id, a listing of the
root and the look-up of a name key, each a round trip; then an upload URL is fetched ahead.
Loading the keys needs no network (a passphrase's key derivation is CPU work), so the two
overlap. A key error is still
reported before a store error. A daemon is forked only once the store is open; a mount in the
foreground is made while it still opens (see ``b2cryptfs.fs.gate``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from b2cryptfs.store.base import Listing, ObjectInfo, Store

NameRoot = tuple[str, ObjectInfo] | None


class _Job:
    """A function run in a daemon thread; ``result()`` returns its value or raises its error.

    A daemon thread: when the mount gives up (a wrong passphrase), nothing waits for the
    network."""

    def __init__(self, fn: Callable[[], Any], name: str) -> None:
        self._value: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(fn,), name=name, daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[[], Any]) -> None:
        try:
            self._value = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller of result()
            self._error = exc

    def done(self) -> bool:
        return not self._thread.is_alive()

    def result(self) -> Any:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value


@dataclass
class Opened:
    store: Store
    name_root: NameRoot  # the root's name key (None: plain names)
    root: Listing  # the store's root listing, and when it was made (time.monotonic())
    root_listed_at: float


def _open_and_check(open_store: Callable[[], Store], imported: threading.Event) -> Opened:
    try:
        if not imported.is_set():
            # The store's modules first: their import is most of what this thread does with
            # the interpreter; the round trips that follow leave it to the caller's imports.
            import b2cryptfs.store.b2store  # noqa: F401
    except ImportError:
        pass  # open_store() reports it
    finally:
        imported.set()
    from b2cryptfs.bucket.namekey import find_name_root

    store = open_store()
    # The name key's look-up and the root listing are independent requests: both go out.
    name_root = _Job(lambda: find_name_root(store), "store-open-namekey")
    # One listing call proves credentials, bucket and the right to list it.
    started = time.monotonic()
    root = store.list_dir("")
    # Open: the first upload's URL is asked for now, not when a file is closed.
    prefetch = getattr(store, "prefetch_upload_url", None)
    if prefetch is not None:
        prefetch()
    return Opened(store, name_root.result(), root, started)


class StoreOpening:
    """``open_store()`` and the checks a mount makes of the store, started at once."""

    def __init__(self, open_store: Callable[[], Store], *, b2: bool = True) -> None:
        self._imported = threading.Event()
        if not b2:
            self._imported.set()  # no B2 modules are wanted
        self._job = _Job(lambda: _open_and_check(open_store, self._imported), "store-open")

    def wait_imported(self) -> None:
        """Until the store's modules are imported: a caller that imports its own next runs
        while the store's requests are out, not against the store's import."""
        self._imported.wait()

    def done(self) -> bool:
        """Opening has ended (``result()`` returns or raises at once)."""
        return self._job.done()

    def result(self) -> Opened:
        """The store and what the checks found; raises what opening raised."""
        return self._job.result()  # type: ignore[no-any-return]
