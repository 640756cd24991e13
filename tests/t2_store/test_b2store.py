"""B2Store specifics against the loopback server: list costs, large files, faults, credentials."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from b2cryptfs.errors import (
    AuthError,
    InvalidName,
    NoSuchBucket,
    StoreError,
    TransientError,
)
from b2cryptfs.store import open_store
from b2cryptfs.store.base import MTIME_KEY

MB = 1000 * 1000
PART = 5 * MB  # B2's real minimum part size
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def store(b2_bucket):
    return b2_bucket.store(part_size=PART, min_part_size=PART, max_part_size=3 * PART)


# --- listing costs ---------------------------------------------------------------------


def test_directory_of_10000_files_is_one_list_call(b2_bucket, store):
    names = [f"big/{i:05d}.enc" for i in range(10_000)]
    b2_bucket.server.seed(b2_bucket.name, names, size=3)
    b2_bucket.server.seed(b2_bucket.name, ["bigger.enc", "other/x.enc"], size=3)
    b2_bucket.server.reset_stats()
    listing = store.list_dir("big/")
    assert len(listing.objects) == 10_000 and listing.prefixes == []
    assert listing.objects[0].name == "big/00000.enc"
    assert listing.objects[-1].name == "big/09999.enc"
    # one call of 10,000 entries (B2 bills it as ten transactions of 1,000)
    assert b2_bucket.server.stats().get("b2_list_file_names") == 1


def test_listed_objects_carry_every_field(b2_bucket, store):
    """The listing's records (made without ObjectInfo's __init__) are real ObjectInfos:
    every field from B2's reply, equal to the one a stat call makes, still frozen."""
    import dataclasses

    from b2cryptfs.store.base import ObjectInfo

    info = {MTIME_KEY: "1600000000123", "b2cryptfs-format": "age"}
    b2_bucket.server.seed(b2_bucket.name, [f"f/{i}.enc" for i in range(3)], size=7, info=info)
    store.upload_bytes("f/plain.enc", b"abcd", {})
    listing = store.list_dir("f/")
    by_name = {o.name: o for o in listing.objects}
    assert sorted(by_name) == ["f/0.enc", "f/1.enc", "f/2.enc", "f/plain.enc"]
    for name, obj in by_name.items():
        assert type(obj) is ObjectInfo
        assert set(vars(obj)) == {f.name for f in dataclasses.fields(ObjectInfo)}
        assert obj == store.stat(name)
        assert obj.action == "upload" and obj.version_id and obj.upload_ms > 0
    seeded = by_name["f/1.enc"]
    assert (seeded.size, seeded.mtime_ms, seeded.info) == (7, 1600000000123, info)
    plain = by_name["f/plain.enc"]
    assert (plain.size, plain.mtime_ms, plain.info) == (4, plain.upload_ms, {})
    with pytest.raises(dataclasses.FrozenInstanceError):
        seeded.size = 8  # type: ignore[misc]


def test_many_subfolders_are_not_walked(b2_bucket, store):
    names = [f"d{i:03d}/f{j:02d}.enc" for i in range(300) for j in range(20)]
    b2_bucket.server.seed(b2_bucket.name, names + ["top.enc"], size=1)
    b2_bucket.server.reset_stats()
    listing = store.list_dir("")
    assert [o.name for o in listing.objects] == ["top.enc"]
    assert listing.prefixes == [f"d{i:03d}/" for i in range(300)]
    assert b2_bucket.server.stats().get("b2_list_file_names") == 1


def test_iter_all_pages_through_more_than_one_page(b2_bucket, store):
    names = [f"p/{i:05d}" for i in range(12_345)]
    b2_bucket.server.seed(b2_bucket.name, names, size=0)
    b2_bucket.server.reset_stats()
    got = [o.name for o in store.iter_all("p/")]
    assert got == names
    assert b2_bucket.server.stats().get("b2_list_file_names") == 2


def test_stat_costs_one_call(b2_bucket, store):
    store.upload_bytes("s.enc", b"abc", {})
    b2_bucket.server.reset_stats()
    assert store.stat("s.enc").size == 3
    assert b2_bucket.server.stats() == {"b2_list_file_names": 1}


# --- prefix ----------------------------------------------------------------------------


