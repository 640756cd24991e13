"""Checks and set-up that run before the mount daemon is forked.

Each function either returns something usable or raises a B2CryptfsError with one line for
the user: mountpoint, cache directory, B2 account options.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import re
import stat as stat_mod

from b2cryptfs.cli.common import (  # noqa: F401 - re-exported for older callers
    CREDENTIAL_VARS,
    load_credentials_file,
    open_store_from_args,
)
from b2cryptfs.errors import MountError, UsageError
from b2cryptfs.store.base import Store

log = logging.getLogger(__name__)

FUSE_DEVICE = "/dev/fuse"
# B2 account settings the b2 command-line tool and b2sdk read from the environment; mount(8)
# passes no environment to a helper, so fstab lines name a file holding them instead.


def check_fuse_device() -> None:
    if not os.path.exists(FUSE_DEVICE):
        raise MountError(f"{FUSE_DEVICE} is missing: is the fuse kernel module loaded?")


def check_mountpoint(path: str) -> str:
    """The absolute mountpoint, or a MountError saying why it cannot be used."""
    if re.fullmatch(r"/dev/fd/\d+", path):
        return path  # mount.fuse3 drop_privileges: an already-open /dev/fuse descriptor
    mnt = os.path.abspath(path)
    try:
        st = os.stat(mnt)
    except FileNotFoundError:
        raise MountError(f"mountpoint does not exist: {mnt}") from None
    except OSError as exc:
        if exc.errno == errno.ENOTCONN:
            raise MountError(
                f"mountpoint {mnt} holds a dead mount (transport endpoint is not connected): "
                f"unmount it first with 'fusermount3 -u {mnt}'"
            ) from None
        raise MountError(f"cannot use mountpoint {mnt}: {exc.strerror}") from None
    if not stat_mod.S_ISDIR(st.st_mode):
        raise MountError(f"mountpoint is not a directory: {mnt}")
    if os.path.ismount(mnt):
        raise MountError(f"mountpoint is busy: something is already mounted on {mnt}")
    return mnt


# A mount must not hang a reader for b2sdk's whole default budget (up to ~45 minutes of
# backoff under a persistent 503): fewer tries of API calls, and transfers retry for as long
# as --io-timeout (the vfs turns a longer wait into EIO).
MOUNT_B2_RETRIES: dict[str, int] = {"max_tries": 6}


def open_store(args: argparse.Namespace) -> Store:
    """Open the store, with the B2 account from --b2-credentials/--b2-account-info if given."""
    timeout = getattr(args, "io_timeout", None)
    # A little under the io-timeout: the store's own error (naming the object) then comes
    # before the vfs's generic "did not answer".
    retry_time = 0.9 * timeout if timeout else None
    return open_store_from_args(args, args.store, **MOUNT_B2_RETRIES, retry_time=retry_time)


def prepare_cache_dir(root: str, store_url: str) -> str:
    """Create the cache root and make sure this store's cache directory is usable and free.

    Returns the store's own directory (``ROOT/<id>``, made by the cache layer). Its lock is
    taken and released again: the daemon takes it for good, but a second mount of the same
    store is refused here, in the foreground.
    """
    from b2cryptfs.cache.cachedir import CacheDir

    root = os.path.abspath(root)
    try:
        os.makedirs(root, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create cache directory {root}: {exc.strerror or exc}") from None
    cache = CacheDir(root, store_url)
    try:
        probe = os.path.join(cache.path, f".probe-{os.getpid()}")
        try:
            with open(probe, "wb"):
                pass
            os.unlink(probe)
        except OSError as exc:
            raise UsageError(
                f"cannot write to cache directory {cache.path}: {exc.strerror}"
            ) from None
        return cache.path
    finally:
        cache.close()
