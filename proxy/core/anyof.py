"""Whether any of a set of byte strings occurs in an input, ASCII letters' case aside, at memory
speed: a prefilter in front of the finder's automaton (:class:`proxy.core.finder.Finder`).

Almost every body the proxy scans holds no real value, so the question asked most is "is any
pattern in here at all?" -- of the bytes, and of the bytes lowercased (the mixed-case view). The
finder's Aho-Corasick automaton answers it by walking every byte through its states: ~2 ns a byte
once a finder has hundreds of patterns (a policy's 5 values with their forms and runs: ~110-390 us
per 64 KiB of text, base64 or random bytes), because its own SIMD prefilter serves at most 64
patterns; and the lowercased copy costs ~20 us per 64 KiB to make before it is searched.
Hyperscan's literal matcher (SIMD, built for thousands of literals) answers both at once in ~4-12
us per 64 KiB: a pattern that occurs in the bytes, or in the bytes lowercased, occurs in them with
case ignored. Only that no is taken from it: where it says yes, the automaton finds the hits as
before, so the hits are the automaton's, always.

The answer is exact for literals with ASCII case folded (what ``bytes.lower`` folds), which the
tests hold against the automaton on generated inputs and patterns. Where Hyperscan is not
installed (a platform it has no wheel for) or cannot compile a set, :func:`any_of` returns None and
the automaton answers alone: the same results, slower on large inputs (see :data:`UNAVAILABLE`).

The fixed sets the scrubbers build at import (``store=True``: what a client reads as another
character, the bytes a view drops; never a set holding a value) took ~30-45 ms of every start to
compile. ``python -m proxy.prefilters`` (the image's build, ``./scripts/compile``) stores them
compiled in :data:`STORE`, each named by the SHA-256 of what it was compiled from (the literals,
their flags, Hyperscan's version) and checked as it is read against the SHA-256 of that name and
its contents (red team 52: a well-formed set under another set's name was read for it) and for
Hyperscan's block mode. A file that is missing is compiled as before (:data:`COMPILED` names it:
the image's build requires none); one that Hyperscan or the check refuses too, and said in
:data:`REFUSED` (the sidecar logs it). A stored set answers exactly as a compiled one: the tests
hold them to each other.
"""

from __future__ import annotations

import hashlib
import os
import struct
import threading
from collections.abc import Callable, Sequence

try:
    import hyperscan
except ImportError as e:  # (no wheel for this platform: the automaton alone)
    hyperscan = None  # type: ignore[assignment]
    UNAVAILABLE: str | None = f"hyperscan is not installed ({e})"
else:
    UNAVAILABLE = None

__all__ = [
    "COMPILED", "MAX_PATTERNS", "REFUSED", "STORE", "UNAVAILABLE", "any_byte_of", "any_of", "stored_sets", "which_of",
]  # fmt: skip

# Compiling takes ~25 us a pattern (~11 ms for a policy's 5 values with their runs, 469 patterns;
# ~0.5 s for 256 values): the sidecar compiles a finder's at the event loop's next turn, once the
# finder serves (proxy.runtime). Larger sets go without the prefilter, so that no build stalls the
# event loop for more than ~25 ms. (A set built once at import may say how many it takes:
# ``most_patterns``, start-up's cost, not a request's.)
MAX_PATTERNS = 1024

STORE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "prefilters")
REFUSED: list[str] = []  # stored sets refused as they were read (compiled instead), and why
COMPILED: list[str] = []  # fixed sets compiled in this process, not read from the store (by name)
_STORED_SETS: dict[str, hyperscan.Database] = {}  # the fixed sets built in this process, by name (see stored_sets)
_FORMAT = b"sandgate-prefilter-2"  # (2: the checksum covers the name)


def any_of(
    literals: Sequence[bytes], caseless: bool = True, store: bool = False
) -> Callable[[bytes], bool | None] | None:
    """A function telling whether any of ``literals`` occurs in its input with ASCII letters' case
    ignored (or not: ``caseless``; None when it cannot tell this time: its scratch space is in use
    in another thread); None when no such function can be had (Hyperscan absent, an empty literal
    or one holding a NUL, too many, or a compile error). ``store``: a fixed set, read from
    :data:`STORE` when stored there (never a set that holds a value)."""
    compiled = _compiled(literals, caseless, store=store)
    return None if compiled is None else _scanner(*compiled)


def which_of(
    literals: Sequence[bytes],
    caseless: bool = True,
    most: int | None = None,
    most_patterns: int = MAX_PATTERNS,
    store: bool = False,
) -> Callable[[bytes], set[int] | None] | None:
    """A function giving the indexes of the ``literals`` that occur in its input, each once however
    often it occurs (one call into Python per literal found, not per occurrence), or None when it
    cannot tell this time (see :func:`any_of`); None when no such function can be had. With
    ``most``, the scan stops at the literal found past that many: a set of ``most + 1`` says "more".
    ``store``: see :func:`any_of`."""
    compiled = _compiled(literals, caseless, most_patterns, store)
    if compiled is None:
        return None
    db, scratch = compiled
    lock = threading.Lock()
    scan = db.scan  # type: ignore[attr-defined]
    terminated = hyperscan.ScanTerminated
    enough = -1 if most is None else most + 1

    def found(id_: int, _from: int, _to: int, _flags: int, ids: set[int]) -> bool:
        ids.add(id_)
        return len(ids) == enough  # (True ends the scan)

    def which(data: bytes) -> set[int] | None:
        if not lock.acquire(blocking=False):
            return None
        ids: set[int] = set()
        try:
            scan(data, match_event_handler=found, context=ids, scratch=scratch)
        except terminated:
            pass
        finally:
            lock.release()
        return ids

    return which


