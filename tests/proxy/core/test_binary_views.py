"""The views of binary bodies (scrub._binary_views) against views() of the whole bytes.

_binary_views makes the first decodings of the whole bytes and the rest only of the runs of bytes
between walls that can hold a value (see scrub.py). It must find every value views() finds, in
every view, and its views must end as views()'s do (the hold-back asks that): generated bodies mix
random binary, printable runs and real values in every form and stacked encoding, across walls,
and are checked view by view, whole (scrub_whole) and streamed in random pieces (BodyScrubber,
SniffingScrubber, SegmentedScrubber), each against the same scrubber with the old path (views() of
the whole bytes: what the code did before).
"""

from __future__ import annotations

import base64
import random

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from proxy.core import scrub
from proxy.core.scrub import (
    BodyScrubber,
    ScrubRefused,
    SegmentedScrubber,
    SniffingScrubber,
    _binary_views,
    _ends_open,
    _view_ends_in_prefix,
    scrub_whole,
    views,
)
from proxy.core.values import PART_HOLD, Finder

# (Printable; 11 bytes or more. The last has characters EBCDIC code pages write otherwise.)
VALUES = ("sk-Ab3dEf9hIj2kLm", "Q7w/e+R5=tY", "api_KEY.x-42", 'Zq;9=xk-T"', "Pk|8[rT^w]!x")
# (With runs, as a bound host's finder is: the first value's pieces are its shortest patterns.)
FINDER = Finder.for_values(((f"s{i}", v, f"PH{i}-{'x' * 8}") for i, v in enumerate(VALUES)), runs=True)


_FILL = bytes(range(0x80, 0x100)) * 20  # (walls only)
_B64 = base64.b64encode(b"sk-Ab3dEf9hIj2kLm")
_RANDOM = random.Random(1).randbytes(2500)
PATTERNS = sorted({p.find for p in FINDER.patterns if not p.ebcdic}, key=len)  # (text, not EBCDIC misreads)


def _walls(rnd: random.Random, n: int | None = None) -> bytes:
    """Bytes no decoding reads (mostly): above 0x7F and control bytes."""
    pool = bytes(range(0x80, 0x100)) + bytes(range(0x0E, 0x1B)) + b"\x02\x03\x04\x05\x06\x08\x7f"
    return bytes(rnd.choice(pool) for _ in range(n if n is not None else rnd.randint(1, 6)))


def _osc(rnd: random.Random) -> bytes:
    """An OSC sequence with binary in it (no BEL, no ESC: up to 512 bytes), which the shift view
    deletes."""
    body = bytes(b for b in rnd.randbytes(rnd.choice([3, 40, 200, 505])) if b not in (7, 0x1B))
    return b"\x1b]" + body + (b"\x07" if rnd.random() < 0.7 else b"\x1b\\")


def _printable(b: bytes) -> bool:
    return len(b) == 1 and 0x20 <= b[0] < 0x7F


# Encodings of one byte (a layer applies one to some bytes of what the layer under it made: two
# layers are a view of a view), and insertions after one.
LAYERS = {
    "case": lambda b, r: b.swapcase(),
    "percent": lambda b, r: b"%%%02X" % b[0],
    "percent lower": lambda b, r: b"%%%02x" % b[0],
    "json": lambda b, r: b"\\u%04x" % b[0] if _printable(b) else b,
    "hex escape": lambda b, r: b"\\x%02x" % b[0] if _printable(b) else b,
    "octal": lambda b, r: b"\\%o" % b[0] if _printable(b) else b,
    "css": lambda b, r: b"\\%x " % b[0] if _printable(b) else b,
    "qp": lambda b, r: b"=%02X" % b[0],
    "html": lambda b, r: b"&#%d;" % b[0] if _printable(b) else b,
    "html hex": lambda b, r: b"&#x%x" % b[0] if _printable(b) else b,
    "utf-7": lambda b, r: b"+" + base64.b64encode(b.decode("latin-1").encode("utf-16-be")).rstrip(b"=") + b"-",
    "quoted pair": lambda b, r: b"\\" + b,
    "nuls": lambda b, r: b + b"\x00" * r.randint(1, 3),
    "esc shifts": lambda b, r: b + r.choice([b"\x1b(B", b"\x1b[0m", b"\x1b$B", b"~{", b"\x1b[1;32m"]),
    "osc": lambda b, r: b + _osc(r),
    "qp soft break": lambda b, r: b + b"=\r\n",
}


