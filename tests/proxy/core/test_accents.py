"""A value in letters a client reads as ASCII once it strips their accents (red team 47, F3).

``unicodedata.normalize("NFKD", text).encode("ascii", "ignore")`` (slugify, search engines' ASCII
folding, JavaScript's ``normalize("NFD")`` and a combining-mark replace) reads ``U+015B`` as ``s``:
``śķ-Ìķ2ź...`` is the key. The fold view dropped every such letter (NFKC composes them again), so a
value written so went out on every channel, raw and escaped. Also read by that client, and by no
view before: circled, superscript, modifier and other compatibility letters outside the fold view's
gate (red team 16's "outside the gate").
"""

from __future__ import annotations

import codecs
import html
import json
import quopri
import re
import unicodedata
import urllib.parse
from collections.abc import Callable

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from proxy.core import fold
from proxy.core.fold import NEWER_UNICODE, STRIPPED_ASCII, STRIPPED_BLOCKS, fold_bytes, fold_views, stripped_differs
from proxy.core.latin_ascii import LATIN_ASCII
from proxy.core.scrub import EventScrubber, ScrubRefused, first_hit, scrub_field
from tests.proxy.core.test_spread import FINDER, VALUE, V
from tests.proxy.core.test_spread import _body as _stream


def nfkd_client(text: str) -> bytes:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore")


# Each ASCII letter or digit, by the characters in STRIPPED_ASCII that stand for it alone.
_FOR: dict[str, list[str]] = {}
for _cp, _ascii in sorted(STRIPPED_ASCII.items()):
    if len(_ascii) == 1 and chr(_ascii[0]).isalnum():
        _FOR.setdefault(chr(_ascii[0]), []).append(chr(_cp))


def written(text: str, kind: str, nth: int = 0) -> str:
    """``text`` with every letter and digit that has one in a form of ``kind``: "accented" (Latin
    letters with diacritics, U+00C0-024F and U+1E00-1EFF), "compatibility" (circled, enclosed,
    superscript, modifier letters and the like) or "astral" (those beyond U+FFFF: squared capitals,
    segmented digits)."""

    def of_kind(c: str) -> bool:
        cp = ord(c)
        if kind == "astral":
            return cp > 0xFFFF
        return (0xC0 <= cp < 0x250 or 0x1E00 <= cp < 0x1F00) == (kind == "accented")

    out = []
    for c in text:
        forms = [f for f in _FOR.get(c, []) if of_kind(f)]
        out.append(forms[nth % len(forms)] if forms else c)
    return "".join(out)


def test_every_character_the_stripping_client_reads_otherwise_is_in_the_blocks() -> None:
    """The gate and the escape view find the characters in STRIPPED_BLOCKS only: every character of
    this Python's Unicode that the stripping client reads otherwise than the fold view is there."""
    for cp in range(0x80, 0x110000):
        if 0xD800 <= cp < 0xE000:
            continue
        if stripped_differs(chr(cp)):
            assert any(lo <= cp < hi for lo, hi in STRIPPED_BLOCKS), hex(cp)
            assert STRIPPED_ASCII[cp] == nfkd_client(chr(cp)), hex(cp)


@pytest.mark.parametrize("kind", ["accented", "compatibility"])
@pytest.mark.parametrize("nth", [0, 1, 2])
def test_the_view_reads_what_the_client_reads(kind: str, nth: int) -> None:
    text = "Your key: " + written(VALUE, kind, nth) + "\n"
    assert sum(c != v for c, v in zip(written(VALUE, kind, nth), VALUE, strict=True)) >= len(VALUE) // 2
    assert nfkd_client(text) in fold_views(text.encode())
    assert V not in (fold_bytes(text.encode()) or b"")  # (the fold view reads none of it)


