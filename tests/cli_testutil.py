"""Helpers for the CLI tests: age keys made here, a passphrase-protected identity as
``age -p`` writes one, a pty to answer prompts, one-line error checks."""

from __future__ import annotations

import io
import os
import pty
import select
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from conftest import B2CRYPTFS

from b2cryptfs.formats.age import header, stream
from b2cryptfs.formats.age.scrypt import ScryptRecipient
from b2cryptfs.formats.age.wrap import wrap_file_key
from b2cryptfs.formats.age.x25519 import (
    encode_x25519_identity,
    encode_x25519_recipient,
    generate_x25519_identity,
)

SECRET = "hunter2-do-not-echo"


def run(args: Sequence[object], env: dict[str, str], *, input: bytes | None = None, cwd=None):
    return subprocess.run(
        [*B2CRYPTFS, *map(str, args)],
        env=env,
        capture_output=True,
        input=input,
        timeout=120,
        cwd=cwd,
    )


def ok(args: Sequence[object], env: dict[str, str], **kw) -> subprocess.CompletedProcess:
    proc = run(args, env, **kw)
    assert proc.returncode == 0, (args, proc.stderr.decode(errors="replace"))
    assert b"Traceback" not in proc.stderr
    return proc


def assert_one_line(proc: subprocess.CompletedProcess, code: int, *needles: str) -> str:
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == code, (proc.returncode, err)
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    for n in needles:
        assert n.lower() in lines[0].lower(), lines[0]
    return lines[0]


def make_age_identity(directory: Path, name: str = "id.txt") -> tuple[Path, str]:
    """An age identity file and its recipient string."""
    ident = generate_x25519_identity()
    path = directory / name
    path.write_text(f"# made by the tests\n{encode_x25519_identity(ident)}\n")
    return path, encode_x25519_recipient(ident.recipient())


def age_passphrase_encrypt(plaintext: bytes, passphrase: str, work_factor: int = 10) -> bytes:
    """What ``age -p`` writes (binary): a header with one scrypt stanza, then the payload."""
    file_key = os.urandom(16)
    stanzas = wrap_file_key(file_key, [ScryptRecipient(passphrase, work_factor)])
    out = io.BytesIO()
    out.write(header.serialize(stanzas, file_key))
    stream.encrypt(io.BytesIO(plaintext), out, file_key)
    return out.getvalue()


def run_with_tty(
    argv: Sequence[str], answer: str, env: dict[str, str], *, prompt: bytes, timeout: float = 60
) -> tuple[int, bytes]:
    """Run ``argv`` on a new pseudo-terminal, type ``answer`` when ``prompt`` appears; return
    (exit status, everything shown on the terminal)."""
    pid, fd = pty.fork()
    if pid == 0:  # child: the pty is its controlling terminal
        try:
            os.execvpe(argv[0], list(argv), env)
        finally:
            os._exit(127)
    shown = b""
    answered = False
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.5)
            if ready:
                try:
                    data = os.read(fd, 4096)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not data:
                    break
                shown += data
            if not answered and prompt.lower() in shown.lower():
                os.write(fd, answer.encode() + b"\r")
                answered = True
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(fd)
    return os.waitstatus_to_exitcode(status), shown
