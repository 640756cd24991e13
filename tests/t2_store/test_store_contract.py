"""The Store protocol, the same tests for DirStore and for B2Store on the loopback server."""

from __future__ import annotations

import os
import threading

import pytest

from b2cryptfs.errors import InvalidName, NameTooLong, NotFound
from b2cryptfs.store.base import MTIME_KEY, Store

MB = 1000 * 1000
# B2's real minimum part size; B2Store makes files of part_size + min_part_size bytes
# multi-part and copies above max_part_size multi-part.
PART = 5 * MB


@pytest.fixture(params=["dir", "b2"])
def store(request: pytest.FixtureRequest, tmp_path) -> Store:
    if request.param == "dir":
        from b2cryptfs.store.dirstore import DirStore

        root = tmp_path / "store"
        root.mkdir()
        return DirStore(str(root))
    bucket = request.getfixturevalue("b2_bucket")
    return bucket.store(part_size=PART, min_part_size=PART, max_part_size=3 * PART)


def is_b2(store: Store) -> bool:
    return store.url.startswith("b2://")


def put(store: Store, name: str, data: bytes | None = None, **info: str):
    return store.upload_bytes(name, name.encode() if data is None else data, dict(info))


def test_store_is_a_store(store):
    assert isinstance(store, Store)


def test_empty_store_lists_nothing(store):
    listing = store.list_dir("")
    assert listing.objects == [] and listing.prefixes == []
    assert list(store.iter_all()) == []
    assert store.stat("nothing.enc") is None
    assert store.versions("nothing.enc") == []


def test_list_dir_one_level_with_delimiter(store):
    names = [
        "top.enc",
        "a-b.enc",
        "a/x.enc",
        "a/y.key.enc",
        "a/sub/deep.enc",
        "a/sub/deeper/z.enc",
        "a0.enc",
        "é.enc",
        "b/.bzEmpty",
        "\u4e2d.enc",
        "\U0001f600.enc",
    ]
    for n in names:
        put(store, n)
    top = store.list_dir("")
    # B2 orders by UTF-8 bytes: "-" < "/" < "0", and a 4-byte emoji after a 3-byte CJK char.
    assert [o.name for o in top.objects] == [
        "a-b.enc",
        "a0.enc",
        "top.enc",
        "é.enc",
        "\u4e2d.enc",
        "\U0001f600.enc",
    ]
    assert top.prefixes == ["a/", "b/"]
    a = store.list_dir("a/")
    assert [o.name for o in a.objects] == ["a/x.enc", "a/y.key.enc"]
    assert a.prefixes == ["a/sub/"]
    assert [o.name for o in store.list_dir("a/sub/").objects] == ["a/sub/deep.enc"]
    assert store.list_dir("a/sub/").prefixes == ["a/sub/deeper/"]
    b = store.list_dir("b/")
    assert [o.name for o in b.objects] == ["b/.bzEmpty"]  # a marker is just an object
    assert store.list_dir("missing/") == type(b)([], [])
    for o in a.objects:
        assert o.size == len(o.name.encode())
        assert o.action == "upload"


def test_list_dir_wants_a_directory_prefix(store):
    with pytest.raises(InvalidName):
        store.list_dir("a")


def test_iter_all_is_recursive_and_sorted(store):
    names = ["z.enc", "d/b.enc", "d/a/c.enc", "d-x.enc", "d0.enc", "e/f/g/h.enc", "dd/i.enc"]
    for n in names:
        put(store, n)
    expected = sorted(names, key=lambda s: s.encode())
    assert [o.name for o in store.iter_all()] == expected
    assert [o.name for o in store.iter_all("d/")] == ["d/a/c.enc", "d/b.enc"]
    # a prefix need not end at a directory boundary
    assert [o.name for o in store.iter_all("d")] == [n for n in expected if n.startswith("d")]
    assert list(store.iter_all("nothing/")) == []


