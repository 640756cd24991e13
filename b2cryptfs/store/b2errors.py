"""What a B2 failure means: worth another try, a refused token, or which errors.py class.

b2wire's replies (WireError) say it themselves; exceptions from b2sdk, requests or urllib3
are asked of store/b2sdkpart.py, which is loaded only when b2sdk was (it raised them). The
rest is decided here without importing b2sdk.
"""

from __future__ import annotations

from b2cryptfs.errors import B2CryptfsError, StoreError, TransientError
from b2cryptfs.store.b2wire import WireError


class ShortRead(Exception):
    """A ranged read returned fewer bytes than asked (a connection cut short)."""


def one_line(exc: BaseException) -> str:
    inner = getattr(exc, "exception_info_list", None)
    if is_a(exc, "MaxRetriesExceeded") and inner:
        exc = inner[-1]
    return " ".join(str(exc).split()) or type(exc).__name__


def is_a(exc: BaseException, class_name: str) -> bool:
    """isinstance by name, for b2sdk classes (b2sdk is not imported here)."""
    return any(c.__name__ == class_name for c in type(exc).__mro__)


def from_sdk(exc: BaseException) -> bool:
    """Raised by b2sdk or below it (then b2sdkpart is loaded: it says what it means)."""
    return type(exc).__module__.startswith(("b2sdk", "requests", "urllib3"))


def bad_token(exc: BaseException) -> bool:
    """B2 refused the account token (expired or bad): authorize again."""
    if isinstance(exc, WireError):
        return exc.bad_token
    return is_a(exc, "InvalidAuthToken")


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, WireError):
        return exc.transient
    if isinstance(exc, ShortRead | ConnectionError | TimeoutError):
        return True
    if from_sdk(exc):
        from b2cryptfs.store import b2sdkpart

        return b2sdkpart.is_transient(exc)
    return False


def map_error(exc: BaseException, what: str) -> B2CryptfsError:
    """A store failure as an errors.py exception with a one-line message."""
    if isinstance(exc, B2CryptfsError):
        return exc
    if isinstance(exc, WireError):
        return exc.mapped(what)
    if from_sdk(exc):
        from b2cryptfs.store import b2sdkpart

        return b2sdkpart.map_error(exc, what)
    if is_transient(exc):
        return TransientError(f"{what}: B2 unreachable or failing after retries ({exc})")
    return StoreError(f"{what}: unexpected {type(exc).__name__}: {exc}")
