"""The retries of one B2 API call (a listing, an authorization, an upload URL), and the
marker that a transfer's own deadline-bound loop is running in this thread.

An API call is tried a few times (b2sdk's count for such calls, capped by B2Store's
``max_tries``), pausing as a 429 or 503 asks or growing from ``backoff``. Inside a transfer
(read, upload, copy: B2Store._retry) one try only: the transfer retries until its deadline,
and stacking fixed-count retries under it would overrun that deadline. The same loop serves
b2sdk's HTTP layer when b2sdk is loaded (its exceptions have the same two attributes).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
API_TRIES = 5  # b2sdk's B2Http.TRY_COUNT_OTHER
LONGEST_PAUSE = 64.0

# ``active`` is set while a transfer runs in this thread (B2Store._retry).
transfer = threading.local()


def in_transfer() -> bool:
    return getattr(transfer, "active", False)


def retrying(call: Callable[[], T], try_count: int, max_tries: int | None, backoff: float) -> T:
    """``call()``, again while it raises an exception whose ``should_retry_http()`` is
    true, at most ``try_count`` (capped by ``max_tries``) times in all."""
    if in_transfer():
        return call()
    if max_tries is not None:
        try_count = max(1, min(try_count, max_tries))
    wait = backoff
    for _ in range(try_count - 1):
        try:
            return call()
        except Exception as e:
            should = getattr(e, "should_retry_http", None)
            if should is None or not should():
                raise
            after = getattr(e, "retry_after_seconds", None)
            delay = after if after is not None else wait
            log.info("B2 call failed (%s); retrying in %.1f s", e, delay)
            time.sleep(min(float(delay), LONGEST_PAUSE))
            wait = min(wait * 1.5, LONGEST_PAUSE) * (1 + random.random() / 10)
    return call()
