"""Shared fixtures. Component fixtures live in their own modules and are re-exported here."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
sys.path.insert(0, str(TESTS))  # the shared helpers (mountutil, b2fixtures, ...) stay in tests/


class _RefusePyfuse3:
    """B2CRYPTFS_BLOCK_PYFUSE3=1: the tiers below real FUSE (t1-t4) must run without pyfuse3,
    so that the layers under fs/ are proven not to need it (CI runs them this way)."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name == "pyfuse3" or name.startswith("pyfuse3."):
            raise ImportError(f"{name} is blocked by B2CRYPTFS_BLOCK_PYFUSE3")
        return None


if os.environ.get("B2CRYPTFS_BLOCK_PYFUSE3") == "1":
    if "pyfuse3" in sys.modules:  # imported before this conftest: the block would prove nothing
        raise RuntimeError("B2CRYPTFS_BLOCK_PYFUSE3=1 but pyfuse3 is already imported")
    sys.meta_path.insert(0, _RefusePyfuse3())

# Tests run the real command-line tool in a subprocess: this is how it is invoked.
B2CRYPTFS = [sys.executable, "-m", "b2cryptfs"]


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    """Environment for subprocess runs of the CLI: no inherited passphrase or B2 account."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("B2_", "B2CRYPTFS_"))}
    env["HOME"] = str(tmp_path / "home")
    (tmp_path / "home").mkdir(exist_ok=True)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


# Fixtures of the loopback B2 server (b2_server, b2_bucket, b2_cli_env).
from b2fixtures import *  # noqa: E402,F401,F403

# Fixtures of the pair-layer tests (ident, any_store, counting_store).
from pair_fixtures import *  # noqa: E402,F401,F403
