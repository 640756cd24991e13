"""Inodes and the directory listing cache.

An inode number is given to a path the first time it is seen and stays with it for the
life of the mount (a rename carries it along, directories with all their descendants).
Each node counts the kernel's lookups; a node whose path is gone is dropped once the kernel
forgets it and no handle holds it.

A directory level is one store listing, trusted for ``dir_cache_time`` seconds. The mount's
own changes are applied to the cached listing in place, so they show at once; changes of
other writers show when the listing expires.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from dataclasses import dataclass, field

import trio

from b2cryptfs.bucket.meta import UNKNOWN, Meta
from b2cryptfs.bucket.pairs import DirListing, FileEntry
from b2cryptfs.vfs.fserror import OpError
from b2cryptfs.vfs.staging import Staging

ROOT_INO = 1


def join(dirpath: str, leaf: str) -> str:
    return f"{dirpath}/{leaf}" if dirpath else leaf


def split(path: str) -> tuple[str, str]:
    """``"a/b/c"`` -> (``"a/b"``, ``"c"``); ``"c"`` -> (``""``, ``"c"``)."""
    parent, _, leaf = path.rpartition("/")
    return parent, leaf


def is_under(path: str, top: str) -> bool:
    """Is ``path`` strictly below directory ``top``?"""
    return path.startswith(top + "/") if top else bool(path)


@dataclass(eq=False)
class Node:
    ino: int
    path: str
    is_dir: bool
    lookups: int = 0
    # A file: the metadata its staging content is sealed with (set while staged). A
    # directory: its stored metadata as last listed (the root's: from the root listing).
    meta: Meta | None = None
    # A directory's implicit mtime not stored yet (vfs/dirtimes.py); None: none pending.
    dir_mtime_ns: int | None = None
    # A directory's change time not stored yet (a rename of it), likewise.
    dir_ctime_ns: int | None = None
    # Writing: the staging file holds the newest content while the file is open.
    staging: Staging | None = None
    dirty: bool = False
    content_mtime_ns: int = 0
    open_count: int = 0
    unlinked: bool = False
    # The content version the kernel's page cache holds for this inode.
    cache_version: str | None = None
    last_size: int = 0
    last_mtime_ns: int = 0
    last_meta: Meta = UNKNOWN  # frozen: one shared instance
    # The exact size last told to the kernel (None: an estimate, or never told).
    kernel_size: int | None = None
    _lock: trio.Lock | None = None

    @property
    def lock(self) -> trio.Lock:
        """The file's content lock, made when first taken: a listing makes a node per entry
        (2,000 for ``ls -l`` of as many files) and few of them are ever opened."""
        if self._lock is None:
            self._lock = trio.Lock()
        return self._lock


class InodeTable:
    def __init__(self) -> None:
        self.by_ino: dict[int, Node] = {}
        self.by_path: dict[str, Node] = {}
        self._next = ROOT_INO + 1
        self._staged: set[Node] = set()
        root = Node(ROOT_INO, "", True, lookups=1)
        self.by_ino[ROOT_INO] = root
        self.by_path[""] = root

    def get(self, ino: int) -> Node:
        node = self.by_ino.get(ino)
        if node is None:
            raise OpError(errno.ENOENT, f"unknown inode {ino}")
        return node

    def node_for(self, path: str, is_dir: bool) -> Node:
        """The node of ``path``, created if new; a type change gets a new node."""
        node = self.by_path.get(path)
        if node is not None and node.is_dir == is_dir:
            return node
        if node is not None:
            self.detach(path)
        node = Node(self._next, path, is_dir)
        self._next += 1
        self.by_ino[node.ino] = node
        self.by_path[path] = node
        return node

    def detach(self, path: str) -> Node | None:
        """The path is gone: its node lives on only while the kernel or a handle holds it."""
        node = self.by_path.pop(path, None)
        if node is None:
            return None
        if node.is_dir:
            for p in [p for p in self.by_path if is_under(p, path)]:
                self.detach(p)
        self._lose_name(node)
        return node

    def _lose_name(self, node: Node) -> None:
        node.unlinked = True
        if node.open_count == 0 and node.staging is not None:
            # Content nobody can reach any more (say a closed file whose sealing failed
            # on a full disk): free its disk space now, not at unmount.
            node.dirty = False
            self.set_staging(node, None)
        self._maybe_drop(node)

    def move(self, old: str, new: str) -> None:
        """Carry the node of ``old`` (and, for a directory, its descendants) to ``new``."""
        moving = [(p, n) for p, n in self.by_path.items() if p == old or is_under(p, old)]
        for p, _ in moving:
            del self.by_path[p]
        for p, n in moving:
            newp = new + p[len(old) :]
            replaced = self.by_path.pop(newp, None)
            if replaced is not None and replaced is not n:
                self._lose_name(replaced)
            n.path = newp
            self.by_path[newp] = n

    def forget(self, ino: int, count: int) -> None:
        node = self.by_ino.get(ino)
        if node is None or ino == ROOT_INO:
            return
        node.lookups = max(0, node.lookups - count)
        self._maybe_drop(node)

    def release(self, node: Node) -> None:
        self._maybe_drop(node)

    def _maybe_drop(self, node: Node) -> None:
        if node.unlinked and node.lookups == 0 and node.open_count == 0:
            self.by_ino.pop(node.ino, None)

    def set_staging(self, node: Node, staging: Staging | None) -> None:
        """Attach (or with None, close and drop) a node's staging file."""
        if node.staging is not None and node.staging is not staging:
            node.staging.close()
        node.staging = staging
        if staging is None:
            self._staged.discard(node)
        else:
            self._staged.add(node)

    def staged(self) -> Iterator[Node]:
        """Nodes with a staging file (open for writing) that still have a name."""
        for node in list(self._staged):
            if not node.unlinked:
                yield node


