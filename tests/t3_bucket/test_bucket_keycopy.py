"""A small file's key object copied into its content object's file info
(bucket/keycopy.py): a fresh read downloads only the content; the key object stays the
authority (a stale or wrong copy is never used over it); rename, rotate keep the copy right."""

from __future__ import annotations

import os

import pytest

from b2cryptfs.bucket.keycopy import KEY_COPY_INFO, KEY_COPY_MAX_CONTENT, key_copy_info
from b2cryptfs.bucket.namekey import open_pair_store
from b2cryptfs.bucket.pairs import PairStore
from b2cryptfs.cli.rotate import RecipientPlan, rotate_one
from b2cryptfs.errors import B2CryptfsError, PairMismatch
from b2cryptfs.formats import get_codec
from b2cryptfs.keys.types import X25519Identity

DATA = os.urandom(4096)


@pytest.fixture
def store(counting_store):
    return counting_store


def pairs_for(store, *idents: X25519Identity) -> PairStore:
    return open_pair_store(
        store, recipients=[i.recipient() for i in idents], identities=list(idents)
    )


def read_fresh(store, ident, name: str) -> tuple[bytes, int]:
    """(plaintext, key object reads) of ``name`` opened from a fresh listing."""
    pairs = pairs_for(store, ident)
    entry = pairs.list_dir("").files[name]
    store.key_reads = 0
    reader = pairs.open(entry)
    return bytes(reader.read(0, reader.plaintext_size)), store.key_reads


def test_a_small_file_reads_with_one_download(store, ident):
    pairs = pairs_for(store, ident)
    pairs.put_bytes("small", DATA)
    pairs.put_bytes("big", os.urandom(KEY_COPY_MAX_CONTENT + 1))
    files = pairs_for(store, ident).list_dir("").files
    assert KEY_COPY_INFO in files["small"].content.info
    assert KEY_COPY_INFO not in files["big"].content.info
    assert read_fresh(store, ident, "small") == (DATA, 0)
    assert read_fresh(store, ident, "big")[1] == 1
    # The copy is the key object as encrypted: no plaintext, a few hundred characters.
    assert len(files["small"].content.info[KEY_COPY_INFO]) < 400
    # A rename's copy names the new key object version: still one download.
    pairs.rename("small", "moved")
    assert read_fresh(store, ident, "moved") == (DATA, 0)


def test_a_stale_copy_is_not_used(store, ident):
    """A newer key object (re-wrapped for another recipient, the copy not refreshed) makes
    the copy stale: the key object decides, and the removed recipient reads nothing."""
    new = X25519Identity(os.urandom(32))
    pairs = pairs_for(store, ident)
    entry = pairs.put_bytes("f", DATA)
    key_object = pairs.matching_key_object(entry)
    rewrapped = get_codec("age").rewrap(key_object, [ident], [new.recipient()])
    pairs.rewrap_key(pairs.key_object_name("f"), rewrapped, {"b2cryptfs-format": "age"})
    assert read_fresh(store, new, "f") == (DATA, 1)
    with pytest.raises(B2CryptfsError):
        read_fresh(store, ident, "f")  # the old copy still opens for it, but is not used


def test_a_wrong_copy_falls_back_to_the_key_object(store, ident):
    """A copy tagged for the listed key object but holding another file's key object (same
    size): the pair does not open from it, the key object is read and decides."""
    pairs = pairs_for(store, ident)
    pairs.put_bytes("f", DATA)
    other = pairs.put_bytes("g", b"other content")
    entry = pairs_for(store, ident).list_dir("").files["f"]
    assert entry.key is not None
    wrong = pairs.read_key_object(other.key)
    assert len(wrong) == entry.key.size
    store.update_info(entry.content, {**entry.content.info, **key_copy_info(entry.key, wrong)})
    assert read_fresh(store, ident, "f") == (DATA, 1)
    # Both the copy and the key object belong elsewhere: a mismatch, never other bytes.
    entry = pairs_for(store, ident).list_dir("").files["f"]
    pairs.rewrap_key(pairs.key_object_name("f"), wrong, {"b2cryptfs-format": "age"}, purge=True)
    key = pairs.store.stat(pairs.key_object_name("f"))
    store.update_info(entry.content, {**entry.content.info, **key_copy_info(key, wrong)})
    with pytest.raises(PairMismatch):
        read_fresh(store, ident, "f")


@pytest.mark.parametrize("purge", [False, True])
def test_rotate_makes_the_copy_for_the_new_key_object(store, ident, purge):
    new = X25519Identity(os.urandom(32))
    pairs = pairs_for(store, ident)
    pairs.put_bytes("f", DATA)
    entry = pairs.list_dir("").files["f"]
    plan = RecipientPlan([new.recipient()], [], [], [ident])
    assert rotate_one(pairs, entry, plan, purge) == "rotated"
    assert read_fresh(store, new, "f") == (DATA, 0)
    with pytest.raises(B2CryptfsError):
        read_fresh(store, ident, "f")
    if purge:
        # No older content version keeps a copy wrapped for the removed recipient.
        versions = store.versions(pairs.content_object_name("f"))
        assert [v.action for v in versions] == ["upload"]
