"""The state every part of the vfs works on (Overlay, Content, Attrs, Tree), in one piece."""

from __future__ import annotations

from dataclasses import dataclass

from b2cryptfs.vfs.context import VfsContext
from b2cryptfs.vfs.listings import ListingCache
from b2cryptfs.vfs.namespace import InodeTable
from b2cryptfs.vfs.outbox import Outbox


@dataclass(frozen=True)
class Shared:
    """What the Vfs facade builds once and every part reads and changes."""

    ctx: VfsContext
    table: InodeTable
    listings: ListingCache
    outbox: Outbox


class Part:
    """A part of the vfs: the shared state as attributes (``self.ctx``, ``self.table`` …)."""

    def __init__(self, shared: Shared) -> None:
        self.ctx = shared.ctx
        self.table = shared.table
        self.listings = shared.listings
        self.outbox = shared.outbox
