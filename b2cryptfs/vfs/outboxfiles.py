"""The outbox's files: one entry per sequence number N in the outbox directory.

Layout 2 (written now): ``N.content`` (the sealed content object) and ``N.json`` (the
manifest: path, mtime, file info, format, sizes, and the key object itself, base64). Making
an entry durable costs three fsyncs: the content file, the manifest's temporary file, then
the directory once the manifest is renamed into place. The content is durable before the
rename can be, so after kill -9 or power loss an entry is absent or complete: it exists
exactly when its manifest does.

Layout 1 (read, and kept when rewritten): the key object in its own ``N.key`` file and a
manifest without it. This module is that protocol and nothing else; the queue and its
uploads are in :mod:`b2cryptfs.vfs.outbox`.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import tempfile
from dataclasses import dataclass, field

import trio

from b2cryptfs.bucket.meta import META_KEY, Meta, decode_meta, encode_meta
from b2cryptfs.bucket.pairs import FileEntry
from b2cryptfs.errors import IntegrityError

log = logging.getLogger("b2cryptfs.vfs.outbox")

QUEUED, UPLOADING, DONE, FAILED, CANCELLED = "queued", "uploading", "done", "failed", "cancelled"
_PENDING = (QUEUED, UPLOADING, FAILED)


@dataclass(eq=False)
class OutboxEntry:
    seq: int
    path: str
    mtime_ms: int
    info: dict[str, str]
    format: str
    plaintext_size: int
    content_size: int
    directory: str
    state: str = QUEUED
    # Its upload may have begun (its key object may be in the store): this run tried it, or
    # an earlier run left it.
    touched: bool = False
    # Failing for good, or for long (vfs/outboxstats.py): the reason, kept in the manifest.
    stuck: str | None = None
    not_before: float = 0.0
    attempts: int = 0
    drain_failures: int = 0
    error: BaseException | None = None
    # Layout 2 keeps the key object in the manifest (and here); layout 1 in ``N.key``.
    key_object: bytes | None = None
    layout: int = 2
    meta: Meta | None = None  # POSIX metadata uploaded with it (plaintext here: local only)
    result: FileEntry | None = None
    done: trio.Event = field(default_factory=trio.Event)
    attempted: trio.Event = field(default_factory=trio.Event)

    @property
    def stem(self) -> str:
        return os.path.join(self.directory, f"{self.seq:012d}")

    @property
    def key_file(self) -> str:
        return self.stem + ".key"

    @property
    def content_file(self) -> str:
        return self.stem + ".content"

    @property
    def manifest_file(self) -> str:
        return self.stem + ".json"

    @property
    def pending(self) -> bool:
        return self.state in _PENDING

    def manifest(self) -> dict[str, object]:
        m: dict[str, object] = {
            "version": self.layout,
            "path": self.path,
            "mtime_ms": self.mtime_ms,
            "info": self.info,
            "format": self.format,
            "plaintext_size": self.plaintext_size,
            "content_size": self.content_size,
        }
        if self.stuck is not None:
            m["stuck"] = self.stuck
        if self.layout >= 2:
            assert self.key_object is not None
            m["key_object"] = base64.b64encode(self.key_object).decode("ascii")
        if self.meta is not None:
            m["meta"] = encode_meta(self.meta)
        return m

    def read_key_object(self) -> bytes:
        if self.key_object is not None:
            return self.key_object
        with open(self.key_file, "rb") as f:
            return f.read()


@dataclass(frozen=True)
class WrittenContent:
    """What a content writer hands the outbox besides the content file it wrote."""

    key_object: bytes
    info: dict[str, str]
    format: str
    plaintext_size: int
    meta: Meta | None = None


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_durably(path: str, data: bytes) -> None:
    """Atomically replace ``path`` with ``data``, durable once this returns."""
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(directory)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def stem_of(directory: str, seq: int) -> str:
    return os.path.join(directory, f"{seq:012d}")


def discard_files(directory: str, seq: int) -> None:
    stem = stem_of(directory, seq)
    # The manifest first: once it is gone the entry is, whatever is left of the rest.
    for ext in (".json", ".key", ".content"):
        _unlink_quietly(stem + ext)


def write_entry(
    directory: str, seq: int, path: str, mtime_ms: int, written: WrittenContent
) -> OutboxEntry:
    """Blocking: make the entry durable (its content file is already written): fsync the
    content, write the manifest with the key object in it, fsync the directory."""
    entry = OutboxEntry(
        seq=seq,
        path=path,
        mtime_ms=mtime_ms,
        info=dict(written.info),
        format=written.format,
        plaintext_size=written.plaintext_size,
        content_size=0,
        directory=directory,
        key_object=bytes(written.key_object),
        meta=written.meta,
    )
    fd = os.open(entry.content_file, os.O_RDONLY)
    try:
        # fdatasync: the size is flushed with the data; the name waits for the directory's.
        os.fdatasync(fd)
        entry.content_size = os.fstat(fd).st_size
    finally:
        os.close(fd)
    # Last, the manifest; its directory fsync also makes the content file's name durable.
    rewrite_manifest(entry)
    return entry


def rewrite_manifest(entry: OutboxEntry) -> None:
    _write_durably(entry.manifest_file, json.dumps(entry.manifest()).encode())


def scan_dir(directory: str) -> tuple[list[OutboxEntry], int]:
    """(entries left by an earlier run, the next free sequence number); removes leftovers
    of interrupted writes. Unusable entries are logged and left in place (their numbers
    stay taken)."""
    found: list[OutboxEntry] = []
    stems: set[str] = set()
    next_seq = 1
    for name in os.listdir(directory):
        full = os.path.join(directory, name)
        if name.startswith(".tmp-"):
            _unlink_quietly(full)
            continue
        stem, _, ext = name.partition(".")
        if ext == "json" and stem.isdigit():
            stems.add(stem)
    for name in os.listdir(directory):
        stem, _, ext = name.partition(".")
        if ext in ("key", "content") and stem not in stems:
            # Sealing was interrupted before the manifest: not an entry.
            _unlink_quietly(os.path.join(directory, name))
    for stem in sorted(stems):
        seq = int(stem)
        next_seq = max(next_seq, seq + 1)
        try:
            with open(os.path.join(directory, stem + ".json"), "rb") as f:
                m = json.load(f)
            layout = int(m.get("version", 1))
            if layout not in (1, 2):
                raise ValueError(f"unknown entry layout {layout}")
            key_object = None
            if layout == 2:
                key_object = base64.b64decode(str(m["key_object"]), validate=True)
            entry = OutboxEntry(
                seq=seq,
                path=str(m["path"]),
                mtime_ms=int(m["mtime_ms"]),
                info={str(k): str(v) for k, v in dict(m["info"]).items()},
                format=str(m["format"]),
                plaintext_size=int(m["plaintext_size"]),
                content_size=int(m["content_size"]),
                directory=directory,
                key_object=key_object,
                layout=layout,
                meta=decode_meta({META_KEY: str(m["meta"])}) if "meta" in m else None,
                touched=True,
                stuck=str(m["stuck"]) if m.get("stuck") is not None else None,
            )
            if layout == 1 and not os.path.isfile(entry.key_file):
                raise ValueError("its key file is missing")
            if not os.path.isfile(entry.content_file):
                raise ValueError("its content file is missing")
            if layout == 2 and os.path.getsize(entry.content_file) != entry.content_size:
                raise ValueError("its content file has the wrong size")
        except (OSError, ValueError, KeyError, TypeError, binascii.Error, IntegrityError) as exc:
            log.error(
                "outbox: entry %s in %s is unusable (%s); leaving it there", stem, directory, exc
            )
            continue
        found.append(entry)
    return found, next_seq
