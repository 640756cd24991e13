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

from b2cryptfs.bucket.keycopy import has_stale_copy
from b2cryptfs.bucket.layout import INFO_RECIPIENT_LIST, INFO_RECIPIENTS
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
from b2cryptfs.keys.types import (
    Identity,
    Recipient,
    RsaRecipient,
    recipient_id,
    recipients_fingerprint,
)
from b2cryptfs.store.base import ObjectInfo

log = logging.getLogger(__name__)

DEFAULT_JOBS = 8  # key objects are small: the time is request latency, not bandwidth
ROTATED, CURRENT = "rotated", "current"
_MAX_LIST = 3000  # bytes of file info for the recipient list; a longer one is not kept
_RECIPIENT_STANZAS = ("X25519", "ssh-rsa")


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


class RecipientPlan:
    """The recipients each key object is re-wrapped for.

    With --public-key (or $B2CRYPTFS_PUBLIC_KEY) that set, plus --add-recipient, minus
    --remove-recipient, for every file. Without it, each file's current set is the base: the
    list an earlier rotate recorded in the key object's file info, else (a key object put or
    the mount wrote) the private keys' public halves, refused when the key object has more
    recipient stanzas than that (a recipient would be dropped unseen).
    """

    def __init__(
        self,
        explicit: list[Recipient] | None,
        add: list[Recipient],
        remove: list[Recipient],
        identities: list[Identity],
    ) -> None:
        self.add, self.remove_ids = add, {recipient_id(r) for r in remove}
        if self.remove_ids & {recipient_id(r) for r in add}:
            raise UsageError("a key cannot be both added and removed")
        self.own = [i.recipient() for i in identities]
        known = [*self.own, *add, *(explicit or [])]
        self.known_rsa = {recipient_id(r): r for r in known if isinstance(r, RsaRecipient)}
        self.fixed: list[Recipient] | None = None
        if explicit is not None:
            for r in remove:
                if r not in explicit:
                    raise UsageError(
                        f"--remove-recipient {recipient_id(r)}: not among the recipients"
                    )
            self.fixed = self._apply(explicit)

    def _apply(self, base: list[Recipient]) -> list[Recipient]:
        out = [r for r in base if recipient_id(r) not in self.remove_ids]
        out += [r for r in self.add if r not in out]
        if not out:
            raise UsageError("no recipients left to wrap the file key for")
        return out

    def recorded(self, info: dict[str, str]) -> list[Recipient] | None:
        """The targets when known from the listing alone (no read), else None."""
        if self.fixed is not None:
            return self.fixed
        text = info.get(INFO_RECIPIENT_LIST)
        if not text:
            return None
        from b2cryptfs.keys.agekeys import parse_x25519_recipient

        base: list[Recipient] = []
        for rid in text.split(","):
            if rid in self.remove_ids:
                continue
            if rid.startswith("rsa:"):
                if rid not in self.known_rsa:
                    raise UsageError(
                        f"wrapped for an RSA key not given here ({rid}): give it with --public-key"
                    )
                base.append(self.known_rsa[rid])
            else:
                base.append(parse_x25519_recipient(rid))
        return self._apply(base)

    def from_stanzas(self, stanzas: int) -> list[Recipient]:
        if stanzas > len(self.own):
            raise UsageError(
                f"wrapped for {stanzas} recipients, {len(self.own)} of them given as "
                "--private-key: give the whole new set with --public-key"
            )
        return self._apply(self.own)


def _info_for(fmt: str, targets: list[Recipient]) -> dict[str, str]:
    info = {INFO_FORMAT: fmt, INFO_RECIPIENTS: recipients_fingerprint(targets)}
    listed = ",".join(recipient_id(r) for r in targets)
    if len(listed) <= _MAX_LIST:
        info[INFO_RECIPIENT_LIST] = listed
    return info


