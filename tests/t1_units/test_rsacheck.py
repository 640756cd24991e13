"""A mount defers the RSA private key check to the key's first decryption: a wrong
passphrase still fails at loading, a key that fails the check is never used."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from b2cryptfs.errors import KeyFileError, WrongPassphrase
from b2cryptfs.formats.age import sshrsa
from b2cryptfs.keys import rsacheck
from b2cryptfs.keys.loader import load_identities
from b2cryptfs.keys.types import RsaIdentity

PASS = b"correct horse"


def _write(tmp_path, key) -> str:
    path = tmp_path / "priv.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(PASS),
        )
    )
    return str(path)


def _broken_key() -> rsa.RSAPrivateKey:
    """A key whose CRT exponent is wrong: it parses, but fails RSA_check_key."""
    n = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_numbers()
    bad = rsa.RSAPrivateNumbers(n.p, n.q, n.d, n.dmp1 + 2, n.dmq1, n.iqmp, n.public_numbers)
    return bad.private_key(unsafe_skip_rsa_key_validation=True)


@pytest.fixture
def deferring(monkeypatch):
    monkeypatch.setattr(rsacheck, "_deferring", True)
    monkeypatch.setattr(rsacheck, "_pending", {})


def test_broken_key_is_refused_at_first_decryption(tmp_path, deferring):
    path = _write(tmp_path, _broken_key())
    (identity,) = load_identities(path, lambda: PASS)  # no check yet
    assert isinstance(identity, RsaIdentity)
    stanza = sshrsa.wrap(b"k" * 16, identity.recipient())
    for _ in range(2):  # and again: a failed check stays failed
        with pytest.raises(KeyFileError, match="not a valid RSA private key"):
            sshrsa.unwrap(stanza, identity)


def test_broken_key_is_refused_at_loading_without_deferral(tmp_path):
    path = _write(tmp_path, _broken_key())
    with pytest.raises(WrongPassphrase):
        load_identities(path, lambda: PASS)


def test_good_key_and_wrong_passphrase(tmp_path, deferring):
    path = _write(tmp_path, rsa.generate_private_key(public_exponent=65537, key_size=2048))
    with pytest.raises(WrongPassphrase):
        load_identities(path, lambda: b"wrong")
    (identity,) = load_identities(path, lambda: PASS)
    stanza = sshrsa.wrap(b"k" * 16, identity.recipient())
    assert sshrsa.unwrap(stanza, identity) == b"k" * 16
    assert not rsacheck._pending  # checked once, then no more


FIELDS = ("p", "q", "d", "dmp1", "dmq1", "iqmp", "e", "n")


def _numbers_with(n: rsa.RSAPrivateNumbers, field: str, delta: int) -> rsa.RSAPrivateNumbers:
    private = {k: getattr(n, k) for k in ("p", "q", "d", "dmp1", "dmq1", "iqmp")}
    public = {"e": n.public_numbers.e, "n": n.public_numbers.n}
    (private if field in private else public)[field] += delta
    return rsa.RSAPrivateNumbers(**private, public_numbers=rsa.RSAPublicNumbers(**public))


def _full_check_passes(numbers: rsa.RSAPrivateNumbers) -> bool:
    try:
        numbers.private_key()  # cryptography's RSA_check_key
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("bits", [2048, 3072])
def test_cheap_check_refuses_every_damaged_number_the_full_check_refuses(bits):
    import random

    rng = random.Random(bits)
    good = rsa.generate_private_key(public_exponent=65537, key_size=bits).private_numbers()
    assert rsacheck.consistent(good) and _full_check_passes(good)
    for field in FIELDS:
        for delta in (1, -1, 2, 1 << rng.randrange(1, 64), -(1 << rng.randrange(64, 512))):
            damaged = _numbers_with(good, field, delta)
            if not _full_check_passes(damaged):
                assert not rsacheck.consistent(damaged), (field, delta)


def test_keys_made_by_openssl_pass_the_cheap_check(tmp_path):
    import subprocess

    for bits in (2048, 4096):
        pem = subprocess.run(
            ["openssl", "genrsa", str(bits)], check=True, capture_output=True
        ).stdout
        key = serialization.load_pem_private_key(pem, None)
        assert rsacheck.consistent(key.private_numbers())