def test_stat_size_info_and_mtime(store):
    info = {MTIME_KEY: "1600000000123", "b2cryptfs_kcv": "abcdef"}
    up = store.upload_bytes("dir/f.enc", b"x" * 1000, info)
    st = store.stat("dir/f.enc")
    assert st is not None
    assert st.name == "dir/f.enc" and st.size == 1000
    assert st.version_id == up.version_id
    assert st.mtime_ms == 1600000000123
    assert st.info == info
    assert store.stat("dir/f") is None  # exact names only
    assert store.stat("dir/f.enc.x") is None
    listed = store.list_dir("dir/").objects[0]
    assert (listed.size, listed.mtime_ms, listed.version_id, listed.info) == (
        1000,
        1600000000123,
        up.version_id,
        info,
    )


def test_without_mtime_info_mtime_is_upload_time(store):
    st = put(store, "plain.enc")
    assert st.info == {}
    assert abs(st.mtime_ms - st.upload_ms) < 5000
    assert st.mtime_ms > 1_500_000_000_000


def test_read_ranges(store):
    data = os.urandom(10_000)
    obj = store.upload_bytes("r.enc", data, {})
    assert store.read(obj) == data
    for off, n in [(0, 1), (1, 100), (4096, 4096), (9_999, 1), (9_990, 100), (5_000, None)]:
        want = data[off:] if n is None else data[off : off + n]
        assert store.read(obj, off, n) == want, (off, n)
    assert store.read(obj, 10_000, 10) == b""
    assert store.read(obj, 20_000) == b""
    assert store.read(obj, 5, 0) == b""


def test_read_of_a_vanished_version_is_notfound(store):
    obj = put(store, "v.enc", b"one")
    if is_b2(store):
        store.delete_version(obj)
    else:
        put(store, "v.enc", b"two, longer")  # DirStore keeps the current version only
    with pytest.raises(NotFound):
        store.read(obj)


def test_empty_object(store):
    obj = store.upload_bytes("empty.enc", b"", {})
    assert obj.size == 0
    assert store.read(obj) == b""
    assert store.stat("empty.enc").size == 0


def test_upload_file_and_download(store, tmp_path):
    src = tmp_path / "src.bin"
    data = os.urandom(300_000)
    src.write_bytes(data)
    obj = store.upload_file("up/file.enc", str(src), {MTIME_KEY: "1234567890123"})
    assert obj.size == len(data) and obj.mtime_ms == 1234567890123
    out = tmp_path / "out.bin"
    store.download(obj, str(out))
    assert out.read_bytes() == data


def test_upload_file_reports_its_progress(store, tmp_path):
    src = tmp_path / "src.bin"
    data = os.urandom(3 * (1 << 20) + 5)
    src.write_bytes(data)
    seen: list[int] = []
    obj = store.upload_file("up/p.enc", str(src), {}, progress=seen.append)
    assert obj.size == len(data)
    assert len(seen) > 1 and seen == sorted(seen) and seen[-1] == len(data), seen[:20]


def test_overwrite_makes_a_new_version(store):
    a = put(store, "o.enc", b"first")
    b = put(store, "o.enc", b"second!")
    assert a.version_id != b.version_id
    assert store.stat("o.enc").version_id == b.version_id
    assert store.read(store.stat("o.enc")) == b"second!"
    assert [o.name for o in store.list_dir("").objects] == ["o.enc"]


def test_copy_keeps_content_and_info(store):
    info = {MTIME_KEY: "1500000000000", "k": "v"}
    src = store.upload_bytes("src.enc", b"payload" * 100, info)
    dst = store.copy(src, "moved/dst.enc")
    assert dst.version_id != src.version_id
    assert dst.name == "moved/dst.enc" and dst.size == src.size
    assert dst.info == info and dst.mtime_ms == 1500000000000
    assert store.read(dst) == b"payload" * 100
    assert store.stat("src.enc").version_id == src.version_id


