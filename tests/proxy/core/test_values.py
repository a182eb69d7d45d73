"""The real-value finder: every form, found wherever it sits, whatever the pattern count (B12, B18)."""

from __future__ import annotations

import base64
import binascii
import json
import random
import re
import urllib.parse

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.core import finder as finder_module
from proxy.core import values
from proxy.core.scrub import first_hit
from proxy.core.secret import (
    READS_AS_PLACEHOLDER,
    SecretError,
    check_value,
    holding_others,
    holding_others_in_steps,
    in_texts_in_steps,
    read_in_placeholders_in_steps,
    reads_as_placeholder,
    reads_in_placeholder,
)
from proxy.core.values import Finder, Pattern, build_finder, forms, scan
from proxy.policy.model import BoundHost, Reason
from tests.support.encodings import z85encode

VALUE = "sk-REAL-CANARY-0123456789abcdef+/=x"
PH = "sk-sandgate-openai-ph"
FINDER = Finder.for_values([("openai", VALUE, PH)])


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


CONTEXTS = {
    "raw": VALUE.encode(),
    "in-json": b'{"error": "Incorrect API key provided: ' + VALUE.encode() + b'"}',
    "lowercase": VALUE.lower().encode(),
    "percent": urllib.parse.quote(VALUE, safe="").encode(),
    "percent-lower-hex": re.sub(
        r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), urllib.parse.quote(VALUE, safe="")
    ).encode(),
    "hex": binascii.hexlify(VALUE.encode()),
    "HEX": binascii.hexlify(VALUE.encode()).upper(),
    "base64": b64(VALUE.encode()),
    "basic-user-0": b64(f":{VALUE}".encode()),
    "basic-user-1": b64(f"x:{VALUE}".encode()),
    "basic-user-2": b64(f"xy:{VALUE}".encode()),
    "basic-user-3": b64(f"xyz:{VALUE}".encode()),
    "basic-password-after": b64(f"{VALUE}:pw".encode()),
    "base64url": base64.urlsafe_b64encode(b"ab" + VALUE.encode()),
    # Text encodings a client decodes by itself (red team 3): the value's UTF-16 in base64 at each
    # alignment (PowerShell's -EncodedCommand, NTLM), UTF-7 (a base64 run of its UTF-16BE, or as
    # Python's encoder writes it). (UTF-7 with short runs and EBCDIC are decoded views: test_scrub.)
    "base64-utf16le-0": b64(VALUE.encode("utf-16-le")),
    "base64-utf16le-1": b64(("k" + VALUE).encode("utf-16-le")),
    "base64-utf16le-2": b64(("ke" + VALUE).encode("utf-16-le")),
    "base64url-utf16le": base64.urlsafe_b64encode(("key " + VALUE).encode("utf-16-le")),
    "utf-7-one-run": b"+" + b64(VALUE.encode("utf-16-be")).rstrip(b"=") + b"-",
    "utf-7-in-a-longer-run": b"+" + b64(("key: " + VALUE).encode("utf-16-be")).rstrip(b"=") + b"-",
    "utf-7-standard": ("key: " + VALUE).encode("utf-7"),
    # The other encodings of Python's base64 and binascii (red team 15): one call each, at every
    # alignment (Ascii85's own ``\\`` in a JSON string: the red team's test).
    **{f"base32-{n}": base64.b32encode(b"k" * n + VALUE.encode()) for n in range(5)},
    **{f"base32hex-{n}": base64.b32hexencode(b"k" * n + VALUE.encode()) for n in range(5)},
    **{f"base85-{n}": base64.b85encode(b"k" * n + VALUE.encode()) for n in range(4)},
    **{f"z85-{n}": z85encode(b"k" * n + VALUE.encode()) for n in range(4)},
    **{f"ascii85-{n}": base64.a85encode(b"k" * n + VALUE.encode(), adobe=n == 1) for n in range(4)},
    **{f"uuencode-{n}": binascii.b2a_uu(b"k" * n + VALUE.encode()) for n in range(3)},
}


@pytest.mark.parametrize("context", CONTEXTS.values(), ids=CONTEXTS.keys())
def test_every_form_is_found_where_a_reflection_puts_it(context: bytes) -> None:
    assert FINDER.search(b"prefix " + context + b" suffix") is not None


@pytest.mark.parametrize(
    "text", [b"", b"sk-REAL-CANARY", VALUE[:-1].encode(), b"Bearer " + PH.encode(), b"hello world"]
)
def test_what_is_not_a_value_is_not_found(text: bytes) -> None:
    assert FINDER.search(text) is None


def test_each_form_is_replaced_by_the_same_form_of_the_placeholder() -> None:
    hits: list[str] = []
    out = FINDER.sub(b"a " + VALUE.encode() + b" b " + b64(VALUE.encode()) + b" c", hits.append)
    assert VALUE.encode() not in out and PH.encode() in out and hits == ["openai", "openai"]
    assert b64(PH.encode())[:8] in out


_ENCODERS = {
    "base64": base64.b64encode,
    "base64url": base64.urlsafe_b64encode,
    "base32": base64.b32encode,
    "base32hex": base64.b32hexencode,
    "base85": base64.b85encode,
    "z85": z85encode,
    "ascii85": base64.a85encode,
    "hex": binascii.hexlify,
    "uuencode": lambda d: binascii.b2a_uu(d[: values.UU_LINE]),
}


