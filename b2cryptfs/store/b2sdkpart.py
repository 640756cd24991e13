"""b2sdk's part of B2Store: the operations b2wire does not make, loaded when first needed.

b2sdk (with requests and urllib3) costs a mount a quarter of a second of CPU and 26 MB at
start-up; listings, range reads and uploads of files do not need it (b2wire, b2account,
b2large). This module is imported the first time something else is asked for: a copy (a
rename, new file info), a hide, a delete, an upload of bytes above 1 MiB (and its cancel),
or the b2 tool's sqlite account file. ``Sdk`` is then built from the account data B2Store
holds (``set_auth_data``), so b2sdk does not authorize again. With proxy variables set,
everything goes through here and requests (which applies them and their no_proxy rules).

b2sdk's HTTP layer with B2Store's retries, and the meaning of its exceptions, are in
store/b2sdkhttp.py.
"""

from __future__ import annotations

import io
import logging
import sys
import warnings
from collections.abc import Callable, Iterator
from typing import Any

from b2cryptfs.errors import AuthError, NoSuchBucket
from b2cryptfs.store.b2account import Account

# Modules b2sdk and requests import only in case they are wanted, hidden during the import
# (the mount waits for it): pydantic (b2sdk re-exports it; a fifth of b2sdk's import time),
# tqdm (b2sdk's progress bars) and charset_normalizer (requests guesses the character set of
# a reply without one with it; B2's replies are JSON, utf-8 by definition).
_HIDDEN = [m for m in ("pydantic", "tqdm", "charset_normalizer", "chardet") if m not in sys.modules]
for _name in _HIDDEN:
    sys.modules[_name] = None  # type: ignore[assignment]
try:
    with warnings.catch_warnings():
        # requests warns when it finds no character set detector: none is wanted here.
        warnings.simplefilter("ignore")
        import requests  # noqa: F401 - imported here, under the filter (b2sdk needs it)
    from b2sdk.v2 import (
        AbstractProgressListener,
        SqliteAccountInfo,
        UploadSourceBytes,
        UploadSourceLocalFile,
        WriteIntent,
    )
    from b2sdk.v2 import exception as b2exc

    # is_transient and map_error: B2Store asks this module what b2sdk's exceptions mean.
    from b2cryptfs.store.b2sdkhttp import is_transient, make_api, map_error  # noqa: F401
finally:
    for _name in _HIDDEN:
        del sys.modules[_name]

log = logging.getLogger(__name__)

API_VERSION = "v3"
CONTENT_TYPE = "application/octet-stream"
FETCH_CHUNK = 256 * 1024


class _Listener(AbstractProgressListener):
    """b2sdk's progress listener, turned into a plain callback of the bytes sent so far
    (b2sdk types stay in this module)."""

    def __init__(self, callback: Callable[[int], None]) -> None:
        super().__init__()
        self._callback = callback

    def set_total_bytes(self, total_byte_count: int) -> None:
        pass  # the caller knows the size of what it uploads

    def bytes_completed(self, byte_count: int) -> None:
        self._callback(byte_count)


def clipped_chunks(resp: Any, begin: int, end: int, pos: list[int]) -> Iterator[bytes]:
    """The body of a range response for bytes [begin, end), in chunks; ``pos[0]`` is where
    the next chunk goes, which the caller advances as it takes each one. A server that
    ignored the Range header (status 200) has its leading bytes skipped."""
    skip = begin if resp.status_code == 200 else 0
    for chunk in resp.iter_content(chunk_size=FETCH_CHUNK):
        if skip:
            cut = min(skip, len(chunk))
            chunk, skip = chunk[cut:], skip - cut
        chunk = chunk[: end - pos[0]]
        if chunk:
            yield chunk
        if pos[0] >= end:
            break


