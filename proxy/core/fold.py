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

import functools
import re
import unicodedata
from collections.abc import Callable, Iterable
from typing import Literal

from proxy.core.anyof import any_of, which_of
from proxy.core.latin_ascii import LATIN_ASCII
from proxy.core.mojibake import repaired, without_controls

__all__ = [
    "LETTERLIKE",
    "NEWER_UNICODE",
    "STRIPPED_ASCII",
    "TRANSLITERATED",
    "STRIPPED_BLOCKS",
    "fold_bytes",
    "CONTESTED_TEXT",
    "contested_readings",
    "fold_compatible",
    "holds_contested",
    "stripped_differs",
    "transliterate_text",
]

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
    return _nfkc(data) if _compatible(data) else data.translate(None, _DROPPED)


def _compatible(data: bytes) -> bool:
    return any(c.search(data) is not None for c in _COMPAT)


def _nfkc(data: bytes) -> bytes:
    # (Each replacement character as NUL: both are starters that compose with nothing, so NFKC
    # reads the same ASCII, and NFKC of a text with many replacement characters, binary bytes'
    # reading, cost ~4x that of one with NULs: 6 ms against 1.3 per 64 KiB.)
    text = data.decode("utf-8", "replace").replace("\ufffd", "\x00")
    return unicodedata.normalize("NFKC", text).encode("ascii", "ignore").translate(None, _DROPPED)


def fold_compatible(data: bytes) -> bytes:
    """``data`` with its letters and digits in compatibility forms NFKC-folded, where it holds any
    (fullwidth ``U+FF53`` is ``s``), every other byte as it was (those that are not UTF-8 too)."""
    if data.isascii() or not _compatible(data):
        return data
    return unicodedata.normalize("NFKC", data.decode("utf-8", "surrogateescape")).encode("utf-8", "surrogateescape")


# -- a client that strips accents -----------------------------------------------------------------
# ``normalize("NFKD", text).encode("ascii", "ignore")`` (JavaScript's ``normalize("NFD")`` and a
# combining-mark replace, slugify, search engines' ASCII folding) reads what the folding above does
# not: precomposed letters with diacritics, ``U+015B`` is ``s`` (canonical decompositions, which
# NFKC composes again: red team 47), and every other compatibility form of a letter or digit
# (circled ``U+24C7`` is ``R``, superscript ``U+2071`` is ``i``, ``U+217C`` is ``l``). Its view is
# made where the bytes hold such a character outside _COMPAT's (whose reading is the fold view's):
# one in STRIPPED_BLOCKS, which tests/proxy/core/test_accents.py holds to all of Unicode. The gate
# is Hyperscan's literal matcher on the characters' UTF-8 (for a character of three or four bytes,
# all but its last: ~6 us per 64 KiB); NFKD of the whole then costs ~15-20 ns a byte, and only text
# with such characters pays it (French or Vietnamese prose does, Chinese or Russian does not; a
# 64 KiB French answer in JSON costs about twice what it did to scrub: bench/README.md).
STRIPPED_BLOCKS = (
    (0xAA, 0x234), (0x2B0, 0x2E4), (0x1D2C, 0x1DBC), (0x1E00, 0x1EFA), (0x2070, 0x20A9), (0x2100, 0x218A),
    (0x2260, 0x2270), (0x2460, 0x24EB), (0x2C7C, 0x2C7E), (0x3250, 0x3260), (0x32B1, 0x32D0), (0x3358, 0x3400),
    (0xA7F2, 0xA7F5), (0xFB00, 0xFB07), (0x107A5, 0x107A6), (0x1F100, 0x1F191), (0x1FBF0, 0x1FBFA),
)  # fmt: skip


def _ascii(form: Literal["NFKC", "NFKD"], c: str) -> bytes:
    return unicodedata.normalize(form, c).encode("ascii", "ignore")


def stripped_differs(c: str) -> bool:
    """Whether the stripping client reads ``c`` as something the fold view does not: ASCII letters
    or digits where NFKC is not folded (outside _COMPAT's characters), or other ASCII than NFKC's."""
    stripped = _ascii("NFKD", c)
    if not stripped or c.isascii():
        return False
    if any(x.search(c.encode()) is not None for x in _COMPAT):
        return stripped != _ascii("NFKC", c)
    return any(chr(b).isalnum() for b in stripped) or stripped != _ascii("NFKC", c)


