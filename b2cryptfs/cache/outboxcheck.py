"""Checks of the outbox on the disk that need no mount: whether the last run stopped cleanly
(its mark beside the outbox) and whether an entry's content file is what its manifest says
it sealed. The mount's scan (vfs/outboxfiles.py) and fsck (cli/fsck.py) both use them."""

from __future__ import annotations

import hashlib
import json
import os

CLEAN_MARK_SUFFIX = ".clean"


def fsync_dir(path: str) -> None:
    """Make a directory's entries durable; quiet where the filesystem refuses."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def clean_mark(directory: str) -> str:
    return os.path.normpath(directory) + CLEAN_MARK_SUFFIX


def is_marked_clean(directory: str) -> bool:
    return os.path.exists(clean_mark(directory))


def take_clean_mark(directory: str) -> bool:
    """Whether the last run stopped cleanly (its entries are durable); removes the mark,
    durably, before anything new is written (the mark must not outlive this run)."""
    mark = clean_mark(directory)
    try:
        os.unlink(mark)
    except FileNotFoundError:
        return False
    fsync_dir(os.path.dirname(mark))
    return True


def torn_reason(
    content_file: str, layout: int, content_size: int, content_sha1: str | None
) -> str | None:
    """Why the content file is not what its manifest says it sealed (a power loss after
    the manifest reached the disk but before the content did), or None."""
    try:
        with open(content_file, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if layout >= 2 and size != content_size:
                return f"the content file has {size} bytes, its manifest says {content_size}"
            if content_sha1 is None:
                return None
            digest = hashlib.sha1()
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    except FileNotFoundError:
        return "the content file is missing"
    if digest.hexdigest() != content_sha1:
        return "the content file's SHA-1 differs from the one its manifest recorded"
    return None


def torn_entries(directory: str) -> list[tuple[str, str | None, str]]:
    """Read-only, for tools (fsck): (manifest file, the file's path if readable, why) of
    every torn entry, or none at all if the last run stopped cleanly. Manifests that parse
    but lack what an entry needs are unusable, not torn: the mount logs and keeps them."""
    if is_marked_clean(directory) or not os.path.isdir(directory):
        return []
    torn: list[tuple[str, str | None, str]] = []
    for name in sorted(os.listdir(directory)):
        stem, _, ext = name.partition(".")
        if ext != "json" or not stem.isdigit():
            continue
        manifest = os.path.join(directory, name)
        try:
            with open(manifest, "rb") as f:
                m = json.load(f)
        except json.JSONDecodeError as exc:
            torn.append((manifest, None, f"its manifest is not valid JSON ({exc})"))
            continue
        except OSError:
            continue
        try:
            path = str(m["path"])
            layout = int(m.get("version", 1))
            size = int(m["content_size"])
            sha1 = str(m["content_sha1"]) if m.get("content_sha1") is not None else None
        except (KeyError, TypeError, ValueError, AttributeError):
            continue
        reason = torn_reason(os.path.join(directory, stem + ".content"), layout, size, sha1)
        if reason is not None:
            torn.append((manifest, path, reason))
    return torn
