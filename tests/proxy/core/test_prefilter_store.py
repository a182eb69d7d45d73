"""The scrubbers' fixed prefilter sets, stored compiled (``python -m proxy.prefilters``).

Compiling them took ~30-45 ms of every start of the sidecar; the build stores them and the import
reads them. A stored set must answer exactly as compiling it does; a file that is corrupt, or that
this platform's Hyperscan refuses, is compiled instead and said; and no set built from a secret's
value is ever written anywhere.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import cast

import hyperscan
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.core import anyof, fold, mojibake, scrub
from proxy.core.values import Finder

ROOT = Path(__file__).resolve().parents[3]
VALUE = "sk-proj-" + "Z3q" * 14

# The fixed sets as their modules build them: (literals, caseless).
FIXED: list[tuple[list[bytes], bool]] = [
    (fold._STRIPPED_OPENERS, False),
    (fold._TRANSLITERATED_UTF8, False),
    (fold._CONTESTED_UTF8, False),
    ([bytes([c]) for c in sorted(set(scrub._CONTROLS) - {0})], False),
    ([bytes([c]) for c in sorted(set(scrub._MARKS + bytes(range(0x80, 0x100))) - {0})], False),
    (mojibake._GARBLED_OPENERS, False),
]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store written as the build writes it, by a process of its own."""
    directory = tmp_path_factory.mktemp("prefilters")
    env = dict(os.environ, SANDGATE_NATIVE="0")
    code = f"from proxy import prefilters; print(prefilters.store({str(directory)!r}))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, cwd=ROOT)
    assert int(out.stdout) == len(list(directory.glob("*.hs"))) >= len(FIXED) + 1  # (+ scrub's escaped openers)
    return directory


def _which(literals: list[bytes], caseless: bool, store: bool) -> Callable[[bytes], set[int] | None]:
    which = anyof.which_of(literals, caseless=caseless, most_patterns=4096, store=store)
    assert which is not None
    return which


@settings(max_examples=60, deadline=None)
@given(picks=st.lists(st.integers(min_value=0), max_size=6), noise=st.binary(max_size=200), case=st.booleans())
def test_every_fixed_set_read_from_the_store_answers_as_compiling_it_does(
    store: Path, picks: list[int], noise: bytes, case: bool
) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(anyof, "STORE", str(store))
        mp.setattr(anyof, "COMPILED", [])
        for literals, caseless in FIXED:
            stored = _which(literals, caseless, store=True)
            compiled = _which(literals, caseless, store=False)
            data = noise.join(literals[i % len(literals)] for i in picks) + noise
            data = data.swapcase() if case else data
            assert stored(data) == compiled(data)
        assert anyof.COMPILED == [], "a fixed set was compiled, not read from the store"


def test_the_import_reads_the_build_s_store_when_there_is_one() -> None:
    """What ./scripts/compile (and the image's build) stores is what the import reads: no fixed set
    compiled at import in this suite's process, and none refused."""
    if not Path(anyof.STORE).is_dir():
        pytest.skip("no store in this checkout: ./scripts/compile writes it")
    assert anyof.REFUSED == []
    assert anyof.COMPILED == []


@pytest.mark.parametrize("damage", ["flipped", "truncated", "not hyperscan's", "empty"])
def test_a_stored_set_that_is_damaged_is_refused_and_compiled(store: Path, tmp_path: Path, damage: str) -> None:
    literals, caseless = FIXED[1]
    name = anyof._name(literals, caseless)
    data = (store / f"{name}.hs").read_bytes()
    if damage == "flipped":
        data = data[:-100] + bytes([data[-100] ^ 1]) + data[-99:]
    elif damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "not hyperscan's":
        junk = b"\x00" * 4096
        data = anyof._checksum(name, junk) + junk  # (its checksum holds: Hyperscan refuses it)
    else:
        data = b""
    (tmp_path / f"{name}.hs").write_bytes(data)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(anyof, "STORE", str(tmp_path))
        mp.setattr(anyof, "REFUSED", [])
        mp.setattr(anyof, "COMPILED", [])
        which = _which(literals, caseless, store=True)
        assert len(anyof.REFUSED) == 1 and name[:12] in anyof.REFUSED[0]
        assert [name] == anyof.COMPILED
    sample = b"plain " + literals[7] + b" text"
    assert which(sample) == _which(literals, caseless, store=False)(sample) == {7}


def test_a_missing_store_compiles_the_sets_and_refuses_nothing(tmp_path: Path) -> None:
    literals, caseless = FIXED[2]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(anyof, "STORE", str(tmp_path / "absent"))
        mp.setattr(anyof, "REFUSED", [])
        mp.setattr(anyof, "COMPILED", [])
        _which(literals, caseless, store=True)
        assert anyof.REFUSED == [] and [anyof._name(literals, caseless)] == anyof.COMPILED


def test_no_set_built_from_a_value_is_ever_stored() -> None:
    """A finder's prefilter holds the values' forms: it is never among the sets the build writes."""
    piece = VALUE[8:24].lower().encode()
    compiled = anyof._compiled([VALUE.encode()], True)
    assert (
        compiled is not None and piece in hyperscan.dumpb(cast(hyperscan.Database, compiled[0])).lower()
    )  # (the check below can see one)
    finder = Finder.for_values([("openai", VALUE, "sandgate-ph-openai-xxxxxxxx")], runs=True)
    assert finder.nowhere(b"clean " * 100)  # (it has its prefilter: one was compiled)
    stored = anyof.stored_sets()
    assert len(stored) == len(FIXED) + 1  # (+ scrub's escaped openers)
    assert not any(piece in data.lower() for data in stored.values())
    assert all(anyof._checksum(name, data[32:]) == data[:32] for name, data in stored.items())
