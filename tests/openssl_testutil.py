"""Helpers for the openssl-format and key tests: real openssl key files, content sources."""

from __future__ import annotations

import os
import pty
import select
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

OPENSSL = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="openssl binary not installed")

PASSPHRASE = b"correct horse battery"


def run(cmd: list[str] | str, **kw) -> subprocess.CompletedProcess:
    """Run a command (a list, or a bash script string); fail the test with its stderr."""
    if isinstance(cmd, str):
        cmd = ["bash", "-c", cmd]
    p = subprocess.run(cmd, capture_output=True, **kw)
    if p.returncode != 0:
        raise AssertionError(f"{cmd} failed ({p.returncode}): {p.stderr.decode(errors='replace')}")
    return p


def openssl_keypair(folder: Path, *genrsa_flags: str, bits: int = 2048) -> tuple[Path, Path, Path]:
    """(private key, public key, passphrase file) made by the seed's openssl commands."""
    folder.mkdir(parents=True, exist_ok=True)
    pwfile = folder / "passphrase.txt"
    pwfile.write_bytes(PASSPHRASE + b"\n")
    priv, pub = folder / "priv-key.pem", folder / "pub-key.pem"
    flags = list(genrsa_flags) or ["-aes256"]
    run([OPENSSL, "genrsa", *flags, "-passout", f"file:{pwfile}", "-out", str(priv), str(bits)])
    run(
        [OPENSSL, "rsa", "-in", str(priv), "-passin", f"file:{pwfile}", "-pubout", "-out", str(pub)]
    )
    return priv, pub, pwfile


class BytesSource:
    """A ContentSource over bytes that records every fetch."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.size = len(data)
        self.fetches: list[tuple[int, int]] = []

    def fetch(self, start: int, end: int) -> bytes:
        assert 0 <= start <= end <= self.size, (start, end, self.size)
        self.fetches.append((start, end))
        return self.data[start:end]

    @property
    def fetched_bytes(self) -> int:
        return sum(e - s for s, e in self.fetches)


class FileSource:
    """A ContentSource over a local file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = os.path.getsize(path)

    def fetch(self, start: int, end: int) -> bytes:
        with open(self.path, "rb") as f:
            f.seek(start)
            return f.read(end - start)


def child_env() -> dict[str, str]:
    """The environment for a child python: the repo importable, no inherited secrets."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("B2_", "B2CRYPTFS_"))}
    env["PYTHONPATH"] = str(ROOT)
    return env


def run_on_tty(code: str, typed: list[bytes]) -> str:
    """Run python ``code`` with a pseudo-terminal as its controlling tty; type ``typed``
    lines, each after a prompt ending in ': ' appears; return everything it printed."""
    pid, fd = pty.fork()
    if pid == 0:  # child
        try:
            os.execve(sys.executable, [sys.executable, "-c", code], child_env())
        finally:
            os._exit(127)
    out = b""
    pending = list(typed)
    finished = False
    try:
        while True:
            ready, _, _ = select.select([fd], [], [], 60)
            if not ready:
                raise AssertionError(f"no output from the child; so far: {out!r}")
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
            if pending and out.rstrip().endswith(b":"):
                os.write(fd, pending.pop(0) + b"\n")
                out += b"<typed>"
        finished = True
    finally:
        os.close(fd)
        if not finished:
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    return out.decode(errors="replace")
