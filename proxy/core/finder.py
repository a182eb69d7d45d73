"""The finder: where any of a set of byte patterns (the forms of the secret values, made by
:mod:`proxy.core.values`) occurs in bytes. Compiled (see :mod:`proxy.native`): the scrubbers ask it
several times per answer, and an event stream's answer dozens of times.

Search is leftmost-longest and non-overlapping (:func:`scan` states it plainly: a ``bytes.find``
per pattern, the earliest start winning). The finder runs it as one pass of an Aho-Corasick
automaton (ahocorasick-rs), which for the ~70 forms of one value usually costs ~5 us per 64 KiB
against ~25 us for the find loop, and 0.4 against 2.4 us for a 30-byte body. Usually: the
automaton's fast prefilter serves at most 64 patterns (past that, ~120 us per 64 KiB of text), so
a finder of more asks probes of 64 patterns each first (:data:`_PROBE`); and the prefilter depends
on the patterns' bytes, and for some values it fails on hex or base64 text (~500-800 us per 64 KiB,
for one value in eight in a trial of random keys), where the find loop stays at ~1.3 us per pattern
per 64 KiB. So a finder of up to 512 patterns times both engines once, when it is built, on a fixed
sample of hex and base64, and searches a large input that reads as encoded text (its first 4 KiB
almost all in the base64/hex alphabet) with the faster one; a finder with probes asks them first
on such input only if that was faster on the sample than its whole automaton alone (their
prefilters fail there too). Other input always goes to the automaton. bench/scrub.py measures the
result. Both engines find the same hits (the tests hold each
to :func:`scan`). In front of both, an input of 256 bytes or more is first asked whether any
pattern occurs in it at all, ASCII case aside (:mod:`proxy.core.anyof`, Hyperscan: ~10 us per 64 KiB
whatever the text); only a yes reaches the engines, so the hits are always theirs.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Final

import ahocorasick_rs

from proxy.core.anyof import any_of

__all__ = ["Finder", "Hit", "OnHit", "Pattern", "finder_in_steps", "scan"]

OnHit = Callable[[str], None]
# Building an automaton holds the GIL (~0.17 us a pattern's byte, ~1.6 us a short pattern, on a slow
# 2-CPU machine): a finder of at most SHARD patterns and SHARD_BYTES bytes is one automaton of them
# (leftmost-longest); a larger one is built in shards of at most SHARD_BYTES of cost each (~45 ms of
# build there), so the event loop gets a turn between them (see build_finder), each reporting every
# occurrence, and of a pattern longer than ANCHOR bytes only its first ANCHOR (the rest is compared
# where those occur: Finder.hits). Cut by SHARD patterns of whole patterns, a policy of
# 2,000-character values held the loop ~0.6-1.3 s at each rotation (its 512 longest forms, ~3 MB,
# in one automaton), and one of 240 such values made 351 shards that every request was searched
# with (~0.35-1 ms a request).
SHARD = 512
SHARD_BYTES = 256 * 1024
ANCHOR = 64
_PATTERN_COST: Final = 8  # a pattern's own cost in building an automaton, in bytes' worth
_WHOLE_BYTES: Final = 4 * 1024 * 1024  # Finder.for_values: past these many bytes of patterns, shards
# A finder of up to this many patterns may search large encoded inputs with the find loop instead
# (its cost grows with the pattern count: ~1.3 us per pattern per 64 KiB); inputs from this size on.
_LOOP_MAX: Final = 512
# The automaton's fast prefilter (a packed SIMD searcher) serves up to 64 patterns: measured on
# 64 KiB of JSON text, 90 patterns cost ~120 us a search where 64 cost ~15 us. A finder of more
# (up to SHARD) first asks probes of 64 patterns each whether anything is there at all, which is
# almost always no; only then does it search with the whole automaton.
_PROBE = 64
# ... for inputs longer than this: below it the whole automaton without its prefilter costs less than
# asking the probes (90 patterns: 0.3 against 0.9 us for 50 bytes; even at ~500 bytes).
_PROBE_FROM: Final = 256
_LARGE: Final = 4096
# Below this the automaton alone costs what asking the prefilter does (~0.4 us for 100 bytes).
_PREFILTER_FROM: Final = 256
# The sample both engines are timed on: hex and base64, where the automaton's prefilter can fail.
_digest = b"".join(hashlib.sha256(b"%d" % i).digest() for i in range(512))
_SAMPLE = _digest.hex().encode()[:16384] + base64.b64encode(_digest)[:16384]
_ENCODED_ALPHABET = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz+/=-_"


def _reads_encoded(data: bytes) -> bool:
    """Whether ``data`` looks like hex or base64 text: under 1 in 16 of its first 4 KiB outside
    that alphabet (a guess that only picks an engine, never changes a result)."""
    head = data[:4096]
    return len(head.translate(None, _ENCODED_ALPHABET)) * 16 < len(head)


@dataclass(unsafe_hash=True, slots=True)
class Pattern:
    """One form of a value to find (``find``), and what replaces it (``replace``). (Fields Final,
    ``__init__`` written out: see proxy.native, "Dataclasses".)"""

    secret: Final[str]
    find: Final[bytes]
    replace: Final[bytes]
    placeholder: Final[bool]  # a placeholder (sent where it is not bound), not a real value
    part: Final[bool]  # a run of a real value (see values.runs_of): refused where found, never replaced
    # Held at a segment's end only once PART_HOLD bytes of it are there, as a run's piece is (see
    # Finder.holdback): the forms of values._stdlib_forms (see values.patterns_of).
    late: Final[bool]
    # A value in another EBCDIC code page as the code page 500 view reads it (see
    # values.ebcdic_misreads): found in the bytes or in that view, never in a view made of runs
    # (scrub._sparse_min).
    ebcdic: Final[bool]

    def __init__(
        self,
        secret: str,
        find: bytes,
        replace: bytes,
        placeholder: bool = False,
        part: bool = False,
        late: bool = False,
        ebcdic: bool = False,
    ) -> None:
        self.secret = secret
        self.find = find
        self.replace = replace
        self.placeholder = placeholder
        self.part = part
        self.late = late
        self.ebcdic = ebcdic


@dataclass(unsafe_hash=True, slots=True)
class Hit:
    start: Final[int]
    end: Final[int]
    pattern: Final[Pattern]

    def __init__(self, start: int, end: int, pattern: Pattern) -> None:  # (see Pattern)
        self.start, self.end, self.pattern = start, end, pattern


def _late(p: Pattern) -> bool:
    return p.part or p.late


class Finder:
    """Finds the patterns in bytes; built once per set of values, shared by every scrubber."""

    def __init__(
        self,
        patterns: Iterable[Pattern],
        shards: list[ahocorasick_rs.BytesAhoCorasick] | None = None,
        loop_for_large: bool | None = None,
        prefilter: bool = True,
        whole: bool = False,
    ) -> None:
        """``shards``: automata already built for ``patterns`` (distinct, longest first, one per
        :func:`_slices` slice: what build_finder makes in steps); built here when None. ``whole``:
        ``shards`` is one automaton of them all, whole, leftmost-longest, however many
        (:meth:`for_values`). ``loop_for_large``: search
        large encoded inputs with the find loop; None: whichever engine is faster on the sample.
        ``prefilter``: False leaves the prefilter to :meth:`add_prefilter` (its compile is most of
        a small finder's build, and it only ever saves time: until it is there, the automaton
        answers alone, with the same hits)."""
        self.patterns: tuple[Pattern, ...] = _distinct(patterns)
        self.max_len = max((len(p.find) for p in self.patterns), default=0)
        # Where each shard's patterns begin; None: one automaton of the whole patterns, leftmost-longest.
        self._bases = None if whole else _slices(self.patterns)
        self._anchor = ANCHOR  # (what the shards were built of)
        if shards is None:
            shards = list(_shards(self.patterns, self._bases))
        elif len(shards) != (0 if not self.patterns else 1 if self._bases is None else len(self._bases)):
            raise ValueError("the shards given were not built for these patterns")
        self._shards = shards
        finds = [p.find for p in self.patterns]
        self._probes = (
            [
                _automaton(finds[i : i + _PROBE], ahocorasick_rs.MATCHKIND_LEFTMOST_LONGEST, dfa=False)
                for i in range(0, len(finds), _PROBE)
            ]
            if _PROBE < len(finds) <= SHARD
            else None
        )
        # Large encoded inputs: the probes' prefilters can fail there as the automaton's can (a
        # policy of 5 values: ~800 us per 64 KiB of base64 for the probes, ~300 for the whole
        # automaton asked directly, for some values): the faster of the two on the sample.
        # Inputs from _PREFILTER_FROM bytes on are first asked whether any pattern occurs at all,
        # case aside (Hyperscan, ~4-12 us per 64 KiB where the automaton takes ~110-390:
        # proxy.core.anyof); only a yes goes on to the engines below, so the hits are theirs.
        self._any: Callable[[bytes], bool | None] | None = any_of(finds) if prefilter else None
        self.probe_encoded = self._probes is not None and self._probes_are_faster()
        if loop_for_large is None:
            loop_for_large = 0 < len(self.patterns) <= _LOOP_MAX and self._loop_is_faster()
        self.loop_for_large = loop_for_large
        # This finder among all ever built (never reused, unlike id()): scrub.first_hit remembers
        # the fields it found clean under it.
        self.serial = next(_SERIALS)
        # For holdback: the patterns by their first two bytes, and where any such pair starts (an
        # automaton of the pairs finds those in C: a regular expression of them cost 16-46 us for
        # the last 112 bytes with 54-170 pairs, the automaton ~1; a Python loop more still).
        two: dict[bytes, list[bytes]] = {}
        for p in self.patterns:
            if len(p.find) > 2:
                two.setdefault(p.find[:2], []).append(p.find)
        self._by_two = two
        self._pair_starts = (
            ahocorasick_rs.BytesAhoCorasick(list(two), matchkind=ahocorasick_rs.MATCHKIND_STANDARD) if two else None
        )
        self._first_bytes = frozenset(p.find[:1] for p in self.patterns if len(p.find) > 1 and not _late(p))
        self._part_first_bytes = frozenset(p.find[:1] for p in self.patterns if len(p.find) > 1 and _late(p))
        self._parts = frozenset(p.find for p in self.patterns if _late(p))
        self._by_first: dict[bytes, list[bytes]] = {}
        for p in self.patterns:
            if len(p.find) > 1:
                self._by_first.setdefault(p.find[:1], []).append(p.find)
        self._secret_of = {p.find: p.secret for p in self.patterns}

    def add_prefilter(self) -> None:
        """Build the prefilter left out by ``prefilter=False`` (``_any`` is set once, whole: a search
        sees the finder with it or without it, and either gives the same hits)."""
        if self._any is None:
            self._any = any_of([p.find for p in self.patterns])

    @classmethod
    def for_values(
        cls,
        values: Iterable[tuple[str, str, str]],
        *,
        runs: bool = False,
        prefilter: bool = True,
        known: dict[tuple[str, str, str], list[Pattern]] | None = None,
    ) -> Finder:
        """From (secret name, real value, placeholder) triples: their :func:`forms`, and with
        ``runs`` the pieces of their runs too (:func:`runs_of`: what flows back to the agent).
        (Forms first: a piece that is also a form of another value is that value.) ``known``: the
        ``patterns_of`` of a triple already made (``build_finder``'s), taken from there; those made
        here are added (a long value's take ~20-60 ms: 64 of 8,000 characters, ~4 s)."""
        from proxy.core.values import ebcdic_runs_of, patterns_of, runs_of  # (they make Patterns: a cycle)

        triples = list(values)
        patterns = []
        for name, value, ph in triples:
            made = None if known is None else known.get((name, value, ph))
            if made is None:
                made = patterns_of(name, value, ph)
                if known is not None:
                    known[(name, value, ph)] = made
            patterns += made
        if runs:
            patterns += [Pattern(name, f, b"", part=True) for name, value, _ in triples for f in runs_of(value)]
            patterns += [
                Pattern(name, f, b"", part=True, ebcdic=True)
                for name, value, _ in triples
                for f in ebcdic_runs_of(value)
            ]
        distinct = _distinct(patterns)
        # One automaton however many patterns (built here at once anyway, unlike build_finder's
        # steps): 256 values with their runs (8,704 patterns) searched 64 KiB of text in ~0.44 ms
        # as one, ~3.1 ms as 17 shards reporting every overlapping match. Of their first ANCHOR
        # bytes where those fit one shard (long values: ten of 2,000 characters, ~2.6 MB of
        # forms, took ~0.9 s to build whole at the first answer from their host, ~0.3 s so), or
        # in shards past _WHOLE_BYTES (240 such values, ~57 MB: ~68 s whole, ~1.5 s so).
        slices = _slices(distinct)
        if slices is not None and (len(slices) == 1 or sum(len(p.find) for p in distinct) > _WHOLE_BYTES):
            return cls(distinct, prefilter=prefilter)
        whole = ahocorasick_rs.MATCHKIND_LEFTMOST_LONGEST
        shards = [_automaton([p.find for p in distinct], whole)] if distinct else []
        return cls(distinct, shards=shards, prefilter=prefilter, whole=bool(distinct))

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def _loop_is_faster(self) -> bool:
        """Time both engines on the sample (best of two): a choice of speed only, never of result.
        The find loop is given up once it has taken as long as the automaton: it has lost (with
        hundreds of patterns it takes ~7 ms on the sample, the automaton ~0.2)."""
        automata = self._probes if self.probe_encoded and self._probes is not None else self._shards[:1]
        budget = _best(lambda: [a.find_matches_as_indexes(_SAMPLE) for a in automata])
        return any(_loop_within(self.patterns, _SAMPLE, budget) for _ in range(2))

    def _probes_are_faster(self) -> bool:
        """Whether asking the probes first costs less on the sample than the whole automaton."""
        probes = self._probes or []
        return _best(lambda: [a.find_matches_as_indexes(_SAMPLE) for a in probes]) < _best(
            lambda: self._shards[0].find_matches_as_indexes(_SAMPLE)
        )

    def hits(self, data: bytes) -> list[Hit]:
        """Every leftmost-longest, non-overlapping occurrence, in order (what :func:`scan` returns)."""
        shards = self._shards
        if not shards:
            return []
        occurs = self._any(data) if self._any is not None and len(data) >= _PREFILTER_FROM else None
        if occurs is False:
            return []
        encoded = len(data) >= _LARGE and _reads_encoded(data)
        if encoded and self.loop_for_large:
            looped = _loop_hits(self.patterns, data)  # (no deadline: never None)
            assert looped is not None
            return looped
        if (
            occurs is None
            and self._probes is not None
            and len(data) > _PROBE_FROM
            and (self.probe_encoded or not encoded)
            and not any(probe.find_matches_as_indexes(data) for probe in self._probes)
        ):
            return []  # (a pattern occurs iff one of some probe's occurs, and each reports one if so)
        patterns = self.patterns
        if self._bases is None:
            return [Hit(s, e, patterns[i]) for i, s, e in shards[0].find_matches_as_indexes(data)]
        # Shards (a large policy, or long values): each reports EVERY occurrence of its patterns
        # (standard match kind, overlapping), of a pattern longer than ANCHOR its first ANCHOR
        # bytes, where the whole pattern is then compared; then one greedy pass picks
        # leftmost-longest, non-overlapping. (Merging each shard's own leftmost-longest picks would
        # miss a hit its shard hid behind an overlap that another shard's hit then won.)
        found = []
        anchor = self._anchor
        for shard, base in zip(shards, self._bases, strict=True):
            for i, s, _ in shard.find_matches_as_indexes(data, overlapping=True):
                f = patterns[base + i].find
                if len(f) <= anchor or data.startswith(f, s):
                    found.append((s, -len(f), base + i))
        found.sort()
        picked: list[Hit] = []
        end = 0
        for s, neg_len, i in found:
            if s >= end:
                end = s - neg_len
                picked.append(Hit(s, end, patterns[i]))
        return picked

    def nowhere(self, data: bytes) -> bool:
        """True when no pattern occurs in ``data``, nor in ``data.lower()`` (nor in a lowercased
        part of it); False when one may. Answered for inputs of _PREFILTER_FROM bytes or more when
        the prefilter is there, else always False (ask :meth:`hits`)."""
        return self._any is not None and len(data) >= _PREFILTER_FROM and self._any(data) is False

    def search(self, data: bytes) -> Hit | None:
        hits = self.hits(data)
        return hits[0] if hits else None

    def sub(self, data: bytes, on_hit: OnHit) -> bytes:
        hits = self.hits(data)
        if not hits:
            return data
        parts: list[bytes] = []
        pos = 0
        for h in hits:
            if h.pattern.part:
                raise ValueError("a run of a value is refused, never replaced: proxy.core.scrub does that")
            parts.append(data[pos : h.start])
            parts.append(h.pattern.replace)
            on_hit(h.pattern.secret)
            pos = h.end
        parts.append(data[pos:])
        return b"".join(parts)

    def holdback(self, data: bytes, part_from: int = 1) -> int:
        """Length of the longest suffix of ``data`` that is a proper prefix of some pattern: what a
        stream must hold back until the next bytes show whether a value starts there. A run's piece
        (:func:`runs_of`) or a late form (:attr:`Pattern.late`) counts only for a suffix
        ``part_from`` bytes or longer (see PART_HOLD)."""
        n = len(data)
        if self._pair_starts is not None:
            by_two = self._by_two
            parts = self._parts
            # the earliest start gives the longest suffix
            for j in self._starts(data):
                rest = data[j:]
                for f in by_two[data[j : j + 2]]:
                    if len(f) > n - j and f.startswith(rest) and (n - j >= part_from or f not in parts):
                        return n - j
        if n and (data[-1:] in self._first_bytes or (part_from <= 1 and data[-1:] in self._part_first_bytes)):
            return 1
        return 0

    def _starts(self, data: bytes) -> list[int]:
        """Where a pattern's first two bytes occur in the last ``max_len - 1`` bytes of ``data``,
        in order (overlapping: every pair is two bytes, so by end is by start)."""
        assert self._pair_starts is not None
        lo = max(0, len(data) - self.max_len + 1)
        return [lo + s for _, s, _ in self._pair_starts.find_matches_as_indexes(data[lo:], overlapping=True)]

    def rests(self, data: bytes, part_from: int = 1) -> list[tuple[bytes, tuple[str, bytes]]]:
        """(rest, (secret, begun)) for EVERY pattern of which a suffix of ``data`` (``begun``) is a
        proper prefix (not only the longest, as :meth:`holdback`): ``rest`` is what a later text
        would have to begin with to complete it after ``data``. ``part_from``: as :meth:`holdback`."""
        n = len(data)
        out: list[tuple[bytes, tuple[str, bytes]]] = []
        if n == 0:
            return out
        parts = self._parts
        if self._pair_starts is not None:
            for j in self._starts(data):
                rest = data[j:]
                for f in self._by_two[data[j : j + 2]]:
                    if len(f) > n - j and f.startswith(rest) and (n - j >= part_from or f not in parts):
                        out.append((f[n - j :], (self._secret_of[f], rest)))
        for f in self._by_first.get(data[-1:], ()):
            if part_from <= 1 or f not in parts:
                out.append((f[1:], (self._secret_of[f], f[:1])))
        return out


_SERIALS = itertools.count()


def _best(search: Callable[[], object]) -> int:
    """The least of two timings of ``search``, in nanoseconds."""
    times = []
    for _ in range(2):
        t0 = time.perf_counter_ns()
        search()
        times.append(time.perf_counter_ns() - t0)
    return min(times)


def scan(patterns: Iterable[Pattern], data: bytes) -> list[Hit]:
    """Leftmost-longest, non-overlapping occurrences by ``bytes.find``: the reference for
    :meth:`Finder.hits` (the earliest start wins; at one start, the longest pattern)."""
    return _scan_sorted(sorted(patterns, key=lambda p: -len(p.find)), data)


def _scan_sorted(ordered: Sequence[Pattern], data: bytes) -> list[Hit]:
    """:func:`scan` of patterns already sorted longest first."""
    out: list[Hit] = []
    pos = 0
    while True:
        best: Hit | None = None
        for p in ordered:  # longest first: at equal starts the first found is the longest
            i = data.find(p.find, pos, best.start + len(p.find) if best is not None else len(data))
            if i != -1 and (best is None or i < best.start):
                best = Hit(i, i + len(p.find), p)
        if best is None:
            return out
        out.append(best)
        pos = best.end


def _loop_within(ordered: Sequence[Pattern], data: bytes, budget_ns: int) -> bool:
    """Whether the find loop (:func:`_loop_hits`) searches ``data`` in under ``budget_ns`` (timed as
    it goes, and given up past it)."""
    return _loop_hits(ordered, data, time.perf_counter_ns() + budget_ns) is not None


def _loop_hits(ordered: Sequence[Pattern], data: bytes, deadline_ns: int = 0) -> list[Hit] | None:
    """:func:`scan`'s hits of patterns sorted longest first, by ``bytes.find``, each pattern's next
    occurrence remembered until a hit passes it: so each pattern's search crosses the input once
    (asking every pattern again from each hit, as :func:`_scan_sorted` does, took time quadratic in
    the hits: 2.2 s for 1 MiB of one value's hex form repeated, where the automaton takes ~8 ms).
    ``deadline_ns`` (a ``perf_counter_ns`` time): None once past it, looked at every 16 searches."""
    found = [-2] * len(ordered)  # each pattern's next start at or after pos; -2 not searched, -1 none
    out: list[Hit] = []
    pos = 0
    searches = 0
    while True:
        best = -1
        best_at = len(data) + 1
        for k in range(len(ordered)):
            at = found[k]
            if at == -1:
                continue
            if at < pos:
                at = data.find(ordered[k].find, pos)
                found[k] = at
                searches += 1
                if deadline_ns and searches % 16 == 0 and time.perf_counter_ns() >= deadline_ns:
                    return None
                if at == -1:
                    continue
            if at < best_at:  # (strictly: at one start the first, the longest, wins)
                best, best_at = k, at
        if best < 0:
            return None if deadline_ns and time.perf_counter_ns() >= deadline_ns else out
        p = ordered[best]
        out.append(Hit(best_at, best_at + len(p.find), p))
        pos = best_at + len(p.find)


def finder_in_steps(patterns: Iterable[Pattern], prefilter: bool = True) -> Iterator[Finder | None]:
    """A :class:`Finder` of ``patterns`` built in steps: yields None after each automaton (the
    caller lets other work run there), then the finder (``proxy.core.values.build_finder``)."""
    distinct = _distinct(patterns)
    shards = []
    for shard in _shards(distinct, _slices(distinct)):
        shards.append(shard)
        yield None
    yield Finder(distinct, shards=shards, prefilter=prefilter)


def _distinct(patterns: Iterable[Pattern]) -> tuple[Pattern, ...]:
    """One pattern per searched form, longest first (two secrets with one value: the first names it)."""
    by_find: dict[bytes, Pattern] = {}
    for p in patterns:
        by_find.setdefault(p.find, p)
    return tuple(sorted(by_find.values(), key=lambda p: -len(p.find)))


def _slices(patterns: tuple[Pattern, ...]) -> list[int] | None:
    """None when ``patterns`` are one automaton (at most SHARD of them and SHARD_BYTES bytes);
    else where each shard of them begins: a shard ends before the pattern that would make its cost
    more than SHARD_BYTES (a pattern's first ANCHOR bytes, and _PATTERN_COST each)."""
    if len(patterns) <= SHARD and sum(len(p.find) for p in patterns) <= SHARD_BYTES:
        return None
    starts = [0]
    size = 0
    for i, p in enumerate(patterns):
        cost = min(len(p.find), ANCHOR) + _PATTERN_COST
        if size and size + cost > SHARD_BYTES:
            starts.append(i)
            size = 0
        size += cost
    return starts


def _shards(patterns: tuple[Pattern, ...], starts: list[int] | None) -> Iterator[ahocorasick_rs.BytesAhoCorasick]:
    """The automata for ``patterns`` sliced at ``starts`` (:func:`_slices`): one of them whole
    (leftmost-longest) for None, else one per slice of their first ANCHOR bytes, reporting every
    occurrence (see :meth:`Finder.hits`). None at all for no patterns."""
    if not patterns:
        return
    if starts is None:
        yield _automaton([p.find for p in patterns], ahocorasick_rs.MATCHKIND_LEFTMOST_LONGEST)
        return
    for start, end in zip(starts, [*starts[1:], len(patterns)], strict=True):
        yield _automaton([p.find[:ANCHOR] for p in patterns[start:end]], ahocorasick_rs.MATCHKIND_STANDARD)


# Automata are contiguous NFAs, not whatever the library picks, but for a finder's only automaton
# of up to _PROBE patterns and _DFA_BYTES: for up to ~100 patterns the library picks a DFA, whose
# construction grows with the bytes times the byte classes (34 patterns of ~10 KB, the forms of a
# 6,000-character value: 14 s against 25 ms) and whose memory with them (the two finders of a
# policy of 5 values, ~330 patterns each with their probes: ~10 MiB each against ~1). Searches
# cost about the same: the prefilter does most of the work either way (a finder of 5 values on
# 64 KiB of JSON text: 44 against 54 us; on base64, 421 against 393).
_DFA_BYTES: Final = 64 * 1024


def _automaton(finds: list[bytes], kind: ahocorasick_rs.MatchKind, dfa: bool = True) -> ahocorasick_rs.BytesAhoCorasick:
    if not dfa or len(finds) > _PROBE or sum(map(len, finds)) > _DFA_BYTES:
        return ahocorasick_rs.BytesAhoCorasick(
            finds, matchkind=kind, implementation=ahocorasick_rs.Implementation.ContiguousNFA
        )
    return ahocorasick_rs.BytesAhoCorasick(finds, matchkind=kind)