def _layered(plain: bytes, rnd: random.Random, layers: list[str]) -> bytes:
    out = plain
    for name in layers:
        share = rnd.choice([0.2, 0.5, 1.0])
        out = b"".join(
            LAYERS[name](out[i : i + 1], rnd) if rnd.random() < share else out[i : i + 1] for i in range(len(out))
        )
    return out


def _b64_word(raw: bytes, rnd: random.Random, opener: bytes = b"=?") -> bytes:
    text = base64.b64encode(raw)
    cut = rnd.randint(0, len(text))
    junk = _walls(rnd) if rnd.random() < 0.7 else b""  # (a2b_base64 skips bytes outside the alphabet)
    return opener + b"utf-8?" + rnd.choice([b"b", b"B"]) + b"?" + text[:cut] + junk + text[cut:] + b"?="


# Whole forms: what no layer of single bytes writes.
FORMS = {
    "utf-16": lambda v, r: v.decode().encode("utf-16-le"),
    "utf-16 be": lambda v, r: v.decode().encode("utf-16-be"),
    "ebcdic": lambda v, r: v.decode().encode("cp500"),
    "ebcdic, mixed case": lambda v, r: v.decode().swapcase().encode("cp500"),
    "ebcdic, another code page": lambda v, r: v.decode().encode(
        r.choice(["cp037", "cp273", "cp1026", "cp875"]), "replace"
    ),
    "encoded-word b": lambda v, r: _b64_word(v, r),
    "encoded-word b, produced opener": lambda v, r: _b64_word(v, r, r.choice([b"%3D?", b"=3D?", b"=%3F", b"&#61;?"])),
    "encoded-word q": lambda v, r: b"=?utf-8?q?" + _layered(v, r, ["qp"]) + b"?=",
    "encoded-word q, walls": lambda v, r: r.choice([b"=?", b"%3D?"]) + _walls(r) + b"?q?" + _walls(r) + v + b"?=",
    "encoded-words split": lambda v, r: (
        b"=?x?q?" + v[:4] + b"?=" + r.choice([b" ", b"\r\n "]) + b"=?x?q?" + v[4:] + b"?="
    ),
    "produced osc": lambda v, r: v[:3] + r.choice([b"%1B]", b"=1B]", b"\x1b%5D"]) + _walls(r, 30) + b"\x07" + v[3:],
    "wrapped base64": lambda v, r: (
        base64.b64encode(b"xx" + v + b"yy")[:18] + b"\n  " + base64.b64encode(b"xx" + v + b"yy")[18:]
    ),
    "mime base64": lambda v, r: (
        b"Content-Transfer-Encoding: base64\r\n\r\n" + b"\x80".join(base64.b64encode(b"ab" + v).partition(b"Z")[::2])
    ),
    "continuations": lambda v, r: b'name*0="' + v[:5] + b'"; name*1="' + v[5:] + b'"',
    "jwt": lambda v, r: b"a.eyJ" + base64.urlsafe_b64encode(b'{"k":"' + v + b'"}')[3:].rstrip(b"=") + b".b",
    "utf-7 at the end": lambda v, r: v[:-2] + b"+" + base64.b64encode(v[-2:].decode().encode("utf-16-be")).rstrip(b"="),
}


