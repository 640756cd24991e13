"""The command-line tools without FUSE: keygen, put, get, cat, ls, on a directory store.

Everything runs the real CLI in a subprocess, and the seed procedure's real openssl commands.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from conftest import B2CRYPTFS

PASSPHRASE = "correct horse battery staple"
SEED_SIZES = [0, 1, 15, 16, 17, 47, 48, 49, 65535, 65536, 65537, 3_000_001]


def run(args, env, *, check=True, input=None):
    proc = subprocess.run(
        [*B2CRYPTFS, *map(str, args)], env=env, capture_output=True, input=input, timeout=120
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"b2cryptfs {args} failed ({proc.returncode}): {proc.stderr.decode(errors='replace')}"
        )
    return proc


def assert_one_line_error(proc, code: int, *needles: str) -> None:
    err = proc.stderr.decode()
    assert proc.returncode == code, (proc.returncode, err)
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    for n in needles:
        assert n.lower() in lines[0].lower(), lines[0]


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, Path]:
    """A key pair made exactly as the seed procedure makes it, and an age identity."""
    d = tmp_path_factory.mktemp("keys")
    pf = d / "passphrase"
    pf.write_text(PASSPHRASE + "\n")
    priv, pub = d / "priv-key.pem", d / "pub-key.pem"
    subprocess.run(
        ["openssl", "genrsa", "-aes256", "-passout", f"file:{pf}", "-out", priv, "2048"],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        ["openssl", "rsa", "-in", priv, "-passin", f"file:{pf}", "-pubout", "-out", pub],
        check=True,
        capture_output=True,
    )
    other = d / "other-key.pem"
    subprocess.run(
        ["openssl", "genrsa", "-aes256", "-passout", f"file:{pf}", "-out", other, "2048"],
        check=True,
        capture_output=True,
    )
    return {"priv": priv, "pub": pub, "pass": pf, "other": other, "dir": d}


@pytest.fixture
def env(cli_env, keys):
    return dict(cli_env, B2CRYPTFS_PASSPHRASE=PASSPHRASE)


def seed_encrypt(path: Path, pub: Path, md5: bool = False) -> None:
    """The seed procedure's exact commands: unquoted echo, -pass stdin, rsautl."""
    md = " -md md5" if md5 else ""
    script = (
        "set -e\n"
        "ONE_TIME_PASSWORD=`openssl rand -base64 180`\n"
        f'echo $ONE_TIME_PASSWORD | openssl aes-256-cbc{md} -a -salt -pass stdin -in "$F" -out "$F.enc"\n'
        'echo $ONE_TIME_PASSWORD | openssl rsautl -encrypt -pubin -inkey "$PUB" -out "$F.key.enc"\n'
    )
    subprocess.run(
        ["bash", "-c", script],
        env=dict(os.environ, F=str(path), PUB=str(pub)),
        check=True,
        capture_output=True,
    )


def seed_decrypt(enc: Path, out: Path, priv: Path, pf: Path, md5: bool = False) -> None:
    md = " -md md5" if md5 else ""
    script = (
        "set -eo pipefail\n"
        f'openssl rsautl -decrypt -inkey "$PRIV" -passin "file:$PF" -in "$F.key.enc" | '
        f'openssl enc -aes-256-cbc{md} -d -a -pass stdin -in "$F.enc" -out "$OUT"\n'
    )
    subprocess.run(
        ["bash", "-c", script],
        env=dict(os.environ, F=str(enc), PRIV=str(priv), PF=str(pf), OUT=str(out)),
        check=True,
        capture_output=True,
    )


@pytest.mark.parametrize("md5", [False, True], ids=["sha256", "md5"])
def test_get_reads_seed_written_files(tmp_path, keys, env, md5):
    store = tmp_path / "store"
    store.mkdir()
    originals = {}
    for size in SEED_SIZES:
        f = store / f"file-{size}.bin"
        data = os.urandom(size)
        f.write_bytes(data)
        seed_encrypt(f, keys["pub"], md5=md5)
        f.unlink()  # only the two objects stay in the store, as in a bucket
        originals[f.name] = data
    listing = run(["ls", "-l", "--private-key", keys["priv"], store], env).stdout.decode()
    for name, data in originals.items():
        line = next(ln for ln in listing.splitlines() if ln.endswith(" " + name))
        assert line.split()[0] == "openssl" and line.split()[1] == str(len(data)), line
    out = tmp_path / "out"
    out.mkdir()
    for name, data in originals.items():
        run(["get", "--private-key", keys["priv"], store / name, out / name], env)
        assert (out / name).read_bytes() == data, name


