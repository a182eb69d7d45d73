"""What a client that repairs mojibake reads: UTF-8 that was read as Latin-1 or Windows-1252 and
written out as UTF-8 again (``ï¼³`` for fullwidth ``S``, U+FF33), read back as the UTF-8 it was.

ftfy's ``fix_text`` (and ``fix_encoding``), or a hand-written ``text.encode("cp1252").decode("utf-8")``,
undo it; a value spelled in characters that are not ASCII (fullwidth letters, accented ones, ones
with zero-width spaces between) and then garbled so reaches such a client whole, though no view of
the bytes, folded or not, reads it (red team 52). Each layer of it doubles the bytes; a second one
(mojibake of mojibake) is undone too, and every one after it, as ftfy undoes them.

Only Latin-1 and Windows-1252, read "sloppily" as ftfy reads them (a byte Windows-1252 leaves
undefined is the Latin-1 control of that number): nearly all mojibake comes from them, and the
question "could this be mojibake" costs one Hyperscan scan for them (~10 us per 64 KiB), then, only
where an accented letter is followed by a non-breaking space, a guillemet or an ellipsis, a search
(~0.6 ms per 64 KiB of French). Each other code page ftfy tries (Cyrillic, Greek, Central European,
Mac Roman, cp437) cost 0.4-1.7 ms per 64 KiB to ask with re, and its question held in ordinary text
of its own languages. Those are a known gap (README).

Pure: bytes in, bytes out.
"""

from __future__ import annotations

import contextlib
import re

from proxy.core.anyof import any_of
from proxy.core.tries import trie

__all__ = ["LAYERS", "escaped_garbled", "repaired", "unescape_garbled", "without_controls"]

# Layers undone at most: each doubles the bytes at least (a 40-character value garbled 16 times is
# megabytes), and ftfy repairs until nothing changes.
LAYERS = 16


def _sloppy_1252() -> dict[str, int]:
    """Each character Latin-1 or Windows-1252 writes as one byte 0x80-0xFF, and that byte."""
    table = {chr(b): b for b in range(0x80, 0x100)}  # (Latin-1; Windows-1252 agrees from 0xA0)
    for b in range(0x80, 0xA0):
        with contextlib.suppress(UnicodeDecodeError):  # (undefined: its Latin-1 control, as ftfy reads it)
            table[bytes([b]).decode("cp1252")] = b
    return table


_BYTE_OF = _sloppy_1252()
_AS_LATIN1 = str.maketrans({c: chr(b) for c, b in _BYTE_OF.items()})


# A character's bytes garbled: its lead byte (0xC2-0xF4) read as one of U+00C2-U+00F4 (Latin-1 and
# Windows-1252 agree from 0xA0; in UTF-8, ``\xc3`` and one byte), then as many continuation bytes
# (0x80-0xBF) as the lead says, each read as its character. (A literal first byte: re's fast scan.)
_CONTINUATIONS = {c.encode() for c, b in _BYTE_OF.items() if 0x80 <= b <= 0xBF}
_CONTINUATION = trie(_CONTINUATIONS)
_GARBLED = re.compile(
    rb"\xc3(?:[\x82-\x9f]" + _CONTINUATION
    + rb"|[\xa0-\xaf]" + _CONTINUATION * 2
    + rb"|[\xb0-\xb4]" + _CONTINUATION * 3 + rb")"
)  # fmt: skip


# Asked first, in one Hyperscan scan (~10 us per 64 KiB): a lead's character then the first byte
# of a continuation's. The expression above tries itself at every ``\xc3`` (each accented letter
# of French or Portuguese text: ~600 us per 64 KiB); this leaves it the texts where an accented
# letter is followed by a non-breaking space, a guillemet or an ellipsis.
_GARBLED_OPENERS = [
    b"\xc3" + bytes([lead]) + first for lead in range(0x82, 0xB5) for first in sorted({c[:1] for c in _CONTINUATIONS})
]
_MAY_BE_GARBLED = any_of(_GARBLED_OPENERS, caseless=False, store=True)


def _bytes_of(garbled: str, original: bytes) -> bytes:
    """The bytes the characters of ``garbled`` stand for, where they are one character's UTF-8
    (or half of a UTF-16 pair's, as CESU-8 and Java's modified UTF-8 write one: joined by
    :func:`_join_halves`); else ``original``, as it was."""
    raw = garbled.translate(_AS_LATIN1).encode("latin-1")
    try:
        raw.decode("utf-8", "surrogatepass")  # (well-formed: not an overlong form, nor past U+10FFFF)
    except UnicodeDecodeError:
        return original
    return raw


def _undo(m: re.Match[bytes]) -> bytes:
    return _bytes_of(m.group().decode("utf-8"), m.group())


