"""The pair layer with encrypted names, on a DirStore: plaintext API, encrypted objects.

Covers every PairStore operation that builds an object name, foreign objects, the name key
object (creation rules, write-only refusal), name roots below the store root, and fsck.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from b2cryptfs.bucket.check import check, repair
from b2cryptfs.bucket.namekey import NAME_KEY_OBJECT, find_name_root, open_pair_store
from b2cryptfs.bucket.pairs import PairStore
from b2cryptfs.bucket.walk import walk_files
from b2cryptfs.errors import (
    DirectoryNotEmpty,
    NameTooLong,
    NoMatchingIdentity,
    NoPrivateKey,
    UsageError,
)
from b2cryptfs.formats.names import NameCipher
from b2cryptfs.keys.types import X25519Identity
from b2cryptfs.store.dirstore import DirStore

# Each has a character outside lowercase base32, so it cannot show up in an encrypted name
# by chance.
PLAIN_SEGMENTS = ["Docs", "Year-2024", "report.pdf", "X", "X.key", "empty dir", "notes.txt"]
_ENCRYPTED_PART = re.compile(r"[a-z2-7]+(\.enc|\.key\.enc)?")


@pytest.fixture
def ident() -> X25519Identity:
    return X25519Identity(os.urandom(32))


def stored_names(root: Path) -> list[str]:
    out = []
    for dirpath, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != ".b2cryptfs-tmp"]
        rel = os.path.relpath(dirpath, root)
        out += [os.path.normpath(os.path.join(rel, n)) for n in dirs + files]
    return out


def assert_no_plaintext(root: Path, segments=PLAIN_SEGMENTS) -> None:
    """Every stored name is made of encrypted segments (or a marker / the name key object),
    and no plaintext segment occurs in any of them."""
    for name in stored_names(root):
        for part in name.split(os.sep):
            if part in (NAME_KEY_OBJECT, ".bzEmpty"):
                continue
            assert _ENCRYPTED_PART.fullmatch(part), name
            for seg in segments:
                assert seg not in part, (seg, name)


def local_file(tmp_path: Path, data: bytes) -> str:
    p = tmp_path / f"src-{len(data)}-{os.urandom(4).hex()}"
    p.write_bytes(data)
    return str(p)


def read_all(pairs: PairStore, path: str) -> bytes:
    entry = pairs.stat_file(path)
    assert entry is not None, path
    reader = pairs.open(entry)
    return reader.read(0, reader.plaintext_size)


def new_store(tmp_path: Path, ident, *, create=True) -> tuple[Path, PairStore]:
    root = tmp_path / "store"
    root.mkdir(exist_ok=True)
    pairs = open_pair_store(
        DirStore(str(root)),
        recipients=[ident.recipient()],
        identities=[ident],
        encrypt_names=create,
    )
    return root, pairs


def test_every_operation_maps_names(tmp_path, ident):
    root, pairs = new_store(tmp_path, ident)
    assert pairs.encrypts_names and (root / NAME_KEY_OBJECT).is_file()
    a, b = os.urandom(70_000), os.urandom(10)
    pairs.put_file("Docs/Year-2024/report.pdf", local_file(tmp_path, a))
    pairs.put_file("Docs/notes.txt", local_file(tmp_path, b))
    # P and P.key coexist: encrypted leaves have no dots, so they share no object.
    pairs.put_file("X", local_file(tmp_path, b"x"))
    pairs.put_file("X.key", local_file(tmp_path, b"x.key"))
    pairs.mkdir("empty dir")
    assert_no_plaintext(root)

    # A fresh session finds the name key on its own.
    again = open_pair_store(DirStore(str(root)), identities=[ident])
    top = again.list_dir("")
    assert set(top.files) == {"X", "X.key"} and top.dirs == {"Docs", "empty dir"}
    assert again.list_dir("empty dir").has_marker
    docs = again.list_dir("Docs")
    assert set(docs.files) == {"notes.txt"} and docs.dirs == {"Year-2024"}
    assert docs.files["notes.txt"].path == "Docs/notes.txt" and docs.files["notes.txt"].size == 10
    assert again.is_dir("Docs/Year-2024") and not again.is_dir("Docs/nothing")
    assert read_all(again, "Docs/Year-2024/report.pdf") == a
    assert read_all(again, "X.key") == b"x.key" and read_all(again, "X") == b"x"
    assert again.stat_file("Docs/missing") is None
    assert [e.path for e in walk_files(again)] == [
        "X",
        "X.key",
        "Docs/notes.txt",
        "Docs/Year-2024/report.pdf",
    ]

    # object_path/plain_path are inverses; the object names are what the store holds.
    obj = again.object_path("Docs/Year-2024/report.pdf")
    assert again.plain_path(obj) == "Docs/Year-2024/report.pdf"
    assert (root / (obj + ".enc")).is_file() and (root / (obj + ".key.enc")).is_file()

    again.rename("Docs/Year-2024/report.pdf", "Docs/moved.pdf")
    assert read_all(again, "Docs/moved.pdf") == a
    assert again.stat_file("Docs/Year-2024/report.pdf") is None
    with pytest.raises(DirectoryNotEmpty):
        again.rmdir("Docs")
    again.delete("Docs/moved.pdf")
    again.delete("Docs/notes.txt")
    again.rmdir("empty dir")
    assert again.list_dir("").dirs == set()
    assert_no_plaintext(root, PLAIN_SEGMENTS + ["moved.pdf"])


def test_foreign_and_moved_objects_are_invisible_and_reported(tmp_path, ident):
    root, pairs = new_store(tmp_path, ident)
    pairs.put_file("docs/a.txt", local_file(tmp_path, b"a"))
    pairs.put_file("b.txt", local_file(tmp_path, b"b"))
    enc_docs = pairs.object_path("docs")
    # A plain-named pair, a name made with another key, and a whole valid pair copied into
    # another directory (its names are bound to their parent, so they no longer decrypt).
    (root / "plain.txt.enc").write_bytes(b"x")
    (root / "plain.txt.key.enc").write_bytes(b"x")
    foreign = NameCipher.generate().encrypt_segment("c.txt") + ".enc"
    (root / foreign).write_bytes(b"x")
    moved = pairs.object_path("b.txt")
    for suffix in (".enc", ".key.enc"):
        (root / enc_docs / (moved + suffix)).write_bytes((root / (moved + suffix)).read_bytes())
    (root / "README").write_bytes(b"not ours")
    listing = pairs.list_dir("")
    assert set(listing.files) == {"b.txt"} and listing.dirs == {"docs"}
    assert set(pairs.list_dir("docs").files) == {"a.txt"}

    problems = list(check(pairs, "", verify=True))
    assert {p.kind for p in problems} == {"stray"}, problems
    assert {p.name for p in problems} == {
        "README",
        "plain.txt.enc",
        "plain.txt.key.enc",
        foreign,
        f"{enc_docs}/{moved}.enc",
        f"{enc_docs}/{moved}.key.enc",
    }
    assert all("ignored" in p.detail for p in problems)


def test_fsck_names_orphans_in_plaintext_and_repairs(tmp_path, ident):
    root, pairs = new_store(tmp_path, ident)
    pairs.put_file("d/keep.txt", local_file(tmp_path, b"keep"))
    pairs.put_file("d/lost.txt", local_file(tmp_path, b"lost"))
    content = root / (pairs.object_path("d/lost.txt") + ".enc")
    content.unlink()  # an upload interrupted between key and content
    problems = list(check(pairs, "", verify=True))
    assert [(p.kind, p.name) for p in problems] == [("orphan-key", "d/lost.txt.key.enc")]
    assert problems[0].object_name == pairs.object_path("d/lost.txt") + ".key.enc"
    repair(pairs, problems[0])
    assert list(check(pairs, "", verify=True)) == []
    assert list(check(pairs, "d/", verify=True)) == []
    assert read_all(pairs, "d/keep.txt") == b"keep"


def test_name_length_limits(tmp_path, ident):
    root, pairs = new_store(tmp_path, ident)
    pairs.check_name("a" * 135)
    # Longer names (up to NAME_MAX) are stored under long-name stand-ins (t3_bucket tests).
    pairs.check_name("a" * 136)
    with pytest.raises(NameTooLong, match="255"):
        pairs.check_new_name("", "b" * 256, is_dir=False)
    with pytest.raises(NameTooLong, match="255"):
        pairs.check_new_name("", "d" * 256, is_dir=True)
    # Depth: each segment costs at least 27 bytes encrypted; B2 allows 1,024 per name.
    deep = "/".join(["d"] * 40)
    with pytest.raises(NameTooLong):
        pairs.check_name(deep + "/f")
    pairs.check_name("/".join(["d"] * 30) + "/f")
    assert stored_names(root) == [NAME_KEY_OBJECT]  # nothing was uploaded
    # Plain names keep the plain limits.
    plain = PairStore(DirStore(str(tmp_path)))
    plain.check_name("a" * 200)
    plain.check_name("a" * 243)  # a long-name stand-in
    with pytest.raises(NameTooLong):
        plain.check_new_name("", "a" * 256, is_dir=False)


def test_write_only_and_wrong_key_refused(tmp_path, ident):
    root, _ = new_store(tmp_path, ident)
    store = DirStore(str(root))
    with pytest.raises(NoPrivateKey, match="write-only"):
        open_pair_store(store, recipients=[ident.recipient()])
    with pytest.raises(NoMatchingIdentity, match=NAME_KEY_OBJECT):
        open_pair_store(store, identities=[X25519Identity(os.urandom(32))])


def test_creation_rules(tmp_path, ident):
    root = tmp_path / "store"
    root.mkdir()
    store = DirStore(str(root))
    stranger = X25519Identity(os.urandom(32))
    # No private key: refused (the store could never be used with it afterwards).
    with pytest.raises(NoPrivateKey):
        open_pair_store(store, recipients=[ident.recipient()], encrypt_names=True)
    # The name key would be wrapped for someone else only: refused.
    with pytest.raises(UsageError, match="recipients"):
        open_pair_store(
            store, recipients=[stranger.recipient()], identities=[ident], encrypt_names=True
        )
    # Plain-named content would vanish from view: refused.
    plain = PairStore(store, recipients=[ident.recipient()], identities=[ident])
    plain.put_file("old.txt", local_file(tmp_path, b"old"))
    with pytest.raises(UsageError, match="plain names"):
        open_pair_store(
            store, recipients=[ident.recipient()], identities=[ident], encrypt_names=True
        )
    assert not (root / NAME_KEY_OBJECT).exists()
    # Without the flag a plain store stays plain.
    assert not open_pair_store(store, identities=[ident]).encrypts_names


def test_name_root_below_the_store_root(tmp_path, ident):
    """What the CLI does for b2://BUCKET/PREFIX: the tree's root is a directory; the names
    above it stay plain, and a store opened at that directory (the mount of the prefix)
    sees the same plaintext names."""
    root = tmp_path / "bucket"
    root.mkdir()
    bucket = DirStore(str(root))
    keys = dict(recipients=[ident.recipient()], identities=[ident])
    cli_view = open_pair_store(bucket, **keys, encrypt_names=True, path="backup")
    assert cli_view.name_root == "backup"
    cli_view.put_file("backup/Photos/cat.jpg", local_file(tmp_path, b"meow"))
    plain_neighbour = PairStore(bucket, **keys)
    plain_neighbour.put_file("other/readme.txt", local_file(tmp_path, b"plain"))
    assert (root / "backup" / NAME_KEY_OBJECT).is_file()
    assert (root / "other" / "readme.txt.enc").is_file()
    assert_no_plaintext(root / "backup", ["Photos", "cat.jpg"])

    assert find_name_root(bucket, "backup/Photos/cat.jpg")[0] == "backup"
    assert find_name_root(bucket, "other/readme.txt") is None
    later = open_pair_store(bucket, **keys, path="backup/Photos")
    assert later.list_dir("").dirs == {"backup", "other"}
    assert later.list_dir("backup").dirs == {"Photos"}
    assert read_all(later, "backup/Photos/cat.jpg") == b"meow"
    assert read_all(later, "other/readme.txt") == b"plain"

    mount_view = open_pair_store(DirStore(str(root / "backup")), **keys)
    assert mount_view.name_root == "" and mount_view.encrypts_names
    assert [e.path for e in walk_files(mount_view)] == ["Photos/cat.jpg"]
    assert read_all(mount_view, "Photos/cat.jpg") == b"meow"

    # A session without that name key refuses the tree instead of showing cipher names.
    with pytest.raises(UsageError, match="encrypted"):
        PairStore(bucket, **keys).list_dir("backup")
