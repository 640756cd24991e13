"""The seed's own procedure end to end against the loopback B2 server.

The sample's exact openssl and ``b2`` command lines (run by bash, ``b2`` being the real
command-line tool with ``B2_ENVIRONMENT`` pointing at the server) on one side, the
``b2cryptfs`` command-line tool on the other, in both directions; then what a failing
upload leaves behind.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from conftest import B2CRYPTFS
from openssl_testutil import needs_openssl, openssl_keypair

pytestmark = [
    needs_openssl,
    pytest.mark.skipif(shutil.which("b2") is None, reason="the b2 command-line tool is missing"),
]

# The sample's commands, verbatim but for the variables (F is a name in the cwd).
SEED_ENCRYPT_AND_UPLOAD = r"""
set -eo pipefail
ONE_TIME_PASSWORD=`openssl rand -base64 180`
echo $ONE_TIME_PASSWORD | openssl aes-256-cbc -a -salt -pass stdin -in $F -out $F.enc
echo $ONE_TIME_PASSWORD | openssl rsautl -encrypt -pubin -inkey $PUB -out $F.key.enc
b2 upload_file $BUCKET $F.enc $F.enc
b2 upload_file $BUCKET $F.key.enc $F.key.enc
"""
# -passin stands in for typing the passphrase at the prompt.
SEED_DOWNLOAD_AND_DECRYPT = r"""
set -eo pipefail
b2 download_file_by_name $BUCKET $F.enc $F.enc
b2 download_file_by_name $BUCKET $F.key.enc $F.key.enc
openssl rsautl -decrypt -inkey $PRIV -passin file:$PWFILE -in $F.key.enc |
    openssl enc -aes-256-cbc -d -a -pass stdin -in $F.enc -out $F
"""


def sh(script: str, env: dict[str, str], cwd) -> subprocess.CompletedProcess:
    p = subprocess.run(
        ["bash", "-c", script], env=env, cwd=cwd, capture_output=True, text=True, timeout=300
    )
    assert p.returncode == 0, f"{script}\nfailed: {p.stderr[-2000:]}"
    return p


def cli(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run([*B2CRYPTFS, *args], env=env, capture_output=True, text=True, timeout=300)
    if check:
        assert p.returncode == 0, f"b2cryptfs {args} failed: {p.stderr[-2000:]}"
    return p


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    priv, pub, pwfile = openssl_keypair(tmp_path_factory.mktemp("keys"))
    return {"PRIV": str(priv), "PUB": str(pub), "PWFILE": str(pwfile)}


def plaintext(size: int) -> bytes:
    text = b"".join(b"line %d of a file for the seed procedure\n" % i for i in range(size // 40))
    return (text + os.urandom(size))[:size]


def test_seed_upload_then_b2cryptfs_get(b2_cli_env, keys, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    data = plaintext(150_001)
    (work / "report.pdf").write_bytes(data)
    env = {**b2_cli_env, **keys, "F": "report.pdf"}
    sh(SEED_ENCRYPT_AND_UPLOAD, env, work)

    bucket = b2_cli_env["BUCKET"]
    listed = cli(b2_cli_env, "ls", f"b2://{bucket}/")
    assert listed.stdout.split() == ["report.pdf"]
    out = tmp_path / "out.pdf"
    cli(
        b2_cli_env,
        "get",
        f"b2://{bucket}/report.pdf",
        str(out),
        "--private-key",
        keys["PRIV"],
        "--passphrase-file",
        keys["PWFILE"],
    )
    assert out.read_bytes() == data


def test_b2cryptfs_put_then_seed_download(b2_cli_env, keys, tmp_path):
    src = tmp_path / "notes.txt"
    data = plaintext(70_000)
    src.write_bytes(data)
    bucket = b2_cli_env["BUCKET"]
    cli(
        b2_cli_env,
        "put",
        "--format",
        "openssl",
        "--public-key",
        keys["PUB"],
        str(src),
        f"b2://{bucket}/",
    )

    work = tmp_path / "elsewhere"
    work.mkdir()
    sh(SEED_DOWNLOAD_AND_DECRYPT, {**b2_cli_env, **keys, "F": "notes.txt"}, work)
    assert (work / "notes.txt").read_bytes() == data


def test_put_and_get_survive_injected_faults(b2_cli_env, b2_bucket, keys, tmp_path):
    src = tmp_path / "f.bin"
    data = os.urandom(50_000)
    src.write_bytes(data)
    url = f"{b2_bucket.url}/dir/f.bin"
    server = b2_bucket.server
    server.inject("upload", "503", 2)
    server.inject("b2_list_file_names", "429", 2, retry_after=0)
    server.inject("b2_get_upload_url", "expired", 1)
    cli(b2_cli_env, "put", "--public-key", keys["PUB"], str(src), url)
    server.inject("download", "expired", 1)
    server.inject("download", "drop", 2)
    out = tmp_path / "back.bin"
    cli(
        b2_cli_env,
        "get",
        url,
        str(out),
        "--private-key",
        keys["PRIV"],
        "--passphrase-file",
        keys["PWFILE"],
    )
    assert out.read_bytes() == data
    faults = server.fault_counts()
    assert faults.get("b2_upload_file") == 2 and faults.get("b2_download_file_by_id", 0) >= 2


def test_failed_content_upload_leaves_no_visible_half_pair(b2_cli_env, b2_bucket, keys, tmp_path):
    src = tmp_path / "half.txt"
    src.write_bytes(b"never fully uploaded\n")
    server = b2_bucket.server
    # The first upload (the key object) goes through; the content upload keeps failing.
    server.inject("upload", "503", 100_000, after=1)
    # --io-timeout bounds the retries of the failing upload (the default is 2 minutes).
    put = cli(
        b2_cli_env,
        "put",
        "--io-timeout",
        "3s",
        "--public-key",
        keys["PUB"],
        str(src),
        f"{b2_bucket.url}/",
        check=False,
    )
    assert put.returncode != 0
    err = put.stderr.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    server.clear_faults()

    # The key object went up first; the failed content upload deleted it again: no orphan.
    assert [v["fileName"] for v in b2_bucket.versions()] == []
    listed = cli(b2_cli_env, "ls", "-R", f"{b2_bucket.url}/")
    assert listed.stdout.strip() == ""
    got = cli(
        b2_cli_env,
        "get",
        f"{b2_bucket.url}/half.txt",
        str(tmp_path / "out"),
        "--private-key",
        keys["PRIV"],
        "--passphrase-file",
        keys["PWFILE"],
        check=False,
    )
    assert got.returncode != 0 and not (tmp_path / "out").exists()
