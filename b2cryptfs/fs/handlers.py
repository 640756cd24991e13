"""Wrapping every FUSE handler so that only ``FUSEError`` leaves it.

pyfuse3 only understands ``FUSEError``: any other exception escaping a handler ends the main
loop and with it the mount. Expected failures (:class:`B2CryptfsError` and ``OSError``) become
their errno (:mod:`b2cryptfs.fs.errors`), anything else is logged with its traceback and
becomes EIO.
"""

from __future__ import annotations

import errno
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pyfuse3
import trio

from b2cryptfs.errors import B2CryptfsError, NotFound
from b2cryptfs.fs.errors import QUIET, errno_of

log = logging.getLogger("b2cryptfs.fs")

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def handler(fn: F) -> F:
    """Wrap an async Operations method: only FUSEError may leave it."""
    name = fn.__name__

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return await fn(*args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except trio.Cancelled:
            raise
        except (B2CryptfsError, OSError) as exc:
            code = errno_of(exc)
            if isinstance(exc, NotFound):
                # The listing showed it, the store says it is gone: worth a line in the log.
                log.warning("%s: %s", name, exc)
            elif code in QUIET:
                log.debug("%s: %s", name, exc)
            elif code == errno.EIO:
                log.error("%s failed: %s", name, exc)
            elif code in (errno.ENOSPC, errno.EDQUOT):
                log.warning("%s: the cache directory's disk is full: %s", name, exc)
            else:
                log.info("%s: %s (%s)", name, exc, errno.errorcode.get(code, code))
            raise pyfuse3.FUSEError(code) from None
        except Exception:  # noqa: BLE001 - the mount must survive any bug
            log.exception("unexpected error in %s", name)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return wrapper  # type: ignore[return-value]


def quiet(fn: F) -> F:
    """Wrap a method that must not raise at all (forget, releasedir...)."""
    name = fn.__name__

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return await fn(*args, **kwargs)
        except trio.Cancelled:
            raise
        except Exception:  # noqa: BLE001
            log.exception("unexpected error in %s", name)
            return None

    return wrapper  # type: ignore[return-value]