def test_prefix_is_added_and_stripped(b2_bucket):
    inner = b2_bucket.store("base/dir")
    assert inner.url == f"b2://{b2_bucket.name}/base/dir/"
    obj = inner.upload_bytes("a/f.enc", b"data", {})
    assert obj.name == "a/f.enc"
    b2_bucket.store().upload_bytes("base/other.enc", b"outside", {})
    assert inner.list_dir("").prefixes == ["a/"]
    assert [o.name for o in inner.iter_all()] == ["a/f.enc"]
    assert inner.stat("a/f.enc").name == "a/f.enc"
    assert [v["fileName"] for v in b2_bucket.versions()] == ["base/dir/a/f.enc", "base/other.enc"]
    copied = inner.copy(obj, "b.enc")
    assert copied.name == "b.enc"
    inner.hide("a/f.enc")
    assert [v.action for v in inner.versions("a/f.enc")] == ["hide", "upload"]


def test_open_store_urls(b2_bucket, monkeypatch):
    monkeypatch.setenv("B2_APPLICATION_KEY_ID", b2_bucket.server.key_id)
    monkeypatch.setenv("B2_APPLICATION_KEY", b2_bucket.server.key)
    monkeypatch.delenv("B2_ENVIRONMENT", raising=False)
    s = open_store(f"b2://{b2_bucket.name}/pre", realm=b2_bucket.server.realm)
    assert s.url == f"b2://{b2_bucket.name}/pre/" and s.list_dir("").objects == []
    monkeypatch.setenv("B2_ENVIRONMENT", b2_bucket.server.realm)
    s = open_store(f"b2://{b2_bucket.name}")
    assert s.upload_bytes("x.enc", b"1", {}).name == "x.enc"


# --- large files -----------------------------------------------------------------------


