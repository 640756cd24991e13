"""A mount's first B2 calls without b2sdk: authorize, find the bucket, list the root.

b2sdk with requests takes about a third of a mount's start-up CPU to import, and a mount's
first listing needs only three calls (b2_authorize_account, b2_list_buckets unless the key
names its bucket, b2_list_file_names). These are made here with http.client; the
authorization is then handed to b2sdk (:class:`LazyB2Store`), which makes every later call,
imported once the mount is up (``preload``) or when first needed.

Only the plain success path is taken here. Anything else (an error status, a network error,
an unexpected reply, a proxy or an account database that requests and b2sdk would honour)
makes :func:`boot` return None: the caller then opens the store through b2sdk as before,
which reports the failure with the same one-line error and exit status.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import os
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from b2cryptfs.store.base import MTIME_KEY, Listing, ObjectInfo, Store, validate_name

log = logging.getLogger(__name__)

# b2sdk's realm names (b2sdk.v2 REALM_URLS); any other realm must be a URL.
REALM_URLS = {
    "production": "https://api.backblazeb2.com",
    "dev": "http://api.backblazeb2.xyz:8180",
    "staging": "https://api.backblaze.net",
}
API_VERSION = "v3"  # what b2sdk.v2 authorizes with: the reply has apiInfo.storageApi
LIST_PAGE = 10000
TIMEOUT = 20.0  # a hung server is left to b2sdk's retries after this


class _NotBooted(Exception):
    """Leave it to b2sdk."""


@dataclass(frozen=True)
class Authorized:
    """What b2_authorize_account said and the bucket's id, in b2sdk's set_auth_data terms."""

    realm: str
    key_id: str
    key: str
    account_id: str
    auth_token: str
    api_url: str
    download_url: str
    recommended_part_size: int
    absolute_minimum_part_size: int
    s3_api_url: str
    allowed: dict[str, Any]
    bucket: str
    bucket_id: str


class _Client:
    """JSON POSTs over one kept-alive connection per host; any surprise is _NotBooted."""

    def __init__(self) -> None:
        self._conns: dict[tuple[str, str], http.client.HTTPConnection] = {}

    def post(self, url: str, auth: str, body: dict[str, Any]) -> dict[str, Any]:
        parts = urllib.parse.urlsplit(url)
        key = (parts.scheme, parts.netloc)
        conn = self._conns.get(key)
        if conn is None:
            conn = self._conns[key] = _connect(parts.scheme, parts.netloc)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        data = json.dumps(body).encode()
        headers = {
            "Authorization": auth,
            "Content-Type": "application/json",
            "User-Agent": "b2cryptfs",
        }
        try:
            conn.request("POST", path, data, headers)
            resp = conn.getresponse()
            payload = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            raise _NotBooted(f"{url}: {exc}") from None
        if resp.status != 200:
            raise _NotBooted(f"{url}: HTTP {resp.status}")
        try:
            reply = json.loads(payload)
        except ValueError:
            raise _NotBooted(f"{url}: not JSON") from None
        if not isinstance(reply, dict):
            raise _NotBooted(f"{url}: not a JSON object")
        return reply

    def close(self) -> None:
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()


def _connect(scheme: str, netloc: str) -> http.client.HTTPConnection:
    if scheme == "http":
        return http.client.HTTPConnection(netloc, timeout=TIMEOUT)
    if scheme != "https":
        raise _NotBooted(f"unknown scheme {scheme}")
    import ssl

    # The CA bundle requests would use (it trusts certifi's, not the system's).
    cafile = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if not cafile:
        try:
            import certifi
        except ImportError:
            raise _NotBooted("no certifi") from None
        cafile = certifi.where()
    context = ssl.create_default_context(cafile=cafile)
    return http.client.HTTPSConnection(netloc, timeout=TIMEOUT, context=context)


def _realm_url(realm: str) -> str:
    url = REALM_URLS.get(realm, realm)
    if not url.startswith(("http://", "https://")):
        raise _NotBooted(f"realm {realm!r}")  # b2sdk says what is wrong with it
    return url.rstrip("/")


def _authorize(client: _Client, realm: str, key_id: str, key: str, bucket: str) -> Authorized:
    basic = base64.b64encode(f"{key_id}:{key}".encode()).decode()
    url = f"{_realm_url(realm)}/b2api/{API_VERSION}/b2_authorize_account"
    reply = client.post(url, f"Basic {basic}", {})
    try:
        api = reply["apiInfo"]["storageApi"]
        allowed = {k: api[k] for k in ("bucketId", "bucketName", "capabilities", "namePrefix")}
        auth = Authorized(
            realm=realm,
            key_id=key_id,
            key=key,
            account_id=reply["accountId"],
            auth_token=reply["authorizationToken"],
            api_url=api["apiUrl"].rstrip("/"),
            download_url=api["downloadUrl"],
            recommended_part_size=int(api["recommendedPartSize"]),
            absolute_minimum_part_size=int(api["absoluteMinimumPartSize"]),
            s3_api_url=api.get("s3ApiUrl") or "",
            allowed=allowed,
            bucket=bucket,
            bucket_id="",
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        raise _NotBooted("unexpected authorization reply") from None
    if allowed["bucketId"] is not None:
        # A key restricted to one bucket names it (b2sdk takes it from there, too); another
        # bucket is b2sdk's error to report.
        if allowed["bucketName"] != bucket:
            raise _NotBooted("key restricted to another bucket")
        return _with_bucket(auth, allowed["bucketId"])
    url = f"{auth.api_url}/b2api/{API_VERSION}/b2_list_buckets"
    reply = client.post(url, auth.auth_token, {"accountId": auth.account_id, "bucketName": bucket})
    found = [
        b
        for b in reply.get("buckets") or []
        if isinstance(b, dict) and str(b.get("bucketName", "")).lower() == bucket.lower()
    ]
    if not found or not found[0].get("bucketId"):
        raise _NotBooted("no such bucket")  # b2sdk's error
    return _with_bucket(auth, found[0]["bucketId"])


def _with_bucket(auth: Authorized, bucket_id: str) -> Authorized:
    return Authorized(**{**auth.__dict__, "bucket_id": bucket_id})


class BootLister:
    """list_dir and stat of B2Store, made over :class:`_Client` (same requests, same
    answers: tests/t3_store/test_b2boot.py compares the two)."""

    def __init__(self, clients: list[_Client], auth: Authorized, prefix: str, url: str) -> None:
        self._clients = clients  # every client of this boot, closed by boot()
        self._client = clients[-1]
        self._auth = auth
        self.prefix = prefix
        self.url = url
        self.allowed_prefix: str = auth.allowed.get("namePrefix") or ""

    def twin(self) -> BootLister:
        """The same lister over a connection of its own (for a call made in parallel)."""
        self._clients.append(_Client())
        return BootLister(self._clients, self._auth, self.prefix, self.url)

    def _list(self, params: dict[str, Any]) -> dict[str, Any]:
        url = f"{self._auth.api_url}/b2api/{API_VERSION}/b2_list_file_names"
        return self._client.post(url, self._auth.auth_token, params)

    def _obj(self, d: dict[str, Any]) -> ObjectInfo:
        info = {k: v if type(v) is str else str(v) for k, v in (d.get("fileInfo") or {}).items()}
        upload_ms = int(d.get("uploadTimestamp") or 0)
        mtime_ms = upload_ms
        if info.get(MTIME_KEY) is not None:
            try:
                mtime_ms = int(info[MTIME_KEY])
            except ValueError:
                pass
        size = d.get("contentLength", d.get("size")) or 0
        return ObjectInfo(
            name=d["fileName"][len(self.prefix) :],
            size=int(size),
            version_id=d["fileId"],
            mtime_ms=mtime_ms,
            upload_ms=upload_ms,
            info=info,
            action=d.get("action") or "upload",
        )

    def _pages(self, full: str) -> Iterator[dict[str, Any]]:
        params: dict[str, Any] = {
            "bucketId": self._auth.bucket_id,
            "maxFileCount": LIST_PAGE,
            "prefix": full,
            "delimiter": "/",
        }
        while True:
            page = self._list(params)
            yield from page.get("files") or []
            nxt = page.get("nextFileName")
            if nxt is None:
                return
            params["startFileName"] = nxt

    def list_dir(self, prefix: str) -> Listing:
        full = self.prefix + prefix
        a = self.allowed_prefix
        if a and not full.startswith(a) and a.startswith(full):
            step = a[len(full) :].split("/", 1)[0]
            return Listing([], [(full + step + "/")[len(self.prefix) :]])
        objects: list[ObjectInfo] = []
        prefixes: list[str] = []
        try:
            for d in self._pages(full):
                if d.get("action") == "folder" or d.get("fileId") is None:
                    prefixes.append(d["fileName"][len(self.prefix) :])
                elif d.get("action", "upload") == "upload":
                    objects.append(self._obj(d))
        except (KeyError, TypeError, ValueError, AttributeError):
            raise _NotBooted("unexpected listing reply") from None
        return Listing(objects, prefixes)

    def stat(self, name: str) -> ObjectInfo | None:
        validate_name(name)
        full = self.prefix + name
        if self.prefix:
            validate_name(full)
        if self.allowed_prefix and not full.startswith(self.allowed_prefix):
            return None
        params = {
            "bucketId": self._auth.bucket_id,
            "prefix": full,
            "startFileName": full,
            "maxFileCount": 1,
        }
        files = self._list(params).get("files") or []
        try:
            if files and files[0].get("fileName") == full and files[0].get("action") == "upload":
                return self._obj(files[0])
        except (KeyError, TypeError, ValueError, AttributeError):
            raise _NotBooted("unexpected listing reply") from None
        return None


def _may_boot() -> bool:
    # requests would go through a proxy (and apply no_proxy rules): b2sdk's path does that.
    return not any(k.lower().endswith("_proxy") for k in os.environ)


def boot(
    bucket: str,
    prefix: str,
    realm: str,
    key_id: str,
    key: str,
    calls: Callable[[BootLister], Any],
) -> tuple[Authorized, Any] | None:
    """Authorize, find ``bucket``, then ``calls(lister)`` (a mount's root listing and name
    key look-up); (authorization, what calls returned), or None for b2sdk to do it all."""
    if not _may_boot():
        return None
    clients = [_Client()]
    try:
        auth = _authorize(clients[0], realm, key_id, key, bucket)
        url = f"b2://{bucket}/{prefix}" if prefix else f"b2://{bucket}"
        return auth, calls(BootLister(clients, auth, prefix, url))
    except _NotBooted as exc:
        log.debug("opening %s through b2sdk (%s)", bucket, exc)
        return None
    finally:
        for client in clients:
            client.close()  # no socket is left for a forked daemon to share


class LazyB2Store:
    """A B2Store made from an :class:`Authorized` once b2sdk is wanted: at the first call,
    or in a thread started by :meth:`preload` (a mount calls it once it is up)."""

    def __init__(self, auth: Authorized, prefix: str, make: Callable[[Authorized], Store]) -> None:
        self._auth = auth
        self._make = make
        self._lock = threading.Lock()
        self._store: Store | None = None
        self.bucket_name = auth.bucket
        self.prefix = prefix
        self.url = f"b2://{auth.bucket}/{prefix}" if prefix else f"b2://{auth.bucket}"
        self.bucket_id = auth.bucket_id
        self.realm = auth.realm
        self.allowed_prefix: str = auth.allowed.get("namePrefix") or ""

    def __repr__(self) -> str:
        return f"B2Store({self.url!r})"

    def real(self) -> Store:
        """The b2sdk store (made now if it is not yet)."""
        with self._lock:
            if self._store is None:
                self._store = self._make(self._auth)
            return self._store

    def preload(self) -> None:
        """Import b2sdk and make the store in the background (errors wait for a real call)."""

        def run() -> None:
            try:
                self.real()
            except Exception:  # noqa: BLE001 - the first call that needs it raises it
                log.debug("loading b2sdk in the background failed", exc_info=True)

        threading.Thread(target=run, name="b2sdk-load", daemon=True).start()

    # The Store protocol (and read_into), each made by the b2sdk store.
    def list_dir(self, *args: Any, **kw: Any) -> Any:
        return self.real().list_dir(*args, **kw)

    def iter_all(self, *args: Any, **kw: Any) -> Any:
        return self.real().iter_all(*args, **kw)

    def stat(self, *args: Any, **kw: Any) -> Any:
        return self.real().stat(*args, **kw)

    def read(self, *args: Any, **kw: Any) -> Any:
        return self.real().read(*args, **kw)

    def read_into(self, *args: Any, **kw: Any) -> Any:
        return self.real().read_into(*args, **kw)  # type: ignore[attr-defined]

    def download(self, *args: Any, **kw: Any) -> Any:
        return self.real().download(*args, **kw)

    def upload_file(self, *args: Any, **kw: Any) -> Any:
        return self.real().upload_file(*args, **kw)

    def upload_bytes(self, *args: Any, **kw: Any) -> Any:
        return self.real().upload_bytes(*args, **kw)

    def copy(self, *args: Any, **kw: Any) -> Any:
        return self.real().copy(*args, **kw)

    def update_info(self, *args: Any, **kw: Any) -> Any:
        return self.real().update_info(*args, **kw)

    def hide(self, *args: Any, **kw: Any) -> Any:
        return self.real().hide(*args, **kw)

    def delete_version(self, *args: Any, **kw: Any) -> Any:
        return self.real().delete_version(*args, **kw)

    def versions(self, *args: Any, **kw: Any) -> Any:
        return self.real().versions(*args, **kw)
