"""B2 credentials as the ``b2`` command-line tool takes them: the environment, else the
tool's saved account database, which is only read (never rewritten)."""

from __future__ import annotations

import os

from b2cryptfs.errors import AuthError


def account_db_path() -> str | None:
    """Where the b2 command-line tool keeps its account, if it exists (no side effects)."""
    env = os.environ.get("B2_ACCOUNT_INFO")
    if env:
        path = os.path.expanduser(env)
        return path if os.path.exists(path) else None
    candidates = [os.path.expanduser("~/.b2_account_info")]
    xdg = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    candidates.append(os.path.join(xdg, "b2", "account_info"))
    return next((p for p in candidates if os.path.exists(p)), None)


def b2_credentials(realm: str | None = None) -> tuple[str, str, str]:
    """(key id, key, realm) from the environment or the b2 tool's saved account."""
    key_id = os.environ.get("B2_APPLICATION_KEY_ID")
    key = os.environ.get("B2_APPLICATION_KEY")
    env_realm = os.environ.get("B2_ENVIRONMENT") or None
    if key_id or key:
        if not (key_id and key):
            raise AuthError(
                "set both B2_APPLICATION_KEY_ID and B2_APPLICATION_KEY (one is missing)"
            )
        return key_id, key, realm or env_realm or "production"
    path = account_db_path()
    if path is None:
        raise AuthError(
            "no B2 credentials: set B2_APPLICATION_KEY_ID and B2_APPLICATION_KEY, "
            "or run `b2 account authorize`"
        )
    from b2cryptfs.store.b2sdkpart import read_account_db  # b2sdk reads its sqlite file

    key_id, key, db_realm = read_account_db(path)
    return key_id, key, realm or env_realm or db_realm or "production"