@dataclass
class DirState:
    files: dict[str, FileEntry]
    dirs: set[str]
    has_marker: bool
    fetched: float
    dir_metas: dict[str, Meta] = field(default_factory=dict)  # subdirectories' metadata
    own_meta: Meta | None = None  # the root's own (its root object); None elsewhere

    @classmethod
    def from_listing(cls, listing: DirListing, now: float) -> DirState:
        return cls(
            dict(listing.files),
            set(listing.dirs),
            listing.has_marker,
            now,
            dict(listing.dir_metas),
            listing.own_meta,
        )


class PathIndex:
    """Counts of paths per directory, for listing what exists only locally (pending uploads).

    ``add("a/b/c")`` makes ``c`` a file of ``a/b``, ``b`` a directory of ``a`` and ``a`` one
    of the root; each costs O(depth), so a listing never scans every pending path.
    """

    def __init__(self) -> None:
        self._files: dict[str, dict[str, int]] = {}
        self._dirs: dict[str, dict[str, int]] = {}

    @staticmethod
    def _bump(table: dict[str, dict[str, int]], d: str, leaf: str, delta: int) -> None:
        leaves = table.setdefault(d, {})
        n = leaves.get(leaf, 0) + delta
        if n > 0:
            leaves[leaf] = n
        else:
            leaves.pop(leaf, None)
            if not leaves:
                del table[d]

    def _apply(self, path: str, delta: int) -> None:
        parent, leaf = split(path)
        self._bump(self._files, parent, leaf, delta)
        while parent:
            up, name = split(parent)
            self._bump(self._dirs, up, name, delta)
            parent = up

    def add(self, path: str) -> None:
        self._apply(path, 1)

    def remove(self, path: str) -> None:
        self._apply(path, -1)

    def has_dir(self, dirpath: str, leaf: str) -> bool:
        return leaf in self._dirs.get(dirpath, ())

    def files(self, dirpath: str) -> set[str]:
        return set(self._files.get(dirpath, ()))

    def dirs(self, dirpath: str) -> set[str]:
        return set(self._dirs.get(dirpath, ()))
