"""Mathematical letters and digits as JSON writes them (red team 44, finding 3).

``json.dumps`` writes a character above U+FFFF as a UTF-16 surrogate pair: mathematical bold
``U+1D42C`` is ``\\ud835\\udc2c``. A client's json.loads, then NFKC (what a cleaning client or a
tokeniser does), reads ``s``. The JSON view dropped both halves of such a pair as it drops any
other escaped character that is not ASCII: a value written so, or spread with them, went out.
"""

from __future__ import annotations

import json
import re
import unicodedata

import pytest

from proxy.core.scrub import MIN_HOLD, ScrubRefused, scrub_field, skeleton
from tests.proxy.core.test_spread import FINDER, VALUE, WINDOW, V
from tests.proxy.core.test_spread import _body as _stream

# Alphabets of the Mathematical Alphanumeric Symbols block: (capital A, small a, digit 0 or None)
ALPHABETS = {
    "bold": (0x1D400, 0x1D41A, 0x1D7CE),
    "italic": (0x1D434, 0x1D44E, None),
    "script-bold": (0x1D4D0, 0x1D4EA, None),
    "fraktur-bold": (0x1D56C, 0x1D586, None),
    "double-struck": (None, 0x1D552, 0x1D7D8),
    "double-struck-capitals": (0x1D538, 0x1D552, None),  # (C, H, N, P, Q, R, Z: U+2102...)
    "sans-serif": (0x1D5A0, 0x1D5BA, 0x1D7E2),
    "monospace": (0x1D670, 0x1D68A, 0x1D7F6),
}


def math(text: str, alphabet: str) -> str:
    """``text`` in one of the alphabets, a letter Unicode had before the block as that letter (its
    code point in the block is a hole: italic h is U+210E)."""
    cap, small, digit = ALPHABETS[alphabet]
    out = []
    for c in text:
        if "A" <= c <= "Z" and cap is not None:
            out.append(_filled(chr(cap + ord(c) - 65), c))
        elif "a" <= c <= "z":
            out.append(_filled(chr(small + ord(c) - 97), c))
        elif "0" <= c <= "9" and digit is not None:
            out.append(chr(digit + ord(c) - 48))
        else:
            out.append(c)
    return "".join(out)


def _filled(char: str, letter: str) -> str:
    if unicodedata.normalize("NFKC", char) == letter:
        return char
    return next(chr(cp) for cp in range(0x2100, 0x2150) if unicodedata.normalize("NFKC", chr(cp)) == letter)


def client(body: bytes) -> bytes:
    return unicodedata.normalize("NFKC", json.loads(body)["t"]).encode("ascii", "ignore")


@pytest.mark.parametrize("alphabet", ALPHABETS)
def test_a_value_in_mathematical_letters_as_json_escapes_is_refused(alphabet: str) -> None:
    body = json.dumps({"t": math(VALUE, alphabet)}).encode()
    assert b"\\ud835" in body.lower() and client(body) == V
    with pytest.raises(ScrubRefused):
        scrub_field(body, FINDER, lambda _: None)
    for size in (5, 64, 4096):
        out, refused = _stream(body, size)
        assert refused, size
        assert V[:MIN_HOLD] not in skeleton(out), size


@pytest.mark.parametrize("case", ["lower", "upper"])
def test_the_escapes_are_read_in_either_case(case: str) -> None:
    body = json.dumps({"t": math(VALUE, "bold")}).encode()
    if case == "upper":  # (hex digits: JSON reads either case)
        body = re.sub(rb"\\u([0-9a-f]{4})", lambda m: b"\\u" + m.group(1).upper(), body)
    assert client(body) == V
    with pytest.raises(ScrubRefused):
        scrub_field(body, FINDER, lambda _: None)


def test_a_value_in_mathematical_letters_spread_with_escaped_filler_past_the_window_is_refused() -> None:
    filler = "\u200b" * (WINDOW // 6 + 1)
    body = json.dumps({"t": filler.join(math(VALUE, "bold"))}).encode()
    assert client(body).replace(b"\xe2\x80\x8b", b"") == V
    assert V in skeleton(body)
    for size in (4096, 61, 5, 1):
        out, refused = _stream(body, size)
        assert refused, size
        assert V[:MIN_HOLD] not in skeleton(out)


def test_other_characters_beyond_the_bmp_go_out_unchanged() -> None:
    """Emoji and CJK extension characters (surrogate pairs too) hold no value: unchanged."""
    body = json.dumps({"t": "ok \U0001f600 \U00020000 \U0001d400\U0001d401 done"}).encode()
    assert scrub_field(body, FINDER, lambda _: None) == body
    assert _stream(body, 7) == (body, False)


@pytest.mark.parametrize("alphabet", ["italic", "double-struck-capitals"])
@pytest.mark.parametrize("escaped", [False, True], ids=["utf-8", "json-escapes"])
def test_a_letter_from_the_letterlike_block_in_a_mathematical_value_is_read(alphabet: str, escaped: bool) -> None:
    """Italic h is U+210E (the block has a hole where it would be), double-struck R is U+211D: a
    client's NFKC reads them as the letter; dropping them hid the whole value."""
    body = json.dumps({"t": math(VALUE, alphabet)}, ensure_ascii=escaped).encode()
    assert client(body) == V
    with pytest.raises(ScrubRefused):
        scrub_field(body, FINDER, lambda _: None)
    assert _stream(body, 9)[1]