# (name, how a server writes the text, how its client reads it back before stripping)
FORMS: dict[str, Callable[[str], bytes]] = {
    "utf-8": lambda t: t.encode(),
    "json": lambda t: json.dumps(t).encode(),  # (ensure_ascii: every accented letter a \\u escape)
    "json-upper-hex": lambda t: re.sub(r"\\u([0-9a-f]{4})", lambda m: "\\u" + m[1].upper(), json.dumps(t)).encode(),
    "html-decimal": lambda t: "".join(c if c.isascii() else f"&#{ord(c)};" for c in t).encode(),
    "html-hex": lambda t: "".join(c if c.isascii() else f"&#x{ord(c):x};" for c in t).encode(),
    "percent": lambda t: urllib.parse.quote(t).encode(),
    "quoted-printable": lambda t: quopri.encodestring(t.encode()),
    "zero-width-spaced": lambda t: "\u200b".join(t).encode(),
    "json-zero-width-spaced": lambda t: json.dumps("\u200b".join(t)).encode(),
    "decomposed": lambda t: unicodedata.normalize("NFD", t).encode(),
    # (a logged ``bytes``, git's quoted file names: the UTF-8 escaped a byte at a time)
    "c-hex-utf-8": lambda t: "".join(
        c if c.isascii() else "".join(f"\\x{b:02x}" for b in c.encode()) for c in t
    ).encode(),
    "octal-utf-8": lambda t: "".join(
        c if c.isascii() else "".join(f"\\{b:03o}" for b in c.encode()) for c in t
    ).encode(),
}


def _reads(body: bytes, form: str) -> str:
    if form.startswith("json"):
        return str(json.loads(body))
    if form.startswith("html"):
        return html.unescape(body.decode())
    if form == "percent":
        return urllib.parse.unquote(body.decode())
    if form == "quoted-printable":
        return quopri.decodestring(body).decode()
    if form.endswith("utf-8") and form != "utf-8":
        return codecs.escape_decode(body)[0].decode()
    return body.decode()


@pytest.mark.parametrize("kind", ["accented", "compatibility", "astral"])
@pytest.mark.parametrize("form", FORMS)
def test_a_value_the_client_reads_once_stripped_is_refused_in_a_body_and_a_field(kind: str, form: str) -> None:
    body = FORMS[form](written(VALUE, kind))
    assert nfkd_client(_reads(body, form)).replace(b"\n", b"") == V  # (what the client reads)
    with pytest.raises(ScrubRefused):
        scrub_field(b"key: " + body + b"\n", FINDER, lambda _: None)
    assert first_hit(FINDER, [body]) is not None


@pytest.mark.parametrize("kind", ["accented", "compatibility"])
@pytest.mark.parametrize("form", ["utf-8", "json", "percent", "zero-width-spaced"])
@pytest.mark.parametrize("size", [1, 2, 7, 1024])
def test_a_value_the_client_reads_once_stripped_is_refused_in_a_stream(kind: str, form: str, size: int) -> None:
    body = b"the key is " + FORMS[form](written(VALUE, kind, 1)) + b" and then more text\n"
    out, refused = _stream(body, size)
    assert refused
    assert V[:8] not in nfkd_client(_reads(out, form) if form != "json" else out.decode("unicode_escape", "replace"))


@pytest.mark.parametrize("kind", ["accented", "compatibility"])
@pytest.mark.parametrize("escaped", [False, True])
def test_a_value_a_character_an_event_in_a_token_stream_is_refused(kind: str, escaped: bool) -> None:
    """A chat completion stream, a character per event: a JavaScript client joins the deltas."""
    s = EventScrubber(FINDER, lambda _: None)
    events = [json.dumps({"choices": [{"delta": {"content": c}}]}, ensure_ascii=escaped) for c in written(VALUE, kind)]
    with pytest.raises(ScrubRefused):
        for e in events:
            s.feed(b"data: " + e.encode() + b"\n\n")
        s.finish()


PROSE = [
    "Le cœur a ses raisons que la raison ne connaît point. Où êtes-vous allé? C'était déjà l'été.",
    "Tiếng Việt là ngôn ngữ chính thức của Việt Nam, được sử dụng rộng rãi.",
    "Straße, Ærø, Łódź, São Paulo, Nguyễn, İstanbul, ① ② ③, x² + y², \u210c\U0001d522\U0001d529\U0001d529\U0001d52c, ﬁnale, ㎒",
]


