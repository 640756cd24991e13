"""Random access into line-wrapped base64 text, as ``openssl enc -a`` writes it.

Base64 maps every 3 raw bytes to 4 characters, and the text is cut into lines of a fixed
width (64 for openssl), each followed by an end-of-line. So the text position of any
character is arithmetic, and any raw byte range maps to a text byte range that can be
fetched and decoded alone. Decoding checks the layout strictly: misplaced line ends or
foreign characters are a FormatError, never silently skipped.
"""

from __future__ import annotations

import binascii
import itertools
import struct
from dataclasses import dataclass

from b2cryptfs.errors import FormatError


@dataclass(frozen=True)
class Layout:
    """``chars`` base64 characters in lines of ``width`` (the last may be shorter), each line
    ended by ``eol`` except possibly the last (``trailing_eol``)."""

    width: int
    eol: bytes
    chars: int
    trailing_eol: bool
    pad: int  # '=' characters at the end

    @property
    def raw_size(self) -> int:
        return self.chars // 4 * 3 - self.pad

    @property
    def text_size(self) -> int:
        lines = -(-self.chars // self.width)
        return self.chars + len(self.eol) * (lines if self.trailing_eol else lines - 1)

    def pos(self, n: int) -> int:
        """Text offset of base64 character ``n``."""
        line, col = divmod(n, self.width)
        return line * (self.width + len(self.eol)) + col

    def char_range(self, raw_start: int, raw_end: int) -> tuple[int, int]:
        """Base64 characters ``[n0, n1)`` covering raw bytes ``[raw_start, raw_end)``."""
        n0 = raw_start // 3 * 4
        n1 = min(-(-raw_end // 3) * 4, self.chars)
        return n0, n1

    def text_range(self, n0: int, n1: int) -> tuple[int, int]:
        """Text bytes ``[start, end)`` holding characters ``[n0, n1)`` (line ends between)."""
        return self.pos(n0), self.pos(n1 - 1) + 1

    def decode(self, n0: int, text: bytes) -> bytes:
        """Raw bytes of the characters starting at ``n0`` (a multiple of 4) in ``text``,
        which must be exactly a :meth:`text_range`."""
        step = self.width + len(self.eol)
        # Offset in `text` of the first line end that follows character n0.
        first = self.pos((n0 // self.width + 1) * self.width - 1) + 1 - self.pos(n0)
        for k, byte in enumerate(self.eol):
            ends = text[first + k :: step]
            if ends.count(byte) != len(ends):
                raise FormatError("base64 content: line ends are not where expected")
        data = text.replace(self.eol, b"")
        if len(data) % 4 or self.eol[-1:] in data:
            raise FormatError("base64 content: line ends are not where expected")
        try:
            return binascii.a2b_base64(data, strict_mode=True)
        except binascii.Error as e:
            raise FormatError(f"base64 content: invalid base64 ({e})") from None


def detect(head: bytes, tail: bytes, size: int) -> Layout:
    """The layout of a base64 text of ``size`` bytes from its first and last bytes.

    ``head`` is the text from offset 0, ``tail`` the text ending at ``size``; each should be a
    few hundred bytes (or the whole text). A text without any line end in ``head`` is taken
    as a single line (``openssl enc -a -A``).
    """
    if size <= 0 or not head or not tail:
        raise FormatError("base64 content: empty object")
    trailing = tail.endswith(b"\n")
    idx = head.find(b"\n")
    if idx < 0 or (idx == size - 1):
        # A single line, with or without its end.
        eol = b"\r\n" if tail.endswith(b"\r\n") else b"\n"
        chars = size - (len(eol) if trailing else 0)
        width = max(chars, 4)
    else:
        eol = b"\r\n" if idx > 0 and head[idx - 1 : idx] == b"\r" else b"\n"
        width = idx + 1 - len(eol)
        if trailing and not tail.endswith(eol):
            raise FormatError("base64 content: inconsistent line ends")
        if width <= 0 or width % 4:
            raise FormatError(f"base64 content: first line of {width} characters")
        step = width + len(eol)
        q, r = divmod(size + (0 if trailing else len(eol)), step)
        if r == 0:
            chars = q * width
        elif r > len(eol):
            chars = q * width + r - len(eol)
        else:
            raise FormatError("base64 content: object length does not fit its line layout")
    if chars <= 0 or chars % 4:
        raise FormatError("base64 content: length is not a whole number of base64 groups")
    body = tail[: len(tail) - len(eol)] if trailing else tail
    pad = len(body) - len(body.rstrip(b"="))
    if pad > 2:
        raise FormatError("base64 content: too much '=' padding")
    layout = Layout(width, eol, chars, trailing, pad)
    if layout.text_size != size:
        raise FormatError("base64 content: object length does not fit its line layout")
    return layout


def encode_lines(raw: bytes, width: int = 64) -> bytes:
    """``raw`` as base64 in lines of ``width`` characters, each ended by ``\\n``.

    Callers stream in pieces whose length is a multiple of ``width // 4 * 3`` so that the
    lines of consecutive pieces join up; only the last piece may be shorter.
    """
    text = binascii.b2a_base64(raw, newline=False)
    whole = len(text) // width * width
    # struct.iter_unpack cuts the lines in C: several times faster than slicing in Python.
    lines = list(itertools.chain.from_iterable(struct.iter_unpack(f"{width}s", text[:whole])))
    if whole < len(text):
        lines.append(text[whole:])
    lines.append(b"")
    return b"\n".join(lines) if len(lines) > 1 else b""
