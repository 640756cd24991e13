"""The pair layer: a plaintext path is two objects, ``PATH.key.enc`` and ``PATH.enc``.

This module maps paths to object pairs and back, and enforces the pairing rules: the key
object is uploaded first, a listing is driven by content objects (an orphan key object is
invisible), a reader proves the pair matches and falls back to older key versions when it
does not, and ``P.key``/``P`` never share an object. It is blocking and holds no state but
its settings, so the CLI calls it directly and the mount calls it from worker threads.

With a :class:`~b2cryptfs.formats.names.NameCipher` (see :mod:`b2cryptfs.bucket.namekey`), every
segment below the *name root* is encrypted: the public methods still take and return
plaintext paths, and only the object names (``object_path``) differ. Encrypted segments are
base32 without dots, so ``X.enc``/``X.key.enc`` are told apart by their suffix alone and the
``P.key`` collision rule does not apply there; objects whose names do not decrypt are foreign
and stay invisible.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import logging
import os
import stat as stat_mod
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import BinaryIO

from b2cryptfs.bucket.inlinelink import LINK_INFO, BytesSource, inline_pair, link_copies
from b2cryptfs.bucket.keycopy import (
    KEY_COPY_INFO,
    KEY_COPY_MAX_CONTENT,
    copied_key,
    key_copy_info,
    retagged,
)
from b2cryptfs.bucket.layout import (
    CONTENT_SUFFIX,
    DIR_SUFFIX,
    EMPTY_MARKER,
    INFO_FORMAT,
    KEY_SUFFIX,
    NAME_KEY_OBJECT,
    check_new_name,
    classify,
    content_name,
    dir_object_name,
    dir_prefix,
    join,
    key_name,
    marker_name,
    name_key_object,
)
from b2cryptfs.bucket.longnames import LONG_NAME_INFO, LongNamer, is_long
from b2cryptfs.bucket.meta import (
    META_KEY,
    PATH_MAX,
    UNKNOWN,
    Meta,
    MetaCipher,
    decode_meta,
    encode_meta,
)
from b2cryptfs.bucket.tidylog import TidyLog
from b2cryptfs.errors import (
    AlreadyExists,
    B2CryptfsError,
    DirectoryNotEmpty,
    FormatError,
    IntegrityError,
    InvalidName,
    KeyError_,
    NameCollision,
    NameTooLong,
    NoPrivateKey,
    NotFound,
    PairMismatch,
    UsageError,
)
from b2cryptfs.formats import (
    Codec,
    ContentReader,
    Sealed,
    detect_format,
    estimate_plaintext_size,
    get_codec,
    sniff_format,
)
from b2cryptfs.formats.age import stream as age_stream
from b2cryptfs.formats.age.codec import AgeCodec
from b2cryptfs.formats.names import MAX_PLAIN_SEGMENT, NameCipher
from b2cryptfs.keys.types import Identity, Recipient
from b2cryptfs.store.base import (
    MAX_SEGMENT_BYTES,
    MTIME_KEY,
    Listing,
    ObjectInfo,
    Store,
    filled,
    validate_info,
    validate_name,
)

log = logging.getLogger(__name__)

__all__ = [
    "CONTENT_SUFFIX",
    "EMPTY_MARKER",
    "INFO_FORMAT",
    "KEY_SUFFIX",
    "NAME_KEY_OBJECT",
    "DirListing",
    "FileEntry",
    "PairStore",
    "StoreSource",
    "content_name",
    "fetch_plaintext_to",
    "key_name",
]


@dataclass(frozen=True)
class FileEntry:
    path: str
    content: ObjectInfo
    key: ObjectInfo | None
    format: str | None
    size: int | None
    size_estimate: int
    mtime_ms: int
    # POSIX metadata from the content object's file info (UNKNOWN when it has none). A value
    # that does not decode leaves UNKNOWN here and the reason in meta_error.
    meta: Meta = UNKNOWN
    meta_error: str | None = None

    def checked_meta(self) -> Meta:
        """The metadata, or IntegrityError when the stored value was tampered with."""
        if self.meta_error is not None:
            raise IntegrityError(f"{self.path}: {self.meta_error}")
        return self.meta

    @property
    def is_symlink(self) -> bool:
        return self.meta.is_symlink


def _new_entry(
    path: str,
    content: ObjectInfo,
    key: ObjectInfo | None,
    fmt: str | None,
    size: int | None,
    estimate: int,
    mtime_ms: int,
    meta: Meta,
    error: str | None,
) -> FileEntry:
    """``FileEntry(...)`` made as :func:`~b2cryptfs.store.base.filled` does (one per
    listed file)."""
    return filled(
        FileEntry,
        {
            "path": path,
            "content": content,
            "key": key,
            "format": fmt,
            "size": size,
            "size_estimate": estimate,
            "mtime_ms": mtime_ms,
            "meta": meta,
            "meta_error": error,
        },
    )


@dataclass(frozen=True)
class DirListing:
    files: dict[str, FileEntry]
    dirs: set[str]
    has_marker: bool
    # Metadata of subdirectories that have a dir object (the others: UNKNOWN, defaults).
    dir_metas: dict[str, Meta] = field(default_factory=dict)
    # The listed directory's own metadata: only the store root's, from its root object
    # (ROOT_META_OBJECT); None without one (or for any other directory).
    own_meta: Meta | None = None


class PairStore:
    """Paired-object operations over a Store, with the keys and format of one session."""

    def __init__(
        self,
        store: Store,
        *,
        recipients: Sequence[Recipient] = (),
        identities: Sequence[Identity] = (),
        format: str = "age",
        openssl_md: str = "auto",
        hard_delete: bool = False,
        names: NameCipher | None = None,
        name_root: str = "",
    ) -> None:
        self.store = store
        self.recipients = list(recipients)
        self.identities = list(identities)
        self.format = format
        self.openssl_md = openssl_md
        self.hard_delete = hard_delete
        self.codec: Codec = get_codec(format, openssl_md=openssl_md)
        # Segments below name_root (a plaintext directory path, "" = the store root) are
        # encrypted with `names`; the root's own path and anything outside it stay plain.
        self.names = names
        self.name_root = name_root.strip("/")
        # Owners and modes are sealed where names are (a key of their own, from the name key).
        self.meta_cipher = MetaCipher(names.key) if names is not None else None
        self.long_names = LongNamer(names.key if names is not None else None)
        # Set by a mount: where deletes and renames note the paths they may leave an orphan
        # key object at, should they be cut short (bucket/tidylog.py).
        self.tidy_log: TidyLog | None = None

    @property
    def can_read(self) -> bool:
        return bool(self.identities)

    @property
    def can_write(self) -> bool:
        return bool(self.recipients)

    def codec_for(self, fmt: str) -> Codec:
        return self.codec if fmt == self.format else get_codec(fmt, openssl_md=self.openssl_md)

    # --- names -------------------------------------------------------------------------

    @property
    def encrypts_names(self) -> bool:
        return self.names is not None

    def _rel(self, path: str) -> str | None:
        """``path`` relative to the name root when names there are encrypted, else None."""
        if self.names is None:
            return None
        root = self.name_root
        if not root:
            return path
        if path == root:
            return ""
        if path.startswith(root + "/"):
            return path[len(root) + 1 :]
        return None

    def object_path(self, path: str, *, is_dir: bool = False) -> str:
        """The store-side name of a plaintext path, without suffix.

        Plain names map to themselves, encrypted ones segment by segment; a segment too long
        for the store (over 242 bytes for a file leaf, which gets ``.key.enc``; over 250 for
        a directory, and with encrypted names over 135 plaintext bytes) becomes its
        long-name stand-in (:mod:`b2cryptfs.bucket.longnames`). ``is_dir``: the last segment
        names a directory. Raises InvalidName for a segment that cannot be encrypted.
        """
        path = path.strip("/")
        if not path:
            return path
        rel = self._rel(path)
        if rel == "":
            return path
        segs = path.split("/") if rel is None else rel.split("/")
        out: list[str] = []
        parent = ""
        for i, seg in enumerate(segs):
            last_is_file = i == len(segs) - 1 and not is_dir
            out.append(self._object_segment(seg, parent, rel is not None, last_is_file))
            parent = join(parent, seg)
        mapped = "/".join(out)
        if rel is None or not self.name_root:
            return mapped
        return f"{self.name_root}/{mapped}"

    def _object_segment(self, seg: str, parent: str, encrypted: bool, is_file: bool) -> str:
        size = len(seg.encode("utf-8", "surrogateescape"))
        if encrypted:
            assert self.names is not None
            if size > MAX_PLAIN_SEGMENT:
                return self.long_names.segment(seg, parent)
            return self.names.encrypt_segment(seg, parent)
        limit = self.max_segment_bytes - (len(KEY_SUFFIX) if is_file else 0)
        return self.long_names.segment(seg, parent) if size > limit else seg

    def _long_name_value(self, leaf: str) -> str:
        """The file-info value carrying a long leaf (sealed with encrypted names)."""
        return self.meta_cipher.seal(leaf) if self.meta_cipher is not None else leaf

    def _resolve_long(self, base: str, info: dict[str, str], parent_rel: str) -> str | None:
        """The full leaf of a long-named object, proven by recomputing its stand-in."""
        value = info.get(LONG_NAME_INFO)
        if value is None or not is_long(base):
            return None
        try:
            leaf = self.meta_cipher.open(value) if self.meta_cipher is not None else value
        except IntegrityError as exc:
            log.warning("%s: %s", base, exc)
            return None
        if "/" in leaf or self.long_names.segment(leaf, parent_rel) != base:
            log.warning("%s: its long name does not match (moved or tampered with)", base)
            return None
        return leaf

    def plain_path(self, object_path: str) -> str | None:
        """The inverse of :meth:`object_path`; None if the name does not decrypt (foreign)."""
        object_path = object_path.strip("/")
        rel = self._rel(object_path)
        if not rel:
            return object_path
        assert self.names is not None
        plain = self.names.decrypt_path(rel)
        if plain is None:
            return None
        return f"{self.name_root}/{plain}" if self.name_root else plain

    def content_object_name(self, path: str) -> str:
        return content_name(self.object_path(path))

    def key_object_name(self, path: str) -> str:
        return key_name(self.object_path(path))

    def name_key_object_name(self) -> str | None:
        """Where this session's name key lives (None for plain names)."""
        if self.names is None:
            return None
        return name_key_object(self.name_root)

    def check_name(self, path: str, *, is_dir: bool = False) -> None:
        """Raise NameTooLong/InvalidName if ``path`` cannot be created in the store.

        For callers that must refuse a name before any upload (the mount at create, mkdir
        and rename time): with encrypted names the limits apply to the encrypted form.
        """
        path = path.strip("/")
        if is_dir:
            validate_name(self.store.prefix + marker_name(self.object_path(path, is_dir=True)))
            validate_name(self.store.prefix + self.dir_object(path))
        else:
            validate_name(self.store.prefix + self.key_object_name(path))

    @property
    def max_segment_bytes(self) -> int:
        """The store's limit per name segment: its ``max_segment_bytes`` attribute where it
        has one, else B2's documented 250 (the one place the bucket layer asks)."""
        return int(getattr(self.store, "max_segment_bytes", MAX_SEGMENT_BYTES))

    @property
    def prefix_bytes(self) -> int:
        """Bytes of the store's own prefix, which B2 counts in every object name."""
        return len(self.store.prefix.encode())

    def check_new_name(self, dirpath: str, leaf: str, *, is_dir: bool) -> str:
        """The one name check for a new file or directory: the plaintext rules, then the
        object names as the store will see them. Returns the path; raises NameTooLong or
        InvalidName."""
        path = check_new_name(dirpath, leaf, is_dir=is_dir, prefix_bytes=self.prefix_bytes)
        self.check_name(path, is_dir=is_dir)
        return path

    # --- listing -----------------------------------------------------------------------

    def make_entry(self, path: str, content: ObjectInfo, key: ObjectInfo | None) -> FileEntry:
        """Describe a file from its listing rows alone (no request)."""
        fmt = content.info.get(INFO_FORMAT)
        if fmt is None and key is not None:
            fmt = sniff_format(key.size, content.size)  # written by another tool
        size = None
        if fmt in ("age", "openssl"):
            try:
                size = self.codec_for(fmt).plaintext_size_hint(content.size, content.info)
            except B2CryptfsError:
                size = None
        estimate = size if size is not None else estimate_plaintext_size(fmt, content.size)
        meta, error = self.decode_meta(content.info)
        return _new_entry(path, content, key, fmt, size, estimate, content.mtime_ms, meta, error)

    def decode_meta(self, info: dict[str, str]) -> tuple[Meta, str | None]:
        """(meta, None), or (UNKNOWN, why) when the value does not authenticate/parse."""
        try:
            return decode_meta(info, self._cipher_for(info)), None
        except IntegrityError as exc:
            log.warning("%s", exc)
            return UNKNOWN, str(exc)

    def _cipher_for(self, info: dict[str, str]) -> MetaCipher | None:
        return self.meta_cipher

    def encode_meta(self, meta: Meta) -> str:
        return encode_meta(meta, self.meta_cipher)

    def info_with_meta(self, info: dict[str, str], meta: Meta | None) -> dict[str, str]:
        """``info`` with the metadata entry set (and src_last_modified_millis following the
        mtime, the b2 CLI's convention); ``meta=None`` leaves both as they are."""
        out = dict(info)
        if meta is None:
            return out
        out[META_KEY] = self.encode_meta(meta)
        if meta.mtime_ns is not None:
            out[MTIME_KEY] = str(meta.mtime_ns // 1_000_000)
        return out

    def list_dir(self, dirpath: str) -> DirListing:
        """One directory level in one listing (B2 delimiter)."""
        dirpath = dirpath.strip("/")
        prefix = dir_prefix(self.object_path(dirpath, is_dir=True))
        return self.parse_listing(dirpath, prefix, self.store.list_dir(prefix))

    def root_listing(self, listing: Listing) -> DirListing | None:
        """The root's listing from the store's listing of its own root (the mount's check
        made it), or None when the root is not there (names encrypted below a prefix)."""
        if dir_prefix(self.object_path("", is_dir=True)) != "":
            return None
        return self.parse_listing("", "", listing)

    def parse_listing(self, dirpath: str, prefix: str, listing: Listing) -> DirListing:
        """:meth:`list_dir` of the store's ``listing`` of ``prefix``."""
        rel = self._rel(dirpath)
        if rel is not None:
            return self._list_encrypted(dirpath, rel, prefix, listing.objects, listing.prefixes)
        by_leaf = {o.name[len(prefix) :]: o for o in listing.objects}
        if NAME_KEY_OBJECT in by_leaf:
            # Names below are encrypted with a key this session does not hold: refuse rather
            # than show (and let anyone write beside) undecipherable names.
            where = dirpath or "the store root"
            raise UsageError(
                f"{where}: the names below are encrypted ({NAME_KEY_OBJECT} is there); "
                "open that directory as the store (or a location inside it) to use it"
            )
        files: dict[str, FileEntry] = {}
        dir_objects: dict[str, ObjectInfo] = {}
        own: ObjectInfo | None = None
        for leaf, obj in by_leaf.items():
            if leaf.endswith(KEY_SUFFIX) and leaf[: -len(KEY_SUFFIX)] + CONTENT_SUFFIX in by_leaf:
                continue  # X's key object beside X.enc (classify's first rule), read below
            kind, name = classify(leaf, by_leaf.__contains__)
            if kind == "content":
                key = by_leaf.get(key_name(name))
                name = self._resolve_long(name, obj.info, dirpath) or name
                files[name] = self.make_entry(join(dirpath, name), obj, key)
            elif kind == "dir-meta":
                dir_objects[name] = obj
            elif kind == "root-meta":
                own = obj
        long_dirs = self._long_dirs(dir_objects, dirpath)
        dirs = {p[len(prefix) :].rstrip("/") for p in listing.prefixes}
        dirs.discard("")
        dirs = {long_dirs.get(d, (d, None))[0] for d in dirs}
        named = {long_dirs.get(b, (b, o))[0]: o for b, o in dir_objects.items()}
        metas = self._dir_metas(dirpath, dirs, named)
        own_meta = self._own_meta(dirpath, own)
        return DirListing(files, dirs, EMPTY_MARKER in by_leaf, metas, own_meta)

    def _own_meta(self, dirpath: str, obj: ObjectInfo | None) -> Meta | None:
        """The store root's metadata from its root object (None: none, or not the root)."""
        if obj is None or dirpath:
            return None
        meta, error = self.decode_meta(obj.info)
        return meta if error is None and meta.known else None

    def _long_dirs(
        self, dir_objects: dict[str, ObjectInfo], parent_rel: str
    ) -> dict[str, tuple[str, ObjectInfo]]:
        """stand-in segment -> (full name, dir object) for long-named subdirectories."""
        out: dict[str, tuple[str, ObjectInfo]] = {}
        for base, obj in dir_objects.items():
            full = self._resolve_long(base, obj.info, parent_rel)
            if full is not None:
                out[base] = (full, obj)
        return out

    def _dir_metas(
        self, dirpath: str, dirs: set[str], dir_objects: dict[str, ObjectInfo]
    ) -> dict[str, Meta]:
        metas: dict[str, Meta] = {}
        for name, obj in dir_objects.items():
            if name in dirs:  # a dir object without its directory is left over: ignored
                meta, error = self.decode_meta(obj.info)
                if error is None and meta.known:
                    metas[name] = meta
        return metas

    def _list_encrypted(
        self,
        dirpath: str,
        rel: str,
        prefix: str,
        objects: list[ObjectInfo],
        prefixes: list[str],
    ) -> DirListing:
        assert self.names is not None
        contents: dict[str, ObjectInfo] = {}
        keys: dict[str, ObjectInfo] = {}
        dir_objects: dict[str, ObjectInfo] = {}
        has_marker = False
        own: ObjectInfo | None = None
        for obj in objects:
            kind, base = classify(obj.name[len(prefix) :], _never, encrypted=True)
            if kind == "marker":
                has_marker = True
            elif kind == "root-meta":
                own = obj
            elif kind == "dir-meta":
                dir_objects[base] = obj
            elif kind == "content":
                contents[base] = obj
            elif kind == "key":
                keys[base] = obj
        files: dict[str, FileEntry] = {}
        for base, obj in contents.items():
            name = self.names.decrypt_segment(base, rel) or self._resolve_long(base, obj.info, rel)
            if name is not None:
                files[name] = self.make_entry(join(dirpath, name), obj, keys.get(base))
        long_dirs = self._long_dirs(dir_objects, rel)
        dirs: set[str] = set()
        for p in prefixes:
            base = p[len(prefix) :].rstrip("/")
            name = self.names.decrypt_segment(base, rel) or long_dirs.get(base, (None,))[0]
            if name is not None:
                dirs.add(name)
        plain_dir_objects: dict[str, ObjectInfo] = {}
        for base, obj in dir_objects.items():
            name = self.names.decrypt_segment(base, rel) or long_dirs.get(base, (None,))[0]
            if name is not None:
                plain_dir_objects[name] = obj
        return DirListing(
            files,
            dirs,
            has_marker,
            self._dir_metas(dirpath, dirs, plain_dir_objects),
            self._own_meta(dirpath, own),
        )

    def stat_file(self, path: str) -> FileEntry | None:
        """A file by path with two stat requests, or None (no content object)."""
        path = path.strip("/")
        if not path:
            return None
        if self._rel(path) or self.object_path(path) != path:
            content = self.store.stat(self.content_object_name(path))
            if content is None:
                return None
            return self.make_entry(path, content, self.store.stat(self.key_object_name(path)))
        content = self.store.stat(content_name(path))
        if content is None:
            return None
        key = self.store.stat(key_name(path))
        found = {key_name(path): key}

        def exists(name: str) -> bool:
            if name not in found:
                found[name] = self.store.stat(name)
            return found[name] is not None

        if classify(content_name(path), exists)[0] != "content":
            return None  # that object is the key of path[:-4] (or an orphan), not a file
        return self.make_entry(path, content, key)

    def is_dir(self, dirpath: str) -> bool:
        dirpath = dirpath.strip("/")
        if not dirpath:
            return True
        parent, _, leaf = dirpath.rpartition("/")
        return leaf in self.list_dir(parent).dirs

    # --- reading -----------------------------------------------------------------------

    def exact_size(self, entry: FileEntry) -> int:
        if entry.size is not None:
            return entry.size
        return self.open(entry).plaintext_size

    def open(self, entry: FileEntry, source: object | None = None) -> ContentReader:
        """Unwrap the file key and prove the pair matches; fall back to older key versions."""
        return self._open_matching(entry, source)[0]

    def matching_key_object(self, entry: FileEntry) -> bytes:
        """The bytes of the newest key object version that matches the content object."""
        return self._open_matching(entry, None)[1]

    def _open_matching(
        self, entry: FileEntry, source: object | None
    ) -> tuple[ContentReader, bytes]:
        if not self.can_read:
            raise NoPrivateKey(f"{entry.path}: no private key given (write-only): cannot read")
        if entry.key is None:
            raise NotFound(f"{entry.path}: key object {key_name(entry.path)} is missing")
        src = source if source is not None else self.content_source(entry.content)
        copy = copied_key(entry.key, entry.content)
        if copy is not None:
            # The key object's bytes from the listing (bucket/keycopy.py): one download.
            try:
                return self.open_version(entry, entry.key, src, key_object=copy)
            except (KeyError_, FormatError, ValueError) as exc:
                # The copy does not open (a store error is the content's: it propagates).
                # Debug only: the key object, read next, gives the error that counts.
                log.debug(
                    "%s: the key object's copy in its file info does not open (%s): "
                    "reading the key object",
                    content_name(entry.path),
                    exc,
                )
                src = self.content_source(entry.content)
        try:
            return self.open_version(entry, entry.key, src)
        except PairMismatch as first:
            for older in self.store.versions(self.key_object_name(entry.path)):
                if older.action != "upload" or older.version_id == entry.key.version_id:
                    continue
                try:
                    opened = self.open_version(entry, older, src)
                except B2CryptfsError:
                    continue
                log.warning(
                    "%s: newest key object does not match its content; using an older version",
                    key_name(entry.path),
                )
                return opened
            raise PairMismatch(
                f"{key_name(entry.path)} does not belong to {content_name(entry.path)} "
                "(no version of the key object matches)"
            ) from first

    def open_version(
        self,
        entry: FileEntry,
        key: ObjectInfo,
        source: object | None = None,
        *,
        key_object: bytes | None = None,
    ) -> tuple[ContentReader, bytes]:
        """Open with exactly this key object version: (reader, key object bytes);
        ``key_object``: its bytes when known (not downloaded)."""
        src = source if source is not None else self.content_source(entry.content)
        if key_object is None and isinstance(src, StoreSource):
            # The codec's first range goes out with the key object's download, not after it
            # (with the key object known, the codec asks for it in this thread: no hand-off).
            src.prefetch(first_range_end(entry.content))
        if key_object is None:
            key_object = self.store.read(key)
        fmt = detect_format(key_object)
        codec = self.codec_for(fmt)
        return codec.open(key_object, self.identities, src, entry.content.info), key_object

    def content_source(self, obj: ObjectInfo) -> StoreSource:
        """The one content source over one exact content object version."""
        return StoreSource(self.store, obj)

    def read_key_object(self, key: ObjectInfo) -> bytes:
        """The bytes of one key object version."""
        return self.store.read(key)

    def download_content(self, obj: ObjectInfo, path: str) -> None:
        """The ciphertext of one content object version into a local file (streaming)."""
        self.store.download(obj, path)

    # --- writing -----------------------------------------------------------------------

    def seal(self, src: BinaryIO, content_out: BinaryIO) -> Sealed:
        if not self.can_write:
            raise UsageError("no public key to encrypt to (give --public-key or --private-key)")
        sealed = self.codec.seal(src, content_out, self.recipients)
        sealed.info.setdefault(INFO_FORMAT, self.format)
        return sealed

    def seal_age_payload(self, file_key: bytes, plaintext_size: int) -> Sealed:
        """What sealing makes besides the content, for an age payload of ``plaintext_size``
        bytes that the caller encrypts under ``file_key`` itself (vfs/agestaging.py)."""
        if not self.can_write:
            raise UsageError("no public key to encrypt to (give --public-key or --private-key)")
        if not isinstance(self.codec, AgeCodec):
            raise UsageError(f"the {self.format} format has no age payload")
        key_object = self.codec.key_object(file_key, self.recipients)
        content_size = age_stream.payload_size(plaintext_size)
        return Sealed(key_object, plaintext_size, content_size, {INFO_FORMAT: self.format})

    def collision_names(self, path: str) -> list[tuple[str, str]]:
        """(object that must not exist, the file it would belong to) for creating ``path``."""
        if self._rel(path.strip("/")):
            return []  # encrypted leaves have no dots: P.key and P never share an object
        out = [(key_name(path + ".key"), path + ".key")]
        if path.endswith(".key"):
            out.append((content_name(path[:-4]), path[:-4]))
        return [(obj, other) for obj, other in out if _valid_object_name(obj)]

    def check_collision(self, path: str) -> None:
        for obj, other in self.collision_names(path):
            try:
                found = self.store.stat(obj)
            except InvalidName:
                continue  # a name the store refuses (its prefix made it too long) cannot exist
            if found is not None:
                raise NameCollision(
                    f"cannot create {path!r}: {other!r} exists and the two would share the "
                    f"object {key_name(path) if other.endswith('.key') else content_name(path)}"
                )

    def upload_pair(
        self,
        path: str,
        key_object: bytes,
        content_file: str,
        content_info: dict[str, str],
        mtime_ms: int,
        meta: Meta | None = None,
        *,
        check: bool = True,
        progress: Callable[[int], None] | None = None,
        key_info: dict[str, str] | None = None,
        content_sha1: str | None = None,
    ) -> FileEntry:
        """Upload key object first, then content: a crash between leaves an invisible orphan.

        ``progress`` gets the content object's bytes sent so far (see ``Store.upload_file``);
        ``content_sha1``, the content file's SHA-1 if the caller knows it (not hashed again).

        ``meta`` goes into the content object's file info (its mtime, when set, wins over
        ``mtime_ms`` for src_last_modified_millis). ``check=False`` skips the collision
        check's stat requests (list calls on B2): the mount checked the name against its
        listing when the file was created (a race with another writer is what fsck reports).
        """
        path = path.strip("/")
        if check:
            self.check_collision(path)
        info = dict(content_info)
        info[MTIME_KEY] = str(int(mtime_ms))
        info = self.info_with_meta(info, meta)
        info.setdefault(INFO_FORMAT, self.format)
        info.update(self._long_info(path))
        key_obj, content_obj = self.key_object_name(path), self.content_object_name(path)
        key = self.store.upload_bytes(
            key_obj, key_object, {INFO_FORMAT: info[INFO_FORMAT], **(key_info or {})}
        )
        info = self._with_key_copy(info, key, key_object, content_file)
        try:
            # Passed only when given: Stores written before them (test doubles) lack them.
            extra: dict[str, object] = {"progress": progress} if progress is not None else {}
            if content_sha1 is not None:
                extra["sha1"] = content_sha1
            content = self.store.upload_file(content_obj, content_file, info, **extra)
        except BaseException:
            # No orphan key object: drop the version just uploaded (an older one, if any,
            # still fits the older content). Best effort: the key may lack deleteFiles.
            try:
                self.store.delete_version(key)
            except Exception:  # noqa: BLE001
                pass
            raise
        return self.make_entry(path, content, key)

    def _with_key_copy(
        self, info: dict[str, str], key: ObjectInfo, key_object: bytes, content_file: str
    ) -> dict[str, str]:
        """``info`` plus a copy of the key object when the content is small (a fresh read
        then downloads only the content: bucket/keycopy.py) and the copy fits B2's limits.
        A link carries its own copies (bucket/inlinelink.py)."""
        info = {k: v for k, v in info.items() if k != KEY_COPY_INFO}
        if LINK_INFO in info:
            return info
        try:
            if os.path.getsize(content_file) > KEY_COPY_MAX_CONTENT:
                return info
        except OSError:
            return info  # the upload says why
        with_copy = {**info, **key_copy_info(key, key_object)}
        try:
            validate_info(with_copy)
        except InvalidName:
            return info
        return with_copy

    def put_file(
        self, path: str, local_path: str, mtime_ms: int | None = None, meta: Meta | None = None
    ) -> FileEntry:
        """Encrypt a local file into a temporary ciphertext file, then upload the pair."""
        path = path.strip("/")
        if mtime_ms is None:
            mtime_ms = int(os.stat(local_path).st_mtime * 1000)
        self.check_collision(path)
        with tempfile.TemporaryDirectory(prefix="b2cryptfs-put-") as tmp:
            out_path = os.path.join(tmp, "content")
            with open(local_path, "rb") as src, open(out_path, "wb") as out:
                sealed = self.seal(src, out)
            return self.upload_pair(path, sealed.key_object, out_path, sealed.info, mtime_ms, meta)

    def _long_info(self, path: str, *, is_dir: bool = False) -> dict[str, str]:
        """{LONG_NAME_INFO: full leaf} when ``path``'s own segment is stored as a stand-in."""
        leaf = path.strip("/").rpartition("/")[2]
        seg = self.object_path(path, is_dir=is_dir).rpartition("/")[2]
        if is_dir and not is_long(seg):
            seg = self.dir_object(path).rpartition("/")[2][: -len(DIR_SUFFIX)]
        return {LONG_NAME_INFO: self._long_name_value(leaf)} if leaf and is_long(seg) else {}

    def put_bytes(
        self, path: str, data: bytes, meta: Meta | None = None, *, inline: bool = False
    ) -> FileEntry:
        """Encrypt and upload small content held in memory (link targets, empty entries);
        ``inline``: copies of both objects go into their file info when small
        (bucket/inlinelink.py)."""
        path = path.strip("/")
        self.check_collision(path)
        mtime_ms = meta.mtime_ns // 1_000_000 if meta and meta.mtime_ns is not None else None
        if mtime_ms is None:
            mtime_ms = int(time.time() * 1000)
        with tempfile.TemporaryDirectory(prefix="b2cryptfs-put-") as tmp:
            out_path = os.path.join(tmp, "content")
            with open(out_path, "wb") as out:
                sealed = self.seal(io.BytesIO(data), out)
            info, key_info = sealed.info, None
            if inline:
                with open(out_path, "rb") as f:
                    key_info, copy = link_copies(sealed.key_object, f.read())
                info = {**info, **copy}
            return self.upload_pair(
                path, sealed.key_object, out_path, info, mtime_ms, meta, key_info=key_info
            )

    def put_link(self, path: str, target: str, meta: Meta | None = None) -> FileEntry:
        """A symbolic link: a pair whose (encrypted) content is the target, its meta S_IFLNK."""
        raw = target.encode("utf-8", "surrogateescape")
        if not raw or b"\0" in raw:
            raise InvalidName(f"{path}: invalid symbolic link target")
        if len(raw) >= PATH_MAX:
            raise NameTooLong(f"{path}: link target is {len(raw)} bytes (PATH_MAX {PATH_MAX})")
        meta = meta or Meta()
        perm = stat_mod.S_IMODE(meta.mode) if meta.mode is not None else 0o777
        return self.put_bytes(path, raw, meta.updated(mode=stat_mod.S_IFLNK | perm), inline=True)

    def put_special(self, path: str, meta: Meta) -> FileEntry:
        """A FIFO, socket or device: a metadata-only entry (empty content, rdev kept)."""
        if not meta.is_special:
            raise UsageError(f"{path}: not a FIFO, socket or device mode: {meta.mode!r}")
        return self.put_bytes(path, b"", meta)

    def read_link(self, entry: FileEntry) -> str:
        """The target of a symbolic link (one small content read and decrypt)."""
        if not entry.checked_meta().is_symlink:
            raise UsageError(f"{entry.path}: not a symbolic link")
        content = entry.content
        target = self._inline_target(entry)
        if target is not None:
            return target
        # A target is small: all of its content downloads once, beside the key object (one
        # round trip, two downloads). A big one is opened as any file, then refused.
        whole = content.size <= PREFETCH_WHOLE and self.can_read and entry.key is not None
        reader = self.open(entry, _WholeSource(self.store, content) if whole else None)
        if reader.plaintext_size > PATH_MAX:
            raise IntegrityError(f"{entry.path}: link target over PATH_MAX")
        return reader.read(0, reader.plaintext_size).decode("utf-8", "surrogateescape")

    def _inline_target(self, entry: FileEntry) -> str | None:
        """The target from the copies in the listing (no request), None without them."""
        copies = inline_pair(entry.key, entry.content) if self.can_read else None
        if copies is None:
            return None
        key_object, content = copies
        try:
            codec = self.codec_for(detect_format(key_object))
            reader = codec.open(
                key_object, self.identities, BytesSource(content), entry.content.info
            )
            if reader.plaintext_size > PATH_MAX:
                return None
            return reader.read(0, reader.plaintext_size).decode("utf-8", "surrogateescape")
        except (B2CryptfsError, ValueError) as exc:
            # E.g. wrapped for a recipient since removed: the objects decide.
            log.debug("%s: the link's copy in the listing does not open (%s)", entry.path, exc)
            return None

    def set_meta(self, entry: FileEntry, meta: Meta) -> FileEntry:
        """Change only the metadata of a file: no download, no content upload.

        The content object gets a new version with the same bytes (a server-side copy on
        B2); the key object is untouched, so the pair still matches. With hard delete the
        replaced version is removed."""
        old = entry.content
        new = self.store.update_info(old, self.info_with_meta(old.info, meta))
        if self.hard_delete and new.version_id != old.version_id:
            try:
                self.store.delete_version(old)
            except NotFound:
                pass  # DirStore rewrote it in place: there is no old version
        return self.make_entry(entry.path, new, entry.key)

    def rewrap_key(
        self, name: str, data: bytes, info: dict[str, str], *, purge: bool = False
    ) -> ObjectInfo:
        """Upload ``data`` as the newest version of the key object ``name`` (a file's key
        object or the name key); with ``purge``, delete every older version (still wrapped
        for the old keys). The one re-wrap used by rotate, the name key and fsck repair."""
        uploaded = self.store.upload_bytes(name, data, info)
        if purge:
            self.purge_older_versions(name, uploaded)
        return uploaded

    def restore_key(self, entry: FileEntry, key_object: bytes, fmt: str) -> FileEntry:
        """Upload ``key_object`` (an older version that matches the content) as the newest key
        object of ``entry``, and remake the content's copy of it: a copy left tagged for the
        replaced version would cost every read a second download."""
        uploaded = self.rewrap_key(self.key_object_name(entry.path), key_object, {INFO_FORMAT: fmt})
        return self.refresh_key_copy(entry, uploaded, key_object)

    def refresh_key_copy(
        self, entry: FileEntry, key: ObjectInfo, key_object: bytes, *, purge: bool = False
    ) -> FileEntry:
        """After ``key`` (bytes ``key_object``) replaced the key object of ``entry``: the
        content object's copy of it made for the new version (a server-side copy of the
        small content object, bytes unchanged); with ``purge``, the content's older
        versions go too (their copies are wrapped for the old recipients). No copy: as is."""
        old = entry.content
        if KEY_COPY_INFO not in old.info:
            return self.make_entry(entry.path, old, key)
        info = {k: v for k, v in old.info.items() if k != KEY_COPY_INFO}
        if old.size <= KEY_COPY_MAX_CONTENT:
            info.update(key_copy_info(key, key_object))
        new = self.store.update_info(old, info)
        if (purge or self.hard_delete) and new.version_id != old.version_id:
            self.purge_older_versions(old.name, new)
        return self.make_entry(entry.path, new, key)

    def purge_older_versions(self, name: str, keep: ObjectInfo) -> int:
        """Delete every version of ``name`` but ``keep``; returns how many were deleted."""
        deleted = 0
        for old in self.store.versions(name):
            if old.version_id != keep.version_id:
                self.store.delete_version(old)
                deleted += 1
        return deleted

    # --- namespace changes -------------------------------------------------------------

    def _remove(self, name: str) -> None:
        if self.hard_delete:
            for v in self.store.versions(name):
                self.store.delete_version(v)
        else:
            self.store.hide(name)

    @contextlib.contextmanager
    def _may_orphan(self, *paths: str) -> Iterator[None]:
        """Note ``paths`` in the tidy log while a sequence that may leave an orphan key object
        there runs; a sequence that did not finish leaves them due (bucket/tidylog.py)."""
        log_ = self.tidy_log
        if log_ is None:
            yield
            return
        for p in paths:
            log_.begin(p)
        finished = False
        try:
            yield
            finished = True
        finally:
            for p in paths:
                log_.end(p, finished=finished)

    def delete(self, path: str) -> None:
        """Content first: the pair then becomes an invisible orphan, never a keyless file."""
        path = path.strip("/")
        content = self.content_object_name(path)
        if self.store.stat(content) is None:
            raise NotFound(f"{path}: no such file")
        with self._may_orphan(path):
            self._remove(content)
            self._remove(self.key_object_name(path))

    def tidy_key(self, path: str) -> str | None:
        """Clean what a cut-short delete, rename or upload may have left at ``path``: remove a
        key object without its content object, or (with a private key) restore the matching
        version of a key object whose newest version does not fit its content. Returns what
        was done (None: nothing to do). Only for a path nobody is uploading to right now."""
        path = path.strip("/")
        content = self.store.stat(self.content_object_name(path))
        key = self.store.stat(self.key_object_name(path))
        if key is None:
            return None
        if content is None:
            self._remove(key.name)
            return "removed an orphan key object"
        if not self.can_read:
            return None
        entry = self.make_entry(path, content, key)
        try:
            self.open_version(entry, key)
        except PairMismatch:
            fmt = entry.format or self.format
            try:
                matching = self.matching_key_object(entry)
            except PairMismatch:
                return None  # a broken pair: fsck reports it, nothing here can mend it
            self.restore_key(entry, matching, fmt)
            return "restored the matching key object version"
        return None

    def rename(self, old: str, new: str, ctime_ns: int | None = None) -> FileEntry:
        """:meth:`_rename`, noted in the tidy log: cut short, it may leave an orphan key
        object at ``old`` (old content removed) or at ``new`` (key copied, content not).
        ``ctime_ns``: the renamed file's new change time (carried by the copy itself)."""
        with self._may_orphan(old.strip("/"), new.strip("/")):
            return self._rename(old, new, ctime_ns)

    def _rename(self, old: str, new: str, ctime_ns: int | None = None) -> FileEntry:
        """Copy both objects, then remove the old ones: one name resolves at every moment."""
        old, new = old.strip("/"), new.strip("/")
        content = self.store.stat(self.content_object_name(old))
        key = self.store.stat(self.key_object_name(old))
        if content is None:
            raise NotFound(f"{old}: no such file")
        if key is None:
            raise NotFound(f"{old}: key object {key_name(old)} is missing")
        self.check_collision(new)
        return self.move_pair(content, key, new, ctime_ns)

    def move_entry(self, entry: FileEntry, new: str) -> FileEntry:
        """:meth:`move_pair` of a listed entry, noted in the tidy log as :meth:`rename` is."""
        assert entry.key is not None
        with self._may_orphan(entry.path.strip("/"), new.strip("/")):
            return self.move_pair(entry.content, entry.key, new)

    def move_pair(
        self, content: ObjectInfo, key: ObjectInfo, new: str, ctime_ns: int | None = None
    ) -> FileEntry:
        """:meth:`rename` of the pair (``content``, ``key``) as listed, without the look-ups:
        for a directory move, whose listing has just named both and whose target holds no
        name that could collide. The same order: both copies, then content and key removed.
        ``ctime_ns``: set as the change time in the content object's copy (no request more)."""
        new = new.strip("/")
        new_key = self.store.copy(key, self.key_object_name(new))
        extra: dict[str, dict[str, str]] = {}
        if ctime_ns is not None:
            meta, error = self.decode_meta(content.info)
            if error is None:  # (a value that does not decode is carried as it is)
                extra["info"] = self.info_with_meta(content.info, meta.updated(ctime_ns=ctime_ns))
        # The key object's copy in the content's info names the new key object version.
        carried = retagged(extra.get("info", content.info), key, new_key)
        if carried is not None:
            extra["info"] = carried
        new_content = self.store.copy(content, self.content_object_name(new), **extra)
        long_info = self._long_info(new)
        if long_info or LONG_NAME_INFO in new_content.info:
            # The full name travels in the info: set it for the new name (metadata stays).
            info = {k: v for k, v in new_content.info.items() if k != LONG_NAME_INFO}
            new_content = self.store.update_info(new_content, {**info, **long_info})
        self._remove(content.name)
        self._remove(key.name)
        return self.make_entry(new, new_content, new_key)

    def finish_rename(self, old: str, new: str) -> FileEntry | None:
        """Finish a :meth:`rename` that may have been interrupted (idempotent): while the
        old content object exists nothing was removed yet, so copying both again is safe;
        once it is gone both copies were done and only the old key object may be left."""
        old, new = old.strip("/"), new.strip("/")
        if self.store.stat(self.content_object_name(old)) is not None:
            return self.rename(old, new)
        if self.store.stat(self.key_object_name(old)) is not None:
            self._remove(self.key_object_name(old))
        return None

    def dir_object(self, dirpath: str) -> str:
        """The object name holding ``dirpath``'s metadata (at the parent level); a segment
        with no room for the suffix uses its long-name stand-in. The store root's is its root
        object, inside it (ROOT_META_OBJECT)."""
        dirpath = dirpath.strip("/")
        if not dirpath:
            return dir_object_name("")
        parent, _, seg = self.object_path(dirpath, is_dir=True).rpartition("/")
        if len((seg + DIR_SUFFIX).encode("utf-8")) > self.max_segment_bytes:
            plain_parent, _, leaf = dirpath.rpartition("/")
            rel_parent = self._rel(plain_parent) if self._rel(dirpath) is not None else None
            seg = self.long_names.segment(leaf, plain_parent if rel_parent is None else rel_parent)
        return dir_object_name(join(parent, seg))

    def mkdir(self, dirpath: str, meta: Meta | None = None) -> None:
        """Create a directory: its marker, then (with ``meta``) its dir object."""
        dirpath = dirpath.strip("/")
        marker = marker_name(self.object_path(dirpath, is_dir=True))
        long_info = self._long_info(dirpath, is_dir=True)
        validate_name(self.store.prefix + self.dir_object(dirpath))  # before any upload
        if self.store.stat(marker) is not None:
            raise AlreadyExists(f"{dirpath}: directory exists")
        self.store.upload_bytes(marker, b"", {MTIME_KEY: str(int(time.time() * 1000))})
        if meta is not None or long_info:
            # A long-named directory always gets its dir object: it carries the name.
            self.set_dir_meta(dirpath, meta)

    def set_dir_meta(self, dirpath: str, meta: Meta | None) -> ObjectInfo:
        """Store a directory's metadata in its dir object (a new small empty object; older
        versions are removed with hard delete). Nothing inside the directory changes. The
        store root ("") gets its root object."""
        dirpath = dirpath.strip("/")
        name = self.dir_object(dirpath)
        info = self.info_with_meta({}, meta)
        info.setdefault(MTIME_KEY, str(int(time.time() * 1000)))
        info.update(self._long_info(dirpath, is_dir=True))
        uploaded = self.store.upload_bytes(name, b"", info)
        if self.hard_delete:
            for old in self.store.versions(name):
                if old.version_id != uploaded.version_id:
                    self.store.delete_version(old)
        return uploaded

    def dir_meta(self, dirpath: str) -> Meta:
        """One directory's metadata by name (one stat; listings bring it along for free:
        the subdirectories' in ``dir_metas``, the store root's in ``own_meta``)."""
        obj = self.store.stat(self.dir_object(dirpath))
        return UNKNOWN if obj is None else self.decode_meta(obj.info)[0]

    def move_dir_objects(self, old: str, new: str) -> None:
        """Move one directory level's own objects (marker and dir object) to a new path.

        For a directory rename done level by level (the files are moved with
        :meth:`rename`, the subdirectories by calling this for each): copies first, then
        removes, so the directory is visible under one name at every moment."""
        old, new = old.strip("/"), new.strip("/")
        moves = [
            (
                marker_name(self.object_path(old, is_dir=True)),
                marker_name(self.object_path(new, is_dir=True)),
            ),
            (self.dir_object(old), self.dir_object(new)),
        ]
        done: list[str] = []
        long_info = self._long_info(new, is_dir=True)
        for src_name, dst_name in moves:
            src = self.store.stat(src_name)
            if src is None and src_name.endswith(DIR_SUFFIX) and long_info:
                self.set_dir_meta(new, None)  # the new long name needs its dir object
            if src is not None:
                copied = self.store.copy(src, dst_name)
                if dst_name.endswith(DIR_SUFFIX) and (long_info or LONG_NAME_INFO in src.info):
                    info = {k: v for k, v in copied.info.items() if k != LONG_NAME_INFO}
                    self.store.update_info(copied, {**info, **long_info})
                done.append(src_name)
        for src_name in done:
            self._remove(src_name)

    def rmdir(self, dirpath: str) -> None:
        """Remove an empty directory: its marker, any orphan key objects (unreadable), then
        its dir object (a crash between leaves a dir object without its directory, which
        listings ignore)."""
        dirpath = dirpath.strip("/")
        listing = self.list_dir(dirpath)
        if listing.files or listing.dirs:
            raise DirectoryNotEmpty(f"{dirpath}: directory not empty")
        prefix = dir_prefix(self.object_path(dirpath, is_dir=True))
        for obj in self.store.list_dir(prefix).objects:
            self._remove(obj.name)
        if self.store.stat(self.dir_object(dirpath)) is not None:
            self._remove(self.dir_object(dirpath))


def _never(name: str) -> bool:
    return False


def _valid_object_name(name: str) -> bool:
    """Whether a store could hold ``name`` at all (a longer one cannot collide with anything)."""
    try:
        validate_name(name)
    except InvalidName:
        return False
    return True


class StoreSource:
    """The ContentSource over one exact content object version, remembering its last fetch.

    Opening a pair reads the first chunk (to prove the pair matches); the mount's first
    read then finds those bytes here (:meth:`recall`) instead of asking the store again.
    """

    def __init__(self, store: Store, obj: ObjectInfo) -> None:
        self.store = store
        self.obj = obj
        self.size = obj.size
        self._last: tuple[int, int, bytes] | None = None
        self._ahead: tuple[int, Future[bytes]] | None = None

    def prefetch(self, end: int) -> None:
        """Start downloading ``[0, end)`` in the background; the next fetch inside it waits
        for those bytes instead of asking again (a fetch outside it forgets them)."""
        if end > 0 and self._ahead is None:
            self._ahead = (end, prefetch_pool().submit(self.store.read, self.obj, 0, end))

    def fetch(self, start: int, end: int) -> bytes:
        if end <= start:
            return b""
        ahead, self._ahead = self._ahead, None
        if ahead is not None and end <= ahead[0]:
            whole = ahead[1].result()
            self._last = (0, len(whole), whole)
            return whole[start:end]
        data = self.store.read(self.obj, start, end - start)
        self._last = (start, end, data)
        return data

    def fetch_chunks(self, start: int, sizes: Sequence[int]) -> list[bytes]:
        """The bytes from ``start`` cut into consecutive pieces of ``sizes`` (bytes-like),
        each received into its own buffer where the store can (``read_into``)."""
        read_into = getattr(self.store, "read_into", None)
        if read_into is None or self._ahead is not None:
            whole = memoryview(self.fetch(start, start + sum(sizes)))
            cuts = list(itertools.accumulate(sizes, initial=0))
            return [whole[a:b] for a, b in itertools.pairwise(cuts)]  # type: ignore[misc]
        buffers = [bytearray(n) for n in sizes]
        read_into(self.obj, start, buffers)
        self._last = None
        return buffers  # type: ignore[return-value]

    def recall(self, start: int, end: int) -> bytes | None:
        last = self._last
        if last is not None and last[0] <= start and end <= last[1]:
            return last[2][start - last[0] : end - last[0]]
        return None


class _WholeSource:
    """The ContentSource of a small content object, downloaded whole in the background from
    the start (a link target): every fetch is served from that one download."""

    def __init__(self, store: Store, obj: ObjectInfo) -> None:
        self.size = obj.size
        self._whole: Future[bytes] | None = None
        if obj.size > 0:
            self._whole = prefetch_pool().submit(store.read, obj, 0, obj.size)

    def fetch(self, start: int, end: int) -> bytes:
        if end <= start or self._whole is None:
            return b""
        return self._whole.result()[start:end]


# A content object up to this size is fetched whole when opened: its first read (the reader's
# batch of chunks) is then served from the opening's bytes, not by a second request.
PREFETCH_WHOLE = 256 * 1024


def first_range_end(content: ObjectInfo) -> int:
    """Where the first range to download for opening ``content`` ends: the codec's first
    read (age: the first chunk, which proves the pair), or all of a small object; 0 when not
    known ahead (openssl)."""
    if content.info.get(INFO_FORMAT) != "age":
        return 0
    if content.size <= PREFETCH_WHOLE:
        return content.size
    try:
        return age_stream.chunk_span(0, age_stream.plaintext_size(content.size))[1]
    except (B2CryptfsError, IndexError):
        return 0  # a size no age payload has: opening says so


_prefetch: ThreadPoolExecutor | None = None
_prefetch_lock = threading.Lock()


def prefetch_pool() -> ThreadPoolExecutor:
    """The threads that download first ranges ahead (made on first use: after any fork)."""
    global _prefetch
    with _prefetch_lock:
        if _prefetch is None:
            _prefetch = ThreadPoolExecutor(8, thread_name_prefix="prefetch")
        return _prefetch


def fetch_plaintext_to(reader: ContentReader, out: BinaryIO, chunks_per_request: int = 16) -> int:
    """Write a reader's whole plaintext to ``out``, a few chunks per request; bounded memory."""
    step = reader.chunk_size * chunks_per_request
    done = 0
    while done < reader.plaintext_size:
        data = reader.read(done, step)
        out.write(data)
        done += len(data)
    return done
