"""put/get/ls with what is not a plain file's bytes: symbolic links, FIFOs, sockets, devices,
and every entry's mode, owner and mtime. Real files, the real CLI in subprocesses, a
directory store (and the loopback B2 server for one round trip)."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest
from cli_testutil import assert_one_line, make_age_identity, ok, run
from conftest import ROOT

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="owners and devices need root")
T2020 = 1_577_934_245_123_456_789  # an mtime with nanoseconds, 2020-01-02


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("B2_", "B2CRYPTFS_"))}
    e["HOME"] = str(tmp_path)
    e["PYTHONPATH"] = str(ROOT)
    return e


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, str]:
    return make_age_identity(tmp_path)


def make_tree(src: Path) -> socket.socket:
    """A tree of every kind of entry, with modes, owners and mtimes of its own. Returns the
    socket bound in it (the caller closes it)."""
    (src / "sub" / "deeper").mkdir(parents=True)
    (src / "empty").mkdir()
    (src / "plain.txt").write_text("plain\n")
    (src / "tool").write_bytes(b"#!/bin/sh\necho hi\n")
    (src / "sub" / "secret").write_bytes(os.urandom(5000))
    (src / "sub" / "deeper" / "leaf").write_text("leaf")
    (src / "rel-link").symlink_to("plain.txt")
    (src / "abs-link").symlink_to("/etc/hostname")
    (src / "dangling").symlink_to("../nowhere/at/all")
    (src / "dir-link").symlink_to("sub")
    (src / "long-link").symlink_to("x/" * 1500 + "end")  # 3,003 bytes, below PATH_MAX
    os.mkfifo(src / "sub" / "pipe", 0o640)
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(src / "sock"))
    if os.geteuid() == 0:
        os.mknod(src / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
        os.mknod(src / "disk", stat.S_IFBLK | 0o660, os.makedev(7, 42))
        os.chmod(src / "null", 0o666)  # mknod took the umask off
        os.chmod(src / "disk", 0o660)
        os.chown(src / "sub" / "secret", 1234, 5678)
        os.chown(src / "rel-link", 4321, 8765, follow_symlinks=False)
        os.chown(src / "sub" / "deeper", 2222, 3333)
    os.chmod(src / "tool", 0o4755)  # setuid: kept with -p only
    os.chmod(src / "sub" / "secret", 0o600)
    os.chmod(src / "empty", 0o1750)
    os.chmod(src / "sub" / "deeper", 0o550)  # read-only: get fills it before its mode
    for p in sorted(src.rglob("*"), key=lambda p: -len(p.parts)):
        os.utime(p, ns=(T2020, T2020 + len(p.name)), follow_symlinks=False)
    os.utime(src, ns=(T2020, T2020))
    return sock


def snapshot(root: Path, *, owners: bool = True) -> dict[str, tuple]:
    """Everything tar --numeric-owner keeps, per relative path."""
    out = {}
    for p in [root, *sorted(root.rglob("*"))]:
        st = os.lstat(p)
        kind = stat.S_IFMT(st.st_mode)
        item: tuple = (kind, stat.S_IMODE(st.st_mode), st.st_mtime_ns)
        if owners:
            item += (st.st_uid, st.st_gid)
        if stat.S_ISLNK(st.st_mode):
            item += (os.readlink(p),)
        elif stat.S_ISREG(st.st_mode):
            item += (p.read_bytes(),)
        elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            item += (st.st_rdev,)
        out[str(p.relative_to(root))] = item
    return out


def test_put_r_get_r_p_gives_back_the_whole_tree(tmp_path: Path, env, keys) -> None:
    ident, recipient = keys
    src = tmp_path / "tree"
    sock = make_tree(src)
    try:
        before = snapshot(src)
        put = ok(["put", "-r", "--public-key", recipient, src, f"{tmp_path}/store/"], env)
    finally:
        sock.close()
    assert "warning" not in put.stderr.decode(), put.stderr
    out = tmp_path / "out"
    ok(["get", "-r", "-p", "-q", "--private-key", ident, f"{tmp_path}/store/tree", out], env)
    # Owners come back as root only (the tests run as root in CI). A directory given as a
    # local store is the store itself: its own metadata lies outside it (on B2 it is kept).
    after = snapshot(out, owners=os.geteuid() == 0)
    want = snapshot(src, owners=os.geteuid() == 0)
    assert before == snapshot(src)  # put changed nothing
    del after["."], want["."]
    assert after == want, {k: (want.get(k), after.get(k)) for k in want if want[k] != after.get(k)}


def test_get_without_p_takes_the_mode_less_the_umask(tmp_path: Path, env, keys) -> None:
    ident, recipient = keys
    src = tmp_path / "tree"
    sock = make_tree(src)
    sock.close()
    ok(["put", "-r", "-q", "--public-key", recipient, src, f"{tmp_path}/store/"], env)
    out = tmp_path / "out"
    old = os.umask(0o027)
    try:
        ok(["get", "-r", "-q", "--private-key", ident, f"{tmp_path}/store/tree", out], env)
    finally:
        os.umask(old)

    def mode(rel: str) -> int:
        return stat.S_IMODE(os.lstat(out / rel).st_mode)

    assert mode("tool") == 0o750  # 4755 less setuid, less the umask
    assert mode("plain.txt") == 0o644 & ~0o027
    assert mode("sub/secret") == 0o600
    assert mode("empty") == 0o750  # 1750 less sticky
    assert mode("sub/deeper") == 0o550
    assert mode("sub/pipe") == 0o640
    assert os.lstat(out / "plain.txt").st_mtime_ns == T2020 + len("plain.txt")


def test_ls_l_shows_types_modes_owners_and_link_targets(tmp_path: Path, env, keys) -> None:
    ident, recipient = keys
    src = tmp_path / "tree"
    sock = make_tree(src)
    sock.close()
    store = tmp_path / "store"
    ok(["put", "-r", "-q", "--public-key", recipient, src, f"{store}/"], env)
    listing = ok(["ls", "-l", "-R", "--private-key", ident, store], env).stdout.decode()
    lines = {ln.split()[-1] if " -> " not in ln else ln.split(" -> ")[0].split()[-1]: ln
             for ln in listing.splitlines()}  # fmt: skip
    assert " lrwxrwxrwx " in lines["tree/rel-link"], listing
    assert lines["tree/rel-link"].endswith("tree/rel-link -> plain.txt"), listing
    assert lines["tree/dangling"].endswith("-> ../nowhere/at/all"), listing
    assert lines["tree/dir-link"].endswith("-> sub"), listing
    assert lines["tree/rel-link"].split()[1] == str(len("plain.txt"))  # size: the target's
    assert " prw-r----- " in lines["tree/sub/pipe"], listing
    assert " srwx" in lines["tree/sock"] or " srw" in lines["tree/sock"], listing
    assert " -rwsr-xr-x " in lines["tree/tool"], listing
    assert lines["tree/empty/"].split()[0] == "dir" and " drwxr-x--T " in lines["tree/empty/"]
    assert "2020-01-0" in lines["tree/plain.txt"], listing
    if os.geteuid() == 0:
        assert " crw-rw-rw- " in lines["tree/null"] and lines["tree/null"].split()[1] == "1,3"
        assert " brw-rw---- " in lines["tree/disk"] and lines["tree/disk"].split()[1] == "7,42"
        assert " 1234:5678 " in lines["tree/sub/secret"], listing
        assert " 2222:3333 " in lines["tree/sub/deeper/"], listing
    # Without a private key the names are there, a link's target is not.
    bare = ok(["ls", "-l", store / "tree"], env).stdout.decode()
    assert any(ln.endswith("rel-link -> ?") for ln in bare.splitlines()), bare
    assert ok(["ls", store / "tree"], env).stdout.decode().split() == sorted(
        ["abs-link", "dangling", "dir-link", "long-link", "plain.txt", "rel-link", "sock",
         "tool", "empty/", "sub/"] + (["disk", "null"] if os.geteuid() == 0 else [])
    )  # fmt: skip


def test_put_L_follows_links_and_refuses_dangling_ones(tmp_path: Path, env, keys) -> None:
    ident, recipient = keys
    src = tmp_path / "tree"
    src.mkdir()
    (src / "real").mkdir()
    (src / "real" / "f").write_text("through the link")
    (src / "to-dir").symlink_to("real")
    (src / "to-file").symlink_to("real/f")
    (src / "real" / "up").symlink_to("..")  # a loop once links are followed
    (src / "broken").symlink_to("nowhere")
    store = tmp_path / "store"
    proc = run(["put", "-r", "-L", "--public-key", recipient, src, f"{store}/"], env)
    err = proc.stderr.decode()
    assert proc.returncode == 1, err
    assert "broken: dangling symlink" in err and "symbolic link loop" in err, err
    out = tmp_path / "out"
    ok(["get", "-r", "-q", "--private-key", ident, f"{store}/tree", out], env)
    assert (out / "to-file").read_text() == "through the link"
    assert not (out / "to-file").is_symlink() and not (out / "to-dir").is_symlink()
    assert (out / "to-dir" / "f").read_text() == "through the link"
    # One file given through a link: -L takes the file, without it the link is stored.
    ok(["put", "-q", "-L", "--public-key", recipient, src / "to-file", f"{store}/one/"], env)
    ok(["put", "-q", "--public-key", recipient, src / "to-file", f"{store}/two/"], env)
    ok(["get", "-q", "--private-key", ident, f"{store}/one/to-file", out / "one"], env)
    ok(["get", "-q", "--private-key", ident, f"{store}/two/to-file", out / "two"], env)
    assert not (out / "one").is_symlink() and (out / "one").read_text() == "through the link"
    assert os.readlink(out / "two") == "real/f"


def test_get_and_cat_of_a_link_or_fifo(tmp_path: Path, env, keys) -> None:
    ident, recipient = keys
    src = tmp_path / "src"
    src.mkdir()
    (src / "link").symlink_to("some/where")
    os.mkfifo(src / "fifo")
    store = tmp_path / "store"
    ok(["put", "-q", "--public-key", recipient, src / "link", src / "fifo", f"{store}/"], env)
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "link").write_text("replaced by the link")
    ok(["get", "-q", "--private-key", ident, f"{store}/link", dest], env)
    ok(["get", "-q", "--private-key", ident, f"{store}/fifo", dest / "fifo"], env)
    assert os.readlink(dest / "link") == "some/where"
    assert stat.S_ISFIFO(os.lstat(dest / "fifo").st_mode)
    assert sorted(os.listdir(dest)) == ["fifo", "link"]  # no temporary left behind
    for argv, words in (
        (["get", f"{store}/link", "-"], ["symbolic link to some/where"]),
        (["cat", f"{store}/link"], ["symbolic link to some/where"]),
        (["cat", f"{store}/fifo"], ["FIFO", "no content"]),
    ):
        assert_one_line(run([*argv[:1], "--private-key", ident, *argv[1:]], env), 2, *words)


@ROOT_ONLY
def test_a_device_is_made_again_as_root(tmp_path: Path, env, keys) -> None:
    ident, recipient = keys
    dev = tmp_path / "null"
    os.mknod(dev, stat.S_IFCHR, os.makedev(1, 3))
    os.chown(dev, 0, 5)
    os.chmod(dev, 0o620)
    store = tmp_path / "store"
    ok(["put", "-q", "--public-key", recipient, dev, f"{store}/"], env)
    ok(["get", "-q", "-p", "--private-key", ident, f"{store}/null", tmp_path / "back"], env)
    st = os.lstat(tmp_path / "back")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3)
    assert stat.S_IMODE(st.st_mode) == 0o620 and (st.st_uid, st.st_gid) == (0, 5)


def test_links_and_a_fifo_round_trip_through_b2(tmp_path: Path, b2_cli_env, b2_bucket, keys):
    ident, recipient = keys
    src = tmp_path / "tree"
    src.mkdir()
    (src / "f").write_text("x")
    os.chmod(src / "f", 0o640)
    (src / "l").symlink_to("f")
    os.mkfifo(src / "p")
    os.chmod(src, 0o710)
    os.utime(src, ns=(T2020, T2020))
    url = f"b2://{b2_bucket.name}"
    ok(["put", "-r", "-q", "--public-key", recipient, src, f"{url}/"], b2_cli_env)
    listing = ok(["ls", "-l", "--private-key", ident, f"{url}/tree"], b2_cli_env)
    assert "l -> f" in listing.stdout.decode(), listing.stdout
    out = tmp_path / "out"
    ok(["get", "-r", "-q", "--private-key", ident, f"{url}/tree", out], b2_cli_env)
    assert os.readlink(out / "l") == "f" and stat.S_ISFIFO(os.lstat(out / "p").st_mode)
    assert stat.S_IMODE(os.stat(out / "f").st_mode) == 0o640 & ~current_umask()
    # The directory put itself (its dir object beside it in the bucket).
    assert os.stat(out).st_mtime_ns == T2020
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o710 & ~current_umask()


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_get_r_p_of_the_store_root_restores_the_roots_metadata(tmp_path: Path, env, keys) -> None:
    """The root's metadata is in its root object (what a mount's chmod/utime of its root
    wrote): get -r -p of the store root gives it to the directory it makes."""
    from b2cryptfs.bucket.layout import ROOT_META_OBJECT
    from b2cryptfs.bucket.meta import META_KEY
    from b2cryptfs.store.dirstore import DirStore

    ident, recipient = keys
    (tmp_path / "f").write_text("in the root\n")
    store = tmp_path / "store"
    ok(["put", "-q", "--public-key", recipient, tmp_path / "f", f"{store}/"], env)
    DirStore(str(store)).upload_bytes(
        ROOT_META_OBJECT, b"", {META_KEY: f"1 40710 - - {T2020} {T2020 - 9} -"}
    )
    out = tmp_path / "out"
    ok(["get", "-r", "-p", "-q", "--private-key", ident, store, out], env)
    st = os.stat(out)
    assert (stat.S_IMODE(st.st_mode), st.st_mtime_ns, st.st_atime_ns) == (0o710, T2020, T2020 - 9)
    assert (out / "f").read_text() == "in the root\n"
    assert ok(["ls", store], env).stdout.decode().split() == ["f"]  # not an entry
