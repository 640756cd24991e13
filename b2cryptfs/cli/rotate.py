"""``rotate``: re-wrap every key object for new recipients; content objects stay as they are."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import TYPE_CHECKING

from b2cryptfs.cli.common import (
    add_key_options,
    load_identities_from_args,
    load_recipients_from_args,
    open_pairs_from_args,
    open_store_from_args,
    split_location,
)
from b2cryptfs.errors import B2CryptfsError, UsageError
from b2cryptfs.formats import detect_format
from b2cryptfs.keys.types import Recipient, RsaRecipient

log = logging.getLogger(__name__)


if TYPE_CHECKING:  # the bucket layer is imported by the commands, not by --help
    from b2cryptfs.bucket.pairs import FileEntry, PairStore


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "rotate",
        help="re-wrap file keys for new public keys (no content is re-uploaded)",
        description="Unwrap each file's key with --private-key and wrap it again for the "
        "--public-key recipients, uploading only the small key objects. Use it to replace a "
        "compromised key pair or to add a recovery recipient.",
    )
    p.add_argument("location", metavar="STORE[/PREFIX]")
    p.add_argument(
        "--purge-old",
        action="store_true",
        help="delete older versions of each key object once the new one is up "
        "(they are still wrapped for the old key)",
    )
    p.add_argument("-n", "--dry-run", action="store_true", help="only say what would change")
    add_key_options(p)
    p.set_defaults(func=cmd_rotate)


def _recipients_for(fmt: str, recipients: list[Recipient]) -> list[Recipient]:
    if fmt == "age":
        return recipients
    rsa = [r for r in recipients if isinstance(r, RsaRecipient)]
    if len(rsa) != 1:
        raise UsageError("openssl-format files need exactly one RSA --public-key to rotate to")
    return rsa


def rotate_one(pairs: PairStore, entry: FileEntry, recipients: list[Recipient], purge: bool) -> str:
    """Re-wrap one file's key object; returns its format."""
    from b2cryptfs.bucket.pairs import INFO_FORMAT

    assert entry.key is not None
    # Prove the pair first, so that a mismatched newest key object is not made permanent.
    key_object = pairs.matching_key_object(entry)
    fmt = detect_format(key_object)
    codec = pairs.codec_for(fmt)
    new_key = codec.rewrap(key_object, pairs.identities, _recipients_for(fmt, recipients))
    pairs.rewrap_key(pairs.key_object_name(entry.path), new_key, {INFO_FORMAT: fmt}, purge=purge)
    return fmt


def _rotate_name_key(
    args: argparse.Namespace,
    pairs: PairStore,
    prefix: str,
    recipients: list[Recipient],
    failed: int,
) -> int:
    """Re-wrap the name key last, and only after a whole tree rotated cleanly: until then the
    old key must still open the names, or a second run with it could not list anything.
    Returns 1 if it failed, else 0."""
    from b2cryptfs.bucket.namekey import rewrap_name_key

    name = pairs.name_key_object_name()
    if name is None:
        return 0
    if prefix.strip("/") != pairs.name_root:
        print(
            f"note: the name key {name} was not re-wrapped: rotate the whole tree "
            f"({pairs.name_root or 'the store root'}) to do that"
        )
        return 0
    if args.dry_run:
        print(f"would re-wrap the name key {name}")
        return 0
    if failed:
        print(
            f"note: the name key {name} was not re-wrapped because files failed; run again "
            "with both the old and the new --private-key"
        )
        return 0
    try:
        rewrap_name_key(pairs, recipients, args.purge_old)
    except B2CryptfsError as exc:
        print(f"failed {name}: {exc}", file=sys.stderr)
        return 1
    print(f"re-wrapped the name key {name}")
    return 0


def cmd_rotate(args: argparse.Namespace) -> int:
    from b2cryptfs.bucket.walk import walk_files

    if not args.public_key:
        raise UsageError("give the new recipients with --public-key")
    identities = load_identities_from_args(args)
    if not identities:
        raise UsageError("give the current private key with --private-key")
    recipients = load_recipients_from_args(args)
    store_url, prefix = split_location(args.location)
    pairs = open_pairs_from_args(
        args,
        open_store_from_args(args, store_url),
        identities=identities,
        recipients=recipients,
        path=prefix,
    )
    done = failed = 0
    for entry in walk_files(pairs, prefix):
        if entry.key is None:
            print(f"skipped {entry.path}: no key object", file=sys.stderr)
            failed += 1
            continue
        if args.dry_run:
            print(f"would rotate {entry.path}")
            continue
        try:
            rotate_one(pairs, entry, recipients, args.purge_old)
        except B2CryptfsError as exc:
            print(f"failed {entry.path}: {exc}", file=sys.stderr)
            failed += 1
            continue
        done += 1
    print(f"rotated {done} file(s), {failed} failed")
    failed += _rotate_name_key(args, pairs, prefix, recipients, failed)
    if done and not args.purge_old:
        print(
            "note: older versions of the key objects (wrapped for the old keys) remain in the "
            "store; run again with --purge-old, or delete them, if the old key is compromised"
        )
    return 1 if failed else 0
