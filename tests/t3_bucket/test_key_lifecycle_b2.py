"""Key lifecycle on B2, where versions matter: rotation (with and without purging the old
key object versions), the pair check falling back to an older key version, and fsck."""

from __future__ import annotations

import os
import subprocess

import pytest
from conftest import B2CRYPTFS
from openssl_testutil import PASSPHRASE, needs_openssl, openssl_keypair

pytestmark = needs_openssl


def cli(env, *args, check=True):
    p = subprocess.run([*B2CRYPTFS, *map(str, args)], env=env, capture_output=True, timeout=300)
    if check:
        assert p.returncode == 0, f"b2cryptfs {args} failed: {p.stderr.decode()[-2000:]}"
    return p


@pytest.fixture(scope="module")
def two_keys(tmp_path_factory):
    old = openssl_keypair(tmp_path_factory.mktemp("old"))
    new = openssl_keypair(tmp_path_factory.mktemp("new"))
    return old, new


@pytest.fixture
def env(b2_cli_env):
    return dict(b2_cli_env, B2CRYPTFS_PASSPHRASE=PASSPHRASE.decode())


def key_versions(b2_bucket, name):
    return [v for v in b2_bucket.versions() if v["fileName"] == name]


@pytest.mark.parametrize("fmt", ["age", "openssl"])
def test_rotate_purges_old_key_versions_and_keeps_content(tmp_path, two_keys, env, b2_bucket, fmt):
    (old_priv, old_pub, _), (new_priv, new_pub, _) = two_keys
    src = tmp_path / "doc.bin"
    src.write_bytes(os.urandom(200_000))
    cli(env, "put", "--format", fmt, "--public-key", old_pub, src, f"{b2_bucket.url}/d/")
    before = {v["fileName"]: v["fileId"] for v in b2_bucket.versions()}

    cli(
        env,
        "rotate",
        "--private-key",
        old_priv,
        "--public-key",
        new_pub,
        "--purge-old",
        f"{b2_bucket.url}/d",
    )

    after = b2_bucket.versions()
    # The content object is untouched (same version); the key object has exactly one new one.
    assert [v["fileId"] for v in after if v["fileName"] == "d/doc.bin.enc"] == [
        before["d/doc.bin.enc"]
    ]
    keys = key_versions(b2_bucket, "d/doc.bin.key.enc")
    assert len(keys) == 1 and keys[0]["fileId"] != before["d/doc.bin.key.enc"]
    got = cli(env, "cat", "--private-key", new_priv, f"{b2_bucket.url}/d/doc.bin").stdout
    assert got == src.read_bytes()
    denied = cli(env, "cat", "--private-key", old_priv, f"{b2_bucket.url}/d/doc.bin", check=False)
    assert denied.returncode == 3 and denied.stdout == b""


def test_rotate_without_purge_says_old_versions_remain(tmp_path, two_keys, env, b2_bucket):
    (old_priv, old_pub, _), (_, new_pub, _) = two_keys
    src = tmp_path / "a"
    src.write_bytes(b"a file")
    cli(env, "put", "--public-key", old_pub, src, f"{b2_bucket.url}/")
    out = cli(env, "rotate", "--private-key", old_priv, "--public-key", new_pub, b2_bucket.url)
    assert b"--purge-old" in out.stdout
    assert len(key_versions(b2_bucket, "a.key.enc")) == 2


def _put_then_cut_overwrite(tmp_path, env, b2_bucket, pub, size):
    """``f`` put with random bytes (returned as its file), then the first step of an
    overwrite only: a new version sealed and just its key object uploaded."""
    first, second = tmp_path / "v1", tmp_path / "v2"
    first.write_bytes(os.urandom(size))
    second.write_bytes(os.urandom(size))
    cli(env, "put", "--public-key", pub, first, f"{b2_bucket.url}/f")
    from b2cryptfs.bucket.pairs import PairStore, key_name
    from b2cryptfs.keys.loader import load_recipients

    store = b2_bucket.store()
    pairs = PairStore(store, recipients=load_recipients(str(pub)))
    with open(second, "rb") as src, open(tmp_path / "sealed", "wb") as out:
        sealed = pairs.seal(src, out)
    store.upload_bytes(key_name("f"), sealed.key_object, {})
    return first