@given(
    value=st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=12, max_size=44),
    before=st.binary(max_size=9),
    after=st.binary(max_size=9),
    encoding=st.sampled_from(sorted(_ENCODERS)),
)
def test_a_value_inside_any_encoded_run_is_found(value: str, before: bytes, after: bytes, encoding: str) -> None:
    """Whatever bytes an encoder reads before and after a value (a ``user:`` in Basic credentials,
    an error's prefix), the encoded run holds one of the value's forms (uuencode: where the value
    and what precedes it fit one line). From 12 characters on: a shorter value may, at some
    alignment, hold fewer than two of base85's 4-byte groups (or one of base32's 5), under the 8
    characters a form needs."""
    finder = Finder.for_values([("s", value, "placeholder-x")])
    data = before + value.encode() + after
    if encoding == "uuencode" and len(before) + len(value) > values.UU_LINE:
        return
    hit = finder.search(_ENCODERS[encoding](data))
    assert hit is not None and hit.pattern.secret == "s"


def test_short_forms_are_not_patterns() -> None:
    assert all(len(f) >= 8 for f, _ in forms("abcdefgh", "placeholder-x"))


_PIECES = st.sampled_from(
    [b"abcdefgh", b"efghijkl", b"ghijklmn", b"xabcdefg", b"cdefghij", b"ijklmnop", b"abcdefghijkl"]
)


@given(
    patterns=st.lists(_PIECES, min_size=1, max_size=7, unique=True),
    data=st.lists(st.one_of(_PIECES, st.binary(max_size=6)), max_size=12).map(b"".join),
    shard=st.integers(min_value=1, max_value=8),
    shard_bytes=st.integers(min_value=1, max_value=60),
    anchor=st.integers(min_value=1, max_value=13),
    probe=st.integers(min_value=1, max_value=8),
)
def test_hits_are_the_reference_scan_however_the_patterns_are_sharded(
    patterns: list[bytes], data: bytes, shard: int, shard_bytes: int, anchor: int, probe: int
) -> None:
    """Differential: the automata (one, or several for a large policy or long patterns, cut by
    count or by bytes, of patterns' first ANCHOR bytes, asked through probes or not) find exactly
    what the plain find loop finds, overlapping patterns included: a hit one shard hides behind an
    overlap another shard wins must still be found, and a pattern's first bytes where the rest
    differs is no hit, nor hides one."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(finder_module, "SHARD", shard)
        mp.setattr(finder_module, "SHARD_BYTES", shard_bytes)
        mp.setattr(finder_module, "ANCHOR", anchor)
        mp.setattr(finder_module, "_PROBE", probe)
        finder = Finder(Pattern(f"s{i}", p, b"[x]") for i, p in enumerate(patterns))
    expected = [(h.start, h.end, h.pattern.find) for h in scan(finder.patterns, data)]
    assert [(h.start, h.end, h.pattern.find) for h in finder.hits(data)] == expected


@settings(max_examples=50)
@given(
    patterns=st.lists(_PIECES, min_size=1, max_size=7, unique=True),
    pieces=st.lists(st.one_of(_PIECES, st.binary(max_size=6)), max_size=12),
    loop=st.booleans(),
    probe=st.booleans(),
)
def test_both_engines_find_what_the_reference_scan_finds_in_large_inputs(
    patterns: list[bytes], pieces: list[bytes], loop: bool, probe: bool
) -> None:
    """A finder searches large encoded inputs with the find loop or the automaton (its probes
    asked first or not), whichever was faster when it was built: each gives exactly the
    reference's hits."""
    filler = b"0123456789abcdef" * 320  # hex: the input reads as encoded; 5 KiB: it is large
    data = filler + filler.join(pieces) + filler
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(finder_module, "_PROBE", 2)  # (probes of two patterns: a finder of three or more has them)
        finder = Finder((Pattern(f"s{i}", p, b"[x]") for i, p in enumerate(patterns)), loop_for_large=loop)
    finder.probe_encoded = probe
    expected = [(h.start, h.end, h.pattern.find) for h in scan(finder.patterns, data)]
    assert [(h.start, h.end, h.pattern.find) for h in finder.hits(data)] == expected


def test_the_find_loop_gives_the_reference_hits_where_they_crowd() -> None:
    """Thousands of hits, overlapping patterns, a pattern that stops occurring half way: the loop
    remembers each pattern's next occurrence (rather than asking every pattern again from each hit,
    which took time quadratic in the hits) and still gives exactly scan's hits."""
    data = b"abab" * 3000 + b"babb" * 3000 + b"aab" * 1000
    assert len(data) >= 4096 and finder_module._reads_encoded(data)  # (the loop serves this input)
    finder = Finder((Pattern(f"s{i}", p, b"") for i, p in enumerate([b"abab", b"bab", b"ab", b"ba", b"bb", b"aab"])),
                    loop_for_large=True)  # fmt: skip
    expected = [(h.start, h.end, h.pattern.find) for h in scan(finder.patterns, data)]
    assert len(expected) > 6000
    assert [(h.start, h.end, h.pattern.find) for h in finder.hits(data)] == expected


def test_a_finder_of_a_few_patterns_picks_an_engine_and_a_large_one_the_automaton() -> None:
    few = Finder.for_values([("s", VALUE, PH)])
    assert isinstance(few.loop_for_large, bool)
    many = Finder.for_values([(f"s{i}", f"sk-REAL-{i:04d}-0123456789abcdef", f"ph-{i:04d}-x") for i in range(40)])
    assert len(many.patterns) > finder_module._LOOP_MAX
    assert not many.loop_for_large