def _form(rnd: random.Random, draw_layers: list[str], whole: str | None) -> bytes:
    """A value (or a shorter pattern: a form of one) in a whole form, then under up to two layers."""
    plain = rnd.choice([v.encode() for v in VALUES] + PATTERNS[:6])
    if whole is not None:
        plain = FORMS[whole](plain, rnd)
    return _layered(plain, rnd, draw_layers)


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    """Random binary with printable runs and values in any form, at any place: inside a run,
    across walls (a wall inside a form), cut by the end (a hold-back's question)."""
    seed = draw(st.integers(0, 2**32))
    rnd = random.Random(seed)
    size = draw(st.sampled_from([2100, 3000, 5000, 9000]))
    kind = draw(st.sampled_from(["uniform", "nuls", "marks", "sparse text"]))
    layers = draw(st.lists(st.sampled_from(sorted(LAYERS)), max_size=2))
    whole = draw(st.none() | st.sampled_from(sorted(FORMS)))
    forms = draw(st.integers(0, 4))
    parts: list[bytes] = []
    while sum(map(len, parts)) < size:
        roll = rnd.random()
        if roll < 0.5:
            n = rnd.randint(1, 300)
            if kind == "uniform":
                parts.append(rnd.randbytes(n))
            elif kind == "nuls":
                parts.append(bytes(b if rnd.random() < 0.5 else 0 for b in rnd.randbytes(n)))
            elif kind == "marks":
                pool = b'\\%=&?~\x1b\x00\n\r+]u;*"=?bqBQ.eyJ\x07\x01' + bytes(range(0x80, 0x90))
                parts.append(bytes(rnd.choice(pool) if rnd.random() < 0.4 else b for b in rnd.randbytes(n)))
            else:
                parts.append(rnd.randbytes(n).translate(bytes(range(256))[:0x80] * 2) + b"\xff")
        elif roll < 0.6:
            parts.append(bytes(rnd.randint(0x20, 0x7E) for _ in range(rnd.randint(1, 60))))
        elif roll < 0.8:
            parts.append(_walls(rnd))
        elif forms:
            forms -= 1
            form = _form(rnd, layers, whole)
            if rnd.random() < 0.3:  # a wall inside it
                at = rnd.randint(0, len(form))
                form = form[:at] + _walls(rnd) + form[at:]
            parts.append(form)
    body = b"".join(parts)
    if draw(st.booleans()):  # a form cut by the end, after a wall
        form = _form(rnd, layers, whole)
        body += _walls(rnd) + form[: rnd.randint(1, len(form))]
    return body + (b"\xfe" if body.isascii() else b"")


@st.composite
def tight(draw: st.DrawFn) -> bytes:
    """One form between walls (or the end) in binary: the runs' lengths and ends at their limits."""
    rnd = random.Random(draw(st.integers(0, 2**32)))
    layers = draw(st.lists(st.sampled_from(sorted(LAYERS)), max_size=2))
    whole = draw(st.none() | st.sampled_from(sorted(FORMS)))
    form = _form(rnd, layers, whole)
    if draw(st.booleans()):
        form = form[: rnd.randint(1, len(form))]
    head = rnd.randbytes(2100) if draw(st.booleans()) else _FILL
    return head + _walls(rnd) + form + (_walls(rnd) if draw(st.booleans()) else b"")


def _found(views_: list[bytes]) -> set[str]:
    return {h.pattern.secret for v in views_ for h in FINDER.hits(v)}


def _check(body: bytes, ebcdic: bool = True) -> None:
    new = _binary_views(body, FINDER, ebcdic)
    if new is None:
        return
    old = views(body, ebcdic)
    assert _found(old) <= _found(new)
    if _view_ends_in_prefix(FINDER, body, old, ebcdic):
        assert _view_ends_in_prefix(FINDER, body, new, ebcdic)
    if any(_cut(v) or FINDER.holdback(v, PART_HOLD) for v in (body, *old)):  # (_ends_open, views() of the whole)
        assert _ends_open(FINDER, body, ebcdic)


def _cut(view: bytes) -> bool:
    partial = scrub._PARTIAL_ESCAPE.search(view[-scrub._PARTIAL_MAX :])
    return partial is not None and bool(partial.group(0))


