"""Encrypted names on B2 (the loopback server, b2sdk's real code path): no plaintext name in
any version, rotation with purge re-wraps the name key, the older-key-version fallback and
fsck work through encrypted names, and a tree under a prefix reads the same from the bucket
(the command line) and from the prefix (the mount's view)."""

from __future__ import annotations

import os
import re
import subprocess

import pytest
from conftest import B2CRYPTFS
from openssl_testutil import PASSPHRASE, needs_openssl, openssl_keypair

from b2cryptfs.bucket.namekey import open_pair_store
from b2cryptfs.keys.loader import load_identities, load_recipients

pytestmark = needs_openssl
NAME_KEY_OBJECT = ".b2cryptfs-names.age"
SEGMENTS = ["Reports", "Q3 summary.PDF", "Budget-2025.xlsx", "Archive"]
# Directory objects (put -r keeps directory metadata) carry an encrypted segment too.
_ENCRYPTED = re.compile(r"[a-z2-7]+(\.enc|\.key\.enc|\.b2cryptfs-dir)?")


def cli(env, *args, check=True):
    p = subprocess.run([*B2CRYPTFS, *map(str, args)], env=env, capture_output=True, timeout=300)
    if check:
        assert p.returncode == 0, f"b2cryptfs {args} failed: {p.stderr.decode()[-2000:]}"
    return p


@pytest.fixture(scope="module")
def two_keys(tmp_path_factory):
    return openssl_keypair(tmp_path_factory.mktemp("old")), openssl_keypair(
        tmp_path_factory.mktemp("new")
    )


@pytest.fixture
def env(b2_cli_env):
    return dict(b2_cli_env, B2CRYPTFS_PASSPHRASE=PASSPHRASE.decode())


def assert_bucket_hides_names(b2_bucket, skip_prefix: str = "") -> list[dict]:
    """Every version (hidden ones too) has encrypted segments only; returns the versions."""
    versions = b2_bucket.versions()
    for v in versions:
        name = v["fileName"]
        assert name.startswith(skip_prefix), name
        for part in name[len(skip_prefix) :].split("/"):
            if part in (NAME_KEY_OBJECT, ".bzEmpty"):
                continue
            assert _ENCRYPTED.fullmatch(part), name
            for seg in SEGMENTS:
                assert seg not in part, (seg, name)
        # File info carries no names either.
        for value in v["fileInfo"].values():
            for seg in SEGMENTS:
                assert seg not in str(value), (seg, v)
    return versions


def make_tree(tmp_path):
    src = tmp_path / "Reports"
    files = {
        "Q3 summary.PDF": os.urandom(120_000),
        "Archive/Budget-2025.xlsx": os.urandom(5_000),
    }
    for rel, data in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    return src, {f"Reports/{k}": v for k, v in files.items()}