def test_a_finder_past_the_prefilters_reach_finds_through_probes() -> None:
    """90 patterns (5 values): the probes say whether anything is there; a hit in any of them is
    still found, with its leftmost-longest neighbours, by the whole automaton."""
    triples = [(f"s{i}", f"sk-REAL-{i:04d}-0123456789abcdef", f"ph-{i:04d}-x") for i in range(5)]
    finder = Finder.for_values(triples)
    assert finder_module._PROBE < len(finder.patterns) <= finder_module.SHARD
    for _, value, _ in triples:
        for form, _ in values.forms(value, "ph"):
            data = b"text " + form + b" more"
            expected = [(h.start, h.end, h.pattern.find) for h in scan(finder.patterns, data)]
            assert expected and [(h.start, h.end, h.pattern.find) for h in finder.hits(data)] == expected


def test_a_hit_hidden_by_an_overlap_in_another_shard_is_found(monkeypatch: pytest.MonkeyPatch) -> None:
    """c wins over a (it starts first); a had hidden b (they overlap) in their shard; b follows c."""
    monkeypatch.setattr(finder_module, "SHARD", 2)
    data = b"0123456789ABCDEFG"
    finder = Finder(Pattern(n, p, b"") for n, p in (("a", data[1:9]), ("b", data[8:16]), ("c", data[0:8])))
    assert [h.pattern.secret for h in finder.hits(data)] == ["c", "b"]


@given(st.binary(max_size=80))
def test_holdback_is_the_longest_suffix_that_begins_a_pattern(data: bytes) -> None:
    k = FINDER.holdback(data)
    suffix = data[len(data) - k :]
    if k:
        assert any(p.find.startswith(suffix) and len(p.find) > k for p in FINDER.patterns)
    for j in range(len(data) - k):  # no longer suffix qualifies
        longer = data[j:]
        assert not any(p.find.startswith(longer) and len(p.find) > len(longer) for p in FINDER.patterns)


# -- secret values are checked before use (issue 11, finding 5) ---------------------------------


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("", "empty"),
        ("x" * 8193, "longer than 8192"),
        ("sk-abc\r\nX-Evil: 1", "illegal"),
        ("sk-abcdéfgh", "illegal"),
        (" sk-abcdefgh", "whitespace"),
        ("sk-abcdefgh\t", "whitespace"),
        ("s-hort7", "shorter than 8"),
        (f"pre-{PH}-post", "contains a placeholder"),
        (PH, "contains a placeholder"),
        ("sandgate-openai", "part of a placeholder"),
    ],
    ids=[
        "empty",
        "too-long",
        "crlf",
        "non-ascii",
        "leading-space",
        "trailing-tab",
        "too-short",
        "holds-placeholder",
        "is-placeholder",
        "inside-placeholder",
    ],
)
def test_unusable_values_are_secret_invalid_and_never_quoted(value: str, why: str) -> None:
    with pytest.raises(SecretError) as e:
        check_value(value, [PH, "sandgate-openai-ph2"])
    assert e.value.reason is Reason.SECRET_INVALID and why in str(e.value)
    assert value not in str(e.value) or not value


@pytest.mark.parametrize(
    "value",
    [
        PH.upper(),
        "SANDGATE-OPENAI-PH2",
        "Sandgate-OpenAI",
        "Bearer sk-sandgate-openai",
        ":sk-sandgate-openai",
        "e-openai-phsk-sandgate",
        "sk-sandgate-xx" + "Xq7Lm2Pz9Wr",
    ],
    ids=[
        "is-placeholder-upper-cased",
        "is-another-placeholder-upper-cased",
        "inside-placeholder-other-case",
        "placeholder-start-after-a-scheme",
        "placeholder-start-after-basic-user",
        "two-placeholders-side-by-side",
        "a-piece-of-it-in-a-placeholder",
    ],
)
def test_values_a_placeholder_reads_as(value: str) -> None:
    """Red teams 57 and 58: each was accepted, then refused every request or answer carrying a
    placeholder as holding a real value (the store makes them secret_invalid: test_boundaries)."""
    assert reads_in_placeholder(value, [PH, "sandgate-openai-ph2"])


@pytest.mark.parametrize("value", ["sk-abcdefgh", "token with inner spaces", "x" * 8192, "a\tb-cdefgh"])
def test_field_values_within_the_cap_are_accepted(value: str) -> None:
    check_value(value, [PH])


_FORMED = {  # a placeholder that holds the value in a form the outbound guard reads
    "hex": lambda v: "ph-" + v.encode().hex() + "-x",
    "base64": lambda v: "ph-" + base64.b64encode(v.encode()).decode() + "-x",
    "percent": lambda v: "ph-" + urllib.parse.quote(v, safe="") + "-x",
    "lower": lambda v: "ph-" + v.lower() + "-x",
}


@pytest.mark.parametrize("form", sorted(_FORMED))
def test_a_value_the_guard_reads_in_a_placeholder_is_invalid(form: str) -> None:
    """Red team 57: the exact comparison let through a value that a placeholder holds in another
    case or an encoding; the guard then refused every request carrying that placeholder."""
    value = "SK-Live key/0123456789"
    assert reads_in_placeholder(value, [PH, _FORMED[form](value)])
    assert not reads_in_placeholder(value, [PH])


