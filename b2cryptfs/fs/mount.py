"""Running a mount: FUSE session, trio loop, signals, and a clean unmount.

Order at the end matters: the kernel side goes first (so that programs stop waiting on a
mount nobody serves), then whatever is still being written is sealed and the outbox is
drained; what cannot be uploaded stays in the cache directory for the next mount.

After the unmount the daemon only uploads: SIGTERM or SIGINT then stops it within seconds
(the outbox is durable; the next mount of the store uploads the rest), and it exits non-zero
(:class:`UploadsLeft`) if anything was left. Under systemd, ``STATUS=`` tells how the uploads
fare.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import threading
import time
from collections.abc import Awaitable, Callable

import pyfuse3
import trio

from b2cryptfs.bucket.factory import make_pairs
from b2cryptfs.bucket.pairs import DirListing, PairStore
from b2cryptfs.cache.cachedir import CacheDir
from b2cryptfs.errors import B2CryptfsError, MountError, UsageError
from b2cryptfs.fs import memdebug, readahead
from b2cryptfs.fs.gate import GatedOperations
from b2cryptfs.fs.operations import Operations
from b2cryptfs.store.base import Store
from b2cryptfs.vfs.collector import freeze_startup_heap
from b2cryptfs.vfs.config import MountConfig
from b2cryptfs.vfs.core import Vfs
from b2cryptfs.vfs.namespace import DirState

log = logging.getLogger(__name__)

# How often the systemd STATUS= line is refreshed (seconds), when it has changed.
_STATUS_EVERY = 2.0
# How often the outbox is looked at for a change worth a STATUS= line at once (seconds).
_STATUS_POLL = 0.2
# After a stop signal, how long sealing the files open at the unmount may still take (s).
_SEAL_GRACE = 10.0


class UploadsLeft(B2CryptfsError):
    """The daemon was stopped with uploads pending (they wait in the outbox)."""

    exit_code = 75  # EX_TEMPFAIL: nothing is lost, the next mount finishes the job


def _escape(value: str) -> str:
    # libfuse splits -o on commas; a backslash escapes one.
    return value.replace("\\", "\\\\").replace(",", "\\,")


def fuse_options(config: MountConfig) -> set[str]:
    options = {
        f"fsname={_escape(config.fsname or config.store_url)}",
        "subtype=b2cryptfs",
        "default_permissions",
    }
    if config.allow_other:
        options.add("allow_other")
    if config.read_only:
        options.add("ro")
    options.update(config.fuse_options)
    return options


# What opens the store after an early mount (a blocking call, run in a thread): the store,
# its pair layer and the root's listing with the time it was made (time.monotonic()).
StoreOpener = Callable[[], "tuple[Store, PairStore, tuple[DirListing, float] | None]"]


def run_mount(
    config: MountConfig,
    store: Store | None,
    ready: Callable[[], None],
    notify: Callable[[str], None] | None = None,
    pairs: PairStore | None = None,
    root: tuple[DirListing, float] | None = None,
    *,
    opening: StoreOpener | None = None,
) -> None:
    """Mount, serve until unmounted or SIGTERM/SIGINT/SIGHUP, drain uploads, return.

    ``notify`` gets systemd ``STATUS=…`` lines (sd_notify). Raises :class:`UploadsLeft` if a
    signal stopped the final drain with uploads still pending. ``pairs``: the pair layer
    if the caller built it already (the mount command does, to check the name key); ``root``:
    the root's listing it made then, and when (time.monotonic()), taken as the first one.

    With ``opening`` (and no ``store``) the mount is made first and the store opened while
    it is live: requests wait for it (:mod:`b2cryptfs.fs.gate`) and ``ready`` is called once
    it is open. If opening raises, the mount is undone and the error raised here."""
    mountpoint = config.mountpoint
    if not mountpoint.startswith("/dev/fd/") and not os.path.isdir(mountpoint):
        raise UsageError(f"mountpoint is not a directory: {mountpoint}")
    if store is None and opening is None:
        raise ValueError("run_mount needs a store or an opening")
    cache = CacheDir(config.cache_dir, store.url if store is not None else config.store_url)
    stop_trimming = _limit_malloc_arenas()
    memdebug.start_from_env()
    try:
        if store is not None:
            vfs: Vfs | None = Vfs(
                pairs if pairs is not None else make_pairs(config, store), config, cache
            )
            ops: Operations = Operations(vfs)  # type: ignore[arg-type]
        else:
            vfs, ops = None, GatedOperations()
        # Resolved now: once the mount is live, resolving it is a request to this daemon.
        # A file descriptor mount has no path to look up (its read-ahead stays as it is).
        mount_path = None if mountpoint.startswith("/dev/fd/") else os.path.realpath(mountpoint)
        try:
            pyfuse3.init(ops, mountpoint, fuse_options(config))
        except RuntimeError as exc:
            raise MountError(f"cannot mount on {mountpoint}: {exc}") from None
        try:
            if vfs is not None:
                trio.run(_serve, vfs, ops, mount_path, ready, notify, root)
            else:
                assert opening is not None and isinstance(ops, GatedOperations)
                trio.run(_serve_early, ops, mount_path, opening, config, cache, ready, notify)
        finally:
            _close_session()
    finally:
        stop_trimming()
        cache.close()


def _limit_malloc_arenas(arenas: int = 2) -> Callable[[], None]:
    """Tune glibc's malloc before worker threads start, and trim the heap now and then.

    Each store/crypto thread otherwise keeps freed buffers in an arena of its own: reading a
    large file from B2 peaked about 25% higher in RSS for no speed gained. Under 8 readers
    and 4 writers RSS crept from 150 to over 200 MB in 4 minutes with a flat Python heap
    (tracemalloc: about 85 MB): freed memory kept by malloc. Returns what stops the trimming
    thread: it must be stopped before the interpreter exits, as a thread that finalization
    ends inside a ctypes call aborts the process ("FATAL: exception not rethrown").
    """
    try:
        libc = _libc()
        libc.mallopt(-8, arenas)  # M_ARENA_MAX
        # A fixed mmap threshold: glibc's sliding one rises to the largest buffer freed (a
        # ranged download, a staging block), after which such buffers come from the heap
        # and leave it fragmented; RSS then crept up for as long as the mount was busy.
        libc.mallopt(-3, _MMAP_THRESHOLD)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, _TRIM_THRESHOLD)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        return lambda: None  # not glibc: nothing to tune
    trim = getattr(libc, "malloc_trim", None)
    if trim is None:
        return lambda: None
    stop = threading.Event()
    thread = threading.Thread(
        target=_trim_until, args=(stop, trim), name="malloc-trim", daemon=True
    )
    thread.start()

    def stop_trimming() -> None:
        stop.set()
        thread.join(timeout=5)

    return stop_trimming


def _libc() -> ctypes.CDLL:
    try:
        return ctypes.CDLL("libc.so.6")  # glibc's name: no ldconfig run at every mount
    except OSError:
        from ctypes.util import find_library

        return ctypes.CDLL(find_library("c") or "libc.so.6")


_MMAP_THRESHOLD = 128 * 1024
_TRIM_THRESHOLD = 8 << 20
_TRIM_EVERY = 10.0


def _trim_until(stop: threading.Event, trim: Callable[[int], int]) -> None:
    """Hand freed heap pages back to the kernel now and then (``malloc_trim``): free chunks
    inside the heap are otherwise kept, and counted in RSS, for good."""
    while not stop.wait(_TRIM_EVERY):
        trim(0)


_session_open = False


def _close_session() -> None:
    global _session_open
    if _session_open:
        _session_open = False
        try:
            pyfuse3.close(unmount=True)
        except Exception:  # noqa: BLE001 - unmounting must not hide the real outcome
            log.exception("closing the FUSE session")


class _Stopping:
    """What signals do: the first one unmounts. During the final drain (the kernel side is
    gone) SIGTERM and SIGINT stop waiting for uploads at once, which stay on disk for the
    next mount; SIGHUP does so only the second time (a closed terminal is no request to
    stop)."""

    def __init__(self) -> None:
        self.terminated = False
        self.draining = False
        self.drain_scope = trio.CancelScope()
        self.warned = False
        self.stopped = False
        self.stop_event = trio.Event()
        # A SIGTERM/SIGINT that came after the unmount began but before the drain did.
        self.stop_requested = False
        # Requests waiting for the store (an early mount's gate): released by a stop, else
        # the FUSE loop would wait for them for as long as the store takes to open.
        self.gate: GatedOperations | None = None

    def on_signal(self, name: str) -> None:
        if not self.terminated and not self.draining:
            log.info("received %s: unmounting", name)
            self.terminated = True
            if self.gate is not None:
                self.gate.fail_gate()
            pyfuse3.terminate()
        elif not self.draining:
            self.stop_requested = self.stop_requested or name != "SIGHUP"
            return  # main loop still ending: the drain will follow
        elif name != "SIGHUP" or self.warned:
            self.stop(name)
        else:
            self.warned = True
            log.warning("received %s while uploading: send it again to stop waiting", name)

    def stop(self, name: str) -> None:
        if not self.stopped:
            log.warning("received %s: leaving the remaining uploads for the next mount", name)
        self.stopped = True
        self.stop_event.set()  # _stop_when_draining cancels the drain


async def _stop_when_draining(vfs: Vfs, stopping: _Stopping) -> None:
    """Cancel the final drain once a stop is asked for, but only after the files still open
    at the unmount are sealed into the outbox: that is local and quick, and their staging
    keys die with the process."""
    await stopping.stop_event.wait()
    # Sealing waits for room on a full cache disk, which only uploads make: not forever.
    with trio.move_on_after(_SEAL_GRACE):
        while not vfs.outbox.draining:
            await trio.sleep(0.05)
    if not vfs.outbox.draining:
        log.warning("stopping before the files still open at the unmount could be sealed")
    stopping.drain_scope.cancel()


async def _serve(
    vfs: Vfs,
    ops: Operations,
    mount_path: str | None,
    ready: Callable[[], None],
    notify: Callable[[str], None] | None = None,
    root: tuple[DirListing, float] | None = None,
) -> None:
    async def start(nursery: trio.Nursery) -> Vfs:
        _take_root_listing(vfs, root)
        await vfs.start(nursery)
        return vfs

    await _run(start, ready, notify, ops, mount_path, vfs.config.read_ahead_kib)


async def _serve_early(
    ops: GatedOperations,
    mount_path: str | None,
    opening: StoreOpener,
    config: MountConfig,
    cache: CacheDir,
    ready: Callable[[], None],
    notify: Callable[[str], None] | None,
) -> None:
    async def start(nursery: trio.Nursery) -> Vfs:
        # The requests that came meanwhile wait in the gate; a signal abandons the thread.
        _, pairs, root = await trio.to_thread.run_sync(opening, cancellable=True)
        vfs = Vfs(pairs, config, cache)
        _take_root_listing(vfs, root)
        await vfs.start(nursery)
        ops.open_gate(vfs)
        return vfs

    await _run(start, ready, notify, ops, mount_path, config.read_ahead_kib, gate=ops)


def _take_root_listing(vfs: Vfs, root: tuple[DirListing, float] | None) -> None:
    if root is not None:
        # The mount's check listed the root: that listing counts as made when it was.
        listing, listed_at = root
        age = time.monotonic() - listed_at
        vfs.listings.put("", DirState.from_listing(listing, trio.current_time() - age))


async def _run(
    start: Callable[[trio.Nursery], Awaitable[Vfs]],
    ready: Callable[[], None],
    notify: Callable[[str], None] | None,
    ops: Operations,
    mount_path: str | None,
    read_ahead_kib: int,
    gate: GatedOperations | None = None,
) -> None:
    """Serve the mount; ``start`` makes the vfs ready (with a ``gate``: while requests
    already come in and wait). A failure of ``start`` ends the mount and is raised after
    the unmount."""
    global _session_open
    _session_open = True
    stopping = _Stopping()
    stopping.gate = gate
    started: list[Vfs] = []
    failed: list[Exception] = []
    async with trio.open_nursery() as nursery:

        async def start_then_ready() -> None:
            try:
                vfs = await start(nursery)
            except Exception as exc:  # noqa: BLE001 - raised again after the unmount
                failed.append(exc)
                if gate is not None:
                    gate.fail_gate()
                pyfuse3.terminate()
                return
            started.append(vfs)
            nursery.start_soon(_stop_when_draining, vfs, stopping)
            if notify is not None:
                nursery.start_soon(_report_status, vfs, notify, stopping)
            freeze_startup_heap()  # later collector passes walk only what serving makes
            ready()

        nursery.start_soon(_watch_signals, stopping)
        nursery.start_soon(readahead.widen_after_init, ops.initialized, mount_path, read_ahead_kib)
        if gate is None:
            await start_then_ready()
        else:
            nursery.start_soon(start_then_ready)
        try:
            await pyfuse3.main()
        finally:
            # Unmount first: nobody serves requests from here on.
            _close_session()
        log.debug("served %d READ requests, %d bytes asked", ops.read_requests, ops.read_bytes)
        if failed:
            raise failed[0]
        if not started:
            # Stopped (a signal) before the store was open: nothing was written.
            log.info("stopped before the store was open")
            nursery.cancel_scope.cancel()
            return
        vfs = started[0]
        stopping.draining = True
        if stopping.stop_requested:
            stopping.stop("a stop signal")
        pending = len(vfs.outbox)
        if pending:
            log.info("unmounted; uploading the %d file(s) left in the outbox", pending)
        left = None
        with stopping.drain_scope:
            left = await vfs.shutdown()
        if left is None:
            left = len(vfs.outbox)
        if left:
            log.warning("%d file(s) wait in the outbox for the next mount of this store", left)
        nursery.cancel_scope.cancel()
    if stopping.stopped and left:
        raise UploadsLeft(
            f"stopped with {left} upload(s) pending; the next mount of this store uploads them"
        )


def status_line(status: dict[str, object], *, unmounted: bool = False) -> str:
    """One line for systemd's STATUS= (what ``systemctl status`` shows)."""
    pending = int(status["pending_files"])  # type: ignore[call-overload]
    if not pending:
        text = f"{status['uploaded_files']} file(s) uploaded, none pending"
    else:
        rate = float(status["rate_bytes_per_second"])  # type: ignore[arg-type]
        text = (
            f"{pending} upload(s) pending ({_mib(status['pending_bytes'])} MiB), "
            f"{status['uploading_files']} in progress, {rate / (1 << 20):.1f} MiB/s"
        )
        if status["failing_files"]:
            text += f"; failing: {status['last_error']}"
    return ("unmounted; " if unmounted else "") + text


def _mib(n: object) -> str:
    return f"{int(n) / (1 << 20):.1f}"  # type: ignore[call-overload]


async def _report_status(vfs: Vfs, notify: Callable[[str], None], stopping: _Stopping) -> None:
    # Looked at often, told at once when uploads start or end (or the unmount begins), the
    # figures in between every _STATUS_EVERY seconds. Since a closed file uploads at once,
    # on 4 workers a few small files are pending for less than _STATUS_EVERY: a loop that
    # only looked that often never saw them pending. len() is cheap; a snapshot is not.
    last_line = last_kind = None
    last_sent = float("-inf")
    while True:
        kind = (len(vfs.outbox) > 0, stopping.draining)
        now = trio.current_time()
        if kind != last_kind or now - last_sent >= _STATUS_EVERY:
            status = vfs.outbox.stats.snapshot(vfs.outbox.pending())
            line = status_line(status, unmounted=stopping.draining)
            last_kind, last_sent = kind, now
            if line != last_line:
                last_line = line
                await trio.to_thread.run_sync(notify, f"STATUS={line}")
        await trio.sleep(_STATUS_POLL)


async def _watch_signals(stopping: _Stopping) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for signum in signals:
            stopping.on_signal(signal.Signals(signum).name)
