"""Exceptions shared by every layer.

Each carries a one-line, user-facing message (``str(exc)``) and a process exit code for the
command-line tools. Which POSIX error a mount answers for each is decided in one table,
:mod:`b2cryptfs.fs.errors`.
"""

from __future__ import annotations


class B2CryptfsError(Exception):
    """Base class: an expected failure with a message fit for the user."""

    exit_code: int = 1


# --- usage -----------------------------------------------------------------------------


class UsageError(B2CryptfsError):
    exit_code = 2


# --- keys ------------------------------------------------------------------------------


class KeyError_(B2CryptfsError):
    """A key could not be loaded or does not fit (base of the key errors)."""

    exit_code = 3


class KeyFileError(KeyError_):
    """A key file is missing, unreadable or not in a format we understand."""


class WrongPassphrase(KeyError_):
    """The passphrase does not decrypt the private key."""


class NoMatchingIdentity(KeyError_):
    """None of the given private keys can unwrap this file's key object."""


class NoPrivateKey(KeyError_):
    """The operation needs a private key and only public keys were given (write-only)."""


# --- formats ---------------------------------------------------------------------------


class FormatError(B2CryptfsError):
    """An object is not in a format we know, or is malformed."""

    exit_code = 4


class IntegrityError(FormatError):
    """Authentication failed: the object was tampered with, truncated or reordered."""


class PairMismatch(IntegrityError):
    """A key object does not belong to the content object next to it."""


# --- store -----------------------------------------------------------------------------


class StoreError(B2CryptfsError):
    """The store failed an operation (base of the store errors)."""

    exit_code = 5


class NotFound(StoreError):
    """No such object or file."""


class AlreadyExists(StoreError):
    """The object or directory exists already."""


class AuthError(StoreError):
    """Bad or expired credentials, or a key without the needed capability."""


class NoSuchBucket(StoreError):
    """The bucket does not exist (or the key may not see it)."""


class InvalidName(StoreError):
    """The store refuses this object name."""


class NameTooLong(InvalidName):
    """An object name (or one segment of it) is longer than the store allows."""


class TransientError(StoreError):
    """A failure that persisted through retries (network, 5xx, throttling)."""


class NameCollision(B2CryptfsError):
    """``P.key`` and ``P`` would share an object: refuse to create one while the other exists."""

    exit_code = 1


class DirectoryNotEmpty(B2CryptfsError):
    """The directory still holds files or directories."""


# --- mounting --------------------------------------------------------------------------


class MountError(B2CryptfsError):
    """The mountpoint cannot be used (missing, not a directory, busy) or the kernel refused
    the mount (no /dev/fuse, no permission...)."""

    exit_code = 32  # mount(8)'s "mount failure"


class CacheDirBusy(B2CryptfsError):
    """Another mount of the same store uses this cache directory."""


# --- the mount's local files -------------------------------------------------------------


class StagingError(B2CryptfsError):
    """The staging file was damaged underneath us (only possible through outside tampering)."""
