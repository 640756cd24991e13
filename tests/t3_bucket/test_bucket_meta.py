"""POSIX metadata in the bucket layer (bucket/meta.py, PairStore) on a DirStore and the
loopback B2: round trips through put/list/set_meta, links, special files, directory
objects, what a name-encrypted store keeps out of plaintext, and what set_meta costs."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from b2cryptfs.bucket.check import check
from b2cryptfs.bucket.layout import DIR_SUFFIX, ROOT_META_OBJECT
from b2cryptfs.bucket.meta import META_KEY, UNKNOWN, Meta, MetaCipher, decode_meta, encode_meta
from b2cryptfs.bucket.namekey import open_pair_store
from b2cryptfs.bucket.pairs import PairStore
from b2cryptfs.errors import IntegrityError, NameTooLong
from b2cryptfs.formats.names import NameCipher
from b2cryptfs.store.base import MTIME_KEY
from b2cryptfs.store.dirstore import DirStore

T = 1_700_000_000_123_456_789
FILE_META = Meta(stat.S_IFREG | 0o4750, 1234, 5678, T, T - 86_400_000_000_000, None)


@pytest.fixture
def store(any_store):
    return any_store


def pair_store(store, ident, encrypted: bool) -> PairStore:
    return open_pair_store(
        store, recipients=[ident.recipient()], identities=[ident], encrypt_names=encrypted
    )


def local(tmp_path: Path, data: bytes) -> str:
    p = tmp_path / f"src-{os.urandom(4).hex()}"
    p.write_bytes(data)
    return str(p)


def read_all(pairs: PairStore, path: str) -> bytes:
    entry = pairs.stat_file(path)
    assert entry is not None
    reader = pairs.open(entry)
    return reader.read(0, reader.plaintext_size)


# --- the value ---------------------------------------------------------------------------


def test_codec_round_trip_unknown_fields_and_tampering():
    for meta in (FILE_META, Meta(mode=stat.S_IFDIR | 0o1777), Meta(uid=0), UNKNOWN):
        assert decode_meta({META_KEY: encode_meta(meta)}) == meta
    assert decode_meta({}) is UNKNOWN and not UNKNOWN.known
    assert encode_meta(FILE_META) == f"1 104750 1234 5678 {T} {T - 86_400_000_000_000} -"

    cipher = MetaCipher(NameCipher.generate().key)
    sealed = encode_meta(FILE_META, cipher)
    assert sealed.startswith("e1.") and "104750" not in sealed and "1234" not in sealed
    assert encode_meta(FILE_META, cipher) != sealed  # random nonce
    assert decode_meta({META_KEY: sealed}, cipher) == FILE_META
    flipped = sealed[:-2] + ("A" if sealed[-2] != "A" else "B") + sealed[-1]
    for bad in (flipped, sealed[:20], "e1.!!!"):
        with pytest.raises(IntegrityError):
            decode_meta({META_KEY: bad}, cipher)
    with pytest.raises(IntegrityError):  # another store's key
        decode_meta({META_KEY: sealed}, MetaCipher(NameCipher.generate().key))
    with pytest.raises(IntegrityError):  # plaintext owners beside encryption: refused
        decode_meta({META_KEY: encode_meta(FILE_META)}, cipher)
    with pytest.raises(IntegrityError):
        decode_meta({META_KEY: "1 zz - - - - -"})
    # A newer writer's version: defaults, not an error.
    assert decode_meta({META_KEY: "2 whatever"}) is UNKNOWN
    # The change time is an eighth field, written only when known (seven-field readers
    # ignore it); a value without it has none (shown as the mtime).
    with_c = FILE_META.updated(ctime_ns=T + 5)
    assert encode_meta(with_c) == encode_meta(FILE_META) + f" {T + 5}"
    assert decode_meta({META_KEY: encode_meta(with_c)}) == with_c
    assert decode_meta({META_KEY: encode_meta(with_c, cipher)}, cipher) == with_c
    assert FILE_META.ctime_ns is None and FILE_META.shown_ctime(T) == T
    assert with_c.shown_ctime(T) == T + 5 and with_c.shown_ctime(T + 9) == T + 9
    assert Meta(ctime_ns=1).known


# --- files, links, special files ---------------------------------------------------------


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encnames"])
def test_file_meta_round_trip(store, ident, tmp_path, encrypted):
    pairs = pair_store(store, ident, encrypted)
    pairs.mkdir("d")
    entry = pairs.put_file("d/f", local(tmp_path, b"hello"), meta=FILE_META)
    assert entry.meta == FILE_META
    assert entry.content.info[MTIME_KEY] == str(T // 1_000_000)  # the b2 CLI's convention

    again = pair_store(store, ident, encrypted)  # a second machine: only the bucket
    listed = again.list_dir("d").files["f"]
    assert listed.meta == FILE_META and listed.checked_meta() == FILE_META
    assert listed.mtime_ms == T // 1_000_000

    changed = FILE_META.updated(mode=stat.S_IFREG | 0o600, uid=0, gid=0, atime_ns=T + 5)
    updated = again.set_meta(listed, changed)
    assert updated.meta == changed
    assert again.list_dir("d").files["f"].meta == changed
    assert read_all(again, "d/f") == b"hello"  # the key object still matches

    renamed = again.rename("d/f", "d/g")
    assert renamed.meta == changed
    assert set(again.list_dir("d").files) == {"g"}
    assert again.list_dir("d").files["g"].meta == changed

    # Key rotation re-wraps the key object (and remakes the small content's copy of it, as
    # rotate does): the metadata stays.
    key_obj = again.matching_key_object(renamed)
    uploaded = again.rewrap_key(again.key_object_name("d/g"), key_obj, {"b2cryptfs-format": "age"})
    again.refresh_key_copy(again.list_dir("d").files["g"], uploaded, key_obj)
    assert again.list_dir("d").files["g"].meta == changed
    assert read_all(again, "d/g") == b"hello"
    assert list(check(again, verify=True)) == []


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encnames"])
def test_links_and_special_files(store, ident, encrypted):
    pairs = pair_store(store, ident, encrypted)
    target = "../some/where/" + "t" * 3000
    link = pairs.put_link("ln", target, Meta(uid=7, gid=8, mtime_ns=T))
    assert link.is_symlink and link.meta.mode == stat.S_IFLNK | 0o777
    fifo = pairs.put_special("fifo", Meta(stat.S_IFIFO | 0o640, 1, 2, T, T, None))
    dev = pairs.put_special("null", Meta(stat.S_IFCHR | 0o666, 0, 0, T, T, os.makedev(1, 3)))

    listing = pair_store(store, ident, encrypted).list_dir("")
    assert listing.files["ln"].is_symlink
    assert listing.files["ln"].size == len(target)  # lstat size without a download
    assert pairs.read_link(listing.files["ln"]) == target
    assert listing.files["fifo"].meta == fifo.meta and listing.files["fifo"].size == 0
    assert listing.files["null"].meta.rdev == os.makedev(1, 3) == dev.meta.rdev
    assert stat.S_ISCHR(listing.files["null"].meta.mode)
    with pytest.raises(NameTooLong):
        pairs.put_link("long", "x" * 4096)
    assert pairs.rename("ln", "ln2").is_symlink
    assert pairs.read_link(pairs.list_dir("").files["ln2"]) == target


def test_objects_without_meta_decode_as_unknown(store, ident, tmp_path):
    pairs = pair_store(store, ident, False)
    pairs.put_file("old", local(tmp_path, b"seed"))  # as written before this change
    entry = pairs.list_dir("").files["old"]
    assert entry.meta is UNKNOWN and entry.meta_error is None
    assert pairs.set_meta(entry, Meta(mode=stat.S_IFREG | 0o755)).meta.mode == 0o100755


def test_tampered_meta_is_an_integrity_error(tmp_path, ident):
    root = tmp_path / "store"
    root.mkdir()
    store = DirStore(str(root))
    pairs = pair_store(store, ident, True)
    entry = pairs.put_file("f", local(tmp_path, b"x"), meta=FILE_META)
    info = dict(entry.content.info)
    info[META_KEY] = encode_meta(FILE_META.updated(uid=0))  # a plaintext forgery
    store.update_info(entry.content, info)
    listed = pairs.list_dir("").files["f"]
    assert listed.meta is UNKNOWN and listed.meta_error
    with pytest.raises(IntegrityError):
        listed.checked_meta()


def test_encrypted_names_keep_owners_and_modes_out_of_plaintext(store, ident, tmp_path):
    pairs = pair_store(store, ident, True)
    pairs.put_file("f", local(tmp_path, b"x"), meta=FILE_META)
    pairs.mkdir("d", Meta(stat.S_IFDIR | 0o2750, 4321, 8765, T, T, None))
    pairs.put_special("p", Meta(stat.S_IFIFO | 0o600, 4321, 8765, T, T, None))
    seen = 0
    for obj in store.iter_all():
        # The mtime is plaintext by design (man b2cryptfs-format): a clock reading that may
        # contain any four digits.
        for value in (v for k, v in obj.info.items() if k != MTIME_KEY):
            for secret in ("104750", "102750", "010600", "1234", "5678", "4321", "8765"):
                assert secret not in value, (obj.name, value)
        seen += META_KEY in obj.info
    assert seen == 3


# --- directories -------------------------------------------------------------------------


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encnames"])
def test_dir_meta_listing_rename_and_rmdir(store, ident, tmp_path, encrypted):
    pairs = pair_store(store, ident, encrypted)
    dmeta = Meta(stat.S_IFDIR | 0o1770, 11, 22, T, T, None)
    pairs.mkdir("top")
    pairs.mkdir("top/a", dmeta)
    pairs.mkdir("top/b")  # no metadata: defaults
    listing = pair_store(store, ident, encrypted).list_dir("top")
    assert listing.dirs == {"a", "b"}
    assert listing.dir_metas == {"a": dmeta}
    assert pairs.dir_meta("top/a") == dmeta and pairs.dir_meta("top/b") is UNKNOWN

    newer = dmeta.updated(mode=stat.S_IFDIR | 0o700)
    pairs.set_dir_meta("top/b", newer)
    assert pairs.list_dir("top").dir_metas == {"a": dmeta, "b": newer}
    assert pairs.list_dir("top/a").files == {} and pairs.list_dir("top/a").dirs == set()

    # A directory rename, level by level as the vfs does it.
    pairs.put_file("top/a/f", local(tmp_path, b"in a"), meta=FILE_META)
    pairs.mkdir("top/c")
    pairs.move_dir_objects("top/a", "top/c")
    pairs.rename("top/a/f", "top/c/f")
    pairs.rmdir("top/a")
    listing = pairs.list_dir("top")
    assert listing.dirs == {"b", "c"} and listing.dir_metas == {"b": newer, "c": dmeta}
    assert pairs.list_dir("top/c").files["f"].meta == FILE_META
    assert list(check(pairs, verify=True)) == []  # dir objects are no orphans or strays

    pairs.rmdir("top/b")
    names = [o.name for o in store.iter_all()]
    assert sum(n.endswith(DIR_SUFFIX) for n in names) == 1, names  # only c's is left


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encnames"])
def test_the_store_root_keeps_its_metadata_in_its_root_object(store, ident, tmp_path, encrypted):
    pairs = pair_store(store, ident, encrypted)
    assert pairs.list_dir("").own_meta is None and pairs.dir_meta("") is UNKNOWN  # defaults
    pairs.put_file("f", local(tmp_path, b"x"), meta=FILE_META)
    rmeta = Meta(stat.S_IFDIR | 0o2750, 4321, 8765, T, T - 5, None)
    pairs.set_dir_meta("", rmeta)
    assert [o.name for o in store.iter_all() if o.name == ROOT_META_OBJECT] == [ROOT_META_OBJECT]
    again = pair_store(store, ident, encrypted)
    listing = again.list_dir("")
    assert listing.own_meta == rmeta and again.dir_meta("") == rmeta
    assert set(listing.files) == {"f"} and listing.dirs == set()  # not shown as an entry
    # The mount's start lists the store's root itself and parses that listing.
    root = again.root_listing(store.list_dir(""))
    assert root is not None and root.own_meta == rmeta
    assert list(check(again, verify=True)) == []  # neither a stray nor an orphan
    info = store.stat(ROOT_META_OBJECT).info
    assert info[MTIME_KEY] == str(T // 1_000_000)
    assert info[META_KEY].startswith("e1.") == encrypted  # sealed like any dir object
    if encrypted:
        assert "4321" not in info[META_KEY] and "2750" not in info[META_KEY]
    # Only the root reads its root object: below it, a directory's is its dir object.
    pairs.mkdir("d")
    store.upload_bytes(pairs.object_path("d", is_dir=True) + "/" + ROOT_META_OBJECT, b"", info)
    assert pairs.list_dir("d").own_meta is None and pairs.dir_meta("d") is UNKNOWN


def test_a_prefix_is_the_root_of_its_store(b2_bucket, ident):
    """Under a prefix, the root object is the prefix's own: the bucket's root keeps none."""
    rmeta = Meta(stat.S_IFDIR | 0o700, 7, 8, T, T, None)
    pair_store(b2_bucket.store(prefix="some/where/"), ident, False).set_dir_meta("", rmeta)
    whole = pair_store(b2_bucket.store(), ident, False)
    assert [o.name for o in whole.store.iter_all()] == [f"some/where/{ROOT_META_OBJECT}"]
    assert whole.list_dir("").own_meta is None and whole.list_dir("some/where").own_meta is None
    inside = pair_store(b2_bucket.store(prefix="some/where/"), ident, False)
    assert inside.list_dir("").own_meta == rmeta


def test_fsck_reports_metadata_that_does_not_decode(tmp_path, ident):
    root = tmp_path / "store"
    root.mkdir()
    store = DirStore(str(root))
    pairs = pair_store(store, ident, True)
    pairs.set_dir_meta("", Meta(stat.S_IFDIR | 0o700, 1, 2, T, T, None))
    pairs.mkdir("d", Meta(stat.S_IFDIR | 0o750, 1, 2, T, T, None))
    assert list(check(pairs)) == []
    forged = {META_KEY: encode_meta(Meta(stat.S_IFDIR | 0o777, 0, 0, T, T, None))}
    store.upload_bytes(ROOT_META_OBJECT, b"", forged)  # plaintext in a sealed store
    store.upload_bytes(pairs.dir_object("d"), b"", forged)
    problems = list(check(pairs))
    assert sorted(p.name for p in problems) == sorted([ROOT_META_OBJECT, pairs.dir_object("d")])
    assert {(p.kind, p.repairable) for p in problems} == {("bad-meta", False)}
    # Shown with defaults rather than trusted.
    assert pairs.list_dir("").own_meta is None and "d" not in pairs.list_dir("").dir_metas


def test_a_rename_sets_the_change_time_in_its_copy(b2_bucket, ident, tmp_path):
    pairs = pair_store(b2_bucket.store(), ident, False)
    pairs.put_file("a", local(tmp_path, b"x"), meta=FILE_META)
    pairs.put_file("seed", local(tmp_path, b"y"))  # no metadata at all
    b2_bucket.server.reset_stats()
    moved = pairs.rename("a", "b", T + 7)
    stats = b2_bucket.server.stats()
    assert stats.get("b2_copy_file") == 2 and "b2_upload_file" not in stats  # key, content
    assert moved.meta == FILE_META.updated(ctime_ns=T + 7)
    assert pairs.list_dir("").files["b"].meta == FILE_META.updated(ctime_ns=T + 7)
    assert pairs.rename("seed", "seed2", T + 8).meta == Meta(ctime_ns=T + 8)
    assert pairs.rename("b", "c").meta.ctime_ns == T + 7  # without one: kept as it was


def test_dir_metas_cost_one_listing(b2_bucket, ident):
    pairs = pair_store(b2_bucket.store(), ident, False)
    pairs.mkdir("p")
    for i in range(30):
        pairs.mkdir(f"p/sub{i}", Meta(stat.S_IFDIR | 0o750, i, i, T, T, None))
    b2_bucket.server.reset_stats()
    listing = pairs.list_dir("p")
    assert b2_bucket.server.stats() == {"b2_list_file_names": 1}
    assert len(listing.dir_metas) == 30 and listing.dir_metas["sub7"].uid == 7


@pytest.mark.parametrize("parts", [False, True], ids=["copy-file", "copy-part"])
def test_set_meta_of_a_big_file_moves_no_content(b2_bucket, ident, tmp_path, parts):
    # With a 15 MB copy limit the 50 MB object is copied in parts (as B2 does past 5 GB).
    kw = (
        {"part_size": 10_000_000, "min_part_size": 5_000_000, "max_part_size": 15_000_000}
        if parts
        else {}
    )
    pairs = pair_store(b2_bucket.store(**kw), ident, True)
    big = tmp_path / "big"
    with open(big, "wb") as f:
        f.write(os.urandom(1 << 20) * 50)
    entry = pairs.put_file("big", str(big), meta=FILE_META)
    pairs.hard_delete = True
    b2_bucket.server.reset_stats()
    updated = pairs.set_meta(entry, FILE_META.updated(mode=stat.S_IFREG | 0o644, uid=1))
    stats = b2_bucket.server.stats()
    if parts:
        assert stats.get("b2_copy_part", 0) >= 4 and "b2_copy_file" not in stats, stats
    else:
        assert stats.get("b2_copy_file") == 1, stats
    for content_move in (
        "b2_download_file_by_id",
        "b2_download_file_by_name",
        "b2_upload_file",
        "b2_upload_part",
    ):
        assert content_move not in stats, stats
    assert updated.content.size == entry.content.size
    # Hard delete: the replaced version is gone, only the new one is left.
    versions = pairs.store.versions(pairs.content_object_name("big"))
    assert [v.version_id for v in versions] == [updated.content.version_id]
    listed = pairs.list_dir("").files["big"]
    assert listed.meta.uid == 1
    reader = pairs.open(listed)  # the key object still matches the copied content
    assert reader.plaintext_size == 50 << 20
    assert reader.read((50 << 20) - 5, 5) == big.read_bytes()[-5:]


def test_dirstore_update_info_does_not_rewrite_bytes(tmp_path, ident):
    root = tmp_path / "store"
    root.mkdir()
    pairs = pair_store(DirStore(str(root)), ident, False)
    entry = pairs.put_file("f", local(tmp_path, b"z" * 1000), meta=FILE_META)
    path = root / "f.enc"
    ino = path.stat().st_ino
    updated = pairs.set_meta(entry, FILE_META.updated(uid=99))
    assert path.stat().st_ino == ino  # same file: the info was rewritten in place
    assert updated.content.version_id != entry.content.version_id
    assert read_all(pairs, "f") == b"z" * 1000


# --- long names --------------------------------------------------------------------------

LONG_NAMES = ["a" * 255, "é" * 127 + "x", "日本" * 42 + "abc", "b" * 243]


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encnames"])
def test_255_byte_names_for_files_and_dirs(store, ident, tmp_path, encrypted):
    pairs = pair_store(store, ident, encrypted)
    assert all(len(n.encode()) in (255, 243) for n in LONG_NAMES)
    dmeta = Meta(stat.S_IFDIR | 0o750, 1, 2, T, T, None)
    for i, name in enumerate(LONG_NAMES):
        pairs.check_new_name("", name, is_dir=False)
        pairs.put_file(name, local(tmp_path, f"file {i}".encode()), meta=FILE_META)
        dname = name[:-1] + "D"
        pairs.mkdir(dname, dmeta if i % 2 else None)
        pairs.put_file(f"{dname}/{name}", local(tmp_path, b"inner"))
    with pytest.raises(NameTooLong):
        pairs.check_new_name("", "c" * 256, is_dir=False)
    with pytest.raises(NameTooLong):
        pairs.check_new_name("", "é" * 128, is_dir=True)

    for obj in store.iter_all():  # every object fits the 250-byte segment limit
        assert all(len(seg.encode()) <= 250 for seg in obj.name.split("/")), obj.name
    again = pair_store(store, ident, encrypted)
    listing = again.list_dir("")
    assert set(listing.files) == set(LONG_NAMES)
    assert listing.dirs == {n[:-1] + "D" for n in LONG_NAMES}
    assert listing.dir_metas == {LONG_NAMES[i][:-1] + "D": dmeta for i in (1, 3)}
    for i, name in enumerate(LONG_NAMES):
        assert listing.files[name].meta == FILE_META
        assert read_all(again, name) == f"file {i}".encode()
        dname = name[:-1] + "D"
        assert set(again.list_dir(dname).files) == {name}
        assert read_all(again, f"{dname}/{name}") == b"inner"
    assert list(check(again, verify=True)) == []

    # Renames between long and short names keep content and metadata.
    short = again.rename(LONG_NAMES[0], "short")
    assert short.meta == FILE_META
    back = again.rename("short", "z" * 255)
    assert set(again.list_dir("").files) == set(LONG_NAMES[1:]) | {"z" * 255}
    assert again.list_dir("").files["z" * 255].meta == back.meta == FILE_META
    dname = LONG_NAMES[1][:-1] + "D"
    new_dname = "q" * 254 + "D"
    again.mkdir(new_dname)
    again.move_dir_objects(dname, new_dname)
    again.rename(f"{dname}/{LONG_NAMES[1]}", f"{new_dname}/{LONG_NAMES[1]}")
    again.rmdir(dname)
    listing = again.list_dir("")
    assert dname not in listing.dirs and listing.dir_metas[new_dname] == dmeta
    assert read_all(again, f"{new_dname}/{LONG_NAMES[1]}") == b"inner"
    for name in list(listing.files):
        again.delete(name)
    assert list(check(again)) == []
