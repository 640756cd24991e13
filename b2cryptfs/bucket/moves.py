"""Moving the files of a directory level to a new directory, several at a time.

Each file's move is a few round trips (two copies, two removals) that depend on one another;
the files do not, so a bounded pool moves several at once. Within a file the order stays
that of :meth:`PairStore.rename` (copies, then content removed, then key), so a crash leaves
every file readable under its old or its new name.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait

from b2cryptfs.bucket.pairs import FileEntry, PairStore

# Moves in flight: enough to hide a 20-50 ms round trip, few enough not to be throttled.
MOVE_WORKERS = 8


def _move(pairs: PairStore, entry: FileEntry, new: str) -> FileEntry:
    if entry.key is None:
        return pairs.rename(entry.path, new)  # looks again and says what is missing
    return pairs.move_entry(entry, new)


def move_files(
    pairs: PairStore, moves: Sequence[tuple[FileEntry, str]], workers: int = MOVE_WORKERS
) -> list[FileEntry]:
    """Move each listed ``(entry, new path)``; returns the new entries in the same order.

    The first failure stops moves not yet started and is raised once those under way end;
    files already moved stay moved (as a sequential move would have left them)."""
    if len(moves) <= 1 or workers <= 1:
        return [_move(pairs, entry, new) for entry, new in moves]
    pool = ThreadPoolExecutor(min(workers, len(moves)), thread_name_prefix="move")
    try:
        futures: list[Future[FileEntry]] = [
            pool.submit(_move, pairs, entry, new) for entry, new in moves
        ]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        for f in futures:
            if f in done and f.exception() is not None:
                pool.shutdown(wait=True, cancel_futures=True)
                raise f.exception()  # type: ignore[misc]
        return [f.result() for f in futures]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
