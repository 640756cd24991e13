"""Options and loading steps shared by the subcommands."""

from __future__ import annotations

import argparse
import logging
import os
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from b2cryptfs.cli.mountopts import duration_arg
from b2cryptfs.errors import UsageError
from b2cryptfs.formats import FORMATS
from b2cryptfs.keys.types import Identity, Recipient
from b2cryptfs.store.base import Store

if TYPE_CHECKING:
    from b2cryptfs.bucket.pairs import PairStore

log = logging.getLogger(__name__)

ENV_PRIVATE_KEY = "B2CRYPTFS_PRIVATE_KEY"
ENV_PUBLIC_KEY = "B2CRYPTFS_PUBLIC_KEY"
CREDENTIAL_VARS = ("B2_APPLICATION_KEY_ID", "B2_APPLICATION_KEY", "B2_ENVIRONMENT")


def add_store_options(parser: argparse.ArgumentParser, *, io_timeout: bool = True) -> None:
    """The store options every command shares; ``mount`` has its own --io-timeout."""
    if io_timeout:
        parser.add_argument(
            "--io-timeout",
            type=duration_arg,
            default=None,
            metavar="TIME",
            help="how long a transfer retries transient failures (resets, 5xx, 429) before "
            "the command fails: 30s, 5m … (default: 2m)",
        )
    parser.add_argument(
        "--b2-realm",
        metavar="URL",
        help="B2 realm or API URL (default: $B2_ENVIRONMENT, else production)",
    )
    b = parser.add_argument_group("B2 credentials (default: the environment, else `b2`'s account)")
    b.add_argument(
        "--b2-credentials",
        metavar="FILE",
        help="file of KEY=VALUE lines: B2_APPLICATION_KEY_ID, B2_APPLICATION_KEY, "
        "optionally B2_ENVIRONMENT",
    )
    b.add_argument(
        "--b2-account-info",
        metavar="FILE",
        help="the b2 command-line tool's account database (from `b2 account authorize`)",
    )


def add_key_options(parser: argparse.ArgumentParser, *, io_timeout: bool = True) -> None:
    g = parser.add_argument_group("keys")
    g.add_argument(
        "--private-key",
        metavar="FILE",
        action="append",
        default=[],
        help=f"private key to decrypt with (repeatable; default ${ENV_PRIVATE_KEY})",
    )
    g.add_argument(
        "--public-key",
        metavar="KEY",
        action="append",
        default=[],
        help="recipient to encrypt to: a public key file, an 'age1…' or 'ssh-rsa …' string "
        f"(repeatable; default ${ENV_PUBLIC_KEY}, else the private keys' public halves)",
    )
    g.add_argument(
        "--passphrase-file",
        metavar="FILE",
        help="read the private key's passphrase from FILE "
        "(else $B2CRYPTFS_PASSPHRASE, else a prompt on the terminal)",
    )
    g.add_argument(
        "--passphrase-command",
        metavar="CMD",
        help="run CMD with the shell and take the first line it prints as the passphrase "
        "(pass show KEY, secret-tool lookup …, systemd-ask-password)",
    )
    g.add_argument(
        "--format",
        choices=FORMATS,
        default="age",
        help="format of newly written files (default: age)",
    )
    g.add_argument(
        "--openssl-md",
        choices=("auto", "sha256", "md5"),
        default="auto",
        help="openssl format key derivation digest (auto: SHA-256 then MD5 when reading; "
        "SHA-256 when writing)",
    )
    g.add_argument(
        "--encrypt-names",
        action="store_true",
        help="encrypt file and directory names: creates the store's name key "
        "(.b2cryptfs-names.age) if there is none; a store that has one is always used with "
        "encrypted names, and then needs the private key",
    )
    add_store_options(parser, io_timeout=io_timeout)


def _private_key_paths(args: argparse.Namespace) -> list[str]:
    paths = list(getattr(args, "private_key", []) or [])
    if not paths and os.environ.get(ENV_PRIVATE_KEY):
        paths = [os.environ[ENV_PRIVATE_KEY]]
    return paths


def _public_key_specs(args: argparse.Namespace) -> list[str]:
    specs = list(getattr(args, "public_key", []) or [])
    if not specs and os.environ.get(ENV_PUBLIC_KEY):
        specs = [os.environ[ENV_PUBLIC_KEY]]
    return specs


def load_identities_from_args(args: argparse.Namespace) -> list[Identity]:
    from b2cryptfs.formats.age.protected import decrypt_protected
    from b2cryptfs.keys.loader import load_identities
    from b2cryptfs.keys.passphrase import passphrase_source

    passphrase_file = getattr(args, "passphrase_file", None)
    command = getattr(args, "passphrase_command", None)
    if passphrase_file is not None and command is not None:
        raise UsageError("give --passphrase-file or --passphrase-command, not both")
    source = passphrase_source(passphrase_file, command=command)
    identities: list[Identity] = []
    for path in _private_key_paths(args):
        identities.extend(
            load_identities(path, lambda path=path: source(path), unprotect=decrypt_protected)
        )
    return identities


def load_recipients_from_args(
    args: argparse.Namespace, identities: Sequence[Identity] = ()
) -> list[Recipient]:
    from b2cryptfs.keys.loader import load_recipients

    recipients: list[Recipient] = []
    for spec in _public_key_specs(args):
        recipients.extend(load_recipients(spec))
    if not recipients:
        recipients = [i.recipient() for i in identities]
    return recipients


