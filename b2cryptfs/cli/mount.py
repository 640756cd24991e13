"""``b2cryptfs mount STORE MOUNTPOINT``, and the same program as a mount(8) helper.

Everything that can fail for a reason the user can fix (mountpoint, keys and passphrase,
credentials and bucket, cache directory, log file) is checked here, in the foreground,
before the daemon is forked: the user sees one clear line and a non-zero exit status. The
daemon only mounts and serves (``b2cryptfs.fs.mount.run_mount``).

With ``--foreground`` there is no fork, and the mount does not wait for a B2 store: it is
made while the store opens (requests wait for it, ``b2cryptfs.fs.gate``); a store that
fails to open then ends the mount with the same one-line error.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import logging
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, NoReturn

from b2cryptfs.cache.cachedir import ROOT_CACHE_ROOT, default_cache_root
from b2cryptfs.cli import daemon
from b2cryptfs.cli.common import add_key_options, load_keys_from_args
from b2cryptfs.cli.mountopts import duration_arg, size_arg, translate_o_options
from b2cryptfs.cli.mountprep import (
    MountError,
    check_fuse_device,
    check_mountpoint,
    open_store,
    prepare_cache_dir,
)
from b2cryptfs.cli.storeopen import StoreOpening
from b2cryptfs.errors import B2CryptfsError, UsageError
from b2cryptfs.store.base import Store
from b2cryptfs.vfs import collector
from b2cryptfs.vfs.config import MountConfig

if TYPE_CHECKING:
    from b2cryptfs.bucket.pairs import DirListing, PairStore

log = logging.getLogger(__name__)

# --- argument parsing ----------------------------------------------------------------------


def _uid(text: str) -> int:
    import pwd

    try:
        return int(text) if text.isdigit() else pwd.getpwnam(text).pw_uid
    except KeyError:
        raise argparse.ArgumentTypeError(f"no such user: {text!r}") from None


def _gid(text: str) -> int:
    import grp

    try:
        return int(text) if text.isdigit() else grp.getgrnam(text).gr_gid
    except KeyError:
        raise argparse.ArgumentTypeError(f"no such group: {text!r}") from None


def _umask(text: str) -> int:
    try:
        value = int(text, 8)
    except ValueError:
        value = -1
    if not 0 <= value <= 0o777:
        raise argparse.ArgumentTypeError(f"not an octal umask: {text!r} (examples: 022, 077)")
    return value


def _kib(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"not a number of KiB: {text!r} (examples: 0, 1024)")
    return int(text)


def add_mount_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("store", metavar="STORE", help="b2://BUCKET[/PREFIX] or a directory")
    parser.add_argument("mountpoint", metavar="MOUNTPOINT", help="an existing directory")
    add_key_options(parser, io_timeout=False)
    g = parser.add_argument_group("mount")
    g.add_argument(
        "-o",
        dest="o",
        metavar="OPT[,OPT…]",
        action="append",
        default=[],
        help="options in mount(8) form: private_key=FILE,passphrase_file=FILE,ro,… "
        "(see mount.b2cryptfs(8))",
    )
    g.add_argument(
        "-f",
        "--foreground",
        action="store_true",
        help="do not daemonize; mounts while a B2 store still opens (requests wait for it)",
    )
    g.add_argument("--debug", action="store_true", help="log debugging details")
    g.add_argument(
        "--log-file",
        metavar="FILE",
        help="log here (default: stderr in the foreground, "
        "else syslog, else mount.log in the cache directory)",
    )
    g.add_argument("--pid-file", metavar="FILE", help="write the daemon's process id here")
    g.add_argument("--read-only", action="store_true", help="refuse all changes")
    g.add_argument("--allow-other", action="store_true", help="let other users access the mount")
    g.add_argument(
        "--hard-delete",
        action="store_true",
        help="delete all versions of removed files (default: hide them; B2 keeps versions)",
    )
    g.add_argument(
        "--sync-upload",
        action="store_true",
        help="close() waits until the file is uploaded and reports failure (implies --sync-close)",
    )
    g.add_argument(
        "--sync-close",
        action="store_true",
        help="close() waits until the sealed file is on the local disk (default: within "
        "about a second after; fsync() always waits for the upload)",
    )
    g.add_argument(
        "--auto-unmount", action="store_true", help="unmount if the daemon dies (FUSE option)"
    )
    g.add_argument(
        "--uid",
        type=_uid,
        metavar="USER",
        help="owner shown for files without stored ownership (default: the mounting user)",
    )
    g.add_argument(
        "--gid",
        type=_gid,
        metavar="GROUP",
        help="group shown for files without stored ownership (default: the mounting group)",
    )
    g.add_argument(
        "--umask",
        type=_umask,
        metavar="OCTAL",
        help="mode bits cleared for files and directories without stored modes "
        "(default: files 0644, directories 0755)",
    )
    g.add_argument(
        "--read-ahead",
        type=_kib,
        default=MountConfig.read_ahead_kib,
        metavar="KIB",
        help="the kernel's read-ahead for the mount, also the largest read request it sends "
        f"(root only; 0: the kernel's own; default: {MountConfig.read_ahead_kib})",
    )
    c = parser.add_argument_group("cache")
    c.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="cache and outbox root (default: $XDG_CACHE_HOME/b2cryptfs, "
        f"{ROOT_CACHE_ROOT} for root, else ~/.cache/b2cryptfs)",
    )
    c.add_argument(
        "--cache-size",
        type=size_arg,
        default=MountConfig.cache_size,
        metavar="SIZE",
        help="bytes of ciphertext kept in the read cache: 512M, 2G … (default: 1G)",
    )
    c.add_argument(
        "--dir-cache-time",
        type=duration_arg,
        default=MountConfig.dir_cache_time,
        metavar="TIME",
        help="how long a directory listing is trusted: 30s, 5m … (default: 30s)",
    )
    c.add_argument(
        "--io-timeout",
        type=duration_arg,
        default=MountConfig.io_timeout,
        metavar="TIME",
        help="how long a read or open waits for the store before failing with EIO (default: 2m)",
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "mount",
        help="mount a store as a directory",
        description="Mount a store; files are encrypted on close and uploaded as "
        "PATH.enc + PATH.key.enc pairs.",
        allow_abbrev=False,
    )
    add_mount_arguments(parser)
    parser.set_defaults(func=handle)


class _OneLineParser(argparse.ArgumentParser):
    """Reports a bad option as one line (mount(8) and fstab users see nothing else)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = _OneLineParser(prog=prog, description="Mount a b2cryptfs store.", allow_abbrev=False)
    add_mount_arguments(parser)
    return parser


