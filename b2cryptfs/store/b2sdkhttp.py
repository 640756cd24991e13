"""b2sdk's HTTP layer with B2Store's retry budget, and what b2sdk's exceptions mean.

Imported by store/b2sdkpart.py only (inside its hiding of modules b2sdk need not load).
b2sdk has no public way to bound its own HTTP retries: one private classmethod is
overridden, checked by ``check_b2sdk_internals`` (tests/t2_store/test_store_retries.py).
"""

from __future__ import annotations

import logging
import os

import requests
from b2sdk.v2 import B2Api, B2Http, B2HttpApiConfig, B2Session, InMemoryAccountInfo, InMemoryCache
from b2sdk.v2 import exception as b2exc
from b2sdk.version import VERSION as b2sdk_version

from b2cryptfs.errors import (
    AuthError,
    B2CryptfsError,
    InvalidName,
    NoSuchBucket,
    NotFound,
    StoreError,
    TransientError,
    UsageError,
)
from b2cryptfs.store.b2errors import is_a
from b2cryptfs.store.b2retry import retrying

log = logging.getLogger(__name__)

USER_AGENT = "b2cryptfs"

# The b2sdk internals this module depends on (see check_b2sdk_internals).
B2SDK_INTERNALS = (
    "B2Http._translate_and_retry(fcn, try_count, post_params)",
    "B2Http._translate_errors(fcn, post_params)",
    "B2Session.B2HTTP_CLASS",
    "B2Api.SESSION_CLASS",
)


def check_b2sdk_internals() -> list[str]:
    """What is missing of the b2sdk internals the tuned HTTP layer overrides ([] if none).

    b2sdk has no public way to bound its HTTP retries; the override below replaces one
    private classmethod. When b2sdk changes it, the store falls back to b2sdk's own HTTP
    layer (fixed retry counts) with a warning, and tests/test_store_retries.py fails.
    """
    import inspect

    problems = []
    for name, params in (
        ("_translate_and_retry", ["fcn", "try_count", "post_params"]),
        ("_translate_errors", ["fcn", "post_params"]),
    ):
        fn = getattr(B2Http, name, None)
        if fn is None:
            problems.append(f"b2sdk.v2.B2Http.{name} is gone")
            continue
        got = list(inspect.signature(fn).parameters)
        if got[: len(params)] != params:
            problems.append(f"b2sdk.v2.B2Http.{name} takes {got}, expected {params}")
    if not isinstance(B2Session.__dict__.get("B2HTTP_CLASS"), staticmethod):
        problems.append("b2sdk.v2.B2Session.B2HTTP_CLASS is not a staticmethod attribute")
    if not hasattr(B2Api, "SESSION_CLASS"):
        problems.append("b2sdk.v2.B2Api.SESSION_CLASS is gone")
    return problems


def _http_class(max_tries: int | None, backoff: float) -> type[B2Http]:
    """b2sdk's HTTP layer with a configurable retry budget and first backoff.

    b2sdk retries 5xx, 429 (honouring Retry-After) and connection errors itself, 5 times
    for API calls and 20 for data, starting at 1 s; ``max_tries`` caps those counts (tests
    use it so that a persistent fault fails in seconds, not minutes). Inside a transfer,
    one try: the transfer's deadline-bound loop does the retrying.
    """

    class TunedHttp(B2Http):
        @classmethod
        def _translate_and_retry(cls, fcn, try_count, post_params=None):
            call = lambda: cls._translate_errors(fcn, post_params)  # noqa: E731
            return retrying(call, try_count, max_tries, backoff)

    return TunedHttp


def _http_session() -> requests.Session:
    """A requests session that reads the environment once, not at every request.

    requests looks for proxy variables, CA bundle variables and ~/.netrc on each request
    (about half a millisecond of the interpreter, the largest fixed cost of a download
    range). Without proxy variables (whose no_proxy rules only requests applies) the CA
    bundle it would pick is taken here, once, and the look is skipped (B2 authorizes by
    header, never by .netrc).
    """
    session = requests.Session()
    if not any(k.lower().endswith("_proxy") for k in os.environ):
        session.trust_env = False
        bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        if bundle:
            session.verify = bundle
    return session


