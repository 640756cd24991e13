"""Frozen example stores (tests/vectors/v1) made by an earlier version: this version must read
them, through the command line and a mount, byte for byte. They are never regenerated (see
tests/vectors/make_vectors.py); a failure here is a format change, not a stale vector.

Besides reading, the deterministic parts of our own formats are frozen as constants: the
openssl key check value, the AES-SIV name cipher, the cache directory's name for a store.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from conftest import B2CRYPTFS, TESTS
from mountutil import Keys, StoreSpec, base_env, mounted, requires_fuse

from b2cryptfs.formats import evp
from b2cryptfs.formats.names import NameCipher, unwrap_name_key
from b2cryptfs.keys.loader import load_identities

V1 = TESTS / "vectors" / "v1"
KEYS = V1 / "keys"
EXPECTED: dict[str, dict[str, object]] = json.loads((V1 / "expected.json").read_text())
STORED = sorted(p for p in EXPECTED if not p.startswith("pending/"))  # in stores a-c
XATTR = "user.b2cryptfs.info"  # where DirStore keeps an object's file info
PASSPHRASE = (KEYS / "PASSPHRASE").read_text().strip()
RSA = ["--private-key", str(KEYS / "rsa-priv.pem")]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def copy_store(name: str, dest: Path) -> Path:
    """The frozen store as a DirStore again: its objects plus the file info git cannot keep."""
    shutil.copytree(V1 / name / "store", dest)
    for rel, info in json.loads((V1 / name / "info.json").read_text()).items():
        try:
            os.setxattr(dest / rel, XATTR, json.dumps(info, sort_keys=True).encode())
        except OSError as exc:
            pytest.skip(f"no user xattrs on the temporary directory: {exc.strerror}")
    return dest


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[bytes]:
    p = subprocess.run([*B2CRYPTFS, *args], env=env, capture_output=True, timeout=120)
    assert p.returncode == 0, p.stderr.decode()
    return p


@pytest.fixture
def env(cli_env: dict[str, str]) -> dict[str, str]:
    return dict(cli_env, B2CRYPTFS_PASSPHRASE=PASSPHRASE)


STORES = {"age": [], "openssl": [], "names": ["--encrypt-names"]}


@pytest.mark.parametrize("name", sorted(STORES))
def test_every_file_of_a_frozen_store_reads_back(name, env, tmp_path):
    store = copy_store(name, tmp_path / "store")
    for rel in STORED:
        out = tmp_path / "out" / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        run_cli(env, "get", *RSA, *STORES[name], f"{store}/{rel}", str(out))
        data = out.read_bytes()
        assert (len(data), sha256(data)) == (EXPECTED[rel]["size"], EXPECTED[rel]["sha256"]), rel
        cat = run_cli(env, "cat", *RSA, *STORES[name], f"{store}/{rel}").stdout
        assert sha256(cat) == EXPECTED[rel]["sha256"], rel


@pytest.mark.parametrize("name", sorted(STORES))
def test_a_frozen_store_lists_its_plaintext_names_and_sizes(name, env, tmp_path):
    store = copy_store(name, tmp_path / "store")
    listing = run_cli(env, "ls", "-l", "-R", *RSA, *STORES[name], str(store)).stdout.decode()
    for rel in STORED:
        line = next((ln for ln in listing.splitlines() if ln.endswith(rel)), None)
        assert line is not None, f"{rel} missing from:\n{listing}"
        assert str(EXPECTED[rel]["size"]) in line.split(), line


def test_the_age_vector_opens_with_its_x25519_identity_too(env, tmp_path):
    store = copy_store("age", tmp_path / "store")
    for rel in STORED:
        data = run_cli(
            env, "cat", "--private-key", str(KEYS / "age-key.txt"), f"{store}/{rel}"
        ).stdout
        assert sha256(data) == EXPECTED[rel]["sha256"], rel


def test_the_openssl_vector_carries_its_key_check_value():
    info = json.loads((V1 / "openssl" / "info.json").read_text())
    for rel in STORED:
        kcv = info[rel + ".enc"]["b2cryptfs-kcv"]
        assert len(kcv) == 24 and int(kcv, 16) >= 0, kcv
        assert info[rel + ".enc"]["b2cryptfs-size"] == str(EXPECTED[rel]["size"])


def test_a_wrong_key_check_value_is_refused(env, tmp_path):
    # The kcv is read, not decoration: a foreign one makes the pair fail, not decrypt garbage.
    store = copy_store("openssl", tmp_path / "store")
    obj = store / "hello.txt.enc"
    info = json.loads(os.getxattr(obj, XATTR))
    info["b2cryptfs-kcv"] = "0" * 24
    os.setxattr(obj, XATTR, json.dumps(info, sort_keys=True).encode())
    p = subprocess.run(
        [*B2CRYPTFS, "cat", *RSA, f"{store}/hello.txt"], env=env, capture_output=True, timeout=60
    )
    assert p.returncode != 0 and p.stdout == b""


def test_key_check_value_is_frozen():
    assert evp.key_check_value(b"frozen-password", b"saltsalt", "sha256") == (
        "07213dd37c144b827656378c"
    )
    assert evp.key_check_value(b"frozen-password", b"saltsalt", "md5") == (
        "87a65301f8d0783b202e718e"
    )


def test_name_cipher_output_is_frozen():
    cipher = NameCipher(bytes(range(64)))
    assert cipher.encrypt_path("docs/Ünïcode name.txt") == (
        "g3hshe4rnsjh3ga5c6pn4onkgyizua6m/7ttusr3fxst2jty62ryfthcs4clkvxbe7icvch5bwrwddpj57isztha"
    )


def test_the_names_vector_objects_are_the_cipher_output_of_its_name_key():
    store = V1 / "names" / "store"
    ids = load_identities(str(KEYS / "rsa-priv.pem"), lambda: PASSPHRASE.encode())
    cipher = NameCipher(unwrap_name_key((store / ".b2cryptfs-names.age").read_bytes(), ids))
    for rel in STORED:
        enc = cipher.encrypt_path(rel)
        assert (store / f"{enc}.enc").is_file() and (store / f"{enc}.key.enc").is_file(), rel
        assert cipher.decrypt_path(enc) == rel


def needs_fuse(fn):
    for mark in requires_fuse:
        fn = mark(fn)
    return fn


@needs_fuse
def test_an_outbox_left_by_a_killed_mount_is_uploaded_by_the_next_mount(tmp_path):
    root = tmp_path / "store"
    root.mkdir()
    spec = StoreSpec(kind="dir", url=str(root), env=base_env(tmp_path / "home"), root=root)
    # The cache directory of a store is named by sha256 of its URL (man b2cryptfs-format(5)).
    store_dir = tmp_path / "cache" / sha256(f"file://{root}".encode())[:16]
    shutil.copytree(V1 / "outbox" / "outbox", store_dir / "outbox")
    keys = Keys(
        private=KEYS / "rsa-priv.pem",
        public=KEYS / "rsa-pub.pem",
        passphrase_file=KEYS / "PASSPHRASE",
        plain_private=KEYS / "rsa-priv.pem",  # not used by a mount
    )
    rel = "pending/waiting.txt"
    mnt = tmp_path / "mnt"
    with mounted(spec, mnt, tmp_path / "cache", keys.args()):
        deadline = time.monotonic() + 60
        while list((store_dir / "outbox").glob("*.json")) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not list((store_dir / "outbox").iterdir()), "the outbox did not drain"
        data = (mnt / rel).read_bytes()
        assert (len(data), sha256(data)) == (EXPECTED[rel]["size"], EXPECTED[rel]["sha256"])
        assert int((mnt / rel).stat().st_mtime) == EXPECTED[rel]["mtime"]
    # Uploaded as sealed: the objects are the entry's files, byte for byte.
    outbox = V1 / "outbox" / "outbox"
    assert (root / f"{rel}.key.enc").read_bytes() == (outbox / "000000000001.key").read_bytes()
    assert (root / f"{rel}.enc").read_bytes() == (outbox / "000000000001.content").read_bytes()
