"""Encrypted names through the real command line, on a directory store, with keys made by
the seed's openssl commands and the name key checked with the real ``age`` binary."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import B2CRYPTFS
from openssl_testutil import PASSPHRASE, needs_openssl, openssl_keypair

from b2cryptfs.formats.names import NAME_KEY_SIZE, NameCipher

pytestmark = needs_openssl
NAME_KEY_OBJECT = ".b2cryptfs-names.age"
# Plaintext segments used below; each holds a character outside lowercase base32, so none
# can occur inside an encrypted name by chance.
SEGMENTS = ["Photos", "Trip 2024", "beach.JPG", "notes.txt", "Deep", "Er", "Tiefer", "a.bin"]
# Directory objects (put -r keeps directory metadata) carry an encrypted segment too.
_ENCRYPTED = re.compile(r"[a-z2-7]+(\.enc|\.key\.enc|\.b2cryptfs-dir)?")


def cli(env, *args, check=True):
    p = subprocess.run([*B2CRYPTFS, *map(str, args)], env=env, capture_output=True, timeout=120)
    if check:
        assert p.returncode == 0, f"b2cryptfs {args} failed: {p.stderr.decode()[-2000:]}"
    return p


def one_line_error(p, code: int, *needles: str) -> str:
    err = p.stderr.decode()
    assert p.returncode == code, (p.returncode, err)
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    for n in needles:
        assert n.lower() in lines[0].lower(), lines[0]
    return lines[0]


def assert_store_hides_names(store: Path) -> list[str]:
    seen = []
    for dirpath, dirs, files in os.walk(store):
        dirs[:] = [d for d in dirs if d != ".b2cryptfs-tmp"]
        for part in dirs + files:
            seen.append(part)
            if part in (NAME_KEY_OBJECT, ".bzEmpty"):
                continue
            assert _ENCRYPTED.fullmatch(part), os.path.join(dirpath, part)
            for seg in SEGMENTS:
                assert seg not in part, (seg, part)
    return seen


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    old = openssl_keypair(tmp_path_factory.mktemp("old"))
    new = openssl_keypair(tmp_path_factory.mktemp("new"))
    return old, new


@pytest.fixture
def env(cli_env):
    return dict(cli_env, B2CRYPTFS_PASSPHRASE=PASSPHRASE.decode())


@pytest.fixture
def tree(tmp_path) -> tuple[Path, dict[str, bytes]]:
    src = tmp_path / "Photos"
    files = {
        "Trip 2024/beach.JPG": os.urandom(150_000),
        "notes.txt": b"remember the sun cream\n",
        "Deep/Er/Tiefer/a.bin": b"",
    }
    for rel, data in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    return src, {f"Photos/{k}": v for k, v in files.items()}


def plain_key(priv: Path, pf: Path, out: Path) -> Path:
    subprocess.run(
        ["openssl", "pkey", "-in", priv, "-passin", f"file:{pf}", "-out", out],
        check=True,
        capture_output=True,
    )
    return out


def test_put_ls_get_cat_with_encrypted_names(tmp_path, keys, env, tree):
    (priv, pub, pf), _ = keys
    src, files = tree
    store = tmp_path / "store"
    store.mkdir()
    cli(env, "put", "--encrypt-names", "--private-key", priv, "-r", src, f"{store}/")
    seen = assert_store_hides_names(store)
    assert NAME_KEY_OBJECT in seen and len(seen) > 10

    ls = cli(env, "ls", "-R", "--private-key", priv, store).stdout.decode().splitlines()
    assert ls == [
        "Photos/",
        "Photos/Deep/",
        "Photos/Trip 2024/",
        "Photos/notes.txt",
        "Photos/Deep/Er/",
        "Photos/Deep/Er/Tiefer/",
        "Photos/Deep/Er/Tiefer/a.bin",
        "Photos/Trip 2024/beach.JPG",
    ]
    long = cli(env, "ls", "-l", "--private-key", priv, f"{store}/Photos/Trip 2024")
    fields = long.stdout.decode().split()
    assert fields[0] == "age" and fields[1] == "150000" and fields[-1] == "beach.JPG"

    for path, data in files.items():
        got = cli(env, "cat", "--private-key", priv, f"{store}/{path}").stdout
        assert got == data, path
    out = tmp_path / "out"
    out.mkdir()
    cli(env, "get", "--private-key", priv, f"{store}/Photos/Trip 2024/beach.JPG", out)
    assert (out / "beach.JPG").read_bytes() == files["Photos/Trip 2024/beach.JPG"]

    # Honoured without the flag; plain put into the same store stays encrypted.
    extra = tmp_path / "Er"
    extra.write_bytes(b"more")
    cli(env, "put", "--private-key", priv, extra, f"{store}/Photos/Deep/")
    assert_store_hides_names(store)
    got = cli(env, "cat", "--private-key", priv, f"{store}/Photos/Deep/Er").stdout
    assert got == b"more"  # a file and a directory of the same name, side by side

    missing = cli(env, "cat", "--private-key", priv, f"{store}/Photos/none", check=False)
    one_line_error(missing, 5, "no such file")


def test_name_key_is_a_stock_age_file(tmp_path, keys, env):
    (priv, pub, pf), _ = keys
    store = tmp_path / "store"
    store.mkdir()
    f = tmp_path / "notes.txt"
    f.write_bytes(b"x")
    cli(env, "put", "--encrypt-names", "--public-key", pub, "--private-key", priv, f, f"{store}/")
    if shutil.which("age") is None:
        pytest.skip("age binary not installed")
    plain = plain_key(priv, pf, tmp_path / "plain.pem")
    got = subprocess.run(
        ["age", "-d", "-i", plain, store / NAME_KEY_OBJECT], capture_output=True, check=True
    )
    assert len(got.stdout) == NAME_KEY_SIZE
    # That key is the one the names are encrypted with.
    names = NameCipher(got.stdout)
    [obj] = [p.name for p in store.iterdir() if p.name.endswith(".key.enc")]
    assert names.decrypt_segment(obj[: -len(".key.enc")]) == "notes.txt"


def test_write_only_and_keyless_sessions_fail_early(tmp_path, keys, env, tree):
    (priv, pub, _), _ = keys
    src, _ = tree
    store = tmp_path / "store"
    store.mkdir()
    cli(env, "put", "--encrypt-names", "--private-key", priv, "-r", src, f"{store}/")
    before = sorted(assert_store_hides_names(store))
    f = tmp_path / "new.txt"
    f.write_bytes(b"new")
    put = cli(env, "put", "--public-key", pub, f, f"{store}/Photos/", check=False)
    one_line_error(put, 3, "encrypted", "write-only", "--private-key")
    ls = cli(env, "ls", store, check=False)
    one_line_error(ls, 3, "encrypted", "--private-key")
    fsck = cli(env, "fsck", store, check=False)
    one_line_error(fsck, 3, "encrypted")
    assert sorted(assert_store_hides_names(store)) == before
    # Creating name encryption write-only is refused too, and leaves nothing behind.
    empty = tmp_path / "empty"
    empty.mkdir()
    new = cli(env, "put", "--encrypt-names", "--public-key", pub, f, f"{empty}/", check=False)
    one_line_error(new, 3, "write-only")
    assert list(empty.iterdir()) == []


def test_encrypt_names_refused_on_plain_store_and_long_names(tmp_path, keys, env):
    (priv, _, _), _ = keys
    store = tmp_path / "store"
    store.mkdir()
    f = tmp_path / "old.txt"
    f.write_bytes(b"old")
    cli(env, "put", "--private-key", priv, f, f"{store}/")
    p = cli(env, "put", "--encrypt-names", "--private-key", priv, f, f"{store}/", check=False)
    one_line_error(p, 2, "plain names")
    assert not (store / NAME_KEY_OBJECT).exists()

    fresh = tmp_path / "fresh"
    fresh.mkdir()
    cli(env, "put", "--encrypt-names", "--private-key", priv, f, f"{fresh}/")
    # Past 135 bytes an encrypted name no longer fits a segment: a long-name stand-in.
    long = tmp_path / ("n" * 255)
    long.write_bytes(b"x")
    cli(env, "put", "--private-key", priv, long, f"{fresh}/")
    assert cli(env, "cat", "--private-key", priv, f"{fresh}/{long.name}").stdout == b"x"
    ok = tmp_path / ("n" * 135)
    ok.write_bytes(b"ok")
    cli(env, "put", "--private-key", priv, ok, f"{fresh}/")
    assert cli(env, "cat", "--private-key", priv, f"{fresh}/{ok.name}").stdout == b"ok"


def test_rotate_rewraps_files_and_name_key(tmp_path, keys, env, tree):
    (old_priv, _, _), (new_priv, new_pub, _) = keys
    src, files = tree
    store = tmp_path / "store"
    store.mkdir()
    cli(env, "put", "--encrypt-names", "--private-key", old_priv, "-r", src, f"{store}/")
    objects_before = sorted(assert_store_hides_names(store))
    contents = {p: p.read_bytes() for p in store.rglob("*.enc") if ".key." not in p.name}

    dry = cli(env, "rotate", "-n", "--private-key", old_priv, "--public-key", new_pub, store)
    assert "would re-wrap the name key" in dry.stdout.decode()
    out = cli(env, "rotate", "--private-key", old_priv, "--public-key", new_pub, store)
    assert f"rotated {len(files)} file(s), 0 failed" in out.stdout.decode()
    assert f"re-wrapped the name key {NAME_KEY_OBJECT}" in out.stdout.decode()
    # No object was renamed and no content object rewritten.
    assert sorted(assert_store_hides_names(store)) == objects_before
    assert {p: p.read_bytes() for p in contents} == contents

    for path, data in files.items():
        assert cli(env, "cat", "--private-key", new_priv, f"{store}/{path}").stdout == data
    denied = cli(env, "ls", "--private-key", old_priv, store, check=False)
    one_line_error(denied, 3, NAME_KEY_OBJECT)


def test_rotate_of_a_subtree_leaves_the_name_key(tmp_path, keys, env, tree):
    (old_priv, _, _), (_, new_pub, _) = keys
    src, _ = tree
    store = tmp_path / "store"
    store.mkdir()
    cli(env, "put", "--encrypt-names", "--private-key", old_priv, "-r", src, f"{store}/")
    name_key = (store / NAME_KEY_OBJECT).read_bytes()
    out = cli(env, "rotate", "--private-key", old_priv, "--public-key", new_pub, store / "Photos")
    assert "was not re-wrapped" in out.stdout.decode()
    assert (store / NAME_KEY_OBJECT).read_bytes() == name_key
    # The old key still opens the names (and the files not rotated... none here).
    assert cli(env, "ls", "--private-key", old_priv, store).stdout.decode().split() == ["Photos/"]


def test_fsck_reports_plaintext_names(tmp_path, keys, env, tree):
    (priv, _, _), _ = keys
    src, _ = tree
    store = tmp_path / "store"
    store.mkdir()
    cli(env, "put", "--encrypt-names", "--private-key", priv, "-r", src, f"{store}/")
    assert cli(env, "fsck", "--private-key", priv, store).stdout.decode().strip() == "clean"
    # Interrupt an upload between its objects: remove the content object of notes.txt.
    candidates = [p for p in store.rglob("*.enc") if ".key." not in p.name]
    notes = [p for p in candidates if p.relative_to(store).as_posix().count("/") == 1]
    assert len(notes) == 1  # Photos/<leaf>: notes.txt is the only file at that level
    notes[0].unlink()
    (store / "stray.txt").write_bytes(b"not ours")
    report = cli(env, "fsck", "--private-key", priv, store, check=False)
    lines = report.stdout.decode().splitlines()
    assert report.returncode == 1
    assert any(ln.split()[:2] == ["orphan-key", "Photos/notes.txt.key.enc:"] for ln in lines), lines
    assert any(ln.split()[:2] == ["stray", "stray.txt:"] for ln in lines), lines
    cli(env, "fsck", "--repair", "--private-key", priv, store, check=False)
    after = cli(env, "fsck", "--private-key", priv, store, check=False).stdout.decode()
    assert "orphan-key" not in after and "stray.txt" in after
