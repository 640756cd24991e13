"""put/get/cat as a user meets them: -, -r, umask, FIFOs, summaries, passphrase commands,
age -p identities (interop with the real age through a pty), completion, man pages."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cli_testutil import (
    age_passphrase_encrypt,
    assert_one_line,
    make_age_identity,
    ok,
    run,
    run_with_tty,
)
from conftest import ROOT

PASSPHRASE = "correct horse 42"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("B2_", "B2CRYPTFS_"))}
    e["HOME"] = str(tmp_path)
    e["PYTHONPATH"] = str(ROOT)
    return e


@pytest.fixture
def keys(tmp_path: Path):
    ident, recipient = make_age_identity(tmp_path)
    return ident, recipient


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_get_to_stdout_and_cat(tmp_path: Path, env, keys) -> None:
    ident, recipient = keys
    src = tmp_path / "a.txt"
    src.write_bytes(b"plain bytes\n" * 1000)
    ok(["put", "-q", "--public-key", recipient, src, f"{tmp_path}/store/"], env)
    got = ok(
        ["get", "-q", "--private-key", ident, f"{tmp_path}/store/a.txt", "-"], env, cwd=tmp_path
    )
    assert got.stdout == src.read_bytes()
    assert not (tmp_path / "-").exists()
    assert ok(["cat", "--private-key", ident, f"{tmp_path}/store/a.txt"], env).stdout == got.stdout


def test_put_r_get_r_roundtrip_keeps_links_fifos_and_sockets(tmp_path: Path, env, keys) -> None:
    import socket

    ident, recipient = keys
    src = tmp_path / "tree"
    (src / "sub" / "deeper").mkdir(parents=True)
    (src / "one.txt").write_text("1")
    (src / "sub" / "two.bin").write_bytes(os.urandom(70000))
    (src / "sub" / "deeper" / "three").write_text("3" * 10)
    (src / "link").symlink_to("one.txt")
    os.mkfifo(src / "sub" / "pipe")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(src / "sock"))
    try:
        proc = ok(["put", "-r", "--public-key", recipient, src, f"{tmp_path}/store/"], env)
    finally:
        sock.close()
    err = proc.stderr.decode().splitlines()
    assert err == [err[-1]] and err[-1].startswith("b2cryptfs: put 6 files, "), err
    out = tmp_path / "out"
    proc = ok(["get", "-r", "-v", "--private-key", ident, f"{tmp_path}/store/tree", out], env)
    assert _tree(out) == _tree(src)  # regular files (the link's target read through it)
    assert os.readlink(out / "link") == "one.txt"
    assert stat.S_ISFIFO(os.lstat(out / "sub" / "pipe").st_mode)
    assert stat.S_ISSOCK(os.lstat(out / "sock").st_mode)
    lines = proc.stderr.decode().splitlines()
    assert len(lines) == 7 and lines[-1].startswith("b2cryptfs: got 6 files"), lines
    # Into an existing directory: DIR/NAME, as cp -r does; -q prints nothing.
    again = tmp_path / "again"
    again.mkdir()
    proc = ok(["get", "-r", "-q", "--private-key", ident, f"{tmp_path}/store/tree", again], env)
    assert proc.stderr == b"" and _tree(again / "tree") == _tree(src)


def test_get_honours_umask(tmp_path: Path, env, keys) -> None:
    ident, recipient = keys
    src = tmp_path / "a.txt"
    src.write_text("x")
    ok(["put", "-q", "--public-key", recipient, src, f"{tmp_path}/store/"], env)
    for mask, want in ((0o022, 0o644), (0o027, 0o640), (0o077, 0o600)):
        dest = tmp_path / f"got-{mask:o}"
        cmd = [
            sys.executable,
            "-m",
            "b2cryptfs",
            "get",
            "-q",
            "--private-key",
            str(ident),
            f"{tmp_path}/store/a.txt",
            str(dest),
        ]
        proc = subprocess.run(
            cmd, env=env, capture_output=True, timeout=60, preexec_fn=lambda m=mask: os.umask(m)
        )
        assert proc.returncode == 0, proc.stderr
        assert stat.S_IMODE(dest.stat().st_mode) == want, (oct(mask), oct(dest.stat().st_mode))


def test_passphrase_command_and_age_p_identity(tmp_path: Path, env, keys) -> None:
    ident, recipient = keys
    protected = tmp_path / "key.age"
    protected.write_bytes(age_passphrase_encrypt(ident.read_bytes(), PASSPHRASE))
    src = tmp_path / "a.txt"
    src.write_text("secret content")
    ok(["put", "-q", "--public-key", recipient, src, f"{tmp_path}/store/"], env)
    pwfile = tmp_path / "pw"
    pwfile.write_text(PASSPHRASE + "\nsecond line ignored\n")
    got = ok(
        [
            "cat",
            "--private-key",
            protected,
            "--passphrase-command",
            f"cat '{pwfile}'",
            f"{tmp_path}/store/a.txt",
        ],
        env,
    )
    assert got.stdout == b"secret content"
    # The same key's public half is what the protected file gives for writing.
    ok(
        [
            "put",
            "-q",
            "--private-key",
            protected,
            "--passphrase-command",
            f"cat '{pwfile}'",
            src,
            f"{tmp_path}/store/b.txt",
        ],
        env,
    )
    assert ok(["cat", "--private-key", ident, f"{tmp_path}/store/b.txt"], env).stdout == (
        b"secret content"
    )
    # Both ways to give a passphrase at once is a usage error.
    proc = run(
        [
            "cat",
            "--private-key",
            protected,
            "--passphrase-command",
            "true",
            "--passphrase-file",
            pwfile,
            f"{tmp_path}/store/a.txt",
        ],
        env,
    )
    assert_one_line(proc, 2, "not both")
    # Armored (age -a -p) works too.
    import base64

    raw = protected.read_bytes()
    armored = tmp_path / "key.age.asc"
    b64 = base64.b64encode(raw).decode()
    body = "\n".join(b64[i : i + 64] for i in range(0, len(b64), 64))
    armored.write_text(
        f"-----BEGIN AGE ENCRYPTED FILE-----\n{body}\n-----END AGE ENCRYPTED FILE-----\n"
    )
    env2 = dict(env, B2CRYPTFS_PASSPHRASE=PASSPHRASE)
    got = ok(["cat", "--private-key", armored, f"{tmp_path}/store/a.txt"], env2)
    assert got.stdout == b"secret content"


@pytest.mark.skipif(shutil.which("age") is None, reason="needs the age tool")
def test_real_age_decrypts_our_passphrase_file(tmp_path: Path, env, keys) -> None:
    """Interop: the file our scrypt code writes is what `age -p` writes; age -d opens it."""
    ident, _ = keys
    protected = tmp_path / "key.age"
    protected.write_bytes(age_passphrase_encrypt(ident.read_bytes(), PASSPHRASE))
    out = tmp_path / "plain.txt"
    code, shown = run_with_tty(
        ["age", "-d", "-o", str(out), str(protected)], PASSPHRASE, env, prompt=b"passphrase"
    )
    assert code == 0, shown
    assert out.read_bytes() == ident.read_bytes()


def test_prompt_names_the_key_file(tmp_path: Path, env, keys) -> None:
    ident, recipient = keys
    protected = tmp_path / "key.age"
    protected.write_bytes(age_passphrase_encrypt(ident.read_bytes(), PASSPHRASE))
    src = tmp_path / "a.txt"
    src.write_text("shown after the prompt")
    ok(["put", "-q", "--public-key", recipient, src, f"{tmp_path}/store/"], env)
    code, shown = run_with_tty(
        [
            sys.executable,
            "-m",
            "b2cryptfs",
            "cat",
            "--private-key",
            str(protected),
            f"{tmp_path}/store/a.txt",
        ],
        PASSPHRASE,
        env,
        prompt=f"Passphrase for {protected}:".encode(),
    )
    assert code == 0, shown
    assert b"shown after the prompt" in shown and PASSPHRASE.encode() not in shown


def test_mount_shorthand_still_reaches_the_mount_helper(tmp_path: Path, env) -> None:
    (tmp_path / "store").mkdir()
    proc = run([tmp_path / "store", tmp_path / "nomnt"], env)
    assert_one_line(proc, 32, "mountpoint does not exist")


def test_completion(tmp_path: Path, env) -> None:
    pytest.importorskip("argcomplete")
    answer = tmp_path / "answer"
    line = "b2cryptfs pu"
    e = dict(
        env,
        _ARGCOMPLETE="1",
        COMP_LINE=line,
        COMP_POINT=str(len(line)),
        _ARGCOMPLETE_STDOUT_FILENAME=str(answer),
        _ARGCOMPLETE_IFS="\n",
    )
    proc = subprocess.run(
        [sys.executable, "-m", "b2cryptfs"], env=e, capture_output=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert answer.read_text().split() == ["put"]


def test_man_pages_install(tmp_path: Path) -> None:
    if shutil.which("man") is None:
        pytest.skip("needs man (man-db)")
    root = tmp_path / "man"
    e = dict(os.environ, MAN_ROOT=str(root), SUDO="")
    proc = subprocess.run(
        ["bash", ROOT / "scripts" / "install.sh", "--man-only"],
        env=e,
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    for page, section in (("b2cryptfs", 1), ("mount.b2cryptfs", 8), ("b2cryptfs-format", 5)):
        where = subprocess.run(["man", "-M", str(root), "-w", page], capture_output=True, text=True)
        assert where.stdout.strip() == str(root / f"man{section}" / f"{page}.{section}"), where
    text = (ROOT / "scripts" / "install.sh").read_text()
    assert "SBIN_DIR:-/sbin" in text and "mount.b2cryptfs" in text and "man-db" in text


@pytest.mark.heavy
def test_wheel_builds(tmp_path: Path) -> None:
    """A non-editable install: the wheel builds and holds the code and both entry points."""
    import zipfile

    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(ROOT), "-w", tmp_path],
        capture_output=True,
        timeout=600,
        cwd=tmp_path,
    )
    if proc.returncode != 0 and b"Could not" in proc.stderr:
        pytest.skip("no package index to build in isolation")
    assert proc.returncode == 0, proc.stderr
    (wheel,) = tmp_path.glob("b2cryptfs-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "b2cryptfs/cli/main.py" in names
    ep = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(ep).decode()
    assert "mount.b2cryptfs" in text and "b2cryptfs = b2cryptfs.cli.main:main" in text


def test_progress_bar_on_request(tmp_path: Path, env, keys) -> None:
    ident, recipient = keys
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(3 << 20))
    put = ok(["put", "-P", "--public-key", recipient, src, f"{tmp_path}/store/"], env)
    get = ok(["get", "-P", "--private-key", ident, f"{tmp_path}/store/big.bin", "-"], env)
    assert get.stdout == src.read_bytes()  # the bar never mixes into the data
    for proc in (put, get):
        shown = proc.stderr.decode().replace("\r", "\n")
        assert "100%" in shown and "3.0 MiB" in shown, shown


def test_put_progress_moves_while_the_bytes_go_to_b2(tmp_path: Path, b2_cli_env, b2_bucket, keys):
    """-P shows the network transfer, not only the encryption: with the server's link slowed
    to about 4 s for a file larger than what the loopback's socket buffers hold), the upload
    bar is drawn many times on its way to 100%."""
    _, recipient = keys
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(12 << 20))
    b2_bucket.server.configure(bandwidth_mbps=24)
    try:
        put = ok(
            ["put", "-P", "--public-key", recipient, src, f"b2://{b2_bucket.name}/"], b2_cli_env
        )
    finally:
        b2_bucket.server.configure(bandwidth_mbps=0)
    frames = put.stderr.decode().replace("\x1b[K", "").split("\r")
    pcts = [int(f.split("%")[0].split()[-1]) for f in frames if f.startswith("uploading ")]
    assert len(pcts) > 2 and pcts == sorted(pcts) and pcts[-1] == 100, frames
    assert any(0 < p < 100 for p in pcts), pcts
    assert any(f.startswith("encrypting ") for f in frames), frames


def test_mount_o_passphrase_cmd_and_ownership_options() -> None:
    from b2cryptfs.cli.mountopts import translate_o_options

    assert translate_o_options(["passphrase_cmd=pass show b2,uid=1000,gid=100,umask=027"]) == [
        "--passphrase-command", "pass show b2", "--uid", "1000", "--gid", "100", "--umask", "027",
    ]  # fmt: skip


def test_every_option_in_help_is_in_the_man_pages() -> None:
    """--help and the man pages say the same: each option of each command (one of its
    spellings) is documented in b2cryptfs(1) or mount.b2cryptfs(8)."""
    import argparse
    import re

    from b2cryptfs.cli.main import build_parser

    man = "".join(
        (ROOT / "man" / page).read_text() for page in ("b2cryptfs.1", "mount.b2cryptfs.8")
    )
    man = man.replace("\\-", "-")
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    missing = [
        (command, action.option_strings)
        for command, parser in sub.choices.items()
        for action in parser._actions
        if action.option_strings and "--help" not in action.option_strings
        if not any(
            re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", man) for o in action.option_strings
        )
    ]
    assert not missing, missing
