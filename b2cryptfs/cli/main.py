"""``b2cryptfs`` command line: subcommand dispatch, and the mount helper entry point."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from b2cryptfs import __version__
from b2cryptfs.errors import B2CryptfsError

# Command modules, each with register(subparsers); imported lazily by name so that a slow or
# optional import (pyfuse3) does not burden the others.
COMMANDS = ("keygen", "put", "get", "cat", "ls", "mount", "rotate", "fsck")
_MODULES = {
    "keygen": "b2cryptfs.cli.keygen",
    "put": "b2cryptfs.cli.transfer",
    "get": "b2cryptfs.cli.transfer",
    "cat": "b2cryptfs.cli.transfer",
    "ls": "b2cryptfs.cli.listing",
    "mount": "b2cryptfs.cli.mount",
    "rotate": "b2cryptfs.cli.rotate",
    "fsck": "b2cryptfs.cli.fsck",
}


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(
        prog="b2cryptfs",
        description="Client-side encrypted Backblaze B2 storage: a FUSE mount and tools.",
    )
    parser.add_argument("--version", action="version", version=f"b2cryptfs {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    registered: set[str] = set()
    for name in COMMANDS:
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
    """mount.fuse3 runs ``b2cryptfs STORE MNT -o OPTS``: no subcommand first."""
    return len(argv) >= 2 and argv[0] not in COMMANDS and not argv[0].startswith("-")


def run(argv: Sequence[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if getattr(args, "debug", False) else logging.WARNING,
        format="b2cryptfs: %(levelname)s: %(message)s",
    )
    return int(args.func(args) or 0)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if _looks_like_mount_helper(argv):
        return mount_helper_main(argv)
    try:
        return run(argv)
    except B2CryptfsError as exc:
        print(f"b2cryptfs: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("b2cryptfs: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `b2cryptfs cat … | head`: the reader left; not an error worth a traceback.
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        except OSError:
            pass
        return 0


def mount_helper_main(argv: Sequence[str] | None = None) -> int:
    """Entry point as ``mount.b2cryptfs STORE MNT -o OPTS`` (and via mount.fuse3)."""
    from b2cryptfs.cli.mount import helper_main

    return helper_main(list(sys.argv[1:] if argv is None else argv))
