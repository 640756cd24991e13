"""Consistency check of a store's object pairs (the engine behind ``b2cryptfs fsck``)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from b2cryptfs.errors import B2CryptfsError, PairMismatch
from b2cryptfs.store.base import ObjectInfo
from b2cryptfs.vfs.pairs import (
    CONTENT_SUFFIX,
    EMPTY_MARKER,
    INFO_FORMAT,
    KEY_SUFFIX,
    PairStore,
    key_name,
)


@dataclass(frozen=True)
class Problem:
    kind: str  # orphan-key | missing-key | broken-pair | stale-key | unreadable | stray
    name: str  # the object (or file path) concerned
    detail: str
    repairable: bool


def classify(names: set[str]) -> tuple[dict[str, str], set[str], set[str]]:
    """Split object names into files (path -> content object), key objects and strays."""
    files: dict[str, str] = {}
    keys: set[str] = set()
    strays: set[str] = set()
    for name in names:
        leaf = name.rsplit("/", 1)[-1]
        if leaf == EMPTY_MARKER:
            continue
        if not name.endswith(CONTENT_SUFFIX):
            strays.add(name)
            continue
        path = name[: -len(CONTENT_SUFFIX)]
        # X.key.enc is X's key object when X.enc exists (the rule listings follow too).
        if path.endswith(".key") and path[:-4] + CONTENT_SUFFIX in names:
            keys.add(name)
        elif name.endswith(KEY_SUFFIX) and key_name(path) not in names:
            keys.add(name)  # no key of its own: it is a key object (an orphan, checked below)
        else:
            files[path] = name
    return files, keys, strays


def check(pairs: PairStore, prefix: str = "", verify: bool = False) -> Iterator[Problem]:
    """Yield every problem under ``prefix``; ``verify`` opens each pair (needs a private key)."""
    objects: dict[str, ObjectInfo] = {o.name: o for o in pairs.store.iter_all(prefix)}
    files, keys, strays = classify(set(objects))
    for name in sorted(strays):
        yield Problem("stray", name, "not a b2cryptfs object (ignored by the mount)", False)
    for name in sorted(keys):
        base = name[: -len(KEY_SUFFIX)]
        if base + CONTENT_SUFFIX not in objects:
            yield Problem("orphan-key", name, "key object without its content object", True)
    for path in sorted(files):
        if key_name(path) not in objects:
            yield Problem("missing-key", path, "content object without its key object", False)
            continue
        if not verify:
            continue
        entry = pairs.make_entry(path, objects[path + CONTENT_SUFFIX], objects[key_name(path)])
        try:
            pairs.open_version(entry, entry.key)
        except PairMismatch:
            try:
                pairs.open(entry)
            except B2CryptfsError as exc:
                yield Problem("broken-pair", path, str(exc), False)
            else:
                yield Problem(
                    "stale-key", path, "newest key object does not match; an older one does", True
                )
        except B2CryptfsError as exc:
            yield Problem("unreadable", path, str(exc), False)


def repair(pairs: PairStore, problem: Problem) -> None:
    """Fix one repairable problem: drop an orphan, or restore the matching key version."""
    if problem.kind == "orphan-key":
        pairs._remove(problem.name)
    elif problem.kind == "stale-key":
        entry = pairs.stat_file(problem.name)
        if entry is None:
            return
        key_object = pairs.matching_key_object(entry)
        fmt = entry.format or "age"
        pairs.store.upload_bytes(key_name(entry.path), key_object, {INFO_FORMAT: fmt})