_VISIBLE = st.characters(min_codepoint=0x21, max_codepoint=0x7E)


def _refused(value: str, text: bytes) -> bool:
    """Whether the runtime's finders (built as proxy.runtime builds them: the outbound guard, and
    the answers' finder with the runs) find ``value`` in a field holding ``text``."""
    *_, outbound = build_finder([("s", value, "sk-placeholder-of-s")], values.outbound_runs_of, prefilter=False)
    answers = Finder.for_values([("s", value, "sk-placeholder-of-s")], runs=True, prefilter=False)
    return any(f is not None and first_hit(f, [text]) is not None for f in (outbound, answers))


# How a placeholder travels: bare, in its slot's template, in Basic credentials, a query, a form,
# JSON, beside another placeholder (red team 58 found a value read in several of these, not bare).
_CONTEXTS = {
    "bare": lambda ph, other: ph.encode(),
    "bearer": lambda ph, other: b"Bearer " + ph.encode(),
    "basic": lambda ph, other: b"Basic " + base64.b64encode(b"bob:" + ph.encode()),
    "query": lambda ph, other: b"/v1/x?key=" + ph.encode() + b"&a=b",
    "json": lambda ph, other: b'{"api_key": "' + ph.encode() + b'"}',
    "percent": lambda ph, other: urllib.parse.quote("Bearer " + ph).encode(),
    "form": lambda ph, other: b"grant_type=x&api_key=" + ph.encode() + b"&b=c",
    "beside-another": lambda ph, other: f'{{"a": "{ph}", "b": "{other}"}}'.encode(),
}
_OTHER = "sk-sandgate-other-ph58"


@settings(max_examples=200, deadline=None)
@given(
    value=st.text(_VISIBLE, min_size=8, max_size=40),
    wrap=st.tuples(st.text(_VISIBLE, max_size=6), st.text(_VISIBLE, max_size=6)),
    form=st.sampled_from([None, *sorted(_FORMED)]),
    piece=st.integers(min_value=0, max_value=40),
    flips=st.lists(st.integers(min_value=0, max_value=80), max_size=4),
    context=st.sampled_from(sorted(_CONTEXTS)),
    cut=st.integers(min_value=0, max_value=30),
)
def test_a_value_refused_beside_a_placeholder_is_invalid(
    value: str, wrap: tuple[str, str], form: str | None, piece: int, flips: list[int], context: str, cut: int
) -> None:
    """Whenever the runtime's finders would refuse a request or an answer carrying a placeholder
    (bare or in a context it travels in), the value is refused first. The placeholders are made to
    hold the value in one of its forms, a piece of it, with letters case-flipped, or to be the
    value's tail and what follows (the red team's ``Bearer sk-sandgate-aaaa``)."""
    inner = _FORMED[form](value) if form else value[piece : piece + 12]
    chars = list(wrap[0] + inner + wrap[1])
    for i in flips:
        if i < len(chars):
            chars[i] = chars[i].swapcase()
    placeholder = "".join(chars)
    if cut and cut < len(value):
        placeholder = value[cut:] + "-ph58"
    if placeholder in value or value in placeholder or _OTHER in value:
        return  # (the exact checks answer those)
    if _refused(value, _CONTEXTS[context](placeholder, _OTHER)):
        assert reads_in_placeholder(value, [placeholder, _OTHER])


@pytest.mark.parametrize(
    ("value", "template"),
    [("tok:sk-sa", "tok:{}"), ("ai-ph;v=1", "{};v=1"), ('tok="sk-sa', 'tok="{}"')],
    ids=["before", "after", "quoted-before"],
)
def test_a_value_read_in_a_slots_template_is_invalid(value: str, template: str) -> None:
    """Red team 60 / a gap of 58's fix: the contexts asked were a fixed list (bare, ``Bearer``, a
    query...), so a value read only in a custom slot's template around the placeholder (``tok:{}``)
    passed, then every request filling that slot was refused as holding a real value."""
    assert not reads_in_placeholder(value, [PH])
    assert reads_in_placeholder(value, [PH], {PH: ("{}", template)})


@pytest.mark.parametrize(
    ("stored", "scheme"),
    [
        ("Bearer sk-proj-" + "Zq7xK2mW9pL4vR8tN3bY6cH1jF5gD0sA", "'Bearer '"),
        ("bearer 4f9c2a7e1b8d3f6a0c5e", "'bearer '"),
        ('{"api_key": "4f9c2a7e1b8d3f6a0c5e9d"}', """'{"api_key": "'"""),
    ],
    ids=["bearer-and-a-key", "bearer-lower", "json"],
)
def test_a_key_stored_with_its_scheme_is_told_to_be_stored_alone(stored: str, scheme: str) -> None:
    """Red team 62 (F4): ``Bearer <key>`` stored as the value was refused with only "reads as a
    placeholder", which names nothing the operator did. It is refused (requests carrying any
    placeholder hold ``Bearer sk-``), and the reason now says what to store instead, quoting the
    scheme and nothing of the key."""
    assert reads_in_placeholder(stored, [PH])
    why = reads_as_placeholder(stored)
    assert why.startswith("value reads as a placeholder of the policy")
    assert f"it begins with {scheme}" in why and "store the key alone" in why
    assert stored[len(scheme) - 2 :][:6] not in why


