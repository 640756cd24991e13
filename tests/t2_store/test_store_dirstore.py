"""DirStore specifics: on-disk layout, atomic writes, xattr info, mtimes, pruning, URLs."""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import subprocess

import pytest

from b2cryptfs.errors import InvalidName, NotFound, StoreError, UsageError
from b2cryptfs.store import open_store
from b2cryptfs.store.base import MTIME_KEY
from b2cryptfs.store.dirstore import TMP_DIR, XATTR, DirStore


@pytest.fixture
def root(tmp_path):
    r = tmp_path / "bucket"
    r.mkdir()
    return r


@pytest.fixture
def store(root):
    return DirStore(str(root))


def test_layout_is_the_bucket_layout(store, root):
    store.upload_bytes("photos/a.jpg.enc", b"content", {})
    assert (root / "photos" / "a.jpg.enc").read_bytes() == b"content"


def test_seed_folder_is_a_store_as_is(root):
    """What the seed's encrypt.sh leaves (F.enc, F.key.enc), untouched by us, lists and reads."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl binary not installed")
    (root / "F").write_bytes(b"secret\n")
    script = """set -eo pipefail
openssl genrsa -out priv.pem 2048 2>/dev/null
openssl rsa -in priv.pem -pubout -out pub.pem 2>/dev/null
P=`openssl rand -base64 180`
echo $P | openssl aes-256-cbc -a -salt -pass stdin -in F -out F.enc 2>/dev/null
echo $P | openssl rsautl -encrypt -pubin -inkey pub.pem -out F.key.enc 2>/dev/null
rm F priv.pem pub.pem
"""
    subprocess.run(["bash", "-c", script], cwd=root, check=True)
    s = DirStore(str(root))
    listing = s.list_dir("")
    assert [o.name for o in listing.objects] == ["F.enc", "F.key.enc"]
    key = listing.objects[1]
    assert key.size == 256 and key.info == {}
    assert s.read(key) == (root / "F.key.enc").read_bytes()
    assert key.mtime_ms == os.stat(root / "F.key.enc").st_mtime_ns // 1_000_000


def test_tmp_dir_is_private_and_never_listed(store, root):
    store.upload_bytes("x.enc", b"x", {})
    tmp = root / TMP_DIR
    assert tmp.is_dir() and stat.S_IMODE(tmp.stat().st_mode) == 0o700
    assert os.listdir(tmp) == []  # nothing left behind by a completed write
    assert store.list_dir("").prefixes == []
    assert [o.name for o in store.iter_all()] == ["x.enc"]
    with pytest.raises(InvalidName):
        store.upload_bytes(f"{TMP_DIR}/y", b"y", {})


def test_failed_write_leaves_nothing(store, root, tmp_path):
    with pytest.raises(StoreError):
        store.upload_file("x.enc", str(tmp_path / "missing-source"), {})
    assert store.stat("x.enc") is None
    assert os.listdir(root / TMP_DIR) == []


def test_info_in_an_xattr(store, root):
    info = {MTIME_KEY: "1600000000000", "b2cryptfs-format": "age"}
    store.upload_bytes("i.enc", b"x", info)
    raw = os.getxattr(root / "i.enc", XATTR)
    assert json.loads(raw) == info
    assert store.stat("i.enc").info == info


def test_info_dropped_without_xattr_support(store, root, monkeypatch):
    """A filesystem without user xattrs still works; the info is silently dropped.

    (Simulated: no such filesystem can be mounted here without privileges.)
    """

    def no_xattrs(*args, **kwargs):
        raise OSError(errno.ENOTSUP, "Operation not supported")

    monkeypatch.setattr(os, "setxattr", no_xattrs)
    obj = store.upload_bytes("n.enc", b"data", {MTIME_KEY: "1600000000000", "k": "v"})
    assert obj.info == {}
    assert obj.mtime_ms == 1600000000000  # the mtime still comes through the file's mtime


def test_mtime_is_the_file_mtime(store, root):
    store.upload_bytes("m.enc", b"x", {MTIME_KEY: "1500000000123"})
    assert os.stat(root / "m.enc").st_mtime_ns == 1500000000123 * 1_000_000
    os.utime(root / "m.enc", ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
    assert store.stat("m.enc").mtime_ms == 1_000_000_000_000


def test_version_id_changes_on_every_write(store):
    ids = {store.upload_bytes("v.enc", b"same", {MTIME_KEY: "1"}).version_id for _ in range(5)}
    assert len(ids) == 5
    assert store.versions("v.enc")[0].version_id in ids


def test_replaced_or_removed_version_reads_notfound(store, root):
    obj = store.upload_bytes("r.enc", b"first", {})
    (root / "r.enc").unlink()
    with pytest.raises(NotFound):
        store.read(obj)
    with pytest.raises(NotFound):
        store.download(obj, os.devnull)


def test_hide_prunes_empty_directories_but_not_the_root(store, root):
    store.upload_bytes("a/b/c/d.enc", b"x", {})
    store.upload_bytes("a/keep.enc", b"x", {})
    store.hide("a/b/c/d.enc")
    assert not (root / "a" / "b").exists() and (root / "a" / "keep.enc").exists()
    store.hide("a/keep.enc")
    assert not (root / "a").exists() and root.is_dir()


def test_names_a_directory_cannot_hold(store):
    store.upload_bytes("f.enc", b"x", {})
    for bad in ["../escape", "a/./b", "a/../b", "f.enc/child"]:
        with pytest.raises(InvalidName):
            store.upload_bytes(bad, b"x", {})
    store.upload_bytes("dir/x.enc", b"x", {})
    with pytest.raises(InvalidName):
        store.upload_bytes("dir", b"x", {})


def test_unreadable_names_on_disk_are_skipped(store, root):
    store.upload_bytes("ok.enc", b"x", {})
    (root / os.fsdecode(b"bad-\xff.enc")).write_bytes(b"x")
    assert [o.name for o in store.list_dir("").objects] == ["ok.enc"]


def test_empty_directories_are_prefixes(store, root):
    (root / "empty").mkdir()
    assert store.list_dir("").prefixes == ["empty/"]
    assert store.list_dir("empty/").objects == []


def test_open_store_forms(root, tmp_path, monkeypatch):
    assert isinstance(open_store(str(root)), DirStore)
    s = open_store(f"file://{root}")
    assert isinstance(s, DirStore) and s.root == str(root)
    monkeypatch.chdir(root.parent)
    assert open_store(root.name).root == str(root)
    with pytest.raises(NotFound):
        open_store(str(tmp_path / "missing"))
    with pytest.raises(UsageError):
        open_store("s3://bucket/x")
