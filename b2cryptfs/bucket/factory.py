"""Opening the pair store of a session (mount or tool) from its settings."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from b2cryptfs.bucket.namekey import open_pair_store
from b2cryptfs.bucket.pairs import PairStore
from b2cryptfs.keys.types import Identity, Recipient
from b2cryptfs.store.base import ObjectInfo, Store


class PairSettings(Protocol):
    """What a pair store needs from a session's configuration (a MountConfig has it all)."""

    recipients: Sequence[Recipient]
    identities: Sequence[Identity]
    format: str
    openssl_md: str
    hard_delete: bool
    encrypt_names: bool
    read_only: bool


def make_pairs(
    config: PairSettings, store: Store, found: tuple[str, ObjectInfo] | None | bool = True
) -> PairStore:
    """The pair layer of a mount; honours a name key at the store root (encrypted names).

    ``found``: the store root's name key when already looked up (see open_pair_store)."""
    return open_pair_store(
        store,
        recipients=config.recipients,
        identities=config.identities,
        format=config.format,
        openssl_md=config.openssl_md,
        hard_delete=config.hard_delete,
        # A read-only mount must not write a name key into the store.
        encrypt_names=config.encrypt_names and not config.read_only,
        found=found,
    )