def test_new_key_object_beside_old_content_falls_back_to_older_version(
    tmp_path, two_keys, env, b2_bucket
):
    """A crash between the two uploads of an overwrite leaves the new key beside the old
    content: readers use the older key version, and fsck --repair restores it."""
    (priv, pub, _), _ = two_keys
    first = _put_then_cut_overwrite(tmp_path, env, b2_bucket, pub, 70_000)

    got = cli(env, "cat", "--private-key", priv, f"{b2_bucket.url}/f")
    assert got.stdout == first.read_bytes()
    assert b"older version" in got.stderr
    check = cli(env, "fsck", "--private-key", priv, b2_bucket.url, check=False)
    assert check.returncode == 1 and b"stale-key" in check.stdout
    cli(env, "fsck", "--repair", "--private-key", priv, b2_bucket.url)
    got = cli(env, "cat", "--private-key", priv, f"{b2_bucket.url}/f")
    assert got.stdout == first.read_bytes() and b"older version" not in got.stderr


def test_fsck_finds_orphans_and_keyless_content(tmp_path, two_keys, env, b2_bucket):
    (_, pub, _), _ = two_keys
    src = tmp_path / "ok"
    src.write_bytes(b"fine")
    cli(env, "put", "--public-key", pub, src, f"{b2_bucket.url}/x/")
    store = b2_bucket.store()
    store.upload_bytes("x/orphan.key.enc", b"age-encryption.org/v1\n", {})
    store.upload_bytes("x/lonely.enc", b"\0" * 40, {})
    store.upload_bytes("x/notes.txt", b"not ours", {})
    report = cli(env, "fsck", b2_bucket.url, check=False)
    assert report.returncode == 1
    lines = report.stdout.decode().splitlines()
    assert any(ln.startswith("orphan-key") and "x/orphan.key.enc" in ln for ln in lines)
    assert any(ln.startswith("missing-key") and "x/lonely" in ln for ln in lines)
    assert any(ln.startswith("stray") and "x/notes.txt" in ln for ln in lines)
    assert "ok" not in " ".join(ln.split()[1] for ln in lines[:-1])
    cli(env, "fsck", "--repair", b2_bucket.url, check=False)
    assert store.stat("x/orphan.key.enc") is None
    assert store.stat("x/ok.enc") is not None and store.stat("x/ok.key.enc") is not None


def _copy_is_current(store, path):
    from b2cryptfs.bucket.keycopy import copied_key

    content, key = store.stat(f"{path}.enc"), store.stat(f"{path}.key.enc")
    return copied_key(key, content) == store.read(key)


def test_fsck_reports_and_remakes_a_stale_key_copy(tmp_path, two_keys, env, b2_bucket):
    """A small file's content carries a copy of its key object; once the key object is a
    newer version (here: the same bytes again, as another tool might write it), the copy is
    stale and every read downloads the key object as well. fsck says so and remakes it."""
    (priv, pub, _), _ = two_keys
    src = tmp_path / "small"
    src.write_bytes(os.urandom(4000))
    cli(env, "put", "--public-key", pub, src, f"{b2_bucket.url}/s")
    store = b2_bucket.store()
    assert _copy_is_current(store, "s")
    assert cli(env, "fsck", b2_bucket.url).stdout.decode().splitlines() == ["clean"]
    key = store.stat("s.key.enc")
    store.upload_bytes("s.key.enc", store.read(key), dict(key.info))
    assert not _copy_is_current(store, "s")

    for args in ([], ["--private-key", priv]):
        report = cli(env, "fsck", *args, b2_bucket.url, check=False)
        assert report.returncode == 1, report.stdout
        assert report.stdout.decode().splitlines()[0].startswith("stale-copy   s: ")
    fixed = cli(env, "fsck", "--repair", b2_bucket.url).stdout.decode()
    assert fixed.startswith("stale-copy") and "[repaired]" in fixed
    assert _copy_is_current(store, "s")
    after = cli(env, "fsck", "--private-key", priv, b2_bucket.url)
    assert after.stdout.decode().splitlines() == ["clean"]
    assert cli(env, "cat", "--private-key", priv, f"{b2_bucket.url}/s").stdout == src.read_bytes()


def test_restoring_a_small_files_key_object_remakes_its_copy(tmp_path, two_keys, env, b2_bucket):
    """fsck --repair of a stale key (an overwrite cut short after its key object) uploads the
    matching key object again: the content's copy is made for that new version too."""
    (priv, pub, _), _ = two_keys
    first = _put_then_cut_overwrite(tmp_path, env, b2_bucket, pub, 3000)
    store = b2_bucket.store()

    check = cli(env, "fsck", "--private-key", priv, b2_bucket.url, check=False)
    assert check.returncode == 1
    assert [ln.split()[0] for ln in check.stdout.decode().splitlines()] == ["stale-key", "1"]
    cli(env, "fsck", "--repair", "--private-key", priv, b2_bucket.url)
    assert _copy_is_current(store, "f")
    after = cli(env, "fsck", "--private-key", priv, b2_bucket.url)
    assert after.stdout.decode().splitlines() == ["clean"]
    assert cli(env, "cat", "--private-key", priv, f"{b2_bucket.url}/f").stdout == first.read_bytes()
