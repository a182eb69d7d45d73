"""The cleaning client's view (proxy.core.fold): a value written in compatibility forms, or with
invisible characters between its characters, reads plainly; text without either costs no NFKC."""

from __future__ import annotations

import json
import types
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.core import fold
from proxy.core.fold import fold_bytes
from proxy.core.scrub import ScrubRefused, scrub_field
from proxy.core.values import Finder
from tests.proxy.core.test_stitch_aliases import bold as math_bold
from tests.proxy.core.test_stitch_aliases import fullwidth

KEY = "sk-REALkey7Q2xZ9pLm4Vb8NcT"
FINDER = Finder.for_values([("k", KEY, "sk-sandgate-ph")], runs=True)


# Characters a page shows as nothing: format characters (Cf), a variation selector, a tag.
INVISIBLE = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad", "\u202a", "\ufe0f", "\U000e0041"]

CASES = {
    "fullwidth": fullwidth(KEY),
    "fullwidth-capitals-only": KEY[:7] + fullwidth(KEY[7]) + KEY[8:],
    "fullwidth-one-lowercase": KEY[:9] + fullwidth(KEY[9]) + KEY[10:],
    "math-bold": math_bold(KEY),
    **{f"interleaved-U+{ord(c):04X}": c.join(KEY) for c in INVISIBLE},
    "fullwidth-and-zero-width": "\u200b".join(fullwidth(KEY)),
}


@pytest.mark.parametrize("text", CASES.values(), ids=CASES.keys())
def test_a_value_a_cleaning_client_reads_is_in_the_view(text: str) -> None:
    assert unicodedata.normalize("NFKC", text).translate(dict.fromkeys(map(ord, INVISIBLE))) == KEY
    folded = fold_bytes(("Your key: " + text + "\n").encode())
    assert folded is not None and KEY.encode() in folded


@pytest.mark.parametrize("text", CASES.values(), ids=CASES.keys())
def test_a_body_with_such_a_value_is_refused(text: str) -> None:
    with pytest.raises(ScrubRefused):
        scrub_field(("Your key: " + text + "\n").encode(), FINDER, lambda _: None)


@given(
    st.lists(
        st.tuples(st.sampled_from(["plain", "fullwidth", "bold"]), st.sampled_from(["", *INVISIBLE])),
        min_size=len(KEY),
        max_size=len(KEY),
    ),
    st.text(max_size=20),
)
def test_any_mix_of_forms_and_invisible_characters_reads_as_the_value(
    forms: list[tuple[str, str]], before: str
) -> None:
    """Property: each character of the value plain, fullwidth or mathematical bold, any invisible
    character after it, any text before: the view holds the value."""
    make = {"plain": str, "fullwidth": fullwidth, "bold": math_bold}
    text = "".join(make[f](c) + gap for c, (f, gap) in zip(KEY, forms, strict=True))
    data = (before + " " + text).encode("utf-8", "surrogatepass")  # (a lone surrogate: bytes no UTF-8)
    folded = fold_bytes(data)
    assert KEY.encode() in (data if folded is None else folded)


