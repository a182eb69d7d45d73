"""The expressions that find JSON escapes of the characters a cleaning client reads as ASCII are
tries of character classes (one class per hex digit, where an alternation of ~100 heads cost ~10 ms
per 64 KiB of escaped Chinese): they must find exactly what the plain alternation of the heads
finds, in every case of the hex digits."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.core import scrub
from proxy.core.fold import STRIPPED_ASCII


def _alternation(codes: object) -> re.Pattern[bytes]:
    heads = sorted({b"%03x" % (cp >> 4) for cp in codes if cp <= 0xFFFF})  # type: ignore[attr-defined]
    return re.compile(rb"\\u((?i:" + b"|".join(heads) + rb")[0-9a-fA-F])")


PAIRS = [
    (scrub._STRIPPED_ESCAPE, _alternation(STRIPPED_ASCII)),
    (scrub._TRANSLITERATED_ESCAPE, _alternation(scrub._TRANSLITERATED_CODES)),
]


def test_every_escape_of_the_basic_plane_is_found_as_the_alternation_finds_it() -> None:
    for trie, alternation in PAIRS:
        for cp in range(0x10000):
            for spelled in (b"\\u%04x" % cp, b"\\u%04X" % cp):
                found = trie.fullmatch(spelled)
                assert (found is None) == (alternation.fullmatch(spelled) is None), spelled
                assert found is None or found.group(1) == spelled[2:]


_TEXT = st.lists(
    st.sampled_from(
        [b"\\u", b"\\", b"u", b"0", b"1", b"e", b"E", b"f", b"a", b"d", b"8", b"3", b"x", b"\xe4\xb8\x80", b" "]
    ),
    max_size=60,
).map(b"".join)


@settings(max_examples=400, deadline=None)
@given(_TEXT)
def test_the_tries_find_the_same_escapes_in_any_text(text: bytes) -> None:
    for trie, alternation in PAIRS:
        assert [m.span(1) for m in trie.finditer(text)] == [m.span(1) for m in alternation.finditer(text)]
