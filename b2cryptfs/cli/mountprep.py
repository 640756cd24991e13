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

from b2cryptfs.cli.common import open_store_from_args
from b2cryptfs.errors import MountError, UsageError
from b2cryptfs.store.base import Store

log = logging.getLogger(__name__)

FUSE_DEVICE = "/dev/fuse"
# B2 account settings the b2 command-line tool and b2sdk read from the environment; mount(8)
# passes no environment to a helper, so fstab lines name a file holding them instead.
CREDENTIAL_VARS = ("B2_APPLICATION_KEY_ID", "B2_APPLICATION_KEY", "B2_ENVIRONMENT")


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


def load_credentials_file(path: str) -> dict[str, str]:
    """KEY=VALUE lines (``export`` and quotes allowed, # comments) for the B2 account."""
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except OSError as exc:
        raise UsageError(f"cannot read B2 credentials file {path}: {exc.strerror}") from None
    values: dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].strip()
        key, eq, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not eq or key not in CREDENTIAL_VARS:
            raise UsageError(
                f"{path}, line {number}: expected one of {', '.join(CREDENTIAL_VARS)}=VALUE"
            )
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key] = value
    missing = [k for k in CREDENTIAL_VARS[:2] if not values.get(k)]
    if missing:
        raise UsageError(f"B2 credentials file {path} lacks {' and '.join(missing)}")
    return values


# A mount must not hang a reader for b2sdk's whole default budget (up to ~45 minutes of
# backoff under a persistent 503): fewer tries, and the vfs turns the failure into EIO.
MOUNT_B2_RETRIES: dict[str, int] = {"max_tries": 6, "op_attempts": 3}


def open_store(args: argparse.Namespace) -> Store:
    """Open the store, with the B2 account from --b2-credentials/--b2-account-info if given.

    A credentials file's key goes straight to the store object, never into the environment
    (which child processes such as fusermount3 inherit).
    """
    if args.b2_account_info:
        # b2sdk's SqliteAccountInfo reads this variable; a path, not a secret.
        os.environ["B2_ACCOUNT_INFO"] = os.path.abspath(args.b2_account_info)
    if not args.b2_credentials:
        return open_store_from_args(args, args.store, **MOUNT_B2_RETRIES)
    if not args.store.startswith("b2://"):
        raise UsageError("--b2-credentials only applies to b2:// stores")
    try:
        mode = os.stat(args.b2_credentials).st_mode
    except OSError:
        mode = 0
    if mode & 0o077:
        log.warning(
            "B2 credentials file %s is readable by others; chmod 600 it", args.b2_credentials
        )
    creds = load_credentials_file(args.b2_credentials)
    from b2cryptfs.store import split_b2_url
    from b2cryptfs.store.b2store import B2Store

    bucket, prefix = split_b2_url(args.store)
    return B2Store(
        bucket,
        prefix,
        realm=args.b2_realm or creds.get("B2_ENVIRONMENT"),
        key_id=creds["B2_APPLICATION_KEY_ID"],
        key=creds["B2_APPLICATION_KEY"],
        **MOUNT_B2_RETRIES,
    )


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
