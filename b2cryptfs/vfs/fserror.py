"""The error the vfs raises for a plain POSIX failure (ENOENT, EISDIR, ENOTEMPTY...)."""

from __future__ import annotations

from b2cryptfs.errors import B2CryptfsError


class OpError(B2CryptfsError):
    """A filesystem operation failed with ``errno``; the message is for the log."""

    def __init__(self, errno: int, message: str = "") -> None:
        super().__init__(message or f"errno {errno}")
        self.errno = errno