def apply_o_options(args: argparse.Namespace, prog: str = "b2cryptfs mount") -> None:
    """Fold ``-o`` options into ``args`` as if given as long options (these win)."""
    tokens = translate_o_options(args.o)
    if tokens:
        _parser(prog).parse_args([args.store, args.mountpoint, *tokens], namespace=args)
    args.o = []


# --- the mount(8) helper -------------------------------------------------------------------


def helper_main(argv: list[str]) -> int:
    """``mount.b2cryptfs STORE MNT [-sfnv] [-o OPTS]``, as mount(8) and mount.fuse3 run it.

    ``argv`` excludes the program name. mount(8)'s flags: ``-f`` fakes the mount (does
    nothing), ``-s``/``-n``/``-v`` are accepted and ignored, ``-N``/``-t`` and their values
    are dropped. The helper always daemonizes: mount(8) waits for it to exit.
    """
    prog = "mount.b2cryptfs"
    rest: list[str] = []
    fake = False
    it = iter(argv)
    for token in it:
        if token in ("-N", "-t", "--namespace", "--type"):
            next(it, None)
        elif re.fullmatch(r"-[sfnvrw]+", token):
            fake = fake or "f" in token
            if "r" in token:  # mount -r: read-only
                rest.append("--read-only")
        else:
            rest.append(token)
    try:
        args = _parser(prog).parse_args(rest)
    except UsageError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    if fake:
        return 0
    args.foreground = False
    return handle(args, prog=prog)


# --- preparation (all before forking) ------------------------------------------------------


@dataclass
class Prepared:
    config: MountConfig
    log_fd: int | None
    pid_file: str | None
    store_cache: str  # this store's directory inside the cache root
    # The store, the pair layer and the root's listing (with when it was made, in
    # time.monotonic()); blocks until the store is open and raises what opening raised.
    opened: Callable[[], OpenedMount]
    # True: the store still opens (an early mount); False: it is open and checked already.
    opening: bool = False


OpenedMount = tuple[Store, "PairStore", "tuple[DirListing, float] | None"]


def _planned_url(spec: str) -> str | None:
    """The URL a ``b2://`` store will have once open (B2Store's), None for other stores."""
    if not spec.startswith("b2://"):
        return None
    from b2cryptfs.store import split_b2_url

    bucket, prefix = split_b2_url(spec)
    return f"b2://{bucket}/{prefix}" if prefix else f"b2://{bucket}"