@given(bodies(), st.booleans())
@settings(max_examples=400, deadline=None)
@example(b"\x80" * 3000 + b"sk-Ab3%1B]\x80\x81\x07dEf9hIj2kLm\x80", True)  # a produced OSC across walls
@example(b"\x80" * 3000 + b"sk-Ab\x1b]\x80\x81\x07" + b"\x80" * 40 + b"\x1b\\3dEf9hIj2kLm", True)
@example(_FILL + b"\x80q7W/E+r5=Ty\x81" + _FILL, True)  # the shortest pattern, in a run as long
@example(_FILL + b"\x80sK-aB", True)  # a value's start in mixed case, in a short last run (a hold)
@example(_FILL + b"%3D?utf-8?b?" + _B64[:7] + b"\x80\x81\x82\x83" + _B64[7:-1] + b"?= \x80" + _FILL, True)
@example(
    _FILL + b"Content-Transfer-Encoding:%20base64\r\n\r\n" + _B64[:7] + b"\x80%7A" + _B64[8:] + b"\x80" + _FILL, True
)
@example(_RANDOM + b"\x80name*0=%22Zq;9=x%22%3B name*1=%22k-T%22\x80" + _RANDOM, True)  # (a joint, then an end)
def test_every_value_views_find(body: bytes, ebcdic: bool) -> None:
    _check(body, ebcdic)


@given(tight(), st.booleans())
@settings(max_examples=600, deadline=None)
@example(  # a shift view of a view: ISO-2022's double-byte text (dropped) across walls
    bytes(range(0x80, 0x100)) * 23
    + b"\xc5\xd29h\x1b[1;32mi\x1b[1;32m%1B\x1b["
    + b"0m]\x1b$B\x85\xc8\x94\x80\x0e\xad\x1b(B\xbf\x1b[1;32m\xc4"
    + b"\x1b[1;32m\xee\x1b(B\xdd\x04\x1b[1;32m\xc4\x1b(B"
    + b"\x18\x93\x7f\x1b[1;32m\xe8~{\xfd\x1b[0m\xe3\xd8\xe5\x1b(B"
    + b"\xbe\xe4\x1b$B\xaa\x9f\x11\xff\x1b(B\xb4\x1b$B\x14\xcb\x1b[1;32"
    + b"m\xaf\x1b[1;32m\x07j\x1b(B2\x1b(Bk\x1b(Bl~"
    + b"{",
    False,
)
@example(  # a character clients read differently (U+014A) in text decoded from JSON, after a cut value's start
    bytes(range(0x80, 0x100)) * 23 + b"\xed\x11\xff\xf8\xbb\xc5\\33 \\64 \\65 \\66 \\39 \\68 \\69 \xc5\x8a",
    False,
)
def test_every_value_views_find_at_the_limits(body: bytes, ebcdic: bool) -> None:
    _check(body, ebcdic)


def test_the_path_is_taken() -> None:
    """The generated bodies go the new way (not all back to views())."""
    rnd = random.Random(5)
    taken = sum(_binary_views(rnd.randbytes(4096), FINDER) is not None for _ in range(20))
    assert taken == 20
    assert _binary_views(b"text " * 1000 + b"\xff", FINDER) is None  # (text: views() of the whole)
    odd = Finder.for_values([("s", "sk-\u00e9t\u00e9-valeur-12", "ph-0000000000000")])
    assert _binary_views(rnd.randbytes(4096), odd) is None  # (a pattern that is not printable ASCII)


def _old_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scrub, "_binary_views", lambda *_a, **_k: None)


def _run(make, feed_all) -> tuple[bytes, bool, list[str]]:
    hits: list[str] = []
    out: list[bytes] = []
    try:
        feed_all(make(hits), out)
    except ScrubRefused:
        return b"".join(out), True, hits
    return b"".join(out), False, hits


