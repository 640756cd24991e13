"""``fsck``: report (and with --repair clean) orphan key objects and broken pairs."""

from __future__ import annotations

import argparse

from b2cryptfs.cli.common import (
    add_key_options,
    load_identities_from_args,
    open_pairs_from_args,
    open_store_from_args,
    split_location,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fsck",
        help="check object pairs; --repair removes orphans",
        description="List every object under the location and report orphan key objects, "
        "content objects without keys, stray objects, directory or root objects whose "
        "metadata does not decode (bad-meta), and small files whose copy of their key object "
        "is of an older version (stale-copy). With --private-key, also open every "
        "pair to prove it matches. Exit status: 0 clean, 1 problems remain, 2 usage error.",
    )
    p.add_argument("location", metavar="STORE[/PREFIX]")
    p.add_argument(
        "--repair",
        action="store_true",
        help="remove orphan key objects, remake stale copies and restore the matching version "
        "of stale key objects",
    )
    p.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="the cache root whose outbox is also checked for uploads that are stuck or torn "
        "(default: the mount's default)",
    )
    add_key_options(p)
    p.set_defaults(func=cmd_fsck)


def _local_outbox(cache_root: str | None, store_url: str) -> int:
    """Report what this machine's outbox still has to upload to the store; returns how many
    uploads are stuck (the store keeps refusing them) or torn (lost in a power loss): problems
    no repair here can fix."""
    import os

    from b2cryptfs.cache.cachedir import default_cache_root, outbox_manifests, store_id
    from b2cryptfs.cache.outboxcheck import torn_entries

    root = os.path.abspath(os.path.expanduser(cache_root or default_cache_root()))
    # Checked unless the last mount stopped cleanly (a mount running now has not).
    torn = torn_entries(os.path.join(root, store_id(store_url), "outbox"))
    for name, path, reason in torn:
        what = repr(path) if path is not None else "a file"
        print(
            f"{'torn-upload':12} {what}: closed just before a crash or power loss, its sealed "
            f"content never reached the disk whole ({reason}); the next mount drops it ({name})"
        )
    torn_names = {name for name, _, _ in torn}
    stuck = len(torn)
    for name, manifest in outbox_manifests(cache_root, store_url):
        if name in torn_names:
            continue
        if "path" not in manifest:  # a rename cut short: the store may show it half done
            print(
                f"{'rename':12} {manifest['old']} -> {manifest.get('new')}: cut short; the next "
                f"mount finishes it ({name})"
            )
        elif manifest.get("stuck"):
            stuck += 1
            print(f"{'stuck-upload':12} {manifest['path']}: {manifest['stuck']} (in {name})")
        else:
            print(f"{'pending':12} {manifest['path']}: waits in the local outbox ({name})")
    return stuck


def cmd_fsck(args: argparse.Namespace) -> int:
    from b2cryptfs.bucket.check import check, repair  # not needed by --help

    store_url, prefix = split_location(args.location)
    identities = load_identities_from_args(args)
    pairs = open_pairs_from_args(
        args, open_store_from_args(args, store_url), identities=identities, path=prefix
    )
    prefix = prefix.strip("/")
    remaining = 0
    for problem in check(pairs, prefix + "/" if prefix else "", verify=bool(identities)):
        fixed = False
        if args.repair and problem.repairable:
            repair(pairs, problem)
            fixed = True
        remaining += not fixed
        state = "repaired" if fixed else ("repairable" if problem.repairable else "")
        print(
            f"{problem.kind:12} {problem.name}: {problem.detail}" + (f" [{state}]" if state else "")
        )
    remaining += _local_outbox(args.cache_dir, pairs.store.url)
    print("clean" if remaining == 0 else f"{remaining} problem(s) remain")
    return 1 if remaining else 0
