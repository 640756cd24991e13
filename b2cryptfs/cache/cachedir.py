"""The per-store cache directory: read cache, upload outbox and staging files.

``<root>/<sha256(store url)[:16]>/`` holds ``chunks/`` (ciphertext read cache), ``outbox/``
(sealed pairs waiting for upload) and ``staging/`` (encrypted files being written). One
directory per store keeps one store's pending uploads from ever reaching another; a lock
file keeps two mounts of the same store from sharing (and double-uploading) one outbox.
Everything is created mode 0700.
"""

from __future__ import annotations

import fcntl
import glob
import hashlib
import json
import logging
import os
import pwd
import shutil

from b2cryptfs.errors import CacheDirBusy, UsageError

log = logging.getLogger(__name__)

ROOT_CACHE_ROOT = "/var/cache/b2cryptfs"


def default_cache_root(env: dict[str, str] | None = None, euid: int | None = None) -> str:
    """Where cache directories live when --cache-dir is not given.

    Must work with the near-empty environment mount(8) gives a helper (no HOME, no PATH).
    """
    env = dict(os.environ if env is None else env)
    euid = os.geteuid() if euid is None else euid
    xdg = env.get("XDG_CACHE_HOME", "")
    if os.path.isabs(xdg):
        return os.path.join(xdg, "b2cryptfs")
    if euid == 0:
        return ROOT_CACHE_ROOT
    home = env.get("HOME", "")
    if not os.path.isabs(home):
        try:
            home = pwd.getpwuid(euid).pw_dir
        except KeyError:
            raise UsageError("no home directory to keep a cache in: give --cache-dir") from None
    return os.path.join(home, ".cache", "b2cryptfs")


def store_id(store_url: str) -> str:
    return hashlib.sha256(store_url.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def outbox_manifests(root: str | None, store_url: str) -> list[tuple[str, dict]]:
    """The upload manifests and rename intents a mount of ``store_url`` left in the cache
    root (file, parsed JSON), for tools that look without mounting (fsck); unreadable ones
    are skipped."""
    root = os.path.abspath(os.path.expanduser(root or default_cache_root()))
    directory = os.path.join(root, store_id(store_url), "outbox")
    found = []
    for name in sorted(glob.glob(os.path.join(glob.escape(directory), "*.json"))):
        try:
            with open(name, encoding="utf-8") as fh:
                manifest = json.load(fh)
        except (OSError, ValueError):
            continue
        if not isinstance(manifest, dict):
            continue
        # An upload's manifest names its path; a rename intent (vfs/moves.py) old and new.
        if isinstance(manifest.get("path"), str) or isinstance(manifest.get("old"), str):
            found.append((name, manifest))
    return found


class CacheDir:
    """An opened, locked cache directory of one store. Call :meth:`close` when done."""

    def __init__(self, root: str | None, store_url: str) -> None:
        root = os.path.abspath(os.path.expanduser(root or default_cache_root()))
        self.path = os.path.join(root, store_id(store_url))
        self.chunks = os.path.join(self.path, "chunks")
        self.outbox = os.path.join(self.path, "outbox")
        self.staging = os.path.join(self.path, "staging")
        try:
            os.makedirs(self.path, mode=0o700, exist_ok=True)
            os.chmod(self.path, 0o700)
            for sub in (self.chunks, self.outbox, self.staging):
                os.makedirs(sub, mode=0o700, exist_ok=True)
                os.chmod(sub, 0o700)
            self._lock_fd = os.open(os.path.join(self.path, "lock"), os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise UsageError(
                f"cache directory {self.path} is unusable: {exc.strerror or exc}"
            ) from None
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._lock_fd)
            raise CacheDirBusy(
                f"cache directory {self.path} is in use by another mount of {store_url}"
            ) from None
        self._describe(store_url)
        self._clear_staging()

    def _describe(self, store_url: str) -> None:
        # For people looking at the cache directory: which store is this?
        try:
            with open(os.path.join(self.path, "store.json"), "w") as f:
                json.dump({"store_url": store_url}, f)
        except OSError:
            pass

    def _clear_staging(self) -> None:
        # Staging files of a dead process are unreadable (their keys died with it).
        for name in os.listdir(self.staging):
            full = os.path.join(self.staging, name)
            try:
                if os.path.isdir(full):
                    shutil.rmtree(full)
                else:
                    os.unlink(full)
            except OSError:
                log.warning("cannot remove stale staging file %s", full)

    def close(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1
