"""Mount option syntax: ``-o opt[,opt=value]`` lists, sizes and durations.

``-o`` options are turned into the equivalent long options and parsed by the same argparse
parser as the command line, so both spellings share one set of checks and messages.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterable

from b2cryptfs.errors import UsageError

# -o name -> (long option, takes a value). Both ``ro`` and ``read_only`` are accepted.
VALUE_OPTIONS = {
    "private_key": "--private-key",
    "public_key": "--public-key",
    "passphrase_file": "--passphrase-file",
    "passphrase_cmd": "--passphrase-command",
    "passphrase_command": "--passphrase-command",
    "uid": "--uid",
    "gid": "--gid",
    "umask": "--umask",
    "format": "--format",
    "openssl_md": "--openssl-md",
    "cache_dir": "--cache-dir",
    "cache_size": "--cache-size",
    "dir_cache_time": "--dir-cache-time",
    "io_timeout": "--io-timeout",
    "read_ahead": "--read-ahead",
    "log_file": "--log-file",
    "pid_file": "--pid-file",
    "b2_realm": "--b2-realm",
    "b2_account_info": "--b2-account-info",
    "b2_credentials": "--b2-credentials",
}
FLAG_OPTIONS = {
    "ro": "--read-only",
    "read_only": "--read-only",
    "allow_other": "--allow-other",
    "hard_delete": "--hard-delete",
    "sync_upload": "--sync-upload",
    "sync_close": "--sync-close",
    "debug": "--debug",
    "auto_unmount": "--auto-unmount",
    "encrypt_names": "--encrypt-names",
}
# Generic mount(8)/fstab options that mean nothing to this filesystem (mount.fuse3 itself
# adds dev and suid). They are accepted and ignored so that ordinary fstab lines work.
IGNORED_OPTIONS = frozenset(
    """rw defaults auto noauto nofail _netdev user users nouser owner group dev nodev suid
    nosuid exec noexec atime noatime relatime norelatime strictatime nostrictatime diratime
    nodiratime lazytime nolazytime sync async dirsync mand nomand iversion noiversion silent
    loud bg fg""".split()
)
IGNORED_PREFIXES = ("x-", "X-", "comment=")


def translate_o_options(values: Iterable[str]) -> list[str]:
    """``["private_key=k.pem,ro"]`` -> ``["--private-key", "k.pem", "--read-only"]``."""
    argv: list[str] = []
    for value in values:
        for opt in value.split(","):
            opt = opt.strip()
            if not opt or opt in IGNORED_OPTIONS or opt.startswith(IGNORED_PREFIXES):
                continue
            name, eq, arg = opt.partition("=")
            name = name.strip().replace("-", "_")
            if name in VALUE_OPTIONS:
                if not eq or not arg:
                    raise UsageError(f"mount option {name} needs a value ({name}=…)")
                argv += [VALUE_OPTIONS[name], arg]
            elif name in FLAG_OPTIONS:
                if eq:
                    raise UsageError(f"mount option {name} takes no value")
                argv.append(FLAG_OPTIONS[name])
            else:
                raise UsageError(f"unknown mount option {opt.split('=')[0]!r}")
    return argv


_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Bytes from ``1073741824``, ``512M``, ``2G``, ``1.5GiB`` (binary units)."""
    m = _SIZE_RE.match(text)
    if not m:
        raise ValueError(f"not a size: {text!r} (examples: 512M, 2G)")
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2).upper()])


_DURATION_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "ms": 0.001}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|[smhd]?)\s*$", re.IGNORECASE)


def parse_duration(text: str) -> float:
    """Seconds from ``30``, ``30s``, ``5m``, ``1h``, ``500ms``."""
    m = _DURATION_RE.match(text)
    if not m:
        raise ValueError(f"not a duration: {text!r} (examples: 30s, 5m)")
    return float(m.group(1)) * _DURATION_UNITS[m.group(2).lower()]


def size_arg(text: str) -> int:
    """parse_size as an argparse type (a bad value is a usage error)."""
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def duration_arg(text: str) -> float:
    """parse_duration as an argparse type."""
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
