"""Shared fixtures. Component fixtures live in their own modules and are re-exported here."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
sys.path.insert(0, str(TESTS))

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