def make_api(max_tries: int | None, backoff: float, workers: int) -> tuple[B2Api, B2Http]:
    """(the B2Api, an HTTP client with the same retries for the calls b2sdk cannot make)."""
    config = B2HttpApiConfig(user_agent_append=USER_AGENT, http_session_factory=_http_session)
    problems = check_b2sdk_internals()
    if problems:
        log.warning(
            "b2sdk %s changed its internals (%s): using its default HTTP retries",
            b2sdk_version,
            "; ".join(problems),
        )
        http_cls: type[B2Http] = B2Http
        api_cls: type[B2Api] = B2Api
    else:
        http_cls = _http_class(max_tries, backoff)

        class Session(B2Session):
            B2HTTP_CLASS = staticmethod(http_cls)

        class Api(B2Api):
            SESSION_CLASS = staticmethod(Session)

        api_cls = Api
    api = api_cls(
        InMemoryAccountInfo(),
        cache=InMemoryCache(),
        max_upload_workers=workers,
        max_copy_workers=workers,
        max_download_workers=workers,
        api_config=config,
    )
    return api, http_cls(config)


# --- errors ----------------------------------------------------------------------------

_TRANSIENT_B2 = (
    b2exc.B2ConnectionError,
    b2exc.B2RequestTimeout,
    b2exc.ServiceError,
    b2exc.TooManyRequests,
    b2exc.TruncatedOutput,
    b2exc.ConnectionReset,
    b2exc.BrokenPipe,
    b2exc.UnknownHost,
    b2exc.RequestTimeout,
    b2exc.ChecksumMismatch,
    b2exc.AlreadyFailed,
    b2exc.MaxRetriesExceeded,
)
_TRANSIENT_NET = (requests.RequestException, ConnectionError, TimeoutError)


def is_transient(exc: BaseException) -> bool:
    """A b2sdk, requests or urllib3 exception worth another try."""
    if isinstance(exc, b2exc.MaxRetriesExceeded):
        inner = getattr(exc, "exception_info_list", None) or []
        return not inner or is_transient(inner[-1])
    if isinstance(exc, _TRANSIENT_B2 + _TRANSIENT_NET):
        return True
    if isinstance(exc, b2exc.InvalidAuthToken) and exc.code == "expired_auth_token":
        return True  # b2sdk re-authorizes once per call; another attempt re-authorizes again
    try:
        from urllib3.exceptions import HTTPError as Urllib3Error
    except ImportError:  # pragma: no cover
        return False
    return isinstance(exc, Urllib3Error)


def map_error(exc: BaseException, what: str) -> B2CryptfsError:
    """A b2sdk / requests exception as an errors.py exception with a one-line message."""
    if isinstance(exc, B2CryptfsError):
        return exc
    if isinstance(exc, b2exc.MaxRetriesExceeded):
        inner = getattr(exc, "exception_info_list", None) or []
        if inner and not is_transient(inner[-1]):
            return map_error(inner[-1], what)
        last = f": {inner[-1]}" if inner else ""
        return TransientError(f"{what}: B2 kept failing after {len(inner)} attempts{last}")
    if isinstance(exc, b2exc.InvalidAuthToken):
        return AuthError(f"{what}: B2 rejected the authorization ({exc.message})")
    if isinstance(exc, b2exc.RestrictedBucket | b2exc.BucketNotAllowed):
        return AuthError(f"{what}: the application key is restricted to another bucket")
    if isinstance(exc, b2exc.Unauthorized | b2exc.NotAllowedByAppKeyError | b2exc.AccessDenied):
        msg = getattr(exc, "message", None) or str(exc)
        return AuthError(f"{what}: the application key is not allowed to do this ({msg})")
    if isinstance(exc, b2exc.NonExistentBucket | b2exc.BucketIdNotFound):
        return NoSuchBucket(f"{what}: no such bucket")
    if isinstance(exc, b2exc.FileNotPresent) or is_a(exc, "ResourceNotFound"):
        return NotFound(f"{what}: no such object or version")
    if isinstance(exc, b2exc.UnusableFileName | b2exc.FileNameNotAllowed):
        return InvalidName(f"{what}: B2 refuses this name ({exc})")
    if isinstance(exc, b2exc.CapExceeded):
        return StoreError(f"{what}: a B2 account cap is exceeded ({exc})")
    if isinstance(exc, b2exc.ClockSkew):
        return StoreError(f"{what}: the local clock differs too much from B2's ({exc})")
    if isinstance(exc, b2exc.PotentialS3EndpointPassedAsRealm):
        return UsageError(f"{what}: the realm looks like an S3 endpoint; give the B2 API URL")
    if is_transient(exc):
        return TransientError(f"{what}: B2 unreachable or failing after retries ({exc})")
    if isinstance(exc, b2exc.BadRequest):
        return StoreError(f"{what}: B2 refused the request ({exc})")
    if isinstance(exc, b2exc.B2Error):
        return StoreError(f"{what}: {exc}")
    return StoreError(f"{what}: unexpected {type(exc).__name__}: {exc}")
