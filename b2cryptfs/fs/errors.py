"""The one table from failures to errno (domain errors carry none of their own).

It imports no pyfuse3, so the vfs tiers of the tests can use it without FUSE; the handler
wrappers that raise ``FUSEError`` are in :mod:`b2cryptfs.fs.handlers`.
"""

from __future__ import annotations

import errno

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

# Failures that are ordinary answers, not worth more than a debug line.
QUIET = {
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
