"""Differential: the compiled scrubbers and finder decide exactly as their Python source does.

Compiled by mypyc (``proxy.native``), the same source runs under rules Python does not have (an
attribute or a variable holds its declared type or raises; a few operations have their own C
implementations). Everything the suite asserts runs against the compiled modules in CI; this holds
them to their own Python on inputs the named tests do not name: the source of ``proxy.core.scrub``
is loaded a second time as Python (its imports, ``proxy.core.values`` and ``proxy.core.fold``, are
Python in both; ``proxy.core.finder`` is the compiled one in both), and each entry point is given
the same random bodies, fields and token streams. The outputs must be the same bytes, and a refusal
the same refusal of the same secret. The finder's source is loaded as Python too, and each of its
searches given the same patterns and inputs.

Skipped where the per-request modules run as Python (there would be one module, twice).
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import proxy.core
from proxy import native
from proxy.core import finder as finder_compiled
from proxy.core import scrub as compiled
from tests.proxy.core.test_binary_views import FINDER, VALUES, bodies

pytestmark = pytest.mark.skipif(native.mode() != "compiled", reason="the per-request modules run as Python here")


def _as_python(name: str) -> ModuleType:
    # (from the package's path: a compiled module's own __file__ is wrong when another module of
    # the compiled group imported it first, a mypyc quirk: proxy/proxy/core/scrub...so)
    source = Path(str(proxy.core.__file__)).with_name(f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"proxy.core._{name}_as_python", source)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # (dataclasses look their module up there)
    spec.loader.exec_module(module)
    return module


PYTHON = _as_python("scrub") if native.mode() == "compiled" else compiled
FINDER_PYTHON = _as_python("finder") if native.mode() == "compiled" else finder_compiled


def _outcome(run: Callable[[ModuleType, list[str]], object], module: ModuleType) -> tuple[object, ...]:
    hits: list[str] = []
    try:
        out = run(module, hits)
    except Exception as e:  # (the two modules' ScrubRefused are two classes: compared by name and secret)
        return ("raised", type(e).__name__, getattr(e, "secret", None), hits)
    return ("returned", out, hits)


def _same(run: Callable[[ModuleType, list[str]], object]) -> None:
    assert PYTHON is not compiled and str(PYTHON.__file__).endswith(".py")
    outcome = _outcome(run, compiled)
    assert outcome == _outcome(run, PYTHON)
    assert outcome[0] == "returned" or outcome[1] == "ScrubRefused", outcome  # (any other error is a bug in both)


_PIECES = [*VALUES, *(v[:5] for v in VALUES), *(v[5:] for v in VALUES), "sk-", "%73", "\\u0073", "&#115;", "+AHM-",
           "Zm9v", "\x1b[1m", "\u00e9", "\u0363\u1dca", "\ud83d", " the ", "\n", "1.0", "\u017f", "\u212a"]  # fmt: skip
_TEXTS = st.lists(st.sampled_from(_PIECES), max_size=8).map("".join)
_BYTES = _TEXTS.map(lambda t: t.encode("utf-8", "surrogatepass"))  # (a lone half as CESU-8)


@given(bodies(), st.lists(st.integers(1, 20000), max_size=5))
@settings(max_examples=100, deadline=None)
def test_a_body_streamed_in_pieces(body: bytes, cuts: list[int]) -> None:
    edges = [0, *sorted({c % len(body) for c in cuts} - {0}), len(body)]

    def run(m: ModuleType, hits: list[str]) -> object:
        s = m.BodyScrubber(FINDER, hits.append)
        return b"".join(s.feed(body[a:b]) for a, b in itertools.pairwise(edges)) + s.finish()

    _same(run)


@given(st.lists(_BYTES, min_size=1, max_size=4))
@settings(max_examples=200, deadline=None)
def test_header_fields(fields: list[bytes]) -> None:
    def run(m: ModuleType, hits: list[str]) -> object:
        hit = m.first_hit(FINDER, fields)
        scrubbed = [m.scrub_field(f, FINDER, hits.append) for f in fields]
        return (None if hit is None else hit.pattern.secret, scrubbed)

    _same(run)


_DELTA = st.tuples(st.sampled_from(["content", "reasoning", "text"]), _TEXTS, st.sampled_from([0, 1, 1.0, True]))


@given(st.lists(st.lists(_DELTA, min_size=1, max_size=3), max_size=10), st.sampled_from(["sse", "lines"]),
       st.integers(1, 64))  # fmt: skip
@settings(max_examples=200, deadline=None)
def test_a_token_stream(events: list[list[tuple[str, str, object]]], kind: str, piece: int) -> None:
    docs = [{"choices": [{"index": i, "delta": {k: t}} for k, t, i in e]} for e in events]
    sep, prefix = (b"\n\n", b"data: ") if kind == "sse" else (b"\n", b"")
    body = b"".join(prefix + json.dumps(d).encode() + sep for d in docs)

    def run(m: ModuleType, hits: list[str]) -> object:
        s = m.EventScrubber(FINDER, hits.append, kind)
        return b"".join(s.feed(body[i : i + piece]) for i in range(0, len(body), piece)) + s.finish()

    _same(run)


@given(st.binary(max_size=400) | _BYTES)
@example(b"Jobs done. " + b"c" * 9000)  # (red team 51: checks of what precedes a byte, at byte 0)
@example(b"?a=1" + b"c" * 9000)
@settings(max_examples=200, deadline=None)
def test_views(data: bytes) -> None:
    _same(lambda m, _hits: (m.views(data), m.views(data, ebcdic=False), m.views(data, fields=True)))


_FINDS = st.sampled_from([b"sk-proj-Q7x", b"Q7xQ7x", b"proj", b"c2stcHJvai", b"ab", b"aba", b"bab", b"\x00\x01",
                          b"ZZZZZZZZ", b"0123", b"3456"])  # fmt: skip
_DATA = st.lists(_FINDS | st.binary(max_size=6), max_size=12).map(b"".join)


@given(
    finds=st.lists(_FINDS | st.binary(min_size=1, max_size=10), min_size=1, max_size=90, unique=True),
    data=_DATA,
    filler=st.sampled_from([b"", b"plain text " * 30, b"0123456789abcdef" * 320]),  # short, prefiltered, encoded
    part_from=st.integers(1, 8),
    kinds=st.lists(st.integers(0, 3), min_size=90, max_size=90),
)
@settings(max_examples=200, deadline=None)
def test_the_finder(finds: list[bytes], data: bytes, filler: bytes, part_from: int, kinds: list[int]) -> None:
    """Every search of a finder (its automaton, probes past 64 patterns, the find loop for large
    encoded input, the prefilter), and what a stream holds back, as its Python source answers."""
    text = filler + data + filler[: len(filler) // 2]

    def run(m: ModuleType) -> object:
        f = m.Finder(m.Pattern(f"s{i}", p, b"[x]", part=kinds[i] == 1, late=kinds[i] == 2, ebcdic=kinds[i] == 3)
                     for i, p in enumerate(finds))  # fmt: skip
        engines = []
        for loop in (False, True):
            f.loop_for_large = loop
            engines.append([(h.start, h.end, h.pattern.find) for h in f.hits(text)])
        hit = f.search(text)
        return (engines, f.nowhere(text), None if hit is None else hit.start, bool(f),
                f.holdback(data, part_from), f.rests(data, part_from))  # fmt: skip

    assert run(finder_compiled) == run(FINDER_PYTHON)
