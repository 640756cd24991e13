"""``b2cryptfs`` command line: subcommand dispatch, and the mount helper entry point."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from b2cryptfs import __version__
from b2cryptfs.errors import B2CryptfsError

# Command modules, each with register(subparsers); imported lazily by name so that a slow or
# optional import (pyfuse3) does not burden the others.
COMMANDS = (
    "keygen", "passwd", "put", "get", "cat", "ls", "mount", "status", "umount", "rotate", "fsck",
)  # fmt: skip
_MODULES = {
    "keygen": "b2cryptfs.cli.keygen",
    "passwd": "b2cryptfs.cli.passwd",
    "put": "b2cryptfs.cli.transfer",
    "get": "b2cryptfs.cli.transfer",
    "cat": "b2cryptfs.cli.transfer",
    "ls": "b2cryptfs.cli.listing",
    "mount": "b2cryptfs.cli.mount",
    "status": "b2cryptfs.cli.status",
    "umount": "b2cryptfs.cli.status",
    "rotate": "b2cryptfs.cli.rotate",
    "fsck": "b2cryptfs.cli.fsck",
}


class Parser(argparse.ArgumentParser):
    """No abbreviations (``--passphrase`` must never be taken for ``--passphrase-file``), and
    a usage error in one line."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole parser; with ``only`` (a command name) just that command's, which spares a
    mount the import of every other command's module."""
    import importlib

    parser = Parser(
        prog="b2cryptfs",
        description="Client-side encrypted Backblaze B2 storage: a FUSE mount and tools.",
    )
    parser.add_argument("--version", action="version", version=f"b2cryptfs {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    registered: set[str] = set()
    for name in (only,) if only in _MODULES else COMMANDS:
        module = _MODULES[name]
        if module in registered:
            continue
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name == module:
                continue  # command not built in this version
            raise
        mod.register(sub)
        registered.add(module)
    return parser


def _looks_like_mount_helper(argv: Sequence[str]) -> bool:
    """mount.fuse3 runs ``b2cryptfs STORE MNT -o OPTS``: no subcommand first, and a store
    (a URL, a path or an existing directory) where the subcommand would be."""
    if len(argv) < 2 or argv[0] in COMMANDS or argv[0].startswith("-"):
        return False
    return "/" in argv[0] or os.path.isdir(argv[0])


def _unknown_command(argv: Sequence[str]) -> str | None:
    if not argv or argv[0] in COMMANDS or argv[0].startswith("-"):
        return None
    import difflib

    close = difflib.get_close_matches(argv[0], COMMANDS, n=1)
    hint = f"did you mean '{close[0]}'?" if close else f"commands: {', '.join(COMMANDS)}"
    return f"unknown command '{argv[0]}' ({hint})"


# Secrets are never taken on the command line (other users see it in the process list).
_SECRET_OPTIONS = ("--passphrase", "--password", "--pass")
_SECRET_MOUNT_OPTIONS = ("passphrase", "password", "pass")
_SECRET_ADVICE = "use --passphrase-file, --passphrase-command or $B2CRYPTFS_PASSPHRASE"


def refuse_secret_options(argv: Sequence[str]) -> str | None:
    """A one-line refusal of a passphrase given as an option; never repeats its value."""
    after_o = False
    for token in argv:
        if token == "--":
            break
        name = token.partition("=")[0]
        if name in _SECRET_OPTIONS:
            return f"{name} is not accepted: {_SECRET_ADVICE}"
        if after_o or token.startswith("-o") and len(token) > 2:
            opts = token[2:] if not after_o else token
            for opt in opts.split(","):
                if opt.partition("=")[0].strip() in _SECRET_MOUNT_OPTIONS:
                    return (
                        f"mount option {opt.partition('=')[0].strip()} is not accepted: "
                        "use passphrase_file=, passphrase_cmd= or $B2CRYPTFS_PASSPHRASE"
                    )
        after_o = token == "-o"
    return None


def _complete(parser: argparse.ArgumentParser) -> None:
    """Shell completion (the optional argcomplete package): answers and exits when the shell
    asks (``eval "$(register-python-argcomplete b2cryptfs)"``), else does nothing."""
    if "_ARGCOMPLETE" not in os.environ:
        return
    try:
        import argcomplete
    except ImportError:
        return
    argcomplete.autocomplete(parser)


def run(argv: Sequence[str]) -> int:
    # Completion needs every command; otherwise a command given is the only one parsed.
    only = argv[0] if argv and "_ARGCOMPLETE" not in os.environ else None
    parser = build_parser(only)
    _complete(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if getattr(args, "debug", False) else logging.WARNING,
        format="b2cryptfs: %(levelname)s: %(message)s",
    )
    return int(args.func(args) or 0)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    refused = refuse_secret_options(argv)
    if refused:
        print(f"b2cryptfs: error: {refused}", file=sys.stderr)
        return 2
    if _looks_like_mount_helper(argv):
        return mount_helper_main(argv)
    unknown = _unknown_command(argv)
    if unknown:
        print(f"b2cryptfs: error: {unknown}", file=sys.stderr)
        return 2
    try:
        return run(argv)
    except B2CryptfsError as exc:
        print(f"b2cryptfs: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:
        return _reader_left()
    except OSError as exc:
        # Local files: one line, whatever the errno (ENOSPC, EACCES, ENOTDIR…).
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"b2cryptfs: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("b2cryptfs: interrupted", file=sys.stderr)
        return 130


def _reader_left() -> int:
    # `b2cryptfs cat … | head`: the reader left; not an error worth a traceback.
    try:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115
    except OSError:
        pass
    return 0


def mount_helper_main(argv: Sequence[str] | None = None) -> int:
    """Entry point as ``mount.b2cryptfs STORE MNT -o OPTS`` (and via mount.fuse3)."""
    from b2cryptfs.cli.mount import helper_main

    argv = list(sys.argv[1:] if argv is None else argv)
    refused = refuse_secret_options(argv)
    if refused:
        print(f"mount.b2cryptfs: error: {refused}", file=sys.stderr)
        return 2
    return helper_main(argv)
