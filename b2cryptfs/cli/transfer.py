"""``put``, ``get`` and ``cat``: encrypt files into a store and back, without FUSE."""

from __future__ import annotations

import argparse
import errno
import os
import stat
import sys
import tempfile
from typing import TYPE_CHECKING

from b2cryptfs.cli.common import (
    add_key_options,
    load_keys_from_args,
    open_pairs_from_args,
    open_store_from_args,
    split_location,
)
from b2cryptfs.cli.progress import Reporter, add_output_options, local_error
from b2cryptfs.errors import B2CryptfsError, NotFound, UsageError
from b2cryptfs.store.base import Store

if TYPE_CHECKING:  # the bucket layer is imported by the commands, not by --help
    from b2cryptfs.bucket.pairs import PairStore


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "put",
        help="encrypt local files into a store",
        description="Encrypt local files and upload each as a pair of objects "
        "(PATH.key.enc first, then PATH.enc). With -r, FIFOs, sockets and devices are "
        "skipped with a warning.",
        allow_abbrev=False,
    )
    p.add_argument("sources", nargs="+", metavar="LOCAL", help="local files (directories with -r)")
    p.add_argument("dest", metavar="STORE[/PATH]", help="destination store, directory or file")
    p.add_argument("-r", "--recursive", action="store_true", help="copy directories recursively")
    add_output_options(p)
    add_key_options(p)
    p.set_defaults(func=cmd_put)

    g = sub.add_parser(
        "get",
        help="download and decrypt files",
        description="Fetch both objects of a file, unwrap its key and decrypt it. "
        "LOCAL '-' writes to standard output.",
        allow_abbrev=False,
    )
    g.add_argument("source", metavar="STORE/PATH")
    g.add_argument(
        "dest", metavar="LOCAL", help="output file, a directory to write into, or - (stdout)"
    )
    g.add_argument(
        "-r", "--recursive", action="store_true", help="fetch a whole directory (prefix)"
    )
    add_output_options(g)
    add_key_options(g)
    g.set_defaults(func=cmd_get)

    c = sub.add_parser("cat", help="decrypt a file to standard output", allow_abbrev=False)
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


_SPECIAL = {
    stat.S_IFIFO: "FIFO",
    stat.S_IFSOCK: "socket",
    stat.S_IFCHR: "character device",
    stat.S_IFBLK: "block device",
}


def _kind(mode: int) -> str:
    return _SPECIAL.get(stat.S_IFMT(mode), "special file")


def _walk(source: str, recursive: bool, report: Reporter) -> list[tuple[str, str]]:
    """(local file, relative destination path) for one source argument.

    Only regular files (and symlinks to them) are taken: opening a FIFO would block forever,
    and a device or socket has no content to store. A dangling symlink is an error.
    """
    try:
        st = os.stat(source)
    except OSError as e:
        raise local_error(source, e) from None
    if stat.S_ISDIR(st.st_mode):
        if not recursive:
            raise UsageError(f"{source} is a directory (use -r)")
        base = os.path.basename(os.path.normpath(source))
        out = []

        def walk_error(e: OSError) -> None:
            report.error(str(local_error(e.filename or source, e)))

        for root, dirs, files in os.walk(source, onerror=walk_error):
            dirs.sort()
            for f in sorted(files):
                full = os.path.join(root, f)
                try:
                    fst = os.stat(full)
                except OSError as e:
                    if os.path.islink(full) and e.errno == errno.ENOENT:
                        report.error(f"{full}: dangling symlink (its target does not exist)")
                    else:
                        report.error(str(local_error(full, e)))
                    continue
                if not stat.S_ISREG(fst.st_mode):
                    report.warn(f"skipping {full}: a {_kind(fst.st_mode)}")
                    continue
                rel = os.path.relpath(full, source).replace(os.sep, "/")
                out.append((full, f"{base}/{rel}"))
        return out
    if not stat.S_ISREG(st.st_mode):
        raise UsageError(f"{source}: a {_kind(st.st_mode)}, not a regular file")
    return [(source, os.path.basename(source))]


