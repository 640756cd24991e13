"""Reading an outbox entry: its local ciphertext file, opened once, and its key object."""

from __future__ import annotations

import os
from dataclasses import dataclass

from b2cryptfs.formats import ContentReader


class LocalFileSource:
    """A ContentSource over a local ciphertext file (an outbox entry's content).

    The file is opened once: an upload finishing and deleting it does not disturb readers.
    """

    def __init__(self, path: str) -> None:
        self._fd = -1  # (an upload may have removed the file: __del__ then has nothing to do)
        self._fd = os.open(path, os.O_RDONLY)
        self.size = os.fstat(self._fd).st_size

    def fetch(self, start: int, end: int) -> bytes:
        parts = []
        pos = start
        while pos < end:
            data = os.pread(self._fd, end - pos, pos)
            if not data:
                break
            parts.append(data)
            pos += len(data)
        return b"".join(parts)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        self.close()


@dataclass(eq=False)
class LocalContent:
    """An outbox entry opened for reading: its content file and key object, decrypted here."""

    reader: ContentReader
    source: LocalFileSource
    version: str

    def read(self, offset: int, length: int) -> bytes:
        return self.reader.read(offset, length)

    def close(self) -> None:
        self.source.close()
