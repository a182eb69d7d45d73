"""A value spread with filler farther apart than a stream keeps (red team 19).

A stream keeps of what it sent only a window (scrub._view_window); an upstream that puts more filler
than that between a value's characters -- what clients drop whole: a terminal's sequences, NUL,
SO and SI, quoted-printable's and HZ's line continuations, bytes above 0x7F -- sent every byte of
it, and the client read the value. Each stream now keeps a skeleton of what it sent (the filler
dropped): the value is refused there, and at most MIN_HOLD - 1 of its characters go out first.
"""

from __future__ import annotations

import codecs
import contextlib
import email.quoprimime
import json
import random
import re
from collections.abc import Callable

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from proxy.core.scrub import (
    _C1_CONTROL,
    _C1_STRINGS,
    _CHARACTER,
    _CSI,
    _CSI_PARAMS,
    _ESCAPE,
    _GROUND,
    _INTERMEDIATE,
    _OTHER_CONTROLS,
    _PLAIN_BEGUN,
    _PLAIN_SEQUENCES,
    _STRING,
    _STRING_END,
    MIN_HOLD,
    BodyScrubber,
    EventScrubber,
    MessageScrubber,
    ScrubRefused,
    _terminal,
    _view_window,
    first_hit,
    scrub_field,
    scrub_whole,
    skeleton,
)
from proxy.core.values import Finder, run_length
from tests.proxy.core.test_runs import longest_run
from tests.proxy.test_redteam16 import strip_ansi
from tests.proxy.test_redteam23 import vt

VALUE = "sk-Ik2zwEQhs7T9aLm0pXv4"
V = VALUE.encode()
FINDER = Finder.for_values([("s", VALUE, "sk-sandgate-placeholder")], runs=True)
WINDOW = _view_window(FINDER)
RUN_LENGTH = run_length(VALUE)  # (a run this long or longer is always found)


def _strip_ansi(b: bytes) -> bytes:
    """strip-ansi (ansi-regex 6) on the text: CSI and OSC, by ESC or by their C1 forms (U+009B,
    U+009D; an OSC ended by BEL, ESC backslash or U+009C), and ISO-2022's designators."""
    text = b.decode("utf-8", "ignore")
    osc = "(?:\x1b\\]|\u009d)[^\x07\x1b\u009c]*(?:\x07|\x1b\\\\|\u009c)"
    text = re.sub("(?:\x1b\\[|\u009b)[0-?]*[ -/]*[@-~]|" + osc + "|\x1b[()$][@-Z]", "", text)
    return text.encode()


# A terminal (ECMA-48, as xterm and tmux parse it): control strings (DCS, SOS, OSC, PM, APC) up to
# BEL, ST or the next ESC; CSI (7-bit or C1); any other escape (intermediates, then a final byte).
_TERMINAL_SEQ = re.compile(
    "[\x1b][PX\\]^_][^\x07\x1b\x9c]*(?:\x07|\x1b\\\\|\x9c)?|[\x90\x98\x9d-\x9f][^\x07\x1b\x9c]*(?:\x07|\x9c)?"
    "|(?:\x1b\\[|\x9b)[0-?]*[ -/]*[@-~]|\x1b[ -/]*[0-~]"
)


def _screen(b: bytes) -> bytes:
    """What a terminal shows of the text, one line after another (its cursor moves aside), or
    what a cleaner keeps that drops what ``str.isprintable`` does (but line ends and tabs)."""
    text = _TERMINAL_SEQ.sub("", b.decode("utf-8", "ignore"))
    return "".join(c for c in text if c.isprintable() or c in "\n\t").encode()


def _printable(b: bytes) -> bytes:
    """A cleaner that keeps what ``str.isprintable`` keeps (and line ends and tabs): an ESC goes,
    the character after it stays."""
    return "".join(c for c in b.decode("utf-8", "ignore") if c.isprintable() or c in "\n\t").encode()


