"""NameCipher (AES-SIV names in base32) and the name key file, without any store.

The format is checked against an independent AES-SIV written here from RFC 5297 over plain
AES and CMAC (itself checked on the RFC's test vector), so that the documented construction
(associated data = label, plaintext parent path; lowercase unpadded base32) is what the code
does, not merely whatever it does.
"""

from __future__ import annotations

import base64
import os
import re

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.cmac import CMAC

from b2cryptfs.errors import (
    FormatError,
    IntegrityError,
    InvalidName,
    NameTooLong,
    NoMatchingIdentity,
)
from b2cryptfs.formats.names import (
    MAX_ENCODED_SEGMENT,
    MAX_PLAIN_SEGMENT,
    NAME_KEY_SIZE,
    NameCipher,
    unwrap_name_key,
    wrap_name_key,
)
from b2cryptfs.keys.types import X25519Identity

# --- an independent AES-SIV (RFC 5297 section 2), for checking only ----------------------


def _cmac(key: bytes, data: bytes) -> bytes:
    c = CMAC(algorithms.AES(key))
    c.update(data)
    return c.finalize()


def _dbl(block: bytes) -> bytes:
    n = int.from_bytes(block, "big") << 1
    if n >> 128:
        n = (n & ((1 << 128) - 1)) ^ 0x87
    return n.to_bytes(16, "big")


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def _s2v(k1: bytes, strings: list[bytes]) -> bytes:
    d = _cmac(k1, bytes(16))
    for s in strings[:-1]:
        d = _xor(_dbl(d), _cmac(k1, s))
    last = strings[-1]
    if len(last) >= 16:
        t = last[:-16] + _xor(last[-16:], d)
    else:
        padded = last + b"\x80" + bytes(15 - len(last))
        t = _xor(_dbl(d), padded)
    return _cmac(k1, t)


def reference_siv(key: bytes, ad: list[bytes], plaintext: bytes) -> bytes:
    half = len(key) // 2
    k1, k2 = key[:half], key[half:]
    v = _s2v(k1, [*ad, plaintext])
    q = bytearray(v)
    q[8] &= 0x7F
    q[12] &= 0x7F
    enc = Cipher(algorithms.AES(k2), modes.CTR(bytes(q))).encryptor()
    return v + enc.update(plaintext) + enc.finalize()


def test_reference_siv_matches_rfc5297_vector():
    key = bytes.fromhex("fffefdfcfbfaf9f8f7f6f5f4f3f2f1f0f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff")
    ad = bytes.fromhex("101112131415161718191a1b1c1d1e1f2021222324252627")
    pt = bytes.fromhex("112233445566778899aabbccddee")
    out = reference_siv(key, [ad], pt)
    assert out.hex() == "85632d07c6e8f37f950acd320a2ecc9340c02b9690c4dc04daef7f6afe5c"


# --- NameCipher --------------------------------------------------------------------------

NAMES = ["a", "notes.txt", "X.key", "Grüße – 日本語.pdf", " spaced name ", "x" * MAX_PLAIN_SEGMENT]


@pytest.mark.parametrize("parent", ["", "docs", "docs/2024/Ünïcode"])
def test_segment_is_documented_aes_siv_in_base32(parent):
    key = os.urandom(NAME_KEY_SIZE)
    cipher = NameCipher(key)
    for name in NAMES:
        raw = reference_siv(key, [b"b2cryptfs name v1", parent.encode()], name.encode())
        expected = base64.b32encode(raw).decode().rstrip("=").lower()
        assert cipher.encrypt_segment(name, parent) == expected
        assert cipher.decrypt_segment(expected, parent) == name


def test_round_trip_determinism_and_alphabet():
    cipher = NameCipher.generate()
    other = NameCipher.generate()
    for name in NAMES:
        enc = cipher.encrypt_segment(name)
        assert re.fullmatch(r"[a-z2-7]+", enc), enc  # no dots, no capitals, no padding
        assert len(enc) <= MAX_ENCODED_SEGMENT
        assert cipher.encrypt_segment(name) == enc  # deterministic: lookup by name works
        assert NameCipher(cipher.key).encrypt_segment(name) == enc
        assert other.encrypt_segment(name) != enc
        # Bound to the parent: the same name elsewhere is an unrelated object name.
        assert cipher.encrypt_segment(name, "elsewhere") != enc
        assert cipher.decrypt_segment(enc) == name
        assert cipher.decrypt_segment(enc, "elsewhere") is None
        assert other.decrypt_segment(enc) is None