def prepare(args: argparse.Namespace, *, early: bool = False) -> Prepared:
    """Check everything the user can get wrong; with ``early`` a B2 store may still be
    opening when this returns (``Prepared.opening``): the mount is then made at once and
    ``opened()`` run while it is live (its errors end the mount)."""
    mountpoint = check_mountpoint(args.mountpoint)
    check_fuse_device()

    # The store opens (round trips) while the keys load (CPU); a key error is still reported
    # first: a wrong passphrase is the most common mistake and needs no network.
    opening = StoreOpening(lambda: open_store(args), b2=args.store.startswith("b2://"))
    from b2cryptfs.keys import rsacheck

    rsacheck.defer_checks()  # at the key's first decryption, after the root is listed
    recipients, identities = load_keys_from_args(
        args, need_read=args.read_only, need_write=not args.read_only
    )
    from b2cryptfs.keys.passphrase import forget_environment_passphrase

    forget_environment_passphrase()  # the daemon is forked from here and lives long
    # The FUSE layer is imported while the store's requests are out (its own imports done):
    # imports take turns on one interpreter, round trips do not need it.
    opening.wait_imported()
    with contextlib.suppress(ImportError):  # reported by _serve, after the store's errors
        import b2cryptfs.fs.mount  # noqa: F401

    store_url = _planned_url(args.store) if early else None
    if store_url is None:
        # Credentials, bucket, the right to list it and the root's name key, before forking.
        store_url = opening.result().store.url

    cache_root = os.path.abspath(args.cache_dir or default_cache_root())
    store_cache = prepare_cache_dir(cache_root, store_url)

    log_fd = None
    if args.log_file:
        try:
            log_fd = daemon.open_log_file(os.path.abspath(args.log_file))
        except OSError as exc:
            raise UsageError(f"cannot open log file {args.log_file}: {exc.strerror}") from None

    config = MountConfig(
        store_url=store_url,
        mountpoint=mountpoint,
        recipients=list(recipients),
        identities=list(identities),
        format=args.format,
        openssl_md=args.openssl_md,
        cache_dir=cache_root,  # the cache layer adds the per-store directory
        cache_size=args.cache_size,
        dir_cache_time=args.dir_cache_time,
        io_timeout=args.io_timeout,
        read_ahead_kib=args.read_ahead,
        read_only=args.read_only,
        allow_other=args.allow_other,
        hard_delete=args.hard_delete,
        sync_upload=args.sync_upload,
        sync_close=args.sync_close,
        debug=args.debug,
        b2_realm=args.b2_realm,
        # What /proc/mounts and df show: the store as the user named it, made absolute.
        fsname=args.store if "://" in args.store else os.path.abspath(args.store),
    )
    config.fuse_options = ["auto_unmount"] if args.auto_unmount else []
    config.uid, config.gid, config.umask = args.uid, args.gid, args.umask
    config.encrypt_names = bool(getattr(args, "encrypt_names", False))

    def opened() -> OpenedMount:
        found = opening.result()
        # The pair layer as the daemon will build it: a name key the keys cannot open (or a
        # write-only mount of a store with encrypted names) is refused.
        from b2cryptfs.bucket.factory import make_pairs

        pairs = make_pairs(config, found.store, found=found.name_root)
        try:
            root = pairs.root_listing(found.root)
        except B2CryptfsError:
            return found.store, pairs, None  # the mount lists it again, and reports there
        return found.store, pairs, (root, found.root_listed_at)

    pid_file = os.path.abspath(args.pid_file) if args.pid_file else None
    prepared = Prepared(config, log_fd, pid_file, store_cache, opened)
    if opening.done():
        # Open already (or not a B2 store): checked now, before the mount or the fork.
        result = opened()
        prepared.opened = lambda: result
    else:
        prepared.opening = True
    return prepared


def describe(config: MountConfig) -> str:
    """A log line about the mount; names no secret (no key material, no passphrase)."""
    mode = "read-only" if config.read_only else "read-write"
    if not config.identities:
        mode = "write-only (no private key: reading existing files fails with EACCES)"
    return (
        f"mounting {config.fsname or config.store_url} on {config.mountpoint}: {mode}, "
        f"format {config.format}, {len(config.recipients)} recipient(s), "
        f"{len(config.identities)} private key(s), cache root {config.cache_dir}"
    )


# --- running -------------------------------------------------------------------------------


