"""``ls``: plaintext names, sizes and formats of a store's files."""

from __future__ import annotations

import argparse
import os
import stat
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
    from b2cryptfs.bucket.meta import Meta
    from b2cryptfs.bucket.pairs import FileEntry, PairStore


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ls",
        help="list files in a store",
        description="List plaintext names of files (content objects with their key objects), "
        "symbolic links and special files. Orphan key objects are not shown. With -l: "
        "FORMAT SIZE DATE TIME MODE UID:GID NAME, a link as NAME -> TARGET (its target needs "
        "--private-key, else ?).",
    )
    p.add_argument("location", metavar="STORE[/PREFIX]")
    p.add_argument(
        "-l",
        dest="long",
        action="store_true",
        help="formats, sizes, times, modes, owners, link targets",
    )
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


def _mode(meta: Meta, is_dir: bool) -> str:
    if meta.mode is None:  # stored without metadata: the type is known, the rest is not
        return ("d" if is_dir else "-") + "?" * 9
    return stat.filemode(meta.mode)


def _owner(meta: Meta) -> str:
    return "?" if meta.uid is None or meta.gid is None else f"{meta.uid}:{meta.gid}"


def _target(pairs: PairStore, entry: FileEntry) -> str:
    """A link's target (a small download and decrypt), "?" without a private key."""
    if not pairs.can_read or entry.key is None:
        return "?"
    try:
        return pairs.read_link(entry)
    except B2CryptfsError:
        return "?"


def _line(
    pairs: PairStore, name: str, entry: FileEntry | None, long: bool, dmeta: Meta | None = None
) -> str:
    """One line of ``ls``: the name; with -l, FORMAT SIZE DATE TIME MODE UID:GID NAME (a link's
    name as ``name -> target``, a device's size as MAJOR,MINOR)."""
    from b2cryptfs.bucket.meta import UNKNOWN

    if not long:
        return name
    if entry is None:
        meta = dmeta or UNKNOWN
        stamp = ""
        if meta.mtime_ns is not None:
            stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime(meta.mtime_ns / 1e9))
        return f"{'dir':8} {'-':>12} {stamp:16} {_mode(meta, True)} {_owner(meta):>11} {name}"
    meta = entry.meta
    mtime = meta.mtime_ns / 1e9 if meta.mtime_ns is not None else entry.mtime_ms / 1000
    stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime(mtime))
    fmt = entry.format or "?"
    if entry.key is None:
        fmt = "no-key"
    size = _size(pairs, entry)
    if meta.mode is not None and (stat.S_ISCHR(meta.mode) or stat.S_ISBLK(meta.mode)):
        size = f"{os.major(meta.rdev or 0)},{os.minor(meta.rdev or 0)}"
    if meta.is_symlink:
        name = f"{name} -> {_target(pairs, entry)}"
    return f"{fmt:8} {size:>12} {stamp:16} {_mode(meta, False)} {_owner(meta):>11} {name}"


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
            dmeta = listing.dir_metas.get(name[:-1]) if entry is None else None
            out.write(_line(pairs, shown, entry, args.long, dmeta) + "\n")
        if args.recursive:
            stack.extend(f"{d}/{n}".strip("/") for n in sorted(listing.dirs, reverse=True))
    return 0