def test_50mb_file_goes_multipart_and_back(b2_bucket, store, tmp_path):
    size = 50 * MB + 12_345
    data = os.urandom(size)
    src = tmp_path / "big.bin"
    src.write_bytes(data)
    sha1 = hashlib.sha1(data).hexdigest()
    b2_bucket.server.reset_stats()
    obj = store.upload_file("big.enc", str(src), {MTIME_KEY: "1700000000000"})
    stats = b2_bucket.server.stats()
    assert stats.get("b2_start_large_file") == 1 and stats.get("b2_finish_large_file") == 1
    assert stats.get("b2_upload_part") == size // PART  # 10 parts, the last one larger
    assert "b2_upload_file" not in stats
    (stored,) = b2_bucket.versions()
    assert stored["contentSha1"] == "none"  # B2 has no whole-file SHA-1 for large files
    assert stored["fileInfo"]["large_file_sha1"] == sha1
    assert stored["fileInfo"][MTIME_KEY] == "1700000000000"
    assert obj.size == size and obj.info["large_file_sha1"] == sha1
    # ranged reads across part boundaries (parts are size // 10 bytes long)
    part = size // (size // PART)
    for k in range(1, size // PART):
        edge = k * part
        assert store.read(obj, edge - 7, 14) == data[edge - 7 : edge + 7], k
    assert store.read(obj, 0, 3 * PART) == data[: 3 * PART]
    out = tmp_path / "back.bin"
    store.download(obj, str(out))
    assert hashlib.sha1(out.read_bytes()).hexdigest() == sha1


def test_upload_progress_comes_while_the_bytes_go(b2_bucket, store, tmp_path):
    """Progress is the network transfer: reported while the server is still receiving (its
    link slowed to about 3 s for the file), not once the object is stored."""
    size = 3 * (1 << 20)
    src = tmp_path / "slow.bin"
    src.write_bytes(os.urandom(size))
    seen: list[int] = []
    stored_midway: list[bool] = []

    def progress(sent: int) -> None:
        if 0 < sent < size and not stored_midway:
            stored_midway.append(bool(b2_bucket.versions()))
        seen.append(sent)

    b2_bucket.server.configure(bandwidth_mbps=8)
    try:
        store.upload_file("slow.enc", str(src), {}, progress=progress)
    finally:
        b2_bucket.server.configure(bandwidth_mbps=0)
    assert stored_midway == [False]
    assert len(seen) > 1 and seen == sorted(seen) and seen[-1] == size, seen[:20]


def test_large_file_progress_adds_up_its_parts(store, tmp_path):
    size = 2 * PART + 1  # two parts uploaded side by side
    src = tmp_path / "large.bin"
    src.write_bytes(os.urandom(size))
    seen: list[int] = []
    store.upload_file("large.enc", str(src), {}, progress=seen.append)
    assert len(seen) > 2 and seen == sorted(seen) and seen[-1] == size, seen[:20]


def test_small_file_carries_its_sha1(b2_bucket, store):
    data = b"small object"
    store.upload_bytes("s.enc", data, {})
    (stored,) = b2_bucket.versions()
    assert stored["contentSha1"] == hashlib.sha1(data).hexdigest()
    assert "large_file_sha1" not in stored["fileInfo"]


def test_large_copy_uses_copy_part(b2_bucket, store):
    data = os.urandom(3 * PART + 1)
    src = store.upload_bytes("src.enc", data, {"k": "v"})
    b2_bucket.server.reset_stats()
    dst = store.copy(src, "dst.enc")
    stats = b2_bucket.server.stats()
    assert stats.get("b2_copy_part", 0) >= 2 and "b2_copy_file" not in stats
    assert "b2_upload_part" not in stats and "b2_download_file_by_id" not in stats  # server-side
    assert store.read(dst) == data and dst.info["k"] == "v"


def test_large_object_info_must_leave_room_for_its_sha1(store):
    ten = {f"k{i}": "v" for i in range(10)}
    with pytest.raises(InvalidName, match="large_file_sha1"):
        store.upload_bytes("big.enc", b"\0" * (PART + 1), ten)


# --- faults ----------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["503", "429", "expired", "drop"])
def test_api_call_faults_are_retried(b2_bucket, store, fault):
    store.upload_bytes("a.enc", b"a", {})
    b2_bucket.server.inject("b2_list_file_names", fault, 2, retry_after=0)
    assert [o.name for o in store.list_dir("").objects] == ["a.enc"]
    assert b2_bucket.server.fault_counts().get("b2_list_file_names") == 2


@pytest.mark.parametrize("fault", ["503", "429", "expired", "drop"])
def test_upload_faults_are_retried(b2_bucket, store, fault):
    b2_bucket.server.inject("b2_upload_file", fault, 2, retry_after=0)
    obj = store.upload_bytes("u.enc", b"payload" * 1000, {"k": "v"})
    assert store.read(obj) == b"payload" * 1000
    assert b2_bucket.server.fault_counts().get("b2_upload_file") == 2
    assert [v["fileName"] for v in b2_bucket.versions()] == ["u.enc"]


@pytest.mark.parametrize("fault", ["503", "429", "expired", "drop"])
def test_download_faults_are_retried(b2_bucket, store, fault, tmp_path):
    data = os.urandom(200_000)
    obj = store.upload_bytes("d.enc", data, {})
    b2_bucket.server.inject("download", fault, 2, retry_after=0)
    assert store.read(obj, 1000, 150_000) == data[1000:151_000]
    b2_bucket.server.inject("download", fault, 2, retry_after=0)
    store.download(obj, str(tmp_path / "out"))
    assert (tmp_path / "out").read_bytes() == data
    assert b2_bucket.server.fault_counts().get("b2_download_file_by_id") == 4


@pytest.mark.parametrize("fault", ["503", "expired", "drop"])
def test_part_upload_faults_are_retried(b2_bucket, store, fault):
    data = os.urandom(2 * PART + 1)
    b2_bucket.server.inject("b2_upload_part", fault, 2)
    obj = store.upload_bytes("p.enc", data, {})
    assert obj.info["large_file_sha1"] == hashlib.sha1(data).hexdigest()
    assert store.read(obj, PART - 3, 6) == data[PART - 3 : PART + 3]


def test_persistent_upload_fault_is_a_clear_transient_error(b2_bucket, store):
    b2_bucket.server.inject("upload", "503", 10_000)
    with pytest.raises(TransientError) as err:
        store.upload_bytes("never.enc", b"x", {})
    assert "\n" not in str(err.value) and "never.enc" in str(err.value)
    b2_bucket.server.clear_faults()
    assert store.stat("never.enc") is None


def test_persistent_large_upload_fault_leaves_no_unfinished_file(b2_bucket, store):
    b2_bucket.server.inject("b2_upload_part", "503", 10_000)
    with pytest.raises(TransientError):
        store.upload_bytes("never.enc", b"\1" * (2 * PART), {})
    b2_bucket.server.clear_faults()
    assert b2_bucket.versions() == []  # the started large file was cancelled


def test_persistent_list_fault_is_a_clear_transient_error(b2_bucket, store):
    b2_bucket.server.inject("b2_list_file_names", "503", 10_000)
    with pytest.raises(TransientError, match="list"):
        store.list_dir("")


def test_persistent_download_fault_is_a_clear_transient_error(b2_bucket, store):
    obj = store.upload_bytes("d.enc", b"data" * 100, {})
    b2_bucket.server.inject("download", "drop", 10_000)
    with pytest.raises(TransientError, match="d.enc"):
        store.read(obj, 0, 100)


# --- credentials and refusals ----------------------------------------------------------


def test_wrong_key_is_an_auth_error(b2_bucket):
    with pytest.raises(AuthError, match="rejected the application key"):
        b2_bucket.store(key="K" + "0" * 30)


def test_no_such_bucket(b2_bucket):
    from b2cryptfs.store.b2store import B2Store

    s = b2_bucket.server
    with pytest.raises(NoSuchBucket, match="no-such-bucket-here"):
        B2Store("no-such-bucket-here", realm=s.realm, key_id=s.key_id, key=s.key)


def test_missing_credentials(b2_bucket, monkeypatch, tmp_path):
    from b2cryptfs.store.b2store import B2Store

    for var in ("B2_APPLICATION_KEY_ID", "B2_APPLICATION_KEY", "B2_ACCOUNT_INFO"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    with pytest.raises(AuthError, match="B2_APPLICATION_KEY_ID"):
        B2Store(b2_bucket.name, realm=b2_bucket.server.realm)
    assert not (tmp_path / "xdg").exists()  # looking for the b2 tool's file creates nothing
    monkeypatch.setenv("B2_APPLICATION_KEY_ID", "only-one")
    with pytest.raises(AuthError, match="both"):
        B2Store(b2_bucket.name, realm=b2_bucket.server.realm)


def test_key_without_write_capability(b2_bucket):
    s = b2_bucket.server
    key_id, key = s.create_key(["listBuckets", "listFiles", "readFiles"])
    ro = b2_bucket.store(key_id=key_id, key=key)
    assert ro.list_dir("").objects == []
    with pytest.raises(AuthError, match="not allowed"):
        ro.upload_bytes("x.enc", b"x", {})


def test_key_restricted_to_another_bucket(b2_bucket):
    s = b2_bucket.server
    key_id, key = s.create_key(None, bucket=s.bucket)
    with pytest.raises((AuthError, NoSuchBucket)):
        b2_bucket.store(key_id=key_id, key=key)


def test_refused_names_never_reach_b2(b2_bucket, store):
    b2_bucket.server.reset_stats()
    for name in ["a//b.enc", "dir/", "x\x01.enc", "s" * 251]:
        with pytest.raises(InvalidName):
            store.upload_bytes(name, b"x", {})
    assert b2_bucket.server.stats() == {}


def test_errors_are_store_errors_with_one_line(b2_bucket, store):
    obj = store.upload_bytes("gone.enc", b"x", {})
    store.delete_version(obj)
    with pytest.raises(StoreError) as err:
        store.read(obj)
    assert "\n" not in str(err.value)


def test_account_saved_by_the_b2_tool(b2_bucket, b2_cli_env, monkeypatch):
    env = dict(b2_cli_env)
    key_id, key = env.pop("B2_APPLICATION_KEY_ID"), env.pop("B2_APPLICATION_KEY")
    run = subprocess.run(
        ["b2", "account", "authorize", key_id, key],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert os.path.exists(env["B2_ACCOUNT_INFO"])
    for var in ("B2_APPLICATION_KEY_ID", "B2_APPLICATION_KEY", "B2_ENVIRONMENT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("B2_ACCOUNT_INFO", env["B2_ACCOUNT_INFO"])
    s = open_store(b2_bucket.url)  # credentials and realm from the saved account
    assert s.upload_bytes("via-db.enc", b"x", {}).name == "via-db.enc"


def test_b2sdk_is_imported_only_inside_store():
    offenders = []
    for path in (ROOT / "b2cryptfs").rglob("*.py"):
        if path.parent.name == "store":
            continue
        if re.search(r"^\s*(import|from)\s+b2sdk", path.read_text(), re.M):
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []
    code = "import b2cryptfs.store, b2cryptfs.store.dirstore, sys; print('b2sdk' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"  # b2sdk loads only when a b2:// store is opened
