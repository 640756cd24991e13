"""Header encoding, bech32 key strings and the SSH wire encoding, piece by piece."""

from __future__ import annotations

import hashlib
import os

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from b2cryptfs.errors import FormatError, IntegrityError, KeyFileError
from b2cryptfs.formats.age import (
    b64,
    encode_x25519_identity,
    encode_x25519_recipient,
    generate_x25519_identity,
    header,
    parse_x25519_identity,
    parse_x25519_recipient,
    ssh_tag,
    ssh_wire_public_key,
)
from b2cryptfs.formats.age.header import Stanza
from b2cryptfs.keys import bech32

# From the C2SP testkit vectors (tests/age-testkit/x25519).
KIT_IDENTITY = "AGE-SECRET-KEY-1EGTZVFFV20835NWYV6270LXYVK2VKNX2MMDKWYKLMGR48UAWX40Q2P2LM0"


@pytest.mark.parametrize("body_len", [0, 1, 47, 48, 49, 96, 256, 512])
def test_stanza_body_lines(body_len: int) -> None:
    body = os.urandom(body_len)
    key = os.urandom(16)
    data = header.serialize([Stanza("test", ("a", "b!"), body)], key)
    lines = data.split(b"\n")
    body_lines = lines[2 : lines.index(next(ln for ln in lines if ln.startswith(b"---")))]
    # Full 64-column lines, then one shorter line (empty when the text fills whole lines).
    assert all(len(ln) == 64 for ln in body_lines[:-1]) and len(body_lines[-1]) < 64
    parsed = header.parse(data)
    assert parsed.stanzas == (Stanza("test", ("a", "b!"), body),)
    assert parsed.encode() == data
    parsed.verify_mac(key)
    with pytest.raises(IntegrityError):
        parsed.verify_mac(os.urandom(16))


@pytest.mark.parametrize("arg", ["", "a b", "é", "tab\t"])
def test_stanza_arguments_must_be_printable_words(arg: str) -> None:
    with pytest.raises(FormatError):
        header.serialize([Stanza("x", (arg,), b"")], os.urandom(16))


def test_split_keeps_the_payload() -> None:
    data = header.serialize([Stanza("x", (), b"abc")], os.urandom(16))
    hdr, rest = header.split(data + b"payload")
    assert rest == b"payload" and hdr.encode() == data
    with pytest.raises(FormatError):
        header.parse(data + b"payload")


@pytest.mark.parametrize(
    "text", ["YQ==", "YQ=", "YR", "Y", "Y Q", "YQ\n", "Y-Q_", "AAAA====", "YWJj\n"]
)
def test_base64_must_be_canonical(text: str) -> None:
    with pytest.raises(FormatError):
        b64.decode(text)


def test_base64_round_trip() -> None:
    for n in range(0, 40):
        data = os.urandom(n)
        assert b64.decode(b64.encode(data)) == data


def test_key_strings_round_trip() -> None:
    ident = generate_x25519_identity()
    s = encode_x25519_identity(ident)
    assert s.startswith("AGE-SECRET-KEY-1") and s == s.upper()
    assert parse_x25519_identity(s) == ident
    assert parse_x25519_identity(s.lower()) == ident
    r = encode_x25519_recipient(ident.recipient())
    assert r.startswith("age1") and len(r) == 62
    assert parse_x25519_recipient(r) == ident.recipient()


def test_kit_identity_decodes() -> None:
    ident = parse_x25519_identity(KIT_IDENTITY)
    assert encode_x25519_identity(ident) == KIT_IDENTITY


def test_bad_key_strings() -> None:
    ident = generate_x25519_identity()
    s, r = encode_x25519_identity(ident), encode_x25519_recipient(ident.recipient())
    bad_checksum = r[:-1] + ("q" if r[-1] != "q" else "p")
    mixed = s[:20] + s[20:].lower()
    for wrong in (bad_checksum, mixed, "age1", "", "age1qqqq", r + "q", s):
        with pytest.raises(KeyFileError):
            parse_x25519_recipient(wrong)
    for wrong in (r, mixed, s[:-1], "AGE-SECRET-KEY-1"):
        with pytest.raises(KeyFileError):
            parse_x25519_identity(wrong)
    # Another human-readable part with a valid checksum is still not an age key.
    with pytest.raises(KeyFileError):
        parse_x25519_recipient(bech32.encode("bge", ident.recipient().public_bytes))
    with pytest.raises(FormatError):
        bech32.decode("a1" + "q" * 5)


def test_ssh_wire_encoding() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
    wire = ssh_wire_public_key(key)
    n = key.public_numbers().n
    # string "ssh-rsa", mpint e = 0x010001, mpint n with a leading zero (its top bit is set).
    expected = b"\x00\x00\x00\x07ssh-rsa" + b"\x00\x00\x00\x03\x01\x00\x01"
    expected += (129).to_bytes(4, "big") + b"\x00" + n.to_bytes(128, "big")
    assert wire == expected
    assert b64.decode(ssh_tag(key)) == hashlib.sha256(wire).digest()[:4]
