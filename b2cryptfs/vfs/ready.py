"""Answering a read from what memory already holds, in the event loop, without waiting.

Most reads of a sequential reader find every chunk they need fetched by the read-ahead and
end here, without the costs of a wait (cancel scopes, tasks, a thread). A read of several
chunks is decrypted straight into one reply buffer (vfs/replybufs.py); of the decrypted
chunks only one the read ends inside of is kept in the version's small plaintext map (the
next read starts in it); the ciphertext of a decrypted chunk leaves memory at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from b2cryptfs.cache.readers import ByteBoundLRU
from b2cryptfs.errors import IntegrityError
from b2cryptfs.vfs.replybufs import ReplyBuffers

if TYPE_CHECKING:
    from b2cryptfs.formats import ContentReader
    from b2cryptfs.vfs.openfile import RemoteContent


def chunk_span(reader: ContentReader, offset: int, length: int) -> tuple[int, int, int] | None:
    """(end, first chunk, last chunk) of a read clipped at the content's end; None: empty."""
    end = min(offset + length, reader.plaintext_size)
    if offset >= end:
        return None
    cs = reader.chunk_size
    return end, offset // cs, (end - 1) // cs


def read_ready(
    rc: RemoteContent, memory: ByteBoundLRU, replies: ReplyBuffers, offset: int, length: int
) -> bytes | memoryview | None:
    """Plaintext ``[offset, offset+length)`` (clipped at the end) if every chunk it needs is
    decrypted or its ciphertext is in ``memory``; None otherwise, or if a chunk fails
    authentication (the waiting path drops it and fetches it again)."""
    span = chunk_span(rc.reader, offset, length)
    if span is None:
        return b""
    end, first, last = span
    reader, cs = rc.reader, rc.reader.chunk_size
    if first != last:
        return _into_reply(rc, memory, replies, offset, end)
    p = rc.plain.get(first)
    if p is None:
        cipher = memory.get((rc.version_id, first))
        if cipher is None:
            return None
        try:
            p = reader.decrypt_chunk(first, cipher)
        except IntegrityError:
            return None
        rc.plain.put(first, p)
        memory.discard((rc.version_id, first))
    return assemble({first: p}, offset, end, cs)


def _into_reply(
    rc: RemoteContent, memory: ByteBoundLRU, replies: ReplyBuffers, offset: int, end: int
) -> memoryview | None:
    reader, vid = rc.reader, rc.version_id
    cs = reader.chunk_size
    first, last = offset // cs, (end - 1) // cs
    # Every chunk taken first, so no chunk is decrypted for a read that then waits; and held
    # here, as putting one decrypted chunk into rc.plain can push out the next one.
    held = []
    for i in range(first, last + 1):
        p = rc.plain.get(i)
        cipher = memory.get((vid, i)) if p is None else None
        if p is None and cipher is None:
            return None
        held.append((i, p, cipher))
    out = replies.take(end - offset)
    opened = []
    pos = 0
    for i, p, cipher in held:
        lo = offset - i * cs if i == first else 0
        hi = min(end - i * cs, cs)
        part = out[pos : pos + hi - lo]
        pos += hi - lo
        try:
            if p is None:
                opened.append(i)
                if lo == 0 and hi == min(cs, reader.plaintext_size - i * cs):
                    reader.decrypt_chunk_into(i, cipher, part)  # read whole: kept nowhere
                    continue
                p = reader.decrypt_chunk(i, cipher)
                rc.plain.put(i, p)
        except IntegrityError:
            return None
        part[:] = memoryview(p)[lo:hi]
    # Only now: a chunk failing above leaves every ciphertext of this read where it was.
    for i in opened:
        memory.discard((vid, i))
    return out


def assemble(plain: dict[int, bytes], offset: int, end: int, cs: int) -> bytes:
    """Bytes ``[offset, end)`` out of the decrypted chunks covering them."""
    first, last = offset // cs, (end - 1) // cs
    skip = offset - first * cs
    if first == last:
        p = plain[first]
        return p if skip == 0 and end - offset == len(p) else p[skip : skip + end - offset]
    parts = [memoryview(plain[i]) for i in range(first, last + 1)]
    parts[-1] = parts[-1][: end - last * cs]
    parts[0] = parts[0][skip:]
    return b"".join(parts)
