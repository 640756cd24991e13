"""Interoperability with the reference ``age`` binary, both directions.

Our pair concatenated (``cat P.key.enc P.enc``) must decrypt with ``age -d -i``; a file
``age`` wrote, cut after its ``--- …`` line, must open as a pair with AgeCodec. RSA keys
come from ``openssl genrsa`` in both PEM flavours age reads: PKCS#8 ("PRIVATE KEY", what
OpenSSL 3 writes) and PKCS#1 ("RSA PRIVATE KEY", ``-traditional``).
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from b2cryptfs.errors import NoMatchingIdentity
from b2cryptfs.formats.age import (
    encode_x25519_identity,
    encode_x25519_recipient,
    generate_x25519_identity,
    parse_x25519_identity,
    parse_x25519_recipient,
    ssh_fingerprint,
    ssh_rsa_public_line,
)
from b2cryptfs.formats.age.agefile import decrypt_file, split_file
from b2cryptfs.formats.age.codec import AgeCodec
from b2cryptfs.keys.types import RsaIdentity

AGE = shutil.which("age")
pytestmark = pytest.mark.skipif(AGE is None, reason="the age binary is not installed")

CHUNK = 65536
SIZES = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 300_000]


class BytesSource:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.size = len(data)

    def fetch(self, start: int, end: int) -> bytes:
        return self.data[start:end]


def run(*args: str | Path) -> bytes:
    proc = subprocess.run([str(a) for a in args], capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return proc.stdout


def assert_age_fails(identity_file: Path, path: Path) -> None:
    cmd = [str(AGE), "-d", "-i", str(identity_file), str(path)]
    proc = subprocess.run(cmd, capture_output=True, timeout=60)
    assert proc.returncode != 0 and not proc.stdout


class Key:
    """An identity with the file ``age -i`` reads and the argument ``age`` encrypts to."""

    def __init__(self, identity, identity_file: Path, encrypt_args: list[str]) -> None:
        self.identity = identity
        self.identity_file = identity_file
        self.encrypt_args = encrypt_args


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Key]:
    d = tmp_path_factory.mktemp("agekeys")
    out: dict[str, Key] = {}
    if shutil.which("openssl"):
        for name, extra, banner in [
            ("rsa-pkcs8", [], b"-----BEGIN PRIVATE KEY-----"),
            ("rsa-pkcs1", ["-traditional"], b"-----BEGIN RSA PRIVATE KEY-----"),
        ]:
            pem = d / f"{name}.pem"
            run("openssl", "genrsa", *extra, "-out", pem, "2048")
            assert pem.read_bytes().startswith(banner)
            ident = RsaIdentity(load_pem_private_key(pem.read_bytes(), password=None))
            pub = d / f"{name}.pub"
            pub.write_text(ssh_rsa_public_line(ident.private_key.public_key()) + "\n")
            out[name] = Key(ident, pem, ["-R", str(pub)])
    if shutil.which("age-keygen"):
        idfile = d / "x25519.txt"
        run("age-keygen", "-o", idfile)
        secret = [ln for ln in idfile.read_text().splitlines() if ln.startswith("AGE-SECRET")]
        ident = parse_x25519_identity(secret[0])
    else:
        ident = generate_x25519_identity()
        idfile = d / "x25519.txt"
        idfile.write_text(encode_x25519_identity(ident) + "\n")
    out["x25519"] = Key(ident, idfile, ["-r", encode_x25519_recipient(ident.recipient())])
    return out


def key(keys: dict[str, Key], name: str) -> Key:
    if name not in keys:
        pytest.skip("openssl is not installed: no RSA keys")
    return keys[name]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("kind", ["x25519", "rsa-pkcs8", "rsa-pkcs1"])
def test_our_pair_decrypts_with_age(kind: str, size: int, keys, tmp_path: Path) -> None:
    k = key(keys, kind)
    data = os.urandom(size)
    content = io.BytesIO()
    sealed = AgeCodec().seal(io.BytesIO(data), content, [k.identity.recipient()])
    joined = tmp_path / "file.age"
    joined.write_bytes(sealed.key_object + content.getvalue())
    assert run(AGE, "-d", "-i", k.identity_file, joined) == data


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("kind", ["x25519", "rsa-pkcs1"])
def test_age_file_opens_as_pair(kind: str, size: int, keys, tmp_path: Path) -> None:
    k = key(keys, kind)
    data = os.urandom(size)
    (tmp_path / "plain").write_bytes(data)
    run(AGE, *k.encrypt_args, "-o", tmp_path / "file.age", tmp_path / "plain")
    whole = (tmp_path / "file.age").read_bytes()
    key_object, content = split_file(whole)
    assert key_object + content == whole
    codec = AgeCodec()
    assert codec.plaintext_size_hint(len(content), {}) == size
    reader = codec.open(key_object, [k.identity], BytesSource(content))
    assert reader.read(0, size) == data
    with (tmp_path / "file.age").open("rb") as f:
        assert b"".join(decrypt_file(f, [k.identity])) == data


def test_several_recipients_both_ways(keys, tmp_path: Path) -> None:
    rsa_key, x_key = key(keys, "rsa-pkcs8"), keys["x25519"]
    data = os.urandom(CHUNK + 123)
    content = io.BytesIO()
    sealed = AgeCodec().seal(
        io.BytesIO(data), content, [rsa_key.identity.recipient(), x_key.identity.recipient()]
    )
    joined = tmp_path / "ours.age"
    joined.write_bytes(sealed.key_object + content.getvalue())
    for k in (rsa_key, x_key):
        assert run(AGE, "-d", "-i", k.identity_file, joined) == data

    (tmp_path / "plain").write_bytes(data)
    theirs = tmp_path / "theirs.age"
    run(AGE, *rsa_key.encrypt_args, *x_key.encrypt_args, "-o", theirs, tmp_path / "plain")
    key_object, payload = split_file(theirs.read_bytes())
    fingerprint = ssh_fingerprint(rsa_key.identity.private_key.public_key())
    assert sorted(AgeCodec().describe_recipients(key_object)) == [
        "X25519",
        "ssh-rsa " + fingerprint[:12] + "...",
    ]
    for k in (rsa_key, x_key):
        assert (
            AgeCodec().open(key_object, [k.identity], BytesSource(payload)).read(0, 1 << 20) == data
        )
    # A rewrapped header still decrypts with age, and only for the new recipient.
    new_header = AgeCodec().rewrap(key_object, [x_key.identity], [rsa_key.identity.recipient()])
    joined.write_bytes(new_header + payload)
    assert run(AGE, "-d", "-i", rsa_key.identity_file, joined) == data
    with pytest.raises(NoMatchingIdentity):
        AgeCodec().open(new_header, [x_key.identity], BytesSource(payload))
    assert_age_fails(x_key.identity_file, joined)


def test_age_rejects_mismatched_pair_too(keys, tmp_path: Path) -> None:
    """The pairing rule matches the reference: another file's payload does not decrypt."""
    k = keys["x25519"]
    pairs = []
    for _ in range(2):
        content = io.BytesIO()
        sealed = AgeCodec().seal(io.BytesIO(os.urandom(100)), content, [k.identity.recipient()])
        pairs.append((sealed.key_object, content.getvalue()))
    joined = tmp_path / "mixed.age"
    joined.write_bytes(pairs[0][0] + pairs[1][1])
    assert_age_fails(k.identity_file, joined)


