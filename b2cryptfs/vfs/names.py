"""Which plaintext names the mount accepts: the ones whose objects B2 would accept.

A file ``a/b`` becomes the objects ``a/b.enc`` and ``a/b.key.enc``, so its leaf may be at most
250 - 8 bytes long and its whole path at most 1,024 - 8 bytes; a directory segment may use
the full 250 bytes. Control characters are refused by B2 altogether. Checking at create,
mkdir and rename time gives the caller ENAMETOOLONG or EINVAL instead of an upload failing
after close.
"""

from __future__ import annotations

import errno

from b2cryptfs.store.base import MAX_NAME_BYTES, MAX_SEGMENT_BYTES
from b2cryptfs.vfs.fserror import OpError
from b2cryptfs.vfs.pairs import EMPTY_MARKER, KEY_SUFFIX

MAX_FILE_LEAF_BYTES = MAX_SEGMENT_BYTES - len(KEY_SUFFIX)  # 242
MAX_FILE_PATH_BYTES = MAX_NAME_BYTES - len(KEY_SUFFIX)


def _encoded(name: str) -> bytes:
    try:
        return name.encode("utf-8")
    except UnicodeEncodeError:
        raise OpError(errno.EINVAL, f"name is not valid UTF-8: {name!r}") from None


def _check_chars(leaf: str) -> None:
    if any(ord(c) < 32 or ord(c) == 127 for c in leaf):
        raise OpError(errno.EINVAL, f"B2 refuses control characters in names: {leaf!r}")
    if "/" in leaf or leaf in ("", ".", ".."):
        raise OpError(errno.EINVAL, f"invalid name {leaf!r}")


def check_file_name(dirpath: str, leaf: str, prefix_bytes: int = 0) -> str:
    """Validate a new file's name; return its path. ``prefix_bytes``: the store's own prefix
    (a bucket path) that B2 counts in the object name too."""
    _check_chars(leaf)
    if len(_encoded(leaf)) > MAX_FILE_LEAF_BYTES:
        raise OpError(
            errno.ENAMETOOLONG,
            f"file name over {MAX_FILE_LEAF_BYTES} bytes (B2 allows {MAX_SEGMENT_BYTES} "
            f"including {KEY_SUFFIX!r}): {leaf[:60]}…",
        )
    path = f"{dirpath}/{leaf}" if dirpath else leaf
    if len(_encoded(path)) + prefix_bytes > MAX_FILE_PATH_BYTES:
        raise OpError(errno.ENAMETOOLONG, f"path too long for B2: {path[:60]}…")
    return path


def check_dir_name(dirpath: str, leaf: str, prefix_bytes: int = 0) -> str:
    """Validate a new directory's name; return its path."""
    _check_chars(leaf)
    if len(_encoded(leaf)) > MAX_SEGMENT_BYTES:
        raise OpError(
            errno.ENAMETOOLONG, f"directory name over {MAX_SEGMENT_BYTES} bytes: {leaf[:60]}…"
        )
    path = f"{dirpath}/{leaf}" if dirpath else leaf
    # The directory's marker object (and any file in it) must fit too.
    if len(_encoded(path)) + prefix_bytes + 1 + len(EMPTY_MARKER) > MAX_NAME_BYTES:
        raise OpError(errno.ENAMETOOLONG, f"path too long for B2: {path[:60]}…")
    return path


def decode_leaf(raw: bytes) -> str:
    """A name from the kernel (bytes) as str; names that are not UTF-8 cannot exist in B2."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise OpError(errno.EINVAL, f"name is not valid UTF-8: {raw!r}") from None
