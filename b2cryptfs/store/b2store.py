"""B2Store: the Store protocol over Backblaze B2: b2wire for what a mount does all the time,
b2sdk (v2 API) for the rest, imported the first time it is needed.

- ``b2://BUCKET[/PREFIX]``: the prefix is added to every name given and stripped from every
  name returned, so upper layers never see it.
- Credentials as the ``b2`` command-line tool takes them: ``B2_APPLICATION_KEY_ID`` and
  ``B2_APPLICATION_KEY``, else the tool's saved account database (``B2_ACCOUNT_INFO``,
  ``~/.b2_account_info`` or ``$XDG_CONFIG_HOME/b2/account_info``), which is only read: the
  store authorizes into memory and never rewrites the tool's file. Realm: the ``realm``
  argument, else ``B2_ENVIRONMENT``, else the saved account's realm, else production; a
  URL is accepted (that is how tests reach the loopback server).
- Directory listings use ``b2_list_file_names`` with ``delimiter="/"`` and pages of 10,000,
  so a directory of 10,000 files costs one call (ten billed transactions) and sub-folders
  are not walked. b2sdk's listings have no delimiter (``Bucket.ls`` skips ahead instead:
  a call per sub-folder that outgrows a page), so these calls are made here, with the same
  retries and re-authorization as b2sdk's own calls.
- Authorization, the bucket's id, upload URLs (store/b2account.py), listings, range reads
  and uploads of files go over store/b2wire.py (http.client, a kept-alive connection per
  thread): requests' fixed cost per request is several times a small transfer's, and b2sdk
  with requests is most of a mount's start-up CPU and memory. Copies, hides, deletes and
  the uploads below that b2wire does not make go through b2sdk (store/b2sdkpart.py),
  built on the account data held here. With proxy variables set, b2sdk and requests make
  every call (requests applies them and their no_proxy rules).
- Transfers retry transient failures until ``retry_time`` (see B2Store), resuming a cut
  download where it stopped (store/b2fetch.py); API calls retry a few times (store/b2retry.py).
- Uploads: up to 1 MiB from memory in one request; a file up to ``part_size`` streamed in
  one request; a file of at least ``part_size + min_part_size`` as a large file in parallel
  parts (store/b2large.py) with ``large_file_sha1`` in its file info (which therefore must
  leave room for that entry). The rest (bytes above 1 MiB, a file between those two sizes,
  everything with proxy variables set) goes through b2sdk's emerger, which makes the same
  choice. Every object carries its SHA-1.
- Every failure is mapped to an errors.py class with a one-line message.
- Thread-safe: the account (renewed under a lock), the upload URL pool and b2sdk's B2Api are
  shared by all threads; connections are per thread.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import random
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

from b2cryptfs import __version__
from b2cryptfs.errors import (
    InvalidName,
    StoreError,
    TransientError,
)
from b2cryptfs.store.b2account import Account, UploadUrls, api_call, authorize, bucket_id
from b2cryptfs.store.b2creds import b2_credentials
from b2cryptfs.store.b2errors import bad_token, is_transient, map_error, one_line
from b2cryptfs.store.b2fetch import FETCH_CHUNK, Progress, Ranged, into_try, stream_try
from b2cryptfs.store.b2large import LARGE_FILE_SHA1, part_sizes, upload_large
from b2cryptfs.store.b2retry import API_TRIES, retrying
from b2cryptfs.store.b2retry import transfer as _transfer
from b2cryptfs.store.b2wire import Wire, network_error, upload_headers
from b2cryptfs.store.base import (
    MAX_INFO_BYTES,
    MAX_INFO_ENTRIES,
    MTIME_KEY,
    Listing,
    ObjectInfo,
    listed_object,
    validate_info,
    validate_name,
)

if TYPE_CHECKING:  # b2sdk's part is imported when first needed (B2Store._sdk)
    from b2cryptfs.store.b2sdkpart import Sdk

log = logging.getLogger(__name__)

T = TypeVar("T")
CONTENT_TYPE = "application/octet-stream"
LIST_PAGE = 10000  # B2's maximum maxFileCount
API_VERSION = "v3"  # b2_list_file_names with delimiter is the same in v2..v4
# How long a transfer retries transient failures unless told (the CLI's budget; a mount
# passes its --io-timeout).
DEFAULT_RETRY_TIME = 120.0
USER_AGENT = f"b2cryptfs/{__version__} python/{sys.version.split()[0]}"


# --- retries ---------------------------------------------------------------------------

# b2retry.transfer.active is set while a transfer (read, download, upload, copy) runs in
# this thread: its own loop retries until the caller's deadline, so b2sdk's HTTP layer makes
# one try per request there instead of stacking its fixed-count retries on top.
MAX_BACKOFF = 16.0  # longest pause between two tries of a transfer


# Reads up to this size (key objects, names, the first range of a content object) are
# handed on as bytes; larger ones (the read path's ranges) as the buffer they came into.
_COPY_MAX = 256 * 1024
# Uploads up to this size (and without a progress listener) go in one b2_upload_file from
# memory (B2Store._upload_small), far below any part size.
_SMALL_UPLOAD = 1024 * 1024


def _check_room(info: dict[str, str]) -> None:
    """A large file carries large_file_sha1 in its info too: it must fit B2's limits."""
    if (
        len(info) >= MAX_INFO_ENTRIES
        or sum(len(k.encode()) + len(v.encode()) for k, v in info.items())
        + len(LARGE_FILE_SHA1)
        + 40
        > MAX_INFO_BYTES
    ):
        raise InvalidName(
            f"file info leaves no room for {LARGE_FILE_SHA1} on a large object "
            f"({len(info)} entries)"
        )


