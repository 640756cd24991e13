"""Where a private key's passphrase comes from: a file, the environment, or the terminal.

Never from the command line, where other users can read it in the process list.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Callable

from b2cryptfs.errors import KeyFileError, UsageError

ENV_PASSPHRASE = "B2CRYPTFS_PASSPHRASE"
NO_PASSPHRASE = f"no passphrase: use --passphrase-file or {ENV_PASSPHRASE}"


def read_passphrase_file(path: str) -> bytes:
    """The first line of ``path`` without its newline (as ``openssl -passin file:`` reads)."""
    try:
        with open(path, "rb") as f:
            line = f.readline()
    except OSError as e:
        raise KeyFileError(f"cannot read passphrase file {path}: {e.strerror}") from None
    return line[:-1] if line.endswith(b"\n") else line


def _open_tty() -> None:
    """Raise unless a controlling terminal can be opened (getpass would fall back to stdin)."""
    try:
        fd = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
    except OSError:
        raise KeyFileError(NO_PASSPHRASE) from None
    os.close(fd)


def prompt_tty(prompt: str) -> bytes:
    """Ask on the controlling terminal, without echo."""
    _open_tty()
    try:
        return os.fsencode(getpass.getpass(prompt))
    except EOFError:
        raise KeyFileError(NO_PASSPHRASE) from None


def passphrase_source(
    passphrase_file: str | None, *, prompt: str = "Passphrase for private key: "
) -> Callable[[], bytes]:
    """A callable returning the passphrase, asked for only on first use and then cached.

    Order: ``passphrase_file`` (first line), else ``$B2CRYPTFS_PASSPHRASE``, else a prompt on
    the terminal; with none of them a KeyFileError says how to give one.
    """
    cache: list[bytes] = []

    def get() -> bytes:
        if not cache:
            if passphrase_file is not None:
                cache.append(read_passphrase_file(passphrase_file))
            elif ENV_PASSPHRASE in os.environ:
                cache.append(os.fsencode(os.environ[ENV_PASSPHRASE]))
            else:
                cache.append(prompt_tty(prompt))
        return cache[0]

    return get


def new_passphrase(passphrase_file: str | None, *, min_len: int = 4) -> bytes:
    """A passphrase for a new private key: from the file or environment, else typed twice."""
    if passphrase_file is not None:
        value = read_passphrase_file(passphrase_file)
    elif ENV_PASSPHRASE in os.environ:
        value = os.fsencode(os.environ[ENV_PASSPHRASE])
    else:
        value = prompt_tty("New passphrase for the private key: ")
        if prompt_tty("Repeat the passphrase: ") != value:
            raise UsageError("the passphrases do not match")
    # openssl genrsa refuses shorter ones too.
    if len(value) < min_len:
        raise UsageError(f"the passphrase must be at least {min_len} characters")
    return value