# Each such character, as the ASCII the stripping client reads.
STRIPPED_ASCII = {
    cp: _ascii("NFKD", chr(cp)) for lo, hi in STRIPPED_BLOCKS for cp in range(lo, hi) if stripped_differs(chr(cp))
}
_STRIPPED_OPENERS = sorted(
    {utf8 if len(utf8) == 2 else utf8[:-1] for utf8 in (chr(cp).encode() for cp in STRIPPED_ASCII)}
)


def _literal_gate(
    literals: list[bytes], which: Callable[[bytes], set[int] | None] | None = None
) -> Callable[[bytes], bool]:
    """Whether any of ``literals`` occurs in the bytes (case kept): Hyperscan's literal matcher (or
    ``which``, a :func:`which_of` of them: one compiled set serves both), or where it is absent or
    its scratch space is in use in another thread, an expression (~5 ns a byte)."""
    scan = (
        any_of(literals, caseless=False, store=True)
        if which is None
        else (lambda data: None if (found := which(data)) is None else bool(found))
    )
    expr: list[re.Pattern[bytes]] = []  # (compiled when first needed: ~10 ms at start-up otherwise)

    def occurs(data: bytes) -> bool:
        found = scan(data) if scan is not None else None
        if found is not None:
            return found
        if not expr:
            expr.append(re.compile(b"|".join(map(re.escape, literals))))
        return expr[0].search(data) is not None

    return occurs


_stripping = _literal_gate(_STRIPPED_OPENERS)  # (of bytes not ASCII: a character read otherwise)


def _ascii_of_utf8(utf8: bytes) -> bytes:
    """The ASCII of the text whose UTF-8 this is, controls dropped (every byte of a character that
    is not ASCII is above 0x7F: one pass, ~1.5 ns a byte, where encoding a text to ASCII cost ~3)."""
    return utf8.translate(None, _DROPPED)


# -- a client that transliterates ------------------------------------------------------------------
# Unidecode, python-slugify (Unidecode by default), any-ascii, lodash's ``deburr`` and Lucene's
# ``asciifolding`` read Latin letters that have no decomposition as ASCII ones too: ``ħ`` is ``h``,
# ``ł`` is ``l``, ``ø`` is ``o``, ``U+0131`` is ``i``, small capital ``ᴋ`` is ``k``, ``ß`` is ``ss`` (red
# team 48). NFKD drops them: a value written with them went out. Their reading is any-ascii's (a
# maintained table of every such letter; proxy.core.latin_ascii, written out from it), for the
# Latin blocks only (not a transliteration of other scripts: CJK read as pinyin would be a view of
# every Chinese text), and where it differs from NFKD's; ``ĸ`` as Unidecode and deburr read it.
# Letters and digits whose compatibility decomposition Unicode added after this Python's tables
# (15.0), which a client on a newer one folds to ASCII (Node 22 and browsers on ICU 76+, Java 24:
# NFKC or NFKD alike): subscript ``w y z`` (U+209D-209F, 16.0), modifier capital ``S`` (U+A7F1,
# 17.0), outlined capitals and digits (U+1CCD6-1CCF9, 16.0). Read as they do, with the letters
# above (tests/proxy/core/test_accents.py holds this to unicodedata2's newer tables).
NEWER_UNICODE = {
    0x209D: "w", 0x209E: "y", 0x209F: "z", 0xA7F1: "S",
    **{0x1CCD6 + i: chr(0x41 + i) for i in range(26)}, **{0x1CCF0 + d: str(d) for d in range(10)},
}  # fmt: skip


# Tag characters (U+E0020-E007E), which no font shows (an emoji flag's subdivision is spelt in
# them), as the ASCII characters they tag: any-ascii reads them so, as does any "ASCII smuggling"
# decoder; a value spelt in them is invisible on a page (red team 49). Read with the letters.
TAGS = {0xE0000 + c: chr(c) for c in range(0x20, 0x7F)}