def _vt(b: bytes) -> bytes:
    """A terminal's screen (red team 23's VT500 parser: CAN and SUB abort a sequence)."""
    return vt(b.decode("utf-8", "ignore")).encode()


def _qp(b: bytes) -> bytes:
    return email.quoprimime.decode(b.decode("latin-1")).encode("latin-1")


# (filler, how a client drops it)
FILLERS: dict[str, tuple[bytes, Callable[[bytes], bytes]]] = {
    "csi": (b"\x1b[m", _strip_ansi),
    "osc title": (b"\x1b]0;x\x07", _strip_ansi),
    "charset designator": (b"\x1b(B", _strip_ansi),
    "quoted-printable soft break": (b"=\n", _qp),
    "quoted-printable soft break, crlf": (b"=\r\n", _qp),
    # (Red team 20: blanks before the line end, which RFC 2045 says a decoder deletes; a lone CR.)
    "quoted-printable soft break, blanks": (b"= \t\r\n", _qp),
    "quoted-printable soft break, lone cr": (b"=\r", _qp),
    # (Red team 20: C1's CSI, an OSC ended by C1's ST, an OSC and a CSI longer than a view reads.)
    "c1 csi": ("\u009b1m".encode(), _strip_ansi),
    "osc ended by c1 st": ("\x1b]8;;x\u009c".encode(), _strip_ansi),
    "osc of 600 bytes": (b"\x1b]8;;http://" + b"a" * 600 + b"\x07", _strip_ansi),
    "csi of 4000 bytes": (b"\x1b[" + b"0" * 4000 + b"m", _strip_ansi),
    "hz line continuation": (b"~\n", lambda b: b.decode("hz").encode()),
    "nul": (b"\x00", lambda b: b.replace(b"\x00", b"")),
    "so si": (b"\x0e\x0f", lambda b: b.decode("iso2022_kr", "replace").encode()),
    "zero-width space": ("\u200b".encode(), lambda b: b.decode("utf-8", "ignore").replace("\u200b", "").encode()),
    "letters of another script": ("\u0436".encode(), lambda b: b.decode("utf-8", "ignore").encode("ascii", "ignore")),
    # (Red team 16: C0 controls, DEL, a lone CR, and every other ECMA-48 form.)
    "soh": (b"\x01", _screen),
    "other c0 controls": (b"\x02\x07\x0b\x0c\x1f", _screen),
    "del": (b"\x7f", _screen),
    "backspace, dropped": (b"\x08", _screen),
    "lone cr": (b"\r", _screen),
    "esc keypad mode": (b"\x1b=", _screen),
    "esc save cursor": (b"\x1b7", _screen),
    "esc g1 designator": (b"\x1b)0", _screen),
    "lone st": (b"\x1b\\", _screen),
    "dcs string": (b"\x1bPq#0;2\x1b\\", _screen),
    "apc string ended by bel": (b"\x1b_x\x07", _screen),
    "c1 dcs string": ("\u0090q\u009c".encode(), _screen),
    # (Red team 23: ESC to a printable-only cleaner, which keeps the character a terminal takes as
    # the sequence's final byte; CAN and SUB, which abort a sequence begun.)
    "esc alone": (b"\x1b", _printable),
    "esc soh": (b"\x1b\x01", _printable),
    "esc can": (b"\x1b\x18", _vt),
    "csi aborted by can": (b"\x1b[1\x18", _vt),
    "c1 csi aborted by can": ("\u009b1\x18".encode(), _vt),
    "osc aborted by can": (b"\x1b]0;x\x18", _vt),
    "dcs aborted by sub": (b"\x1bPq\x1a", _vt),
}


