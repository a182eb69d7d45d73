"""Red team 52 (on the stored prefilter sets and the finders that serve before their prefilter).

F1 (fixed): a stored set was checked only against the SHA-256 of its own contents, so a well-formed
set under another set's name was read for it: the escape openers' set standing for "the bytes any
decoding starts from" let a JSON-escaped value pass as plain text. The checksum now covers the name
the set is stored for, and a database that is not block-mode (``loadb`` takes one, whose every scan
then fails) is refused too; both are compiled instead.

F2 (fixed): a value spelt in fullwidth letters whose UTF-8 was read as Latin-1 and encoded again
(mojibake). A client that repairs mojibake (ftfy's ``fix_text``, with its defaults) reads the real
value; no view undid a second layer of UTF-8. Now the fold views read the text repaired
(proxy.core.mojibake; tests/proxy/core/test_mojibake.py holds it to ftfy).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import unicodedata
from collections.abc import Callable
from pathlib import Path

import hyperscan
import pytest

from proxy.core import anyof, fold, scrub
from proxy.core.eventstream import scrub_body
from proxy.core.scrub import ScrubRefused
from proxy.core.values import Finder

ROOT = Path(__file__).resolve().parents[3]
VALUE = "sk-proj-Zq8XwV3nR7tY2uK9pL4mB6cD1eF0gH5j"
FINDER = Finder.for_values([("openai", VALUE, "sk-proj-PLACEHOLDERxxxxxxxxxxxxxxxxxxxxxxx")], runs=True)
MARKS_OR_HIGH = [bytes([c]) for c in sorted(set(scrub._MARKS + bytes(range(0x80, 0x100))) - {0})]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("prefilters")
    code = f"from proxy import prefilters; prefilters.store({str(directory)!r})"
    subprocess.run([sys.executable, "-c", code], env={"SANDGATE_NATIVE": "0", "PATH": ""}, check=True, cwd=ROOT)
    return directory


def _read(store: Path, literals: list[bytes]) -> tuple[Callable[[bytes], set[int] | None] | None, list[str], list[str]]:
    """``any_byte_of``-style set of ``literals`` read from ``store``: (its scanner, REFUSED, COMPILED)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(anyof, "STORE", str(store))
        mp.setattr(anyof, "REFUSED", [])
        mp.setattr(anyof, "COMPILED", [])
        which = anyof.which_of(literals, caseless=False, store=True)
        return which, list(anyof.REFUSED), list(anyof.COMPILED)


def test_redteam52_f1_another_sets_file_under_a_sets_name_is_refused(store: Path, tmp_path: Path) -> None:
    name = anyof._name(MARKS_OR_HIGH, False)
    openers = next(p for p in store.glob("*.hs") if p.stat().st_size < 10_000)  # (the escape openers: small)
    assert openers.stem != name
    shutil.copy(openers, tmp_path / f"{name}.hs")
    which, refused, compiled = _read(tmp_path, MARKS_OR_HIGH)
    assert len(refused) == 1 and "checksum" in refused[0] and compiled == [name]
    assert which is not None and which(b"plain text \\u0073") == {MARKS_OR_HIGH.index(b"\\")}


def test_redteam52_f1_a_stream_mode_database_of_the_same_set_is_refused(tmp_path: Path) -> None:
    name = anyof._name(MARKS_OR_HIGH, False)
    db = hyperscan.Database(mode=hyperscan.HS_MODE_STREAM)
    db.compile(expressions=MARKS_OR_HIGH, ids=list(range(len(MARKS_OR_HIGH))),
               flags=[hyperscan.HS_FLAG_SINGLEMATCH] * len(MARKS_OR_HIGH), literal=True)  # fmt: skip
    data = hyperscan.dumpb(db)
    (tmp_path / f"{name}.hs").write_bytes(anyof._checksum(name, data) + data)
    which, refused, compiled = _read(tmp_path, MARKS_OR_HIGH)
    assert refused == [f"{name[:12]}: not a block-mode database"] and compiled == [name]
    assert which is not None and which(b"x" * 3000 + b"%") == {MARKS_OR_HIGH.index(b"%")}


def test_redteam52_f1_the_escaped_value_is_refused_whatever_stands_in_the_store(store: Path, tmp_path: Path) -> None:
    """The finding end to end, in a process of its own (the scrubbers read the store as they are
    imported): the escape openers' file under the marks' name, and a JSON-escaped value."""
    for p in store.glob("*.hs"):
        shutil.copy(p, tmp_path)
    openers = next(p for p in store.glob("*.hs") if p.stat().st_size < 10_000)
    shutil.copy(openers, tmp_path / f"{anyof._name(MARKS_OR_HIGH, False)}.hs")
    code = f"""
from proxy.core import anyof
anyof.STORE = {str(tmp_path)!r}
from proxy.core.eventstream import scrub_body
from proxy.core.scrub import ScrubRefused
from proxy.core.values import Finder
f = Finder.for_values([("openai", {VALUE!r}, "sk-proj-PLACEHOLDERxxxxxxxxxxxxxxxxxxxxxxx")], runs=True)
body = ('{{"pad": "' + "a" * 2000 + '", "k": "' + "".join("\\\\u%04x" % ord(c) for c in {VALUE!r}) + '"}}').encode()
try:
    scrub_body(body, f, lambda s: None)
    print("passed", anyof.REFUSED)
except ScrubRefused:
    print("refused", len(anyof.REFUSED))
"""
    out = subprocess.run([sys.executable, "-c", code], env={"SANDGATE_NATIVE": "0", "PATH": ""}, cwd=ROOT,
                         capture_output=True, text=True, check=True)  # fmt: skip
    assert out.stdout.split() == ["refused", "1"]


def _fullwidth(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if c.isalnum() else c for c in text)


def test_redteam52_f2_control_fullwidth_utf8_once_is_refused() -> None:
    pad = "lorem ipsum dolor sit amet " * 12
    with pytest.raises(ScrubRefused):
        scrub_body((pad + _fullwidth(VALUE) + pad).encode(), FINDER, lambda _: None)


@pytest.mark.parametrize("channel", ["raw", "json", "sse"])
def test_redteam52_f2_fullwidth_value_as_mojibake_is_refused(channel: str) -> None:
    mojibake = _fullwidth(VALUE).encode("utf-8").decode("latin-1")
    # What a client repairing mojibake reads (ftfy.fix_text: fix_encoding, then fix_character_width).
    assert unicodedata.normalize("NFKC", mojibake.encode("latin-1").decode("utf-8")) == VALUE
    pad = "lorem ipsum dolor sit amet " * 12
    body = {
        "raw": (pad + mojibake + pad).encode(),
        "json": json.dumps({"t": mojibake}).encode(),
        "sse": b"data: " + json.dumps({"choices": [{"delta": {"content": mojibake}}]}).encode() + b"\n\n",
    }[channel]
    try:
        scrub_body(body, FINDER, lambda _: None)
    except ScrubRefused:
        return
    raise AssertionError("a fullwidth value as mojibake passed")


def test_the_fixed_sets_named_here_are_the_stored_ones() -> None:
    """(The tests above name the marks' set by its literals: they are the ones scrub builds.)"""
    assert anyof._name(MARKS_OR_HIGH, False) in anyof._STORED_SETS
    assert anyof._name(fold._CONTESTED_UTF8, False) in anyof._STORED_SETS