# Blocks of an upload with a progress bar: http.client's 1 MiB ones would move a bar over a
# slow link in steps of 1 MiB, and the socket buffers swallow the first megabytes at once.
_PROGRESS_BLOCK = 64 * 1024


class _Counted:
    """A file read by http.client, with ``progress(bytes read so far)`` after each block."""

    def __init__(self, f: Any, progress: Callable[[int], None]) -> None:
        self._f = f
        self._progress = progress
        self._start = f.tell()

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n if n < 0 else min(n, _PROGRESS_BLOCK))
        if data:
            self._progress(self._f.tell() - self._start)
        return data

    def tell(self) -> int:
        return self._f.tell()

    def seek(self, pos: int) -> int:
        return self._f.seek(pos)


def _make_wire() -> Wire | None:
    """The lean HTTP client (b2wire), or None where requests must make every call: with
    proxy variables set (requests applies them and their no_proxy rules)."""
    if any(k.lower().endswith("_proxy") for k in os.environ):
        return None
    # The CA bundle requests would take (its variables, else certifi's, at the first TLS
    # connection).
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    return Wire(USER_AGENT, bundle or None)


def _sha1_file(path: str) -> tuple[str, int]:
    h, size = hashlib.sha1(), 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


# --- the store -------------------------------------------------------------------------


