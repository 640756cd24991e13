"""Buffers a READ's reply is decrypted into, used again once nobody holds them.

A READ of 1 MiB covers sixteen chunks. Decrypting each into a new buffer and joining them
into a fresh 1 MiB one cost more than the decryption: a buffer that large comes straight
from mmap (fs/mount.py fixes malloc's threshold at 128 KiB), so every reply faulted in 256
new pages, on the event loop. Decrypting the chunks straight into one of a few kept buffers
does without the join and the faults.

A buffer leaves only as memoryviews of it (pyfuse3 replies with any contiguous buffer, and
drops it once the reply is written). A bytearray with a live view cannot change size, which
is how a buffer is known to be free again: one still referenced anywhere, by a reply or by
any other caller, is never written.
"""

from __future__ import annotations

KEPT = 4  # buffers kept: a sequential reader needs one at a time, a few readers a few


def _unused(buf: bytearray) -> bool:
    """Whether no view of ``buf`` is alive (a resize is refused while one is)."""
    try:
        buf.append(0)
    except BufferError:
        return False
    del buf[-1]
    return True


class ReplyBuffers:
    """At most ``kept`` buffers, each handed out again once no view of it is left."""

    def __init__(self, kept: int = KEPT) -> None:
        self.kept = kept
        self._bufs: list[bytearray] = []

    def take(self, size: int) -> memoryview:
        """A writable view of ``size`` bytes (their content undefined), for one reply."""
        smaller = None
        for k, buf in enumerate(self._bufs):
            if _unused(buf):
                if len(buf) >= size:
                    return memoryview(buf)[:size]
                smaller = k
        buf = bytearray(size)
        if smaller is not None:
            self._bufs[smaller] = buf  # replaces a free one too small for reads this large
        elif len(self._bufs) < self.kept:
            self._bufs.append(buf)
        return memoryview(buf)
