"""``put``, ``get`` and ``cat``: encrypt files into a store and back, without FUSE."""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import secrets
import stat
import sys
import tempfile
from dataclasses import dataclass
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
    from b2cryptfs.bucket.meta import Meta
    from b2cryptfs.bucket.pairs import PairStore


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "put",
        help="encrypt local files into a store",
        description="Encrypt local files and upload each as a pair of objects "
        "(PATH.key.enc first, then PATH.enc), with its mode, owner and mtime. Symbolic links "
        "are stored as links (unless -L); FIFOs, sockets and devices as metadata-only "
        "entries; with -r, directories keep their mode, owner and mtime too.",
        allow_abbrev=False,
    )
    p.add_argument("sources", nargs="+", metavar="LOCAL", help="local files (directories with -r)")
    p.add_argument("dest", metavar="STORE[/PATH]", help="destination store, directory or file")
    p.add_argument("-r", "--recursive", action="store_true", help="copy directories recursively")
    p.add_argument(
        "-L",
        "--follow-symlinks",
        action="store_true",
        help="store what symbolic links point to, not the links",
    )
    add_output_options(p)
    add_key_options(p)
    p.set_defaults(func=cmd_put)

    g = sub.add_parser(
        "get",
        help="download and decrypt files",
        description="Fetch both objects of a file, unwrap its key and decrypt it. "
        "LOCAL '-' writes to standard output. Symbolic links, FIFOs, sockets and devices "
        "are made again; the mtime is restored, the mode less the umask (all of it with -p), "
        "the owner when run as root.",
        allow_abbrev=False,
    )
    g.add_argument("source", metavar="STORE/PATH")
    g.add_argument(
        "dest", metavar="LOCAL", help="output file, a directory to write into, or - (stdout)"
    )
    g.add_argument(
        "-r", "--recursive", action="store_true", help="fetch a whole directory (prefix)"
    )
    g.add_argument(
        "-p",
        "--preserve-permissions",
        action="store_true",
        help="give files the stored mode exactly (setuid bits too), not less the umask",
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


@dataclass(frozen=True)
class _Job:
    """One local entry to put: a regular file, a link, a FIFO/socket/device or a directory."""

    kind: str  # "file", "link", "special", "dir"
    local: str
    rel: str  # destination path, relative to the destination directory
    st: os.stat_result
    empty: bool = False  # a directory with nothing in it


def _job(local: str, rel: str, st: os.stat_result) -> _Job:
    if stat.S_ISREG(st.st_mode):
        return _Job("file", local, rel, st)
    if stat.S_ISLNK(st.st_mode):
        return _Job("link", local, rel, st)
    if stat.S_ISDIR(st.st_mode):
        return _Job("dir", local, rel, st)
    return _Job("special", local, rel, st)


def _walk(source: str, recursive: bool, follow: bool, report: Reporter) -> list[_Job]:
    """The entries to put for one source argument, each directory before its contents.

    Symbolic links are stored as links unless ``follow`` (-L): then what they point to is
    taken, and a dangling one is an error. FIFOs, sockets and devices are stored as such
    (metadata only: nothing is read from them, which would block on a FIFO).
    """
    look = os.stat if follow else os.lstat
    try:
        st = look(source)
    except OSError as e:
        if follow and os.path.islink(source) and e.errno == errno.ENOENT:
            raise UsageError(f"{source}: dangling symlink (its target does not exist)") from None
        raise local_error(source, e) from None
    if not stat.S_ISDIR(st.st_mode):
        return [_job(source, os.path.basename(os.path.normpath(source)), st)]
    if not recursive:
        raise UsageError(f"{source} is a directory (use -r)")
    base = os.path.basename(os.path.normpath(source))
    out: list[_Job] = []
    # With -L, a link back up to a directory being walked must not loop forever: the
    # directories above each one, by (device, inode).
    above: dict[str, frozenset[tuple[int, int]]] = {}

    def walk_error(e: OSError) -> None:
        report.error(str(local_error(e.filename or source, e)))

    for root, dirs, files in os.walk(source, onerror=walk_error, followlinks=follow):
        rel_root = os.path.relpath(root, source).replace(os.sep, "/")
        rel_root = base if rel_root == "." else f"{base}/{rel_root}"
        try:
            rst = look(root)
        except OSError as e:
            report.error(str(local_error(root, e)))
            dirs[:] = []
            continue
        chain = above.get(os.path.dirname(root), frozenset())
        if (rst.st_dev, rst.st_ino) in chain:
            report.error(f"{root}: a symbolic link loop (a directory inside itself)")
            dirs[:] = []
            continue
        above[root] = chain | {(rst.st_dev, rst.st_ino)}
        names = sorted(dirs + files)
        dirs.sort()
        out.append(_Job("dir", root, rel_root, rst, empty=not names))
        descend = []
        for name in names:
            full = os.path.join(root, name)
            try:
                fst = look(full)
            except OSError as e:
                if follow and os.path.islink(full) and e.errno == errno.ENOENT:
                    report.error(f"{full}: dangling symlink (its target does not exist)")
                else:
                    report.error(str(local_error(full, e)))
                continue
            if stat.S_ISDIR(fst.st_mode):
                descend.append(name)  # os.walk lists it and its own job comes from there
                continue
            out.append(_job(full, f"{rel_root}/{name}", fst))
        dirs[:] = [d for d in dirs if d in descend]
    return out


def _put_one(pairs: PairStore, target: str, local: str, report: Reporter) -> int:
    """Encrypt one file into a temporary ciphertext file, then upload the pair; its size."""
    from b2cryptfs.cli.localmeta import kind_name, meta_of

    # O_NONBLOCK: should the file have become a FIFO since it was checked, do not hang.
    fd = os.open(local, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as src:
        st = os.fstat(src.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise UsageError(f"{local}: a {kind_name(st.st_mode)}, not a regular file")
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
                meta_of(st),
                progress=sent,
            )
    return st.st_size


def _put_job(pairs: PairStore, target: str, job: _Job, report: Reporter) -> int | None:
    """Store one entry; the bytes it counts for (None: a directory, not counted)."""
    from b2cryptfs.cli.localmeta import meta_of

    if job.kind == "file":
        return _put_one(pairs, target, job.local, report)
    meta = meta_of(job.st)
    if job.kind == "link":
        link_target = os.readlink(job.local)
        pairs.put_link(target, link_target, meta)
        return len(os.fsencode(link_target))
    if job.kind == "special":
        pairs.put_special(target, meta)
        return 0
    if job.empty and target:
        from b2cryptfs.errors import AlreadyExists

        try:
            pairs.mkdir(target, meta)  # an empty directory needs its marker to exist
            return None
        except AlreadyExists:
            pass
    pairs.set_dir_meta(target, meta)
    return None


def cmd_put(args: argparse.Namespace) -> int:
    report = Reporter.from_args(args)
    store_url, path = split_location(args.dest)
    store = open_store_from_args(args, store_url)
    pairs = _pairs(args, store, path, read=False)
    jobs = [
        job for s in args.sources for job in _walk(s, args.recursive, args.follow_symlinks, report)
    ]
    # One entry that is not a directory, to a name that is not a directory: that name is
    # the destination.
    into_dir = (
        args.dest.endswith("/")
        or not path
        or len(jobs) > 1
        or any(job.kind == "dir" for job in jobs)
        or pairs.is_dir(path)
    )
    if args.encrypt_names and not pairs.encrypts_names:
        # The directory put into becomes the root of the name-encrypted tree.
        root = path.strip("/") if into_dir else path.strip("/").rpartition("/")[0]
        pairs = _pairs(args, store, root, read=False, encrypt_names=True)
    for job in jobs:
        target = f"{path.strip('/')}/{job.rel}".strip("/") if into_dir else path.strip("/")
        try:
            size = _put_job(pairs, target, job, report)
        except OSError as e:
            report.error(str(local_error(job.local, e)))
            continue
        if size is not None:
            report.done(f"{job.local} -> {store_url}/{target}", size)
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


def _temp_name(dest: str) -> str:
    """A free name beside ``dest`` for a link or node made before it is renamed into place."""
    return os.path.join(
        os.path.dirname(os.path.abspath(dest)), f".b2cryptfs-get-{secrets.token_hex(6)}"
    )


def _get_node(pairs: PairStore, entry, dest: str, preserve: bool) -> int:
    """A symbolic link, FIFO, socket or device made at ``dest``; the bytes counted for it."""
    from b2cryptfs.cli.localmeta import make_node, restore

    meta = entry.checked_meta()
    target = pairs.read_link(entry) if meta.is_symlink else None
    tmp = _temp_name(dest)
    try:
        make_node(tmp, meta, target)
    except OSError as e:
        raise local_error(dest, e) from None
    try:
        restore(tmp, meta, entry.mtime_ms * 1_000_000, preserve=preserve)
        os.replace(tmp, dest)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise local_error(dest, e) from None
        raise
    return len(os.fsencode(target)) if target is not None else 0


def _get_one(pairs: PairStore, entry, dest: str, report: Reporter, preserve: bool = False) -> int:
    from b2cryptfs.cli.localmeta import restore

    meta = entry.checked_meta()
    if meta.is_symlink or meta.is_special:
        return _get_node(pairs, entry, dest, preserve)
    reader = pairs.open(entry)
    # Decrypt into a temporary file (0600 while plaintext arrives) beside the destination:
    # a failure leaves nothing behind; the final mode is the stored one less the umask, as
    # tar's (0666 less the umask for files stored without one, as cp's).
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
        restore(tmp, meta, entry.mtime_ms * 1_000_000, preserve=preserve)
        os.replace(tmp, dest)
    except BaseException as e:
        os.unlink(tmp)
        if isinstance(e, OSError):
            raise local_error(dest, e) from None
        raise
    return size


def _tree(pairs: PairStore, prefix: str):
    """("dir", relative path, Meta) and ("file", relative path, entry) below ``prefix``,
    depth first, sorted, each directory before what it holds."""
    top = prefix.strip("/")
    stack = [(top, pairs.dir_meta(top))]  # the store root's from its root object
    while stack:
        d, meta = stack.pop()
        rel = d[len(top) :].strip("/")
        listing = pairs.list_dir(d)
        yield "dir", rel, meta
        for name in sorted(listing.files):
            full = f"{d}/{name}".strip("/")
            yield "file", full[len(top) :].strip("/"), listing.files[name]
        stack.extend(
            (f"{d}/{n}".strip("/"), listing.dir_metas.get(n))
            for n in sorted(listing.dirs, reverse=True)
        )


def _get_tree(args, store_url: str, pairs: PairStore, path: str, report: Reporter) -> int:
    from b2cryptfs.cli.localmeta import restore

    if args.dest == "-":
        raise UsageError("get -r writes a directory; it cannot go to standard output")
    dest = args.dest
    if os.path.isdir(dest):
        # As cp -r: into an existing directory goes DIR/NAME (a local store given as a
        # directory has no path inside it: its own name then).
        name = os.path.basename(path.strip("/") or args.source.rstrip("/"))
        dest = os.path.join(dest, name)
    made: list[tuple[str, Meta | None]] = []
    for kind, rel, item in _tree(pairs, path):
        target = os.path.join(dest, *rel.split("/")) if rel else dest
        if kind == "dir":
            try:
                os.makedirs(target, exist_ok=True)
            except OSError as e:
                report.error(str(local_error(target, e)))
                continue
            made.append((target, item))
            continue
        try:
            size = _get_one(pairs, item, target, report, args.preserve_permissions)
        except OSError as e:
            report.error(str(local_error(os.path.dirname(target), e)))
            continue
        except B2CryptfsError as e:
            report.error(str(e))
            continue
        report.done(f"{store_url}/{item.path} -> {target}", size)
    # Directories last, deepest first: writing into them changed their mtimes, and a
    # read-only one would have refused its files. One stored without metadata keeps what
    # makedirs gave it.
    for target, meta in reversed(made):
        if meta is None or not meta.known:
            continue
        try:
            restore(target, meta, None, preserve=args.preserve_permissions, is_dir=True)
        except OSError as e:
            report.error(str(local_error(target, e)))
    return report.finish("got")


def _not_content(args: argparse.Namespace, pairs: PairStore, entry) -> None:
    """Standard output takes bytes: a link or special file has none to give."""
    from b2cryptfs.cli.localmeta import kind_name

    meta = entry.checked_meta()
    if meta.is_symlink:
        target = pairs.read_link(entry)
        raise UsageError(
            f"{args.source} is a symbolic link to {target}; get it into a file to make the link"
        )
    if meta.is_special:
        assert meta.mode is not None
        raise UsageError(f"{args.source} is a {kind_name(meta.mode)}; it has no content")


def cmd_get(args: argparse.Namespace) -> int:
    report = Reporter.from_args(args)
    store_url, path, pairs = _location(args, file_needed=not args.recursive)
    if args.recursive and (not path.strip("/") or pairs.is_dir(path)):
        return _get_tree(args, store_url, pairs, path, report)
    entry = _stat(args, pairs, path)
    if args.dest == "-":
        _not_content(args, pairs, entry)
        reader = pairs.open(entry)
        out = sys.stdout.buffer
        size = _copy_out(reader, out, entry.path, report)
        out.flush()
        report.done(f"{args.source} -> stdout", size)
        return report.finish("got")
    dest = args.dest
    if os.path.isdir(dest):
        dest = os.path.join(dest, os.path.basename(entry.path))
    size = _get_one(pairs, entry, dest, report, args.preserve_permissions)
    report.done(f"{args.source} -> {dest}", size)
    return report.finish("got")


def cmd_cat(args: argparse.Namespace) -> int:
    from b2cryptfs.bucket.pairs import fetch_plaintext_to

    _, path, pairs = _location(args)
    entry = _stat(args, pairs, path)
    _not_content(args, pairs, entry)
    reader = pairs.open(entry)
    out = sys.stdout.buffer
    fetch_plaintext_to(reader, out)
    out.flush()
    return 0