def _put_one(pairs: PairStore, target: str, local: str, report: Reporter) -> int:
    """Encrypt one file into a temporary ciphertext file, then upload the pair; its size."""
    # O_NONBLOCK: should the file have become a FIFO since it was checked, do not hang.
    fd = os.open(local, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as src:
        st = os.fstat(src.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise UsageError(f"{local}: a {_kind(st.st_mode)}, not a regular file")
        os.set_blocking(fd, True)
        pairs.check_collision(target)
        with tempfile.TemporaryDirectory(prefix="b2cryptfs-put-") as tmp:
            out_path = os.path.join(tmp, "content")
            with open(out_path, "wb") as out:
                sealed = pairs.seal(report.reading(src, local, st.st_size, "encrypting "), out)
            sent = report.sending(local, os.path.getsize(out_path))
            pairs.upload_pair(
                target,
                sealed.key_object,
                out_path,
                sealed.info,
                int(st.st_mtime * 1000),
                progress=sent,
            )
    return st.st_size


def cmd_put(args: argparse.Namespace) -> int:
    report = Reporter.from_args(args)
    store_url, path = split_location(args.dest)
    store = open_store_from_args(args, store_url)
    pairs = _pairs(args, store, path, read=False)
    jobs = [job for s in args.sources for job in _walk(s, args.recursive, report)]
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
        try:
            size = _put_one(pairs, target, local, report)
        except OSError as e:
            report.error(str(local_error(local, e)))
            continue
        report.done(f"{local} -> {store_url}/{target}", size)
    return report.finish("put")


def _location(args: argparse.Namespace, *, file_needed: bool = True):
    store_url, path = split_location(args.source)
    if file_needed and not path:
        raise UsageError(f"{args.source}: name a file inside the store")
    store = open_store_from_args(args, store_url)
    return store_url, path, _pairs(args, store, path, read=True)


def _stat(args: argparse.Namespace, pairs: PairStore, path: str):
    entry = pairs.stat_file(path)
    if entry is None:
        detail = "" if pairs.encrypts_names else f" (no object {path.strip('/')}.enc)"
        raise NotFound(f"{args.source}: no such file{detail}")
    return entry


def _copy_out(reader, out, name: str, report: Reporter) -> int:
    """The reader's whole plaintext to ``out``, a few chunks per request; bounded memory."""
    step = reader.chunk_size * 16
    done = 0
    started = report.start(name, reader.plaintext_size)
    while done < reader.plaintext_size:
        data = reader.read(done, step)
        out.write(data)
        done += len(data)
        started.update(done)
    started.close()
    return done


def _file_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _get_one(pairs: PairStore, entry, dest: str, report: Reporter) -> int:
    reader = pairs.open(entry)
    # Decrypt into a temporary file (0600 while plaintext arrives) beside the destination:
    # a failure leaves nothing behind; the final mode follows the umask, as cp's does.
    try:
        fd, tmp = tempfile.mkstemp(
            prefix=".b2cryptfs-get-", dir=os.path.dirname(os.path.abspath(dest))
        )
    except OSError as e:
        raise local_error(dest, e) from None
    try:
        with os.fdopen(fd, "wb") as out:
            size = _copy_out(reader, out, dest, report)
            out.flush()
            os.fchmod(out.fileno(), _file_mode())
        mtime = entry.mtime_ms / 1000
        os.utime(tmp, (mtime, mtime))
        os.replace(tmp, dest)
    except BaseException as e:
        os.unlink(tmp)
        if isinstance(e, OSError):
            raise local_error(dest, e) from None
        raise
    return size


def _tree(pairs: PairStore, prefix: str):
    """(relative path, entry) of every file below ``prefix``, depth first, sorted."""
    stack = [prefix.strip("/")]
    while stack:
        d = stack.pop()
        listing = pairs.list_dir(d)
        for name in sorted(listing.files):
            full = f"{d}/{name}".strip("/")
            yield full[len(prefix.strip("/")) :].strip("/"), listing.files[name]
        stack.extend(f"{d}/{n}".strip("/") for n in sorted(listing.dirs, reverse=True))


def _get_tree(args, store_url: str, pairs: PairStore, path: str, report: Reporter) -> int:
    if args.dest == "-":
        raise UsageError("get -r writes a directory; it cannot go to standard output")
    dest = args.dest
    if os.path.isdir(dest):
        # As cp -r: into an existing directory goes DIR/NAME (a local store given as a
        # directory has no path inside it: its own name then).
        name = os.path.basename(path.strip("/") or args.source.rstrip("/"))
        dest = os.path.join(dest, name)
    for rel, entry in _tree(pairs, path):
        target = os.path.join(dest, *rel.split("/"))
        try:
            os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
            size = _get_one(pairs, entry, target, report)
        except OSError as e:
            report.error(str(local_error(os.path.dirname(target), e)))
            continue
        except B2CryptfsError as e:
            report.error(str(e))
            continue
        report.done(f"{store_url}/{entry.path} -> {target}", size)
    return report.finish("got")


def cmd_get(args: argparse.Namespace) -> int:
    report = Reporter.from_args(args)
    store_url, path, pairs = _location(args, file_needed=not args.recursive)
    if args.recursive and (not path.strip("/") or pairs.is_dir(path)):
        return _get_tree(args, store_url, pairs, path, report)
    entry = _stat(args, pairs, path)
    if args.dest == "-":
        reader = pairs.open(entry)
        out = sys.stdout.buffer
        size = _copy_out(reader, out, entry.path, report)
        out.flush()
        report.done(f"{args.source} -> stdout", size)
        return report.finish("got")
    dest = args.dest
    if os.path.isdir(dest):
        dest = os.path.join(dest, os.path.basename(entry.path))
    size = _get_one(pairs, entry, dest, report)
    report.done(f"{args.source} -> {dest}", size)
    return report.finish("got")


def cmd_cat(args: argparse.Namespace) -> int:
    from b2cryptfs.bucket.pairs import fetch_plaintext_to

    _, path, pairs = _location(args)
    reader = pairs.open(_stat(args, pairs, path))
    out = sys.stdout.buffer
    fetch_plaintext_to(reader, out)
    out.flush()
    return 0
