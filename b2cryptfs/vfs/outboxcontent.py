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
    (the manifest records both), and with ``durable`` syncs its data when closed."""

    def __init__(self, path: str, *, durable: bool, spares: Spares | None = None) -> None:
        self.path = path
        spare = take_spare(spares, path)
        if spare is not None:
            self._fd = spare[0]
        else:
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self._durable = durable
        self._sha1 = hashlib.sha1()
        self.size = 0

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        while view:
            done = os.write(self._fd, view)
            view = view[done:]
        self._sha1.update(data)
        self.size += len(data)
        return len(data)

    @property
    def sha1(self) -> str:
        return self._sha1.hexdigest()

    def close(self) -> None:
        if self._fd < 0:
            return
        fd, self._fd = self._fd, -1
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