def raw_body(resp: Any) -> Any:
    """The response's body as a file object to ``readinto`` from (http.client's, below
    urllib3), or None where its bytes must go through requests: not a plain 206 answer,
    content-encoded, or urllib3 read some already."""
    raw = getattr(resp, "raw", None)
    fp = getattr(raw, "_fp", None)
    if resp.status_code != 206 or not hasattr(fp, "readinto"):
        return None
    if resp.headers.get("Content-Encoding") or getattr(raw, "_fp_bytes_read", 1) != 0:
        return None
    return fp


def read_account_db(path: str) -> tuple[str, str, str | None]:
    """(key id, key, realm) from the b2 tool's sqlite account file, which is only read."""
    try:
        db = SqliteAccountInfo(file_name=path)
        try:
            return db.get_application_key_id(), db.get_application_key(), db.get_realm()
        finally:
            db.close()
    except b2exc.MissingAccountData:
        raise AuthError(f"the b2 account file {path} holds no authorized account") from None
    except Exception as exc:  # a corrupt or foreign sqlite file
        raise AuthError(f"cannot read the b2 account file {path}: {exc}") from None


class Sdk:
    """b2sdk's B2Api, an HTTP client with its retries and the bucket, for one B2Store.

    Thread-safe: b2sdk's B2Api is used from many threads by design."""

    def __init__(self, max_tries: int | None, backoff: float, workers: int) -> None:
        self.api, self.http = make_api(max_tries, backoff, workers)
        self.bucket: Any = None

    def adopt(self, account: Account, bucket_name: str, bucket_id: str) -> None:
        """Take the account data and the bucket B2Store found (no request)."""
        self.renew(account)
        self.bucket = self.api.BUCKET_CLASS(self.api, bucket_id, name=bucket_name)

    def renew(self, account: Account) -> None:
        self.api.account_info.set_auth_data(**account.sdk_auth_data())

    def authorize(self, realm: str, key_id: str, key: str, bucket: str) -> Account:
        """Authorization and the bucket's look-up by b2sdk itself (through requests)."""
        try:
            self.api.authorize_account(realm, key_id, key)
        except (b2exc.Unauthorized, b2exc.AccessDenied):
            raise AuthError(
                f"B2 rejected the application key {key_id} (check B2_APPLICATION_KEY_ID / "
                "B2_APPLICATION_KEY or the saved b2 account)"
            ) from None
        except Exception as exc:
            raise map_error(exc, f"cannot authorize with B2 at {realm}") from None
        try:
            self.bucket = self.api.get_bucket_by_name(bucket)
        except b2exc.NonExistentBucket:
            raise NoSuchBucket(f"no such B2 bucket: {bucket}") from None
        except Exception as exc:
            raise map_error(exc, f"cannot open bucket {bucket}") from None
        info = self.api.account_info
        return Account(
            realm=realm,
            key_id=key_id,
            key=key,
            account_id=info.get_account_id(),
            token=info.get_account_auth_token(),
            api_url=info.get_api_url(),
            download_url=info.get_download_url(),
            s3_api_url=info.get_s3_api_url(),
            recommended_part_size=info.get_recommended_part_size(),
            absolute_minimum_part_size=info.get_absolute_minimum_part_size(),
            allowed=info.get_allowed() or {},
        )

    # --- what only the proxy path asks of b2sdk (b2wire makes these otherwise) ----------

    def token(self) -> str:
        return self.api.account_info.get_account_auth_token()  # b2sdk renews it

    def reauthorize(self) -> None:
        if not self.api.authorize_automatically():
            raise AuthError("B2 refused the authorization and it cannot be renewed")

    def api_call(self, endpoint: str, token: str, params: dict[str, Any]) -> dict[str, Any]:
        url = f"{self.api.account_info.get_api_url()}/b2api/{API_VERSION}/{endpoint}"
        return self.http.post_json_return_json(url, {"Authorization": token}, params)

    def upload_small(self, full: str, data: bytes, sha1: str, info: dict[str, str]) -> dict:
        """One b2_upload_file through b2sdk's session (its URL pool, its auth retries): a
        fresh stream each try; a URL that failed is not given back to the pool."""
        return self.api.session.upload_file(
            self.bucket.id_, full, len(data), CONTENT_TYPE, sha1, dict(info), io.BytesIO(data)
        )

    def stream(
        self, version_id: str, begin: int, end: int, pos: list[int], sink: Callable[[bytes], None]
    ) -> None:
        """Bytes [begin, end) of a version into ``sink``, ``pos[0]`` advanced past each."""
        session = self.api.session
        url = session.get_download_url_by_id(version_id)
        with session.download_file_from_url(url, (begin, end - 1)) as resp:
            for chunk in clipped_chunks(resp, begin, end, pos):
                sink(chunk)
                pos[0] += len(chunk)

    def stream_into(
        self,
        version_id: str,
        begin: int,
        end: int,
        pos: list[int],
        free_space: Callable[[], memoryview],
        take: Callable[[bytes], None],
    ) -> None:
        """Bytes [begin, end) straight from the socket into ``free_space()`` where the
        response allows it, else through ``take`` (which advances ``pos``)."""
        session = self.api.session
        url = session.get_download_url_by_id(version_id)
        with session.download_file_from_url(url, (begin, end - 1)) as resp:
            body = raw_body(resp)
            if body is None:
                for chunk in clipped_chunks(resp, begin, end, pos):
                    take(chunk)
                return
            while pos[0] < end:
                n = body.readinto(free_space())
                if not n:
                    break
                pos[0] += n
            if pos[0] == end:
                resp.raw.release_conn()  # read to its end: it can serve the next request

    # --- what b2wire does not make ---------------------------------------------------

    def file_source(self, path: str, sha1: str) -> Any:
        return UploadSourceLocalFile(path, content_sha1=sha1)

    def bytes_source(self, data: bytes, sha1: str) -> Any:
        return UploadSourceBytes(data, content_sha1=sha1)

    def create_file(
        self,
        full: str,
        source: Any,
        sha1: str,
        info: dict[str, str],
        sizes: tuple[int, int, int | None],
        progress: Callable[[int], None] | None,
    ) -> Any:
        """An upload through b2sdk's emerger (parallel parts from ``sizes[0]`` bytes)."""
        part, minimum, maximum = sizes
        return self.bucket.create_file(
            [WriteIntent(source)],
            full,
            content_type=CONTENT_TYPE,
            file_info=dict(info),
            recommended_upload_part_size=part,
            min_part_size=minimum,
            max_part_size=maximum,
            large_file_sha1=sha1,
            # b2sdk closes its listener: a new one for each attempt.
            progress_listener=_Listener(progress) if progress is not None else None,
        )

    def copy(
        self,
        version_id: str,
        full: str,
        info: dict[str, str],
        length: int,
        source_info: dict[str, str],
        sizes: tuple[int, int | None],
    ) -> Any:
        """A server-side copy with ``info`` given explicitly (b2sdk's multi-part copy would
        not carry the source's over)."""
        minimum, maximum = sizes
        return self.bucket.copy(
            version_id,
            full,
            content_type=CONTENT_TYPE,
            file_info=dict(info),
            length=length,
            source_file_info=dict(source_info),
            source_content_type=CONTENT_TYPE,
            min_part_size=minimum,
            max_part_size=maximum,
        )

    def hide(self, full: str) -> None:
        """A hide marker on ``full``; nothing when there is nothing to hide."""
        try:
            self.bucket.hide_file(full)
        except (b2exc.FileNotPresent, b2exc.FileAlreadyHidden):
            return

    def delete_version(self, version_id: str, full: str) -> None:
        self.bucket.delete_file_version(version_id, full)

    def cancel_unfinished(self, full: str, sha1: str, sha1_key: str) -> None:
        """Cancel the unfinished large uploads of this very content (same name and
        ``sha1_key`` value), never another writer's."""
        for f in self.bucket.list_unfinished_large_files(prefix=full):
            if f.file_name == full and (f.file_info or {}).get(sha1_key) == sha1:
                self.bucket.cancel_large_file(f.file_id)