def _spread(filler: bytes, gap: int) -> bytes:
    return (filler * (gap // len(filler) + 1)).join(bytes([c]) for c in V)


def _body(data: bytes, size: int) -> tuple[bytes, bool]:
    s = BodyScrubber(FINDER, lambda _: None)
    out = b""
    try:
        for i in range(0, len(data), size):
            out += s.feed(data[i : i + size])
        out += s.finish()
    except ScrubRefused:
        return out, True
    return out, False


@pytest.mark.parametrize("name", FILLERS)
def test_a_value_spread_past_the_window_in_a_body_is_refused_before_it_is_read(name: str) -> None:
    filler, read = FILLERS[name]
    data = _spread(filler, 2 * WINDOW)
    assert read(data) == V  # (what a client reads of the whole)
    out, refused = _body(data, 1024)
    assert refused
    assert V[:MIN_HOLD] not in read(out) and V[:MIN_HOLD] not in skeleton(out)


@pytest.mark.parametrize("name", FILLERS)
def test_a_value_spread_over_messages_past_the_window_is_refused(name: str) -> None:
    """WebSocket: a character and the filler in each message."""
    filler, read = FILLERS[name]
    s = MessageScrubber(FINDER, lambda _: None)
    out = b""
    with pytest.raises(ScrubRefused):
        for n, c in enumerate(V):
            message = bytes([c]) + filler * (2 * WINDOW // len(filler) + 1)
            out += b"".join(d for _, d in s.feed(message, n)) + b"".join(d for _, d in s.end_segment())
        out += b"".join(d for _, d in s.finish())
    assert V[:MIN_HOLD] not in read(out)


def _delta(text: str) -> bytes:
    return b"data: " + json.dumps({"choices": [{"index": 0, "delta": {"content": text}}]}).encode() + b"\n\n"


def _contents(sse: bytes) -> str:
    return "".join(
        json.loads(line[6:])["choices"][0]["delta"]["content"]
        for line in sse.split(b"\n")
        if line.startswith(b"data: {")
    )


@pytest.mark.parametrize(
    "name", [n for n in FILLERS if n not in ("so si", "hz line continuation") and not n.startswith("quoted")]
)
def test_a_value_spread_over_token_deltas_past_the_window_is_refused(name: str) -> None:
    """A token stream: a character and the filler in each delta (JSON carries the filler as text)."""
    filler, read = FILLERS[name]
    text = filler.decode("utf-8")
    s = EventScrubber(FINDER, lambda _: None, "sse")
    out = b""
    with pytest.raises(ScrubRefused):
        for c in VALUE:
            out += s.feed(_delta(c + text * (2 * WINDOW // len(filler) + 1)))
        out += s.finish()
    assert V[:MIN_HOLD] not in read(_contents(out).encode())


@given(
    seed=st.integers(0, 2**32),
    kinds=st.lists(st.sampled_from(sorted(FILLERS)), min_size=1, max_size=3),
    gap=st.sampled_from([1, 40, WINDOW // 2, WINDOW, 2 * WINDOW + 7]),
    size=st.sampled_from([7, 100, 1024, 5000]),
)
@settings(max_examples=60, deadline=None)
def test_a_value_spread_with_any_filler_never_leaves_more_than_a_stub(
    seed: int, kinds: list[str], gap: int, size: int
) -> None:
    """Fillers mixed, gaps from none (the value plain: replaced) to past the window, any chunk size:
    what went out, its filler dropped, holds neither the value nor a run of it."""
    rnd = random.Random(seed)
    parts = []
    for c in V:
        parts.append(bytes([c]))
        filler = FILLERS[rnd.choice(kinds)][0]
        parts.append(filler * (rnd.randint(0, gap) // len(filler)))
    out, _ = _body(b"".join(parts), size)
    assert first_hit(FINDER, [skeleton(out)]) is None


@given(data=st.binary(min_size=1, max_size=6000), cuts=st.lists(st.integers(1, 6000), max_size=8), seed=st.integers())
@settings(max_examples=150, deadline=None)
def test_binary_and_other_scripts_without_a_value_go_out_unchanged(data: bytes, cuts: list[int], seed: int) -> None:
    """No value: the skeleton refuses nothing and holds nothing back for good, in a body stream and
    in a message stream (random bytes, and text in another script with ASCII between)."""
    rnd = random.Random(seed)
    text = "".join(rnd.choice(["\u0436", "\u4e2d", " ", "a", "1", "\x1b[m", "=\n"]) for _ in range(len(data)))
    for body in (data, text.encode()):
        points = sorted({c % len(body) for c in cuts} - {0})
        pieces = [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True)]
        s = BodyScrubber(FINDER, lambda _: None)
        assert b"".join(s.feed(p) for p in pieces) + s.finish() == body
        m = MessageScrubber(FINDER, lambda _: None)
        out = b""
        for n, p in enumerate(pieces):
            out += b"".join(d for _, d in m.feed(p, n)) + b"".join(d for _, d in m.end_segment())
        out += b"".join(d for _, d in m.finish())
        assert out == body


# Control characters written as escapes (red team 20): a JSON log with colours, JavaScript's and
# C's escapes. The backslash view turns them into the bytes; its shift view drops the sequences.
ESCAPED_CONTROLS = {
    "json csi": (b"\\u001b[1m", lambda b: json.loads(b"[" + b + b"]")[0].encode()),
    "json so si": (b"\\u000e\\u000f", lambda b: json.loads(b"[" + b + b"]")[0].encode("latin-1")),
    "js hex csi": (b"\\x1b[1m", lambda b: codecs.decode(b, "unicode_escape").encode("latin-1")),
    "octal csi": (b"\\033[1m", lambda b: codecs.decode(b, "unicode_escape").encode("latin-1")),
}
PIECES = [b"sk-Ik2z", b"wEQhs", b"7T9aL", b"m0pXv4"]  # (each shorter than a run)


@pytest.mark.parametrize("name", ESCAPED_CONTROLS)
def test_a_value_in_pieces_between_escaped_terminal_controls_is_refused(name: str) -> None:
    escape, read = ESCAPED_CONTROLS[name]
    body = b'"' + escape.join(PIECES) + b'"'
    assert _strip_ansi(read(body)).decode("latin-1").replace("\x0e", "").replace("\x0f", "").strip('"') == VALUE
    assert first_hit(FINDER, [body]) is not None
    for size in (1, 7, len(body)):
        out, refused = _body(body, size)
        assert refused and V[:MIN_HOLD] not in skeleton(out), size


ESCAPED_FILLERS = {
    "zero-width space": b"\\u200b",
    "soft hyphen": b"\\u00AD",
    "byte order mark": b"\\ufeff",
    "nul": b"\\u0000",
    "so si": b"\\u000e\\u000F",
    "csi": b"\\u001b[1m",
    "c1 csi": b"\\u009b1m",
    "cyrillic letter": b"\\u0436",
}


def _json_read() -> Callable[[bytes], bytes]:
    """A client's json.loads, then a terminal's sequences, controls and what is not ASCII dropped."""

    def read(body: bytes) -> bytes:
        text = _strip_ansi(json.loads(body)["t"].encode()).decode()
        return "".join(c for c in text if c.isascii() and c.isprintable()).encode()

    return read


@pytest.mark.parametrize("name", ESCAPED_FILLERS)
def test_a_value_spread_with_escaped_filler_past_the_window_is_refused(name: str) -> None:
    """Filler written as JSON escapes (6 bytes of text each), more of it between a value's
    characters than the window holds: a client's json.loads, then dropping what it drops, reads
    the value (red team 20)."""
    filler = ESCAPED_FILLERS[name] * (WINDOW // 6 + 1)
    body = b'{"t":"' + filler.join(bytes([c]) for c in V) + b'"}'
    read = _json_read()
    assert read(body) == V
    # (1, 2, 5: pieces that cut every escape; each piece alone holds no filler, and the skeleton
    # stayed off, or went off, the value whole in what went out)
    for size in (4096, 1000, 61, 5, 2, 1):
        out, refused = _body(body, size)
        assert refused, size
        assert V[:MIN_HOLD] not in read(re.sub(rb"\\(?:u[0-9a-fA-F]{0,3})?\Z", b"", out) + b'"}'), size


@given(text=st.text(min_size=1, max_size=3000), cuts=st.lists(st.integers(1, 3000), max_size=6))
@settings(max_examples=100, deadline=None)
def test_json_with_escaped_text_of_any_script_goes_out_unchanged(text: str, cuts: list[int]) -> None:
    """What the escaped filler's skeleton drops is what ``json.dumps`` writes for any text that is
    not ASCII: a body of it holds no value, and goes out as it came, however cut."""
    body = json.dumps({"t": text}).encode()
    s = BodyScrubber(FINDER, lambda _: None)
    out, at = b"", 0
    for cut in sorted(set(cuts)):
        out += s.feed(body[at:cut])
        at = max(at, cut)
    out += s.feed(body[at:]) + s.finish()
    assert out == body


MIXED = [b"\x1b[m", b"\x00", "\u200b".encode(), b"=\n", b"\x0e\x0f", "\u009b1m".encode(), b"~\n", b"\x01\x7f", b"\x1b="]


def _mixed(value: bytes, gap: int = 1) -> bytes:
    return b"".join(bytes([c]) + MIXED[i % len(MIXED)] * gap for i, c in enumerate(value))


@pytest.mark.parametrize("gap", [1, 3])
def test_a_value_spread_with_mixed_filler_in_a_whole_body_is_refused(gap: int) -> None:
    """A body checked whole (up to 256 KiB, Content-Length kept), and a header field: each kind of
    filler a view drops, but not seven kinds mixed; the skeleton drops them all."""
    body = b"KEY=" + _mixed(V, gap) + b"\n"
    assert V in skeleton(body)
    with pytest.raises(ScrubRefused, match="spread with filler"):
        scrub_whole(body, FINDER, lambda _: None)
    with pytest.raises(ScrubRefused, match="spread with filler"):
        scrub_field(body, FINDER, lambda _: None)
    assert first_hit(FINDER, [b"x-note", body]) is not None


def test_a_value_spread_with_the_field_separator_is_refused_but_not_read_across_two_fields() -> None:
    """FIELD_SEPARATOR (SOH) joins the fields first_hit searches at once: it is no filler between
    two of them (a value's pieces in fields of their own, each shorter than a run, are apart), but
    is inside one (a decoded Basic credential, an audit text)."""
    pieces = [V[i : i + 5] for i in range(0, len(V), 5)]
    assert first_hit(FINDER, pieces) is None
    assert first_hit(FINDER, [b"\x01".join(pieces)]) is not None
    assert first_hit(FINDER, [b"x-note", b"k=" + b"\x01".join(bytes([c]) for c in V)]) is not None
    assert first_hit(FINDER, [b"k=" + b"\x01\x1b=".join(bytes([c]) for c in V)]) is not None


def test_a_value_in_another_case_spread_with_mixed_filler_in_a_whole_body_is_refused() -> None:
    with pytest.raises(ScrubRefused):
        scrub_whole(b"KEY=" + _mixed(V.upper()) + b"\n", FINDER, lambda _: None)


@given(text=st.text(min_size=1, max_size=2000), seed=st.integers())
@settings(max_examples=100, deadline=None)
def test_a_whole_body_of_any_text_with_mixed_filler_and_no_value_goes_out_unchanged(text: str, seed: int) -> None:
    rng = random.Random(seed)
    body = b"".join(ch.encode() + (rng.choice(MIXED) if rng.random() < 0.3 else b"") for ch in text)
    assert scrub_whole(body, FINDER, lambda _: None) == body


# Differential: what a hostile upstream may put between a value's characters -- controls, escape
# openers, pieces of sequences well-formed or not, their C1 forms, parameters -- against what four
# clients read of what the scrubber let out: a terminal (red team 23's VT500 parser), a
# printable-only cleaner, strip-ansi, and strip-ansi then that cleaner. (A terminal's cursor moves,
# BS, CR and CSI C/D/G/K, aside: a stated limit.)
_TOKENS = [
    b"\x00", b"\x01", b"\x07", b"\x0b", b"\x0e", b"\x0f", b"\x18", b"\x1a", b"\x1b", b"\x7f", b"\x1b[", b"\x1b[1",
    b"\x1b[1m", b"\x1b[?25l", b"\x1b]", b"\x1b]0;t", b"\x1b\\", b"\x1bP", b"\x1b(", b"\x1b)0", b"\x1b=", b"\x1b#",
    b"\x1b ", b";", b"1", b"m", "\u009b".encode(), "\u009d".encode(), "\u0090".encode(), "\u009c".encode(),
    "\u200b".encode(), "\u00e9".encode(),
]  # fmt: skip


def _ansi_regex(b: bytes) -> bytes:
    """strip-ansi 7 as JavaScript runs it (ansi-regex 6, red team 16's port)."""
    return strip_ansi(b.decode("utf-8", "ignore")).encode()


_READERS: dict[str, Callable[[bytes], bytes]] = {
    "terminal": _vt,
    "printable": _printable,
    "strip-ansi": _ansi_regex,
    "strip-ansi, printable": lambda b: _printable(_ansi_regex(b)),
}


@given(
    gaps=st.lists(st.lists(st.sampled_from(_TOKENS), max_size=3), min_size=len(V) - 1, max_size=len(V) - 1),
    size=st.sampled_from([1, 5, 64, 4096]),
)
@settings(max_examples=300, deadline=None)
def test_no_client_reads_a_run_of_a_value_spread_with_any_controls(gaps: list[list[bytes]], size: int) -> None:
    """(A run shorter than run_length may go out: pieces of a value whose characters between a
    sequence takes as its own, ``ESC [ Q``, are pieces shorter than a run: a stated limit.)"""
    data = b"k=" + b"".join(bytes([c]) + b"".join(g) for c, g in zip(V, [*gaps, []], strict=True)) + b"\n"
    out, _ = _body(data, size)
    for name, read in _READERS.items():
        assert longest_run(read(out), VALUE) < RUN_LENGTH, name
    whole = b""
    with contextlib.suppress(ScrubRefused):
        whole = scrub_whole(data, FINDER, lambda _: None)
    for name, read in _READERS.items():
        assert longest_run(read(whole), VALUE) < RUN_LENGTH, name


_PIECES = [
    b"\x00", b"\x01", b"\x07", b"\x0b", b"\x18", b"\x1a", b"\x1b", b"\x7f", b"[", b"]", b"P", b"X", b"^", b"_",
    b"\\", b"(", b" ", b"#", b"1", b";", b"?", b"m", b"a", b"Z", b"\n", "\u009b".encode(), "\u009c".encode(),
    "\u009d".encode(), "\u0090".encode(), "\u0085".encode(), "\u00e9".encode(),
]  # fmt: skip


@given(pieces=st.lists(st.sampled_from(_PIECES), max_size=40))
@settings(max_examples=500, deadline=None)
@example(pieces=[b"\x1b", b"\x1b", b"1", b"["])  # (an ESC that a second ESC cut short, then a CSI's opener)
@example(pieces=[b"\x1b", b"[", b"1", b"\x1b", b"1"])  # (a CSI that an ESC cut short)
def test_the_terminal_reading_is_what_a_terminal_shows(pieces: list[bytes]) -> None:
    """The skeleton's terminal reading against red team 23's VT500 parser, on any mix of controls,
    sequence openers, parameters, finals and text (its cursor moves aside: no BS, CR, TAB, and no
    CSI final that moves or erases, C, D, G, K)."""
    data = b"".join(pieces)
    text, _ = _terminal(data, b"\n")
    shown = vt(data.decode()).encode()
    assert text.translate(None, bytes(range(0x80, 0x100))) == shown.decode().encode("ascii", "ignore")


_SPECIAL = re.compile(rb"[\x00-\x1f\x7f]|\xc2[\x80-\x9f]")


def _terminal_control_by_control(data: bytes, kept: bytes) -> tuple[bytes, bytes]:
    """_terminal as it was before 2026-12-05 (late): one step for every control, in plain text too
    (binary bytes hold one every ~8 bytes: a third of a 64 KiB binary body's scrub). The reference
    the one-pass reading of plain text is held to."""
    if len(data.translate(None, _OTHER_CONTROLS)) == len(data) and _C1_CONTROL.search(data) is None:
        text = _PLAIN_SEQUENCES.sub(b"", data)
        at = text.find(b"\x1b")
        if at < 0:
            return text, b""
        if _PLAIN_BEGUN.match(text, at) is not None and data.endswith(text[at:]):
            return text[:at], text[at:]
    out: list[bytes] = []
    i, n, state, begun = 0, len(data), _GROUND, 0
    while i < n:
        if state == _GROUND:
            m = _SPECIAL.search(data, i)
            if m is None:
                out.append(data[i:])
                break
            if m.start() > i:
                out.append(data[i : m.start()])
            i = m.start()
        b = data[i]
        if b == 0x18 or b == 0x1A:
            state, i = _GROUND, i + 1
        elif b == 0x1B:
            state, begun, i = _ESCAPE, i, i + 1
        elif b == 0xC2 and i + 1 < n and 0x80 <= data[i + 1] <= 0x9F:
            c = data[i + 1]
            if state == _STRING and c == 0x9C:
                state = _GROUND
            else:
                state = _CSI if c == 0x9B else _STRING if c in _C1_STRINGS else _GROUND
            begun, i = i, i + 2
        elif b < 0x20 or b == 0x7F:
            if state == _STRING:
                if b == 0x07:
                    state = _GROUND
            elif b != 0x7F and kept.find(b) >= 0:
                out.append(data[i : i + 1])
            i += 1
        elif state == _STRING:
            m = _STRING_END.search(data, i)
            i = m.start() if m is not None else n
        elif b >= 0x80:
            m = _CHARACTER.match(data, i)
            i = m.end() if m is not None else i + 1
            if state != _CSI:
                state = _GROUND
        elif state == _ESCAPE:
            state = _CSI if b == 0x5B else _STRING if b in b"]PX^_" else _INTERMEDIATE if b < 0x30 else _GROUND
            i += 1
        elif state == _INTERMEDIATE:
            if b >= 0x30:
                state = _GROUND
            i += 1
        else:
            m = _CSI_PARAMS.match(data, i)
            i = m.end() if m is not None else i
            if i < n and 0x40 <= data[i] <= 0x7E:
                state, i = _GROUND, i + 1
    if state != _GROUND:
        return b"".join(out), data[begun:]
    if data[-1:] == b"\xc2":
        return b"".join(out)[:-1], b"\xc2"
    return b"".join(out), b""


@given(
    data=st.one_of(
        st.binary(max_size=3000),
        st.lists(st.one_of(st.sampled_from([*_PIECES, b"\t", b"\r", b"\x1a", b"\xc2"]), st.binary(max_size=4)),
                 max_size=200).map(b"".join),
    ),
    kept=st.sampled_from([b"\t\n\r", b"\t\n\r\x01", b"\n", b"\x18\x1a\x7f\t"]),
)  # fmt: skip
@settings(max_examples=1000, deadline=None)
def test_the_terminal_reading_of_plain_text_in_one_pass_is_the_control_by_control_one(data: bytes, kept: bytes) -> None:
    assert _terminal(data, kept) == _terminal_control_by_control(data, kept)
