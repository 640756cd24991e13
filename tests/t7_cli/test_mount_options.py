"""Mount option syntax and the pre-fork checks that need no FUSE (the CLI in a subprocess)."""

from __future__ import annotations

import os
import pwd
import subprocess
from pathlib import Path

import pytest
from mountutil import B2CRYPTFS, Keys, base_env, rsa_keys  # noqa: F401

from b2cryptfs.cache.cachedir import ROOT_CACHE_ROOT, default_cache_root
from b2cryptfs.cli.mountopts import parse_duration, parse_size, translate_o_options
from b2cryptfs.cli.mountprep import (
    check_mountpoint,
    load_credentials_file,
)
from b2cryptfs.errors import B2CryptfsError, UsageError


@pytest.mark.parametrize(
    "text,expected",
    [
        ("1024", 1024),
        ("512M", 512 << 20),
        ("512m", 512 << 20),
        ("2G", 2 << 30),
        ("2GiB", 2 << 30),
        ("1.5G", 3 << 29),
        ("64K", 64 << 10),
        ("1T", 1 << 40),
    ],
)
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "M", "12X", "-1G", "1 2M", "1e3"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


@pytest.mark.parametrize(
    "text,expected", [("30", 30.0), ("30s", 30.0), ("5m", 300.0), ("1h", 3600.0), ("500ms", 0.5)]
)
def test_parse_duration(text: str, expected: float) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "m", "5 minutes", "-3s"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_translate_o_options() -> None:
    argv = translate_o_options(
        [
            "rw,nofail,_netdev,dev,suid,x-systemd.automount,comment=x,defaults",
            "private_key=/k/priv.pem,passphrase_file=/k/pf,ro,cache_size=2G",
            "public_key=/k/a.pem,public_key=/k/b.pem,auto_unmount,debug,b2_credentials=/e",
        ]
    )
    assert argv == [
        "--private-key", "/k/priv.pem", "--passphrase-file", "/k/pf", "--read-only",
        "--cache-size", "2G", "--public-key", "/k/a.pem", "--public-key", "/k/b.pem",
        "--auto-unmount", "--debug", "--b2-credentials", "/e",
    ]  # fmt: skip


@pytest.mark.parametrize(
    "opts,message",
    [
        ("privat_key=/k", "unknown mount option 'privat_key'"),
        ("private_key", "needs a value"),
        ("private_key=", "needs a value"),
        ("ro=1", "takes no value"),
    ],
)
def test_translate_o_options_rejects(opts: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        translate_o_options([opts])


def test_default_cache_root() -> None:
    # mount(8) may give a helper no HOME at all: the default must not depend on it.
    assert default_cache_root({}, euid=0) == ROOT_CACHE_ROOT
    assert default_cache_root({"XDG_CACHE_HOME": "/x/cache"}, euid=0) == "/x/cache/b2cryptfs"
    assert default_cache_root({"XDG_CACHE_HOME": "relative"}, euid=0) == ROOT_CACHE_ROOT
    assert default_cache_root({"HOME": "/home/u"}, euid=1000) == "/home/u/.cache/b2cryptfs"
    # No HOME: the password database's home directory.
    nobody = pwd.getpwnam("nobody")
    expected = os.path.join(nobody.pw_dir, ".cache", "b2cryptfs")
    assert default_cache_root({}, euid=nobody.pw_uid) == expected


def test_check_mountpoint(tmp_path: Path) -> None:
    assert check_mountpoint(str(tmp_path)) == str(tmp_path)
    with pytest.raises(B2CryptfsError, match="does not exist"):
        check_mountpoint(str(tmp_path / "missing"))
    (tmp_path / "f").write_text("x")
    with pytest.raises(B2CryptfsError, match="not a directory"):
        check_mountpoint(str(tmp_path / "f"))
    with pytest.raises(B2CryptfsError, match="busy"):
        check_mountpoint("/proc")


def test_credentials_file(tmp_path: Path) -> None:
    f = tmp_path / "b2.env"
    f.write_text(
        "# B2 account\nexport B2_APPLICATION_KEY_ID=0012ab\nB2_APPLICATION_KEY='K001 x'\n\n"
        'B2_ENVIRONMENT="http://127.0.0.1:1"\n'
    )
    assert load_credentials_file(str(f)) == {
        "B2_APPLICATION_KEY_ID": "0012ab",
        "B2_APPLICATION_KEY": "K001 x",
        "B2_ENVIRONMENT": "http://127.0.0.1:1",
    }
    f.write_text("B2_APPLICATION_KEY_ID=0012ab\n")
    with pytest.raises(UsageError, match="lacks B2_APPLICATION_KEY"):
        load_credentials_file(str(f))
    f.write_text("PATH=/evil\n")
    with pytest.raises(UsageError, match="line 1"):
        load_credentials_file(str(f))


# --- the command line: errors are one line, before anything is forked ----------------------


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*B2CRYPTFS, *args], env=env, capture_output=True, text=True, timeout=60,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


