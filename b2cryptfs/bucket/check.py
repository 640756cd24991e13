"""Consistency check of a store's object pairs (the engine behind ``b2cryptfs fsck``).

Problems name files by their plaintext path; with encrypted names, objects whose names do
not decrypt are reported as strays under their object name.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from b2cryptfs.bucket.keycopy import has_stale_copy
from b2cryptfs.bucket.layout import KEY_SUFFIX, key_name
from b2cryptfs.bucket.layout import classify as classify_name
from b2cryptfs.bucket.longnames import LONG_PREFIX
from b2cryptfs.bucket.pairs import FileEntry, PairStore
from b2cryptfs.errors import B2CryptfsError, PairMismatch
from b2cryptfs.store.base import ObjectInfo


@dataclass(frozen=True)
class Problem:
    # orphan-key | missing-key | broken-pair | stale-key | stale-copy | unreadable | stray |
    # bad-meta
    kind: str
    name: str  # the object (or file path) concerned, in plaintext where names are encrypted
    detail: str
    repairable: bool
    object_name: str = ""  # the object in the store when it differs from `name`


def classify(names: set[str]) -> tuple[dict[str, str], set[str], set[str]]:
    """Split object names into files (path -> content object), key objects and strays."""
    files: dict[str, str] = {}
    keys: set[str] = set()
    strays: set[str] = set()
    for name in names:
        kind, path = classify_name(name, names.__contains__)
        if kind in ("dir-meta", "root-meta"):
            continue  # a directory's (or the root's) metadata object, not part of any pair
        if kind == "stray":
            strays.add(name)
        elif kind == "key":
            keys.add(name)  # an orphan when its content object is missing (checked below)
        elif kind == "content":
            files[path] = name
    return files, keys, strays


_STRAY = "not a b2cryptfs object (ignored by the mount)"


def _layout_encrypted(
    pairs: PairStore, names: set[str]
) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """(path -> content object, path -> key object, stray object -> why) with encrypted
    names: the suffix alone tells content from key objects (encrypted leaves have no dot)."""
    files: dict[str, str] = {}
    keys: dict[str, str] = {}
    strays: dict[str, str] = {}
    for name in names:
        kind, base = classify_name(name, names.__contains__, encrypted=True)
        if kind in ("marker", "name-key", "dir-meta", "root-meta"):
            continue
        if kind == "stray":
            strays[name] = _STRAY
            continue
        path = pairs.plain_path(base)
        if path is None and LONG_PREFIX in base:
            # A long name, or a name below one: its plaintext is only in listings (the
            # parent's plaintext is the segment's associated data), so pair it by object.
            path = base
        if path is None:
            strays[name] = "name does not decrypt with this store's name key (ignored)"
        elif kind == "content":
            files[path] = name
        else:
            keys[path] = name
    return files, keys, strays


def _layout(
    pairs: PairStore, names: set[str]
) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    if pairs.encrypts_names:
        return _layout_encrypted(pairs, names)
    files, keys, strays = classify(names)
    return files, {k[: -len(KEY_SUFFIX)]: k for k in keys}, dict.fromkeys(strays, _STRAY)


def _bad_metas(pairs: PairStore, objects: dict[str, ObjectInfo]) -> Iterator[Problem]:
    """Directory objects and root objects whose metadata does not decode (tampered with, or
    plaintext in a store whose metadata is sealed): the mount shows defaults for them."""
    for name in sorted(objects):
        kind, _ = classify_name(name, objects.__contains__, encrypted=pairs.encrypts_names)
        if kind not in ("dir-meta", "root-meta"):
            continue
        _, error = pairs.decode_meta(objects[name].info)
        if error is not None:
            yield Problem("bad-meta", name, f"{error} (shown with default metadata)", False)


def check(pairs: PairStore, prefix: str = "", verify: bool = False) -> Iterator[Problem]:
    """Yield every problem under ``prefix`` (a plaintext directory path ending in ``/``, or
    ""); ``verify`` opens each pair (needs a private key)."""
    object_prefix = pairs.object_path(prefix, is_dir=True) + "/" if prefix.strip("/") else ""
    objects: dict[str, ObjectInfo] = {o.name: o for o in pairs.store.iter_all(object_prefix)}
    files, keys, strays = _layout(pairs, set(objects))
    for name in sorted(strays):
        yield Problem("stray", name, strays[name], False)
    yield from _bad_metas(pairs, objects)
    for path in sorted(keys):
        if path not in files:
            name = keys[path]
            shown = key_name(path)
            yield Problem(
                "orphan-key",
                shown,
                "key object without its content object",
                True,
                name if name != shown else "",
            )
    for path in sorted(files):
        if path not in keys:
            yield Problem("missing-key", path, "content object without its key object", False)
            continue
        content, key = objects[files[path]], objects[keys[path]]
        if verify:
            problem = _open_problem(pairs, pairs.make_entry(path, content, key))
            if problem is not None:
                yield problem  # a stale-key repair remakes the copy too
                continue
        if has_stale_copy(key, content):
            yield Problem("stale-copy", path, _STALE_COPY, True)


_STALE_COPY = (
    "content carries a copy of an older key object version (each read downloads the key object)"
)


def _open_problem(pairs: PairStore, entry: FileEntry) -> Problem | None:
    """What opening the pair with its newest key object finds wrong, or None."""
    try:
        pairs.open_version(entry, entry.key)
    except PairMismatch:
        try:
            pairs.open(entry)
        except B2CryptfsError as exc:
            return Problem("broken-pair", entry.path, str(exc), False)
        return Problem(
            "stale-key", entry.path, "newest key object does not match; an older one does", True
        )
    except B2CryptfsError as exc:
        return Problem("unreadable", entry.path, str(exc), False)
    return None


def repair(pairs: PairStore, problem: Problem) -> None:
    """Fix one repairable problem: drop an orphan, restore the matching key version, or
    remake a stale copy of the key object (from the listed key object, which it stands for)."""
    if problem.kind == "orphan-key":
        pairs._remove(problem.object_name or problem.name)
        return
    entry = pairs.stat_file(problem.name)
    if entry is None or entry.key is None:
        return
    if problem.kind == "stale-key":
        pairs.restore_key(entry, pairs.matching_key_object(entry), entry.format or "age")
    elif problem.kind == "stale-copy":
        pairs.refresh_key_copy(entry, entry.key, pairs.read_key_object(entry.key))
