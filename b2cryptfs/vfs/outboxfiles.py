"""The outbox's files: one entry per sequence number N in the outbox directory.

``N.content`` (the sealed content object), ``N.key`` (the key object) and ``N.json`` (the
manifest: path, mtime, file info, format, sizes). Both objects are complete and fsynced
before the manifest is written, and the manifest is written last (temporary file, fsync,
rename, directory fsync): an entry exists exactly when its manifest does. This module is
that protocol and nothing else; the queue and its uploads are in :mod:`b2cryptfs.vfs.outbox`.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass, field

import trio

from b2cryptfs.bucket.pairs import FileEntry

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
    not_before: float = 0.0
    attempts: int = 0
    drain_failures: int = 0
    error: BaseException | None = None
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
        return {
            "version": 1,
            "path": self.path,
            "mtime_ms": self.mtime_ms,
            "info": self.info,
            "format": self.format,
            "plaintext_size": self.plaintext_size,
            "content_size": self.content_size,
        }

    def read_key_object(self) -> bytes:
        with open(self.key_file, "rb") as f:
            return f.read()


@dataclass(frozen=True)
class WrittenContent:
    """What a content writer hands the outbox besides the content file it wrote."""

    key_object: bytes
    info: dict[str, str]
    format: str
    plaintext_size: int


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
    for ext in (".json", ".key", ".content"):
        _unlink_quietly(stem + ext)


def write_entry(
    directory: str, seq: int, path: str, mtime_ms: int, written: WrittenContent
) -> OutboxEntry:
    """Blocking: make the entry durable (its content file is already written)."""
    entry = OutboxEntry(
        seq=seq,
        path=path,
        mtime_ms=mtime_ms,
        info=dict(written.info),
        format=written.format,
        plaintext_size=written.plaintext_size,
        content_size=0,
        directory=directory,
    )
    with open(entry.content_file, "rb+") as f:
        os.fsync(f.fileno())
        entry.content_size = os.fstat(f.fileno()).st_size
    # The key file needs no rename: without a manifest it is not part of an entry.
    fd = os.open(entry.key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(written.key_object)
        f.flush()
        os.fsync(f.fileno())
    # Last, the manifest; its directory fsync also makes the other two names durable.
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
            entry = OutboxEntry(
                seq=seq,
                path=str(m["path"]),
                mtime_ms=int(m["mtime_ms"]),
                info={str(k): str(v) for k, v in dict(m["info"]).items()},
                format=str(m["format"]),
                plaintext_size=int(m["plaintext_size"]),
                content_size=int(m["content_size"]),
                directory=directory,
            )
            if not (os.path.isfile(entry.key_file) and os.path.isfile(entry.content_file)):
                raise ValueError("its key or content file is missing")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error(
                "outbox: entry %s in %s is unusable (%s); leaving it there", stem, directory, exc
            )
            continue
        found.append(entry)
    return found, next_seq
