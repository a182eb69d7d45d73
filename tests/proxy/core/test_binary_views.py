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
import urllib.parse

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
from proxy.core.values import Finder

VALUES = ("sk-Ab3dEf9hIj2kLm", "Q7w/e+R5=tY", "api_KEY.x-42")  # (printable; "Q7w/e+R5=tY" is 11 bytes)
FINDER = Finder.for_values((f"s{i}", v, f"PH{i}-{'x' * 8}") for i, v in enumerate(VALUES))


# -- each form or encoding a client could decode a value from (one character at a time, mostly) --
def _each(value: str, rnd: random.Random, enc, share: float = 0.5) -> bytes:
    return b"".join(enc(c) if rnd.random() < share else c.encode() for c in value)


def _walls(rnd: random.Random, n: int | None = None) -> bytes:
    """Bytes no decoding reads (mostly): above 0x7F and control bytes."""
    pool = bytes(range(0x80, 0x100)) + bytes(range(0x0E, 0x1B)) + b"\x02\x03\x04\x05\x06\x08\x7f"
    return bytes(rnd.choice(pool) for _ in range(n if n is not None else rnd.randint(1, 6)))


def _osc(rnd: random.Random) -> bytes:
    """An OSC sequence with binary in it (no BEL, no ESC), which the shift view deletes."""
    body = bytes(b for b in rnd.randbytes(rnd.randint(0, 40)) if b not in (7, 0x1B))
    return b"\x1b]" + body + (b"\x07" if rnd.random() < 0.7 else b"\x1b\\")


def _b64_word(raw: bytes, rnd: random.Random) -> bytes:
    text = base64.b64encode(raw)
    cut = rnd.randint(0, len(text))
    junk = _walls(rnd) if rnd.random() < 0.5 else b""  # (a2b_base64 skips bytes outside the alphabet)
    return b"=?utf-8?" + rnd.choice(b"bB").to_bytes() + b"?" + text[:cut] + junk + text[cut:] + b"?="


