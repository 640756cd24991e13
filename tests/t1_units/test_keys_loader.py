"""Loading identities and recipients from key files made by the real tools."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from openssl_testutil import OPENSSL, PASSPHRASE, child_env, needs_openssl, run, run_on_tty

from b2cryptfs.errors import KeyFileError, UsageError, WrongPassphrase
from b2cryptfs.formats.age.protected import decrypt_protected
from b2cryptfs.keys.loader import load_identities, load_recipients
from b2cryptfs.keys.passphrase import ENV_PASSPHRASE, new_passphrase, passphrase_source
from b2cryptfs.keys.types import RsaIdentity, RsaRecipient, X25519Identity, X25519Recipient

SSH_KEYGEN = shutil.which("ssh-keygen")
AGE_KEYGEN = shutil.which("age-keygen")
HAVE_AGE_MODULE = importlib.util.find_spec("b2cryptfs.formats.age.x25519") is not None
HAVE_BCRYPT = importlib.util.find_spec("bcrypt") is not None
needs_ssh_keygen = pytest.mark.skipif(SSH_KEYGEN is None, reason="ssh-keygen not installed")
needs_age = pytest.mark.skipif(
    AGE_KEYGEN is None or not HAVE_AGE_MODULE, reason="age-keygen or the age module missing"
)

# genrsa flags → the PEM flavour OpenSSL 3 writes with them.
OPENSSL_FLAVOURS = {
    "pkcs8-aes256": (["-aes256"], "ENCRYPTED PRIVATE KEY", True),
    "pkcs8-des3": (["-des3"], "ENCRYPTED PRIVATE KEY", True),
    "traditional-aes256": (["-traditional", "-aes256"], "RSA PRIVATE KEY", True),
    "traditional-des3": (["-traditional", "-des3"], "RSA PRIVATE KEY", True),
    "traditional-aes128": (["-traditional", "-aes128"], "RSA PRIVATE KEY", True),
    "pkcs8-plain": ([], "PRIVATE KEY", False),
    "traditional-plain": (["-traditional"], "RSA PRIVATE KEY", False),
}


def never_asked() -> bytes:
    raise AssertionError("the passphrase was asked for an unencrypted key")


class Counting:
    def __init__(self, value: bytes) -> None:
        self.value, self.calls = value, 0

    def __call__(self) -> bytes:
        self.calls += 1
        return self.value


@pytest.fixture(scope="module")
def keydir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("keys")
    (d / "pw").write_bytes(PASSPHRASE + b"\n")
    (d / "pw-out").write_bytes(PASSPHRASE + b"\n")
    return d


@pytest.fixture(scope="module")
def openssl_keys(keydir) -> dict[str, Path]:
    """Each flavour once. The seed's `genrsa -aes256` and the old-OpenSSL default
    (`genrsa -traditional -aes256`) are generated; the others are `openssl rsa` conversions
    (same PEM writer as genrsa, and no time spent making more RSA keys)."""
    if OPENSSL is None:
        pytest.skip("openssl binary not installed")
    pw = f"file:{keydir / 'pw'}"
    out = {}
    for name in ("pkcs8-aes256", "traditional-aes256"):
        out[name] = keydir / f"{name}.pem"
        flags = OPENSSL_FLAVOURS[name][0]
        run([OPENSSL, "genrsa", *flags, "-passout", pw, "-out", str(out[name]), "2048"])
    for name, (flags, _, encrypted) in OPENSSL_FLAVOURS.items():
        if name in out:
            continue
        out[name] = keydir / f"{name}.pem"
        cmd = [OPENSSL, "rsa", "-in", str(out["pkcs8-aes256"]), "-passin", pw]
        # Same file for -passin and -passout would make openssl read its second line.
        passout = ["-passout", f"file:{keydir / 'pw-out'}"] if encrypted else []
        cmd += [*flags, "-out", str(out[name]), *passout]
        run(cmd)
    return out


def public_of(path: Path, keydir: Path) -> RsaRecipient:
    """The public key as `openssl rsa -pubout` (the seed's step) extracts it."""
    pub = path.with_suffix(".pub.pem")
    run(
        [
            OPENSSL,
            "rsa",
            "-in",
            str(path),
            "-passin",
            f"file:{keydir / 'pw'}",
            "-pubout",
            "-out",
            str(pub),
        ]
    )
    (recipient,) = load_recipients(str(pub))
    return recipient


# --- identities -----------------------------------------------------------------------


@needs_openssl
@pytest.mark.parametrize("flavour", list(OPENSSL_FLAVOURS))
def test_openssl_pem_flavours_load(openssl_keys, keydir, flavour):
    path = openssl_keys[flavour]
    _, label, encrypted = OPENSSL_FLAVOURS[flavour]
    assert path.read_text().startswith(f"-----BEGIN {label}-----")
    asked = Counting(PASSPHRASE)
    (identity,) = load_identities(str(path), asked if encrypted else never_asked)
    assert isinstance(identity, RsaIdentity) and identity.private_key.key_size == 2048
    assert asked.calls == (1 if encrypted else 0)
    assert identity.recipient() == public_of(path, keydir)


@needs_openssl
@pytest.mark.parametrize("flavour", [f for f, v in OPENSSL_FLAVOURS.items() if v[2]])
def test_wrong_passphrase(openssl_keys, flavour):
    path = openssl_keys[flavour]
    with pytest.raises(WrongPassphrase, match=f"wrong passphrase for {path}"):
        load_identities(str(path), lambda: b"not the passphrase")
    with pytest.raises(WrongPassphrase):
        load_identities(str(path), lambda: b"")


@needs_openssl
def test_der_private_key(openssl_keys, keydir):
    der = keydir / "key.der"
    run(
        [
            OPENSSL,
            "rsa",
            "-in",
            str(openssl_keys["pkcs8-plain"]),
            "-outform",
            "DER",
            "-out",
            str(der),
        ]
    )
    (identity,) = load_identities(str(der), never_asked)
    assert identity.recipient() == public_of(openssl_keys["pkcs8-plain"], keydir)


@pytest.fixture(scope="module")
def ssh_keys(keydir) -> dict[str, Path]:
    """One RSA key from ssh-keygen (OpenSSH format), re-saved by ssh-keygen -p as
    encrypted OpenSSH and as encrypted PEM (`-m PEM`)."""
    if SSH_KEYGEN is None:
        pytest.skip("ssh-keygen not installed")
    plain = keydir / "ssh-plain"
    run([SSH_KEYGEN, "-q", "-t", "rsa", "-b", "2048", "-N", "", "-f", str(plain)])
    out = {"openssh-plain": plain}
    for name, fmt in (("openssh-enc", "RFC4716"), ("pem-enc", "PEM")):
        out[name] = keydir / f"ssh-{name}"
        shutil.copy(plain, out[name])
        os.chmod(out[name], 0o600)
        run(
            [
                SSH_KEYGEN,
                "-q",
                "-p",
                "-m",
                fmt,
                "-P",
                "",
                "-N",
                PASSPHRASE.decode(),
                "-f",
                str(out[name]),
            ]
        )
    return out


def test_ssh_keygen_keys(ssh_keys):
    plain = ssh_keys["openssh-plain"]
    assert plain.read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    (identity,) = load_identities(str(plain), never_asked)
    (want,) = load_recipients(str(plain) + ".pub")
    assert identity.recipient() == want
    assert load_recipients(str(plain)) == [want]

    pem = ssh_keys["pem-enc"]
    assert pem.read_text().startswith("-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED")
    assert load_identities(str(pem), lambda: PASSPHRASE)[0].recipient() == want
    with pytest.raises(WrongPassphrase):
        load_identities(str(pem), lambda: b"wrong")

    enc = ssh_keys["openssh-enc"]
    assert enc.read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    with pytest.raises(KeyFileError, match="encrypted private key"):
        load_recipients(str(enc))
    if not HAVE_BCRYPT:
        # cryptography needs bcrypt for the OpenSSH format's KDF: refuse before prompting.
        with pytest.raises(KeyFileError, match="bcrypt.*ssh-keygen -p -m PEM"):
            load_identities(str(enc), never_asked)
        return
    assert load_identities(str(enc), lambda: PASSPHRASE)[0].recipient() == want
    with pytest.raises(WrongPassphrase):
        load_identities(str(enc), lambda: b"wrong")


@needs_ssh_keygen
def test_non_rsa_keys_are_refused(keydir):
    ed = keydir / "ed"
    run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-f", str(ed)])
    with pytest.raises(KeyFileError, match="Ed25519 keys are not supported"):
        load_identities(str(ed), never_asked)
    with pytest.raises(KeyFileError, match="ssh-ed25519 keys are not supported"):
        load_recipients(str(ed) + ".pub")
    ec = keydir / "ec.pem"
    run(
        [
            OPENSSL,
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            str(ec),
        ]
    )
    with pytest.raises(KeyFileError, match="EC keys are not supported"):
        load_identities(str(ec), never_asked)


def test_not_a_key(tmp_path):
    missing = tmp_path / "missing.pem"
    with pytest.raises(KeyFileError, match="missing.pem"):
        load_identities(str(missing), never_asked)
    junk = tmp_path / "junk.txt"
    junk.write_text("hello world\n")
    with pytest.raises(KeyFileError, match="junk.txt: not a private key"):
        load_identities(str(junk), never_asked)
    broken = tmp_path / "broken.pem"
    broken.write_text("-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n")
    with pytest.raises(KeyFileError, match="broken.pem"):
        load_identities(str(broken), never_asked)
    age_enc = tmp_path / "key.age"
    age_enc.write_bytes(b"age-encryption.org/v1\n-> scrypt abc 18\n")
    with pytest.raises(KeyFileError, match="age -d"):
        load_identities(str(age_enc), never_asked, unprotect=decrypt_protected)
    age_enc.write_bytes(
        b"-----BEGIN AGE ENCRYPTED FILE-----\nYWdl\n-----END AGE ENCRYPTED FILE-----\n"
    )
    with pytest.raises(KeyFileError, match="age -d"):
        load_identities(str(age_enc), never_asked, unprotect=decrypt_protected)


@needs_openssl
def test_public_key_given_as_private(openssl_keys, keydir):
    pub = openssl_keys["pkcs8-plain"].with_suffix(".pub.pem")
    public_of(openssl_keys["pkcs8-plain"], keydir)
    with pytest.raises(KeyFileError, match="holds a public key"):
        load_identities(str(pub), never_asked)


@needs_age
def test_age_identity_file(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    run([AGE_KEYGEN, "-o", str(a)])
    run([AGE_KEYGEN, "-o", str(b)])
    both = tmp_path / "both.txt"
    both.write_bytes(a.read_bytes() + b"\n# another one\n" + b.read_bytes())
    ids = load_identities(str(both), never_asked)
    assert len(ids) == 2 and all(isinstance(i, X25519Identity) for i in ids)
    want = [run([AGE_KEYGEN, "-y", str(p)]).stdout.decode().strip() for p in (a, b)]
    assert [load_recipients(w)[0] for w in want] == [i.recipient() for i in ids]
    bad = tmp_path / "bad.txt"
    bad.write_bytes(a.read_bytes() + b"AGE-SECRET-KEY-1NOTAKEY\n")
    with pytest.raises(KeyFileError, match="bad.txt:4"):
        load_identities(str(bad), never_asked)


# --- recipients -----------------------------------------------------------------------


@needs_openssl
def test_public_key_files(openssl_keys, keydir, tmp_path):
    src = openssl_keys["traditional-plain"]
    want = load_identities(str(src), never_asked)[0].recipient()
    spki = tmp_path / "spki.pem"
    pkcs1 = tmp_path / "pkcs1.pem"
    run([OPENSSL, "rsa", "-in", str(src), "-pubout", "-out", str(spki)])
    run([OPENSSL, "rsa", "-in", str(src), "-RSAPublicKey_out", "-out", str(pkcs1)])
    assert pkcs1.read_text().startswith("-----BEGIN RSA PUBLIC KEY-----")
    assert load_recipients(str(spki)) == [want]
    assert load_recipients(str(pkcs1)) == [want]
    # An unencrypted private key gives its public half, without asking anything.
    assert load_recipients(str(src)) == [want]
    der = tmp_path / "pub.der"
    run([OPENSSL, "rsa", "-in", str(src), "-pubout", "-outform", "DER", "-out", str(der)])
    assert load_recipients(str(der)) == [want]


@needs_openssl
def test_encrypted_private_key_as_recipient_is_refused(openssl_keys):
    path = openssl_keys["pkcs8-aes256"]
    with pytest.raises(KeyFileError, match="give its public key"):
        load_recipients(str(path))


@needs_ssh_keygen
def test_ssh_rsa_lines(openssl_keys, tmp_path):
    src = openssl_keys["traditional-plain"]
    want = load_identities(str(src), never_asked)[0].recipient()
    line = run([SSH_KEYGEN, "-y", "-f", str(src)]).stdout.decode().strip()
    assert line.startswith("ssh-rsa AAAA")
    assert load_recipients(line + " user@example") == [want]
    f = tmp_path / "keys.txt"
    f.write_text(f"# my keys\n\n{line} user@example\n{line} same key again\n")
    assert load_recipients(str(f)) == [want]  # duplicates dropped


@needs_age
def test_age_recipients(tmp_path):
    ident = tmp_path / "id.txt"
    run([AGE_KEYGEN, "-o", str(ident)])
    rec = run([AGE_KEYGEN, "-y", str(ident)]).stdout.decode().strip()
    (r,) = load_recipients(rec)
    assert isinstance(r, X25519Recipient) and len(r.public_bytes) == 32
    assert load_identities(str(ident), never_asked)[0].recipient() == r
    f = tmp_path / "recipients.txt"
    f.write_text(f"# recovery\n{rec}\n")
    assert load_recipients(str(f)) == [r]
    with pytest.raises(KeyFileError):
        load_recipients(rec[:-1] + ("q" if rec[-1] != "q" else "p"))  # bad checksum


def test_bad_recipient_specs(tmp_path):
    with pytest.raises(KeyFileError, match="no such file"):
        load_recipients(str(tmp_path / "nope.pem"))
    with pytest.raises(KeyFileError, match="ssh-rsa"):
        load_recipients("ssh-rsa !!!notbase64")
    f = tmp_path / "mixed.txt"
    f.write_text("# fine\nhello there\n")
    with pytest.raises(KeyFileError, match="mixed.txt:2"):
        load_recipients(str(f))
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n")
    with pytest.raises(KeyFileError, match="no key"):
        load_recipients(str(empty))


# --- passphrases ----------------------------------------------------------------------


def test_passphrase_from_file_is_first_line_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_PASSPHRASE, "from the environment")
    f = tmp_path / "pw"
    f.write_bytes(b"  spaces kept \nsecond line\n")
    get = passphrase_source(str(f))
    assert get() == b"  spaces kept "
    f.write_bytes(b"changed\n")
    assert get() == b"  spaces kept "  # asked once, then cached
    f.write_bytes(b"no newline")
    assert passphrase_source(str(f))() == b"no newline"
    with pytest.raises(KeyFileError, match="cannot read passphrase file"):
        passphrase_source(str(tmp_path / "missing"))()


def test_passphrase_from_environment(monkeypatch):
    monkeypatch.setenv(ENV_PASSPHRASE, "env secret")
    assert passphrase_source(None)() == b"env secret"


@needs_openssl
def test_passphrase_source_with_openssl_key(openssl_keys, keydir, monkeypatch):
    monkeypatch.delenv(ENV_PASSPHRASE, raising=False)
    path = str(openssl_keys["traditional-aes256"])
    assert load_identities(path, passphrase_source(str(keydir / "pw")))
    monkeypatch.setenv(ENV_PASSPHRASE, PASSPHRASE.decode())
    assert load_identities(path, passphrase_source(None))


def test_no_terminal_no_passphrase(tmp_path):
    code = (
        "from b2cryptfs.keys.passphrase import passphrase_source\n"
        "from b2cryptfs.errors import KeyFileError\n"
        "try:\n    passphrase_source(None)()\n"
        "except KeyFileError as e:\n    print('ERR', e)\n"
    )
    # A new session has no controlling terminal: nothing to prompt on, and no fallback to
    # reading the passphrase from standard input.
    p = subprocess.run(
        [sys.executable, "-c", code],
        env=child_env(),
        capture_output=True,
        input=b"stdin must not be read\n",
        start_new_session=True,
        timeout=60,
    )
    assert p.stdout.decode().strip() == (
        "ERR no passphrase: use --passphrase-file or B2CRYPTFS_PASSPHRASE"
    )


def test_prompt_on_the_terminal():
    code = (
        "from b2cryptfs.keys.passphrase import passphrase_source\n"
        "g = passphrase_source(None, prompt='Key passphrase: ')\n"
        "print('GOT', g(), g())\n"
    )
    out = run_on_tty(code, [b"typed secret"])
    assert "Key passphrase:" in out
    assert "GOT b'typed secret' b'typed secret'" in out  # asked once
    assert out.count("Key passphrase:") == 1


def test_new_passphrase_rules(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_PASSPHRASE, raising=False)
    f = tmp_path / "pw"
    f.write_bytes(b"abc\n")
    with pytest.raises(UsageError, match="at least 4"):
        new_passphrase(str(f))
    f.write_bytes(b"long enough\n")
    assert new_passphrase(str(f)) == b"long enough"
    monkeypatch.setenv(ENV_PASSPHRASE, "from env")
    assert new_passphrase(None) == b"from env"