@pytest.mark.skipif(shutil.which("age-keygen") is None, reason="age-keygen is not installed")
def test_key_strings_match_age_keygen(tmp_path: Path) -> None:
    for _ in range(3):
        run("age-keygen", "-o", tmp_path / "k.txt")
        text = (tmp_path / "k.txt").read_text()
        (tmp_path / "k.txt").unlink()
        secret = next(ln for ln in text.splitlines() if ln.startswith("AGE-SECRET-KEY-1"))
        public = next(ln for ln in text.splitlines() if ln.startswith("# public key: "))[14:]
        ident = parse_x25519_identity(secret)
        assert encode_x25519_identity(ident) == secret
        assert encode_x25519_recipient(ident.recipient()) == public
        assert parse_x25519_recipient(public) == ident.recipient()
    ours = generate_x25519_identity()
    (tmp_path / "ours.txt").write_text(encode_x25519_identity(ours) + "\n")
    printed = run("age-keygen", "-y", tmp_path / "ours.txt").decode().strip()
    assert printed == encode_x25519_recipient(ours.recipient())


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="ssh-keygen is not installed")
def test_ssh_line_and_fingerprint_match_ssh_keygen(keys, tmp_path: Path) -> None:
    k = key(keys, "rsa-pkcs1")
    pub = k.identity.private_key.public_key()
    line = run("ssh-keygen", "-y", "-f", k.identity_file).decode().split()
    assert " ".join(line[:2]) == ssh_rsa_public_line(pub)
    (tmp_path / "k.pub").write_text(ssh_rsa_public_line(pub) + "\n")
    listed = run("ssh-keygen", "-l", "-E", "sha256", "-f", tmp_path / "k.pub").decode().split()
    assert listed[1] == ssh_fingerprint(pub)
