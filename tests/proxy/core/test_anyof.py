"""The scan prefilter (proxy.core.anyof): its "nothing here" is exact, and scrubbing with it gives
what scrubbing without it gives -- the same bytes, the same refusals -- whole and streamed."""

from __future__ import annotations

import base64
import binascii
import urllib.parse

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.core import anyof
from proxy.core import finder as finder_module
from proxy.core.scrub import ScrubRefused, SniffingScrubber, scrub_field
from proxy.core.values import Finder, Pattern, scan

VALUE = "sk-REAL-CANARY-0123456789abcdef+/=x"
PH = "sk-sandgate-openai-ph"

# Pieces from a small alphabet, in both cases and with bytes no letter folds to, so that patterns
# overlap, recur in the data in another case, and sit beside NUL and bytes above 0x7F.
_ALPHABET = b"aAbB\x00\xc3\xa9\xc9-"
_PIECES = st.binary(min_size=1, max_size=5).map(lambda b: bytes(_ALPHABET[x % len(_ALPHABET)] for x in b))
_LITERALS = _PIECES.filter(lambda b: b"\x00" not in b)  # (one holding a NUL: no prefilter, below)
_FILLER = b"z" * 300  # past the prefilter's threshold, and no letter of the alphabet


def _occurs_case_aside(literals: list[bytes], data: bytes) -> bool:
    return any(lit.lower() in data.lower() for lit in literals)


def test_the_prefilter_is_there_in_this_suite() -> None:
    """Hyperscan ships a wheel for this platform: the tests below exercise it, not only the
    automaton (a platform without it scrubs the same, slower: anyof.UNAVAILABLE says why)."""
    assert anyof.UNAVAILABLE is None
    finder = Finder.for_values([("openai", VALUE, PH)], runs=True)
    assert finder.nowhere(b"an answer without any value in it " * 100)
    assert not finder.nowhere(b"x" * 300 + VALUE.lower().encode())


@given(literals=st.lists(_LITERALS, min_size=1, max_size=8, unique=True), pieces=st.lists(_PIECES, max_size=12))
def test_any_of_says_whether_a_literal_occurs_with_case_aside(literals: list[bytes], pieces: list[bytes]) -> None:
    occurs = anyof.any_of(literals)
    assert occurs is not None
    data = _FILLER.join(pieces) + _FILLER
    assert occurs(data) is _occurs_case_aside(literals, data)


@given(
    literals=st.lists(_LITERALS, min_size=1, max_size=8, unique=True),
    pieces=st.lists(_PIECES, max_size=12),
    caseless=st.booleans(),
)
def test_which_of_gives_each_literal_that_occurs_once(
    literals: list[bytes], pieces: list[bytes], caseless: bool
) -> None:
    which = anyof.which_of(literals, caseless=caseless)
    assert which is not None
    data = _FILLER.join(pieces) + _FILLER
    fold = bytes.lower if caseless else bytes
    occurring = {i for i, lit in enumerate(literals) if fold(lit) in fold(data)}
    assert which(data) == occurring
    for most in range(len(literals) + 1):  # (past ``most`` found, a set of most + 1 of them: "more")
        few = anyof.which_of(literals, caseless=caseless, most=most)
        assert few is not None
        got = few(data)
        assert got == occurring if len(occurring) <= most else (len(got) == most + 1 and got <= occurring)


def test_what_any_of_cannot_serve_is_none() -> None:
    assert anyof.any_of([]) is None
    assert anyof.any_of([b"abc", b""]) is None  # (an empty literal occurs everywhere)
    assert anyof.any_of([b"abc", b"a\x00c"]) is None  # (the bindings would cut it at its NUL)
    assert anyof.any_of([b"%08d" % i for i in range(anyof.MAX_PATTERNS + 1)]) is None
    assert anyof.which_of([b"abc", b""]) is None


@given(chars=st.binary(min_size=1, max_size=40), data=st.binary(max_size=600), at=st.integers(0, 600))
def test_any_byte_of_says_whether_any_of_its_bytes_occurs(chars: bytes, data: bytes, at: int) -> None:
    """NUL among them (the bindings take literals as C strings: it is looked for apart)."""
    occurs = anyof.any_byte_of(chars)
    assert occurs is not None
    for probe in (data, data[:at] + chars[at % len(chars) :][:1] + data[at:]):
        assert occurs(probe) is any(b in chars for b in probe)


def test_any_byte_of_the_controls_finds_each_one_in_a_long_text() -> None:
    """As the skeleton asks it (past 2 KiB): each control, NUL and DEL among them, anywhere."""
    controls = bytes(range(0x20)) + b"\x7f"
    occurs = anyof.any_byte_of(controls)
    assert occurs is not None
    assert not occurs(b"x" * 5000)
    for c in controls:
        assert occurs(b"x" * 2500 + bytes([c]) + b"x" * 2500), c


@settings(deadline=None)  # (a finder times its engines when it is built)
@given(patterns=st.lists(_PIECES, min_size=1, max_size=8, unique=True), pieces=st.lists(_PIECES, max_size=12))
def test_nowhere_means_no_hit_in_the_bytes_nor_in_them_lowercased(patterns: list[bytes], pieces: list[bytes]) -> None:
    finder = Finder(Pattern(f"s{i}", p, b"[x]") for i, p in enumerate(patterns))
    data = _FILLER.join(pieces) + _FILLER
    reference = bool(scan(finder.patterns, data) or scan(finder.patterns, data.lower()))
    if finder.nowhere(data):
        assert not reference
    if all(b"\x00" not in p for p in patterns):  # (else no prefilter: nowhere is always False)
        # ... and it says so whenever that holds (case aside): the prefilter does its work
        assert finder.nowhere(data) is not _occurs_case_aside([p.find for p in finder.patterns], data)


