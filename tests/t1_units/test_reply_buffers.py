"""The reply buffers a READ of several chunks is decrypted into (vfs/replybufs.py): a buffer
is handed out again only once no view of it is left, whoever held it."""

from __future__ import annotations

from b2cryptfs.vfs.replybufs import ReplyBuffers


def test_a_released_buffer_is_used_again() -> None:
    bufs = ReplyBuffers(kept=2)
    first = bufs.take(1000)
    base = first.obj
    first[:3] = b"abc"
    del first
    again = bufs.take(600)  # smaller fits in the same buffer
    assert again.obj is base and len(again) == 600
    assert len(base) == 1000  # the probe that found it free left its size as it was


def test_a_held_view_is_never_written_again() -> None:
    bufs = ReplyBuffers(kept=2)
    held = bufs.take(100)
    held[:] = b"h" * 100
    part = held[10:20]  # a slice alone still holds the buffer
    del held
    others = [bufs.take(100) for _ in range(5)]  # beyond the kept ones: fresh buffers
    for k, view in enumerate(others):
        view[:] = bytes([k]) * 100
    assert bytes(part) == b"h" * 10
    assert all(view.obj is not part.obj for view in others)
    assert len({id(v.obj) for v in others}) == 5


def test_a_larger_read_replaces_a_free_smaller_buffer() -> None:
    bufs = ReplyBuffers(kept=1)
    small = bufs.take(10)
    del small
    big = bufs.take(5000)
    base = big.obj
    del big
    assert bufs.take(4000).obj is base
