#!/usr/bin/env python3
"""A loopback server for the Backblaze B2 native API, for tests and benchmarks.

Its semantics come from b2sdk's own ``RawSimulator`` (accounts, keys, buckets, file
versions, large files, capabilities), subclassed to drop the quirks that only suit unit
tests: sleeps in downloads, 200-byte parts, caps of 100 buckets / 200 upload URLs / 5,000
uploads / 9,999 file ids, fake timestamps, file ids that collide between buckets. It is
served over real HTTP on 127.0.0.1 so that clients run their production code paths: b2sdk
and the ``b2`` command-line tool (API v4), rclone's b2 backend (API v1).

Run alone::

    python tests/b2server.py [--port N] [--latency-ms N] [--bandwidth-mbps N]

The first line printed is ``B2_ENVIRONMENT=... B2_APPLICATION_KEY_ID=... B2_APPLICATION_KEY=...
BUCKET=...``; it then serves until killed.

Test-only endpoints (no authentication; loopback only):

- ``GET /test/stats`` -> ``{"requests": {endpoint: count}, "faults": {endpoint: count},
  "connections": N}`` (N: TCP connections accepted, the test endpoints' own included).
- ``POST /test/reset`` clears the counters.
- ``POST /test/faults`` with ``{"kind": "b2_upload_file", "fault": "503", "count": 2}`` makes
  the next 2 requests of that kind fail. Faults: ``503``, ``429`` (``retry_after`` seconds,
  default 1), ``expired`` (401 expired_auth_token; the token presented is expired for good,
  as a real expiry would), ``drop`` (the connection is closed half-way through the body:
  the response body for downloads, the request body for uploads, before any reply for the
  rest). Kinds: an endpoint name (``b2_`` prefix optional), ``upload`` (files and parts),
  ``download`` (by id and by name) or ``any``. ``{"clear": true}`` removes pending faults.
- ``POST /test/config`` with ``{"latency_ms": N, "bandwidth_mbps": N}``.
- ``POST /test/create_key`` with ``{"capabilities": [...], "bucket": NAME, "name_prefix": P}``
  -> ``{"applicationKeyId", "applicationKey"}``.
- ``GET /test/file_versions?bucket=NAME`` -> every stored version with its file info (tests
  use it to check what really reached the "cloud").
- ``POST /test/seed`` with ``{"bucket", "names": [...], "size": N}`` stores many small files
  at once (listing tests and benchmarks). ``"after": M`` in a fault lets M matching
  requests through before the fault starts.
"""

from __future__ import annotations

import argparse
import base64
import bisect
import collections
import hashlib
import itertools
import json
import mimetypes
import re
import secrets
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, unquote_plus, urlsplit

from b2sdk._internal.encryption.setting import SSE_B2_AES, SSE_NONE
from b2sdk._internal.raw_api import ALL_CAPABILITIES, MetadataDirectiveMode
from b2sdk._internal.raw_simulator import (
    BucketSimulator,
    FileSimulator,
    KeySimulator,
    PartSimulator,
    RawSimulator,
)

MB = 1000 * 1000
GB = 1000 * MB
REAL_MIN_PART_SIZE = 5 * MB  # B2's absoluteMinimumPartSize
REAL_RECOMMENDED_PART_SIZE = 100 * MB
MAX_PART_SIZE = 5 * GB
MAX_COPY_SIZE = 5 * GB  # b2_copy_file's limit; larger objects need copy_part
MAX_LIST_COUNT = 10000
MAX_INFO_ENTRIES = 10
MAX_INFO_BYTES = 7000
SERVER_NAME = "b2-loopback"
CONTENT_TYPE_DEFAULT = "application/octet-stream"
_INFO_KEY = re.compile(r"^[A-Za-z0-9\-_.]{1,50}$")
_ID_TOP = 16**16 - 1


