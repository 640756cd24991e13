"""Key generation: files the seed's openssl commands accept as they are, and `keygen`."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from conftest import B2CRYPTFS
from openssl_testutil import OPENSSL, PASSPHRASE, needs_openssl, run, run_on_tty
from test_keys_loader import HAVE_AGE_MODULE

from b2cryptfs.cli.keygen import default_public_path
from b2cryptfs.errors import KeyFileError, UsageError, WrongPassphrase
from b2cryptfs.keys.keygen import generate_keypair
from b2cryptfs.keys.loader import load_identities, load_recipients

AGE = shutil.which("age")
AGE_KEYGEN = shutil.which("age-keygen")


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> tuple[Path, Path, Path]:
    d = tmp_path_factory.mktemp("gen")
    priv, pub, pw = d / "priv-key.pem", d / "pub-key.pem", d / "pw"
    pw.write_bytes(PASSPHRASE + b"\n")
    generate_keypair(str(priv), str(pub), PASSPHRASE)
    return priv, pub, pw


def test_generated_files(pair):
    priv, pub, _ = pair
    assert stat.S_IMODE(priv.stat().st_mode) == 0o600
    assert priv.read_text().startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert pub.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    (identity,) = load_identities(str(priv), lambda: PASSPHRASE)
    assert identity.private_key.key_size == 2048
    assert load_recipients(str(pub)) == [identity.recipient()]
    with pytest.raises(WrongPassphrase):
        load_identities(str(priv), lambda: b"wrong passphrase")


@needs_openssl
def test_private_key_is_what_openssl_genrsa_aes256_writes(pair):
    """PBES2 with PBKDF2-HMAC-SHA256 and AES-256-CBC, as OpenSSL 3 writes for -aes256."""
    text = run([OPENSSL, "asn1parse", "-in", str(pair[0])]).stdout.decode()
    for part in ("PBES2", "PBKDF2", "hmacWithSHA256", "aes-256-cbc"):
        assert part in text


@needs_openssl
def test_seed_procedure_accepts_generated_keys(pair, tmp_path):
    """The seed's own encrypt and decrypt lines, with our key files."""
    priv, pub, pw = pair
    f = tmp_path / "file.txt"
    plain = b"seed procedure with b2cryptfs keys\n" * 100
    f.write_bytes(plain)
    env = dict(os.environ, F=str(f), PUB=str(pub), PRIV=str(priv), PWFILE=str(pw))
    run(
        "set -eo pipefail\n"
        "ONE_TIME_PASSWORD=`openssl rand -base64 180`\n"
        "echo $ONE_TIME_PASSWORD | openssl aes-256-cbc -a -salt -pass stdin -in $F -out $F.enc\n"
        "echo $ONE_TIME_PASSWORD | openssl rsautl -encrypt -pubin -inkey $PUB -out $F.key.enc\n",
        env=env,
    )
    f.unlink()
    run(
        "set -eo pipefail\n"
        "openssl rsautl -decrypt -inkey $PRIV -passin file:$PWFILE -in $F.key.enc |\n"
        "    openssl enc -aes-256-cbc -d -a -pass stdin -in $F.enc -out $F\n",
        env=env,
    )
    assert f.read_bytes() == plain


def test_refuses_to_overwrite(tmp_path):
    priv, pub = tmp_path / "a.pem", tmp_path / "b.pem"
    pub.write_text("keep me")
    with pytest.raises(KeyFileError, match="already exists"):
        generate_keypair(str(priv), str(pub), PASSPHRASE)
    assert not priv.exists() and pub.read_text() == "keep me"
    with pytest.raises(UsageError):
        generate_keypair(str(priv), str(tmp_path / "c.pem"), PASSPHRASE, bits=1024)
    with pytest.raises(UsageError):
        generate_keypair(str(priv), str(tmp_path / "c.pem"), b"")
    with pytest.raises(UsageError):
        generate_keypair(str(priv), str(priv), PASSPHRASE)
    assert not priv.exists()


def test_default_public_path():
    assert default_public_path("priv-key.pem") == "pub-key.pem"
    assert default_public_path(os.path.join("keys", "priv-key.pem")) == os.path.join(
        "keys", "pub-key.pem"
    )
    assert default_public_path("backup-priv.pem") == "backup-pub.pem"
    assert default_public_path("mykey.pem") == "mykey.pub.pem"


# --- the command ----------------------------------------------------------------------