FORMS = {
    "plain": lambda v, r: v.encode(),
    "case": lambda v, r: "".join(c.swapcase() if r.random() < 0.5 else c for c in v).encode(),
    "percent": lambda v, r: _each(v, r, lambda c: b"%%%02X" % ord(c)),
    "percent2": lambda v, r: _each(v, r, lambda c: b"%%25%02x" % ord(c)),
    "json": lambda v, r: _each(v, r, lambda c: b"\\u%04x" % ord(c)),
    "hex escape": lambda v, r: _each(v, r, lambda c: b"\\x%02x" % ord(c)),
    "octal": lambda v, r: _each(v, r, lambda c: b"\\%o" % ord(c)),
    "css": lambda v, r: _each(v, r, lambda c: b"\\%x " % ord(c)),
    "qp": lambda v, r: _each(v, r, lambda c: b"=%02X" % ord(c)),
    "qp soft breaks": lambda v, r: _each(v, r, lambda c: c.encode() + b"=\r\n", 0.3),
    "html": lambda v, r: _each(v, r, lambda c: b"&#%d;" % ord(c)),
    "html hex": lambda v, r: _each(v, r, lambda c: b"&#x%x" % ord(c)),
    "utf-16": lambda v, r: v.encode("utf-16-le"),
    "utf-16 be": lambda v, r: v.encode("utf-16-be"),
    "nuls": lambda v, r: _each(v, r, lambda c: c.encode() + b"\x00" * r.randint(1, 3)),
    "esc shifts": lambda v, r: _each(v, r, lambda c: c.encode() + r.choice([b"\x1b(B", b"\x1b[0m", b"\x1b$B", b"~{"])),
    "osc across binary": lambda v, r: _each(v, r, lambda c: c.encode() + _osc(r), 0.3),
    "utf-7": lambda v, r: _each(v, r, lambda c: b"+" + base64.b64encode(c.encode("utf-16-be")).rstrip(b"=") + b"-"),
    "ebcdic": lambda v, r: v.encode("cp500"),
    "json in percent": lambda v, r: _each(v, r, lambda c: urllib.parse.quote(b"\\u%04x" % ord(c)).encode()),
    "percent in json": lambda v, r: _each(v, r, lambda c: b"\\u0025%02x" % ord(c)),
    "quoted pairs": lambda v, r: _each(v, r, lambda c: b"\\" + c.encode()),
    "escape under pairs": lambda v, r: _each(v, r, lambda c: b"\\u%04x\\" % ord(c) if c.isalpha() else c.encode()),
    "encoded-word b": lambda v, r: _b64_word(v.encode(), r),
    "encoded-word q": lambda v, r: b"=?utf-8?q?" + _each(v, r, lambda c: b"=%02X" % ord(c)) + b"?=",
    "encoded-words split": lambda v, r: (
        b"=?x?q?" + v[:4].encode() + b"?=" + r.choice([b" ", b"\r\n "]) + b"=?x?q?" + v[4:].encode() + b"?="
    ),
    "produced word opener": lambda v, r: b"%3D?x?q?" + _walls(r) + v.encode() + b"?=",
    "produced osc": lambda v, r: v[:3].encode() + b"%1B]" + _walls(r) + b"\x07" + v[3:].encode(),
    "qp produced esc": lambda v, r: v[:3].encode() + b"=1B]" + _walls(r) + b"%07" + v[3:].encode(),
    "wrapped base64": lambda v, r: (
        base64.b64encode(b"xx" + v.encode() + b"yy")[:18] + b"\n  " + base64.b64encode(b"xx" + v.encode() + b"yy")[18:]
    ),
    "mime base64": lambda v, r: (
        b"Content-Transfer-Encoding: base64\r\n\r\n"
        + b"\x80".join(base64.b64encode(b"ab" + v.encode()).partition(b"Z")[::2])
    ),
    "continuations": lambda v, r: b'name*0="' + v[:5].encode() + b'"; name*1="' + v[5:].encode() + b'"',
    "jwt": lambda v, r: b"a.eyJ" + base64.urlsafe_b64encode(b'{"k":"' + v.encode() + b'"}')[3:].rstrip(b"=") + b".b",
    "utf-7 at the end": lambda v, r: v[:-2].encode() + b"+" + base64.b64encode(v[-2:].encode("utf-16-be")).rstrip(b"="),
}


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    """Random binary with printable runs and values in any form, at any place: inside a run,
    across walls (a wall inside a form), cut by the end (a hold-back's question)."""
    seed = draw(st.integers(0, 2**32))
    rnd = random.Random(seed)
    size = draw(st.sampled_from([2100, 3000, 5000, 9000]))
    kind = draw(st.sampled_from(["uniform", "nuls", "marks", "sparse text"]))
    forms = draw(st.lists(st.sampled_from(sorted(FORMS)), min_size=0, max_size=4))
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
        elif roll < 0.7:
            parts.append(bytes(rnd.randint(0x20, 0x7E) for _ in range(rnd.randint(1, 60))))
        elif forms:
            form = FORMS[rnd.choice(forms)](rnd.choice(VALUES), rnd)
            if rnd.random() < 0.3:  # a wall inside it
                at = rnd.randint(0, len(form))
                form = form[:at] + _walls(rnd) + form[at:]
            parts.append(form)
    body = b"".join(parts)
    if forms and draw(st.booleans()):  # a form cut by the end
        form = FORMS[rnd.choice(forms)](rnd.choice(VALUES), rnd)
        body += form[: rnd.randint(1, len(form))]
    return body + (b"\xfe" if body.isascii() else b"")


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
    if any(_cut(v) or FINDER.holdback(v) for v in (body, *old)):  # (_ends_open, with views() of the whole)
        assert _ends_open(FINDER, body, ebcdic)


def _cut(view: bytes) -> bool:
    partial = scrub._PARTIAL_ESCAPE.search(view[-scrub._PARTIAL_MAX :])
    return partial is not None and bool(partial.group(0))


@given(bodies(), st.booleans())
@settings(max_examples=400, deadline=None)
@example(b"\x80" * 3000 + b"sk-Ab3%1B]\x80\x81\x07dEf9hIj2kLm\x80", True)  # a produced OSC across walls
@example(b"\x80" * 3000 + b"%3D?x?b?\x80c2stQWIzZEVm\x80OWhJajJrTG0=?=\x80", True)  # a produced opener, junk in it
@example(b"\x80" * 3000 + b"sk-Ab\x1b]\x80\x81\x07" + b"\x80" * 40 + b"\x1b\\3dEf9hIj2kLm", True)
def test_every_value_views_find(body: bytes, ebcdic: bool) -> None:
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
