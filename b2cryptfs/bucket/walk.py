"""Recursive walks over a store's plaintext tree, one listing per directory."""

from __future__ import annotations

from collections.abc import Iterator

from b2cryptfs.bucket.pairs import FileEntry, PairStore


def walk_files(pairs: PairStore, top: str = "") -> Iterator[FileEntry]:
    """Every file below ``top`` (a directory, or a single file's path), depth first."""
    top = top.strip("/")
    if top and not pairs.is_dir(top):
        entry = pairs.stat_file(top)
        if entry is not None:
            yield entry
        return
    stack = [top]
    while stack:
        d = stack.pop()
        listing = pairs.list_dir(d)
        for name in sorted(listing.files):
            yield listing.files[name]
        stack.extend(f"{d}/{n}".strip("/") for n in sorted(listing.dirs, reverse=True))