@pytest.mark.parametrize("md5", [False, True], ids=["sha256", "md5"])
def test_put_openssl_reads_back_with_seed_decrypt(tmp_path, keys, env, md5):
    store = tmp_path / "store"
    store.mkdir()
    for size in (0, 1, 48, 65537, 1_000_003):
        src = tmp_path / f"in-{size}"
        src.write_bytes(os.urandom(size))
        args = ["put", "--format", "openssl", "--public-key", keys["pub"], src, f"{store}/"]
        if md5:
            args[1:1] = ["--openssl-md", "md5"]
        run(args, env)
        out = tmp_path / f"out-{size}"
        seed_decrypt(store / src.name, out, keys["priv"], keys["pass"], md5=md5)
        assert out.read_bytes() == src.read_bytes()


def test_age_roundtrip_cat_ls_and_mtime(tmp_path, keys, env):
    store = tmp_path / "store"
    store.mkdir()
    src = tmp_path / "notes.txt"
    src.write_bytes(os.urandom(300_000))
    os.utime(src, (1_600_000_000, 1_600_000_000))
    run(["put", "--public-key", keys["pub"], src, f"{store}/docs/"], env)
    assert sorted(p.name for p in (store / "docs").iterdir()) == [
        "notes.txt.enc",
        "notes.txt.key.enc",
    ]
    assert (store / "docs/notes.txt.key.enc").read_bytes().startswith(b"age-encryption.org/v1\n")
    ls = run(["ls", "-l", store / "docs"], env).stdout.decode().split()
    assert ls[0] == "age" and ls[1] == "300000" and ls[-1] == "notes.txt"
    assert run(["ls", store], env).stdout.decode().split() == ["docs/"]
    cat = run(["cat", "--private-key", keys["priv"], store / "docs/notes.txt"], env).stdout
    assert cat == src.read_bytes()
    out = tmp_path / "got"
    out.mkdir()
    run(["get", "--private-key", keys["priv"], store / "docs/notes.txt", out], env)
    assert (out / "notes.txt").read_bytes() == src.read_bytes()
    assert int((out / "notes.txt").stat().st_mtime) == 1_600_000_000


def test_several_recipients_each_decrypts(tmp_path, keys, env):
    store = tmp_path / "store"
    store.mkdir()
    age_id = keys["dir"] / "recovery.txt"
    if not age_id.exists():
        subprocess.run(["age-keygen", "-o", age_id], check=True, capture_output=True)
    recipient = [
        ln.split(": ", 1)[1]
        for ln in age_id.read_text().splitlines()
        if ln.startswith("# public key:")
    ][0]
    src = tmp_path / "f.bin"
    src.write_bytes(os.urandom(70_000))
    run(["put", "--public-key", keys["pub"], "--public-key", recipient, src, f"{store}/"], env)
    for key in (keys["priv"], age_id):
        got = run(["cat", "--private-key", key, store / "f.bin"], env).stdout
        assert got == src.read_bytes()


def test_wrong_passphrase_is_one_clear_line(tmp_path, keys, env):
    store = tmp_path / "store"
    store.mkdir()
    src = tmp_path / "f"
    src.write_bytes(b"x")
    run(["put", "--public-key", keys["pub"], src, f"{store}/"], env)
    bad = dict(env, B2CRYPTFS_PASSPHRASE="not the passphrase")
    proc = run(
        ["get", "--private-key", keys["priv"], store / "f", tmp_path / "o"], bad, check=False
    )
    assert_one_line_error(proc, 3, "passphrase")
    assert not (tmp_path / "o").exists()


def test_wrong_private_key_is_one_clear_line(tmp_path, keys, env):
    store = tmp_path / "store"
    store.mkdir()
    src = tmp_path / "f"
    src.write_bytes(b"secret")
    for fmt in ("age", "openssl"):
        run(["put", "--format", fmt, "--public-key", keys["pub"], src, f"{store}/{fmt}"], env)
        proc = run(["cat", "--private-key", keys["other"], store / fmt], env, check=False)
        assert_one_line_error(proc, 3)
        assert proc.stdout == b""


