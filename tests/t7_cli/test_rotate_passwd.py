"""Key lifecycle tools from the command line: ``passwd`` (a new passphrase, same key, the
bucket untouched) and ``rotate`` (a dry run that predicts the run, resuming after a kill,
adding and removing a recipient)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
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
from conftest import B2CRYPTFS
from openssl_testutil import PASSPHRASE, needs_openssl, openssl_keypair

AGE = shutil.which("age")
NEW = "a new passphrase 2"


def _pw(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text + "\n")
    return path


def _tree(folder: Path, n: int) -> dict[str, bytes]:
    folder.mkdir()
    files = {f"f{i:03d}.bin": os.urandom(100 + i) for i in range(n)}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return files


# --- passwd ------------------------------------------------------------------------


@needs_openssl
def test_passwd_rsa_round_trip_leaves_the_bucket_alone(tmp_path, b2_cli_env, b2_bucket):
    priv, pub, old_pw = openssl_keypair(tmp_path / "k")
    new_pw = _pw(tmp_path, "new.txt", NEW)
    files = _tree(tmp_path / "src", 3)
    ok(
        ["put", "-q", "-r", "--public-key", pub, tmp_path / "src", f"{b2_bucket.url}/d/"],
        b2_cli_env,
    )
    before = sorted((v["fileName"], v["fileId"]) for v in b2_bucket.versions())
    b2_bucket.server.reset_stats()

    out = ok(
        ["passwd", priv, "--passphrase-file", old_pw, "--new-passphrase-file", new_pw], b2_cli_env
    )
    assert b"unchanged" in out.stderr
    assert (os.stat(priv).st_mode & 0o777) == 0o600
    assert priv.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert not [p for p in priv.parent.iterdir() if p.name.startswith(".")]  # no temp file left
    # The same key: openssl opens it with the new passphrase, and its public half is the same.
    got_pub = subprocess.run(
        ["openssl", "rsa", "-in", priv, "-passin", f"file:{new_pw}", "-pubout"],
        capture_output=True,
        check=True,
    ).stdout
    assert got_pub.strip() == pub.read_bytes().strip()

    # The bucket: no request at all, the same versions.
    assert sum(b2_bucket.server.stats().values()) == 0
    assert sorted((v["fileName"], v["fileId"]) for v in b2_bucket.versions()) == before
    name = next(iter(files))
    url = f"{b2_bucket.url}/d/src/{name}"
    old = run(["cat", "--private-key", priv, "--passphrase-file", old_pw, url], b2_cli_env)
    assert_one_line(old, 3, "wrong passphrase")
    new = ok(["cat", "--private-key", priv, "--passphrase-file", new_pw, url], b2_cli_env)
    assert new.stdout == files[name]


@needs_openssl
def test_passwd_wrong_old_passphrase_and_bad_new_ones_change_nothing(tmp_path, cli_env):
    priv, _, old_pw = openssl_keypair(tmp_path / "k")
    original = priv.read_bytes()
    wrong = _pw(tmp_path, "wrong.txt", "not it")
    short = _pw(tmp_path, "short.txt", "abc")
    new_pw = _pw(tmp_path, "new.txt", NEW)
    p = run(["passwd", priv, "--passphrase-file", wrong, "--new-passphrase-file", new_pw], cli_env)
    assert_one_line(p, 3, "wrong passphrase", str(priv))
    p = run(["passwd", priv, "--passphrase-file", old_pw, "--new-passphrase-file", short], cli_env)
    assert_one_line(p, 2, "at least")
    # The old passphrase in the environment is never taken for the new one; no terminal.
    env = dict(cli_env, B2CRYPTFS_PASSPHRASE=PASSPHRASE.decode())
    p = subprocess.run(
        [*B2CRYPTFS, "passwd", str(priv)],
        env=env,
        capture_output=True,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        timeout=60,
    )
    assert_one_line(p, 3, "new passphrase")
    assert priv.read_bytes() == original
    # An unencrypted key only with the explicit flag.
    ok(["passwd", priv, "--passphrase-file", old_pw, "--no-passphrase"], cli_env)
    assert priv.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")


def test_passwd_age_protected_identity(tmp_path, cli_env):
    ident, recipient = make_age_identity(tmp_path)
    protected = tmp_path / "id.age"
    protected.write_bytes(age_passphrase_encrypt(ident.read_bytes(), "old passphrase"))
    old_pw = _pw(tmp_path, "old.txt", "old passphrase")
    new_pw = _pw(tmp_path, "new.txt", NEW)
    store = tmp_path / "store"
    store.mkdir()
    (tmp_path / "a.txt").write_bytes(b"age protected\n")
    ok(["put", "-q", "--public-key", recipient, tmp_path / "a.txt", f"{store}/"], cli_env)
    listing = sorted(p.name for p in store.iterdir())

    ok(["passwd", protected, "--passphrase-file", old_pw, "--new-passphrase-file", new_pw], cli_env)
    assert protected.read_bytes().startswith(b"age-encryption.org/v1\n-> scrypt ")
    assert (os.stat(protected).st_mode & 0o777) == 0o600
    assert sorted(p.name for p in store.iterdir()) == listing
    args = ["cat", "--private-key", protected, f"{store}/a.txt"]
    assert_one_line(run([*args, "--passphrase-file", old_pw], cli_env), 3, "wrong passphrase")
    assert ok([*args, "--passphrase-file", new_pw], cli_env).stdout == b"age protected\n"
    if AGE:  # the real age opens what passwd wrote with the new passphrase
        code, shown = run_with_tty([AGE, "-d", str(protected)], NEW, cli_env, prompt=b"passphrase")
        assert code == 0 and ident.read_text().strip().splitlines()[-1].encode() in shown


# --- rotate ------------------------------------------------------------------------


def _summary(proc: subprocess.CompletedProcess) -> str:
    return [ln for ln in proc.stdout.decode().splitlines() if " file(s), " in ln][-1]


def _failures(proc: subprocess.CompletedProcess) -> list[str]:
    return sorted(ln for ln in proc.stderr.decode().splitlines() if ln.startswith("failed "))


def test_dry_run_predicts_the_run_on_a_store_with_broken_pairs(tmp_path, cli_env):
    old_id, old_r = make_age_identity(tmp_path, "old.txt")
    _, new_r = make_age_identity(tmp_path, "new.txt")
    _tree(tmp_path / "src", 5)
    store = tmp_path / "store"
    store.mkdir()
    ok(["put", "-q", "-r", "--public-key", old_r, tmp_path / "src", f"{store}/"], cli_env)
    d = store / "src"
    # One pair whose key object belongs to another file, one without its key object.
    (d / "f001.bin.key.enc").write_bytes((d / "f000.bin.key.enc").read_bytes())
    (d / "f002.bin.key.enc").unlink()
    args = ["rotate", "--private-key", old_id, "--public-key", new_r, store]
    keys_before = {p.name: p.read_bytes() for p in d.iterdir()}
    dry = run([*args, "-n"], cli_env)
    assert {p.name: p.read_bytes() for p in d.iterdir()} == keys_before  # nothing written
    real = run(args, cli_env)
    assert dry.returncode == real.returncode == 1
    assert _summary(dry) == "would rotate 3 file(s), 2 failed"
    assert _summary(real) == "rotated 3 file(s), 2 failed"
    assert _failures(dry) == _failures(real) and len(_failures(real)) == 2
    # A second dry run sees the run's work: the three are done, the two still fail.
    again = run([*args, "-n"], cli_env)
    assert (
        _summary(again)
        == "would rotate 0 file(s), 2 failed, 3 already wrapped for these recipients"
    )


@pytest.mark.skipif(AGE is None, reason="needs the age tool")
def test_add_then_remove_an_age_recipient(tmp_path, cli_env):
    priv_id, priv_r = make_age_identity(tmp_path, "main.txt")
    extra_id, extra_r = make_age_identity(tmp_path, "extra.txt")
    store = tmp_path / "store"
    store.mkdir()
    (tmp_path / "doc").write_bytes(b"secret document\n")
    ok(["put", "-q", "--public-key", priv_r, tmp_path / "doc", f"{store}/"], cli_env)

    def age_d(identity: Path) -> subprocess.CompletedProcess:
        whole = (store / "doc.key.enc").read_bytes() + (store / "doc.enc").read_bytes()
        return subprocess.run(
            [AGE, "-d", "-i", str(identity)], input=whole, capture_output=True, timeout=60
        )

    assert age_d(extra_id).returncode != 0
    base = ["rotate", "--private-key", priv_id, store]
    ok([*base, "--add-recipient", extra_r], cli_env)
    assert age_d(extra_id).stdout == b"secret document\n"
    assert age_d(priv_id).stdout == b"secret document\n"
    # Same set again: nothing to do.
    assert "1 already wrapped" in _summary(ok([*base, "--add-recipient", extra_r], cli_env))
    ok([*base, "--remove-recipient", extra_r], cli_env)
    assert age_d(extra_id).returncode != 0
    assert age_d(priv_id).stdout == b"secret document\n"
    # Removed already: nothing to do; removing the last one is refused for that file.
    assert "1 already wrapped" in _summary(ok([*base, "--remove-recipient", extra_r], cli_env))
    p = run([*base, "--remove-recipient", priv_r], cli_env)
    assert p.returncode == 1 and _failures(p) == [
        "failed doc: no recipients left to wrap the file key for"
    ]
    # With --public-key the set is given whole: removing a key not in it is a usage error.
    p = run([*base, "--public-key", priv_r, "--remove-recipient", extra_r], cli_env)
    assert_one_line(p, 2, "not among the recipients")
    assert age_d(priv_id).stdout == b"secret document\n"


@needs_openssl
def test_relative_rotate_refuses_to_drop_an_unknown_recipient(tmp_path, cli_env):
    priv, pub, pw = openssl_keypair(tmp_path / "k")
    _, other_r = make_age_identity(tmp_path, "other.txt")
    _, extra_r = make_age_identity(tmp_path, "extra.txt")
    store = tmp_path / "store"
    store.mkdir()
    (tmp_path / "doc").write_bytes(b"two recipients\n")
    put = ["put", "-q", "--public-key", pub, "--public-key", other_r, tmp_path / "doc", store]
    ok(put, cli_env)
    p = run(
        [
            "rotate",
            "--private-key",
            priv,
            "--passphrase-file",
            pw,
            "--add-recipient",
            extra_r,
            store,
        ],
        cli_env,
    )
    assert p.returncode == 1 and "give the whole new set with --public-key" in p.stderr.decode()


def _key_versions(b2_bucket) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in b2_bucket.versions():
        if v["fileName"].endswith(".key.enc") and v["action"] == "upload":
            out[v["fileName"]] = out.get(v["fileName"], 0) + 1
    return out


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["kill", "ctrl-c"])
def test_rotate_killed_mid_run_resumes_without_rewrapping_twice(
    tmp_path, b2_cli_env, b2_bucket, sig
):
    old_id, old_r = make_age_identity(tmp_path, "old.txt")
    new_id, new_r = make_age_identity(tmp_path, "new.txt")
    n = 40
    files = _tree(tmp_path / "src", n)
    ok(
        ["put", "-q", "-r", "--public-key", old_r, tmp_path / "src", f"{b2_bucket.url}/"],
        b2_cli_env,
    )
    assert set(_key_versions(b2_bucket).values()) == {1}
    args = ["rotate", "--jobs", "4", "--private-key", old_id, "--public-key", new_r, b2_bucket.url]
    server = b2_bucket.server
    server.reset_stats()
    server.configure(latency_ms=60)
    try:
        proc = subprocess.Popen(
            [*B2CRYPTFS, *map(str, args)],
            env=b2_cli_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 120
        while server.stats().get("b2_upload_file", 0) < 8 and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(sig)
        _, err = proc.communicate()
        if sig == signal.SIGINT:  # in-flight re-wraps finish, the rest is left for a re-run
            assert proc.returncode == 130 and b"run the same command again" in err, err
    finally:
        server.configure(latency_ms=0)
    # Requests the killed process had sent may still complete at the server: let them land.
    first, settled = None, _key_versions(b2_bucket)
    while first != settled:
        time.sleep(0.5)
        first, settled = settled, _key_versions(b2_bucket)
    done_first = sum(1 for c in first.values() if c == 2)
    assert 0 < done_first < n and set(first.values()) <= {1, 2}

    again = ok([*args, "--progress"], b2_cli_env)
    assert f"rotate: {n}/{n} files 100%, 0 failed".encode() in again.stderr
    assert _summary(again) == (
        f"rotated {n - done_first} file(s), 0 failed, {done_first} already wrapped for these "
        "recipients"
    )
    # Every key object re-wrapped exactly once over both runs: the original and one more.
    assert set(_key_versions(b2_bucket).values()) == {2}
    out = tmp_path / "out"
    ok(["get", "-q", "-r", "--private-key", new_id, f"{b2_bucket.url}/src", out], b2_cli_env)
    assert {
        p.name: p.read_bytes() for p in (out / "src" if (out / "src").is_dir() else out).iterdir()
    } == files
    denied = run(["cat", "--private-key", old_id, f"{b2_bucket.url}/src/f000.bin"], b2_cli_env)
    assert denied.returncode == 3


def test_add_and_remove_a_recipient_with_encrypted_names(tmp_path, cli_env):
    main_id, main_r = make_age_identity(tmp_path, "main.txt")
    extra_id, extra_r = make_age_identity(tmp_path, "extra.txt")
    store = tmp_path / "store"
    store.mkdir()
    _tree(tmp_path / "src", 2)
    put = ["put", "-q", "-r", "--encrypt-names", "--private-key", main_id, tmp_path / "src", store]
    ok(put, cli_env)
    ls = ["ls", "-R", "--private-key", extra_id, store]
    assert run(ls, cli_env).returncode != 0
    base = ["rotate", "--private-key", main_id, store]
    out = ok([*base, "--add-recipient", extra_r], cli_env).stdout.decode()
    assert "rotated 2 file(s), 0 failed" in out and "re-wrapped the name key" in out
    assert "f001.bin" in ok(ls, cli_env).stdout.decode()
    again = ok([*base, "--add-recipient", extra_r], cli_env).stdout.decode()
    assert "2 already wrapped" in again and "name key" in again and "already wrapped" in again
    ok([*base, "--remove-recipient", extra_r], cli_env)
    assert run(ls, cli_env).returncode != 0
    assert "f001.bin" in ok(["ls", "-R", "--private-key", main_id, store], cli_env).stdout.decode()
