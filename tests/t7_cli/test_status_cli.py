"""``status`` and ``umount`` where there is no b2cryptfs mount: one line, no traceback; and
how mounts are found in mountinfo (escaped names)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cli_testutil import assert_one_line, run

from b2cryptfs.cli.status import b2cryptfs_mounts, describe
from b2cryptfs.fs.mount import status_line


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("B2_", "B2CRYPTFS_"))}
    e["HOME"] = str(tmp_path)
    return e


def test_status_of_a_plain_directory(env: dict[str, str], tmp_path: Path) -> None:
    assert_one_line(run(["status", tmp_path], env), 1, "not a b2cryptfs mount")
    assert_one_line(run(["status", tmp_path / "nope"], env), 1, "no such directory")


def test_umount_wait_of_a_plain_directory_touches_nothing(
    env: dict[str, str], tmp_path: Path
) -> None:
    assert_one_line(run(["umount", "--wait", tmp_path], env), 1, "not a b2cryptfs mount")
    assert tmp_path.is_dir()
    assert_one_line(run(["umount", "--wait", "--timeout", "0", tmp_path], env), 2, "--timeout")


def test_umount_of_something_not_mounted(env: dict[str, str], tmp_path: Path) -> None:
    assert_one_line(run(["umount", tmp_path], env), 1, "cannot unmount", str(tmp_path))


def test_mounts_are_found_in_mountinfo(tmp_path: Path) -> None:
    info = tmp_path / "mountinfo"
    info.write_text(
        "22 1 0:20 / /proc rw,nosuid - proc proc rw\n"
        "95 29 0:48 / /home/u/my\\040photos rw,nosuid,nodev shared:1 - fuse.b2cryptfs "
        "b2://bucket/p rw,user_id=0,group_id=0\n"
        "96 29 0:49 / /mnt/other rw - fuse.sshfs host:/ rw\n"
    )
    assert list(b2cryptfs_mounts(str(info))) == [("/home/u/my photos", "b2://bucket/p")]
    assert list(b2cryptfs_mounts(str(tmp_path / "missing"))) == []


STATUS = {
    "store": "b2://bucket/p",
    "read_only": False,
    "pending_files": 3,
    "pending_bytes": 3 << 20,
    "uploading_files": 1,
    "uploading_bytes": 1 << 20,
    "uploaded_files": 5,
    "uploaded_bytes": 5 << 20,
    "rate_bytes_per_second": 1 << 20,
    "failing_files": 1,
    "failing": [{"path": "a.bin", "consecutive_failures": 4, "failing_for_seconds": 75.2}],
    "consecutive_failures": 4,
    "last_error": "a.bin: B2 unreachable",
    "last_error_at": 1_700_000_000.0,
    "writing_files": 0,
}


def test_status_texts_carry_the_figures() -> None:
    text = describe("/mnt/p", STATUS)
    assert text.startswith("/mnt/p: b2://bucket/p")
    assert "3 files, 3.0 MiB (1 in progress, 1.0 MiB)" in text
    assert "5 files, 5.0 MiB since the mount" in text
    assert "a.bin: B2 unreachable" in text and "4 failed attempts in a row" in text
    assert "a.bin: 4 in a row, for 75 s" in text
    line = status_line(STATUS, unmounted=True)
    assert line.startswith("unmounted; 3 upload(s) pending (3.0 MiB), 1 in progress, 1.0 MiB/s")
    assert line.endswith("failing: a.bin: B2 unreachable")
    assert status_line({**STATUS, "pending_files": 0}) == "5 file(s) uploaded, none pending"


def test_status_names_stuck_uploads() -> None:
    stuck = {"path": "d/bad.bin", "error": "B2 refuses this name", "attempts": 2}
    text = describe("/mnt/p", {**STATUS, "stuck_files": 1, "stuck": [stuck]})
    assert "stuck:       1 file the store keeps refusing" in text, text
    assert "d/bad.bin: B2 refuses this name" in text
    assert "stuck" not in describe("/mnt/p", STATUS)