def _one_line_error(res: subprocess.CompletedProcess[str], code: int, text: str) -> None:
    assert res.returncode == code, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert "Traceback" not in res.stderr
    assert text in lines[0], lines[0]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return base_env(tmp_path / "home")


def test_wrong_passphrase(tmp_path: Path, rsa_keys: Keys, env: dict[str, str]) -> None:  # noqa: F811
    bad = tmp_path / "bad-pass"
    bad.write_text("not the passphrase\n")
    (tmp_path / "store").mkdir()
    (tmp_path / "mnt").mkdir()
    args = ["mount", str(tmp_path / "store"), str(tmp_path / "mnt")]
    keys = ["--private-key", str(rsa_keys.private), "--passphrase-file", str(bad)]
    _one_line_error(_run([*args, *keys], env), 3, "passphrase")
    # The same through the helper form and -o options.
    o = f"private_key={rsa_keys.private},passphrase_file={bad}"
    _one_line_error(_run([args[1], args[2], "-o", o], env), 3, "passphrase")


def test_unreadable_key(tmp_path: Path, env: dict[str, str]) -> None:
    (tmp_path / "mnt").mkdir()
    res = _run(
        ["mount", str(tmp_path), str(tmp_path / "mnt"), "--private-key", "/nonexistent"], env
    )
    _one_line_error(res, 3, "/nonexistent")


def test_missing_mountpoint(tmp_path: Path, rsa_keys: Keys, env: dict[str, str]) -> None:  # noqa: F811
    res = _run(["mount", str(tmp_path), str(tmp_path / "nope"), *rsa_keys.args()], env)
    _one_line_error(res, 32, "mountpoint does not exist")


def test_missing_store_dir(tmp_path: Path, rsa_keys: Keys, env: dict[str, str]) -> None:  # noqa: F811
    (tmp_path / "mnt").mkdir()
    res = _run(["mount", str(tmp_path / "nostore"), str(tmp_path / "mnt"), *rsa_keys.args()], env)
    _one_line_error(res, 5, "nostore")


def test_bad_option(tmp_path: Path, rsa_keys: Keys, env: dict[str, str]) -> None:  # noqa: F811
    (tmp_path / "mnt").mkdir()
    res = _run([str(tmp_path), str(tmp_path / "mnt"), "-o", f"{rsa_keys.o_options()},bogus"], env)
    _one_line_error(res, 2, "unknown mount option 'bogus'")
    res = _run(
        ["mount", str(tmp_path), str(tmp_path / "mnt"), "-o", "cache_size=lots", *rsa_keys.args()],
        env,
    )
    _one_line_error(res, 2, "not a size")


def test_helper_fake_mount_does_nothing(tmp_path: Path, env: dict[str, str]) -> None:
    # mount -f: "fake"; the helper must not mount (and need not even find the keys).
    (tmp_path / "mnt").mkdir()
    res = _run([str(tmp_path), str(tmp_path / "mnt"), "-f", "-o", "private_key=/none"], env)
    assert res.returncode == 0, res.stderr