def _compiled(
    literals: Sequence[bytes], caseless: bool, most_patterns: int = MAX_PATTERNS, store: bool = False
) -> tuple[object, object] | None:
    """A block-mode database of ``literals`` (each reported once a scan) and its scratch space;
    with ``store``, the one stored for them if there is one (see :data:`STORE`)."""
    if hyperscan is None or not literals or len(literals) > most_patterns or not all(literals):
        return None
    if any(b"\x00" in lit for lit in literals):
        return None  # (the bindings hand Hyperscan each literal as a C string: a NUL would end it)
    name = _name(literals, caseless) if store else ""
    try:
        db = _stored(name) if store else None
        if db is None:
            db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
            db.compile(
                expressions=list(literals),
                ids=list(range(len(literals))),
                flags=[hyperscan.HS_FLAG_SINGLEMATCH | (hyperscan.HS_FLAG_CASELESS if caseless else 0)] * len(literals),
                literal=True,
            )
            if store:
                COMPILED.append(name)  # (once compiled: a set that cannot be is not said to be)
        scratch = hyperscan.Scratch(db)
    except hyperscan.error:
        return None
    if store:
        _STORED_SETS[name] = db
    return db, scratch


def _name(literals: Sequence[bytes], caseless: bool) -> str:
    """What a fixed set is stored as: the SHA-256 of what compiling it takes."""
    h = hashlib.sha256(b"%s\0%s\0%d\0" % (_FORMAT, getattr(hyperscan, "__version__", "").encode(), caseless))
    for lit in literals:
        h.update(struct.pack(">I", len(lit)) + lit)
    return h.hexdigest()


def _stored(name: str) -> hyperscan.Database | None:
    """The set stored as ``name``; None when there is none, or it was refused (:data:`REFUSED`)."""
    try:
        with open(os.path.join(STORE, name + ".hs"), "rb") as f:
            digest, data = f.read(32), f.read()  # (read apart: no copy of the set to slice it out)
    except FileNotFoundError:
        return None
    except OSError as e:
        REFUSED.append(f"{name[:12]}: {e.strerror}")
        return None
    if _checksum(name, data) != digest:
        REFUSED.append(f"{name[:12]}: its checksum does not hold (damaged, or another set's)")
        return None
    try:
        db = hyperscan.loadb(data, hyperscan.HS_MODE_BLOCK)
    except hyperscan.error as e:  # (another platform's, another Hyperscan's)
        REFUSED.append(f"{name[:12]}: Hyperscan refused it ({type(e).__name__})")
        return None
    info: object = db.info()  # (bytes, though the stubs say str)
    if not (info.decode() if isinstance(info, bytes) else str(info)).endswith("Mode: BLOCK"):
        # (loadb takes a stream-mode one, whose scans then fail)
        REFUSED.append(f"{name[:12]}: not a block-mode database")
        return None
    return db


def _checksum(name: str, data: bytes) -> bytes:
    """What a stored set's file begins with: the SHA-256 of its name and its contents, so that a
    set is read only under the name it was stored for."""
    h = hashlib.sha256(b"%s\0%s\0" % (_FORMAT, name.encode()))
    h.update(data)
    return h.digest()


def stored_sets() -> dict[str, bytes]:
    """The fixed sets built in this process, serialized as :data:`STORE` holds them (by name:
    their checksum, then Hyperscan's serialization)."""
    out = {}
    for name, db in _STORED_SETS.items():
        data = hyperscan.dumpb(db)
        out[name] = _checksum(name, data) + data
    return out


def any_byte_of(chars: bytes, store: bool = False) -> Callable[[bytes], bool | None] | None:
    """A function telling whether any byte of ``chars`` occurs in its input (None when it cannot
    tell this time: its scratch space is in use in another thread); None when Hyperscan is absent.
    Scanned at ~5 GB/s: ~12 us per 64 KiB, where ``bytes.translate`` deleting thirty of them costs
    ~40, and a ``find`` each ~25 in all. The bytes are compiled as one-byte literals, not as a
    class in a regular expression: that brought Hyperscan's regex compiler into memory (~3 MiB of
    the sidecar's RSS, idle), where literals use the compiler the finders' prefilters already
    use. NUL, which the bindings cannot take in a literal, is looked for apart (``memchr``).
    ``store``: see :func:`any_of`."""
    if hyperscan is None or not chars:
        return None
    rest = sorted(set(chars) - {0})
    occurs: Callable[[bytes], bool | None] | None = None
    if rest:
        compiled = _compiled([bytes([c]) for c in rest], False, store=store)
        if compiled is None:
            return None
        occurs = _scanner(*compiled)
    if 0 not in chars:
        return occurs
    scan = occurs

    def with_nul(data: bytes) -> bool | None:
        if data.find(0) >= 0:
            return True
        return False if scan is None else scan(data)

    return with_nul


def _scanner(db: object, scratch: object) -> Callable[[bytes], bool | None]:
    """Whether ``db`` matches its input anywhere: the first match ends the scan."""
    lock = threading.Lock()  # a scratch space serves one scan at a time
    terminated = hyperscan.ScanTerminated
    scan = db.scan  # type: ignore[attr-defined]

    def stop(*_: object) -> bool:
        return True  # (the first match ends the scan: one is all the answer needs)

    def occurs(data: bytes) -> bool | None:
        if not lock.acquire(blocking=False):
            return None
        try:
            scan(data, match_event_handler=stop, scratch=scratch)
        except terminated:
            return True
        finally:
            lock.release()
        return False

    return occurs
