"""Runs of a value: no RUN characters in a row of a key (past its public prefix) reach the agent.

Every other scrubbing test asks about a whole value, in some form. An upstream can also send part
of one: an error that quotes the first 30 characters of the key it was given, or a value cut in two
(one half in one field, response or event, the other in another) that the agent puts together. The
finder of a bound host is built with :func:`proxy.core.values.runs_of` as well as the forms, so any
run of :func:`run_length` characters of the value's secret part, in any case, is replaced or
refused: of a value cut in two anywhere, one half is always that long. The oracle here is the
invariant itself (the longest run of the value's characters in what goes out), not the pieces the
finder happens to search for.
"""

from __future__ import annotations

import json
import random
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.core.scrub import BodyScrubber, EventScrubber, ScrubRefused, scrub_field
from proxy.core.values import RUN, RUN_MIN, Finder, public_prefix, run_length, runs_of, scan

ALPHABET = string.ascii_letters + string.digits + "-_"
PREFIXES = ["", "sk-", "sk-proj-", "sk-ant-api03-", "ghp_", "github_pat_", "xoxb-", "sk_live_", "AKIA"]
PH = "sk-sandgate-placeholder-0001"


def key(prefix: str, n: int, seed: int) -> str:
    return prefix + "".join(random.Random(seed).choices(ALPHABET, k=n))


def finder_for(value: str) -> Finder:
    return Finder.for_values([("k", value, PH)], runs=True)


def longest_run(out: bytes, value: str) -> int:
    """The longest run of the secret part of ``value`` (any case) in ``out``: what the agent got."""
    secret = value[public_prefix(value) :].lower().encode()
    low = out.lower()
    best = 0
    for i in range(len(secret)):
        lo, hi = best, len(secret) - i  # (is there a run longer than best starting at i?)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if secret[i : i + mid] in low:
                lo = mid
            else:
                hi = mid - 1
        best = max(best, lo)
    return best


def let_out(body: bytes, finder: Finder) -> bytes:
    """What a whole body scrubbed toward the agent leaves it: nothing when refused."""
    try:
        return scrub_field(body, finder, lambda _: None)
    except ScrubRefused:
        return b""


@pytest.mark.parametrize(
    ("value", "prefix", "k"),
    [
        ("sk-proj-" + "a" * 156, 8, RUN),
        ("sk-ant-api03-" + "a" * 95, 13, RUN),
        ("sk-" + "a" * 40, 3, RUN),
        ("ghp_" + "a" * 36, 4, RUN),
        ("github_pat_" + "a" * 82, 11, RUN),
        ("A" * 40, 0, RUN),  # (an AWS secret key: no prefix)
        ("a" * 24, 0, 12),  # half of a short value
        ("a" * 21, 0, 11),
        ("a" * 20, 0, RUN_MIN),
        ("a" * 12, 0, RUN_MIN),
        ("a" * 10, 0, 0),  # no run apart from the whole value
        ("hunter2", 0, 0),
        ("Xk_9aZ", 0, 0),
    ],
)
def test_run_length_and_public_prefix(value: str, prefix: int, k: int) -> None:
    assert public_prefix(value) == prefix
    assert run_length(value) == k


@pytest.mark.parametrize("n", range(1, 220))
def test_every_window_of_the_run_length_holds_a_piece(n: int) -> None:
    """The covering argument of runs_of, checked for every length (not only the ones the proof
    is easy for): each window of run_length characters of the secret part holds a piece."""
    value = key("sk-", n, n)
    k = run_length(value)
    pieces = runs_of(value)
    if k == 0:
        assert pieces == []
        return
    secret = value[public_prefix(value) :].lower().encode()
    for i in range(len(secret) - k + 1):
        assert any(p in secret[i : i + k] for p in pieces), (n, i)
    assert len(pieces) <= len(secret) // (2 if k < RUN else 3) + 2  # (the point of pieces: not every run)