def test_b2_names_rotate_fallback_and_fsck(tmp_path, two_keys, env, b2_bucket):
    (old_priv, old_pub, old_pf), (new_priv, new_pub, _) = two_keys
    src, files = make_tree(tmp_path)
    url = b2_bucket.url
    cli(env, "put", "--encrypt-names", "--private-key", old_priv, "-r", src, f"{url}/")
    versions = assert_bucket_hides_names(b2_bucket)
    assert len([v for v in versions if v["fileName"] == NAME_KEY_OBJECT]) == 1
    listing = cli(env, "ls", "-R", "--private-key", old_priv, url).stdout.decode().split("\n")
    assert listing[:4] == [
        "Reports/",
        "Reports/Archive/",
        "Reports/Q3 summary.PDF",
        "Reports/Archive/Budget-2025.xlsx",
    ]
    for path, data in files.items():
        assert cli(env, "cat", "--private-key", old_priv, f"{url}/{path}").stdout == data

    # A crash between the two uploads of an overwrite: a new key object beside the old
    # content. The reader finds the older key version through the encrypted name.
    identities = load_identities(str(old_priv), lambda: old_pf.read_bytes().strip())
    pairs = open_pair_store(
        b2_bucket.store(), recipients=load_recipients(str(old_pub)), identities=identities
    )
    assert pairs.encrypts_names
    target = "Reports/Q3 summary.PDF"
    replacement = tmp_path / "v2"
    replacement.write_bytes(os.urandom(1000))
    with open(replacement, "rb") as fin, open(tmp_path / "sealed", "wb") as fout:
        sealed = pairs.seal(fin, fout)
    pairs.store.upload_bytes(pairs.key_object_name(target), sealed.key_object, {})
    got = cli(env, "cat", "--private-key", old_priv, f"{url}/{target}")
    assert got.stdout == files[target] and b"older version" in got.stderr
    report = cli(env, "fsck", "--private-key", old_priv, url, check=False)
    assert report.returncode == 1
    assert f"stale-key    {target}:" in report.stdout.decode()
    cli(env, "fsck", "--repair", "--private-key", old_priv, url)
    assert cli(env, "fsck", "--private-key", old_priv, url).stdout.decode().strip() == "clean"

    # Rotation with purge: new key objects and a new name key, old versions gone.
    out = cli(env, "rotate", "--purge-old", "--private-key", old_priv, "--public-key", new_pub, url)
    assert f"re-wrapped the name key {NAME_KEY_OBJECT}" in out.stdout.decode()
    versions = assert_bucket_hides_names(b2_bucket)
    by_name: dict[str, int] = {}
    for v in versions:
        by_name[v["fileName"]] = by_name.get(v["fileName"], 0) + 1
    assert by_name[NAME_KEY_OBJECT] == 1
    assert all(n == 1 for name, n in by_name.items() if name.endswith(".key.enc")), by_name
    for path, data in files.items():
        assert cli(env, "cat", "--private-key", new_priv, f"{url}/{path}").stdout == data
    denied = cli(env, "ls", "--private-key", old_priv, url, check=False)
    assert denied.returncode == 3 and NAME_KEY_OBJECT in denied.stderr.decode()


def test_b2_prefix_tree_reads_the_same_from_bucket_and_prefix(tmp_path, two_keys, env, b2_bucket):
    (priv, pub, pf), _ = two_keys
    src, files = make_tree(tmp_path)
    url = b2_bucket.url
    # The directory put into becomes the root of the name-encrypted tree.
    cli(env, "put", "--encrypt-names", "--private-key", priv, "-r", src, f"{url}/backup/")
    names = [v["fileName"] for v in assert_bucket_hides_names(b2_bucket, "backup/")]
    assert f"backup/{NAME_KEY_OBJECT}" in names
    # Beside it, a plain tree is untouched by the name key.
    plain = tmp_path / "plain.txt"
    plain.write_bytes(b"plain")
    cli(env, "put", "--private-key", priv, plain, f"{url}/other/")
    assert b2_bucket.store().stat("other/plain.txt.enc") is not None
    assert cli(env, "ls", url).stdout.decode().split() == ["backup/", "other/"]
    ls = cli(env, "ls", "-R", "--private-key", priv, f"{url}/backup").stdout.decode().split("\n")
    assert ls[:2] == ["Reports/", "Reports/Archive/"]
    got = cli(env, "cat", "--private-key", priv, f"{url}/backup/Reports/Q3 summary.PDF").stdout
    assert got == files["Reports/Q3 summary.PDF"]

    # The mount opens b2://BUCKET/backup: the name key is at its root, names are the same.
    identities = load_identities(str(priv), lambda: pf.read_bytes().strip())
    view = open_pair_store(b2_bucket.store(prefix="backup/"), identities=identities)
    assert view.encrypts_names and view.name_root == ""
    assert set(view.list_dir("Reports").files) == {"Q3 summary.PDF"}
    entry = view.stat_file("Reports/Archive/Budget-2025.xlsx")
    assert entry is not None
    reader = view.open(entry)
    assert reader.read(0, reader.plaintext_size) == files["Reports/Archive/Budget-2025.xlsx"]
