"""The cycle collector pauses (vfs/collector.py), around listings and for a mount's start-up:
nested and concurrent blocks, and a collector that was off before stays off."""

from __future__ import annotations

import gc
import threading

from b2cryptfs.vfs import collector
from b2cryptfs.vfs.collector import collector_paused


def test_paused_inside_resumed_after_the_last_block() -> None:
    assert gc.isenabled()
    with collector_paused():
        assert not gc.isenabled()
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outer block still runs
    assert gc.isenabled()


def test_resumed_after_an_exception() -> None:
    try:
        with collector_paused():
            raise ValueError("listing failed")
    except ValueError:
        pass
    assert gc.isenabled()


def test_concurrent_blocks_in_threads() -> None:
    inside = threading.Barrier(3)
    leave = threading.Event()

    def listing() -> None:
        with collector_paused():
            inside.wait()
            leave.wait(10)

    threads = [threading.Thread(target=listing) for _ in range(2)]
    for t in threads:
        t.start()
    inside.wait()
    assert not gc.isenabled()
    leave.set()
    for t in threads:
        t.join(10)
    assert gc.isenabled()


def test_a_collector_that_was_off_stays_off() -> None:
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_startup_pause_keeps_only_young_passes_until_the_freeze() -> None:
    before = gc.get_threshold()
    collector.pause_for_startup()
    try:
        young, older, oldest = gc.get_threshold()
        assert young == before[0] and older > 1_000_000 and oldest > 1_000_000
        assert gc.isenabled()  # young passes still run
        collector.pause_for_startup()  # a second call changes nothing
        with collector_paused():
            assert not gc.isenabled()
        assert gc.isenabled() and gc.get_threshold()[1] > 1_000_000  # still paused
        collector.freeze_startup_heap()
        assert gc.get_threshold() == before
        collector.end_startup_pause()  # no pause left: nothing to do
        assert gc.get_threshold() == before
    finally:
        collector.end_startup_pause()
        gc.unfreeze()
        gc.set_threshold(*before)


def test_end_without_a_startup_pause_changes_nothing() -> None:
    before = gc.get_threshold()
    gc.set_threshold(500, 7, 3)
    try:
        collector.end_startup_pause()
        assert gc.get_threshold() == (500, 7, 3)
        collector.pause_for_startup()
        collector.end_startup_pause()
        assert gc.get_threshold() == (500, 7, 3)  # what was set before the pause
    finally:
        gc.set_threshold(*before)