@settings(max_examples=300, deadline=None)
@given(
    prefix=st.sampled_from(PREFIXES),
    n=st.integers(min_value=12, max_value=180),
    seed=st.integers(min_value=0, max_value=10**6),
    where=st.floats(min_value=0, max_value=1),
    extra=st.integers(min_value=0, max_value=40),
    case=st.sampled_from(["as-is", "lower", "upper", "swapped"]),
    around=st.sampled_from(["raw", "json", "error", "url"]),
)
def test_no_run_of_the_run_length_leaves_in_any_case(
    prefix: str, n: int, seed: int, where: float, extra: int, case: str, around: str
) -> None:
    value = key(prefix, n, seed)
    k = run_length(value)
    if k == 0:
        return
    start = public_prefix(value) + int(where * (n - k))
    run = value[start : start + k + min(extra, n - k - int(where * (n - k)))]
    run = {"as-is": run, "lower": run.lower(), "upper": run.upper(), "swapped": run.swapcase()}[case]
    body = {
        "raw": run.encode(),
        "json": json.dumps({"error": {"message": f"Incorrect API key provided: {run}..."}}).encode(),
        "error": f"401 Unauthorized\r\nkey={value[:start]}{run}\r\n".encode(),
        "url": f"https://example.test/?token={run}&x=1".encode(),
    }[around]
    assert longest_run(let_out(body, finder_for(value)), value) < k


@pytest.mark.parametrize(
    "value", [key("sk-", 40, 1), key("sk-proj-", 156, 2), key("sk-ant-api03-", 95, 3), key("", 24, 4)]
)
def test_a_value_cut_in_two_anywhere_never_reaches_the_agent_whole(value: str) -> None:
    """Each half in a response of its own (two requests, two fields a client joins, two events
    under paths the stitcher does not join): for every cut, at least one half does not go out."""
    f = finder_for(value)
    for cut in range(1, len(value)):
        first, second = value[:cut].encode(), value[cut:].encode()
        one = let_out(b'{"a": "' + first + b'"}', f)
        two = let_out(b'{"b": "' + second + b'"}', f)
        assert not (first in one and second in two), cut


def test_short_runs_and_the_public_prefix_go_out_unchanged() -> None:
    """Runs of up to half the run length are never taken (a shorter piece would find common words
    in a key); between that and the run length, some are (where a piece falls whole in them)."""
    value = key("sk-ant-api03-", 95, 5)
    f = finder_for(value)
    short = run_length(value) // 2
    for body in (
        b"Keys look like sk-ant-api03-... and never go in a URL.",
        value[: 13 + short].encode(),  # the prefix and a few characters after it
        value[40 : 40 + short].encode(),
        value[-short:].encode(),
    ):
        assert let_out(body, f) == body


def test_other_keys_of_the_same_kind_are_not_taken_for_it() -> None:
    """No false positives on keys that share the prefix (a page listing a user's other keys)."""
    for seed in range(20):
        value = key("sk-proj-", 156, seed)
        others = b" ".join(key("sk-proj-", 156, 10_000 + seed * 100 + i).encode() for i in range(50))
        assert let_out(others, finder_for(value)) == others


@pytest.mark.parametrize("case", ["as-is", "lower", "upper"])
def test_a_run_is_refused_in_any_case_the_whole_value_replaced(case: str) -> None:
    value = key("sk-", 40, 6)
    f = finder_for(value)
    run = value[5:30]
    run = {"as-is": run, "lower": run.lower(), "upper": run.upper()}[case]
    with pytest.raises(ScrubRefused, match="a run of a real value"):
        scrub_field(b"quoted: " + run.encode() + b".", f, lambda _: None)
    hits: list[str] = []
    whole = {"as-is": value, "lower": value.lower(), "upper": value.upper()}[case]
    assert (
        scrub_field(b"quoted: " + whole.encode() + b".", f, hits.append)
        == b"quoted: " + ({"as-is": PH, "lower": PH.lower(), "upper": PH.upper()}[case]).encode() + b"."
    )
    assert hits == ["k"]