@pytest.mark.parametrize("stored", ["sk-bearer 4f9c2a7e1b8d3f6a0c5e", "Bearer", PH.upper()])
def test_other_values_read_as_a_placeholder_get_no_scheme_hint(stored: str) -> None:
    assert reads_as_placeholder(stored) == READS_AS_PLACEHOLDER


_TEMPLATE = st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="{}")


@settings(max_examples=200, deadline=None)
@given(
    value=st.text(_VISIBLE, min_size=8, max_size=40),
    outside=st.tuples(st.text(_TEMPLATE, max_size=6), st.text(_TEMPLATE, max_size=6)),
    cut=st.integers(min_value=0, max_value=40),
    inside=st.integers(min_value=0, max_value=40),
    side=st.sampled_from(["before", "after"]),
)
def test_a_value_refused_in_a_slots_template_is_invalid(
    value: str, outside: tuple[str, str], cut: int, inside: int, side: str
) -> None:
    """Whenever the runtime's finders would refuse a header filled by a slot's template, the value
    is refused first. The template holds a piece of the value next to the ``{}`` and the placeholder
    the piece that follows it (or the other way round), so the value straddles the two."""
    if side == "before":
        template = outside[0] + value[:cut] + "{}" + outside[1]
        placeholder = value[cut : cut + inside] + "-ph60"
    else:
        template = outside[0] + "{}" + value[cut:] + outside[1]
        placeholder = "ph60-" + value[max(0, cut - inside) : cut]
    if "{" in value or "}" in value or placeholder in value or value in placeholder or _OTHER in value:
        return  # (a template has one pair of braces; the exact checks answer the rest)
    if _refused(value, template.replace("{}", placeholder).encode()):
        assert reads_in_placeholder(value, [placeholder, _OTHER], {placeholder: (template,)})


# Random keys in vendors' formats: a seeded generator's bytes after a public prefix.
_RANDOM_KEYS = {
    "seed": st.integers(min_value=0, max_value=2**64),
    "size": st.integers(min_value=12, max_value=60),
    "prefix": st.sampled_from(
        ["sk-proj-", "ghp_", "github_pat_11", "sk-ant-api03-", "xoxb-", "", "AIza", "pypi-AgEIcHlwaS5vcmc"]
    ),
}


@settings(max_examples=200, deadline=None)
@given(**_RANDOM_KEYS)
def test_random_keys_are_not_refused_beside_usual_placeholders(seed: int, size: int, prefix: str) -> None:
    """The other side: a real key's random characters are not read in placeholders (the edge rule's
    6 characters: ~1 in 62**6 per pattern by chance), nor is its public prefix (red team 59:
    ``github_pat_`` keys were refused beside a placeholder ending in ``github``). Random bytes from
    a seeded generator: a key's characters are random, not chosen to spell a placeholder."""
    key = random.Random(seed).randbytes(size)
    value = prefix + base64.urlsafe_b64encode(key).decode().rstrip("=")
    placeholders = [PH, "sk-proj-PH-0123456789-openai", "sandgate-openai-0123456789abcdef", "ghp-PH-abcdef-github",
                    "PLACEHOLDER_GITHUB", "placeholder-sk-ant", "AKIAPLACEHOLDER00000",
                    "pypi-AgEIcHlwaS5vcmc-placeholder"]  # fmt: skip
    assert not reads_in_placeholder(value, placeholders)


def test_the_cap_is_a_setting() -> None:
    check_value("x" * 20_000, [], max_bytes=20_000)
    with pytest.raises(SecretError):
        check_value("x" * 20_001, [], max_bytes=20_000)


def reference_hits(patterns: list[bytes], data: bytes) -> list[tuple[int, int]]:
    """Leftmost-longest, non-overlapping, by brute force."""
    out, pos = [], 0
    while pos < len(data):
        best = max((p for p in patterns if data.startswith(p, pos)), key=len, default=None)
        if best is None:
            pos += 1
            continue
        out.append((pos, pos + len(best)))
        pos += len(best)
    return out


@given(
    st.lists(st.text(alphabet="abcdef0123456789-", min_size=8, max_size=20), min_size=1, max_size=120, unique=True),
    st.lists(st.integers(min_value=0), min_size=1, max_size=6),
    st.binary(max_size=60),
)
@settings(max_examples=60, deadline=None)
def test_sharded_automata_give_the_reference_hits(values: list[str], picks: list[int], noise: bytes) -> None:
    steps = list(build_finder((f"s{i}", v, f"placeholder-{i:04d}") for i, v in enumerate(values)))
    finder = steps[-1]
    assert isinstance(finder, Finder) and all(s is None for s in steps[:-1])
    data = noise + b"".join(values[p % len(values)].encode() + noise[:3] for p in picks)
    got = [(h.start, h.end) for h in finder.hits(data)]
    assert got == reference_hits([p.find for p in finder.patterns], data)


