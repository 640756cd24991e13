"""A B2 account's authorization, a bucket's id and a pool of upload URLs, over b2wire.

b2_authorize_account and b2_list_buckets are the two round trips before a mount can list
its root; made here with http.client they need nothing of b2sdk (whose import is most of a
mount's start-up CPU and memory). ``Account`` keeps what the authorization returned, in the
form b2sdk's ``set_auth_data`` takes, so that b2sdk, loaded later for an operation b2wire
does not make, starts from it instead of authorizing again.

Upload URLs (b2_get_upload_url) are kept in a pool: a URL serves one upload at a time, is
given back after it served and dropped after it failed, as b2sdk's pool does. ``prefetch``
fetches one in the background so that a mount's first upload does not wait a round trip.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from b2cryptfs.errors import AuthError, NoSuchBucket, UsageError
from b2cryptfs.store.b2wire import Wire, WireError

log = logging.getLogger(__name__)

API_VERSION = "v3"
# b2sdk's names for B2's realms; any other realm is taken as the API's URL.
REALMS = {
    "production": "https://api.backblazeb2.com",
    "dev": "http://api.backblazeb2.xyz:8180",
    "staging": "https://api.backblaze.net",
}


@dataclass
class Account:
    """What b2_authorize_account returned (``allowed`` in b2sdk.v2's shape)."""

    realm: str
    key_id: str
    key: str = field(repr=False)
    account_id: str
    token: str = field(repr=False)
    api_url: str
    download_url: str
    s3_api_url: str
    recommended_part_size: int
    absolute_minimum_part_size: int
    allowed: dict[str, Any]

    def sdk_auth_data(self) -> dict[str, Any]:
        """Keyword arguments of b2sdk's ``AbstractAccountInfo.set_auth_data``."""
        return dict(
            account_id=self.account_id,
            auth_token=self.token,
            api_url=self.api_url,
            download_url=self.download_url,
            recommended_part_size=self.recommended_part_size,
            absolute_minimum_part_size=self.absolute_minimum_part_size,
            application_key=self.key,
            realm=self.realm,
            s3_api_url=self.s3_api_url,
            allowed=self.allowed,
            application_key_id=self.key_id,
        )


def _allowed(storage: dict[str, Any]) -> dict[str, Any]:
    """The key's restrictions, as b2sdk.v2 keeps them: one bucket (id and name), the
    capabilities and a name prefix. B2 sends them under "allowed" with a list of buckets;
    some servers send b2sdk's flat form."""
    if isinstance(storage.get("allowed"), dict):
        a = storage["allowed"]
        buckets = a.get("buckets") or []
        one = buckets[0] if buckets else {}
        return {
            "bucketId": one.get("id"),
            "bucketName": one.get("name"),
            "capabilities": a.get("capabilities"),
            "namePrefix": a.get("namePrefix"),
        }
    keys = ("bucketId", "bucketName", "capabilities", "namePrefix")
    return {k: storage.get(k) for k in keys}


def authorize(wire: Wire, realm: str, key_id: str, key: str) -> Account:
    """One b2_authorize_account; a refused key is an AuthError, anything else WireError."""
    base = REALMS.get(realm, realm).rstrip("/")
    url = f"{base}/b2api/{API_VERSION}/b2_authorize_account"
    basic = base64.b64encode(f"{key_id}:{key}".encode()).decode()
    try:
        reply = wire.post_json(url, {"Authorization": f"Basic {basic}"}, b"{}")
    except WireError as exc:
        if exc.status == 401 or (exc.status == 403 and exc.code == "access_denied"):
            raise AuthError(
                f"B2 rejected the application key {key_id} (check B2_APPLICATION_KEY_ID / "
                "B2_APPLICATION_KEY or the saved b2 account)"
            ) from None
        if exc.code == "non_json_response" and "://s3." in url:
            raise UsageError(
                f"cannot authorize with B2 at {realm}: the realm looks like an S3 endpoint; "
                "give the B2 API URL"
            ) from None
        raise
    try:
        storage = reply["apiInfo"]["storageApi"] if "apiInfo" in reply else reply
        return Account(
            realm=realm,
            key_id=key_id,
            key=key,
            account_id=reply["accountId"],
            token=reply["authorizationToken"],
            api_url=storage["apiUrl"],
            download_url=storage["downloadUrl"],
            s3_api_url=storage.get("s3ApiUrl") or "",
            recommended_part_size=int(storage["recommendedPartSize"]),
            absolute_minimum_part_size=int(storage["absoluteMinimumPartSize"]),
            allowed=_allowed(storage),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise WireError(200, "bad_reply", f"authorization reply lacks {exc}") from None


def api_call(wire: Wire, api_url: str, token: str, endpoint: str, params: dict[str, Any]) -> Any:
    """POST one API call with the account's token; the JSON reply."""
    url = f"{api_url}/b2api/{API_VERSION}/{endpoint}"
    headers = {
        "Authorization": token,
        "Content-Type": "application/json",
        "Accept": "application/json",
    }
    return wire.post_json(url, headers, json.dumps(params).encode())


def bucket_id(
    name: str, account: Account, list_buckets: Callable[[dict[str, Any]], dict[str, Any]]
) -> str:
    """The id of bucket ``name``: from the key's restriction when it names one (no call,
    as b2sdk does), else one b2_list_buckets by name (``list_buckets(params)``)."""
    allowed = account.allowed
    if allowed.get("bucketId"):
        if allowed.get("bucketName") != name:
            raise AuthError(
                f"cannot open bucket {name}: the application key is restricted to another bucket"
            )
        return str(allowed["bucketId"])
    reply = list_buckets({"accountId": account.account_id, "bucketName": name})
    for b in reply.get("buckets") or []:
        if str(b.get("bucketName", "")).lower() == name.lower() and b.get("bucketId"):
            return str(b["bucketId"])
    raise NoSuchBucket(f"no such B2 bucket: {name}")


class UploadUrls:
    """A pool of (upload URL, token) pairs for one bucket; ``fetch()`` asks B2 for one."""

    def __init__(self, fetch: Callable[[], dict[str, Any]]) -> None:
        self._fetch = fetch
        self._free: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def take(self) -> tuple[str, str]:
        """A URL no other upload is using (a new one from B2 when the pool is empty)."""
        with self._lock:
            if self._free:
                return self._free.pop()
        got = self._fetch()
        return got["uploadUrl"], got["authorizationToken"]

    def give_back(self, url: str, token: str) -> None:
        """After an upload through it succeeded (a failed one's URL is just dropped)."""
        with self._lock:
            self._free.append((url, token))

    def clear(self) -> None:
        with self._lock:
            self._free.clear()

    def prefetch(self) -> None:
        """Fetch one URL into the pool in a daemon thread, if the pool is empty; a failure
        is only logged (the first upload asks again)."""
        with self._lock:
            if self._free:
                return

        def run() -> None:
            try:
                url, token = self.take()
            except Exception as exc:
                log.debug("could not fetch an upload URL ahead: %s", exc)
                return
            self.give_back(url, token)

        threading.Thread(target=run, name="b2-upload-url", daemon=True).start()
