"""``ls``: plaintext names, sizes and formats of a store's files."""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING

from b2cryptfs.cli.common import (
    add_key_options,
    open_pairs_from_args,
    open_store_from_args,
    split_location,
)
from b2cryptfs.errors import B2CryptfsError, NotFound

if TYPE_CHECKING:  # the bucket layer is imported by the command, not by --help
    from b2cryptfs.bucket.pairs import FileEntry, PairStore


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ls",
        help="list files in a store",
        description="List plaintext names of files (content objects with their key objects). "
        "Orphan key objects are not shown.",
    )
    p.add_argument("location", metavar="STORE[/PREFIX]")
    p.add_argument("-l", dest="long", action="store_true", help="sizes, times and formats")
    p.add_argument("-R", "--recursive", action="store_true", help="list subdirectories too")
    add_key_options(p)
    p.set_defaults(func=cmd_ls)


def _size(pairs: PairStore, entry: FileEntry) -> str:
    if entry.size is not None:
        return str(entry.size)
    if pairs.can_read and entry.key is not None:
        try:
            return str(pairs.exact_size(entry))
        except B2CryptfsError:
            pass
    return f"~{entry.size_estimate}"


def _line(pairs: PairStore, name: str, entry: FileEntry | None, long: bool) -> str:
    if not long:
        return name
    if entry is None:
        return f"{'dir':8} {'-':>12} {'':16} {name}"
    stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime(entry.mtime_ms / 1000))
    fmt = entry.format or "?"
    if entry.key is None:
        fmt = "no-key"
    return f"{fmt:8} {_size(pairs, entry):>12} {stamp:16} {name}"


def cmd_ls(args: argparse.Namespace) -> int:
    from b2cryptfs.bucket.namekey import find_name_root
    from b2cryptfs.cli.common import load_identities_from_args

    store_url, prefix = split_location(args.location)
    store = open_store_from_args(args, store_url)
    # Private keys matter for encrypted names and for sizes of seed-written files; never
    # prompt just to list plain names.
    need_key = find_name_root(store, prefix) is not None or (args.long and args.private_key)
    identities = load_identities_from_args(args) if need_key else []
    pairs = open_pairs_from_args(args, store, identities=identities, path=prefix)
    prefix = prefix.strip("/")
    if prefix and not pairs.is_dir(prefix):
        entry = pairs.stat_file(prefix)
        if entry is None:
            raise NotFound(f"{args.location}: no such file or directory")
        print(_line(pairs, entry.path, entry, args.long))
        return 0
    out = sys.stdout
    stack = [prefix]
    while stack:
        d = stack.pop()
        listing = pairs.list_dir(d)
        rel = d[len(prefix) :].strip("/")
        names = sorted(
            [(n, listing.files[n]) for n in listing.files] + [(n + "/", None) for n in listing.dirs]
        )
        for name, entry in names:
            shown = f"{rel}/{name}" if rel else name
            out.write(_line(pairs, shown, entry, args.long) + "\n")
        if args.recursive:
            stack.extend(f"{d}/{n}".strip("/") for n in sorted(listing.dirs, reverse=True))
    return 0