def test_a_build_of_long_values_lets_other_work_run_and_finds_what_scan_finds() -> None:
    """A policy of long values (a service account's JSON key, a PEM key: ~2,000 characters) is
    built in steps of one value's patterns or one automaton of at most SHARD_BYTES of their first
    ANCHOR bytes: the 512 longest forms of ten such values whole in one automaton held the event
    loop ~0.6 s at each rotation. What it finds is what the reference search finds, a form whose
    first ANCHOR bytes are there and the rest not included."""
    alphabet = "ABCDEFabcdef0123456789"
    triples = [(f"s{i}", f"pem-{i}-" + "".join(random.choices(alphabet, k=2000)), f"ph-{i:04d}") for i in range(10)]
    twin = triples[3][1][:1000] + "".join(random.choices(alphabet, k=1000))  # (its forms begin as s3's)
    triples.append(("s10", twin, "ph-0010"))
    steps = list(build_finder(triples, values.outbound_runs_of, prefilter=False))
    finder = steps[-1]
    assert isinstance(finder, Finder)
    slices = finder_module._slices(finder.patterns)
    assert slices is not None and len(steps) - 1 >= len(triples) + len(slices)
    costs = [min(len(p.find), finder_module.ANCHOR) + finder_module._PATTERN_COST for p in finder.patterns]
    most = finder_module.ANCHOR + finder_module._PATTERN_COST
    assert len(slices) <= sum(costs) // (finder_module.SHARD_BYTES - most) + 1  # (each shard as full as it can be)
    for start, end in zip(slices, [*slices[1:], len(finder.patterns)], strict=True):
        assert sum(costs[start:end]) <= finder_module.SHARD_BYTES
    v = triples[3][1]
    for data in (
        f"key={v}&x".encode(),
        f"key={v[:1500]}~{v[1501:]}".encode(),  # its first 64 characters and more, then not it
        base64.b64encode(v.encode()) + b"/" + base64.b64encode(v.encode())[:-40],
        f"{v[:90]}{triples[4][1]}".encode(),
        f"{twin}-{v}".encode(),
        base64.b64encode(twin.encode()) + base64.b64encode(v.encode()),
    ):
        assert [(h.start, h.end, h.pattern.find) for h in finder.hits(data)] == [
            (h.start, h.end, h.pattern.find) for h in scan(finder.patterns, data)
        ]


def test_a_rebuild_remakes_only_the_values_that_changed(monkeypatch: pytest.MonkeyPatch) -> None:
    """``known`` carries a value's patterns from one build to the next: a rotation makes the new
    value's only, and the finder is the one a build from nothing makes."""
    triples = [(f"s{i}", "sk-proj-" + "".join(random.choices("abcdef0123456789", k=40)), f"ph-{i:04d}") for i in range(6)]  # fmt: skip
    known: dict[tuple[str, str, str], list[Pattern]] = {}
    *_, first = build_finder(triples, values.outbound_runs_of, known=known)
    assert set(known) == set(triples)
    triples[2] = ("s2", "sk-proj-" + "".join(random.choices("ghijkl6789", k=40)), "ph-0002")
    kept = {t: known[t] for t in triples if t in known}
    made = []
    real = values.patterns_of
    monkeypatch.setattr(values, "patterns_of", lambda n, v, p: made.append(v) or real(n, v, p))
    *_, again = build_finder(triples, values.outbound_runs_of, known=kept)
    assert made == [triples[2][1]]
    monkeypatch.undo()
    *_, fresh = build_finder(triples, values.outbound_runs_of)
    assert isinstance(again, Finder) and isinstance(fresh, Finder)
    assert again.patterns == fresh.patterns
    assert isinstance(first, Finder) and first.search(triples[2][1].encode()) is None
    assert [again.search(v.encode()).pattern.secret for _, v, _ in triples] == [n for n, _, _ in triples]  # type: ignore[union-attr]


def test_requests_are_searched_for_the_runs_of_long_values_only() -> None:
    """A value with 31 or more characters past its prefix: its runs' 9-character pieces are
    refused in requests too; a shorter one's (7 or 8 characters, ``-bench-``) are not."""
    long_key = "sk-proj-" + "Xq7Lm2Vb9Nc4Tz8Rw1Ys6Ud3Pf5Gh0Jk2"
    assert values.outbound_runs_of(long_key) == values.runs_of(long_key)
    assert {len(p) for p in values.outbound_runs_of(long_key)} == {9}
    assert values.outbound_runs_of("sk-test-bench-0-0123456789") == []
    steps = list(build_finder([("s", long_key, "sk-proj-placeholder-0000")], values.outbound_runs_of))
    finder = steps[-1]
    assert isinstance(finder, Finder)
    # (less its last character; pieces are lowercased: the guard also searches what it reads lowercased)
    hit = finder.search(b"GET /notes/" + long_key[8:-1].lower().encode() + b" HTTP/1.1")
    assert hit is not None and hit.pattern.part and hit.pattern.secret == "s"


@given(
    value=st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=12, max_size=40),
    placeholder=st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=12, max_size=40),
    encoding=st.sampled_from(["ascii85", "uuencode"]),
)
def test_a_replaced_form_keeps_a_json_string_a_json_string(value: str, placeholder: str, encoding: str) -> None:
    """Ascii85 and uuencode hold ``"`` and ``\\``: the placeholder's form put where the value's
    stood in a JSON string (it had none there, or it would have been escaped) has none either."""
    encoded = _ENCODERS[encoding](value.encode())
    if value in placeholder or placeholder in value or b'"' in encoded or b"\\" in encoded:
        return
    finder = Finder.for_values([("s", value, placeholder)])
    body = b'{"id": "' + encoded.strip() + b'"}'
    out = finder.sub(body, lambda _: None)
    assert json.loads(out)["id"].encode() != encoded.strip() or finder.search(body) is None