def keygen(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*B2CRYPTFS, "keygen", *args], env=env, cwd=cwd, capture_output=True, timeout=120
    )


def test_keygen_command_defaults(tmp_path, cli_env):
    pw = tmp_path / "pw"
    pw.write_bytes(b"a passphrase from a file\nignored\n")
    p = keygen(["--passphrase-file", str(pw)], cli_env, tmp_path)
    assert p.returncode == 0, p.stderr
    priv, pub = tmp_path / "priv-key.pem", tmp_path / "pub-key.pem"
    (identity,) = load_identities(str(priv), lambda: b"a passphrase from a file")
    assert load_recipients(str(pub)) == [identity.recipient()]
    # Again: refuses, says why in one line, exit code of a key error.
    p = keygen(["--passphrase-file", str(pw)], cli_env, tmp_path)
    assert p.returncode == 3
    assert p.stderr.decode().strip().splitlines() == [
        "b2cryptfs: error: priv-key.pem already exists: refusing to overwrite it"
    ]


def test_keygen_command_env_and_paths(tmp_path, cli_env):
    env = dict(cli_env, B2CRYPTFS_PASSPHRASE="env passphrase")
    p = keygen(
        ["-o", "k/mine.pem", "--public-out", "k/theirs.pem", "--bits", "3072"], env, tmp_path
    )
    assert p.returncode != 0  # the folder does not exist
    assert "cannot create" in p.stderr.decode() and "Traceback" not in p.stderr.decode()
    (tmp_path / "k").mkdir()
    p = keygen(
        ["-o", "k/mine.pem", "--public-out", "k/theirs.pem", "--bits", "3072"], env, tmp_path
    )
    assert p.returncode == 0, p.stderr
    (identity,) = load_identities(str(tmp_path / "k/mine.pem"), lambda: b"env passphrase")
    assert identity.private_key.key_size == 3072
    p = keygen(["-o", "x.pem", "--bits", "1024"], env, tmp_path)
    assert p.returncode == 2 and b"--bits" in p.stderr


def test_keygen_command_without_any_passphrase_source(tmp_path, cli_env):
    p = subprocess.run(
        [*B2CRYPTFS, "keygen"],
        env=cli_env,
        cwd=tmp_path,
        capture_output=True,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        timeout=60,
    )
    assert p.returncode == 3
    assert b"no passphrase: use --passphrase-file or B2CRYPTFS_PASSPHRASE" in p.stderr
    assert not (tmp_path / "priv-key.pem").exists()


def _keygen_on_tty(folder: Path, typed: list[bytes]) -> str:
    code = (
        "import os, sys\n"
        f"os.chdir({str(folder)!r})\n"
        "from b2cryptfs.cli.main import main\n"
        "rc = main(['keygen'])\n"
        "print('RC', rc)\n"
    )
    return run_on_tty(code, typed)


def test_keygen_prompts_twice_on_a_terminal(tmp_path):
    out = _keygen_on_tty(tmp_path, [b"typed twice", b"typed twice"])
    assert "RC 0" in out and "Repeat the passphrase:" in out
    assert load_identities(str(tmp_path / "priv-key.pem"), lambda: b"typed twice")
    other = tmp_path / "other"
    other.mkdir()
    out = _keygen_on_tty(other, [b"first try", b"second try"])
    assert "do not match" in out and "RC 2" in out
    assert not (other / "priv-key.pem").exists()


@pytest.mark.skipif(not (AGE and AGE_KEYGEN and HAVE_AGE_MODULE), reason="age not available")
def test_keygen_age_identity_works_with_age(tmp_path, cli_env):
    p = keygen(["--age", "-o", "recovery.txt"], cli_env, tmp_path)
    assert p.returncode == 0, p.stderr
    recipient = p.stdout.decode().strip()
    ident = tmp_path / "recovery.txt"
    assert stat.S_IMODE(ident.stat().st_mode) == 0o600
    assert run([AGE_KEYGEN, "-y", str(ident)]).stdout.decode().strip() == recipient
    # The real age tool encrypts to the printed recipient and decrypts with the file.
    enc = run([AGE, "-r", recipient], input=b"recovered").stdout
    assert run([AGE, "-d", "-i", str(ident)], input=enc).stdout == b"recovered"
    (identity,) = load_identities(str(ident), lambda: b"")
    assert load_recipients(recipient) == [identity.recipient()]
    p = keygen(["--age", "-o", "recovery.txt"], cli_env, tmp_path)
    assert p.returncode == 3 and b"already exists" in p.stderr
