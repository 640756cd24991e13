"""Fixtures of the pair-layer tests (import them into a test module): an identity, and each
real store (directory, loopback B2), plain or with its object reads counted."""

from __future__ import annotations

import os

import pytest

from b2cryptfs.keys.types import X25519Identity
from b2cryptfs.store.dirstore import DirStore

__all__ = ["any_store", "counting_store", "ident"]


@pytest.fixture
def ident() -> X25519Identity:
    return X25519Identity(os.urandom(32))


@pytest.fixture(params=["dir", "b2"])
def any_store(request, tmp_path):
    if request.param == "dir":
        root = tmp_path / "store"
        root.mkdir()
        return DirStore(str(root))
    return request.getfixturevalue("b2_bucket").store()


class ReadCounting:
    """A real store whose object reads are counted, all and those of key objects (every
    other call goes straight on)."""

    def __init__(self, store) -> None:
        self._store = store
        self.reads = 0
        self.key_reads = 0

    def read(self, obj, *args, **kwargs):
        self.reads += 1
        self.key_reads += obj.name.endswith(".key.enc")
        return self._store.read(obj, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._store, name)


@pytest.fixture
def counting_store(any_store) -> ReadCounting:
    return ReadCounting(any_store)
