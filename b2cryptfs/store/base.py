"""The Store protocol: what the upper layers need from an object store.

A store holds objects under names relative to its root (a bucket prefix or a directory).
It knows nothing of encryption: names and bytes in, names and bytes out. Every method is
blocking; async callers run them in threads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, runtime_checkable

# B2's limits on file info, which every store enforces so that DirStore tests catch what B2
# would refuse.
MAX_INFO_ENTRIES = 10
MAX_INFO_BYTES = 7000
MAX_NAME_BYTES = 1024
MAX_SEGMENT_BYTES = 250

# File info key for the source file's mtime: the b2 command-line tool's convention.
MTIME_KEY = "src_last_modified_millis"


@dataclass(frozen=True)
class ObjectInfo:
    """One version of one object.

    ``version_id`` is B2's fileId, or for stores without versions something that changes
    whenever the content does; cached ciphertext is keyed by it and never invalidated.
    ``mtime_ms`` is ``src_last_modified_millis`` from the file info when present, else the
    upload time. ``action`` is ``"upload"`` for live content, ``"hide"`` for a hide marker
    (only in version listings).
    """

    name: str
    size: int
    version_id: str
    mtime_ms: int
    upload_ms: int = 0
    info: dict[str, str] = field(default_factory=dict)
    action: str = "upload"


_T = TypeVar("_T")


def filled(cls: type[_T], fields: dict[str, Any]) -> _T:
    """``cls(**fields)`` for a frozen dataclass at a third of the cost: made once per listed
    object (4,000 for a directory of 2,000 files), where the dataclass's ``__init__`` sets each
    field through ``object.__setattr__``. Filling the instance's dict directly gives the same
    object (equal, hashable, still frozen); ``fields`` must name every field."""
    obj = object.__new__(cls)
    obj.__dict__.update(fields)
    return obj


def listed_object(
    name: str, size: int, version_id: str, mtime_ms: int, upload_ms: int, info: dict[str, str]
) -> ObjectInfo:
    """A live ObjectInfo, made as :func:`filled` does."""
    return filled(
        ObjectInfo,
        {
            "name": name,
            "size": size,
            "version_id": version_id,
            "mtime_ms": mtime_ms,
            "upload_ms": upload_ms,
            "info": info,
            "action": "upload",
        },
    )


@dataclass(frozen=True)
class Listing:
    """One directory level: objects directly under the prefix and sub-prefixes (ending in /)."""

    objects: list[ObjectInfo]
    prefixes: list[str]


@runtime_checkable
class Store(Protocol):
    """Object operations the formats, CLI and mount need.

    Names never start with ``/``; directory prefixes end with ``/``; ``""`` is the root.
    Failures raise subclasses of :class:`b2cryptfs.errors.StoreError`.
    """

    url: str
    # What the backend puts before every name (a bucket path, "" for none); B2 counts it in
    # an object name's length, so name checks add it.
    prefix: str

    def list_dir(self, prefix: str) -> Listing:
        """One level below ``prefix`` (``""`` or ending in ``/``), using a delimiter."""
        ...

    def iter_all(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every live object whose name starts with ``prefix``, recursively, in name order."""
        ...

    def stat(self, name: str) -> ObjectInfo | None:
        """The live version of ``name``, or None."""
        ...

    def read(self, obj: ObjectInfo, offset: int = 0, length: int | None = None) -> bytes:
        """Bytes of exactly that version (by ``version_id``); ``length=None`` reads to the end."""
        ...

    def download(self, obj: ObjectInfo, path: str) -> None:
        """Write the whole of that version to a local file (streaming, bounded memory)."""
        ...

    def upload_file(
        self,
        name: str,
        path: str,
        info: dict[str, str],
        progress: Callable[[int], None] | None = None,
        sha1: str | None = None,
    ) -> ObjectInfo:
        """Create a new version of ``name`` from a local file, atomically.

        ``progress`` is called with the number of bytes sent so far as they go (from the
        transfer's threads; after a retry the count starts again from 0). ``sha1``: the
        file's SHA-1 (hex) if the caller took it already (B2 checks it on arrival)."""
        ...

    def upload_bytes(self, name: str, data: bytes, info: dict[str, str]) -> ObjectInfo:
        """Create a new version of ``name`` from bytes, atomically."""
        ...

    def copy(
        self, src: ObjectInfo, dst_name: str, info: dict[str, str] | None = None
    ) -> ObjectInfo:
        """Server-side copy of one version (content and info) to a new name; ``info``: the
        copy's file info instead of the source's (B2: the same one request)."""
        ...

    def update_info(self, obj: ObjectInfo, info: dict[str, str]) -> ObjectInfo:
        """A new version of ``obj.name`` with the same bytes and ``info`` as its file info,
        made without moving the bytes through the client (B2: server-side copy with new
        info; DirStore: the info rewritten in place). The old version may remain (B2)."""
        ...

    def hide(self, name: str) -> None:
        """Make ``name`` invisible (B2 hide marker; DirStore deletes). Missing is not an error."""
        ...

    def delete_version(self, obj: ObjectInfo) -> None:
        """Delete exactly that version."""
        ...

    def versions(self, name: str) -> list[ObjectInfo]:
        """Every version of exactly ``name``, newest first, hide markers included."""
        ...


def validate_name(name: str) -> None:
    """Raise if B2 would refuse ``name``; stores call it before any write."""
    from b2cryptfs.errors import InvalidName, NameTooLong

    raw = name.encode("utf-8", "surrogateescape")
    if not name or name.startswith("/"):
        raise InvalidName(f"invalid object name {name!r}")
    if len(raw) > MAX_NAME_BYTES:
        raise NameTooLong(
            f"object name is {len(raw)} bytes, B2 allows {MAX_NAME_BYTES}: {name[:60]}…"
        )
    for seg in name.split("/"):
        if len(seg.encode("utf-8", "surrogateescape")) > MAX_SEGMENT_BYTES:
            raise NameTooLong(f"a path segment is over {MAX_SEGMENT_BYTES} bytes: {seg[:60]}…")
    if name.endswith("/") or "//" in name:
        # b2sdk refuses these before sending; every store does the same.
        raise InvalidName(f"object name ends with '/' or contains '//': {name!r}")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise InvalidName(f"object name has a control character: {name!r}")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidName(f"object name is not valid UTF-8: {name!r}") from None


def validate_info(info: dict[str, str]) -> None:
    """Raise if B2 would refuse this file info (10 entries, 7,000 bytes in all)."""
    from b2cryptfs.errors import InvalidName

    if len(info) > MAX_INFO_ENTRIES:
        raise InvalidName(f"{len(info)} file info entries, B2 allows {MAX_INFO_ENTRIES}")
    total = sum(len(k.encode()) + len(v.encode()) for k, v in info.items())
    if total > MAX_INFO_BYTES:
        raise InvalidName(f"file info is {total} bytes, B2 allows {MAX_INFO_BYTES}")
