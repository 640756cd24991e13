"""Everything a mount needs to know, gathered by the command line before it starts."""

from __future__ import annotations

from dataclasses import dataclass, field

from b2cryptfs.keys.types import Identity, Recipient


@dataclass
class MountConfig:
    store_url: str
    mountpoint: str
    recipients: list[Recipient] = field(default_factory=list)
    # Empty: a write-only mount (public keys only); reads of existing content fail with EACCES.
    identities: list[Identity] = field(default_factory=list)
    format: str = "age"
    openssl_md: str = "auto"
    cache_dir: str | None = None  # default: $XDG_CACHE_HOME/b2cryptfs/<store id>
    cache_size: int = 1 << 30  # bytes of ciphertext kept in the read cache
    dir_cache_time: float = 30.0  # seconds a directory listing is trusted
    read_only: bool = False
    allow_other: bool = False
    hard_delete: bool = False
    sync_upload: bool = False  # close() waits for the upload and reports its failure
    # close() waits for the disk (content, manifest, directory synced): a power loss right
    # after cannot lose it. Off: the committer syncs within about a second (vfs/outboxcommit).
    sync_close: bool = False
    # Longest a read (or an open) waits for the store before failing with EIO; the store's
    # own retries can last many minutes, and a FUSE request cannot be interrupted.
    io_timeout: float = 120.0
    debug: bool = False
    b2_realm: str | None = None
    upload_workers: int = 4
    store_threads: int = 8  # concurrent blocking store calls
    fsname: str = ""  # shown in /proc/mounts; defaults to store_url
    # Create a name key if the store has none (an existing one is always honoured).
    encrypt_names: bool = False
    # The kernel's read-ahead for the mount, set once it is made (fs/readahead.py); it is
    # also the largest READ the kernel sends. 0: the kernel's own (128 KiB); root only.
    read_ahead_kib: int = 1024
    fuse_options: list[str] = field(default_factory=list)  # extra, e.g. auto_unmount
    # Owner and mode bits shown for files without stored ownership metadata (mount options
    # uid=, gid=, umask=); None: the mounting user, 0644 files and 0755 directories.
    uid: int | None = None
    gid: int | None = None
    umask: int | None = None
