"""Which sealed files wait the outbox's settle delay (b2cryptfs.vfs.settle)."""

from __future__ import annotations

from b2cryptfs.vfs.settle import SettlePolicy


def test_a_file_sealed_once_does_not_wait() -> None:
    p = SettlePolicy(2.0)
    assert not p.sealed("a", 10.0)
    assert not p.sealed("b", 10.5)


def test_a_file_sealed_again_within_the_delay_waits() -> None:
    p = SettlePolicy(2.0)
    assert not p.sealed("a", 10.0)
    assert p.sealed("a", 11.0)  # rewritten: its versions coalesce
    assert p.sealed("a", 12.5)
    assert not p.sealed("a", 20.0)  # long after: a new, single write


def test_a_file_open_for_writing_waits_until_its_last_close() -> None:
    p = SettlePolicy(2.0)
    assert not p.writing("a", True, 0.0)
    assert p.sealed("a", 10.0)  # sealed by a flush while still open
    assert p.writing("a", False, 10.1)  # closed: its queued entry may go now
    p.writing("b", True, 0.0)
    assert p.sealed("b", 10.0)
    assert p.sealed("b", 11.0)
    assert not p.writing("b", False, 11.5)  # closed, but rewritten within the delay: wait


def test_memory_is_bounded() -> None:
    p = SettlePolicy(1.0)
    for i in range(10_000):
        p.sealed(f"f{i}", float(i))
    assert len(p._sealed_at) <= 4097