@pytest.mark.parametrize(
    "text",
    [
        "Grüße — “quoted” … ¼",
        "你好\uff0c世界\uff1a\uff08测试\uff09\uff01",
        "これは日本語のテキストです。",
        "Привет, мир",
    ],
)
def test_text_without_such_characters_is_not_normalized(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ordinary text in other scripts and typographic punctuation: its non-ASCII characters are
    dropped, and NFKC (~40 ns a character where it changes something) never runs."""

    def fail(*_: object) -> str:
        raise AssertionError("NFKC ran")

    monkeypatch.setattr(fold, "unicodedata", types.SimpleNamespace(normalize=fail))
    data = text.encode()
    assert fold_bytes(data) == bytes(b for b in data if b < 0x80)


def test_ascii_has_no_view_and_a_cut_character_is_left_out() -> None:
    assert fold_bytes(b"plain ASCII") is None
    cut = fullwidth("sk-RE").encode() + fullwidth("A").encode()[:2]
    assert fold_bytes(cut) == b"sk-RE"  # (a view that ends as the text it begins: held, not sent)


def test_bytes_not_utf8_are_dropped_and_what_is_between_them_read() -> None:
    """Bytes that are not UTF-8 (a decoded view of an image, one %FF in a text) read as replacement
    characters, which a cleaning client drops like any other character that is not ASCII."""
    binary = bytes(range(0x80, 0x100)) + b"sk-" + bytes(range(0x80, 0x100))
    assert fold_bytes(binary) == b"sk-"
    assert fold_bytes(b"\xffsk-\xe2\x80\x8bRE") == b"sk-RE"


# Pieces of text that NFKC composes or reorders (a letter and combining marks of two classes, a
# fullwidth letter), and bytes that are not UTF-8 (a cut character, a lone continuation byte).
_PIECES = st.lists(
    st.sampled_from(
        ["e", "s", "\u0301", "\u0323", "\u0338", "\uff53", "\u1100", "\u1161", "\u00e9", "\ufffd", " "]
    ).map(str.encode)
    | st.sampled_from([b"\xff", b"\x80", b"\xe2\x80", b"\xc3", b"\x00"]),
    max_size=24,
).map(b"".join)


@given(_PIECES)
def test_bytes_not_utf8_are_read_as_replacement_characters_are(data: bytes) -> None:
    """The folded and stripped views read bytes that are not UTF-8 as a client that decodes them
    with replacement reads them (a replacement character between a letter and its combining mark
    keeps NFKC from composing them): the views make them something cheaper to normalise."""
    text = data.decode("utf-8", "replace")

    def read(form: str) -> bytes:
        return unicodedata.normalize(form, text).encode("ascii", "ignore").translate(None, fold._DROPPED)  # type: ignore[arg-type]

    views = fold.fold_views(data + "\uff53\u015b".encode())  # (both views made)
    assert read("NFKC") + b"s" in views  # (NFKC composes `U+015B` again: dropped)
    assert read("NFKD") + b"ss" in views


ESCAPED = {
    "json-zero-width": json.dumps({"id": "\u200b".join(KEY)}),  # (json.dumps escapes every non-ASCII character)
    "json-fullwidth": json.dumps({"id": fullwidth(KEY)}),
    "json-beside-an-emoji-pair": json.dumps({"t": "\U0001f600 " + "\u00ad".join(KEY)}),
    "html-numeric": "<p>" + "&#8203;".join(KEY) + "</p>",
    "html-hex": "<p>" + "".join(f"&#x{ord(c):X};" for c in fullwidth(KEY)) + "</p>",
    "html-named": "<p>" + "&ZeroWidthSpace;".join(KEY) + "</p>",
}


@pytest.mark.parametrize("body", ESCAPED.values(), ids=ESCAPED.keys())
def test_such_a_value_escaped_is_refused(body: str) -> None:
    """Escapes of characters that are not ASCII: JSON's ``\\uXXXX`` read as a cleaning client reads
    the character (a fullwidth letter as its ASCII one, any other dropped), HTML's references
    decoded to UTF-8 and that view read so: the value is refused."""
    assert body.isascii()
    with pytest.raises(ScrubRefused):
        scrub_field(body.encode(), FINDER, lambda _: None)


# Letters a folding client reads as letters, as filler to one that only drops what is not ASCII:
# fullwidth, mathematical, letterlike (each folds to a letter, so the folded view reads the filler
# as part of the text; red team 44's property test found U+2119).
LETTER_FILLER = {"fullwidth": "\uff41", "math-bold": "\U0001d41a", "letterlike": "\u2119"}
ESCAPED = {
    "raw": lambda t: t.encode(),
    "json": lambda t: json.dumps(t).encode(),
    "html": lambda t: "".join(c if c.isascii() else f"&#{ord(c)};" for c in t).encode(),
}


@pytest.mark.parametrize("filler", LETTER_FILLER)
@pytest.mark.parametrize("escaped", ESCAPED)
def test_a_value_between_letters_a_dropping_client_drops_is_refused(filler: str, escaped: str) -> None:
    text = LETTER_FILLER[filler].join(KEY)
    assert "".join(c for c in text if c.isascii()) == KEY  # (the dropping client's reading)
    with pytest.raises(ScrubRefused):
        scrub_field(ESCAPED[escaped](text), FINDER, lambda _: None)


def test_fold_views_are_each_clients_reading_once() -> None:
    text = "s\uff41\u015b\u200bk"
    assert fold.fold_views(text.encode()) == [b"sak", b"sk", b"sask"]  # (folded, dropped, stripped)
    assert fold.fold_views("caf\u00e9".encode()) == [b"caf", b"cafe"]
    assert fold.fold_views(b"ascii") == []


def test_each_set_of_letters_is_compiled_where_hyperscan_is() -> None:
    """A set past the patterns' limit goes without Hyperscan, silently, to an expression ~5x
    dearer (the transliterated letters, once symbols joined them, did: a German answer's views
    cost 3x). Each of fold's sets is compiled."""
    from proxy.core import anyof

    if anyof.UNAVAILABLE:
        pytest.skip(anyof.UNAVAILABLE)
    assert fold._transliterated_in is not None
    assert fold._contested_in is not None
    assert fold.any_of(fold._STRIPPED_OPENERS, caseless=False) is not None
