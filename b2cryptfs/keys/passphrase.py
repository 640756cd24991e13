"""Where a private key's passphrase comes from: a file, a command, the environment, or the
terminal.

Never from the command line, where other users can read it in the process list.
"""

from __future__ import annotations

import getpass
import os
import subprocess
from collections.abc import Callable

from b2cryptfs.errors import KeyFileError, UsageError

ENV_PASSPHRASE = "B2CRYPTFS_PASSPHRASE"
NO_PASSPHRASE = f"no passphrase: use --passphrase-file or {ENV_PASSPHRASE}"
_COMMAND_TIMEOUT = 300  # seconds: a prompt (systemd-ask-password, pinentry) waits for a human


def read_passphrase_file(path: str) -> bytes:
    """The first line of ``path`` without its newline (as ``openssl -passin file:`` reads)."""
    try:
        with open(path, "rb") as f:
            line = f.readline()
    except OSError as e:
        raise KeyFileError(f"cannot read passphrase file {path}: {e.strerror}") from None
    return line[:-1] if line.endswith(b"\n") else line


def run_passphrase_command(command: str) -> bytes:
    """The first line a shell command prints (``pass show``, ``secret-tool lookup``,
    ``systemd-ask-password``). Its standard error and input stay ours, so it may prompt."""
    try:
        proc = subprocess.run(
            command, shell=True, stdout=subprocess.PIPE, timeout=_COMMAND_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired:
        raise KeyFileError(f"passphrase command timed out after {_COMMAND_TIMEOUT} s") from None
    except OSError as e:
        raise KeyFileError(f"cannot run the passphrase command: {e.strerror}") from None
    if proc.returncode != 0:
        status = (
            f"was killed by signal {-proc.returncode}"
            if proc.returncode < 0
            else f"exited with status {proc.returncode}"
        )
        raise KeyFileError(f"passphrase command {status}")
    line = proc.stdout.split(b"\n", 1)[0].removesuffix(b"\r")
    if not line:
        raise KeyFileError("passphrase command printed no passphrase")
    return line


def forget_environment_passphrase() -> None:
    """Drop $B2CRYPTFS_PASSPHRASE from this process, once read (a daemon lives long).

    The bytes are overwritten in place too: /proc/PID/environ shows the environment block
    the process started with, which unsetenv() alone leaves intact.
    """
    if ENV_PASSPHRASE not in os.environ:
        return
    name = ENV_PASSPHRASE.encode()
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        libc.getenv.restype = ctypes.c_void_p
        value = libc.getenv(name)
        if value:
            # getenv points just past "NAME=": wipe the whole "NAME=VALUE" string, after
            # unsetenv has taken it out of the environment array.
            start = value - len(name) - 1
            length = len(name) + 1 + len(ctypes.string_at(value))
            libc.unsetenv(name)
            ctypes.memset(start, 0, length)
    except (OSError, AttributeError):
        pass
    os.environ.pop(ENV_PASSPHRASE, None)


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
    passphrase_file: str | None,
    *,
    prompt: str = "Passphrase for private key: ",
    command: str | None = None,
) -> Callable[..., bytes]:
    """A callable returning the passphrase, asked for only on first use and then cached.

    Order: ``passphrase_file`` (first line), else the first line ``command`` prints, else
    ``$B2CRYPTFS_PASSPHRASE``, else a prompt on the terminal; with none of them a
    KeyFileError says how to give one. Called with a key file's path, the prompt names it.
    """
    cache: list[bytes] = []

    def get(key_path: str | None = None) -> bytes:
        if not cache:
            if passphrase_file is not None:
                cache.append(read_passphrase_file(passphrase_file))
            elif command is not None:
                cache.append(run_passphrase_command(command))
            elif ENV_PASSPHRASE in os.environ:
                cache.append(os.fsencode(os.environ[ENV_PASSPHRASE]))
            else:
                cache.append(prompt_tty(f"Passphrase for {key_path}: " if key_path else prompt))
        return cache[0]

    return get


def new_passphrase(
    passphrase_file: str | None, *, min_len: int = 4, environment: bool = True
) -> bytes:
    """A passphrase for a new private key: from the file or (unless ``environment`` is
    false: passwd, where it holds the old one) the environment, else typed twice."""
    if passphrase_file is not None:
        value = read_passphrase_file(passphrase_file)
    elif environment and ENV_PASSPHRASE in os.environ:
        value = os.fsencode(os.environ[ENV_PASSPHRASE])
    else:
        try:
            _open_tty()
        except KeyFileError:
            raise KeyFileError(
                "no new passphrase: give --new-passphrase-file, or run on a terminal"
                if not environment
                else NO_PASSPHRASE
            ) from None
        value = prompt_tty("New passphrase for the private key: ")
        if prompt_tty("Repeat the passphrase: ") != value:
            raise UsageError("the passphrases do not match")
    # openssl genrsa refuses shorter ones too.
    if len(value) < min_len:
        raise UsageError(f"the passphrase must be at least {min_len} characters")
    return value