class B2Fail(Exception):
    """An error answered in B2's JSON shape."""

    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(f"{status} {code} {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def _bad(message: str) -> B2Fail:
    return B2Fail(400, "bad_request", message)


class _Clock:
    """Stands in for the simulator's fake timestamp counter: real milliseconds."""

    def __iter__(self):
        return self

    def __next__(self) -> int:
        return int(time.time() * 1000)


class _SortedIndex(dict):
    """(file name, file id) -> FileSimulator, keeping its keys sorted for bisect listing."""

    def __init__(self) -> None:
        super().__init__()
        self.sorted_keys: list[tuple[str, str]] = []

    def __setitem__(self, key, value) -> None:
        if key not in self:
            bisect.insort(self.sorted_keys, key)
        super().__setitem__(key, value)

    def __delitem__(self, key) -> None:
        super().__delitem__(key)
        i = bisect.bisect_left(self.sorted_keys, key)
        del self.sorted_keys[i]


def check_file_name(name: str) -> None:
    """B2's file name rules (refused with 400 bad_request)."""
    raw = name.encode("utf-8", "surrogatepass")
    if not raw:
        raise _bad("File names must contain at least one character")
    if len(raw) > 1024:
        raise _bad("File names must not be longer than 1024 bytes")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise _bad("File names must not contain characters below 32 or DEL")
    if name.startswith("/") or name.endswith("/") or "//" in name:
        raise _bad("File names must not start or end with '/', nor contain '//'")
    if any(len(s.encode("utf-8", "surrogatepass")) > 250 for s in name.split("/")):
        raise _bad("File name segments must not be longer than 250 bytes")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise _bad("File names must be valid UTF-8") from None


def check_file_info(info: dict[str, str]) -> dict[str, str]:
    if len(info) > MAX_INFO_ENTRIES:
        raise _bad(f"too many file info entries: {len(info)} (limit {MAX_INFO_ENTRIES})")
    out: dict[str, str] = {}
    for k, v in info.items():
        if not isinstance(k, str) or not _INFO_KEY.match(k):
            raise _bad(f"invalid file info name: {k!r}")
        if not isinstance(v, str):
            raise _bad(f"file info value for {k} must be a string")
        out[k.lower()] = v
    total = sum(len(k.encode()) + len(v.encode()) for k, v in out.items())
    if total > MAX_INFO_BYTES:
        raise _bad(f"file info is too large: {total} bytes (limit {MAX_INFO_BYTES})")
    return out


class Joined:
    """A finished large file's bytes: its parts in order, never copied into one buffer."""

    def __init__(self, parts: list) -> None:
        self._parts = [memoryview(p) for p in parts]
        self._starts = list(itertools.accumulate((len(p) for p in self._parts), initial=0))

    def __len__(self) -> int:
        return self._starts[-1]

    def __getitem__(self, s: slice) -> memoryview:
        start, stop, step = s.indices(len(self))
        if step != 1:
            raise ValueError("only contiguous ranges")
        if stop <= start:
            return memoryview(b"")
        k = bisect.bisect_right(self._starts, start) - 1
        pieces = []
        while start < stop:
            part, base = self._parts[k], self._starts[k]
            end = min(stop, base + len(part))
            pieces.append(part[start - base : end - base])
            start, k = end, k + 1
        # One part: a view, no copy (a read-ahead window rarely crosses a part boundary).
        return pieces[0] if len(pieces) == 1 else memoryview(b"".join(pieces))


def byte_range(data: bytes | bytearray | memoryview | Joined, start: int, stop: int) -> memoryview:
    """Bytes ``[start, stop)`` of a stored file, copied only where they cross parts."""
    return data[start:stop] if isinstance(data, Joined) else memoryview(data)[start:stop]


class LoopbackBucket(BucketSimulator):
    """A bucket without the simulator's caps, with real timestamps and an ordered index."""

    MAX_SIMPLE_COPY_SIZE = MAX_COPY_SIZE

    def __init__(self, api: LoopbackSimulator, *args, **kwargs) -> None:
        if kwargs.get("default_server_side_encryption") is None:
            kwargs["default_server_side_encryption"] = SSE_NONE  # as a new real bucket
        super().__init__(api, *args, **kwargs)
        self.upload_url_counter = itertools.count()
        self.upload_timestamp_counter = _Clock()
        self.file_name_and_id_to_file = _SortedIndex()

    def _next_file_id(self) -> str:
        # Decreasing, fixed width: within a name, newer versions sort first, as B2's do.
        n = _ID_TOP - next(self.api.file_counter)
        return f"4_z{self.bucket_id}_f{n:016x}"

    def _simulate_chunked_post(self, stream, content_length, *args, **kwargs) -> bytes:
        return stream.read(content_length)

    def bucket_dict(self, account_auth_token) -> dict:
        d = super().bucket_dict(account_auth_token)
        d["options"] = sorted(d.get("options") or ())  # a set in the simulator: not JSON
        return d

    # --- listings (bisect over the sorted index; delimiter support) ---------------------

    def _visible(self, pos: int, end: int) -> FileSimulator | None:
        """The live version of one name (keys[pos:end] are its versions, newest first)."""
        keys = self.file_name_and_id_to_file.sorted_keys
        for key in keys[pos:end]:
            f = self.file_name_and_id_to_file[key]
            if f.action == "start":
                continue  # unfinished large files neither show nor hide
            return f if f.action == "upload" else None
        return None

    def _name_end(self, pos: int) -> int:
        keys = self.file_name_and_id_to_file.sorted_keys
        return bisect.bisect_left(keys, (keys[pos][0] + "\x00", ""), pos)

    def _folder_has(self, folder: str, pos: int, versions: bool) -> bool:
        keys = self.file_name_and_id_to_file.sorted_keys
        while pos < len(keys) and keys[pos][0].startswith(folder):
            if versions:
                return True
            end = self._name_end(pos)
            if self._visible(pos, end) is not None:
                return True
            pos = end
        return False

    def _folder_entry(self, folder: str) -> dict:
        return dict(
            accountId=self.account_id,
            bucketId=self.bucket_id,
            action="folder",
            fileName=folder,
            fileId=None,
            contentLength=0,
            contentSha1=None,
            contentType=None,
            fileInfo={},
            uploadTimestamp=0,
        )

    def list_names(self, token, start, count, prefix, delimiter, versions, start_id=None) -> dict:
        keys = self.file_name_and_id_to_file.sorted_keys
        files = self.file_name_and_id_to_file
        start = start or ""
        first = max(start, prefix)
        pos = bisect.bisect_left(keys, (first, (start_id or "") if first == start else ""))
        out: list[dict] = []
        next_name = next_id = None
        while pos < len(keys):
            name = keys[pos][0]
            if not name.startswith(prefix):
                break
            if delimiter:
                i = name.find(delimiter, len(prefix))
                if i >= 0:
                    folder = name[: i + len(delimiter)]
                    after = folder[:-1] + chr(ord(folder[-1]) + 1)
                    skip = bisect.bisect_left(keys, (after, ""), pos)
                    if self._folder_has(folder, pos, versions):
                        if len(out) == count:
                            next_name = folder
                            break
                        out.append(self._folder_entry(folder))
                    pos = skip
                    continue
            if versions:
                if len(out) == count:
                    next_name, next_id = keys[pos]
                    break
                out.append(files[keys[pos]].as_list_files_dict(token))
                pos += 1
                continue
            end = self._name_end(pos)
            f = self._visible(pos, end)
            if f is not None:
                if len(out) == count:
                    next_name = name
                    break
                out.append(f.as_list_files_dict(token))
            pos = end
        result: dict[str, Any] = dict(files=out, nextFileName=next_name)
        if versions:
            result["nextFileId"] = next_id
        return result

    # --- writes ----------------------------------------------------------------------

    def _add(self, f: FileSimulator) -> FileSimulator:
        self.file_id_to_file[f.file_id] = f
        self.file_name_and_id_to_file[f.sort_key()] = f
        self.api.file_id_to_bucket_id[f.file_id] = self.bucket_id
        return f

    def store(self, name, content_type, sha1, info, data, sse=None, action="upload"):
        f = self.FILE_SIMULATOR_CLASS(
            self.account_id,
            self,
            self._next_file_id(),
            action,
            name,
            content_type,
            sha1,
            info,
            data,
            next(self.upload_timestamp_counter),
            server_side_encryption=sse or self.default_server_side_encryption,
        )
        return self._add(f)

    def hide(self, token, name: str) -> dict:
        keys = self.file_name_and_id_to_file.sorted_keys
        pos = bisect.bisect_left(keys, (name, ""))
        if pos >= len(keys) or keys[pos][0] != name:
            raise B2Fail(400, "no_such_file", f"File not present: {name}")
        latest = self._visible(pos, self._name_end(pos))
        if latest is None:
            raise B2Fail(400, "already_hidden", f"File already hidden: {name}")
        f = self.FILE_SIMULATOR_CLASS(
            self.account_id, self, self._next_file_id(), "hide", name, None, "none", {}, b"",
            next(self.upload_timestamp_counter),
        )  # fmt: skip
        return self._add(f).as_list_files_dict(token)

    def finish(self, token, file_id, sha1s, min_part_size) -> dict:
        f = self.file_id_to_file[file_id]
        if f.action != "start":
            raise _bad(f"large file {file_id} is not unfinished")
        parts = [p for p in f.parts if p is not None]
        if not parts:
            raise _bad("no parts uploaded")
        numbers = [p.part_number for p in parts]
        if numbers != list(range(1, len(parts) + 1)):
            missing = min(set(range(1, max(numbers) + 1)) - set(numbers))
            raise B2Fail(400, "missing_part", f"part {missing} is missing")
        for p in parts[:-1]:
            if p.content_length < min_part_size:
                raise _bad(f"Part number {p.part_number} is smaller than the minimum part size")
        if list(sha1s) != [p.content_sha1 for p in parts]:
            raise _bad("partSha1Array does not match the parts uploaded")
        # As the simulator's finish, but the parts are kept as they are: joining a 1 GiB
        # file into fresh pages took seconds, which real B2 does not spend.
        f.data_bytes = Joined([p.part_data for p in parts])
        f.content_length = len(f.data_bytes)
        f.action = "upload"
        del f.parts
        return f.as_upload_result(token)


class LoopbackSimulator(RawSimulator):
    """RawSimulator with real limits and real ids; the HTTP layer calls it under one lock."""

    BUCKET_SIMULATOR_CLASS = LoopbackBucket

    def __init__(self) -> None:
        super().__init__()
        self.file_counter = itertools.count()
        self.lock = threading.RLock()
        self.upload_tokens: dict[str, tuple[str, str]] = {}  # token -> (kind, bucket/file id)
        self.download_tokens: dict[str, tuple[str, str]] = {}  # token -> (bucket id, prefix)

    def create_account(self) -> tuple[str, str]:
        account_id = secrets.token_hex(6)
        master_key = "K" + base64.b32encode(secrets.token_bytes(20)).decode().lower()[:30]
        self.key_id_to_key[account_id] = KeySimulator(
            account_id=account_id,
            name="master",
            application_key_id=account_id,
            key=master_key,
            capabilities=list(ALL_CAPABILITIES),
            expiration_timestamp_or_none=None,
            buckets_or_none=None,
            name_prefix_or_none=None,
        )
        return account_id, master_key

    def add_bucket(
        self, account_id: str, name: str, bucket_type: str, *, bucket_info=None,
        cors_rules=None, lifecycle_rules=None, sse=None,
    ) -> LoopbackBucket:  # fmt: skip
        """b2_create_bucket with B2's name rules and real-looking (24 hex digit) ids."""
        if not re.match(r"^[A-Za-z0-9-]{6,63}$", name) or name.lower().startswith("b2-"):
            raise _bad(f"Invalid bucket name: {name}")
        if bucket_type not in ("allPrivate", "allPublic"):
            raise _bad(f"Invalid bucketType: {bucket_type}")
        if name in self.bucket_name_to_bucket:
            raise B2Fail(400, "duplicate_bucket_name", f"Bucket name is already in use: {name}")
        bucket = LoopbackBucket(
            self, account_id, secrets.token_hex(12), name, bucket_type,
            bucket_info=bucket_info, cors_rules=cors_rules, lifecycle_rules=lifecycle_rules,
            default_server_side_encryption=sse,
        )  # fmt: skip
        self.bucket_name_to_bucket[name] = bucket
        self.bucket_id_to_bucket[bucket.bucket_id] = bucket
        return bucket


# --- faults, stats, config -------------------------------------------------------------

ALIASES = {
    "upload": {"b2_upload_file", "b2_upload_part"},
    "download": {"b2_download_file_by_id", "b2_download_file_by_name"},
}
FAULTS = {"503", "429", "expired", "drop"}


class Control:
    """Counters, pending faults and link shaping, shared by all handler threads."""

    def __init__(self, latency_ms: float = 0, bandwidth_mbps: float = 0) -> None:
        self.lock = threading.Lock()
        self.requests: collections.Counter[str] = collections.Counter()
        self.injected: collections.Counter[str] = collections.Counter()
        self.pending: list[dict] = []
        self.connections = 0  # TCP connections accepted (clients should keep theirs alive)
        self.latency_ms = latency_ms
        self.bandwidth_mbps = bandwidth_mbps

    def count(self, kind: str) -> None:
        with self.lock:
            self.requests[kind] += 1

    def add_fault(self, kind: str, fault: str, count: int = 1, **params: Any) -> None:
        if fault not in FAULTS:
            raise _bad(f"unknown fault {fault!r}; known: {sorted(FAULTS)}")
        kind = kind if kind in ALIASES or kind in ("any", "*") else _endpoint(kind)
        skip = int(params.pop("after", 0))  # let this many matching requests through first
        with self.lock:
            self.pending.append(
                dict(kind=kind, fault=fault, left=int(count), skip=skip, params=params)
            )

    def take_fault(self, kind: str) -> dict | None:
        with self.lock:
            for entry in self.pending:
                k = entry["kind"]
                if k == kind or k in ("any", "*") or kind in ALIASES.get(k, ()):
                    if entry["skip"] > 0:
                        entry["skip"] -= 1
                        continue
                    entry["left"] -= 1
                    if entry["left"] <= 0:
                        self.pending.remove(entry)
                    self.injected[kind] += 1
                    return entry
        return None

    def snapshot(self) -> dict:
        with self.lock:
            return dict(
                requests=dict(self.requests),
                faults=dict(self.injected),
                pending=[dict(e) for e in self.pending],
                connections=self.connections,
            )

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()
            self.injected.clear()
            self.connections = 0


def _endpoint(kind: str) -> str:
    return kind if kind.startswith("b2_") else "b2_" + kind


# --- HTTP ------------------------------------------------------------------------------

_API_PATH = re.compile(r"^/b2api/v([1-4])/(b2_[a-z_]+)(?:/(.*))?$")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = SERVER_NAME
    server: B2HTTPServer

    # quiet unless asked
    def log_message(self, fmt: str, *args: Any) -> None:
        if self.server.verbose:
            sys.stderr.write("b2server: " + (fmt % args) + "\n")

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    # --- plumbing ----------------------------------------------------------------------

    @property
    def sim(self) -> LoopbackSimulator:
        return self.server.sim

    @property
    def ctl(self) -> Control:
        return self.server.ctl

    def _throttle(self, nbytes: int, started: float) -> None:
        mbps = self.ctl.bandwidth_mbps
        if mbps > 0:
            due = started + nbytes * 8 / (mbps * 1e6)
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)

    def _read_body(self, limit: int | None = None) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            raise B2Fail(411, "length_required", "chunked uploads are not supported")
        n = int(self.headers.get("Content-Length") or 0)
        if limit is not None:
            n = min(n, limit)
        # Read into one buffer: chunks joined afterwards cost a second copy into freshly
        # faulted pages, which made this server the bottleneck of large uploads.
        body, got, started = bytearray(n), 0, time.monotonic()
        view = memoryview(body)
        while got < n:
            done = self.rfile.readinto(view[got : got + (1 << 20)])
            if not done:
                raise ConnectionError("client closed the connection mid-body")
            got += done
            self._throttle(got, started)
        self._body_read = True
        return body

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self._write_body(body)

    def _write_body(self, body: bytes | memoryview) -> None:
        view, started, sent = memoryview(body), time.monotonic(), 0
        step = 1 << 16 if self.ctl.bandwidth_mbps > 0 else 1 << 22
        while sent < len(view):
            self.wfile.write(view[sent : sent + step])
            sent += min(step, len(view) - sent)
            self._throttle(sent, started)

    def _json(self, obj: Any, status: int = 200, headers: dict | None = None) -> None:
        body = json.dumps(obj).encode()
        h = {
            "Content-Type": "application/json;charset=utf-8",
            "Cache-Control": "max-age=0, no-cache, no-store",
        }
        h.update(headers or {})
        self._send(status, body, h)

    def _error(self, fail: B2Fail) -> None:
        if not self._body_read and self.command == "POST":
            # Drain a refused upload so the client reads our answer, not a reset connection.
            if int(self.headers.get("Content-Length") or 0) <= 256 * MB:
                try:
                    self._read_body()
                except (OSError, B2Fail):
                    self.close_connection = True
            else:
                self.close_connection = True
        obj = dict(status=fail.status, code=fail.code, message=fail.message)
        if self.command == "HEAD":
            self._send(fail.status, b"", fail.headers)
        else:
            self._json(obj, fail.status, fail.headers)

    def _drop(self) -> None:
        self.close_connection = True
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _params(self, query: dict[str, list[str]]) -> dict[str, Any]:
        """JSON body for POST, query string for GET (both are valid B2 calls)."""
        if self.command == "POST":
            raw = self._read_body()
            if not raw:
                return {}
            try:
                obj = json.loads(raw)
            except ValueError:
                raise B2Fail(400, "bad_json", "request body is not valid JSON") from None
            if not isinstance(obj, dict):
                raise B2Fail(400, "bad_json", "request body must be a JSON object")
            return obj
        self._body_read = True
        return {k: v[0] for k, v in query.items()}

    # --- dispatch ----------------------------------------------------------------------

    def _dispatch(self) -> None:
        self._body_read = False
        self._drop_after_half = False
        url = urlsplit(self.path)
        query = parse_qs(url.query, keep_blank_values=True)
        if url.path.startswith("/test/"):
            return self._test_endpoint(url.path, query)
        m = _API_PATH.match(url.path)
        if m:
            version, kind, rest = int(m.group(1)), m.group(2), m.group(3)
        elif url.path.startswith("/file/"):
            version, kind, rest = 4, "b2_download_file_by_name", url.path[len("/file/") :]
        else:
            version, kind, rest = 4, "unknown", None
        self.ctl.count(kind)
        if self.ctl.latency_ms > 0:
            time.sleep(self.ctl.latency_ms / 1000)
        try:
            fault = self.ctl.take_fault(kind)
            if fault is not None and self._inject(fault, kind):
                return
            self._route(version, kind, rest, query)
        except B2Fail as fail:
            self._error(fail)
        except (TimeoutError, ConnectionError, BrokenPipeError):
            self.close_connection = True
        except Exception as exc:  # a bug here must not look like a dropped connection
            self.log_error("internal error: %r", exc)
            import traceback

            traceback.print_exc()
            self._error(B2Fail(500, "internal_error", f"loopback server bug: {exc!r}"))

    def _inject(self, fault: dict, kind: str) -> bool:
        """Apply a fault; True when the request is fully answered (or dropped)."""
        name = fault["fault"]
        if name == "drop":
            if kind in ALIASES["download"]:
                self._drop_after_half = True
                return False
            n = int(self.headers.get("Content-Length") or 0)
            try:
                self.rfile.read(n // 2)
            except OSError:
                pass
            self._drop()
            return True
        if self.command == "POST":
            self._read_body()
        if name == "503":
            raise B2Fail(503, "service_unavailable", "injected fault: service unavailable")
        if name == "429":
            after = str(fault["params"].get("retry_after", 1))
            raise B2Fail(
                429, "too_many_requests", "injected fault: slow down", {"Retry-After": after}
            )
        if name == "expired":
            token = self._token_from_request()
            with self.sim.lock:
                if token in self.sim.auth_token_to_key:
                    self.sim.expired_auth_tokens.add(token)
                elif token in self.sim.upload_tokens:
                    self.server.expired_upload_tokens.add(token)
            raise B2Fail(401, "expired_auth_token", "Authorization token has expired")
        return False

    def _token_from_request(self) -> str:
        token = self.headers.get("Authorization", "")
        if not token:
            q = parse_qs(urlsplit(self.path).query)
            token = q.get("Authorization", [""])[0]
        return token

    def _route(self, version: int, kind: str, rest: str | None, query) -> None:
        self.api_version = version
        if kind == "b2_authorize_account":
            return self._authorize(version)
        if kind == "b2_upload_file":
            return self._upload_file(rest or "")
        if kind == "b2_upload_part":
            return self._upload_part(rest or "")
        if kind == "b2_download_file_by_id":
            params = self._params(query)
            return self._download(file_id=params.get("fileId"))
        if kind == "b2_download_file_by_name":
            bucket, _, name = (rest or "").partition("/")
            self._body_read = True
            return self._download(bucket_name=unquote(bucket), file_name=unquote(name))
        handler = getattr(self, "_api_" + kind[3:], None)
        if handler is None:
            raise B2Fail(404, "not_found", f"unknown endpoint {self.path}")
        params = self._params(query)
        key = self._auth()
        with self.sim.lock:
            result = handler(key, params)
        self._json(result)

    # --- auth --------------------------------------------------------------------------

    def _auth(self) -> KeySimulator:
        token = self._token_from_request()
        if not token:
            raise B2Fail(401, "bad_auth_token", "missing Authorization header")
        with self.sim.lock:
            if token in self.sim.expired_auth_tokens:
                raise B2Fail(401, "expired_auth_token", "Authorization token has expired")
            key = self.sim.auth_token_to_key.get(token)
            if key is None or key.application_key_id not in self.sim.key_id_to_key:
                raise B2Fail(401, "bad_auth_token", "Invalid authorization token")
        self.token = token
        return key

    def _check(self, key: KeySimulator, capability: str, bucket_id=None, file_name=None) -> None:
        if capability not in key.capabilities:
            raise B2Fail(401, "unauthorized", f"application key does not have {capability}")
        if key.buckets_or_none and bucket_id is not None:
            if bucket_id not in [b["id"] for b in key.buckets_or_none]:
                raise B2Fail(401, "unauthorized", "application key is restricted to other buckets")
        if key.name_prefix_or_none and file_name is not None:
            if not file_name.startswith(key.name_prefix_or_none):
                raise B2Fail(401, "unauthorized", "application key is restricted to a name prefix")

    def _authorize(self, version: int) -> None:
        if self.command == "POST":
            self._read_body()
        auth = self.headers.get("Authorization", "")
        try:
            scheme, _, b64 = auth.partition(" ")
            key_id, _, secret = base64.b64decode(b64).decode().partition(":")
            if scheme.lower() != "basic":
                raise ValueError
        except ValueError:
            raise B2Fail(401, "bad_auth_token", "Authorization must be Basic") from None
        with self.sim.lock:
            key = self.sim.key_id_to_key.get(key_id)
            if key is None or secrets.compare_digest(key.key, secret) is False:
                raise B2Fail(
                    401, "unauthorized", "The applicationKeyId and/or the applicationKey are wrong."
                )
            token = f"4_{key.account_id}_{secrets.token_hex(16)}"
            self.sim.auth_token_to_key[token] = key
            buckets = None
            if key.buckets_or_none:
                buckets = [
                    dict(
                        id=b["id"],
                        name=getattr(
                            self.sim.bucket_id_to_bucket.get(b["id"]), "bucket_name", None
                        ),
                    )
                    for b in key.buckets_or_none
                ]
        base = self.server.base_url
        min_part, rec_part = self.server.min_part_size, self.server.recommended_part_size
        caps = list(key.capabilities)
        prefix = key.name_prefix_or_none
        if version <= 2:
            one = buckets[0] if buckets else {}
            reply = dict(
                accountId=key.account_id,
                authorizationToken=token,
                apiUrl=base,
                downloadUrl=base,
                s3ApiUrl=base,
                recommendedPartSize=rec_part,
                absoluteMinimumPartSize=min_part,
                allowed=dict(
                    bucketId=one.get("id"), bucketName=one.get("name"),
                    capabilities=caps, namePrefix=prefix,
                ),
            )  # fmt: skip
            if version == 1:
                reply["minimumPartSize"] = rec_part
        else:
            storage = dict(
                infoType="storageApi",
                apiUrl=base,
                downloadUrl=base,
                s3ApiUrl=base,
                recommendedPartSize=rec_part,
                absoluteMinimumPartSize=min_part,
            )
            if version == 3:
                one = buckets[0] if buckets else {}
                storage.update(
                    bucketId=one.get("id"), bucketName=one.get("name"),
                    capabilities=caps, namePrefix=prefix,
                )  # fmt: skip
            else:
                storage["allowed"] = dict(buckets=buckets, capabilities=caps, namePrefix=prefix)
            reply = dict(
                accountId=key.account_id,
                authorizationToken=token,
                applicationKeyExpirationTimestamp=None,
                apiInfo=dict(storageApi=storage, groupsApi=dict(infoType="groupsApi")),
            )
        self._json(reply)

    # --- helpers over the simulator ----------------------------------------------------

    def _bucket(self, bucket_id) -> LoopbackBucket:
        b = self.sim.bucket_id_to_bucket.get(bucket_id or "")
        if b is None:
            raise B2Fail(400, "bad_bucket_id", f"Invalid bucketId: {bucket_id}")
        return b

    def _file(self, file_id, missing_status: int = 400) -> tuple[LoopbackBucket, FileSimulator]:
        bucket_id = self.sim.file_id_to_bucket_id.get(file_id or "")
        bucket = self.sim.bucket_id_to_bucket.get(bucket_id or "")
        f = bucket.file_id_to_file.get(file_id) if bucket else None
        if f is None:
            if missing_status == 404:
                raise B2Fail(404, "not_found", f"File not present: {file_id}")
            raise B2Fail(400, "file_not_present", f"File not present: {file_id}")
        return bucket, f

    def _v1(self, d: dict) -> dict:
        if self.api_version == 1 and "contentLength" in d:
            d = dict(d, size=d["contentLength"])
        return d

    @staticmethod
    def _int(params, name, default, lo, hi) -> int:
        v = params.get(name)
        if v is None:
            return default
        try:
            v = int(v)
        except (TypeError, ValueError):
            raise _bad(f"{name} must be a number") from None
        if not lo <= v <= hi:
            raise _bad(f"{name} out of range ({lo}..{hi})")
        return v

    # --- JSON endpoints (called under sim.lock) ------------------------------------------

    def _api_list_buckets(self, key, p):
        self._check(key, "listBuckets")
        if p.get("accountId") != key.account_id:
            raise B2Fail(401, "unauthorized", "accountId does not match the key")
        buckets = []
        types = p.get("bucketTypes") or ["all"]
        for name in sorted(self.sim.bucket_name_to_bucket):
            b = self.sim.bucket_name_to_bucket[name]
            if p.get("bucketId") and b.bucket_id != p["bucketId"]:
                continue
            if p.get("bucketName") and name != p["bucketName"]:
                continue
            if key.buckets_or_none and b.bucket_id not in [x["id"] for x in key.buckets_or_none]:
                continue
            if "all" not in types and b.bucket_type not in types:
                continue
            buckets.append(b.bucket_dict(self.token))
        return dict(buckets=buckets)

    def _api_create_bucket(self, key, p):
        self._check(key, "writeBuckets")
        if p.get("accountId") != key.account_id:
            raise B2Fail(401, "unauthorized", "accountId does not match the key")
        sse = None
        if (p.get("defaultServerSideEncryption") or {}).get("mode") == "SSE-B2":
            sse = SSE_B2_AES
        b = self.sim.add_bucket(
            key.account_id, p.get("bucketName") or "", p.get("bucketType") or "",
            bucket_info=p.get("bucketInfo"), cors_rules=p.get("corsRules"),
            lifecycle_rules=p.get("lifecycleRules"), sse=sse,
        )  # fmt: skip
        return b.bucket_dict(self.token)

    def _api_delete_bucket(self, key, p):
        self._check(key, "deleteBuckets")
        b = self._bucket(p.get("bucketId"))
        if b.file_id_to_file:
            raise _bad("Cannot delete non-empty bucket")
        d = b.bucket_dict(self.token)
        del self.sim.bucket_name_to_bucket[b.bucket_name]
        del self.sim.bucket_id_to_bucket[b.bucket_id]
        return d

    def _api_update_bucket(self, key, p):
        self._check(key, "writeBuckets")
        b = self._bucket(p.get("bucketId"))
        return b._update_bucket(
            bucket_type=p.get("bucketType"), bucket_info=p.get("bucketInfo"),
            cors_rules=p.get("corsRules"), lifecycle_rules=p.get("lifecycleRules"),
            if_revision_is=p.get("ifRevisionIs"),
        )  # fmt: skip

    def _api_create_key(self, key, p):
        self._check(key, "writeKeys")
        return self.sim.create_key(
            self.sim.API_URL, self.token, key.account_id, p.get("capabilities") or [],
            p.get("keyName") or "key", p.get("validDurationInSeconds"), p.get("bucketIds"),
            p.get("namePrefix"),
        )  # fmt: skip

    def _api_list_keys(self, key, p):
        self._check(key, "listKeys")
        return self.sim.list_keys(
            self.sim.API_URL, self.token, key.account_id, p.get("maxKeyCount") or 1000,
            p.get("startApplicationKeyId"),
        )  # fmt: skip

    def _api_delete_key(self, key, p):
        self._check(key, "deleteKeys")
        k = self.sim.key_id_to_key.pop(p.get("applicationKeyId") or "", None)
        if k is None:
            raise _bad("application key does not exist")
        self.sim.all_application_keys = [x for x in self.sim.all_application_keys if x is not k]
        return k.as_key()

    def _list(self, key, p, versions: bool):
        b = self._bucket(p.get("bucketId"))
        prefix = p.get("prefix") or ""
        self._check(key, "listFiles", b.bucket_id, prefix)
        count = self._int(p, "maxFileCount", 100, 1, MAX_LIST_COUNT)
        result = b.list_names(
            self.token, p.get("startFileName"), count, prefix, p.get("delimiter") or None,
            versions, p.get("startFileId"),
        )  # fmt: skip
        result["files"] = [self._v1(f) for f in result["files"]]
        return result

    def _api_list_file_names(self, key, p):
        return self._list(key, p, versions=False)

    def _api_list_file_versions(self, key, p):
        return self._list(key, p, versions=True)

    def _api_get_file_info(self, key, p):
        b, f = self._file(p.get("fileId"), 404)
        self._check(key, "readFiles", b.bucket_id, f.name)
        return f.as_upload_result(self.token)

    def _api_hide_file(self, key, p):
        b = self._bucket(p.get("bucketId"))
        name = p.get("fileName") or ""
        check_file_name(name)
        self._check(key, "writeFiles", b.bucket_id, name)
        return b.hide(self.token, name)

    def _api_delete_file_version(self, key, p):
        b, f = self._file(p.get("fileId"))
        if f.name != p.get("fileName"):
            raise B2Fail(400, "file_not_present", f"File not present: {p.get('fileName')}")
        self._check(key, "deleteFiles", b.bucket_id, f.name)
        del b.file_name_and_id_to_file[f.sort_key()]
        del b.file_id_to_file[f.file_id]
        self.sim.file_id_to_bucket_id.pop(f.file_id, None)
        return dict(fileId=f.file_id, fileName=f.name)

    def _api_get_upload_url(self, key, p):
        b = self._bucket(p.get("bucketId"))
        self._check(key, "writeFiles", b.bucket_id)
        n = next(b.upload_url_counter)
        token = f"upl_{secrets.token_hex(12)}/{self.token}"
        self.sim.upload_tokens[token] = ("file", b.bucket_id)
        url = f"{self.server.base_url}/b2api/v{self.api_version}/b2_upload_file/{b.bucket_id}/c{n:04d}"
        return dict(bucketId=b.bucket_id, uploadUrl=url, authorizationToken=token)

    def _api_start_large_file(self, key, p):
        b = self._bucket(p.get("bucketId"))
        name = p.get("fileName") or ""
        check_file_name(name)
        self._check(key, "writeFiles", b.bucket_id, name)
        info = check_file_info(p.get("fileInfo") or {})
        ctype = _content_type(p.get("contentType"), name)
        f = b.store(name, ctype, "none", info, None, action="start")
        f.parts = []
        return f.as_start_large_file_result(self.token)

    def _api_get_upload_part_url(self, key, p):
        b, f = self._file(p.get("fileId"))
        self._check(key, "writeFiles", b.bucket_id, f.name)
        if f.action != "start":
            raise _bad(f"large file {f.file_id} is not unfinished")
        token = f"upl_{secrets.token_hex(12)}/{self.token}"
        self.sim.upload_tokens[token] = ("part", f.file_id)
        url = f"{self.server.base_url}/b2api/v{self.api_version}/b2_upload_part/{f.file_id}/p{secrets.token_hex(4)}"
        return dict(fileId=f.file_id, uploadUrl=url, authorizationToken=token)

    def _api_finish_large_file(self, key, p):
        b, f = self._file(p.get("fileId"))
        self._check(key, "writeFiles", b.bucket_id, f.name)
        return b.finish(
            self.token, f.file_id, p.get("partSha1Array") or [], self.server.min_part_size
        )

    def _api_cancel_large_file(self, key, p):
        b, f = self._file(p.get("fileId"))
        self._check(key, "writeFiles", b.bucket_id, f.name)
        if f.action != "start":
            raise _bad(f"large file {f.file_id} is not unfinished")
        result = b.cancel_large_file(f.file_id)
        self.sim.file_id_to_bucket_id.pop(f.file_id, None)
        return result

    def _api_list_parts(self, key, p):
        b, f = self._file(p.get("fileId"))
        self._check(key, "writeFiles", b.bucket_id, f.name)
        if f.action != "start":
            raise _bad(f"large file {f.file_id} is not unfinished")
        start = self._int(p, "startPartNumber", 1, 1, 10000)
        count = self._int(p, "maxPartCount", 100, 1, 1000)
        return f.list_parts(start, count)

    def _api_list_unfinished_large_files(self, key, p):
        b = self._bucket(p.get("bucketId"))
        prefix = p.get("namePrefix") or ""
        self._check(key, "listFiles", b.bucket_id, prefix)
        count = self._int(p, "maxFileCount", 100, 1, 100)
        start = p.get("startFileId") or ""
        ids = sorted(
            fid
            for fid, f in b.file_id_to_file.items()
            if f.action == "start" and f.name.startswith(prefix) and fid >= start
        )
        files = [b.file_id_to_file[i].as_start_large_file_result(self.token) for i in ids[:count]]
        return dict(files=files, nextFileId=ids[count] if len(ids) > count else None)

    def _copy_source(self, key, p) -> tuple[LoopbackBucket, FileSimulator, bytes]:
        sb, src = self._file(p.get("sourceFileId"))
        self._check(key, "readFiles", sb.bucket_id, src.name)
        if src.action != "upload":
            raise _bad("copy source is not an uploaded file")
        data = src.data_bytes
        a, b = _parse_range(p["range"], len(data)) if p.get("range") else (0, len(data) - 1)
        return sb, src, bytes(byte_range(data, a, b + 1))

    def _api_copy_file(self, key, p):
        sb, src, data = self._copy_source(key, p)
        db = self._bucket(p.get("destinationBucketId") or sb.bucket_id)
        name = p.get("fileName") or ""
        check_file_name(name)
        self._check(key, "writeFiles", db.bucket_id, name)
        if len(data) > MAX_COPY_SIZE:
            raise B2Fail(400, "source_too_large", f"Copy source too big: {len(data)}")
        directive = (p.get("metadataDirective") or "COPY").upper()
        if directive not in MetadataDirectiveMode.__members__:
            raise _bad(f"invalid metadataDirective {directive}")
        if directive == "COPY":
            if p.get("contentType") is not None or p.get("fileInfo") is not None:
                raise _bad("contentType and fileInfo must be absent with metadataDirective COPY")
            ctype, info = src.content_type, dict(src.file_info)
        else:
            if not p.get("contentType"):
                raise _bad("contentType is required with metadataDirective REPLACE")
            ctype = _content_type(p["contentType"], name)
            info = check_file_info(p.get("fileInfo") or {})
        f = db.store(name, ctype, hashlib.sha1(data).hexdigest(), info, data)
        return dict(f.as_upload_result(self.token), action="copy")

    def _api_copy_part(self, key, p):
        _, _, data = self._copy_source(key, p)
        lb, large = self._file(p.get("largeFileId"))
        self._check(key, "writeFiles", lb.bucket_id, large.name)
        if large.action != "start":
            raise _bad("largeFileId is not an unfinished large file")
        number = self._int(p, "partNumber", None, 1, 10000)
        if number is None:
            raise _bad("partNumber is required")
        if len(data) > MAX_PART_SIZE:
            raise _bad("part is larger than 5 GB")
        sha1 = hashlib.sha1(data).hexdigest()
        large.add_part(number, PartSimulator(large.file_id, number, len(data), sha1, data))
        return dict(
            fileId=large.file_id, partNumber=number, contentLength=len(data), contentSha1=sha1
        )

    def _api_get_download_authorization(self, key, p):
        b = self._bucket(p.get("bucketId"))
        prefix = p.get("fileNamePrefix") or ""
        self._check(key, "shareFiles", b.bucket_id, prefix)
        token = f"dl_{secrets.token_hex(12)}"
        self.sim.download_tokens[token] = (b.bucket_id, prefix)
        return dict(bucketId=b.bucket_id, fileNamePrefix=prefix, authorizationToken=token)

    # --- uploads -----------------------------------------------------------------------

    def _upload_auth(self, kind: str, target: str) -> KeySimulator:
        token = self.headers.get("Authorization", "")
        with self.sim.lock:
            entry = self.sim.upload_tokens.get(token)
            if entry is None:
                raise B2Fail(401, "bad_auth_token", "Invalid upload authorization token")
            if token in self.server.expired_upload_tokens:
                raise B2Fail(401, "expired_auth_token", "Upload authorization token has expired")
            if entry != (kind, target):
                raise B2Fail(401, "bad_auth_token", "upload token is for another upload URL")
            account_token = token.split("/", 1)[1]
            if account_token in self.sim.expired_auth_tokens:
                raise B2Fail(401, "expired_auth_token", "Authorization token has expired")
            key = self.sim.auth_token_to_key.get(account_token)
            if key is None:
                raise B2Fail(401, "bad_auth_token", "Invalid upload authorization token")
        self.token = account_token
        return key

    def _body_and_sha1(self) -> tuple[bytes, str]:
        if self.headers.get("Content-Length") is None:
            raise B2Fail(411, "length_required", "Content-Length is required")
        body = self._read_body()
        sha1 = (self.headers.get("X-Bz-Content-Sha1") or "").strip().lower()
        if sha1 == "hex_digits_at_end":
            if len(body) < 40:
                raise _bad("body too short for hex_digits_at_end")
            sha1 = bytes(body[-40:]).decode("ascii", "replace").lower()
            body = memoryview(body)[:-40]
        elif sha1 in ("do_not_verify", "unverified"):
            return body, "none"
        elif not sha1:
            raise _bad("X-Bz-Content-Sha1 is required")
        if hashlib.sha1(body).hexdigest() != sha1:
            raise _bad("Checksum did not match data received")
        return body, sha1

    def _upload_file(self, rest: str) -> None:
        bucket_id = rest.split("/", 1)[0]
        key = self._upload_auth("file", bucket_id)
        raw_name = self.headers.get("X-Bz-File-Name")
        if raw_name is None:
            raise _bad("X-Bz-File-Name is required")
        name = unquote_plus(raw_name)
        check_file_name(name)
        info = {}
        for k, v in self.headers.items():
            if k.lower().startswith("x-bz-info-"):
                info[k[len("x-bz-info-") :]] = unquote_plus(v)
        info = check_file_info(info)
        body, sha1 = self._body_and_sha1()
        ctype = _content_type(self.headers.get("Content-Type"), name)
        sse = SSE_B2_AES if self.headers.get("X-Bz-Server-Side-Encryption") else None
        with self.sim.lock:
            b = self._bucket(bucket_id)
            self._check(key, "writeFiles", b.bucket_id, name)
            f = b.store(name, ctype, sha1, info, body, sse)
            result = f.as_upload_result(self.token)
        self._json(result)

    def _upload_part(self, rest: str) -> None:
        file_id = rest.split("/", 1)[0]
        key = self._upload_auth("part", file_id)
        try:
            number = int(self.headers.get("X-Bz-Part-Number") or "")
        except ValueError:
            raise _bad("X-Bz-Part-Number is required") from None
        if not 1 <= number <= 10000:
            raise _bad("Part number must be in range 1 - 10000")
        if int(self.headers.get("Content-Length") or 0) > MAX_PART_SIZE + 40:
            raise _bad("part is larger than 5 GB")
        body, sha1 = self._body_and_sha1()
        with self.sim.lock:
            b, f = self._file(file_id)
            self._check(key, "writeFiles", b.bucket_id, f.name)
            if f.action != "start":
                raise _bad(f"large file {file_id} is not unfinished")
            f.add_part(number, PartSimulator(file_id, number, len(body), sha1, body))
        self._json(
            dict(fileId=file_id, partNumber=number, contentLength=len(body), contentSha1=sha1)
        )

    # --- downloads ---------------------------------------------------------------------

    def _download(self, file_id=None, bucket_name=None, file_name=None) -> None:
        token = self._token_from_request()
        with self.sim.lock:
            if file_id is not None:
                b, f = self._file(file_id, 404)
                if f.action != "upload":
                    raise B2Fail(404, "not_found", f"File not present: {file_id}")
            else:
                b = self.sim.bucket_name_to_bucket.get(bucket_name or "")
                if b is None:
                    raise B2Fail(404, "not_found", f"Bucket does not exist: {bucket_name}")
                keys = b.file_name_and_id_to_file.sorted_keys
                pos = bisect.bisect_left(keys, (file_name, ""))
                f = None
                if pos < len(keys) and keys[pos][0] == file_name:
                    f = b._visible(pos, b._name_end(pos))
                if f is None:
                    raise B2Fail(404, "not_found", f"File not present: {file_name}")
            self._download_auth(token, b, f)
            data = f.data_bytes or b""
            headers = {k: v for k, v in f.as_download_headers(None).items()}
        headers.pop("content-length", None)
        headers["Accept-Ranges"] = "bytes"
        status, start, end = 200, 0, len(data) - 1
        rng = self.headers.get("Range")
        if rng:
            start, end = _parse_range(rng, len(data))
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        body = byte_range(data, start, end + 1)
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command == "HEAD":
            return
        if self._drop_after_half:
            self._drop_after_half = False
            self._write_body(body[: len(body) // 2])
            self._drop()
            return
        self._write_body(body)

    def _download_auth(self, token: str, b: LoopbackBucket, f: FileSimulator) -> None:
        if b.bucket_type == "allPublic":
            return
        if not token:
            raise B2Fail(401, "unauthorized", "this bucket is private: Authorization is required")
        if token in self.sim.download_tokens:
            bucket_id, prefix = self.sim.download_tokens[token]
            if bucket_id != b.bucket_id or not f.name.startswith(prefix):
                raise B2Fail(401, "unauthorized", "download authorization does not cover this file")
            return
        if token in self.sim.expired_auth_tokens:
            raise B2Fail(401, "expired_auth_token", "Authorization token has expired")
        key = self.sim.auth_token_to_key.get(token)
        if key is None:
            raise B2Fail(401, "bad_auth_token", "Invalid authorization token")
        self._check(key, "readFiles", b.bucket_id, f.name)

    # --- test-only endpoints -------------------------------------------------------------

    def _test_endpoint(self, path: str, query) -> None:
        try:
            p = self._params(query)
            if path == "/test/stats":
                return self._json(self.ctl.snapshot())
            if path == "/test/reset":
                self.ctl.reset()
                return self._json({})
            if path == "/test/faults":
                if p.get("clear"):
                    with self.ctl.lock:
                        self.ctl.pending.clear()
                else:
                    params = {k: v for k, v in p.items() if k not in ("kind", "fault", "count")}
                    self.ctl.add_fault(
                        p.get("kind", "any"), str(p.get("fault")), int(p.get("count", 1)), **params
                    )
                return self._json(self.ctl.snapshot())
            if path == "/test/config":
                if "latency_ms" in p:
                    self.ctl.latency_ms = float(p["latency_ms"])
                if "bandwidth_mbps" in p:
                    self.ctl.bandwidth_mbps = float(p["bandwidth_mbps"])
                return self._json(
                    dict(latency_ms=self.ctl.latency_ms, bandwidth_mbps=self.ctl.bandwidth_mbps)
                )
            if path == "/test/create_key":
                return self._json(self.server.create_key(**p))
            if path == "/test/seed":
                return self._json(
                    self.server.seed(
                        p["bucket"],
                        p["names"],
                        int(p.get("size", 0)),
                        p.get("info"),
                        base64.b64decode(p["data_b64"]) if "data_b64" in p else None,
                    )
                )
            if path == "/test/file_versions":
                return self._json(self.server.file_versions(p.get("bucket", "")))
            raise B2Fail(404, "not_found", f"unknown test endpoint {path}")
        except B2Fail as fail:
            self._error(fail)


def _parse_range(spec: str, size: int) -> tuple[int, int]:
    m = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", spec)
    if not m or (not m.group(1) and not m.group(2)):
        raise B2Fail(416, "range_not_satisfiable", f"bad Range {spec!r}")
    if not m.group(1):
        n = int(m.group(2))
        start, end = max(0, size - n), size - 1
    else:
        start = int(m.group(1))
        end = int(m.group(2)) if m.group(2) else size - 1
        end = min(end, size - 1)
    if start >= size or start > end:
        raise B2Fail(
            416, "range_not_satisfiable", f"Range {spec!r} not satisfiable for {size} bytes"
        )
    return start, end


def _content_type(ctype: str | None, name: str) -> str:
    if not ctype or ctype == "b2/x-auto":
        return mimetypes.guess_type(name)[0] or "application/octet-stream"
    return ctype


class B2HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(
        self, addr, *, min_part_size: int, recommended_part_size: int, ctl: Control, verbose=False
    ):
        super().__init__(addr, Handler)
        self.sim = LoopbackSimulator()
        self.ctl = ctl
        self.verbose = verbose
        self.min_part_size = min_part_size
        self.recommended_part_size = recommended_part_size
        self.expired_upload_tokens: set[str] = set()
        host, port = self.server_address[:2]
        self.base_url = f"http://{host}:{port}"
        self.sim.API_URL = self.base_url
        self.sim.DOWNLOAD_URL = self.base_url

    def process_request(self, request, client_address) -> None:
        with self.ctl.lock:
            self.ctl.connections += 1
        super().process_request(request, client_address)

    def handle_error(self, request, client_address) -> None:
        # A client hanging up (or a "drop" fault) is routine here, not worth a traceback.
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)

    def create_key(
        self, capabilities=None, bucket=None, name_prefix=None, key_name="test-key"
    ) -> dict:
        with self.sim.lock:
            account_id = next(iter(self.sim.key_id_to_key.values())).account_id
            bucket_ids = None
            if bucket:
                b = self.sim.bucket_name_to_bucket.get(bucket)
                if b is None:
                    raise _bad(f"no such bucket {bucket}")
                bucket_ids = [b.bucket_id]
            token = f"setup_{secrets.token_hex(8)}"
            self.sim.auth_token_to_key[token] = self.sim.key_id_to_key[account_id]
            try:
                k = self.sim.create_key(
                    self.sim.API_URL, token, account_id,
                    list(capabilities if capabilities is not None else ALL_CAPABILITIES),
                    key_name, None, bucket_ids, name_prefix,
                )  # fmt: skip
            finally:
                del self.sim.auth_token_to_key[token]
        return dict(applicationKeyId=k["applicationKeyId"], applicationKey=k["applicationKey"])

    def create_bucket(self, name: str, bucket_type: str = "allPrivate") -> str:
        with self.sim.lock:
            account_id = next(iter(self.sim.key_id_to_key.values())).account_id
            return self.sim.add_bucket(account_id, name, bucket_type).bucket_id

    def seed(
        self, bucket: str, names: list[str], size: int = 0, info=None, data: bytes | None = None
    ) -> dict:
        """Store many small files at once, bypassing HTTP (for listing tests, benchmarks).

        With ``data`` every name gets those bytes (one sealed pair is valid under any name),
        else ``size`` bytes of filler."""
        with self.sim.lock:
            b = self.sim.bucket_name_to_bucket.get(bucket)
            if b is None:
                raise B2Fail(404, "not_found", f"no such bucket {bucket}")
            info = check_file_info(info or {})
            for name in names:
                check_file_name(name)
                body = (
                    data
                    if data is not None
                    else (name.encode() * (size // max(1, len(name)) + 1))[:size]
                )
                b.store(name, CONTENT_TYPE_DEFAULT, hashlib.sha1(body).hexdigest(), info, body)
        return dict(count=len(names))

    def file_versions(self, bucket: str) -> list[dict]:
        with self.sim.lock:
            b = self.sim.bucket_name_to_bucket.get(bucket)
            if b is None:
                raise B2Fail(404, "not_found", f"no such bucket {bucket}")
            out = []
            for key in b.file_name_and_id_to_file.sorted_keys:
                f = b.file_name_and_id_to_file[key]
                out.append(
                    dict(
                        fileName=f.name, fileId=f.file_id, action=f.action,
                        contentLength=len(f.data_bytes or b""), contentSha1=f.content_sha1,
                        fileInfo=dict(f.file_info), uploadTimestamp=f.upload_timestamp,
                        parts=len([p for p in getattr(f, "parts", []) or [] if p]),
                    )
                )  # fmt: skip
            return out


class B2Server:
    """The loopback server in this process, served from a background thread."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        latency_ms: float = 0,
        bandwidth_mbps: float = 0,
        min_part_size: int = REAL_MIN_PART_SIZE,
        recommended_part_size: int = REAL_RECOMMENDED_PART_SIZE,
        bucket: str = "b2cryptfs-test",
        verbose: bool = False,
    ) -> None:
        self.ctl = Control(latency_ms, bandwidth_mbps)
        self.httpd = B2HTTPServer(
            (host, port), min_part_size=min_part_size, recommended_part_size=recommended_part_size,
            ctl=self.ctl, verbose=verbose,
        )  # fmt: skip
        self.realm = self.httpd.base_url
        self.key_id, self.key = self.httpd.sim.create_account()
        self.bucket = bucket
        self.httpd.create_bucket(bucket)
        self._thread: threading.Thread | None = None

    @property
    def env(self) -> dict[str, str]:
        return {
            "B2_ENVIRONMENT": self.realm,
            "B2_APPLICATION_KEY_ID": self.key_id,
            "B2_APPLICATION_KEY": self.key,
        }

    def banner(self) -> str:
        return " ".join(f"{k}={v}" for k, v in {**self.env, "BUCKET": self.bucket}.items())

    def start(self) -> B2Server:
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, name="b2server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> B2Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # in-process equivalents of the /test/ endpoints
    def stats(self) -> dict:
        return self.ctl.snapshot()

    def reset_stats(self) -> None:
        self.ctl.reset()

    def inject(self, kind: str, fault: str, count: int = 1, **params: Any) -> None:
        self.ctl.add_fault(kind, fault, count, **params)

    def clear_faults(self) -> None:
        with self.ctl.lock:
            self.ctl.pending.clear()

    def create_bucket(self, name: str, bucket_type: str = "allPrivate") -> str:
        return self.httpd.create_bucket(name, bucket_type)

    def create_key(self, capabilities=None, bucket=None, name_prefix=None) -> dict:
        return self.httpd.create_key(capabilities, bucket, name_prefix)

    def file_versions(self, bucket: str) -> list[dict]:
        return self.httpd.file_versions(bucket)

    def seed(
        self, bucket: str, names: list[str], size: int = 0, info=None, data: bytes | None = None
    ) -> dict:
        return self.httpd.seed(bucket, names, size, info, data)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Loopback Backblaze B2 server for tests")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0 picks a free port")
    ap.add_argument("--latency-ms", type=float, default=0, help="delay before each reply")
    ap.add_argument("--bandwidth-mbps", type=float, default=0, help="per-connection rate limit")
    ap.add_argument("--min-part-size", type=int, default=REAL_MIN_PART_SIZE)
    ap.add_argument("--recommended-part-size", type=int, default=REAL_RECOMMENDED_PART_SIZE)
    ap.add_argument("--bucket", default="b2cryptfs-test", help="bucket created at start")
    ap.add_argument("--verbose", action="store_true", help="log every request to stderr")
    args = ap.parse_args(argv)
    server = B2Server(
        args.host, args.port, latency_ms=args.latency_ms, bandwidth_mbps=args.bandwidth_mbps,
        min_part_size=args.min_part_size, recommended_part_size=args.recommended_part_size,
        bucket=args.bucket, verbose=args.verbose,
    )  # fmt: skip
    print(server.banner(), flush=True)
    try:
        server.httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.httpd.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