@pytest.mark.parametrize("text", PROSE)
def test_text_in_accented_letters_goes_out_unchanged(text: str) -> None:
    for body in (text.encode(), json.dumps(text).encode()):
        assert scrub_field(body, FINDER, lambda _: None) == body
        out, refused = _stream(body, 5)
        assert not refused and out == body


@given(
    st.text(
        alphabet=st.sampled_from(sorted({c for forms in _FOR.values() for c in forms} | set("sk-Iz 2\n"))), max_size=200
    )
)
@settings(max_examples=300, deadline=None)
def test_stripped_text_without_the_value_goes_out_unchanged(text: str) -> None:
    """Whatever such letters (and a few of the value's own) spell, if not the value, goes out as it came."""
    if b"sk-Ik2z"[:4].lower() in nfkd_client(text).lower():
        return  # (a beginning of the value may be held or refused: not this test's question)
    body = text.encode()
    assert scrub_field(body, FINDER, lambda _: None) == body


# -- a client that transliterates (red team 48) -------------------------------------------------
# Letters with no decomposition (NFKD drops them), as Unidecode, python-slugify, any-ascii, lodash's
# deburr and Lucene's asciifolding read them (each checked against those libraries' tables).
STROKED = {
    "a": "\u1d00", "d": "\u0111", "h": "\u0127", "i": "\u0131", "k": "\u0199", "l": "\u0142", "o": "\u00f8",
    "t": "\u0167", "s": "\u0282", "z": "\u01b6", "E": "\u0190", "I": "\u0197", "L": "\u0141", "T": "\u0166",
    "Q": "\ua756", "m": "\u0271", "p": "\u01a5", "w": "\u2c73", "v": "\u028b",
}  # fmt: skip


def stroked(text: str) -> str:
    return "".join(STROKED.get(c, c) for c in text)


@pytest.mark.parametrize("form", ["utf-8", "json", "json-upper-hex", "html-decimal", "percent", "zero-width-spaced"])
def test_a_value_in_letters_a_transliterating_client_reads_is_refused(form: str) -> None:
    text = stroked(VALUE)
    assert sum(c != v for c, v in zip(text, VALUE, strict=True)) >= 10
    body = FORMS[form](text)
    with pytest.raises(ScrubRefused):
        scrub_field(b"key: " + body + b"\n", FINDER, lambda _: None)
    assert first_hit(FINDER, [body]) is not None
    for size in (1, 7, 1024):
        _, refused = _stream(b"the key is " + body + b" and more\n", size)
        assert refused, size


@pytest.mark.parametrize(
    "text",
    [
        "Zażółć gęślą jaźń, łódź",
        "Rødgrød med fløde, Ærø",
        "I\u015f\u0131k \u0131l\u0131k s\u00fct i\u00e7",
        "Þórður og Ðóra",
        "Đà Nẵng, Hà Nội",
    ],
)
def test_text_in_stroked_letters_goes_out_unchanged(text: str) -> None:
    for body in (text.encode(), json.dumps(text).encode()):
        assert scrub_field(body, FINDER, lambda _: None) == body
        out, refused = _stream(body, 5)
        assert not refused and out == body


@pytest.mark.parametrize("escaped", [False, True])
def test_a_value_in_stroked_letters_a_character_an_event_is_refused(escaped: bool) -> None:
    s = EventScrubber(FINDER, lambda _: None)
    events = [json.dumps({"choices": [{"delta": {"content": c}}]}, ensure_ascii=escaped) for c in stroked(VALUE)]
    with pytest.raises(ScrubRefused):
        for e in events:
            s.feed(b"data: " + e.encode() + b"\n\n")
        s.finish()