# Each such letter's UTF-8, as the ASCII the transliterating client reads.
TRANSLITERATED = {
    chr(cp).encode(): ascii_.encode() for table in (LATIN_ASCII, NEWER_UNICODE, TAGS) for cp, ascii_ in table.items()
}
_TRANSLITERATED_UTF8 = sorted(TRANSLITERATED)
# Which kinds of them a text holds, each once: most text holds few (French ``œ``, German ``ß``),
# and each is then one ``bytes.replace`` of the NFKD text's UTF-8 (~30 us per 64 KiB), where an
# expression substituting them in the text cost ~8 ns a character and a call per occurrence (a
# German text: ~2 ms per 64 KiB). Asked of the bytes (whether any: the gate; and whether few), then
# of the NFKD text (which): some decompose to another, modifier ``U+1DB4`` to ``U+0283``, and some
# characters that are not such letters decompose to one.
_REPLACED_MAX = 8  # kinds of them replaced one by one; more (random bytes hold ~65): the expression
# (~1,400 of them: ~20-30 ms to compile, past the limit set for builds at run time: read from
# anyof.STORE where the build stored it.)
_transliterated_in = which_of(_TRANSLITERATED_UTF8, caseless=False, most=_REPLACED_MAX, most_patterns=2048, store=True)
_transliterating = _literal_gate(_TRANSLITERATED_UTF8, _transliterated_in)
# The first three bytes of those beyond the BMP: whether the expression for them (walked as a list,
# ~200 ns a character) is needed; random bytes hold a four-byte character every ~1 KiB.
_ASTRAL_LEADS = sorted({utf8[:3] for utf8 in TRANSLITERATED if len(utf8) == 4})


def _char_class(chars: Iterable[str]) -> str:
    """``chars`` as a class of ranges (an expression holds a class of BMP characters as a table,
    one beyond it as a list it walks: ranges keep that list short)."""
    ranges: list[list[int]] = []
    for cp in sorted(map(ord, chars)):
        if ranges and ranges[-1][1] == cp - 1:
            ranges[-1][1] = cp
        else:
            ranges.append([cp, cp])
    return "[" + "".join(re.escape(chr(a)) + ("-" + re.escape(chr(b)) if b > a else "") for a, b in ranges) + "]"


# (Two expressions: a class with any character beyond the BMP in it is walked as a list, ~200 ns a
# character; the BMP's is a table.)
_TRANSLITERATED_CHARS = tuple(
    re.compile(_char_class(c for c in map(bytes.decode, TRANSLITERATED) if (ord(c) > 0xFFFF) == astral))
    for astral in (False, True)
)


@functools.cache
def _transliterated_text() -> dict[str, str]:
    """TRANSLITERATED as text, made when a text is first transliterated by expression (~100 KB of
    memory: not at start, so not in the sidecar's memory idle)."""
    return {utf8.decode(): ascii_.decode() for utf8, ascii_ in TRANSLITERATED.items()}


def transliterate_text(text: str, astral: bool | None = None) -> str:
    """``text`` with the Latin letters of TRANSLITERATED as the ASCII a transliterating client reads
    (every other character as it was). ``astral``: whether it may hold a character beyond the BMP
    (None: asked of the text)."""
    if text.isascii():
        return text
    bmp, beyond = _TRANSLITERATED_CHARS
    if bmp.search(text) is not None:
        table = _transliterated_text()
        text = bmp.sub(lambda m: table[m.group()], text)
    if (max(text) > "\uffff" if astral is None else astral) and beyond.search(text) is not None:
        table = _transliterated_text()
        text = beyond.sub(lambda m: table[m.group()], text)
    return text


