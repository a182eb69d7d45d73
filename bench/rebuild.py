"""What serving new values costs: the finders a start, a rotation or a reload builds, pure, no network.

    .venv/bin/python bench/rebuild.py [--quick]

A policy's values are searched for in every request (the outbound finder: each value's forms and
the pieces of its runs) and scrubbed from the answers of their hosts (a bound finder per host).
The outbound finder is built in steps on the event loop, requests served between them
(``proxy.core.values.build_finder``); a rotation rebuilds it, remaking only the patterns of the
value that changed. A bound finder is built at once at the first answer from its host after that.
For policies of short keys and of long ones (a service account's JSON key, a PEM key: ~2,000
characters), one table:

- build, s: the outbound finder from nothing (the start), and after one value rotated;
- longest step, ms: the longest the event loop is held between two requests during either;
- shards: the automata the outbound finder searches with, each asked of every request;
- request head, us: the outbound finder's search of a 70-byte request head;
- bound finder, ms: the first answer from a host all the values are bound to waits this long
  after the rotation (built at once, of the forms the outbound build made).

No timing is asserted anywhere in the tests; ``--quick`` runs the two smallest policies.
"""

from __future__ import annotations

import argparse
import random
import string
import sys
import time
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from proxy.core.finder import Finder, Pattern
from proxy.core.values import build_finder, outbound_runs_of

SHAPES = [(5, 60), (50, 60), (256, 60), (10, 2000), (5, 6000), (240, 2000)]
HEAD = b"GET /v1/models HTTP/1.1\r\nHost: api.example.com\r\nAuthorization: Bearer ph-0001\r\n\r\n"


def _value(rnd: random.Random, i: int, length: int) -> str:
    return f"sk-real-{i:04d}-" + "".join(rnd.choices(string.ascii_letters + string.digits, k=length))


def _build(
    triples: list[tuple[str, str, str]], known: dict[tuple[str, str, str], list[Pattern]]
) -> tuple[float, float, Finder]:
    """(seconds in all, longest step in seconds, the finder) of build_finder's steps."""
    start = last = time.perf_counter()
    longest = 0.0
    finder = None
    for step in build_finder(triples, outbound_runs_of, prefilter=False, known=known):
        now = time.perf_counter()
        longest, last = max(longest, now - last), now
        finder = step
    assert isinstance(finder, Finder)
    return last - start, longest, finder


def row(count: int, length: int, rnd: random.Random) -> list[str]:
    triples = [(f"s{i}", _value(rnd, i, length), f"ph-{i:04d}") for i in range(count)]
    known: dict[tuple[str, str, str], list[Pattern]] = {}
    first, first_step, _ = _build(triples, known)
    triples[0] = ("s0", _value(rnd, 0, length), "ph-0000")
    kept = {t: known[t] for t in triples if t in known}
    again, again_step, finder = _build(triples, kept)
    runs = 200
    head = timeit.timeit(lambda: finder.hits(HEAD), number=runs) / runs
    t0 = time.perf_counter()
    Finder.for_values(triples, runs=True, prefilter=False, known=kept)
    bound = time.perf_counter() - t0
    return [
        f"{count} x {length} chars", f"{first:.2f} / {again:.2f}", f"{first_step * 1e3:.0f} / {again_step * 1e3:.0f}",
        str(len(finder._shards)), f"{head * 1e6:.1f}", f"{bound * 1e3:.0f}",
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="only the two smallest policies (the tests run this)")
    args = parser.parse_args()
    rnd = random.Random(2026)
    print("| policy | build, s (start / rotation) | longest step, ms (start / rotation) | shards | request head, us | bound finder, ms |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for count, length in SHAPES[:2] if args.quick else SHAPES:
        print("| " + " | ".join(row(count, length, rnd)) + " |", flush=True)


if __name__ == "__main__":
    main()