class B2Store:
    """A Store over one bucket (and optional prefix) of Backblaze B2."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        realm: str | None = None,
        key_id: str | None = None,
        key: str | None = None,
        part_size: int | None = None,
        min_part_size: int | None = None,
        max_part_size: int | None = None,
        max_tries: int | None = None,
        backoff: float = 1.0,
        retry_time: float | None = DEFAULT_RETRY_TIME,
        op_attempts: int | None = None,
        workers: int = 4,
    ) -> None:
        """Authorize and look the bucket up (fails early with a clear error).

        ``part_size``/``min_part_size``/``max_part_size`` default to what B2 recommends
        (100 MB / 5 MB / 5 GB): a file becomes a large file from part_size + min_part_size
        bytes; copies above max_part_size (at least 3 * min_part_size) use copy_part.
        ``max_tries`` caps b2sdk's HTTP retries of API calls (listings, stat, hide,
        delete). A transfer (read, download, upload, copy) that fails transiently (a
        connection reset or cut mid-body, a timeout, 5xx, 429, an expired token) is tried
        again, ``backoff / 4`` seconds later then 1.5 times longer each time up to 16 s (or
        as a 429 asks), until ``retry_time`` seconds have passed since it started (None or
        0: for ever); a read cut mid-body resumes where it stopped. ``op_attempts`` optionally caps the tries.
        """
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        if max_part_size is not None and max_part_size < 3 * (min_part_size or 5 * 1000 * 1000):
            # b2sdk splits copies into max_part_size / 3 pieces at worst; B2 refuses parts
            # under the minimum.
            raise ValueError("max_part_size must be at least 3 * min_part_size")
        self.bucket_name = bucket
        self.prefix = prefix
        self.url = f"b2://{bucket}/{prefix}" if prefix else f"b2://{bucket}"
        self.part_size = part_size
        self.min_part_size = min_part_size
        self.max_part_size = max_part_size
        self.backoff = backoff
        self.retry_time = retry_time if retry_time and retry_time > 0 else None
        self.op_attempts = op_attempts
        if key_id and key:
            realm = realm or os.environ.get("B2_ENVIRONMENT") or "production"
        else:
            key_id, key, realm = b2_credentials(realm)
        self.realm = realm
        self._max_tries = max_tries
        self._key = (key_id, key)
        self._auth_lock = threading.Lock()
        self._workers = workers
        self._sdk_made: Sdk | None = None
        self._sdk_lock = threading.Lock()
        self._wire = _make_wire()
        if self._wire is not None:
            self.account = self._authorize()
            self.bucket_id = self._b2(
                lambda: bucket_id(bucket, self.account, partial(self._api, "b2_list_buckets")),
                f"cannot open bucket {bucket}",
            )
        else:
            sdk = self._sdk()
            self.account = sdk.authorize(realm, key_id, key, bucket)
            self.bucket_id = sdk.bucket.id_
        self._upload_urls = UploadUrls(
            partial(self._api, "b2_get_upload_url", {"bucketId": self.bucket_id})
        )
        # A key restricted to a name prefix (b2_authorize_account's "allowed" block) sees
        # nothing above it: listings and stats there answer what the key can see.
        self.allowed_prefix: str = self.account.allowed.get("namePrefix") or ""

    def _authorize(self) -> Account:
        """b2_authorize_account over b2wire, with an API call's retries."""
        realm, (key_id, key) = self.realm, self._key
        try:
            return retrying(
                lambda: authorize(self._wire, realm, key_id, key),
                API_TRIES,
                self._max_tries,
                self.backoff,
            )
        except Exception as exc:
            raise map_error(exc, f"cannot authorize with B2 at {realm}") from None

    def _sdk(self) -> Sdk:
        """b2sdk's part, imported and built the first time an operation needs it."""
        with self._sdk_lock:
            if self._sdk_made is None:
                from b2cryptfs.store.b2sdkpart import Sdk

                sdk = Sdk(self._max_tries, self.backoff, self._workers)
                if self._wire is not None:
                    sdk.adopt(self.account, self.bucket_name, self.bucket_id)
                log.debug("b2sdk loaded for %s", self.url)
                self._sdk_made = sdk
            return self._sdk_made

    @property
    def api(self) -> Any:
        """b2sdk's B2Api on this store's account (loads b2sdk)."""
        return self._sdk().api

    @property
    def bucket(self) -> Any:
        """b2sdk's Bucket (loads b2sdk)."""
        return self._sdk().bucket

    def prefetch_upload_url(self) -> None:
        """Fetch an upload URL in the background (a mount's first upload then waits for
        no b2_get_upload_url)."""
        if self._wire is not None:
            self._upload_urls.prefetch()

    def _above_allowed(self, full: str) -> bool:
        """``full`` is outside the key's prefix but leads to it (e.g. "" for "a/b/")."""
        a = self.allowed_prefix
        return bool(a) and not full.startswith(a) and a.startswith(full)

    def _outside_allowed(self, full: str) -> bool:
        a = self.allowed_prefix
        return bool(a) and not full.startswith(a)

    def __repr__(self) -> str:
        return f"B2Store({self.url!r})"

    # --- names -------------------------------------------------------------------------

    def _full(self, name: str) -> str:
        validate_name(name)
        full = self.prefix + name
        if self.prefix:
            validate_name(full)
        return full

    def _rel(self, full: str) -> str:
        return full[len(self.prefix) :]

    def _obj(self, d: dict[str, Any]) -> ObjectInfo:
        # Once per listed object (4,000 for a directory of 2,000 files): kept lean. B2's JSON
        # has string values in fileInfo, so the dict is taken as it is (_from_version makes
        # b2sdk's records alike).
        info = d.get("fileInfo") or {}
        upload_ms = d.get("uploadTimestamp") or 0
        mtime_ms = upload_ms
        mtime = info.get(MTIME_KEY)
        if mtime is not None:
            try:
                mtime_ms = int(mtime)
            except ValueError:
                pass
        size = d.get("contentLength")
        name = d["fileName"][len(self.prefix) :]
        action = d.get("action") or "upload"
        if action == "upload":
            return listed_object(name, size or 0, d["fileId"], mtime_ms, upload_ms, info)
        return ObjectInfo(name, size or 0, d["fileId"], mtime_ms, upload_ms, info, action)

    def _from_version(self, fv: Any) -> ObjectInfo:
        return self._obj(
            {
                "fileName": fv.file_name,
                "fileId": fv.id_,
                "contentLength": int(fv.size or 0),
                "uploadTimestamp": int(fv.upload_timestamp or 0),
                "fileInfo": {k: str(v) for k, v in (fv.file_info or {}).items()},
                "action": "upload",
            }
        )

    # --- plumbing ----------------------------------------------------------------------

    def _b2(self, fn: Callable[[], T], what: str) -> T:
        """One b2sdk call with its exceptions mapped (b2sdk did its own retries)."""
        try:
            return fn()
        except Exception as exc:
            raise map_error(exc, what) from None

    def _retry(self, fn: Callable[[], T], what: str) -> T:
        """Run a transfer, again after each transient failure, until ``retry_time`` is up."""
        start = time.monotonic()
        deadline = None if self.retry_time is None else start + self.retry_time
        # Start short (a cut connection is often one stale keep-alive), grow 1.5x to 16 s.
        first = self.backoff / 4
        wait = first
        attempt = 0
        while True:
            attempt += 1
            outer = getattr(_transfer, "active", False)
            _transfer.active = True
            try:
                return fn()
            except Progress:
                wait = first  # bytes arrived before the cut: not an overloaded server
                exc: BaseException | None = None
            except Exception as e:
                exc = e
            finally:
                _transfer.active = outer
            if exc is not None:
                left = math.inf if deadline is None else deadline - time.monotonic()
                capped = self.op_attempts is not None and attempt >= self.op_attempts
                if not is_transient(exc) or left <= 0 or capped:
                    if is_transient(exc):
                        raise TransientError(
                            f"{what}: B2 unreachable or failing for {time.monotonic() - start:.0f}"
                            f" s ({attempt} tries; last: {one_line(exc)})"
                        ) from None
                    raise map_error(exc, what) from None
                after = getattr(exc, "retry_after_seconds", None)  # a 429
                delay = min(float(after) if after is not None else wait, MAX_BACKOFF, left)
                # DEBUG: the caller logs once when the retries are spent, not once per try.
                log.debug(
                    "%s failed (%s); try %d again in %.1f s", what, one_line(exc), attempt, delay
                )
                time.sleep(delay * random.uniform(0.9, 1.0) if after is None else delay)
                wait = min(wait * 1.5, MAX_BACKOFF)

    def _api(self, endpoint: str, params: dict[str, Any]) -> dict[str, Any]:
        """One API call (b2sdk's listings have no ``delimiter``, so list calls are made
        here), with an API call's retries; an expired token is renewed and the call made
        again, as b2sdk does for its own calls. Over b2wire (a reply of 10,000 names is
        megabytes: read in one piece), else through b2sdk's HTTP client.
        """
        wire = self._wire

        def call(token: str) -> dict[str, Any]:
            if wire is None:
                return self._sdk().api_call(endpoint, token, params)
            api_url = self.account.api_url
            return retrying(
                lambda: api_call(wire, api_url, token, endpoint, params),
                API_TRIES,
                self._max_tries,
                self.backoff,
            )

        return self._authorized(call)

    def _pages(self, endpoint: str, **params: Any) -> Iterator[dict[str, Any]]:
        params = {"bucketId": self.bucket_id, "maxFileCount": LIST_PAGE, **params}
        while True:
            what = f"list {self.url}{self._rel(params.get('prefix') or self.prefix)}"
            page = self._b2(lambda p=dict(params): self._api(endpoint, p), what)
            yield from page.get("files") or []
            nxt = page.get("nextFileName")
            if nxt is None:
                return
            params["startFileName"] = nxt
            if endpoint == "b2_list_file_versions":
                params["startFileId"] = page.get("nextFileId")

    # --- listing -----------------------------------------------------------------------

    def list_dir(self, prefix: str) -> Listing:
        if prefix and not prefix.endswith("/"):
            raise InvalidName(f"a directory prefix must end with '/': {prefix!r}")
        full = self.prefix + prefix
        if self._above_allowed(full):
            # All this key may see below ``full`` is the way down to its own prefix.
            step = self.allowed_prefix[len(full) :].split("/", 1)[0]
            return Listing([], [self._rel(full + step + "/")])
        objects: list[ObjectInfo] = []
        prefixes: list[str] = []
        obj = self._obj
        for d in self._pages("b2_list_file_names", prefix=full, delimiter="/"):
            action = d.get("action")
            if action == "folder" or d.get("fileId") is None:
                prefixes.append(self._rel(d["fileName"]))
            elif action == "upload" or action is None:
                objects.append(obj(d))
        return Listing(objects, prefixes)

    def iter_all(self, prefix: str = "") -> Iterator[ObjectInfo]:
        full = self.prefix + prefix
        if self._above_allowed(full):
            full = self.allowed_prefix
        for d in self._pages("b2_list_file_names", prefix=full):
            if d.get("action", "upload") == "upload":
                yield self._obj(d)

    def stat(self, name: str) -> ObjectInfo | None:
        full = self._full(name)
        if self._outside_allowed(full):
            return None  # not there, as far as this key can see
        params = {"bucketId": self.bucket_id, "prefix": full, "startFileName": full}
        page = self._b2(
            lambda: self._api("b2_list_file_names", {**params, "maxFileCount": 1}),
            f"stat {name}",
        )
        files = page.get("files") or []
        if files and files[0].get("fileName") == full and files[0].get("action") == "upload":
            return self._obj(files[0])
        return None

    def versions(self, name: str) -> list[ObjectInfo]:
        full = self._full(name)
        if self._outside_allowed(full):
            return []
        out = []
        pages = self._pages(
            "b2_list_file_versions", prefix=full, startFileName=full, maxFileCount=100
        )  # names rarely have many versions; later names in the page are wasted
        for d in pages:
            if d.get("fileName") != full:
                break
            if d.get("action") in ("upload", "hide"):
                out.append(self._obj(d))
        return out

    # --- reading -----------------------------------------------------------------------

    def _ranger(self, obj: ObjectInfo) -> Ranged:
        return lambda begin, end: self._ranged(self._wire, obj, begin, end)  # type: ignore[arg-type]

    def _into_try(self, obj: ObjectInfo, start: int, buffers: Sequence[bytearray]):
        return into_try(self._wire, self._sdk, self._ranger(obj), obj, start, buffers)

    def _ranged(self, wire: Wire, obj: ObjectInfo, begin: int, end: int) -> tuple[Any, Any]:
        """(connection, response) of a GET of bytes [begin, end) of ``obj``, the body read
        up to ``begin`` (a server that ignored the Range header sends the leading bytes)."""
        rng = {"Range": f"bytes={begin}-{end - 1}"}
        conn, resp = self._authorized(
            lambda t: wire.request("GET", self._download_url(obj), {**rng, "Authorization": t})
        )
        skip = begin if resp.status == 200 else 0
        try:
            while skip:
                got = len(resp.read(min(skip, FETCH_CHUNK)))
                if not got:
                    break
                skip -= got
        except Exception as exc:
            wire.forget(conn)
            raise network_error(f"read cut: {exc!r}") from None
        return conn, resp

    def _token(self) -> str:
        if self._wire is None:
            return self._sdk().token()
        return self.account.token

    def _authorized(self, call: Callable[[str], T]) -> T:
        """``call(account token)``, again after a re-authorization while B2 refuses the
        token (twice at most, as b2sdk's own calls do)."""
        for _ in range(2):
            token = self._token()
            try:
                return call(token)
            except Exception as exc:
                if not bad_token(exc):
                    raise
                self._reauthorize(token)
        return call(self._token())

    def _reauthorize(self, refused: str) -> None:
        """A new account token, unless another thread got one since ``refused`` failed."""
        if self._wire is None:
            return self._sdk().reauthorize()
        with self._auth_lock:
            if self.account.token != refused:
                return
            self.account = self._authorize()
            if self._sdk_made is not None:
                self._sdk_made.renew(self.account)

    def read(self, obj: ObjectInfo, offset: int = 0, length: int | None = None) -> bytes:
        """The bytes; a read of more than ``_COPY_MAX`` comes as the ``bytearray`` it was
        received into (bytes-like, never copied again)."""
        if offset < 0 or (length is not None and length < 0):
            raise ValueError("negative offset or length")
        end = obj.size if length is None else min(obj.size, offset + length)
        if offset >= end:
            return b""
        buf = bytearray(end - offset)
        self._retry(self._into_try(obj, offset, [buf]), f"read {obj.name}")
        return buf if len(buf) > _COPY_MAX else bytes(buf)  # type: ignore[return-value]

    def read_into(self, obj: ObjectInfo, offset: int, buffers: Sequence[bytearray]) -> None:
        """Fill ``buffers`` in order with the bytes of ``obj`` from ``offset`` (one range
        request). Buffers of a chunk's size each, rather than one of the whole range, come
        from and go back to malloc's heap: a fresh multi-megabyte buffer per range costs a
        page fault per 4 KiB and a pass of zeros before a byte arrives."""
        end = offset + sum(len(b) for b in buffers)
        if offset < 0 or end > obj.size:
            raise ValueError(f"range {offset}-{end} outside {obj.name} ({obj.size} bytes)")
        if end > offset:
            self._retry(self._into_try(obj, offset, buffers), f"read {obj.name}")

    def download(self, obj: ObjectInfo, path: str) -> None:
        what = f"download {obj.name}"
        digest = hashlib.sha1()
        try:
            with open(path, "wb") as f:

                def sink(chunk: bytes) -> None:
                    f.write(chunk)
                    digest.update(chunk)

                if obj.size:
                    self._retry(
                        stream_try(
                            self._wire, self._sdk, self._ranger(obj), obj, 0, obj.size, sink
                        ),
                        what,
                    )
        except OSError as exc:
            raise StoreError(f"{what}: cannot write {path}: {exc.strerror or exc}") from None
        want = obj.info.get(LARGE_FILE_SHA1)
        if want and digest.hexdigest() != want:
            raise StoreError(f"{what}: the bytes received do not match the stored SHA-1")

    # --- writing -----------------------------------------------------------------------

    def _download_url(self, obj: ObjectInfo) -> str:
        base = self.account.download_url
        return f"{base}/b2api/{API_VERSION}/b2_download_file_by_id?fileId={quote(obj.version_id)}"

    def _effective_sizes(self) -> tuple[int, int]:
        part = self.part_size or self.account.recommended_part_size
        minimum = self.min_part_size or min(self.account.absolute_minimum_part_size, part)
        return part, minimum

    def _upload(
        self,
        full: str,
        source: Callable[[Sdk], Any],
        size: int,
        sha1: str,
        info: dict[str, str],
        progress: Callable[[int], None] | None = None,
    ):
        validate_info(info)
        part, minimum = self._effective_sizes()
        if size > part:
            _check_room(info)
        name = self._rel(full)
        sdk = self._sdk()
        src = source(sdk)
        sizes = (part, minimum, self.max_part_size)

        def once() -> ObjectInfo:
            return self._from_version(sdk.create_file(full, src, sha1, info, sizes, progress))

        try:
            return self._retry(once, f"upload {name}")
        except StoreError:
            if size >= part + minimum:
                self._cancel_unfinished(full, sha1)
            raise

    def _upload_small(self, full: str, data: bytes, sha1: str, info: dict[str, str]):
        """One b2_upload_file of a body held in memory (over b2wire, else b2sdk's session):
        none of the upload manager's planning and threads, which cost more CPU than a few
        KiB's transfer does."""
        validate_info(info)
        name = self._rel(full)

        def once() -> ObjectInfo:
            if self._wire is not None:
                return self._obj(self._upload_lean(full, data, sha1, info))
            return self._obj(self._sdk().upload_small(full, data, sha1, info))

        return self._retry(once, f"upload {name}")

    def _fits(self, part: int) -> bool:
        return self.max_part_size is None or part <= self.max_part_size

    def _upload_large(
        self,
        full: str,
        path: str,
        sizes: list[int],
        sha1: str,
        info: dict[str, str],
        progress: Callable[[int], None] | None,
    ) -> ObjectInfo:
        """A large file over b2wire, its parts in parallel (store/b2large.py)."""
        validate_info(info)
        _check_room(info)
        wire = self._wire
        assert wire is not None
        what = f"upload {self._rel(full)}"

        def run() -> dict[str, Any]:
            return upload_large(
                wire,
                self._api,
                self._retry,
                bucket_id=self.bucket_id,
                full=full,
                path=path,
                sizes=sizes,
                sha1=sha1,
                info=info,
                content_type=CONTENT_TYPE,
                workers=self._workers,
                progress=progress,
                what=what,
            )

        return self._obj(self._b2(run, what))

    def _upload_stream(
        self,
        full: str,
        path: str,
        size: int,
        sha1: str,
        info: dict[str, str],
        progress: Callable[[int], None] | None,
    ) -> ObjectInfo:
        """One b2_upload_file over b2wire of a file up to a part's size, streamed from it in
        large blocks with the SHA-1 known beforehand: none of b2sdk's emerger, its threads
        and its import."""
        validate_info(info)
        wire = self._wire
        assert wire is not None

        def once() -> ObjectInfo:
            try:
                f = open(path, "rb")  # noqa: SIM115 - closed below
            except OSError as exc:
                raise StoreError(f"cannot read {path}: {exc.strerror or exc}") from None
            with f:
                url, token = self._upload_urls.take()
                headers = upload_headers(token, full, size, CONTENT_TYPE, sha1, info)
                body = f if progress is None else _Counted(f, progress)
                d = wire.post_json(url, headers, body)
            self._upload_urls.give_back(url, token)
            return self._obj(d)

        return self._retry(once, f"upload {self._rel(full)}")

    def _small(self, size: int) -> bool:
        """Uploaded in one b2_upload_file from memory; empty ones too over b2wire (requests
        would send an empty body chunked, which B2 refuses: b2sdk's emerger uploads those)."""
        return size <= _SMALL_UPLOAD and (size > 0 or self._wire is not None)

    def _upload_lean(self, full: str, data: bytes, sha1: str, info: dict[str, str]) -> dict:
        """One b2_upload_file over b2wire with a URL of the pool, given back only after it
        served (a URL that failed is dropped, as b2sdk does)."""
        assert self._wire is not None
        url, token = self._upload_urls.take()
        headers = upload_headers(token, full, len(data), CONTENT_TYPE, sha1, info)
        d = self._wire.post_json(url, headers, data)
        self._upload_urls.give_back(url, token)
        return d

    def _cancel_unfinished(self, full: str, sha1: str) -> None:
        """Best effort: do not leave the parts of a failed large upload billed forever.

        Only unfinished uploads of this very content (same name and large_file_sha1) are
        cancelled, never another writer's.
        """
        try:
            self._sdk().cancel_unfinished(full, sha1, LARGE_FILE_SHA1)
        except Exception as exc:
            log.warning("could not cancel the unfinished upload of %s: %s", full, exc)

    def upload_file(
        self,
        name: str,
        path: str,
        info: dict[str, str],
        progress: Callable[[int], None] | None = None,
        sha1: str | None = None,
    ) -> ObjectInfo:
        full = self._full(name)
        try:
            if sha1 is None:
                sha1, size = _sha1_file(path)
            else:
                size = os.path.getsize(path)  # hashed by the caller: one read, the upload's
            small = self._small(size) and progress is None
            if small:
                with open(path, "rb") as f:
                    data = f.read()
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {exc.strerror or exc}") from None
        if small and len(data) == size:
            return self._upload_small(full, data, sha1, info)
        part, minimum = self._effective_sizes()
        if self._wire is not None and size <= part:
            return self._upload_stream(full, path, size, sha1, info, progress)
        sizes = part_sizes(size, part, minimum)
        if self._wire is not None and size >= part + minimum and self._fits(sizes[-1]):
            return self._upload_large(full, path, sizes, sha1, info, progress)
        return self._upload(
            full, lambda sdk: sdk.file_source(path, sha1), size, sha1, info, progress
        )

    def upload_bytes(self, name: str, data: bytes, info: dict[str, str]) -> ObjectInfo:
        full = self._full(name)
        sha1 = hashlib.sha1(data).hexdigest()
        if self._small(len(data)):
            return self._upload_small(full, bytes(data), sha1, info)
        source = lambda sdk: sdk.bytes_source(data, sha1)  # noqa: E731
        return self._upload(full, source, len(data), sha1, info)

    def copy(
        self, src: ObjectInfo, dst_name: str, info: dict[str, str] | None = None
    ) -> ObjectInfo:
        full = self._full(dst_name)
        if info is not None:
            validate_info(info)
        new_info = dict(src.info if info is None else info)
        return self._copy(src, full, new_info, f"copy {src.name} to {dst_name}")

    def update_info(self, obj: ObjectInfo, info: dict[str, str]) -> ObjectInfo:
        """Server-side copy of that version onto its own name with new info (REPLACE)."""
        validate_info(info)
        full = self._full(obj.name)
        return self._copy(obj, full, dict(info), f"update the file info of {obj.name}")

    def _copy(self, src: ObjectInfo, full: str, info: dict[str, str], what: str) -> ObjectInfo:
        _, minimum = self._effective_sizes()
        sdk = self._sdk()
        sizes = (minimum, self.max_part_size)

        def once() -> ObjectInfo:
            fv = sdk.copy(src.version_id, full, info, src.size, src.info, sizes)
            return self._from_version(fv)

        return self._retry(once, what)

    # --- removing ----------------------------------------------------------------------

    def hide(self, name: str) -> None:
        full = self._full(name)
        self._b2(lambda: self._sdk().hide(full), f"hide {name}")

    def delete_version(self, obj: ObjectInfo) -> None:
        full = self._full(obj.name)
        self._b2(
            lambda: self._sdk().delete_version(obj.version_id, full),
            f"delete {obj.name} version {obj.version_id}",
        )