def test_the_tests_z85_is_zeromqs() -> None:
    """The reference the Z85 forms are held to: ZeroMQ RFC 32's test vector."""
    assert z85encode(bytes.fromhex("864FD26FB559F75B")) == b"HelloWorld"


@settings(max_examples=500)
@given(st.binary(max_size=41) | st.lists(st.sampled_from([b"\0\0\0\0", b"    ", b"\0", b"sk-", b"\xff"])).map(b"".join))
def test_base85_forms_are_base64s(data: bytes) -> None:
    """values' own base85 and Ascii85 encoders (which keep no table) write what base64's do."""
    assert values.b85encode(data) == base64.b85encode(data)
    assert values.a85encode(data) == base64.a85encode(data)


def test_building_a_finder_leaves_base64s_tables_unbuilt() -> None:
    """base64's base85 encoders keep ~0.7 MiB of tables once called: a finder's forms do not call
    them (in a process of its own: this suite's other tests call them)."""
    import subprocess
    import sys

    code = (
        "import base64\nfrom proxy.core.values import Finder\n"
        "Finder.for_values([('s', 'sk-REAL-0123456789abcdefghij', 'sk-sandgate-ph')], runs=True)\n"
        "assert getattr(base64, '_b85chars2', None) is None and getattr(base64, '_a85chars2', None) is None\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- a value that carries another secret's (red team 58) -----------------------------------------

_KEY = "sk-proj-" + "Zq7Lm2Pz9WrT4vBn8XcK1dHs6JfGy3Ua"
_OPENAI, _ECHO = frozenset({BoundHost("api.openai.com")}), frozenset({BoundHost("echo.example.com")})


@pytest.mark.parametrize(
    ("values", "hosts", "held"),
    [
        ({"m": _KEY, "k": f"tok-{_KEY}-x"}, {"m": _OPENAI, "k": _ECHO}, {"k": "m", "m": "k"}),
        ({"m": _KEY, "k": f"TOK-{_KEY.upper()}"}, {"m": _OPENAI, "k": _ECHO}, {"k": "m", "m": "k"}),
        ({"m": _KEY, "n": _KEY[7:32]}, {"m": _OPENAI, "n": _ECHO}, {"n": "m", "m": "n"}),
        # (red team 61: what a store keeps encoded is the key all the same, and the guard reads it so)
        ({"m": _KEY, "k": base64.b64encode(_KEY.encode()).decode()}, {"m": _OPENAI, "k": _ECHO}, {"k": "m", "m": "k"}),
        ({"m": _KEY, "k": _KEY.encode().hex()}, {"m": _OPENAI, "k": _ECHO}, {"k": "m", "m": "k"}),
        (
            {"m": _KEY, "k": base64.b64encode(b"ci-bot:" + _KEY.encode()).decode()},
            {"m": _OPENAI, "k": _ECHO},
            {"k": "m", "m": "k"},
        ),
        ({"m": _KEY, "k": _KEY.upper()}, {"m": _OPENAI, "k": _ECHO}, {"k": "m", "m": "k"}),
        ({"m": _KEY, "k": f"tok-{_KEY[10:34]}-x"}, {"m": _OPENAI, "k": _ECHO}, {"k": "m", "m": "k"}),
        ({"m": _KEY, "k": f"tok-{_KEY}-x"}, {"m": _OPENAI, "k": _OPENAI | _ECHO}, {"k": "m"}),
        ({"m": _KEY, "same": _KEY}, {"m": _OPENAI, "same": _ECHO}, {}),
        ({"m": _KEY, "o": "sk-other-" + "Hk3Wq9Lz2Xv7Np4Rt8Ys"}, {"m": _OPENAI, "o": _ECHO}, {}),
        (  # (red team 59: OpenAI's keys share "T3BlbkFJ", PyPI's the index's name: never a runs' match)
            {"m": "sk-proj-Zq7Lm2Pz9WrT3BlbkFJHk3Wq9Lz2Xv", "o": "sk-proj-Ab4Cd8Ef2GhT3BlbkFJMn5Op1Qr7St"},
            {"m": _OPENAI, "o": _ECHO},
            {},
        ),
        (
            {"m": "pypi-AgEIcHlwaS5vcmcCJDk3ZTI5NjU5LWQ0", "o": "pypi-AgEIcHlwaS5vcmcCJGFhYmM4ZDE2LTk2"},
            {"m": _OPENAI, "o": _ECHO},
            {},
        ),
    ],
    ids=[
        "holds-it-whole",
        "holds-it-upper-cased",
        "is-a-piece-of-it",
        "base64-of-it",
        "hex-of-it",
        "basic-credentials-of-it",
        "its-upper-case-copy",
        "a-24-character-piece",
        "bound-to-more",
        "same-value",
        "unrelated",
        "same-vendor-openai",
        "same-vendor-pypi",
    ],
)
def test_a_value_that_carries_another_secrets_key_elsewhere_is_held(
    values: dict[str, str], hosts: dict[str, frozenset[BoundHost]], held: dict[str, str]
) -> None:
    """Swapped in, ``k``'s value would carry ``m``'s key to echo.example.com, where ``m`` is not bound.
    Overlapping values are held both ways (each carries pieces of the other); one value under two
    names, each bound where it goes, is not."""
    assert holding_others(values, hosts) == held


@pytest.mark.parametrize(
    ("kept", "held"),
    [
        ([("m", _KEY, _OPENAI)], {"k": "m"}),  # m's key rotated away, guarded: k may not carry it to echo
        ([("m", _KEY, _OPENAI | _ECHO)], {}),  # (echo was given m's old key: bound there)
        ([("m", _KEY, frozenset())], {"k": "m"}),  # unbound by a reload: it may go nowhere
        ([("k", _KEY, _OPENAI)], {}),  # k's own old value inside its new one
        # (k's value whole inside m's old one: which is whose cannot be told; red team 62 sent m's
        # old key less its last character as k's value)
        ([("m", f"tok-{_KEY}-x-y", _OPENAI)], {"k": "m"}),
        ([("m", f"{_KEY[:20]}-{_KEY[20:]}", _OPENAI)], {"k": "m"}),  # a long run of m's old value
        ([("m", f"tok-{_KEY}-x", _OPENAI)], {}),  # the same value: k's own key
        ([("m", f"TOK-{_KEY}-X", _OPENAI)], {"k": "m"}),  # another case: another key (red team 61)
    ],
    ids=[
        "replaced",
        "replaced-bound-there",
        "unbound",
        "its-own",
        "held-in-an-old-one",
        "a-run-of-an-old-one",
        "same-value",
        "case-variant",
    ],
)
def test_a_value_that_carries_a_value_held_for_scrubbing_elsewhere_is_held(
    kept: list[tuple[str, str, frozenset[BoundHost]]], held: dict[str, str]
) -> None:
    """Red team 60: values a rotation replaced or a reload unbound stay guarded (refused outbound,
    scrubbed from answers), and one went out inside another secret's new value all the same."""
    values = {"n": "sk-proj-Ab4Cd8Ef2GhIj6Kl0Mn5Op1Qr7St", "k": f"tok-{_KEY}-x"}
    hosts = {"n": _OPENAI, "k": _ECHO}
    assert holding_others(values, hosts, kept) == held


@pytest.mark.parametrize(
    ("text", "found"),
    [
        (f"sandbox-{_KEY.lower()}", {"m"}),  # the policy's name: any case
        (f"{_KEY[8:30].lower()}.example.com", {"m"}),  # a host holding a run of the key
        ("api.openai.com", set()),
        ("sandbox-agents-prod", set()),
    ],
    ids=["in-the-name", "a-run-in-a-host", "a-host", "a-name"],
)
def test_a_value_in_what_metrics_labels_carry_is_found(text: str, found: set[str]) -> None:
    """Red team 60: metrics labels and the audit's policy field carry the policy's name, its secrets'
    names and their hosts as they are (log lines are redacted; those are not)."""
    values = [("m", _KEY), ("n", "sk-proj-Ab4Cd8Ef2GhIj6Kl0Mn5Op1Qr7St")]
    *_, out = in_texts_in_steps(values, ["boundaries", text])
    assert out == found


@settings(max_examples=200, deadline=None)
@given(**_RANDOM_KEYS)
def test_unrelated_keys_of_one_vendor_do_not_carry_each_other(seed: int, size: int, prefix: str) -> None:
    """The other side: two random keys of one vendor, bound to different hosts, and a third key
    kept from a rotation, are not read as carrying one another (red team 59: OpenAI's keys share
    ``T3BlbkFJ``, PyPI's the index's name)."""
    rng = random.Random(seed)

    def key() -> str:
        random_part = base64.urlsafe_b64encode(rng.randbytes(size)).decode().rstrip("=")
        return prefix + (random_part[:12] + "T3BlbkFJ" + random_part[12:] if prefix == "sk-proj-" else random_part)

    values, kept = {"m": key(), "k": key()}, [("m", key(), _OPENAI)]
    assert holding_others(values, {"m": _OPENAI, "k": _ECHO}, kept) == {}


def test_the_check_across_secrets_lets_requests_run_between_its_steps() -> None:
    """A step (None) after each value's readings are searched (a decoded view of a long value costs
    a while), so that a rotation never holds the event loop for all of them at once."""
    rng = random.Random(61)
    values = {f"s{i}": "sk-proj-" + base64.urlsafe_b64encode(rng.randbytes(24)).decode() for i in range(4)}
    hosts = {name: frozenset({BoundHost(f"{name}.example.com")}) for name in values}
    steps = list(holding_others_in_steps(values, hosts))
    assert set(steps[:-1]) == {None} and len(steps) > len(values) and steps[-1] == {}


def test_the_placeholder_check_lets_requests_run_between_its_steps() -> None:
    """One finder for all of a policy's values, built in steps as the runtime builds its own, and
    the search in steps too (a finder per value held the event loop for seconds with the red team
    tests' 240 values of 2 KB); a value longer than any placeholder is asked only when a piece of it
    is in one; the secrets a placeholder reads as, each."""
    values = [(f"s{i}", f"v{i:03d}-" + "Zq7Lm2Pz9WrT4vBn8XcK1dHs" * 80) for i in range(100)]
    values.append(("bad", "SK-SANDGATE-OPENAI-PH"))
    values.append(("long", "zz-" + PH.upper() + "-" + "Hk3Wq9Lz2Xv7Np4Rt8Ys" * 20))  # (found by a piece of it)
    steps = list(read_in_placeholders_in_steps(values, [PH, *(f"ph-{i}" for i in range(300))]))
    assert steps.count(None) >= 2 and steps[-1] == {"bad", "long"}