def test_tampered_content_never_gives_wrong_data(tmp_path, keys, env):
    store = tmp_path / "store"
    store.mkdir()
    src = tmp_path / "f"
    src.write_bytes(os.urandom(150_000))
    run(["put", "--public-key", keys["pub"], src, f"{store}/"], env)
    content = store / "f.enc"
    original = content.read_bytes()
    for pos in (0, 15, 16, 100, 65_000, len(original) - 1):
        mutated = bytearray(original)
        mutated[pos] ^= 0x01
        content.write_bytes(bytes(mutated))
        out = tmp_path / "out"
        proc = run(["get", "--private-key", keys["priv"], store / "f", out], env, check=False)
        assert proc.returncode == 4, (pos, proc.stderr)
        assert "Traceback" not in proc.stderr.decode()
        assert not out.exists(), "a failed get must leave nothing behind"
    content.write_bytes(original)
    key = store / "f.key.enc"
    original_key = key.read_bytes()
    mutated = bytearray(original_key)
    mutated[len(mutated) // 2] ^= 0x04
    key.write_bytes(bytes(mutated))
    proc = run(["cat", "--private-key", keys["priv"], store / "f"], env, check=False)
    assert proc.returncode in (3, 4) and proc.stdout == b""


def test_orphans_hidden_and_pairs_checked(tmp_path, keys, env):
    store = tmp_path / "store"
    store.mkdir()
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"first file")
    b.write_bytes(b"second file")
    run(["put", "--public-key", keys["pub"], a, b, f"{store}/"], env)
    # An interrupted upload: a key object alone is invisible.
    (store / "ghost.key.enc").write_bytes((store / "a.key.enc").read_bytes())
    assert run(["ls", store], env).stdout.decode().split() == ["a", "b"]
    # A key object from another file: the pair check refuses it (no older version to use).
    (store / "b.key.enc").write_bytes((store / "a.key.enc").read_bytes())
    proc = run(["cat", "--private-key", keys["priv"], store / "b"], env, check=False)
    assert_one_line_error(proc, 4, "b.key.enc")
    fsck = run(["fsck", store], env, check=False)
    assert fsck.returncode == 1 and b"orphan-key   ghost.key.enc" in fsck.stdout
    fsck = run(["fsck", "--repair", store], env, check=False)
    assert fsck.returncode == 0 and not (store / "ghost.key.enc").exists()


def test_key_name_collision_refused(tmp_path, keys, env):
    store = tmp_path / "store"
    store.mkdir()
    p = tmp_path / "report"
    p.write_bytes(b"report")
    run(["put", "--public-key", keys["pub"], p, f"{store}/"], env)
    pk = tmp_path / "report.key"
    pk.write_bytes(b"would overwrite the key object of 'report'")
    proc = run(["put", "--public-key", keys["pub"], pk, f"{store}/"], env, check=False)
    assert_one_line_error(proc, 1, "report")
    got = run(["cat", "--private-key", keys["priv"], store / "report"], env).stdout
    assert got == b"report"


def test_rotate_rewraps_only_key_objects(tmp_path, keys, env):
    store = tmp_path / "store"
    store.mkdir()
    for fmt in ("age", "openssl"):
        f = tmp_path / fmt
        f.write_bytes(os.urandom(5000))
        run(["put", "--format", fmt, "--public-key", keys["pub"], f, f"{store}/"], env)
    contents = {p.name: p.read_bytes() for p in store.glob("*.enc") if ".key." not in p.name}
    new_pub = tmp_path / "new-pub.pem"
    subprocess.run(
        [
            "openssl",
            "rsa",
            "-in",
            keys["other"],
            "-passin",
            f"file:{keys['pass']}",
            "-pubout",
            "-out",
            new_pub,
        ],
        check=True,
        capture_output=True,
    )
    run(["rotate", "--private-key", keys["priv"], "--public-key", new_pub, store], env)
    assert {
        p.name: p.read_bytes() for p in store.glob("*.enc") if ".key." not in p.name
    } == contents
    for fmt in ("age", "openssl"):
        got = run(["cat", "--private-key", keys["other"], store / fmt], env).stdout
        assert got == (tmp_path / fmt).read_bytes()
        proc = run(["cat", "--private-key", keys["priv"], store / fmt], env, check=False)
        assert proc.returncode == 3


def test_missing_file_and_bad_store(tmp_path, keys, env):
    proc = run(
        ["get", "--private-key", keys["priv"], tmp_path / "nothing", tmp_path / "o"],
        env,
        check=False,
    )
    assert_one_line_error(proc, 5, "no such file")
    proc = run(["ls", "s3://bucket"], env, check=False)
    assert_one_line_error(proc, 2, "scheme")
