"""Symbolic link targets in the file info (bucket/inlinelink.py): a short target reads from
the listing alone, links stored with their target only in the content still read, and
re-wrapping a key object leaves no copy wrapped for the old recipients."""

from __future__ import annotations

import os
import stat

import pytest

from b2cryptfs.bucket.check import check
from b2cryptfs.bucket.inlinelink import LINK_INFO, LINK_KEY_INFO
from b2cryptfs.bucket.keycopy import KEY_COPY_INFO
from b2cryptfs.bucket.meta import Meta
from b2cryptfs.bucket.namekey import open_pair_store
from b2cryptfs.bucket.pairs import PairStore
from b2cryptfs.errors import B2CryptfsError
from b2cryptfs.formats import get_codec
from b2cryptfs.keys.types import X25519Identity

TARGET = "../some/where/target"


@pytest.fixture
def store(counting_store):
    return counting_store


def pairs_for(store, *idents: X25519Identity, encrypted: bool = False) -> PairStore:
    return open_pair_store(
        store,
        recipients=[i.recipient() for i in idents],
        identities=list(idents),
        encrypt_names=encrypted,
    )


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encnames"])
def test_a_short_target_reads_from_the_listing(store, ident, encrypted):
    pairs = pairs_for(store, ident, encrypted=encrypted)
    pairs.put_link("ln", TARGET, Meta(uid=7, gid=8))
    entry = pairs_for(store, ident, encrypted=encrypted).list_dir("").files["ln"]
    assert entry.key is not None
    key_copy, copy = entry.key.info[LINK_KEY_INFO], entry.content.info[LINK_INFO]
    store.reads = 0
    assert pairs.read_link(entry) == TARGET
    assert store.reads == 0
    # The copies are the objects' own bytes: sealed, never the target in the clear.
    for value in (key_copy, copy):
        assert "target" not in value and "where" not in value
    assert len(copy) < 200 and len(key_copy) < 2048
    # A rename copies both objects, their info with them.
    pairs.rename("ln", "moved")
    moved = pairs_for(store, ident, encrypted=encrypted).list_dir("").files["moved"]
    store.reads = 0
    assert pairs.read_link(moved) == TARGET and store.reads == 0
    assert list(check(pairs, verify=True)) == []  # fsck finds nothing to say about them


def test_a_write_only_session_stores_the_copies(store, ident):
    writer = PairStore(store, recipients=[ident.recipient()])  # the public key only
    writer.put_link("ln", TARGET)
    with pytest.raises(B2CryptfsError):
        writer.read_link(writer.list_dir("").files["ln"])  # reading needs the private key
    reader = pairs_for(store, ident)
    store.reads = 0
    assert reader.read_link(reader.list_dir("").files["ln"]) == TARGET
    assert store.reads == 0


def test_links_with_the_target_in_the_content_only(store, ident):
    """As links were stored before the copies, and as a long target still is."""
    pairs = pairs_for(store, ident)
    old = pairs.put_bytes("old", TARGET.encode(), Meta(mode=stat.S_IFLNK | 0o777))
    # Stored before any copies: nor the key object's in the content (bucket/keycopy.py).
    store.update_info(
        old.content, {k: v for k, v in old.content.info.items() if k != KEY_COPY_INFO}
    )
    long_target = "/".join(f"{i:02d}" + "t" * 248 for i in range(12))  # 3,000 bytes
    pairs.put_link("long", long_target)
    files = pairs_for(store, ident).list_dir("").files
    assert LINK_INFO not in files["old"].content.info
    assert LINK_INFO not in files["long"].content.info
    assert files["long"].key is not None and LINK_KEY_INFO not in files["long"].key.info
    # "old": key object and content, side by side; "long": the content, the key object
    # from its copy in the content's file info.
    for name, want, reads in (("old", TARGET, 2), ("long", long_target, 1)):
        store.reads = 0
        assert pairs.read_link(files[name]) == want
        assert store.reads == reads


def test_a_rewrapped_key_object_carries_no_copy(store, ident):
    """Rotation (a new key object for other recipients) must not leave the file key wrapped
    for a removed recipient in the newest version's listing row."""
    new = X25519Identity(os.urandom(32))
    pairs = pairs_for(store, ident)
    entry = pairs.put_link("ln", TARGET)
    codec = get_codec("age")
    key_object = pairs.matching_key_object(entry)
    rewrapped = codec.rewrap(key_object, [ident], [new.recipient()])
    pairs.rewrap_key(pairs.key_object_name("ln"), rewrapped, {"b2cryptfs-format": "age"})

    entry = pairs_for(store, new).list_dir("").files["ln"]
    assert entry.key is not None and LINK_KEY_INFO not in entry.key.info
    store.reads = 0
    assert pairs_for(store, new).read_link(entry) == TARGET  # from the objects
    assert store.reads == 2
    with pytest.raises(B2CryptfsError):
        pairs_for(store, ident).read_link(entry)  # the removed key reads nothing
