"""Worker-thread calls whose wait can be cancelled."""

from __future__ import annotations

import inspect

import trio

# A stopping daemon must not wait for a store call that may retry for minutes: the wait for
# such a thread can be cancelled (the thread is abandoned and finishes on its own).
# Trio renamed the flag from "cancellable" to "abandon_on_cancel" in 0.23.
ABANDON_ON_CANCEL: dict[str, bool] = (
    {"abandon_on_cancel": True}
    if "abandon_on_cancel" in inspect.signature(trio.to_thread.run_sync).parameters
    else {"cancellable": True}
)
