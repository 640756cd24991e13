"""Bech32 (BIP 173 checksum) as age uses it for ``age1…`` and ``AGE-SECRET-KEY-1…`` keys.

age drops BIP 173's 90-character limit, and so do we; everything else (charset, checksum,
no mixed case, 8-to-5-bit regrouping without non-zero padding) is as in BIP 173.
"""

from __future__ import annotations

from b2cryptfs.errors import FormatError

CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_VALUES = {c: i for i, c in enumerate(CHARSET)}
_GEN = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)


def _polymod(values: list[int]) -> int:
    chk = 1
    for v in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ v
        for i in range(5):
            if (top >> i) & 1:
                chk ^= _GEN[i]
    return chk


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def _regroup(data: bytes | list[int], frombits: int, tobits: int, pad: bool) -> list[int]:
    acc = bits = 0
    out = []
    maxv = (1 << tobits) - 1
    for value in data:
        acc = (acc << frombits) | value
        bits += frombits
        while bits >= tobits:
            bits -= tobits
            out.append((acc >> bits) & maxv)
    if pad:
        if bits:
            out.append((acc << (tobits - bits)) & maxv)
    elif bits >= frombits or (acc << (tobits - bits)) & maxv:
        raise FormatError("bech32: invalid padding")
    return out


def encode(hrp: str, data: bytes) -> str:
    """Lower-case bech32 string of ``data`` under human-readable part ``hrp``."""
    hrp = hrp.lower()
    values = _regroup(data, 8, 5, pad=True)
    polymod = _polymod(_hrp_expand(hrp) + values + [0] * 6) ^ 1
    checksum = [(polymod >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(CHARSET[v] for v in values + checksum)


def decode(s: str) -> tuple[str, bytes]:
    """``(hrp, data)`` of a bech32 string; the hrp is returned in lower case."""
    if s.lower() != s and s.upper() != s:
        raise FormatError("bech32: mixed case")
    if any(ord(c) < 33 or ord(c) > 126 for c in s):
        raise FormatError("bech32: invalid character")
    s = s.lower()
    pos = s.rfind("1")
    if pos < 1 or pos + 7 > len(s):
        raise FormatError("bech32: separator misplaced")
    hrp, rest = s[:pos], s[pos + 1 :]
    try:
        values = [_VALUES[c] for c in rest]
    except KeyError:
        raise FormatError("bech32: invalid character") from None
    if _polymod(_hrp_expand(hrp) + values) != 1:
        raise FormatError("bech32: bad checksum")
    return hrp, bytes(_regroup(values[:-6], 5, 8, pad=False))