# -- characters clients read differently -----------------------------------------------------------
# A transliterating client may read the characters as written (any-ascii, Unidecode, lodash's
# ``deburr``, Lucene: each letter by its table, other characters as NFKD makes them: "letters
# first") or the NFKD text (a pipeline that normalises first). For a few dozen characters the two
# orders differ: the micro sign is ``u`` letters first, Greek mu (dropped) NFKD first; mathematical
# italic dotless ``U+1D6A4`` is dropped letters first (no Latin letter), ``i`` NFKD first;
# ``U+2103`` is ``C`` and ``degC``. A value written with both kinds is read by neither order, as
# any-ascii reads them (each by the reading that is not empty; and ``U+0138`` ``q``, where Unidecode
# and deburr read ``k``, the table's). And the tables differ: Lucene's ``ASCIIFoldingFilter``
# (Elasticsearch's and OpenSearch's ``asciifolding``, Solr's) reads LUCENE's letters otherwise than
# any-ascii (``U+0259`` is ``a``, not ``e``; ``U+A741`` is ``k``, which any-ascii reads as ``k.``)
# (red team 49). Each of these CONTESTED characters is read every such way where the bytes hold
# one: a view per client. Written out here; tests/proxy/core/test_accents.py makes the list and
# LUCENE again from all of Unicode (and holds each reading to its library's).
LUCENE = {
    0x0138: "q", 0x014A: "N", 0x014B: "n", 0x018F: "A", 0x0195: "hv", 0x019C: "M", 0x01F6: "HV", 0x021C: "Z",
    0x021D: "z", 0x0245: "V", 0x0259: "a", 0x025A: "a", 0x025D: "e", 0x025E: "e", 0x0265: "h", 0x026F: "m", 0x0270: "m",
    0x027F: "r", 0x028C: "v", 0x0297: "C", 0x029A: "e", 0x02AE: "h", 0x02AF: "h", 0x1D95: "a", 0x1E9B: "f", 0x1E9C: "s",
    0x1E9D: "s", 0x2094: "a", 0xA73E: "c", 0xA73F: "c", 0xA740: "K", 0xA741: "k", 0xA742: "K", 0xA743: "k", 0xA744: "K",
    0xA745: "k", 0xA748: "L", 0xA749: "l", 0xA74A: "O", 0xA74B: "o", 0xA750: "P", 0xA751: "p", 0xA752: "P", 0xA753: "p",
    0xA754: "P", 0xA755: "p", 0xA756: "Q", 0xA757: "q", 0xA758: "Q", 0xA759: "q", 0xA75E: "V", 0xA75F: "v",
    0xA766: "TH", 0xA767: "th", 0xA77E: "G", 0xA77F: "g", 0xA780: "L", 0xA781: "l", 0xA7FF: "M",
}  # fmt: skip
CONTESTED = (
    0xB5, 0x138, 0x14A, 0x14B, 0x18F, 0x195, 0x19C, 0x1F6, 0x21C, 0x21D, 0x245, 0x259, 0x25A, 0x25D, 0x25E, 0x265,
    0x26F, 0x270, 0x27F, 0x28C, 0x297, 0x29A, 0x2AE, 0x2AF, 0x1ABF, 0x1AC0, 0x1D5D, 0x1D5E, 0x1D5F, 0x1D60, 0x1D61,
    0x1D66, 0x1D67, 0x1D68, 0x1D69, 0x1D6A, 0x1D78, 0x1D95, 0x1DBF, 0x1DCA, 0x1E9B, 0x1E9C, 0x1E9D, 0x2094, 0x2103,
    0x2109, 0x2126, 0x2135, 0x2136, 0x2137, 0x2138, 0x213C, 0x213D, 0x213E, 0x213F, 0x222C, 0x2A0C, 0xA73E, 0xA73F,
    0xA740, 0xA741, 0xA742, 0xA743, 0xA744, 0xA745, 0xA748, 0xA749, 0xA74A, 0xA74B, 0xA750, 0xA751, 0xA752, 0xA753,
    0xA754, 0xA755, 0xA756, 0xA757, 0xA758, 0xA759, 0xA75E, 0xA75F, 0xA766, 0xA767, 0xA77E, 0xA77F, 0xA780, 0xA781,
    0xA7FF, 0xFFE0, 0xFFE1, 0xFFE5, 0xFFE6, 0xFFEC, 0x1D6A4, 0x1D6A5, 0x1D6C1, 0x1D6DB, 0x1D6FB, 0x1D715, 0x1D735,
    0x1D74F, 0x1D76F, 0x1D789, 0x1D7A9, 0x1D7C3,
)  # fmt: skip


# Where any-ascii reads a letter otherwise: ``U+0138``, whose reading in the table is Unidecode's and
# deburr's.
_ANY_ASCII_OTHERWISE = {0x138: b"q"}
# Combining letters of a class other than 230, the class of all the others (``U+1DCA``, r below: 220):
# NFKD puts one before a letter of class 230 that precedes it, so a client that normalises first
# reads the two in the other order (``x\u0363\u1dca`` is ``xar`` to any-ascii, ``xra`` after NFKD).
# Contested: read in their order, and, where the bytes hold one, in NFKD's too.
_REORDERED = frozenset(
    cp for cp in (ord(u.decode()) for u in TRANSLITERATED) if unicodedata.combining(chr(cp)) not in (0, 230)
)


