"""Everyday programs on a real mount, then a remount: every byte and mtime is still right."""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import os
import random
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest
from mountutil import (  # noqa: F401
    ROOT,
    Keys,
    StoreSpec,
    mount_store,
    mounted,
    requires_fuse,
    rsa_keys,
    tree_snapshot,
)

pytestmark = requires_fuse
# Programs that must be present; a machine without them cannot show this.
PROGRAMS = ("rsync", "tar", "git", "sha256sum", "dd", "find", "du", "ls", "cp")


def run(*cmd: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    res = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=300, env=env
    )
    assert res.returncode == 0, f"{cmd} exited {res.returncode}:\n{res.stdout}\n{res.stderr}"
    return res.stdout


def git(*args: str | Path, cwd: Path) -> str:
    # No user or system git configuration: the test must not depend on this machine's.
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}
    ident = ["-c", "user.name=Test", "-c", "user.email=test@example.invalid"]
    return run("git", *ident, "-c", "init.defaultBranch=main", *args, cwd=cwd, env=env)


def sql(path: Path, statement: str, rows: list[tuple] | None = None) -> list[tuple]:
    """One connection per call, always closed: an open file would keep the mount busy."""
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        if rows is not None:
            db.executemany(statement, rows)
            return []
        return db.execute(statement).fetchall()


def source_tree(dest: Path) -> Path:
    """A copy of the project's own package (no byte-code), with varied sub-second mtimes."""
    src = dest / "src"
    shutil.copytree(ROOT / "b2cryptfs", src, ignore=shutil.ignore_patterns("__pycache__"))
    rng = random.Random(7)
    for p in sorted(src.rglob("*")):
        if p.is_file():
            ns = 1_600_000_000_000_000_000 + rng.randrange(10**17)
            os.utime(p, ns=(ns, ns))
    (src / "empty.txt").write_bytes(b"")
    (src / "binary.bin").write_bytes(random.Random(1).randbytes(200_000))
    return src