def load_keys_from_args(
    args: argparse.Namespace, *, need_read: bool = False, need_write: bool = False
) -> tuple[list[Recipient], list[Identity]]:
    """(recipients, identities); private keys are loaded only when given."""
    identities = load_identities_from_args(args)
    if need_read and not identities:
        raise UsageError(f"this needs a private key: give --private-key or ${ENV_PRIVATE_KEY}")
    recipients = load_recipients_from_args(args, identities) if need_write or not need_read else []
    if need_write and not recipients:
        raise UsageError(
            f"no key to encrypt to: give --public-key (or --private-key) or ${ENV_PUBLIC_KEY}"
        )
    if getattr(args, "format", "age") == "openssl" and need_write:
        from b2cryptfs.keys.types import RsaRecipient

        if len(recipients) != 1 or not isinstance(recipients[0], RsaRecipient):
            raise UsageError("--format openssl needs exactly one RSA public key")
    return recipients, identities


def open_pairs_from_args(
    args: argparse.Namespace,
    store: Store,
    *,
    recipients: Sequence[Recipient] = (),
    identities: Sequence[Identity] = (),
    path: str = "",
    encrypt_names: bool = False,
) -> PairStore:
    """A PairStore with the session's format options, honouring the store's name key."""
    from b2cryptfs.bucket.namekey import open_pair_store

    return open_pair_store(
        store,
        recipients=recipients,
        identities=identities,
        format=getattr(args, "format", "age"),
        openssl_md=getattr(args, "openssl_md", "auto"),
        encrypt_names=encrypt_names,
        path=path,
    )


def load_credentials_file(path: str) -> dict[str, str]:
    """KEY=VALUE lines (``export`` and quotes allowed, # comments) for the B2 account."""
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except OSError as exc:
        raise UsageError(f"cannot read B2 credentials file {path}: {exc.strerror}") from None
    values: dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].strip()
        key, eq, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not eq or key not in CREDENTIAL_VARS:
            raise UsageError(
                f"{path}, line {number}: expected one of {', '.join(CREDENTIAL_VARS)}=VALUE"
            )
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key] = value
    missing = [k for k in CREDENTIAL_VARS[:2] if not values.get(k)]
    if missing:
        raise UsageError(f"B2 credentials file {path} lacks {' and '.join(missing)}")
    return values


def open_store_from_args(args: argparse.Namespace, url: str, **b2_options: Any) -> Store:
    """Open ``url``, with the B2 account from --b2-credentials/--b2-account-info if given.

    A credentials file's key goes straight to the store object, never into the environment
    (which child processes such as fusermount3 inherit).
    """
    from b2cryptfs.store import open_store

    account_info = getattr(args, "b2_account_info", None)
    credentials = getattr(args, "b2_credentials", None)
    if account_info:
        # b2sdk's SqliteAccountInfo reads this variable; a path, not a secret.
        os.environ["B2_ACCOUNT_INFO"] = os.path.abspath(account_info)
    realm = getattr(args, "b2_realm", None)
    timeout = getattr(args, "io_timeout", None)
    if timeout and "retry_time" not in b2_options:
        b2_options["retry_time"] = timeout
    if not credentials:
        return open_store(url, realm=realm, **b2_options)
    if not url.startswith("b2://"):
        raise UsageError("--b2-credentials only applies to b2:// stores")
    try:
        mode = os.stat(credentials).st_mode
    except OSError:
        mode = 0
    if mode & 0o077:
        log.warning("B2 credentials file %s is readable by others; chmod 600 it", credentials)
    creds = load_credentials_file(credentials)
    return open_store(
        url,
        realm=realm or creds.get("B2_ENVIRONMENT"),
        key_id=creds["B2_APPLICATION_KEY_ID"],
        key=creds["B2_APPLICATION_KEY"],
        **b2_options,
    )


def split_location(spec: str) -> tuple[str, str]:
    """Split ``STORE/PATH`` into (store url, path inside the store).

    ``b2://BUCKET/a/b`` → (``b2://BUCKET``, ``a/b``). A local spec names a directory (the
    store itself) or a file inside one: (directory, leaf); below the root of a tree with
    encrypted names (whose plaintext directories do not exist on disk): (root, path).
    """
    if spec.startswith("b2://"):
        rest = spec[len("b2://") :]
        bucket, _, path = rest.partition("/")
        if not bucket:
            raise UsageError(f"no bucket in {spec!r}")
        return f"b2://{bucket}", path
    if re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", spec) and not spec.startswith("file://"):
        raise UsageError(f"unknown store scheme in {spec!r} (use b2://, file:// or a directory)")
    local = spec[len("file://") :] if spec.startswith("file://") else spec
    if os.path.isdir(local):
        return local, ""
    parent, leaf = os.path.split(local.rstrip("/"))
    parent = parent or "."
    if not os.path.isdir(parent):
        # With encrypted names no plaintext directory exists on disk: a path below the root
        # of a name-encrypted tree is (that root, the rest).
        from b2cryptfs.bucket.pairs import NAME_KEY_OBJECT

        head, rest = parent, [leaf]
        while not os.path.isdir(head):
            up, segment = os.path.split(head)
            if up == head:
                break
            rest.insert(0, segment)
            head = up or "."
        if os.path.isfile(os.path.join(head, NAME_KEY_OBJECT)):
            return head, "/".join(rest)
    return parent, leaf