def _serve(prepared: Prepared) -> Callable[[Callable[[], None]], None]:
    # Imported before forking so that a missing pyfuse3 is reported in the foreground.
    from b2cryptfs.fs.mount import run_mount

    def serve(ready: Callable[[], None]) -> None:
        # Under systemd (Type=notify), STATUS= lines tell how the uploads fare.
        notify = daemon.sd_notify if os.environ.get("NOTIFY_SOCKET") else None
        if prepared.opening:
            # Mounted at once; requests wait until the store is open, ready() follows then.
            # The mount's line comes with it: a store that fails shows its error alone.
            def described_ready() -> None:
                log.info("%s", describe(prepared.config))
                ready()

            run_mount(prepared.config, None, described_ready, notify, opening=prepared.opened)
        else:
            log.info("%s", describe(prepared.config))
            store, pairs, root = prepared.opened()
            run_mount(prepared.config, store, ready, notify, pairs=pairs, root=root)
        log.info("unmounted %s", prepared.config.mountpoint)
        # b2sdk is imported only for what b2wire does not do (store/b2sdkpart.py).
        log.debug("b2sdk was %s", "loaded" if "b2sdk" in sys.modules else "never loaded")

    return serve


def _run_foreground(prepared: Prepared, prog: str) -> int:
    serve = _serve(prepared)
    config = prepared.config
    if prepared.pid_file:
        daemon._write_pid_file(prepared.pid_file)

    def ready() -> None:
        log.info("mounted %s on %s", config.fsname or config.store_url, config.mountpoint)
        daemon.sd_notify("READY=1")

    try:
        serve(ready)
    except KeyboardInterrupt:
        return 130
    except B2CryptfsError:
        raise
    except Exception as exc:
        # pyfuse3/libfuse failures (the mount itself): one line, details with --debug.
        log.debug("mount failed", exc_info=True)
        print(f"{prog}: error: mount failed: {daemon.describe_exception(exc)}", file=sys.stderr)
        return MountError.exit_code
    finally:
        if prepared.pid_file:
            with contextlib.suppress(OSError):
                os.unlink(prepared.pid_file)
    return 0


def _setup_daemon_logging(prepared: Prepared, debug: bool) -> Callable[[], None]:
    def setup() -> None:
        if prepared.log_fd is not None:
            stream = daemon.log_to_file(prepared.log_fd, debug)
        elif daemon.syslog_available():
            daemon.log_to_syslog(debug)
            return
        else:
            # No syslog (containers, early boot): keep the log next to the cache.
            path = os.path.join(prepared.store_cache, "mount.log")
            stream = daemon.log_to_file(daemon.open_log_file(path), debug)
        # A hard crash (in libfuse, say) still leaves its Python stack in the log.
        faulthandler.enable(stream)

    return setup


def handle(args: argparse.Namespace, prog: str = "b2cryptfs") -> int:
    """The ``mount`` subcommand; returns the exit status."""
    debug = False
    # Start-up makes mostly objects that live as long as the daemon: only young collector
    # passes until the mount is ready (fs.mount ends the pause; so does any return from here).
    collector.pause_for_startup()
    try:
        apply_o_options(args, prog=prog if prog != "b2cryptfs" else "b2cryptfs mount")
        debug = args.debug
        daemon.log_to_stderr(debug)
        # In the foreground the mount is made while a B2 store still opens; a daemon is
        # forked only once the store is open (no thread may run across the fork).
        prepared = prepare(args, early=args.foreground)
        if args.foreground:
            if prepared.log_fd is not None:
                daemon.log_to_file(prepared.log_fd, debug)
            return _run_foreground(prepared, prog)
        serve = _serve(prepared)
        return daemon.run_daemonized(
            serve,
            setup_logging=_setup_daemon_logging(prepared, debug),
            pid_file=prepared.pid_file,
            prog=prog,
            failure_code=MountError.exit_code,
        )
    except B2CryptfsError as exc:
        _print_error(prog, str(exc), debug)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except ImportError as exc:
        _print_error(prog, f"cannot load the FUSE layer: {exc}", debug)
        return 1
    except OSError as exc:
        # An unexpected system error is still one line (with a traceback only for --debug).
        _print_error(prog, f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), debug)
        return 1
    finally:
        collector.end_startup_pause()


def _print_error(prog: str, message: str, debug: bool) -> None:
    if debug:
        log.debug("details", exc_info=True)
    print(f"{prog}: error: {message}", file=sys.stderr)
