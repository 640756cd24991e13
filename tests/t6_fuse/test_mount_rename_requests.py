"""What moving a directory costs at the loopback server: per file at most two copies and two
hides, no look-ups per file (the directory's listing names both objects), and every file
readable under the new name afterwards."""

from __future__ import annotations

from pathlib import Path

from mountutil import Keys, b2_store, mounted, requires_fuse, rsa_keys  # noqa: F401
from reliability_util import wait_outbox_empty

pytestmark = requires_fuse

FILES = 24
LISTS = ("b2_list_file_names", "b2_list_file_versions")


def test_directory_move_costs_two_copies_and_two_hides_per_file(
    rsa_keys: Keys,  # noqa: F811
    tmp_path: Path,
    b2_server,
) -> None:
    spec = b2_store(tmp_path, b2_server)
    mnt = tmp_path / "mnt"
    with mounted(spec, mnt, tmp_path / "cache", rsa_keys.args()):
        (mnt / "old").mkdir()
        (mnt / "old" / "sub").mkdir()
        for i in range(FILES):
            (mnt / "old" / f"f{i:02d}.txt").write_bytes(b"%d\n" % i * 100)
        (mnt / "old" / "sub" / "deep.txt").write_bytes(b"deep\n")
        wait_outbox_empty(tmp_path / "cache")
        b2_server.reset_stats()
        (mnt / "old").rename(mnt / "new")
        stats = b2_server.stats()
        assert not (mnt / "old").exists()
        assert sorted(p.name for p in (mnt / "new").iterdir()) == sorted(
            [f"f{i:02d}.txt" for i in range(FILES)] + ["sub"]
        )
        for i in range(FILES):
            assert (mnt / "new" / f"f{i:02d}.txt").read_bytes() == b"%d\n" % i * 100
        assert (mnt / "new" / "sub" / "deep.txt").read_bytes() == b"deep\n"
    files = FILES + 1
    # Two copies and two hides per file, plus the directories' markers (old and new).
    assert files * 2 <= stats.get("b2_copy_file", 0) <= files * 2 + 2, stats
    assert stats.get("b2_hide_file", 0) <= files * 2 + 2, stats
    # Look-ups per directory level, not per file.
    assert sum(stats.get(k, 0) for k in LISTS) < FILES, stats