# A character beyond U+FFFF as the two halves of its UTF-16 pair, each written as UTF-8 (CESU-8):
# ftfy reads them as the character, so a garbled mathematical letter written so is one.
_PAIR = re.compile(rb"\xed[\xa0-\xaf][\x80-\xbf]\xed[\xb0-\xbf][\x80-\xbf]")


def _join_halves(data: bytes) -> bytes:
    if data.find(b"\xed") < 0 or _PAIR.search(data) is None:
        return data
    return _PAIR.sub(
        lambda m: (
            m.group().decode("utf-8", "surrogatepass").encode("utf-16", "surrogatepass").decode("utf-16").encode()
        ),
        data,
    )


# C0 controls but TAB, LF and CR, and DEL (and, as JSON escapes, every C0 control): a client drops
# them (as filler between a value's characters: proxy.core.scrub), and may do so before it repairs
# (red team 53). Dropping more only ever joins what was apart: no value hides by it.
_CONTROLS = bytes(b for b in range(0x20) if b not in b"\t\n\r") + b"\x7f"
_ESCAPED_CONTROL = re.compile(rb"\\u00(?:[01][0-9a-fA-F]|7[fF])")


def without_controls(data: bytes) -> bytes:
    """``data`` without its controls (see :data:`_CONTROLS`), raw or escaped."""
    data = data.translate(None, _CONTROLS)
    if data.find(b"\\u00") >= 0:
        data = _ESCAPED_CONTROL.sub(b"", data)
    return data


def repaired(data: bytes) -> list[bytes]:
    """``data`` with its mojibake undone, once, then again in what that gave, while there is any
    (as ftfy repairs it: until nothing changes; each layer at least halves what it undoes, so
    there are at most :data:`LAYERS`); empty when there is none. In each reading, every garbled
    character (the characters its UTF-8 bytes are in Latin-1 or Windows-1252, where those bytes are
    one well-formed character, or half of a UTF-16 pair) is that character; the rest is as it was."""
    out: list[bytes] = []
    for _ in range(LAYERS):
        if data.find(b"\xc3") < 0 or (_MAY_BE_GARBLED is not None and _MAY_BE_GARBLED(data) is False):
            break
        if _GARBLED.search(data) is None:
            break
        fixed = _join_halves(_GARBLED.sub(_undo, data))
        if fixed == data:
            break
        out.append(fixed)
        data = fixed
    return out


# The same, as JSON writes it (``json.dumps`` escapes every character that is not ASCII: ``ï¼³`` is
# ``\\u00ef\\u00bc\\u00b3``), which the unescaped views drop as characters a cleaning client drops;
# and with some of its characters escaped and others not (an encoder that escapes only the C1
# controls, ``ð\\u009d\\u0090¬``): each character raw or escaped.
def _escapes(chars: set[bytes]) -> bytes:
    """JSON's escapes of ``chars`` (UTF-8 sequences), their hex digits in either case."""
    return rb"\\u(?i:" + trie({b"%04x" % ord(c.decode()) for c in chars}) + rb")"


_ANY_CONTINUATION = rb"(?:" + _CONTINUATION + rb"|" + _escapes(_CONTINUATIONS) + rb")"
_ESCAPED_GARBLED = re.compile(
    rb"(?:\xc3[\x82-\x9f]|\\u00(?:[cC][2-9a-fA-F]|[dD][0-9a-fA-F]))" + _ANY_CONTINUATION
    + rb"|(?:\xc3[\xa0-\xaf]|\\u00[eE][0-9a-fA-F])" + _ANY_CONTINUATION * 2
    + rb"|(?:\xc3[\xb0-\xb4]|\\u00[fF][0-4])" + _ANY_CONTINUATION * 3
)  # fmt: skip
_ESCAPE = re.compile(r"\\u([0-9a-fA-F]{4})")


def escaped_garbled(data: bytes) -> bool:
    """Whether ``data`` holds a garbled character with some of it as JSON escapes (see
    :func:`unescape_garbled`)."""
    return data.find(b"\\u") >= 0 and _ESCAPED_GARBLED.search(without_controls(data)) is not None


def _unescape(m: re.Match[bytes]) -> bytes:
    garbled = m.group()
    text = _ESCAPE.sub(lambda e: chr(int(e.group(1), 16)), garbled.decode("utf-8"))
    return _bytes_of(text, garbled)


def unescape_garbled(data: bytes) -> bytes:
    """``data`` with each garbled character written with JSON escapes (``\\u00ef\\u00bc\\u00b3``,
    or some of it so) as the character it garbles, in UTF-8 (U+FF33); the rest as it was (a view of
    its own: a client that parses the JSON, then repairs the text; its controls dropped, as by a
    client that drops them first)."""
    return _join_halves(_ESCAPED_GARBLED.sub(_unescape, without_controls(data)))
