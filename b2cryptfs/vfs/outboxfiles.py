"""The outbox's files: one entry per sequence number N in the outbox directory.

Layout 2 (written now): ``N.content`` (the sealed content object) and ``N.json`` (the
manifest: path, mtime, file info, format, sizes, the content's SHA-1 and the key object
itself, base64). An entry exists exactly when its manifest does; the manifest is written to a
temporary file and renamed into place, so a killed daemon (kill -9: the page cache survives
it) leaves an entry absent or complete.

Sealing does not wait for the disk (ext4's close() does not either): a ``durable=True`` write
syncs the content, the manifest and the directory before it returns; otherwise the committer
(vfs/outboxcommit.py) does so soon after, in batches. A power loss in between can leave a
manifest whose content never reached the disk: a torn entry. A clean stop leaves the mark
``outbox.clean`` beside the directory (every entry then is durable); without it, the scan
checks every entry's content against its size and SHA-1 and drops the torn ones
(:func:`scan_dir`).

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
from b2cryptfs.cache.outboxcheck import clean_mark, fsync_dir, torn_reason
from b2cryptfs.errors import IntegrityError
from b2cryptfs.vfs.outboxcontent import ContentFile, WrittenContent, take_spare, unlink_quietly
from b2cryptfs.vfs.outboxspares import Spares

log = logging.getLogger("b2cryptfs.vfs.outbox")

QUEUED, UPLOADING, DONE, FAILED, CANCELLED = "queued", "uploading", "done", "failed", "cancelled"
# Beside the outbox directory (an empty outbox stays empty): left by a clean stop (every
# entry then is durable), taken (removed) by the next scan.
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
    # The content file's SHA-1 (hex) taken while sealing: the scan checks it after an unclean
    # stop and the upload passes it on (no second read). None in older manifests.
    content_sha1: str | None = None
    state: str = QUEUED
    # Its upload may have begun (its key object may be in the store): this run tried it, or
    # an earlier run left it.
    touched: bool = False
    # Failing for good, or for long (vfs/outboxstats.py): the reason, kept in the manifest.
    stuck: str | None = None
    not_before: float = 0.0
    # Until then (trio time) its upload yields to a burst of closes: vfs/outbox.py.
    yields_until: float = 0.0
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
        if self.content_sha1 is not None:
            m["content_sha1"] = self.content_sha1
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


def _write_atomically(
    path: str, data: bytes, *, durable: bool = True, spares: Spares | None = None
) -> None:
    """Atomically replace ``path`` with ``data`` (write a temporary file or a spare, rename
    it); with ``durable``, on the disk once this returns."""
    directory = os.path.dirname(path)
    spare = take_spare(spares)
    fd, tmp = spare if spare is not None else tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if durable:
        fsync_dir(directory)


def stem_of(directory: str, seq: int) -> str:
    return os.path.join(directory, f"{seq:012d}")


def discard_files(directory: str, seq: int) -> None:
    stem = stem_of(directory, seq)
    # The manifest first: once it is gone the entry is, whatever is left of the rest.
    for ext in (".json", ".key", ".content"):
        unlink_quietly(stem + ext)


def write_entry(
    directory: str,
    seq: int,
    path: str,
    mtime_ms: int,
    written: WrittenContent,
    *,
    content: ContentFile | None = None,
    durable: bool = True,
    spares: Spares | None = None,
) -> OutboxEntry:
    """Blocking: write the entry's manifest, with the key object in it, atomically, once its
    content file is written (``content``, closed; None: a file written by other means, looked
    at here). With ``durable`` the content (unless ``content`` synced it), the manifest and
    the directory are synced; otherwise the committer must see to it."""
    entry = OutboxEntry(
        seq=seq,
        path=path,
        mtime_ms=mtime_ms,
        info=dict(written.info),
        format=written.format,
        plaintext_size=written.plaintext_size,
        content_size=content.size if content is not None else 0,
        content_sha1=content.sha1 if content is not None else None,
        directory=directory,
        key_object=bytes(written.key_object),
        meta=written.meta,
    )
    if content is None:
        fd = os.open(entry.content_file, os.O_RDONLY)
        try:
            if durable:
                os.fdatasync(fd)
            entry.content_size = os.fstat(fd).st_size
        finally:
            os.close(fd)
    # Last, the manifest; its directory fsync also makes the content file's name durable.
    rewrite_manifest(entry, durable=durable, spares=spares)
    return entry


def rewrite_manifest(
    entry: OutboxEntry, *, durable: bool = True, spares: Spares | None = None
) -> None:
    data = json.dumps(entry.manifest()).encode()
    _write_atomically(entry.manifest_file, data, durable=durable, spares=spares)


def mark_clean(directory: str) -> None:
    """Blocking: a clean stop; call only once every entry is durable."""
    _write_atomically(clean_mark(directory), b"", durable=True)


def _read_manifest(directory: str, stem: str) -> OutboxEntry:
    seq = int(stem)
    with open(os.path.join(directory, stem + ".json"), "rb") as f:
        m = json.load(f)
    layout = int(m.get("version", 1))
    if layout not in (1, 2):
        raise ValueError(f"unknown entry layout {layout}")
    key_object = None
    if layout == 2:
        key_object = base64.b64decode(str(m["key_object"]), validate=True)
    return OutboxEntry(
        seq=seq,
        path=str(m["path"]),
        mtime_ms=int(m["mtime_ms"]),
        info={str(k): str(v) for k, v in dict(m["info"]).items()},
        format=str(m["format"]),
        plaintext_size=int(m["plaintext_size"]),
        content_size=int(m["content_size"]),
        content_sha1=str(m["content_sha1"]) if m.get("content_sha1") is not None else None,
        directory=directory,
        key_object=key_object,
        layout=layout,
        meta=decode_meta({META_KEY: str(m["meta"])}) if "meta" in m else None,
        touched=True,
        stuck=str(m["stuck"]) if m.get("stuck") is not None else None,
    )


def scan_dir(directory: str, *, verify: bool = False) -> tuple[list[OutboxEntry], int]:
    """(entries left by an earlier run, the next free sequence number); removes leftovers
    of interrupted writes. Unusable entries are logged and left in place (their numbers
    stay taken).

    ``verify`` (the earlier run did not stop cleanly): each entry's content is checked
    against its manifest, and a torn one (:func:`torn_reason`, or a manifest that is not
    even JSON: its own data never reached the disk) is logged and removed, never uploaded.
    """
    found: list[OutboxEntry] = []
    stems: set[str] = set()
    next_seq = 1
    for name in os.listdir(directory):
        full = os.path.join(directory, name)
        if name.startswith(".tmp-"):
            unlink_quietly(full)
            continue
        stem, _, ext = name.partition(".")
        if ext == "json" and stem.isdigit():
            stems.add(stem)
    for name in os.listdir(directory):
        stem, _, ext = name.partition(".")
        if ext in ("key", "content") and stem not in stems:
            # Sealing was interrupted before the manifest: not an entry.
            unlink_quietly(os.path.join(directory, name))
    for stem in sorted(stems):
        seq = int(stem)
        next_seq = max(next_seq, seq + 1)
        manifest = os.path.join(directory, stem + ".json")
        try:
            entry = _read_manifest(directory, stem)
        except json.JSONDecodeError as exc:
            if verify:
                _drop_torn(directory, seq, manifest, f"its manifest is not valid JSON ({exc})")
                continue
            log.error(
                "outbox: entry %s in %s is unusable (%s); leaving it there", stem, directory, exc
            )
            continue
        except (OSError, ValueError, KeyError, TypeError, binascii.Error, IntegrityError) as exc:
            log.error(
                "outbox: entry %s in %s is unusable (%s); leaving it there", stem, directory, exc
            )
            continue
        torn = (
            torn_reason(entry.content_file, entry.layout, entry.content_size, entry.content_sha1)
            if verify
            else None
        )
        if torn is not None:
            _drop_torn(directory, seq, manifest, torn, entry.path)
            continue
        try:
            if entry.layout == 1 and not os.path.isfile(entry.key_file):
                raise ValueError("its key file is missing")
            if not os.path.isfile(entry.content_file):
                raise ValueError("its content file is missing")
            if entry.layout == 2 and os.path.getsize(entry.content_file) != entry.content_size:
                raise ValueError("its content file has the wrong size")
        except (OSError, ValueError) as exc:
            log.error(
                "outbox: entry %s in %s is unusable (%s); leaving it there", stem, directory, exc
            )
            continue
        found.append(entry)
    return found, next_seq


def _drop_torn(
    directory: str, seq: int, manifest: str, reason: str, path: str | None = None
) -> None:
    if path is not None:
        log.error(
            "outbox: the last close of %r before a crash or power loss is lost: its entry "
            "%s is torn (%s); dropped, not uploaded",
            path,
            manifest,
            reason,
        )
    else:
        log.error(
            "outbox: a file closed just before a crash or power loss is lost: its entry %s is "
            "torn (%s); dropped, not uploaded",
            manifest,
            reason,
        )
    discard_files(directory, seq)