_TRIPLES = [("openai", VALUE, PH), ("other", "ghp_Zx9Qw8Er7Ty6Ui5Op4As3Df2Gh1Jk0Lz", "ph-2")]
_FINDER = Finder.for_values(_TRIPLES, runs=True)
_BARE = Finder.for_values(_TRIPLES, runs=True, prefilter=False)  # (the same finder, its prefilter left out)
_V = VALUE.encode()
_FORMS = [
    _V,
    _V.lower(),
    _V.upper(),
    VALUE.swapcase().encode(),
    _V[3:19],  # a run
    _V[3:19].swapcase(),
    bytes(c ^ 0x20 if i % 2 and chr(c).isalpha() else c for i, c in enumerate(_V)),  # mixed case
    b"rEaL-CaNaRy-0123",  # a run in mixed case (no piece of it as is), nothing a decoding starts from
    urllib.parse.quote(VALUE, safe="").encode(),
    binascii.hexlify(_V),
    base64.b64encode(b"x:" + _V),
    _V.replace(b"-", b"\\u002d"),  # an escape: not plain (its runs are plain)
    "".join(f"\\u{ord(c):04x}" for c in VALUE).encode(),  # every character escaped: only a view reads it
    "".join(f"&#{ord(c)};" for c in VALUE).encode(),
    "".join(f"={ord(c):02X}" for c in VALUE).encode(),
    b"ghp_Zx9Qw8Er7Ty6Ui5Op4As3Df2Gh1Jk0Lz".lower(),
    b"sk-REAL-CANARY",  # the public part only: no value
    b"",
]
_TEXT = st.sampled_from(
    [b"plain text answer ", b'{"k": "v", "n": 1} ', b"ABCDEF xyz ", b"\xc3\xa9t\xc3\xa9 ", b"\x00\x01"]
)


def _outcome(fn: object, *args: object) -> tuple[str, object]:
    try:
        return ("ok", fn(*args))  # type: ignore[operator]
    except ScrubRefused as e:
        return ("refused", e.secret)


@settings(max_examples=300, deadline=None)
@given(
    parts=st.lists(st.one_of(st.sampled_from(_FORMS), _TEXT), min_size=1, max_size=8),
    repeat=st.integers(min_value=1, max_value=40),
)
def test_a_whole_body_scrubs_the_same_with_and_without_the_prefilter(parts: list[bytes], repeat: int) -> None:
    body = b"".join(parts) * repeat
    hits: list[str] = []
    bare_hits: list[str] = []
    assert _outcome(scrub_field, body, _FINDER, hits.append) == _outcome(scrub_field, body, _BARE, bare_hits.append)
    assert hits == bare_hits


def _streamed(finder: Finder, body: bytes, cut: int) -> tuple[str, object, bytes]:
    """What the agent would read: the bytes released before the end or a refusal (a refusal cuts
    the stream, but what went before it is gone), and how it ended."""
    s = SniffingScrubber(finder, lambda _: None)
    out = b""
    try:
        for i in range(0, len(body), cut):
            out += s.feed(body[i : i + cut])
        return ("ok", None, out + s.finish())
    except ScrubRefused as e:
        return ("refused", e.secret, out)


@settings(max_examples=200, deadline=None)
@given(
    parts=st.lists(st.one_of(st.sampled_from(_FORMS), _TEXT), min_size=1, max_size=8),
    repeat=st.integers(min_value=1, max_value=40),
    cut=st.integers(min_value=1, max_value=2048),
)
def test_a_streamed_body_scrubs_the_same_with_and_without_the_prefilter(
    parts: list[bytes], repeat: int, cut: int
) -> None:
    body = b"".join(parts) * repeat
    assert _streamed(_FINDER, body, cut) == _streamed(_BARE, body, cut)


def test_a_value_in_mixed_case_in_a_large_plain_body_is_still_refused() -> None:
    """The shortcut the prefilter allows (no decoding applies and nothing occurs, case aside: no
    view to make) must not hide a value whose case was changed."""
    body = b"answer " * 100 + VALUE.swapcase().encode() + b" more" * 100
    with pytest.raises(ScrubRefused):
        scrub_field(body, _FINDER, lambda _: None)


def test_a_large_policy_goes_without_the_prefilter_and_finds_the_same() -> None:
    triples = [(f"s{i}", f"sk-REAL-{i:04d}-0123456789abcdefghij", f"ph-{i:04d}-x") for i in range(60)]
    finder = Finder.for_values(triples, runs=True)
    assert len(finder.patterns) > anyof.MAX_PATTERNS
    assert not finder.nowhere(b"clean " * 100)  # (no prefilter: "may be there", ask the automaton)
    data = b"clean " * 100 + triples[42][1].encode()
    assert [h.pattern.secret for h in finder.hits(data)] == ["s42"]


def test_below_the_threshold_the_automaton_answers_alone() -> None:
    finder = Finder.for_values([("openai", VALUE, PH)])
    assert not finder.nowhere(b"short and clean")
    assert len(b"short and clean") < finder_module._PREFILTER_FROM


@pytest.mark.parametrize("cut", [64, 1000, 5000])
def test_a_run_in_mixed_case_in_a_large_plain_stream_is_refused_before_it_is_released(cut: int) -> None:
    """The stream's case check asks the prefilter first: a value's run with its letters' case
    changed (no piece of it as it is) is still caught before those bytes go out."""
    body = b"hello " * 50 + b"rEaL-CaNaRy-0123" + b" bye" * 50
    ended, secret, released = _streamed(_FINDER, body, cut)
    assert (ended, secret) == ("refused", "openai")
    assert b"CaNaRy" not in released
