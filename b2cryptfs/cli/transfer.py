"""``put``, ``get`` and ``cat``: encrypt files into a store and back, without FUSE."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

from b2cryptfs.bucket.pairs import PairStore, fetch_plaintext_to
from b2cryptfs.cli.common import (
    add_key_options,
    load_keys_from_args,
    open_pairs_from_args,
    open_store_from_args,
    split_location,
)
from b2cryptfs.errors import NotFound, UsageError
from b2cryptfs.store.base import Store


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "put",
        help="encrypt local files into a store",
        description="Encrypt local files and upload each as a pair of objects "
        "(PATH.key.enc first, then PATH.enc).",
    )
    p.add_argument("sources", nargs="+", metavar="LOCAL", help="local files (directories with -r)")
    p.add_argument("dest", metavar="STORE[/PATH]", help="destination store, directory or file")
    p.add_argument("-r", "--recursive", action="store_true", help="copy directories recursively")
    add_key_options(p)
    p.set_defaults(func=cmd_put)

    g = sub.add_parser(
        "get",
        help="download and decrypt a file",
        description="Fetch both objects of a file, unwrap its key and decrypt it.",
    )
    g.add_argument("source", metavar="STORE/PATH")
    g.add_argument("dest", metavar="LOCAL", help="output file, or a directory to write into")
    add_key_options(g)
    g.set_defaults(func=cmd_get)

    c = sub.add_parser("cat", help="decrypt a file to standard output")
    c.add_argument("source", metavar="STORE/PATH")
    add_key_options(c)
    c.set_defaults(func=cmd_cat)


def _pairs(
    args: argparse.Namespace, store: Store, path: str, *, read: bool, encrypt_names: bool = False
) -> PairStore:
    recipients, identities = load_keys_from_args(args, need_read=read, need_write=not read)
    return open_pairs_from_args(
        args,
        store,
        recipients=recipients,
        identities=identities,
        path=path,
        encrypt_names=encrypt_names,
    )


def _walk(source: str, recursive: bool) -> list[tuple[str, str]]:
    """(local file, relative destination path) for one source argument."""
    if os.path.isdir(source):
        if not recursive:
            raise UsageError(f"{source} is a directory (use -r)")
        base = os.path.basename(os.path.normpath(source))
        out = []
        for root, dirs, files in os.walk(source):
            dirs.sort()
            for f in sorted(files):
                full = os.path.join(root, f)
                rel = os.path.relpath(full, source).replace(os.sep, "/")
                out.append((full, f"{base}/{rel}"))
        return out
    if not os.path.isfile(source):
        raise NotFound(f"{source}: no such file")
    return [(source, os.path.basename(source))]


def cmd_put(args: argparse.Namespace) -> int:
    store_url, path = split_location(args.dest)
    store = open_store_from_args(args, store_url)
    pairs = _pairs(args, store, path, read=False)
    jobs = [job for s in args.sources for job in _walk(s, args.recursive)]
    # One plain file to a name that is not a directory: that name is the destination.
    into_dir = (
        args.dest.endswith("/")
        or not path
        or len(jobs) > 1
        or os.path.isdir(args.sources[0])
        or pairs.is_dir(path)
    )
    if args.encrypt_names and not pairs.encrypts_names:
        # The directory put into becomes the root of the name-encrypted tree.
        root = path.strip("/") if into_dir else path.strip("/").rpartition("/")[0]
        pairs = _pairs(args, store, root, read=False, encrypt_names=True)
    for local, rel in jobs:
        target = f"{path.strip('/')}/{rel}".strip("/") if into_dir else path
        pairs.put_file(target, local)
    return 0


def _open_source(args: argparse.Namespace):
    store_url, path = split_location(args.source)
    if not path:
        raise UsageError(f"{args.source}: name a file inside the store")
    store = open_store_from_args(args, store_url)
    pairs = _pairs(args, store, path, read=True)
    entry = pairs.stat_file(path)
    if entry is None:
        detail = "" if pairs.encrypts_names else f" (no object {path.strip('/')}.enc)"
        raise NotFound(f"{args.source}: no such file{detail}")
    return entry, pairs.open(entry)


def cmd_get(args: argparse.Namespace) -> int:
    entry, reader = _open_source(args)
    dest = args.dest
    if os.path.isdir(dest):
        dest = os.path.join(dest, os.path.basename(entry.path))
    # Decrypt into a temporary file beside the destination: a failure leaves nothing behind.
    fd, tmp = tempfile.mkstemp(prefix=".b2cryptfs-get-", dir=os.path.dirname(os.path.abspath(dest)))
    try:
        with os.fdopen(fd, "wb") as out:
            fetch_plaintext_to(reader, out)
        mtime = entry.mtime_ms / 1000
        os.utime(tmp, (mtime, mtime))
        os.replace(tmp, dest)
    except BaseException:
        os.unlink(tmp)
        raise
    return 0


def cmd_cat(args: argparse.Namespace) -> int:
    _, reader = _open_source(args)
    out = sys.stdout.buffer
    fetch_plaintext_to(reader, out)
    out.flush()
    return 0