def _letters_first(c: str) -> bytes:
    """The letters-first reading of the character ``c``: its transliteration, else NFKD's ASCII."""
    return TRANSLITERATED.get(c.encode()) or _ascii("NFKD", c)


def _nfkd_first(c: str) -> bytes:
    """The NFKD-first reading of the character ``c``: its NFKD, each such letter in it transliterated."""
    return b"".join(TRANSLITERATED.get(d.encode()) or _ascii("NFKD", d) for d in unicodedata.normalize("NFKD", c))


_CONTESTED_UTF8 = [chr(cp).encode() for cp in CONTESTED]
_contested_in = which_of(_CONTESTED_UTF8, caseless=False, store=True)
# Before NFKD each such character held is made a lone surrogate (which no text decoded from
# UTF-8 holds, and NFKD keeps): one NFKD then serves every reading, each putting its ASCII (or
# nothing) where the surrogate's UTF-8 is.
_MARKS = [chr(0xD800 + i) for i in range(len(CONTESTED))]
_MARKS_UTF8 = [m.encode("utf-8", "surrogatepass") for m in _MARKS]
# Each reading's ASCII of each: the stripping client's (NFKD), letters first, NFKD first,
# any-ascii's, Lucene's (the rest of the text as letters first reads it).
_READ_AS = tuple(
    tuple(read(chr(cp)) for cp in CONTESTED)
    for read in (
        lambda c: _ascii("NFKD", c),
        _letters_first,
        _nfkd_first,
        lambda c: _ANY_ASCII_OTHERWISE.get(ord(c)) or _letters_first(c) or _nfkd_first(c),
        lambda c: LUCENE[ord(c)].encode() if ord(c) in LUCENE else _letters_first(c),
    )
)


# Whether the bytes hold one; each as a character of text (a token path's leaves are folded with
# them kept, and its text read each client's way: :func:`contested_readings`).
holds_contested = _literal_gate(_CONTESTED_UTF8, _contested_in)
CONTESTED_TEXT = re.compile(_char_class(map(chr, CONTESTED)))


def _contested(data: bytes) -> list[int]:
    """Which of CONTESTED ``data`` holds (indexes)."""
    found = _contested_in(data) if _contested_in is not None else None
    return sorted(found) if found is not None else [i for i, utf8 in enumerate(_CONTESTED_UTF8) if utf8 in data]


# The same, by the mark's UTF-8; and the marks in UTF-8 (one substitution a reading: random bytes
# hold ~20 kinds of these characters, and a replace of each cost ~4x).
_READ_BY_MARK = tuple(dict(zip(_MARKS_UTF8, read_as, strict=True)) for read_as in _READ_AS)
_MARK = re.compile(rb"\xed[\xa0-\xbf][\x80-\xbf]")


def _reader(by_mark: dict[bytes, bytes]) -> Callable[[re.Match[bytes]], bytes]:
    return lambda m: by_mark[m.group()]


_READ_MARK = tuple(map(_reader, _READ_BY_MARK))


def _readings(utf8: bytes, held: list[int], columns: Iterable[int]) -> list[bytes]:
    """The ASCII of ``utf8`` as each of ``columns`` of _READ_AS reads it, its marks (those of
    ``held``) each as that reading reads its character; a reading that reads them as another
    already did: left out."""
    out: list[bytes] = []
    done: list[tuple[bytes, ...]] = []
    for column in columns:
        read_as = _READ_AS[column]
        these = tuple(read_as[i] for i in held)
        if these in done:
            continue
        done.append(these)
        marked = _MARK.sub(_READ_MARK[column], utf8) if any(these) else utf8  # (else: dropped)
        out.append(_ascii_of_utf8(marked))
    return out


