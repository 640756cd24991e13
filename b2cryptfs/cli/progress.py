"""What put/get tell the user: -v/-q, a progress bar on stderr, a summary line, errors.

Everything goes to standard error, so that ``get X -`` keeps standard output for the data.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Callable
from typing import BinaryIO, TextIO

from b2cryptfs.errors import B2CryptfsError

_REDRAW_EVERY = 0.1  # seconds between progress bar redraws


class LocalFileError(B2CryptfsError):
    """A local file or directory cannot be read or written (an OSError, in one line)."""

    exit_code = 1


def local_error(path: str, exc: OSError) -> LocalFileError:
    return LocalFileError(f"{path}: {exc.strerror or exc}")


def add_output_options(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("output")
    g.add_argument("-v", "--verbose", action="store_true", help="name each file as it is done")
    g.add_argument(
        "-q", "--quiet", action="store_true", help="print errors only (no warnings or summary)"
    )
    g.add_argument(
        "-P",
        "--progress",
        action="store_true",
        help="show a progress bar (default: on when standard error is a terminal)",
    )


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


class Bar:
    """One file's progress, redrawn in place on stderr at most every 0.1 s.

    ``label`` says which stage it is (put: "encrypting ", then "uploading "). ``update`` may
    be called from several threads (the parts of a large upload)."""

    def __init__(self, out: TextIO | None, name: str, total: int, label: str = "") -> None:
        self.out, self.name, self.total, self.label = out, name, total, label
        self.started = self.drawn = time.monotonic()
        self._lock = threading.Lock()

    def update(self, done: int) -> None:
        if self.out is None:
            return
        with self._lock:
            now = time.monotonic()
            if now - self.drawn < _REDRAW_EVERY and done < self.total:
                return
            self.drawn = now
            pct = 100 * done // self.total if self.total else 100
            rate = done / max(now - self.started, 1e-6)
            name = self.name if len(self.name) <= 40 else "…" + self.name[-39:]
            self.out.write(
                f"\r\x1b[K{self.label}{name}  {human(done)} / {human(self.total)}  "
                f"{pct:3d}%  {human(rate)}/s"
            )
            self.out.flush()

    def close(self) -> None:
        if self.out is not None:
            self.out.write("\r\x1b[K")
            self.out.flush()


class _Counting:
    """A file wrapper that moves a progress bar as its bytes are read."""

    def __init__(self, src: BinaryIO, bar: Bar) -> None:
        self.src, self.bar, self.done = src, bar, 0

    def read(self, n: int = -1) -> bytes:
        data = self.src.read(n)
        self.done += len(data)
        self.bar.update(self.done)
        return data

    def readinto(self, buf) -> int:  # noqa: ANN001
        n = self.src.readinto(buf) or 0
        self.done += n
        self.bar.update(self.done)
        return n

    def __getattr__(self, name: str):  # noqa: ANN204
        return getattr(self.src, name)


class Reporter:
    def __init__(self, *, verbose: bool, quiet: bool, progress: bool, err: TextIO) -> None:
        self.verbose, self.quiet, self.progress, self.err = verbose, quiet, progress, err
        self.files = self.bytes = self.failures = 0
        self.started = time.monotonic()

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Reporter:
        quiet = getattr(args, "quiet", False)
        progress = getattr(args, "progress", False) or (sys.stderr.isatty() and not quiet)
        return cls(
            verbose=getattr(args, "verbose", False), quiet=quiet, progress=progress, err=sys.stderr
        )

    def _line(self, text: str) -> None:
        if self.progress:
            self.err.write("\r\x1b[K")
        print(text, file=self.err, flush=True)

    def warn(self, message: str) -> None:
        if not self.quiet:
            self._line(f"b2cryptfs: warning: {message}")

    def error(self, message: str) -> None:
        self.failures += 1
        self._line(f"b2cryptfs: error: {message}")

    def status(self, message: str) -> None:
        if self.progress:
            self.err.write(f"\r\x1b[K{message}")
            self.err.flush()

    def start(self, name: str, total: int, label: str = "") -> Bar:
        return Bar(self.err if self.progress else None, name, total, label)

    def reading(self, src: BinaryIO, name: str, total: int, label: str = "") -> BinaryIO:
        if not self.progress:
            return src
        return _Counting(src, self.start(name, total, label))  # type: ignore[return-value]

    def sending(self, name: str, total: int) -> Callable[[int], None] | None:
        """A callback for the bytes of an upload sent so far (None: no bar to move)."""
        if not self.progress:
            return None
        return self.start(name, total, "uploading ").update

    def done(self, message: str, size: int) -> None:
        self.files += 1
        self.bytes += size
        if self.progress:
            self.err.write("\r\x1b[K")
        if self.verbose:
            self._line(message)

    def finish(self, verb: str) -> int:
        """The exit status: 1 if any file failed (each already reported), else 0."""
        if self.failures:
            return 1
        if not self.quiet:
            took = time.monotonic() - self.started
            files = "file" if self.files == 1 else "files"
            self._line(
                f"b2cryptfs: {verb} {self.files} {files}, {human(self.bytes)} in {took:.1f} s"
            )
        return 0