def _streams(body: bytes, cuts: list[int]):
    pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]

    def streamed(cls):
        def feed_all(s, out):
            for p in pieces:
                out.append(s.feed(p))
            out.append(s.finish())

        return lambda hits: cls(FINDER, hits.append), feed_all

    def segmented(hits):
        return SegmentedScrubber(FINDER, hits.append)

    def feed_segments(s, out):
        for n, p in enumerate(pieces):
            out += [d for _, d in s.feed(p, n // 2)]
            if n % 2:
                out += [d for _, d in s.end_segment()]
        out += [d for _, d in s.finish()]

    def whole(hits):
        return hits

    def feed_whole(hits, out):
        out.append(scrub_whole(body, FINDER, hits.append))

    return [streamed(BodyScrubber), streamed(SniffingScrubber), (segmented, feed_segments), (whole, feed_whole)]


@pytest.mark.plain_python  # (against the old path: _binary_views replaced)
@given(bodies(), st.lists(st.integers(1, 20000), max_size=6))
@settings(max_examples=150, deadline=None)
def test_scrubbers_refuse_and_replace_as_before(body: bytes, cuts: list[int]) -> None:
    """Each scrubber, whole and streamed in random pieces, refuses and replaces what it did with
    views() of the whole bytes (or refuses where it did not), and never sends more."""
    cuts = sorted({c % len(body) for c in cuts} - {0})
    for make, feed_all in _streams(body, cuts):
        with pytest.MonkeyPatch.context() as mp:
            _old_path(mp)
            old = _run(make, feed_all)
        new = _run(make, feed_all)
        if old[1]:
            assert new[1], "the old path refused, the new one did not"
        if not new[1]:
            assert not old[1] and new == old
        assert old[0].startswith(new[0])  # (never more sent than before)


_WORDY = st.binary(max_size=80) | st.lists(
    st.sampled_from(
        [b"=", b"?", b"=?", b"?=", b" ", b"\t", b"\r\n", b"\x01", b"b", b"Q", b"utf-8", b"c2st", b"=41", b"\x80"]
    ),
    max_size=40,
).map(b"".join)


@given(_WORDY)
@settings(max_examples=1500, deadline=None)
def test_decode_words_is_the_expression_s_sub(data: bytes) -> None:
    assert scrub._decode_words(data) == scrub._ENCODED_WORD.sub(scrub._encoded_word, data)
    padded = b"\x80" * 64 * 40 + data  # (few anchors for the length: the loop, not re's sub)
    assert scrub._decode_words(padded) == scrub._ENCODED_WORD.sub(scrub._encoded_word, padded)


_SHIFTY = st.binary(max_size=80) | st.lists(
    st.sampled_from(
        [
            b"\x1b",
            b"]",
            b"[",
            b"(",
            b"B",
            b"$",
            b"1;32m",
            b"\x07",
            b"\\",
            b"~",
            b"{",
            b"}",
            b"\r\n",
            b"\n",
            b"a",
            b"\x0e",
            b"\x0f",
        ]
    ),
    max_size=40,
).map(b"".join)


@given(_SHIFTY)
@settings(max_examples=1500, deadline=None)
@example(b"a\x1b]~{x~{\x07~}b\x1b[0m~\r\n")  # (HZ shifts inside an OSC sequence: not matched apart)
@example(b"ke\x0e\x1b\x0f(By\x0e\x0f!")  # (a shift SO and SI were inside: dropped once they are)
def test_unshift_is_the_expression_s_sub(data: bytes) -> None:
    """The expression's sub; then SO and SI dropped (ISO-2022-KR's shifts) and the sub again."""

    def reference(d: bytes) -> bytes:
        out = scrub._SHIFTS.sub(b"", d)
        if b"\x0e" in out or b"\x0f" in out:
            out = scrub._SHIFTS.sub(b"", out.replace(b"\x0e", b"").replace(b"\x0f", b""))
        return out

    assert scrub._unshift(data) == reference(data)
    padded = b"\x80" * 64 * 40 + data
    assert scrub._unshift(padded) == reference(padded)