def relative_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize("mount_store", ["dir", "b2"], indirect=True)
def test_real_programs_then_remount(
    mount_store: StoreSpec,  # noqa: F811
    rsa_keys: Keys,  # noqa: F811
    tmp_path: Path,
) -> None:
    missing = [p for p in PROGRAMS if shutil.which(p) is None]
    if missing:
        pytest.skip(f"missing programs: {missing}")
    src = source_tree(tmp_path)
    src_snap = tree_snapshot(src)
    names = relative_files(src)
    mnt, cache = tmp_path / "mnt", tmp_path / "cache"
    rng = random.Random(42)

    with mounted(mount_store, mnt, cache, rsa_keys.args()):
        # cp -a keeps content and mtimes.
        run("cp", "-a", src, mnt / "cp")
        assert tree_snapshot(mnt / "cp") == src_snap

        # rsync -a twice: the second run finds nothing to transfer.
        run("rsync", "-a", f"{src}/", f"{mnt}/rsync/")
        stats = run("rsync", "-a", "--stats", f"{src}/", f"{mnt}/rsync/")
        assert "Number of regular files transferred: 0" in stats, stats
        assert tree_snapshot(mnt / "rsync") == src_snap

        # tar c onto the mount, tar x from it (tar keeps whole-second mtimes).
        run("tar", "cf", mnt / "tree.tar", "-C", src, ".")
        (mnt / "untar").mkdir()
        run("tar", "xf", mnt / "tree.tar", "-C", mnt / "untar")
        untarred = tree_snapshot(mnt / "untar")
        assert {k: v[0] for k, v in untarred.items()} == {k: v[0] for k, v in src_snap.items()}
        assert all(untarred[k][1] // 1000 == src_snap[k][1] // 1000 for k in src_snap)

        # sha256sum -c on the mount.
        sums = "".join(
            f"{hashlib.sha256((src / n).read_bytes()).hexdigest()}  {n}\n" for n in names
        )
        (mnt / "SHA256SUMS").write_text(sums)
        run("sha256sum", "-c", "--quiet", mnt / "SHA256SUMS", cwd=mnt / "untar")

        # git init/add/commit on the mount, git clone from it.
        repo = mnt / "repo"
        run("cp", "-a", src, repo)
        git("init", "-q", cwd=repo)
        git("add", "-A", cwd=repo)
        git("commit", "-q", "-m", "first", cwd=repo)
        (repo / "added.txt").write_text("second commit\n")
        git("add", "added.txt", cwd=repo)
        git("commit", "-q", "-m", "second", cwd=repo)
        clone = tmp_path / "clone"
        git("clone", "-q", repo, clone, cwd=tmp_path)
        assert git("log", "--format=%s", cwd=clone).split() == ["second", "first"]
        assert git("fsck", "--strict", cwd=repo) == ""
        for n in names:
            assert (clone / n).read_bytes() == (src / n).read_bytes(), n

        # An sqlite3 database: inserts in transactions, then queries.
        db_path = mnt / "data.sqlite"
        sql(db_path, "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, blob BLOB)")
        for batch in range(5):
            rows = [(f"row{batch}-{i}", rng.randbytes(100)) for i in range(200)]
            sql(db_path, "INSERT INTO t (name, blob) VALUES (?, ?)", rows)
        assert sql(db_path, "SELECT COUNT(*) FROM t") == [(1000,)]
        assert sql(db_path, "SELECT name FROM t WHERE id = 777") == [("row3-176",)]
        assert sql(db_path, "PRAGMA integrity_check") == [("ok",)]

        # An editor-style save: write a temporary file, rename it over the original.
        doc = mnt / "doc.txt"
        doc.write_text("version 1\n")
        tmp = mnt / ".doc.txt.swp"
        with open(tmp, "w") as fh:
            fh.write("version 2\n" * 100)
            fh.flush()
            os.fsync(fh.fileno())
        os.rename(tmp, doc)
        assert doc.read_text() == "version 2\n" * 100
        assert not tmp.exists()

        # >> appends.
        for i in range(5):
            run("sh", "-c", f"echo line {i} >> {mnt}/appended.log")
        assert (mnt / "appended.log").read_text() == "".join(f"line {i}\n" for i in range(5))

        # dd seek into the middle of an existing file, without truncating it.
        base = rng.randbytes(1_000_003)
        (mnt / "dd.bin").write_bytes(base)
        patch = rng.randbytes(5 * 4096)
        (tmp_path / "patch").write_bytes(patch)
        run(
            "dd", f"if={tmp_path / 'patch'}", f"of={mnt / 'dd.bin'}", "bs=4096", "seek=37",
            "conv=notrunc", "status=none",
        )  # fmt: skip
        expected_dd = base[: 37 * 4096] + patch + base[37 * 4096 + len(patch) :]
        assert (mnt / "dd.bin").read_bytes() == expected_dd

        # mmap reads.
        with (
            open(mnt / "dd.bin", "rb") as fh,
            mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as m,
        ):
            assert len(m) == len(expected_dd)
            assert m[100_000:300_000] == expected_dd[100_000:300_000]
            assert m[-10:] == expected_dd[-10:]

        # find, du, ls -lR see the tree as it is.
        found = run("find", mnt / "cp", "-type", "f").split("\n")
        assert sorted(str(Path(f).relative_to(mnt / "cp")) for f in found if f) == names
        du = int(run("du", "-sb", mnt / "cp").split()[0])
        assert du >= sum(len(v[0]) for v in src_snap.values())
        assert int(run("du", "-b", mnt / "dd.bin").split()[0]) == len(expected_dd)
        listing = run("ls", "-lR", mnt)
        for n in names:
            assert Path(n).name in listing
        assert f" {len(expected_dd)} " in listing

        before = tree_snapshot(mnt)

    # Remount (same store, fresh cache): every byte and every mtime survived.
    with mounted(mount_store, mnt, tmp_path / "cache2", rsa_keys.args()):
        after = tree_snapshot(mnt)
        assert sorted(after) == sorted(before)
        for name in before:
            assert after[name] == before[name], name
        assert {k: v for k, v in after.items() if k.startswith("cp/")} == {
            f"cp/{k}": v for k, v in src_snap.items()
        }
        assert git("log", "--format=%s", cwd=mnt / "repo").split() == ["second", "first"]
        assert sql(mnt / "data.sqlite", "SELECT COUNT(*) FROM t") == [(1000,)]
