"""The package layering, checked from the source: imports point one way, modules stay small.

cli -> fs -> vfs -> bucket -> formats/keys -> store/cache; ``b2cryptfs.errors`` is usable by
all. formats may use keys (key types), keys never formats. Imports inside functions count.
"""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "b2cryptfs"

# Higher may import lower; equal ranks only the pairs allowed below.
RANK = {"cli": 6, "fs": 5, "vfs": 4, "bucket": 3, "formats": 2, "keys": 2, "store": 1, "cache": 1}
SAME_RANK_ALLOWED = {("formats", "keys")}
MAX_VFS_LINES = 400


def _modules() -> list[Path]:
    return sorted(p for p in PKG.rglob("*.py") if "__pycache__" not in p.parts)


def _package(path: Path) -> str | None:
    rel = path.relative_to(PKG).parts
    return rel[0] if len(rel) > 1 else None


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every b2cryptfs import in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((node.lineno, a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(("b2cryptfs", *path.relative_to(PKG).parts[:-1]))
                parts = base.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                name = f"{base}.{node.module}" if node.module else base
            else:
                name = node.module or ""
            out.append((node.lineno, name))
            # `from b2cryptfs import x` names a package through its attribute.
            if name == "b2cryptfs":
                out.extend((node.lineno, f"b2cryptfs.{a.name}") for a in node.names)
    return out


def test_the_checker_sees_imports() -> None:
    # The check below must not pass because it found nothing.
    found = _imports(PKG / "fs" / "operations.py")
    assert any(name.startswith("b2cryptfs.vfs") for _, name in found)
    assert len(_modules()) > 40


def test_imports_point_down() -> None:
    wrong: list[str] = []
    for path in _modules():
        src = _package(path)
        if src is None:
            continue
        for line, name in _imports(path):
            parts = name.split(".")
            if parts[0] != "b2cryptfs" or len(parts) < 2:
                continue
            dst = parts[1]
            if dst == src or dst == "errors" or dst not in RANK:
                continue
            if RANK[dst] < RANK[src] or (src, dst) in SAME_RANK_ALLOWED:
                continue
            wrong.append(f"{path.relative_to(PKG.parent)}:{line}: {src} imports {name}")
    assert not wrong, "imports against the layering:\n" + "\n".join(wrong)


def test_no_fuse_below_fs() -> None:
    wrong = [
        f"{path.relative_to(PKG.parent)}:{line}"
        for path in _modules()
        if _package(path) in ("vfs", "bucket", "formats", "keys", "store", "cache")
        for line, name in _imports(path)
        if name.split(".")[0] == "pyfuse3"
    ]
    assert not wrong, f"pyfuse3 imported below fs/: {wrong}"


def test_cli_reaches_vfs_only_for_the_mount() -> None:
    wrong = [
        f"{path.relative_to(PKG.parent)}:{line}: {name}"
        for path in _modules()
        if _package(path) == "cli" and path.name != "mount.py"
        for line, name in _imports(path)
        if name.startswith("b2cryptfs.vfs")
    ]
    assert not wrong, f"CLI commands must use bucket/, not vfs/: {wrong}"


def test_nothing_in_vfs_reaches_the_raw_store() -> None:
    wrong = [
        f"{path.relative_to(PKG.parent)}:{n}"
        for path in _modules()
        if _package(path) == "vfs"
        for n, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if "pairs.store" in text
    ]
    assert not wrong, f"the vfs talks to PairStore only: {wrong}"


def test_vfs_modules_are_small() -> None:
    sizes = {
        p.name: len(p.read_text(encoding="utf-8").splitlines())
        for p in _modules()
        if _package(p) == "vfs"
    }
    big = {name: n for name, n in sizes.items() if n > MAX_VFS_LINES}
    assert not big, f"vfs modules over {MAX_VFS_LINES} lines: {big}"
