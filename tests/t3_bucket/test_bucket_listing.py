"""A directory listing's file records: every field, the same as a stat of each file, and
key objects paired by name (also for names that end in ``.key``)."""

from __future__ import annotations

import dataclasses
import os

import pytest

from b2cryptfs.bucket.meta import Meta
from b2cryptfs.bucket.namekey import open_pair_store
from b2cryptfs.bucket.pairs import FileEntry
from b2cryptfs.keys.types import X25519Identity
from b2cryptfs.store.dirstore import DirStore

# "X.key"'s content object is X.key.enc, the name X's key object would have: with no X.enc
# beside it, the listing must take it for content (its key is X.key.key.enc).
NAMES = ["a", "X.key", "c.key.key", "b.enc"]


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_listing_entries_match_stat_and_pair_keys(tmp_path, encrypted):
    ident = X25519Identity(os.urandom(32))
    pairs = open_pair_store(
        DirStore(str(tmp_path / "store"), create=True),
        recipients=[ident.recipient()],
        identities=[ident],
        encrypt_names=encrypted,
    )
    for i, name in enumerate(NAMES):
        pairs.put_bytes(f"d/{name}", b"x" * i, Meta(mode=0o100640, mtime_ns=i * 10**9))
    files = pairs.list_dir("d").files
    assert sorted(files) == sorted(NAMES)
    keys = set()
    for i, name in enumerate(NAMES):
        entry = files[name]
        assert type(entry) is FileEntry
        assert set(vars(entry)) == {f.name for f in dataclasses.fields(FileEntry)}
        assert entry == pairs.stat_file(f"d/{name}")
        assert entry.path == f"d/{name}" and entry.size == i and entry.meta.mode == 0o100640
        assert entry.key is not None and entry.key.name != entry.content.name
        keys.add(entry.key.name)
        with pytest.raises(dataclasses.FrozenInstanceError):
            entry.size = 0  # type: ignore[misc]
    assert len(keys) == len(NAMES)
