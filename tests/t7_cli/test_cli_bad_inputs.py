"""Bad inputs to every CLI command: the right exit status, exactly one line on stderr, no
traceback, and never the secret that was given where it does not belong."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
from cli_testutil import SECRET, age_passphrase_encrypt, make_age_identity, ok, run

KEY_PASSPHRASE = "key passphrase 1"


@pytest.fixture(scope="module")
def w(tmp_path_factory) -> SimpleNamespace:
    d = tmp_path_factory.mktemp("bad")
    ident, recipient = make_age_identity(d)
    protected = d / "protected.age"
    protected.write_bytes(age_passphrase_encrypt(ident.read_bytes(), KEY_PASSPHRASE))
    store = d / "store"
    store.mkdir()
    (d / "a.txt").write_text("hello\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("B2_", "B2CRYPTFS_"))}
    env["HOME"] = str(d)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    ok(["put", "-q", "--public-key", recipient, d / "a.txt", f"{store}/docs/"], env)
    dangling = d / "dangling"
    dangling.mkdir()
    (dangling / "broken").symlink_to(d / "nowhere")
    os.mkfifo(d / "fifo")
    # Stored as a FIFO (metadata only), never opened: that would block.
    ok(["put", "-q", "--public-key", recipient, d / "fifo", f"{store}/docs/"], env)
    mnt = d / "mnt"
    mnt.mkdir()
    (d / "wrong-pw").write_text("not the passphrase\n")
    (d / "short-pw").write_text("abc\n")
    (d / "pub.txt").write_text(recipient + "\n")
    return SimpleNamespace(
        d=d, ident=ident, recipient=recipient, protected=protected, store=store, env=env, mnt=mnt
    )


# (name, argv from the fixture, exit status, words the one line must contain)
CASES = [
    (
        "put -L dangling symlink",
        lambda w: ["put", "-r", "-L", "--public-key", w.recipient, w.d / "dangling", w.store],
        1,
        ["dangling symlink"],
    ),
    (
        "cat a FIFO",
        lambda w: ["cat", "--private-key", w.ident, f"{w.store}/docs/fifo"],
        2,
        ["FIFO", "no content"],
    ),
    (
        "put missing file",
        lambda w: ["put", "--public-key", w.recipient, w.d / "nope", w.store],
        1,
        ["nope", "no such file"],
    ),
    (
        "put a secret key as public key",
        lambda w: ["put", "--public-key", w.ident, w.d / "a.txt", w.store],
        3,
        ["secret key"],
    ),
    (
        "put --passphrase",
        lambda w: [
            "put",
            "--passphrase",
            SECRET,
            "--public-key",
            w.recipient,
            w.d / "a.txt",
            w.store,
        ],
        2,
        ["not accepted"],
    ),
    (
        "put --password=",
        lambda w: ["put", f"--password={SECRET}", w.d / "a.txt", w.store],
        2,
        ["not accepted"],
    ),
    (
        "put abbreviated option",
        lambda w: ["put", "--public-k", w.recipient, w.d / "a.txt", w.store],
        2,
        ["unrecognized"],
    ),
    (
        "get into a missing directory",
        lambda w: ["get", "--private-key", w.ident, f"{w.store}/docs/a.txt", w.d / "no/dir/a"],
        1,
        ["no such file or directory"],
    ),
    (
        "get a missing file",
        lambda w: ["get", "--private-key", w.ident, f"{w.store}/docs/zz", w.d / "zz"],
        5,
        ["no such file"],
    ),
    (
        "get wrong passphrase",
        lambda w: [
            "get",
            "--private-key",
            w.protected,
            "--passphrase-command",
            f"echo {SECRET}",
            f"{w.store}/docs/a.txt",
            w.d / "x",
        ],
        3,
        ["wrong passphrase", "protected.age"],
    ),
    (
        "get failing passphrase command",
        lambda w: [
            "get",
            "--private-key",
            w.protected,
            "--passphrase-command",
            "exit 7",
            f"{w.store}/docs/a.txt",
            w.d / "x",
        ],
        3,
        ["passphrase command exited with status 7"],
    ),
    (
        "get -r to stdout",
        lambda w: ["get", "-r", "--private-key", w.ident, f"{w.store}/docs", "-"],
        2,
        ["standard output"],
    ),
    (
        "cat missing file",
        lambda w: ["cat", "--private-key", w.ident, f"{w.store}/docs/zz"],
        5,
        ["no such file"],
    ),
    (
        "cat --passphrase",
        lambda w: ["cat", "--passphrase", SECRET, f"{w.store}/docs/a.txt"],
        2,
        ["not accepted"],
    ),
    ("ls unknown scheme", lambda w: ["ls", "s3://bucket"], 2, ["unknown store scheme"]),
    ("ls --passphrase=", lambda w: ["ls", f"--passphrase={SECRET}", w.store], 2, ["not accepted"]),
    (
        "rotate --passphrase",
        lambda w: ["rotate", "--passphrase", SECRET, w.store],
        2,
        ["not accepted"],
    ),
    (
        "rotate without a private key",
        lambda w: ["rotate", "--public-key", w.recipient, w.store],
        2,
        ["private key"],
    ),
    (
        "rotate --jobs 0",
        lambda w: [
            "rotate",
            "--jobs",
            "0",
            "--private-key",
            w.ident,
            "--public-key",
            w.recipient,
            w.store,
        ],
        2,
        ["--jobs"],
    ),
    (
        "rotate remove a key not in --public-key",
        lambda w: [
            "rotate",
            "--private-key",
            w.ident,
            "--public-key",
            w.recipient,
            "--remove-recipient",
            "age1qyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqs3290gq",
            w.store,
        ],
        2,
        ["not among the recipients"],
    ),
    (
        "passwd --passphrase",
        lambda w: ["passwd", "--passphrase", SECRET, w.ident],
        2,
        ["not accepted"],
    ),
    ("passwd missing key", lambda w: ["passwd", w.d / "nokey"], 3, ["cannot read", "nokey"]),
    (
        "passwd wrong old passphrase",
        lambda w: ["passwd", w.protected, "--passphrase-file", w.d / "wrong-pw"],
        3,
        ["wrong passphrase"],
    ),
    (
        "passwd too short",
        lambda w: [
            "passwd",
            w.ident,
            "--new-passphrase-file",
            w.d / "short-pw",
        ],
        2,
        ["at least"],
    ),
    ("passwd a public key", lambda w: ["passwd", w.d / "pub.txt"], 3, ["public key"]),
    (
        "mount missing mountpoint",
        lambda w: ["mount", "--private-key", w.ident, w.store, w.d / "nomnt"],
        32,
        ["mountpoint does not exist"],
    ),
    (
        "mount -o passphrase=",
        lambda w: ["mount", w.store, w.mnt, "-o", f"ro,passphrase={SECRET}"],
        2,
        ["not accepted"],
    ),
    (
        "mount bad umask",
        lambda w: ["mount", "--private-key", w.ident, w.store, w.mnt, "-o", "umask=999"],
        2,
        ["umask"],
    ),
    (
        "mount bad uid",
        lambda w: ["mount", "--private-key", w.ident, w.store, w.mnt, "-o", "uid=no-such-user-x"],
        2,
        ["no such user"],
    ),
    ("unknown command", lambda w: ["lss", w.store], 2, ["unknown command 'lss'"]),
    ("unknown command alone", lambda w: ["frobnicate"], 2, ["unknown command 'frobnicate'"]),
]


@pytest.mark.parametrize("name,argv,code,needles", CASES, ids=[c[0] for c in CASES])
def test_bad_input(w, name, argv, code, needles) -> None:
    proc = run(argv(w), w.env)
    err = proc.stderr.decode(errors="replace")
    out = proc.stdout.decode(errors="replace")
    assert proc.returncode == code, (proc.returncode, err)
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    for n in needles:
        assert n.lower() in lines[0].lower(), lines[0]
    assert SECRET not in err and SECRET not in out
    assert not list(w.d.glob(".b2cryptfs-get-*")), "a temporary file was left behind"


def test_mount_helper_refuses_secret_option(w) -> None:
    env = w.env
    proc = subprocess.run(
        [
            "python3",
            "-c",
            "import sys; from b2cryptfs.cli.main import mount_helper_main as m; sys.exit(m())",
            str(w.store),
            str(w.mnt),
            "-o",
            f"passphrase={SECRET}",
        ],
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 2 and SECRET.encode() not in proc.stderr + proc.stdout
    assert proc.stderr.count(b"\n") == 1 and b"not accepted" in proc.stderr


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 1 MiB tmpfs (root only), unmounted afterwards."""
    d = tmp_path / "small"
    d.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", d], capture_output=True
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {proc.stderr.decode().strip()}")
    try:
        yield d
    finally:
        subprocess.run(["umount", d], check=True)


def test_get_onto_a_full_disk(w, tmp_path: Path, small_disk: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(3 << 20))
    ok(["put", "-q", "--public-key", w.recipient, big, f"{w.store}/big/"], w.env)
    proc = run(["get", "--private-key", w.ident, f"{w.store}/big/big.bin", small_disk], w.env)
    err = proc.stderr.decode()
    assert proc.returncode == 1 and "Traceback" not in err, err
    assert err.count("\n") == 1 and "no space left on device" in err.lower(), err
    assert os.listdir(small_disk) == []  # the partial temporary file is gone


def test_put_to_a_full_store_leaves_no_orphan_key(w, tmp_path: Path, small_disk: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(3 << 20))
    store = small_disk / "store"
    store.mkdir()
    proc = run(["put", "--public-key", w.recipient, big, f"{store}/"], w.env)
    err = proc.stderr.decode()
    assert proc.returncode != 0 and "Traceback" not in err, err
    assert err.count("\n") == 1 and "no space left on device" in err.lower(), err
    names = [p.name for p in store.rglob("*") if p.is_file()]
    assert not [n for n in names if n.endswith(".enc")], names
