"""The small records the vfs parts hand each other: attributes, a file's view, a handle."""

from __future__ import annotations

from dataclasses import dataclass

from b2cryptfs.bucket.meta import UNKNOWN, Meta
from b2cryptfs.bucket.pairs import FileEntry
from b2cryptfs.vfs.localcontent import LocalContent
from b2cryptfs.vfs.namespace import Node
from b2cryptfs.vfs.openfile import RemoteContent
from b2cryptfs.vfs.outbox import OutboxEntry


@dataclass
class Attr:
    ino: int
    mode: int
    nlink: int
    uid: int
    gid: int
    size: int
    mtime_ns: int
    ctime_ns: int
    blocks: int
    blksize: int
    attr_timeout: float
    entry_timeout: float
    atime_ns: int | None = None  # None: shown as the mtime
    rdev: int = 0


@dataclass
class FileView:
    """What a path shows as a file, and where its content is."""

    size: int
    mtime_ns: int
    exact: bool
    remote: FileEntry | None
    pending: OutboxEntry | None
    staged: Node | None
    meta: Meta = UNKNOWN

    @property
    def version(self) -> str | None:
        if self.staged is not None:
            return None
        if self.pending is not None:
            return f"outbox:{self.pending.seq}"
        assert self.remote is not None
        return self.remote.content.version_id


@dataclass(eq=False)
class Handle:
    fh: int
    node: Node
    readable: bool
    writable: bool
    remote: RemoteContent | None = None
    local: LocalContent | None = None
    empty: bool = False
    version: str | None = None  # the pinned content version
    direct: bool = False  # reads bypass the kernel's page cache (direct_io)
    next_off: int = 0
    readahead: int = 0
    ahead_upto: int = 0  # chunks below this index were already asked for
    privileged: bool = True  # opened by root: its writes keep setuid/setgid
