"""What a client that cleans text reads of UTF-8 bytes, as far as a value (printable ASCII) goes:
the text with every character that is not ASCII dropped (and every control), after compatibility folding (NFKC) where
the text holds ASCII letters or digits in compatibility forms -- fullwidth ``U+FF53 U+FF4B`` is
``sk``, mathematical ``U+1D42C`` is ``s``. Dropping every other character reads a value whose
characters are kept apart by invisible ones -- format characters (zero-width spaces and joiners,
the soft hyphen, bidirectional controls, tags), variation selectors, combining marks -- as search
indexes, RAG text cleaners, many LLM tokenisers and a human copying from a rendered page read it;
it also joins characters a visible one keeps apart, which only ever shows a value a client would
not read.

Cost is what matters here: every body with a byte above 0x7F from a bound host is read so.
Dropping what is not ASCII is one ``bytes.translate`` (every byte of a UTF-8 character that is not
ASCII is above 0x7F; ~1 ns a byte). NFKC of a whole text that has compatibility characters in it
costs ~40 ns a character (Chinese punctuation, typographic quotes and ellipses are such
characters), so it runs only where the bytes hold letters or digits that it folds to ASCII, each
kind found by a search with a literal prefix (fast).
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["LETTERLIKE", "fold_bytes", "fold_compatible"]

# Letters and digits in compatibility forms (what a value is made of): fullwidth letters and digits
# (U+FF10-FF19, U+FF21-FF3A, U+FF41-FF5A; not CJK text's fullwidth punctuation, U+FF01-FF0F and
# U+FF1A-FF20), mathematical alphanumerics (U+1D400-1D7FF) and the letterlike symbols that fold to
# one letter (U+2102-2149: the mathematical alphabets' letters that Unicode had before them, such
# as italic ``U+210E``, script ``U+212C``, double-struck ``U+211D``; not ``U+2122``, TM, nor
# ``U+2103``, a degree sign and C). (Not read: circled letters and digits, superscripts and
# subscripts, and the like.)
LETTERLIKE = {
    cp: folded
    for cp in range(0x2100, 0x2150)
    for folded in (unicodedata.normalize("NFKC", chr(cp)),)
    if len(folded) == 1 and folded.isascii() and folded.isalnum()
}


def _letterlike() -> bytes:
    """The UTF-8 of LETTERLIKE's characters, as an expression: their first byte (one for all) as a
    literal prefix, re's fast scan."""
    lead = {chr(cp).encode()[:1] for cp in LETTERLIKE}
    assert lead == {b"\xe2"}
    return b"\xe2(?:" + b"|".join(re.escape(chr(cp).encode()[1:]) for cp in sorted(LETTERLIKE)) + b")"


_COMPAT = tuple(
    re.compile(p)
    for p in (
        rb"\xef\xbd[\x81-\x9a]",
        rb"\xef\xbc[\x90-\x99\xa1-\xba]",
        rb"\xf0\x9d[\x90-\x9f]",
        _letterlike(),
    )
)
_HIGH = bytes(range(0x80, 0x100))
# C0 controls but TAB, LF and CR, and DEL: dropped too, as such a client drops what is not
# printable (fullwidth letters with a control between each: red team 24).
_DROPPED = _HIGH + bytes(b for b in range(0x20) if b not in b"\t\n\r") + b"\x7f"


def fold_bytes(data: bytes) -> bytes | None:
    """The ASCII a cleaning client reads of ``data`` (see above); None when ``data`` is ASCII.
    Folded as UTF-8, bytes that are not UTF-8 read as a replacement character (dropped: a
    character cut by the end of ``data`` too, so the view ends as the text it begins does)."""
    if data.isascii():
        return None
    if any(c.search(data) is not None for c in _COMPAT):
        folded = unicodedata.normalize("NFKC", data.decode("utf-8", "replace")).encode("ascii", "ignore")
        return folded.translate(None, _DROPPED)
    return data.translate(None, _DROPPED)


def fold_compatible(data: bytes) -> bytes:
    """``data`` with its letters and digits in compatibility forms NFKC-folded, where it holds any
    (fullwidth ``U+FF53`` is ``s``), every other byte as it was (those that are not UTF-8 too)."""
    if data.isascii() or not any(c.search(data) is not None for c in _COMPAT):
        return data
    return unicodedata.normalize("NFKC", data.decode("utf-8", "surrogateescape")).encode("utf-8", "surrogateescape")