def test_letters_a_newer_unicode_decomposes_are_read() -> None:
    """Red team 48: outlined capitals and digits (Unicode 16.0), which this Python's tables do not
    know, and which Node's NFKC reads as ASCII. NEWER_UNICODE holds every character that a newer
    Unicode's NFKD reads otherwise than this Python's (unicodedata2: the newest tables)."""
    unicodedata2 = pytest.importorskip("unicodedata2")
    newer = {
        cp: unicodedata2.normalize("NFKD", chr(cp)).encode("ascii", "ignore").decode()
        for cp in range(0x80, 0x110000)
        if not 0xD800 <= cp < 0xE000
        and unicodedata2.normalize("NFKD", chr(cp)).encode("ascii", "ignore") != nfkd_client(chr(cp))
    }
    assert newer == NEWER_UNICODE
    outlined = "".join(
        chr(0x1CCD6 + ord(c) - 65) if c.isupper() else chr(0x1CCF0 + int(c)) if c.isdigit() else c for c in VALUE
    )
    assert unicodedata2.normalize("NFKC", outlined) == VALUE
    for body in (outlined.encode(), json.dumps(outlined).encode()):
        with pytest.raises(ScrubRefused):
            scrub_field(b"key: " + body, FINDER, lambda _: None)
        _, refused = _stream(b"the key is " + body + b" and more\n", 3)
        assert refused


