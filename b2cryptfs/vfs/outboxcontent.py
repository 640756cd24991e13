"""The writer of an outbox entry's content file (vfs/outboxfiles.py has the entry's other
files): it takes a spare file made ahead of time where it can, and counts and hashes what the
seal writes, so that the manifest can record both without reading the file again."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

from b2cryptfs.bucket.meta import Meta
from b2cryptfs.vfs.outboxspares import Spares


def unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


@dataclass(frozen=True)
class WrittenContent:
    """What a content writer hands the outbox besides the content it wrote."""

    key_object: bytes
    info: dict[str, str]
    format: str
    plaintext_size: int
    meta: Meta | None = None


def take_spare(spares: Spares | None, dest: str | None = None) -> tuple[int, str] | None:
    """A spare file (descriptor, path), renamed to ``dest`` if given, or None."""
    spare = spares.take() if spares is not None else None
    if spare is None or dest is None:
        return spare
    fd, path = spare
    try:
        os.rename(path, dest)
    except OSError:  # (not on the same filesystem after all: create it instead)
        os.close(fd)
        unlink_quietly(path)
        return None
    return fd, dest


class ContentFile:
    """The content file being sealed into (write-only): counts and hashes what is written
    (the manifest records both), and with ``durable`` syncs its data when closed. It is
    created at the first write, or is a file sealed elsewhere given its name (:meth:`adopt`).
    """

    def __init__(self, path: str, *, durable: bool, spares: Spares | None = None) -> None:
        self.path = path
        self._spares = spares
        self._fd = -1
        self._durable = durable
        self._sha1 = hashlib.sha1()
        self._adopted_sha1: str | None = None
        self._closed = False
        self.size = 0

    def _open(self) -> int:
        if self._fd < 0:
            spare = take_spare(self._spares, self.path)
            if spare is not None:
                self._fd = spare[0]
            else:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        return self._fd

    def write(self, data: bytes) -> int:
        fd = self._open()
        view = memoryview(data)
        while view:
            done = os.write(fd, view)
            view = view[done:]
        self._sha1.update(data)
        self.size += len(data)
        return len(data)

    def adopt(self, fd: int, size: int, sha1: str) -> bool:
        """Make the ``size`` bytes of the unnamed file ``fd`` (made with O_TMPFILE, SHA-1
        ``sha1``) this content file, instead of writing them: True if it was given this
        name (the file is the outbox's now: its owner must never write it again), False if
        it was copied (the filesystem refused, or ``fd`` is an ordinary file)."""
        assert self._fd < 0 and self.size == 0, "adopt() replaces every write"
        try:
            _link_fd(fd, self.path)
        except OSError:
            _copy(fd, self._open(), size)
            linked = False
        else:
            self._fd = os.dup(fd)  # (for the sync at close)
            linked = True
        self.size, self._adopted_sha1 = size, sha1
        return linked

    @property
    def sha1(self) -> str:
        return self._adopted_sha1 or self._sha1.hexdigest()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        fd, self._fd = self._open(), -1  # (nothing written: still an empty file)
        try:
            if self._durable:
                # fdatasync: the size is flushed with the data; the name waits for the
                # directory's fsync after the manifest's rename.
                os.fdatasync(fd)
        finally:
            os.close(fd)

    def __enter__(self) -> ContentFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _link_fd(fd: int, path: str) -> None:
    """Give the unnamed file ``fd`` the name ``path``. Through linkat(2): with no directory
    descriptor, Python 3.11's os.link calls link(2), which links the /proc symlink itself."""
    directory = os.open(os.path.dirname(path) or ".", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.link(
            f"/proc/self/fd/{fd}",
            os.path.basename(path),
            dst_dir_fd=directory,
            follow_symlinks=True,
        )
    finally:
        os.close(directory)


def _copy(src: int, dst: int, size: int) -> None:
    """The first ``size`` bytes of ``src`` to ``dst`` (in the kernel where it can)."""
    pos = 0
    while pos < size:
        try:
            done = os.copy_file_range(src, dst, size - pos, pos, pos)
        except OSError:
            done = 0
        if done <= 0:
            data = os.pread(src, min(1 << 20, size - pos), pos)
            if not data:
                raise OSError(f"staging file ended at {pos} of {size} bytes")
            _pwrite_all(dst, data, pos)
            done = len(data)
        pos += done


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        done = os.pwrite(fd, view, offset)
        view, offset = view[done:], offset + done