def test_copy_large_object(store):
    data = os.urandom(3 * PART + 123_457)  # above max_part_size: B2 copies it part by part
    src = store.upload_bytes("big.enc", data, {MTIME_KEY: "1700000000000"})
    dst = store.copy(src, "big-copy.enc")
    assert dst.size == len(data)
    assert store.read(dst, PART - 10, 20) == data[PART - 10 : PART + 10]
    assert store.read(dst) == data
    assert dst.info[MTIME_KEY] == "1700000000000"


def test_hide(store):
    put(store, "keep.enc")
    put(store, "h/gone.enc")
    store.hide("h/gone.enc")
    assert store.stat("h/gone.enc") is None
    assert store.list_dir("").prefixes == []  # nothing left under h/
    assert [o.name for o in store.iter_all()] == ["keep.enc"]
    store.hide("h/gone.enc")  # already hidden: not an error
    store.hide("never/was.enc")  # missing: not an error
    versions = store.versions("h/gone.enc")
    if is_b2(store):
        assert [v.action for v in versions] == ["hide", "upload"]
    else:
        assert versions == []


def test_delete_version(store):
    old = put(store, "d.enc", b"old")
    new = put(store, "d.enc", b"new!")
    if is_b2(store):
        store.delete_version(old)
        assert [v.version_id for v in store.versions("d.enc")] == [new.version_id]
        store.delete_version(new)
        assert store.stat("d.enc") is None
        with pytest.raises(NotFound):
            store.delete_version(new)
    else:
        with pytest.raises(NotFound):
            store.delete_version(old)  # replaced already
        store.delete_version(new)
        assert store.stat("d.enc") is None


def test_versions_newest_first(store):
    objs = [put(store, "v.enc", f"version {i}".encode()) for i in range(3)]
    put(store, "v.enc.other", b"not the same name")
    versions = store.versions("v.enc")
    if is_b2(store):
        assert [v.version_id for v in versions] == [o.version_id for o in reversed(objs)]
        assert [store.read(v) for v in versions] == [b"version 2", b"version 1", b"version 0"]
        store.hide("v.enc")
        assert [v.action for v in store.versions("v.enc")] == ["hide", "upload", "upload", "upload"]
    else:
        assert [v.version_id for v in versions] == [objs[-1].version_id]


@pytest.mark.parametrize(
    "name, exc",
    [
        ("", InvalidName),
        ("/abs.enc", InvalidName),
        ("dir/", InvalidName),
        ("a//b.enc", InvalidName),
        ("ctl\x01.enc", InvalidName),
        ("del\x7f.enc", InvalidName),
        ("x" * 251, NameTooLong),
        ("/".join(["d" * 200] * 6), NameTooLong),
    ],
)
def test_invalid_names_are_refused(store, name, exc):
    with pytest.raises(exc):
        store.upload_bytes(name, b"x", {})
    assert list(store.iter_all()) == []


def test_long_valid_names(store):
    seg = "s" * 250
    name = "/".join([seg, seg, seg, "t" * 200])  # 953 bytes
    put(store, name)
    assert store.stat(name).name == name
    assert [o.name for o in store.iter_all()] == [name]


def test_info_limits(store):
    ten = {f"k{i}": "v" for i in range(10)}
    assert store.upload_bytes("ten.enc", b"x", ten).info == ten
    with pytest.raises(InvalidName):
        store.upload_bytes("eleven.enc", b"x", {**ten, "k10": "v"})
    with pytest.raises(InvalidName):
        store.upload_bytes("big-info.enc", b"x", {"k": "v" * 7000})
    assert store.stat("eleven.enc") is None and store.stat("big-info.enc") is None


def test_concurrent_use_from_threads(store):
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            data = os.urandom(1000 + i)
            obj = store.upload_bytes(f"t/{i:02d}.enc", data, {MTIME_KEY: str(i)})
            assert store.read(obj, 10, 100) == data[10:110]
            assert store.stat(f"t/{i:02d}.enc").size == len(data)
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert [o.name for o in store.list_dir("t/").objects] == [f"t/{i:02d}.enc" for i in range(12)]
