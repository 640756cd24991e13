"""One try of a ranged download of a B2 object, for B2Store's retry loop.

A try asks only for what earlier tries did not deliver; a try cut short after some bytes
arrived raises Progress (go on from there at once), one that brought nothing a ShortRead
(transient: the loop waits before the next). Over b2wire the body goes from the socket
straight into the caller's buffers; with proxy variables set b2sdk streams it.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Sequence
from typing import Any

from b2cryptfs.store.b2errors import ShortRead, is_transient
from b2cryptfs.store.b2wire import Wire, network_error
from b2cryptfs.store.base import ObjectInfo

FETCH_CHUNK = 256 * 1024  # a cut download resumes from the last whole chunk received
# (begin, end) -> (connection, response) of a GET of those bytes, the body read up to begin.
Ranged = Callable[[int, int], tuple[Any, Any]]


class Progress(Exception):
    """A ranged read was cut after some bytes arrived: go on from there at once."""


def check_delivered(pos: int, begin: int, start: int, end: int) -> None:
    """After one try that began at ``begin``: a short body that still moved forward is
    progress (the next try asks for the rest); one that brought nothing is a short read."""
    if pos != end:
        if pos > begin:
            raise Progress()
        raise ShortRead(f"got {pos - start} of {end - start} bytes")


def _one_try(call: Callable[[int], None], pos: list[int], start: int, end: int) -> None:
    """``call(from where the last try stopped)``; a transient failure after some bytes
    arrived is progress, and so is a body cut short after some."""
    begin = pos[0]
    try:
        call(begin)
    except Exception as exc:
        if pos[0] > begin and is_transient(exc):
            raise Progress() from exc
        raise
    check_delivered(pos[0], begin, start, end)


def stream_try(
    wire: Wire | None,
    sdk: Callable[[], Any],
    ranged: Ranged,
    obj: ObjectInfo,
    start: int,
    end: int,
    sink: Callable[[bytes], None],
) -> Callable[[], None]:
    """One try (for B2Store._retry) that streams bytes [start, end) of ``obj`` into ``sink``.

    Each try asks only for what earlier tries did not deliver.
    """
    pos = [start]

    def once() -> None:
        call = (
            lean if wire is not None else lambda b: sdk().stream(obj.version_id, b, end, pos, sink)
        )
        _one_try(call, pos, start, end)

    def lean(begin: int) -> None:
        assert wire is not None
        conn, resp = ranged(begin, end)
        while pos[0] < end:
            try:
                chunk = resp.read(min(FETCH_CHUNK, end - pos[0]))
            except Exception as exc:
                wire.forget(conn)
                raise network_error(f"read cut: {exc!r}") from None
            if not chunk:
                break
            sink(chunk)
            pos[0] += len(chunk)
        if not resp.isclosed() or resp.will_close:
            wire.forget(conn)

    return once


def into_try(
    wire: Wire | None,
    sdk: Callable[[], Any],
    ranged: Ranged,
    obj: ObjectInfo,
    start: int,
    buffers: Sequence[bytearray],
) -> Callable[[], None]:
    """One try (for B2Store._retry) that fills ``buffers``, in order, with the bytes of
    ``obj`` from ``start``.

    The body goes from the socket straight into them where the response allows it: a
    range read otherwise copies every byte two or three times on its way (urllib3's
    buffers, the pieces, their join), and it is the daemon's one interpreter that does it.
    """
    views = [memoryview(b) for b in buffers]
    starts = list(itertools.accumulate((len(v) for v in views), initial=start))
    end = starts[-1]
    pos = [start]

    def free_space() -> memoryview:
        """The unfilled rest of the buffer that byte ``pos`` goes into."""
        k = bisect.bisect_right(starts, pos[0]) - 1
        return views[k][pos[0] - starts[k] :]

    def take(chunk: bytes) -> None:
        data = memoryview(chunk)
        while data:
            space = free_space()
            n = min(len(space), len(data))
            space[:n] = data[:n]
            data = data[n:]
            pos[0] += n

    def once() -> None:
        if wire is not None:
            return lean(pos[0])
        _one_try(
            lambda b: sdk().stream_into(obj.version_id, b, end, pos, free_space, take),
            pos,
            start,
            end,
        )

    def lean(begin: int) -> None:
        assert wire is not None
        conn, resp = ranged(begin, end)
        try:
            while pos[0] < end:
                n = resp.readinto(free_space())
                if not n:
                    break
                pos[0] += n
        except Exception as exc:
            wire.forget(conn)
            if pos[0] > begin:
                raise Progress() from exc
            raise network_error(f"read cut: {exc!r}") from None
        if not resp.isclosed() or resp.will_close:
            wire.forget(conn)  # bytes left unread: the connection cannot serve again
        check_delivered(pos[0], begin, start, end)

    return once