@settings(max_examples=200, deadline=None)
@given(
    seed=st.integers(min_value=0, max_value=10**6),
    cuts=st.lists(st.integers(min_value=1, max_value=200), min_size=1, max_size=8),
    case=st.sampled_from(["lower", "as-is"]),
)
def test_a_run_streamed_in_any_pieces_never_leaves_whole(seed: int, cuts: list[int], case: str) -> None:
    value = key("sk-proj-", 156, seed)
    k = run_length(value)
    run = value[20 : 20 + k + 5]
    run = run.lower() if case == "lower" else run
    body = b'{"error": {"message": "Incorrect API key provided: ' + run.encode() + b'. See the docs."}}' * 3
    s = BodyScrubber(finder_for(value), lambda _: None)
    out = b""
    try:
        pos = 0
        for c in sorted(set(cuts)):
            out += s.feed(body[pos:c])
            pos = max(pos, c)
        out += s.feed(body[pos:]) + s.finish()
    except ScrubRefused:
        pass
    assert longest_run(out, value) < k


def _delta(text: str) -> bytes:
    chunk = {"id": "c1", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": text}}]}
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


@pytest.mark.parametrize("size", [1, 3, 7, 20])
def test_a_run_in_token_deltas_never_leaves_whole(size: int) -> None:
    """A model (or an upstream) streaming a truncated key token by token: the stitched text is one
    stream, so the run is found however the deltas cut it."""
    value = key("sk-", 40, 7)
    k = run_length(value)
    text = "Your key begins " + value[3 : 3 + k + 2].lower() + " and that is all I know."
    s = EventScrubber(finder_for(value), lambda _: None)
    out = b""
    try:
        for i in range(0, len(text), size):
            out += s.feed(_delta(text[i : i + size]))
        out += s.finish()
    except ScrubRefused:
        pass
    joined = "".join(
        json.loads(line[6:])["choices"][0]["delta"]["content"]
        for line in out.split(b"\n")
        if line.startswith(b"data: ")
    )
    assert longest_run(joined.encode(), value) < k


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(min_value=0, max_value=10**6),
    size=st.integers(min_value=1, max_value=5),
    start=st.integers(min_value=0, max_value=20),
    decoys=st.sampled_from([70, 130]),
)
def test_a_run_in_short_deltas_with_decoy_paths_between_never_leaves(
    seed: int, size: int, start: int, decoys: int
) -> None:
    """Red team 14: more than MAX_PATHS new paths after each short delta forget the delta's path
    every time; the path begins again with its last bytes, so the run is still seen."""
    value = key("sk-proj-", 60, seed)
    k = run_length(value)
    text = value[8 + start : 8 + start + k + 4]
    s = EventScrubber(finder_for(value), lambda _: None)
    out = b""
    try:
        for i in range(0, len(text), size):
            docs = [
                {"choices": [{"index": 0, "delta": {"content": text[i : i + size]}}]},
                {"choices": [{"index": 0, "delta": {}}], "meta": {f"m{i}_{j}": "ok" for j in range(decoys)}},
            ]
            out += s.feed(b"".join(b"data: " + json.dumps(d).encode() + b"\n\n" for d in docs))
        out += s.finish()
    except ScrubRefused:
        pass
    joined = "".join(
        json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
        for line in out.split(b"\n")
        if line.startswith(b"data: {")
    )
    assert longest_run(joined.encode(), value) < k


def test_a_large_bound_finder_is_one_automaton_that_finds_what_scan_finds() -> None:
    """A bound host's finder of 256 values and their runs (thousands of patterns) is one
    leftmost-longest automaton (not shards reporting every overlap: ~7x slower on 64 KiB), and
    finds exactly what the reference search finds."""
    rnd = random.Random(256)
    vals = [(f"s{i}", key("sk-proj-", 60, 1000 + i), f"ph-{i}") for i in range(256)]
    f = Finder.for_values(vals, runs=True)
    assert len(f.patterns) > 4096 and len(f._shards) == 1
    for _ in range(200):
        v = rnd.choice(vals)[1]
        s = rnd.randint(0, 50)
        parts = [v[s : s + rnd.randint(3, 20)].lower(), v, v.upper(), rnd.choice(vals)[1][5:30], "plain text"]
        data = " ".join(rnd.sample(parts, k=rnd.randint(1, len(parts)))).encode()
        assert [(h.start, h.end, h.pattern.find) for h in f.hits(data)] == [
            (h.start, h.end, h.pattern.find) for h in scan(f.patterns, data)
        ]
