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
