"""The cycle collector pause around listings (vfs/collector.py): nested and concurrent
blocks, and a collector that was off before stays off."""

from __future__ import annotations

import gc
import threading

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