def rotate_one(
    pairs: PairStore,
    entry: FileEntry,
    plan: RecipientPlan,
    purge: bool,
    dry_run: bool = False,
) -> str:
    """Re-wrap one file's key object: ROTATED, or CURRENT when it already is wrapped for its
    targets (a resumed run). A dry run does every read and unwrap, and no write."""
    assert entry.key is not None
    name = pairs.key_object_name(entry.path)
    info = entry.key.info
    targets = plan.recorded(info)
    known = info.get(INFO_FORMAT)
    if targets is not None and known:
        fingerprint = recipients_fingerprint(_recipients_for(known, targets))
        if info.get(INFO_RECIPIENTS) == fingerprint:
            # Wrapped for this set by an earlier run; purging may be what it did not finish.
            if not dry_run and has_stale_copy(entry.key, entry.content):
                # Cut short between the re-wrap and its copy: make the copy now.
                key_object = pairs.read_key_object(entry.key)
                pairs.refresh_key_copy(entry, entry.key, key_object, purge=purge)
            if purge and not dry_run:
                pairs.purge_older_versions(name, entry.key)
            return CURRENT
    # Prove the pair first, so that a mismatched newest key object is not made permanent.
    key_object = pairs.matching_key_object(entry)
    fmt = detect_format(key_object)
    codec = pairs.codec_for(fmt)
    if targets is None:
        described = codec.describe_recipients(key_object)
        targets = plan.from_stanzas(sum(d.startswith(_RECIPIENT_STANZAS) for d in described))
    targets = _recipients_for(fmt, targets)
    new_key = codec.rewrap(key_object, pairs.identities, targets)
    if not dry_run:
        uploaded = pairs.rewrap_key(name, new_key, _info_for(fmt, targets), purge=purge)
        # A small file's content carries a copy of its key object: made for the new one.
        pairs.refresh_key_copy(entry, uploaded, new_key, purge=purge)
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
    plan: RecipientPlan,
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
    try:
        current = pairs.store.stat(name)
        recipients = plan.recorded(current.info if current else {})
        if recipients is None:
            recipients = plan.from_stanzas(_name_key_stanzas(pairs, current))
        info = _info_for("age", recipients)
        del info[INFO_FORMAT]
        if current is not None and current.info.get(INFO_RECIPIENTS) == info[INFO_RECIPIENTS]:
            if args.purge_old and not args.dry_run:
                pairs.purge_older_versions(name, current)
            print(f"the name key {name} is already wrapped for these recipients")
            return 0
        if args.dry_run:
            print(f"would re-wrap the name key {name}")
            return 0
        rewrap_name_key(pairs, recipients, args.purge_old, info)
    except B2CryptfsError as exc:
        print(f"failed {name}: {exc}", file=sys.stderr)
        return 1
    print(f"re-wrapped the name key {name}")
    return 0


def _name_key_stanzas(pairs: PairStore, current: ObjectInfo | None) -> int:
    """How many recipients the name key (an age file) is wrapped for."""
    from b2cryptfs.formats.age import header

    if current is None:
        return 0
    stanzas = header.split(pairs.read_key_object(current))[0].stanzas
    return sum(st.type in _RECIPIENT_STANZAS for st in stanzas)


def recipient_plan(args: argparse.Namespace, identities: list[Identity]) -> RecipientPlan:
    from b2cryptfs.cli.common import _public_key_specs
    from b2cryptfs.keys.loader import load_recipients

    explicit = load_recipients_from_args(args) if _public_key_specs(args) else None
    add = [r for spec in args.add_recipient for r in load_recipients(spec)]
    remove = [r for spec in args.remove_recipient for r in load_recipients(spec)]
    return RecipientPlan(explicit, add, remove, identities)


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
    plan = recipient_plan(args, identities)
    store_url, prefix = split_location(args.location)
    pairs = open_pairs_from_args(
        args,
        open_store_from_args(args, store_url),
        identities=identities,
        recipients=plan.fixed or plan.own,
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
            pool.submit(rotate_one, pairs, e, plan, args.purge_old, args.dry_run): e for e in work
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
    failed += _rotate_name_key(args, pairs, prefix, plan, failed)
    if done and not args.purge_old and not args.dry_run:
        print(
            "note: older versions of the key objects (wrapped for the old keys) remain in the "
            "store; run again with --purge-old, or delete them, if the old key is compromised"
        )
    return 1 if failed else 0