def contested_readings(data: bytes) -> list[bytes]:
    """``data``, text a token path's leaves make (folded already, but for CONTESTED's characters),
    with each of those it holds as each client reads it, every other byte as it is: one reading
    each that differs, none where it holds none. (Not :func:`fold_views`: its NFKD of the window
    again, each event of a path that held one, cost ~2 ms an event; red team 50.)"""
    held = _contested(data)
    out: list[bytes] = []
    done: list[tuple[bytes, ...]] = []
    for read_as in _READ_AS:
        these = tuple(read_as[i] for i in held)
        if not these or these in done:
            continue
        done.append(these)
        read = data
        for i, ascii_ in zip(held, these, strict=True):
            read = read.replace(_CONTESTED_UTF8[i], ascii_)
        out.append(read)
    return out


def fold_views(data: bytes) -> list[bytes]:
    """Each cleaning client's reading of ``data`` (:func:`_fold_views`), and each of them of the
    text a client that repairs mojibake reads (:func:`proxy.core.mojibake.repaired`: ``ï¼³`` is
    fullwidth S, U+FF33, so ``S``; red team 52), once. Empty when ``data`` is ASCII."""
    out = _fold_views(data)
    if out:
        # (Its controls dropped first, as a client may: red team 53. Every reading drops them anyway,
        # so this reads all that the repaired bytes with them would, and the bytes are repaired once.)
        for text in repaired(without_controls(data)):
            for read in _fold_views(text):
                if read not in out:
                    out.append(read)
    return out


def _fold_views(data: bytes) -> list[bytes]:
    """Each cleaning client's reading of ``data``, once: what is not ASCII dropped (and every
    control), NFKC-folded first where :func:`fold_bytes` folds, accents stripped (NFKD, where the
    bytes hold a character of STRIPPED_ASCII), and Latin letters transliterated (where the bytes
    hold one of TRANSLITERATED or CONTESTED: each in the same NFKD text as its ASCII, then what is
    not ASCII dropped; CONTESTED characters each of their ways). Empty when ``data`` is ASCII.
    (Where the bytes hold a fullwidth, mathematical or letterlike letter, the folded reading reads
    it as its letter, and a client that only drops what is not ASCII reads a value those letters
    are filler between: both.)"""
    if data.isascii():
        return []
    dropped = data.translate(None, _DROPPED)
    folded = _nfkc(data) if _compatible(data) else dropped
    out = [folded] if folded == dropped else [folded, dropped]
    held = _transliterated_in(data) if _transliterated_in is not None else None
    stripping, transliterating = _stripping(data), bool(held) if held is not None else _transliterating(data)
    contested = _contested(data)
    if stripping or transliterating or contested:
        # (Bytes that are not UTF-8 dropped, not read as replacement characters: NFKD composes
        # nothing, and the order it puts combining marks in moves no character an ASCII reading
        # keeps, so the readings are the same, and binary bytes' text is half as long.)
        text = data.decode("utf-8", "ignore")
        for i in contested:
            text = text.replace(chr(CONTESTED[i]), _MARKS[i])
        nfkd = unicodedata.normalize("NFKD", text)
        utf8 = nfkd.encode("utf-8", "surrogatepass")  # (the marks' surrogates only)
        if stripping and (stripped := _readings(utf8, contested, (0,))[0]) not in out:
            out.append(stripped)
        if transliterating or contested:
            if held is not None and len(held) <= _REPLACED_MAX:
                held = _transliterated_in(utf8) if _transliterated_in is not None else None
            if held is not None and len(held) <= _REPLACED_MAX:
                for letter in map(_TRANSLITERATED_UTF8.__getitem__, held):
                    utf8 = utf8.replace(letter, TRANSLITERATED[letter])
            else:  # (many kinds, binary bytes' mostly; no Hyperscan, or its scratch space in use elsewhere)
                astral = any(utf8.find(p) >= 0 for p in _ASTRAL_LEADS)
                utf8 = transliterate_text(nfkd, astral=astral).encode("utf-8", "surrogatepass")
            for read in _readings(utf8, contested, range(1, len(_READ_AS))):
                if read not in out:
                    out.append(read)
            if any(CONTESTED[i] in _REORDERED for i in contested):  # (NFKD's order: a second NFKD, seldom)
                # (Here bytes that are not UTF-8 are replacement characters, not dropped: one is a
                # starter, which NFKD does not reorder marks across; dropped, the marks on either
                # side of it would be sorted together.)
                nfkd = unicodedata.normalize("NFKD", data.decode("utf-8", "replace"))
                if (read := _ascii_of_utf8(transliterate_text(nfkd).encode())) not in out:
                    out.append(read)
    return out
