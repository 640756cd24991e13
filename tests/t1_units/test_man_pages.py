"""The manual pages render without a groff or man warning (``man --warnings``)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

MAN_DIR = Path(__file__).resolve().parents[2] / "man"
PAGES = sorted(p.name for p in MAN_DIR.iterdir() if p.suffix[1:].isdigit())


@pytest.mark.skipif(shutil.which("man") is None, reason="no man(1)")
@pytest.mark.parametrize("page", PAGES)
def test_page_renders_without_warnings(page: str) -> None:
    env = {**os.environ, "MANWIDTH": "80", "MAN_KEEP_FORMATTING": "0", "LC_ALL": "C.UTF-8"}
    res = subprocess.run(
        ["man", "--warnings", "-l", str(MAN_DIR / page)],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert res.returncode == 0 and res.stderr == "", res.stderr
    assert len(res.stdout.splitlines()) > 20
