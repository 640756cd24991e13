"""Turning every failure inside a FUSE handler into an errno.

pyfuse3 only understands ``FUSEError``: any other exception escaping a handler ends the main
loop and with it the mount. Every handler is therefore wrapped: expected failures
(:class:`B2CryptfsError` and ``OSError``) become their errno, anything else is logged with
its traceback and becomes EIO.
"""

from __future__ import annotations

import errno
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pyfuse3
import trio

from b2cryptfs.errors import (
    AlreadyExists,
    B2CryptfsError,
    DirectoryNotEmpty,
    InvalidName,
    KeyError_,
    NameCollision,
    NameTooLong,
    NotFound,
    StoreError,
    UsageError,
)
from b2cryptfs.vfs.fserror import OpError

log = logging.getLogger("b2cryptfs.fs")

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])

# Failures that are ordinary answers, not worth more than a debug line.
_QUIET = {
    errno.ENOENT,
    errno.EEXIST,
    errno.ENOTEMPTY,
    errno.ENODATA,
    errno.EISDIR,
    errno.ENOTDIR,
    errno.ENOTSUP,
    errno.EPERM,
    errno.EACCES,
    errno.EROFS,
    errno.EBADF,
}


# The one table from domain exceptions to errno, most specific class first. Any other
# B2CryptfsError is EIO: in particular every other StoreError, because when the store itself
# failed (gone bucket, revoked or expired key, outage) EACCES or ENOENT would blame the file
# or its permissions, which the user cannot fix.
ERRNO_TABLE: tuple[tuple[type[B2CryptfsError], int], ...] = (
    (NameTooLong, errno.ENAMETOOLONG),
    (InvalidName, errno.EINVAL),
    (NotFound, errno.ENOENT),
    (AlreadyExists, errno.EEXIST),
    (StoreError, errno.EIO),
    (NameCollision, errno.EEXIST),
    (DirectoryNotEmpty, errno.ENOTEMPTY),
    (KeyError_, errno.EACCES),  # no key, wrong key: the file is not ours to read
    (UsageError, errno.EINVAL),
)


def errno_of(exc: BaseException) -> int:
    if isinstance(exc, OpError):
        return exc.errno or errno.EIO  # the vfs already said which POSIX failure it is
    if isinstance(exc, B2CryptfsError):
        for cls, code in ERRNO_TABLE:
            if isinstance(exc, cls):
                return code
        return errno.EIO
    if isinstance(exc, OSError):
        return exc.errno or errno.EIO
    return errno.EIO


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
            elif code in _QUIET:
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