def test_the_gates_answer_the_same_without_hyperscan(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where Hyperscan is absent (no wheel for the platform), each gate is an expression: same answers."""
    literals = sorted(fold.TRANSLITERATED)
    with_scan = fold._literal_gate(literals)
    monkeypatch.setattr(fold, "any_of", lambda *_, **__: None)
    without = fold._literal_gate(literals)
    for text in [*PROSE, stroked(VALUE), "plain", "\u4e2d\u6587", "caf\u00e9", "\U0001ccd6"]:
        assert with_scan(text.encode()) == without(text.encode()), text
    assert without(stroked(VALUE).encode()) and not without("\u4e2d\u6587".encode())


_MIXED = st.lists(
    st.sampled_from([u.decode() for u in sorted(fold.TRANSLITERATED)[::7]])
    | st.sampled_from(
        [*"\u00e9\u0153\u00df\u0142\u00f8\u0131\u1e9e\u0301\u200b\u2460\uff53\u4e2d\u0416", "sk-", " ", "\n"]
    )
    # (letters whose NFKD is another such letter, or is not one; characters whose NFKD holds one)
    | st.sampled_from([*"\u1db4\u00b5\u01fd\ua7f9\u210f\u2103\U0001d6a4\U000107a7"])
    # (letters and digits in other forms, combining letters, tag characters: red team 49)
    | st.sampled_from([*"\u0138\u0363\u036e\u24f5\u2776\U0001f170\U0001f1e6\U000e0073\U000e002d\U000e0020"])
    | st.sampled_from([*"\u0259\u014b\ua741\ua756\ua766\u1e9c\u2184\u0265"])  # (Lucene's otherwise)
    # (combining letters of classes 230 and 220, which NFKD reorders; symbols any-ascii reads)
    | st.sampled_from([*"\u0363\u1ddc\u1dca\u1abf\u0316\u2713\u20ac\u2681"])
    | st.text(max_size=3),
    max_size=30,
).map("".join)


def _letters_then_nfkd(text: str, letter: Callable[[str], str]) -> bytes:
    """The ASCII of ``text`` with each character as ``letter`` reads it, then NFKD."""
    return _cleaned(unicodedata.normalize("NFKD", "".join(map(letter, text))))


def _cleaned(text: str) -> bytes:
    return text.encode("ascii", "ignore").translate(None, fold._DROPPED)


_TEXT_OF = {u.decode(): a.decode() for u, a in fold.TRANSLITERATED.items()}


def nfkd_first(text: str) -> bytes:
    """A client that normalises first: NFKD of the text, each such letter in it transliterated."""
    return _cleaned("".join(_TEXT_OF.get(c, c) for c in unicodedata.normalize("NFKD", text)))


def letters_first(text: str) -> bytes:
    """A client that reads the letters as written (deburr, Lucene), then NFKD for the rest."""
    return _letters_then_nfkd(text, lambda c: _TEXT_OF.get(c, c))


def any_ascii(text: str) -> bytes:
    """any-ascii's reading of the Latin letters and of the characters clients read differently
    (where it is letters or digits; the rest of the text as NFKD makes it: not other scripts
    transliterated)."""
    anyascii = pytest.importorskip("anyascii").anyascii

    def letter(c: str) -> str:
        read = anyascii(c) if ord(c) in fold.CONTESTED else ""
        return read if read.isalnum() else _TEXT_OF.get(c, c)

    return _letters_then_nfkd(text, letter)


def lucene(text: str) -> bytes:
    """Lucene's ``ASCIIFoldingFilter`` (fold-to-ascii, its port) reading the letters it reads
    otherwise than any-ascii; the rest letters first."""
    lucene_fold = pytest.importorskip("fold_to_ascii").fold
    return _letters_then_nfkd(text, lambda c: lucene_fold(c, "") if ord(c) in fold.LUCENE else _TEXT_OF.get(c, c))


@given(_MIXED, st.binary(max_size=3), st.booleans(), st.booleans())
@example("\u0363\u1dca", b"\x80", False, False)  # (NFKD sorts marks, never across what is not UTF-8)
@settings(max_examples=500, deadline=None)
def test_the_transliterated_readings_are_the_clients_with_or_without_hyperscan(
    text: str, junk: bytes, scanless: bool, contested_scanless: bool
) -> None:
    """Each transliterating client's reading (NFKD first, letters first, any-ascii's, Lucene's),
    what is not ASCII dropped, is among the views, made either way (bytes not UTF-8 read as a
    replacement character)."""
    data = text.encode() + junk + text[:5].encode()
    decoded = data.decode("utf-8", "replace")
    saved = fold._transliterated_in, fold._contested_in
    try:
        if scanless:
            fold._transliterated_in = None
        if contested_scanless:
            fold._contested_in = None
        views = fold_views(data)
    finally:
        fold._transliterated_in, fold._contested_in = saved
    if any(c.encode() in fold.TRANSLITERATED or ord(c) in fold.CONTESTED for c in decoded):  # (the gate)
        for reading in (nfkd_first, letters_first, any_ascii, lucene):
            assert reading(decoded) in views, reading.__name__
    else:
        assert nfkd_first(decoded) == letters_first(decoded) == any_ascii(decoded) == lucene(decoded)


def test_the_characters_clients_read_differently_are_every_such_one() -> None:
    """CONTESTED is every character of this Python's Unicode whose readings letters first and
    NFKD first differ, those any-ascii reads otherwise than the table, and LUCENE's: every one
    Lucene reads as one to three letters or digits that neither order reads, in any case (written
    out: a pass over all of Unicode costs ~3 s)."""
    lucene_fold = pytest.importorskip("fold_to_ascii").fold
    orders, by_lucene = set(), {}
    for cp in range(0x80, 0x110000):
        if 0xD800 <= cp < 0xE000:
            continue
        c = chr(cp)
        first, nfkd = letters_first(c), nfkd_first(c)
        if first != nfkd:
            orders.add(cp)
        read = lucene_fold(c, "")
        if (
            0 < len(read) <= 3
            and read.isascii()
            and read.isalnum()
            and read.lower().encode() not in (first.lower(), nfkd.lower())
        ):
            by_lucene[cp] = read
    assert by_lucene == fold.LUCENE
    assert tuple(sorted(orders | set(fold._ANY_ASCII_OTHERWISE) | set(by_lucene) | fold._REORDERED)) == fold.CONTESTED
    anyascii = pytest.importorskip("anyascii").anyascii
    for cp, read in zip(fold.CONTESTED, fold._READ_AS[3], strict=True):  # (any-ascii's: where it reads letters)
        assert read.decode() == anyascii(chr(cp)) or not anyascii(chr(cp)).isalnum(), hex(cp)


def test_a_value_written_with_letters_each_order_reads_is_read() -> None:
    """``U+00B5`` is ``u`` letters first, ``U+1D6A4`` is ``i`` NFKD first: any-ascii reads both so.
    A value with one of each is read by neither order's client alone (red team 48's gap)."""
    text = "sk-\u00b5\U0001d6a4NT3c\u2103"
    assert any_ascii(text) == b"sk-uiNT3cC"
    assert letters_first(text) != b"sk-uiNT3cC" != nfkd_first(text)
    assert b"sk-uiNT3cC" in fold_views(text.encode())


# The Latin blocks, where any-ascii's reading is the transliterating client's (proxy.core.latin_ascii),
# those of Latin letters and digits in other forms (combining Latin letters, enclosed alphanumerics,
# dingbat digits, the enclosed alphanumeric supplement), and the symbol blocks whose characters it
# reads as letters or digits (currency, letterlike, arrows, mathematical, technical, geometric,
# miscellaneous symbols, dingbats: red teams 49 and 50).
_LATIN_BLOCKS = (
    (0x80, 0x2B0), (0x2B0, 0x300), (0x363, 0x370), (0x1AB0, 0x1B00), (0x1D00, 0x1DC0), (0x1DC0, 0x1E00),
    (0x1E00, 0x1F00), (0x20A0, 0x20D0), (0x2100, 0x2190), (0x2190, 0x2200), (0x2200, 0x2300), (0x2300, 0x2400),
    (0x2460, 0x2500), (0x2500, 0x2580), (0x25A0, 0x2600), (0x2600, 0x2700), (0x2700, 0x27C0), (0x27C0, 0x27F0),
    (0x2980, 0x2A00), (0x2A00, 0x2B00), (0x2B00, 0x2C00), (0x2C60, 0x2C80), (0xA720, 0xA800), (0xAB30, 0xAB70),
    (0x10780, 0x107C0), (0x1DF00, 0x1E000), (0x1F100, 0x1F200),
)  # fmt: skip
_DEBURR = {0x138: "k"}  # (``U+0138`` as Unidecode and lodash's deburr read it; any-ascii: ``q``)


def test_the_written_out_table_is_any_asciis() -> None:
    """proxy.core.latin_ascii is any-ascii's reading of every character of the Latin blocks that it
    reads as one to three ASCII letters or digits, where NFKD reads otherwise: made again here."""
    anyascii = pytest.importorskip("anyascii").anyascii
    made = {}
    for lo, hi in _LATIN_BLOCKS:
        for cp in range(lo, hi):
            read = _DEBURR.get(cp) or anyascii(chr(cp))
            if 0 < len(read) <= 3 and read.isascii() and read.isalnum() and read.encode() != nfkd_client(chr(cp)):
                made[cp] = read
    assert made == LATIN_ASCII


@pytest.mark.parametrize("kinds", [1, 8, 9, 40])
def test_the_transliterated_reading_whatever_the_kinds_of_letters(kinds: int) -> None:
    """Up to eight kinds of such letters are replaced one by one, more by an expression: the same
    reading either way."""
    letters = [u.decode() for u in sorted(fold.TRANSLITERATED)[:: len(fold.TRANSLITERATED) // kinds]][:kinds]
    text = " ".join(f"{letter}x{letter}\u00e9" for letter in letters)
    nfkd = unicodedata.normalize("NFKD", text)
    reading = b"".join(fold.TRANSLITERATED.get(c.encode(), c.encode()) for c in nfkd).decode()
    assert reading.encode("ascii", "ignore") in fold_views(text.encode())


def test_combining_letters_nfkd_reorders_are_read_in_both_orders() -> None:
    """``U+0363`` (a, class 230) then ``U+1DCA`` (r below, class 220): any-ascii reads ``ar``, a
    client that normalises first ``ra`` (NFKD sorts them by class)."""
    views = fold_views("x\u0363\u1dcay".encode())
    assert b"xary" in views and b"xray" in views


def test_a_letter_nfkd_turns_into_another_is_read_as_the_client_reads_the_letter() -> None:
    """A transliterating client maps the letters of the text as written: the micro sign is ``u``
    (any-ascii, Unidecode). NFKD makes it Greek mu, which the view that reads the NFKD text drops.
    (6163ba8 replaced the letters first; 56ba932 made one NFKD serve both views, and read them after.)"""
    assert b"xuy" in fold_views("x\u00b5y".encode())
    assert b"xhy" in fold_views("x\u210fy".encode())  # (no Latin letter: NFKD makes it one)
    with pytest.raises(ScrubRefused):
        scrub_field(("key: " + VALUE.replace("h", "\u210f")).encode(), FINDER, lambda _: None)
