"""``rotate``: re-wrap every key object for new recipients; content objects stay as they are.

Each re-wrapped key object carries the fingerprint of the recipient set in its file info, so
that a run cut short is resumed by running it again: key objects already wrapped for exactly
that set are skipped (an upload is atomic, so a key object either has the new set or not).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import logging
import sys
import time
from typing import TextIO

from b2cryptfs.bucket.layout import INFO_RECIPIENTS
from b2cryptfs.bucket.namekey import rewrap_name_key
from b2cryptfs.bucket.pairs import INFO_FORMAT, FileEntry, PairStore
from b2cryptfs.bucket.walk import walk_files
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
from b2cryptfs.keys.types import Recipient, RsaRecipient, recipients_fingerprint

log = logging.getLogger(__name__)

DEFAULT_JOBS = 8  # key objects are small: the time is request latency, not bandwidth
ROTATED, CURRENT = "rotated", "current"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "rotate",
        help="re-wrap file keys for new public keys (no content is re-uploaded)",
        description="Unwrap each file's key with --private-key and wrap it again for the "
        "new recipients, uploading only the small key objects. The new recipients are the "
        "--public-key keys (default $B2CRYPTFS_PUBLIC_KEY, else the private keys' public "
        "halves), plus --add-recipient, minus --remove-recipient. Use it to replace a "
        "compromised key pair or to add a recovery recipient. An interrupted run is resumed "
        "by running it again: key objects already wrapped for the same recipients are skipped.",
    )
    p.add_argument("location", metavar="STORE[/PREFIX]")
    p.add_argument(
        "--add-recipient",
        metavar="KEY",
        action="append",
        default=[],
        help="also wrap for KEY (a public key file, age1… or ssh-rsa …; repeatable)",
    )
    p.add_argument(
        "--remove-recipient",
        metavar="KEY",
        action="append",
        default=[],
        help="no longer wrap for KEY (repeatable)",
    )
    p.add_argument(
        "--purge-old",
        action="store_true",
        help="delete older versions of each key object once the new one is up "
        "(they are still wrapped for the old key)",
    )
    p.add_argument(
        "-j",
        "--jobs",
        type=int,
        default=DEFAULT_JOBS,
        metavar="N",
        help=f"key objects re-wrapped at once (default: {DEFAULT_JOBS})",
    )
    p.add_argument(
        "-n",
        "--dry-run",
        action="store_true",
        help="read and unwrap everything the run would, upload nothing, and report the same "
        "counts and failures",
    )
    p.add_argument(
        "-P",
        "--progress",
        action="store_true",
        help="show a progress bar (default: on when standard error is a terminal)",
    )
    add_key_options(p)
    p.set_defaults(func=cmd_rotate)


def _recipients_for(fmt: str, recipients: list[Recipient]) -> list[Recipient]:
    if fmt == "age":
        return recipients
    rsa = [r for r in recipients if isinstance(r, RsaRecipient)]
    if len(rsa) != 1:
        raise UsageError("openssl-format files need exactly one RSA --public-key to rotate to")
    return rsa


def rotate_one(
    pairs: PairStore,
    entry: FileEntry,
    recipients: list[Recipient],
    purge: bool,
    dry_run: bool = False,
) -> str:
    """Re-wrap one file's key object: ROTATED, or CURRENT when it already is wrapped for
    ``recipients`` (a resumed run). A dry run does every read and unwrap, and no write."""
    assert entry.key is not None
    name = pairs.key_object_name(entry.path)
    known = entry.key.info.get(INFO_FORMAT)
    recorded = entry.key.info.get(INFO_RECIPIENTS)
    if known and recorded == recipients_fingerprint(_recipients_for(known, recipients)):
        # Wrapped for this set by an earlier run; purging may be what it did not finish.
        if purge and not dry_run:
            pairs.purge_older_versions(name, entry.key)
        return CURRENT
    # Prove the pair first, so that a mismatched newest key object is not made permanent.
    key_object = pairs.matching_key_object(entry)
    fmt = detect_format(key_object)
    codec = pairs.codec_for(fmt)
    targets = _recipients_for(fmt, recipients)
    new_key = codec.rewrap(key_object, pairs.identities, targets)
    if not dry_run:
        info = {INFO_FORMAT: fmt, INFO_RECIPIENTS: recipients_fingerprint(targets)}
        pairs.rewrap_key(name, new_key, info, purge=purge)
    return ROTATED


class _Progress:
    """``rotate: 120/4000 files, 2 failed`` redrawn in place on stderr (at most 10 per s)."""

    def __init__(self, out: TextIO | None, total: int) -> None:
        self.out, self.total, self.drawn = out, total, 0.0

    def update(self, done: int, failed: int, *, force: bool = False) -> None:
        now = time.monotonic()
        if self.out is None or (not force and now - self.drawn < 0.1):
            return
        self.drawn = now
        pct = 100 * done // self.total if self.total else 100
        self.out.write(f"\r\x1b[Krotate: {done}/{self.total} files {pct:3d}%, {failed} failed")
        self.out.flush()

    def clear(self) -> None:
        if self.out is not None:
            self.out.write("\r\x1b[K")
            self.out.flush()

    def line(self, text: str) -> None:
        self.clear()
        print(text, file=sys.stderr, flush=True)


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
    name = pairs.name_key_object_name()
    if name is None:
        return 0
    if prefix.strip("/") != pairs.name_root:
        print(
            f"note: the name key {name} was not re-wrapped: rotate the whole tree "
            f"({pairs.name_root or 'the store root'}) to do that"
        )
        return 0
    if failed:
        print(
            f"note: the name key {name} was not re-wrapped because files failed; run again "
            "with both the old and the new --private-key"
        )
        return 0
    fingerprint = recipients_fingerprint(recipients)
    try:
        current = pairs.store.stat(name)
        if current is not None and current.info.get(INFO_RECIPIENTS) == fingerprint:
            if args.purge_old and not args.dry_run:
                pairs.purge_older_versions(name, current)
            print(f"the name key {name} is already wrapped for these recipients")
            return 0
        if args.dry_run:
            print(f"would re-wrap the name key {name}")
            return 0
        rewrap_name_key(pairs, recipients, args.purge_old, {INFO_RECIPIENTS: fingerprint})
    except B2CryptfsError as exc:
        print(f"failed {name}: {exc}", file=sys.stderr)
        return 1
    print(f"re-wrapped the name key {name}")
    return 0


def new_recipients(args: argparse.Namespace, identities: list) -> list[Recipient]:
    """The --public-key set (or its defaults), plus --add-recipient, minus --remove-recipient."""
    from b2cryptfs.keys.loader import load_recipients

    recipients = load_recipients_from_args(args, identities)
    for spec in args.add_recipient:
        recipients.extend(r for r in load_recipients(spec) if r not in recipients)
    for spec in args.remove_recipient:
        for r in load_recipients(spec):
            if r not in recipients:
                raise UsageError(f"--remove-recipient {spec}: not among the recipients")
            recipients.remove(r)
    if not recipients:
        raise UsageError("no recipients left to wrap the file keys for")
    return recipients


def cmd_rotate(args: argparse.Namespace) -> int:
    from b2cryptfs.cli.common import _public_key_specs

    if not (_public_key_specs(args) or args.add_recipient or args.remove_recipient):
        raise UsageError(
            "give the new recipients with --public-key, --add-recipient or --remove-recipient"
        )
    if args.jobs < 1:
        raise UsageError("--jobs must be at least 1")
    identities = load_identities_from_args(args)
    if not identities:
        raise UsageError("give the current private key with --private-key")
    recipients = new_recipients(args, identities)
    store_url, prefix = split_location(args.location)
    pairs = open_pairs_from_args(
        args,
        open_store_from_args(args, store_url),
        identities=identities,
        recipients=recipients,
        path=prefix,
    )
    entries = list(walk_files(pairs, prefix))
    bar = _Progress(sys.stderr if args.progress or sys.stderr.isatty() else None, len(entries))
    done = current = failed = 0

    def settle(entry: FileEntry, outcome: str | None, error: str | None) -> None:
        nonlocal done, current, failed
        if error is not None:
            failed += 1
            bar.line(f"failed {entry.path}: {error}")
        elif outcome == CURRENT:
            current += 1
        else:
            done += 1
            if args.dry_run:
                bar.clear()
                print(f"would rotate {entry.path}", flush=True)
        bar.update(done + current + failed, failed)

    work = []
    for entry in entries:
        if entry.key is None:
            settle(entry, None, "no key object")
        else:
            work.append(entry)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs)
    try:
        futures = {
            pool.submit(rotate_one, pairs, e, recipients, args.purge_old, args.dry_run): e
            for e in work
        }
        for fut in concurrent.futures.as_completed(futures):
            try:
                settle(futures[fut], fut.result(), None)
            except B2CryptfsError as exc:
                settle(futures[fut], None, str(exc))
    except KeyboardInterrupt:
        pool.shutdown(wait=True, cancel_futures=True)
        bar.line(
            f"interrupted after {done} file(s) rotated: run the same command again to resume "
            "(key objects already wrapped for these recipients are skipped)"
        )
        return 130
    finally:
        pool.shutdown(wait=True)
    bar.update(done + current + failed, failed, force=True)
    bar.clear()
    verb = "would rotate" if args.dry_run else "rotated"
    summary = f"{verb} {done} file(s), {failed} failed"
    if current:
        summary += f", {current} already wrapped for these recipients"
    print(summary)
    failed += _rotate_name_key(args, pairs, prefix, recipients, failed)
    if done and not args.purge_old and not args.dry_run:
        print(
            "note: older versions of the key objects (wrapped for the old keys) remain in the "
            "store; run again with --purge-old, or delete them, if the old key is compromised"
        )
    return 1 if failed else 0