def test_paths_encrypt_segment_by_segment():
    cipher = NameCipher.generate()
    enc = cipher.encrypt_path("a/b c/d.txt")
    parts = enc.split("/")
    assert parts == [
        cipher.encrypt_segment("a"),
        cipher.encrypt_segment("b c", "a"),
        cipher.encrypt_segment("d.txt", "a/b c"),
    ]
    assert cipher.decrypt_path(enc) == "a/b c/d.txt"
    assert cipher.encrypt_path("") == "" and cipher.decrypt_path("") == ""
    # Moving an encrypted segment under another directory makes it undecodable.
    moved = "/".join([cipher.encrypt_segment("z"), parts[1], parts[2]])
    assert cipher.decrypt_path(moved) is None


def test_tampered_or_foreign_names_do_not_decode():
    cipher = NameCipher.generate()
    enc = cipher.encrypt_segment("report.pdf")
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    for i in range(len(enc)):
        for repl in {alphabet[(alphabet.index(enc[i]) + 1) % 32], alphabet[0], alphabet[-1]}:
            if repl == enc[i]:
                continue
            changed = enc[:i] + repl + enc[i + 1 :]
            assert cipher.decrypt_segment(changed) is None, (i, repl)
    for foreign in ["report.pdf", enc.upper(), enc + "a", enc[:-1], "", "a" * 26, "==", "x.y"]:
        assert cipher.decrypt_segment(foreign) is None, foreign
    # A non-canonical spelling of the same bytes (different unused trailing bits) is refused:
    # one plaintext name has exactly one object name.
    raw = base64.b32decode(enc.upper() + "=" * (-len(enc) % 8))
    if len(raw) * 8 % 5:
        last = alphabet.index(enc[-1])
        unused = 5 - len(raw) * 8 % 5
        alias = enc[:-1] + alphabet[last ^ ((1 << unused) - 1)]
        assert base64.b32decode(alias.upper() + "=" * (-len(alias) % 8)) == raw
        assert cipher.decrypt_segment(alias) is None


def test_length_limit():
    cipher = NameCipher.generate()
    assert MAX_PLAIN_SEGMENT == 135
    assert len(cipher.encrypt_segment("x" * 135)) == MAX_ENCODED_SEGMENT == 242
    assert len(cipher.encrypt_segment("€" * 45)) <= 242  # 135 bytes of UTF-8
    for too_long in ("x" * 136, "€" * 46):
        with pytest.raises(NameTooLong, match="135 bytes"):
            cipher.encrypt_segment(too_long)


def test_invalid_segments_and_keys():
    cipher = NameCipher.generate()
    for bad in ["", ".", "..", "a/b", "\udcff"]:
        with pytest.raises(InvalidName):
            cipher.encrypt_segment(bad)
    with pytest.raises(FormatError):
        NameCipher(os.urandom(32))


def test_name_key_file_round_trip_and_failures():
    me, stranger = X25519Identity(os.urandom(32)), X25519Identity(os.urandom(32))
    key = os.urandom(NAME_KEY_SIZE)
    data = wrap_name_key(key, [me.recipient()])
    assert data.startswith(b"age-encryption.org/v1\n")
    assert unwrap_name_key(data, [stranger, me]) == key
    with pytest.raises(NoMatchingIdentity):
        unwrap_name_key(data, [stranger])
    tampered = bytearray(data)
    tampered[-5] ^= 1
    with pytest.raises(IntegrityError):
        unwrap_name_key(bytes(tampered), [me])
    with pytest.raises(FormatError, match="not 64"):
        unwrap_name_key(wrap_name_key(b"short", [me.recipient()]), [me])
