"""How a plaintext tree is laid out as object names: suffixes, markers, one classify, one check.

A file ``P`` is the objects ``P.enc`` (content) and ``P.key.enc`` (its wrapped key); an empty
directory ``D`` holds the marker ``D/.bzEmpty`` and its metadata is in ``D.b2cryptfs-dir``
beside it; the store root (under a prefix: the prefix) keeps its own metadata in
``.b2cryptfs-root`` inside it, having no parent level; a name-encrypted tree has its name key
at its root. Every other module asks this one what an object name means.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from b2cryptfs.errors import InvalidName, NameTooLong
from b2cryptfs.formats.names import SUFFIX_RESERVE
from b2cryptfs.store.base import MAX_NAME_BYTES, MAX_SEGMENT_BYTES

KEY_SUFFIX = ".key.enc"
CONTENT_SUFFIX = ".enc"
EMPTY_MARKER = ".bzEmpty"
# File info key naming the codec that wrote a pair.
INFO_FORMAT = "b2cryptfs-format"
# Set by rotate: the recipients fingerprint a key object was re-wrapped for (resuming).
INFO_RECIPIENTS = "b2cryptfs-recipients"
# Set by rotate: the recipients themselves (age1… strings, rsa: digests), comma-separated.
INFO_RECIPIENT_LIST = "b2cryptfs-recipient-list"
# The name key of a name-encrypted tree (an age file), at the tree's root; its presence is
# what marks the tree as name-encrypted (see b2cryptfs.bucket.namekey).
NAME_KEY_OBJECT = ".b2cryptfs-names.age"
# A directory's own metadata: an empty object beside it at the parent level, ``D.b2cryptfs-dir``
# (never a pair object: it does not end in ``.enc``), so the parent's listing brings it along.
DIR_SUFFIX = ".b2cryptfs-dir"
# The store root's own metadata (mode, owner, times of the mount's root): an empty object in
# the root, as the root has no parent level to hold a dir object. Under a prefix the prefix is
# the root. Its name is plain (like the name key object's); its metadata is sealed as any
# dir object's is.
ROOT_META_OBJECT = ".b2cryptfs-root"

# The longest name (one path segment) in bytes, as Linux filesystems allow.
NAME_MAX = 255
# A file leaf gets KEY_SUFFIX appended, so it has that much less room than a segment.
MAX_FILE_LEAF_BYTES = MAX_SEGMENT_BYTES - len(KEY_SUFFIX)  # 242
MAX_FILE_PATH_BYTES = MAX_NAME_BYTES - len(KEY_SUFFIX)
# Encrypted leaves leave room for the suffixes appended here.
assert max(len(KEY_SUFFIX), len(CONTENT_SUFFIX)) <= SUFFIX_RESERVE

Kind = Literal["content", "key", "marker", "name-key", "dir-meta", "root-meta", "stray"]


def content_name(path: str) -> str:
    return path + CONTENT_SUFFIX


def key_name(path: str) -> str:
    return path + KEY_SUFFIX


def join(dirpath: str, leaf: str) -> str:
    return f"{dirpath}/{leaf}" if dirpath else leaf


def dir_prefix(dirpath: str) -> str:
    dirpath = dirpath.strip("/")
    return dirpath + "/" if dirpath else ""


def name_key_object(root: str) -> str:
    """The name key object of a tree rooted at ``root`` (a directory path, "" = store root)."""
    return dir_prefix(root) + NAME_KEY_OBJECT


def marker_name(dirpath: str) -> str:
    return dir_prefix(dirpath) + EMPTY_MARKER


def dir_object_name(dirpath: str) -> str:
    """The object holding directory ``dirpath``'s metadata (an object-side path); the store
    root's is :data:`ROOT_META_OBJECT`."""
    dirpath = dirpath.strip("/")
    return dirpath + DIR_SUFFIX if dirpath else ROOT_META_OBJECT


def classify(
    name: str, exists: Callable[[str], bool], *, encrypted: bool = False
) -> tuple[Kind, str]:
    """What the object ``name`` is, and the path it belongs to (without suffix).

    ``exists`` answers whether another object name (in the same naming) is present; it is
    asked only for plain names ending in ``.key.enc``. The pairing rule: ``X.key.enc`` is
    X's key object when ``X.enc`` exists, and an orphan key object when it has no key of
    its own; only otherwise the content of a file ``X.key``. Encrypted leaves have no dot,
    so there the suffix alone decides.
    """
    dirpart, _, leaf = name.rpartition("/")
    if leaf == EMPTY_MARKER:
        return "marker", dirpart
    if leaf == NAME_KEY_OBJECT:
        return "name-key", dirpart
    if leaf == ROOT_META_OBJECT:
        return "root-meta", dirpart
    if leaf.endswith(DIR_SUFFIX) and len(leaf) > len(DIR_SUFFIX):
        return "dir-meta", name[: -len(DIR_SUFFIX)]
    if encrypted:
        base, _, suffix = leaf.partition(".")
        if not base or suffix not in ("enc", "key.enc"):
            return "stray", name
        return ("content" if suffix == "enc" else "key"), join(dirpart, base)
    if not leaf.endswith(CONTENT_SUFFIX) or leaf == CONTENT_SUFFIX:
        return "stray", name
    path = name[: -len(CONTENT_SUFFIX)]
    if path.endswith(".key") and (exists(content_name(path[:-4])) or not exists(key_name(path))):
        return "key", path[:-4]
    return "content", path


def _encoded(name: str) -> bytes:
    try:
        return name.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidName(f"name is not valid UTF-8: {name!r}") from None


def check_leaf(leaf: str) -> None:
    """Raise InvalidName for a leaf no store accepts (control characters, '/', '.', '..')."""
    if any(ord(c) < 32 or ord(c) == 127 for c in leaf):
        raise InvalidName(f"B2 refuses control characters in names: {leaf!r}")
    if "/" in leaf or leaf in ("", ".", ".."):
        raise InvalidName(f"invalid name {leaf!r}")


def check_new_name(dirpath: str, leaf: str, *, is_dir: bool, prefix_bytes: int = 0) -> str:
    """Validate the plaintext name of a new file or directory; return its path.

    A leaf may have NAME_MAX (255) bytes of UTF-8, as on ext4: a leaf with no room in a store
    segment is stored under a long-name stand-in. ``prefix_bytes``: the store's own prefix
    (a bucket path), which B2 counts in the object name too; the whole path must fit the
    store's name limit. Raises InvalidName or NameTooLong; the object names as the store
    will see them are checked as well (:meth:`PairStore.check_name`).
    """
    check_leaf(leaf)
    path = join(dirpath, leaf)
    if len(_encoded(leaf)) > NAME_MAX:
        raise NameTooLong(f"name over {NAME_MAX} bytes: {leaf[:60]}…")
    if is_dir:
        # The directory's marker object (and any file in it) must fit too.
        if len(_encoded(path)) + prefix_bytes + 1 + len(EMPTY_MARKER) > MAX_NAME_BYTES:
            raise NameTooLong(f"path too long for B2: {path[:60]}…")
        return path
    if len(_encoded(path)) + prefix_bytes > MAX_FILE_PATH_BYTES:
        raise NameTooLong(f"path too long for B2: {path[:60]}…")
    return path


def decode_leaf(raw: bytes) -> str:
    """A name from the kernel (bytes) as str; names that are not UTF-8 cannot exist in B2."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidName(f"name is not valid UTF-8: {raw!r}") from None
