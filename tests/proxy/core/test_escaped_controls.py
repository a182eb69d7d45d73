"""A value spread with controls written as escapes (red team 44, finding 2).

A client that decodes a body (a URL-encoded form, quoted-printable, a C or shell string, JSON) and
then keeps only what is printable reads ``k%01e%01y`` as ``key``. The skeleton (what clients drop
whole taken out) read raw controls and JSON's ``\\u0001`` only: the same controls as ``%01``,
``=01``, ``\\x01``, ``\\001``, ``\\b``, ``\\f``, ``\\a``, ``\\v``, ``\\e`` (and ESC with a CSI
behind it in each form) went out in an ASCII body, near or far apart. Each form here is written
with the client's own decoding, so each case first shows that the client reads the value.
"""

from __future__ import annotations

import codecs
import json
import quopri
import re
import string
import unicodedata
import urllib.parse
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.core.scrub import (
    MIN_HOLD,
    EventScrubber,
    ScrubRefused,
    first_hit,
    scrub_field,
    skeleton,
)
from tests.proxy.core.test_spread import FINDER, WINDOW, V
from tests.proxy.core.test_spread import _body as _stream  # (a stream of reads of one size: what went out, refused)

_CSI = re.compile(rb"\x1b\[[0-?]*[ -/]*[@-~]")


def _clean(b: bytes) -> bytes:
    """strip-ansi's CSI, then what ``str.isprintable`` keeps (and line ends)."""
    return bytes(c for c in _CSI.sub(b"", b) if 0x20 <= c < 0x7F or c in b"\t\n\r")


def _c_unescape(b: bytes) -> bytes:
    """``printf %b`` / ``echo -e`` (and Python's unicode_escape): ``\\e`` is ESC."""
    return codecs.decode(b.replace(b"\\e", b"\\x1b"), "unicode_escape").encode("latin-1")


def _py_unescape(b: bytes) -> bytes:
    """Python's ``unicode_escape`` (``\\U00000001``, ``\\N{ZERO WIDTH SPACE}``, ``\\x73``), as UTF-8."""
    return codecs.decode(b, "unicode_escape").encode("utf-8", "surrogatepass")


def _js_braces(b: bytes) -> bytes:
    """JavaScript's (and Rust's) ``\\u{1}``, as UTF-8."""
    return re.sub(rb"\\u\{([0-9a-fA-F]{1,6})\}", lambda m: chr(int(m[1], 16)).encode(), b)


def _js_unescape(b: bytes) -> bytes:
    """JavaScript's ``unescape()``: ``%u200B`` and ``%73``, as UTF-8."""
    return re.sub(rb"%u([0-9a-fA-F]{4})|%([0-9a-fA-F]{2})", lambda m: chr(int(m[1] or m[2], 16)).encode(), b)


def _qp(b: bytes) -> bytes:
    return quopri.decodestring(b)


def _json(b: bytes) -> bytes:
    return json.loads(b"[" + b + b"]")[0].encode()


# name -> (the filler as the body writes it, the client's decoding of the whole body)
FORMS: dict[str, tuple[bytes, Callable[[bytes], bytes]]] = {
    "percent-01": (b"%01", urllib.parse.unquote_to_bytes),
    "percent-7f": (b"%7F", urllib.parse.unquote_to_bytes),
    "percent-esc-csi": (b"%1b[1m", urllib.parse.unquote_to_bytes),
    "qp-01": (b"=01", _qp),
    "qp-1f": (b"=1F", _qp),
    "qp-esc-csi": (b"=1B[0m", _qp),
    "hex-01": (b"\\x01", _c_unescape),
    "hex-esc-csi": (b"\\x1b[32m", _c_unescape),
    "octal-001": (b"\\001", _c_unescape),
    "octal-esc-csi": (b"\\033[m", _c_unescape),
    "bell": (b"\\a", _c_unescape),
    "vtab": (b"\\v", _c_unescape),
    "e-esc-csi": (b"\\e[1m", _c_unescape),
    "json-backspace": (b"\\b", _json),
    "json-formfeed": (b"\\f", _json),
    # (the escapes of any character that views read a value's own characters in: red team 47, F5)
    "py-long-01": (b"\\U00000001", _py_unescape),
    "py-long-200b": (b"\\U0000200b", _py_unescape),
    "py-long-esc-csi": (b"\\U0000001b[1m", _py_unescape),
    "py-named-soh": (b"\\N{START OF HEADING}", _py_unescape),
    "py-named-zwsp": (b"\\N{ZERO WIDTH SPACE}", _py_unescape),
    "py-named-alias": (b"\\N{SOH}", _py_unescape),
    "js-braces-1": (b"\\u{1}", _js_braces),
    "js-braces-200b": (b"\\u{200B}", _js_braces),
    "percent-u-0001": (b"%u0001", _js_unescape),
    "percent-u-200b": (b"%u200B", _js_unescape),
    "percent-u-esc-csi": (b"%u001b[1m", _js_unescape),
}


def _body(name: str, repeat: int, encode_value: bool = False) -> bytes:
    filler, _ = FORMS[name]
    chars = [bytes([c]) for c in V]
    if encode_value:  # every character of the value encoded in the same form (a form body)
        chars = [(b"%%%02X" if name.startswith("percent") else b"=%02X" if name.startswith("qp") else b"\\x%02x") % c
                 for c in V]  # fmt: skip
    text = (filler * repeat).join(chars)
    return b'"' + text + b'"' if name.startswith("json") else b"KEY: " + text + b"\n"


def _read(name: str, body: bytes) -> bytes:
    return _clean(FORMS[name][1](body))


def _read_sent(name: str, out: bytes) -> bytes:
    """What the client reads of what was sent before a refusal: an escape cut at the end set aside,
    a JSON string closed."""
    out = re.sub(
        rb"(?:\\(?:x[0-9a-fA-F]?|[0-7]{1,2}|U[0-9a-fA-F]{0,7}|u\{[0-9a-fA-F]*|N(?:\{[^}]*)?)?|%u[0-9a-fA-F]{0,3}"
        rb"|[%=][0-9a-fA-F]?|\x1b|(?:\\e|\\0?33|\\x1b|%1b|=1B|\\U0000001b|%u001b)\[[0-9]*)\Z",
        b"",
        out,
    )
    if name.startswith("json"):
        return _read(name, out + b'"') if out else b""
    return _read(name, out)


@pytest.mark.parametrize("name", FORMS)
def test_a_value_between_escaped_controls_in_a_whole_body_or_field_is_refused(name: str) -> None:
    body = _body(name, 1)
    assert V in _read(name, body)  # (the client reads the value)
    with pytest.raises(ScrubRefused):
        scrub_field(body, FINDER, lambda _: None)
    assert first_hit(FINDER, [b"x-a: 1", body]) is not None  # (a header field among others)


@pytest.mark.parametrize("name", FORMS)
@pytest.mark.parametrize("size", [1, 7, 61, 4096])
def test_a_value_between_escaped_controls_in_a_stream_is_refused_before_it_is_read(name: str, size: int) -> None:
    body = _body(name, 1)
    out, refused = _stream(body, size)
    assert refused
    assert V[:MIN_HOLD] not in _read_sent(name, out)


@pytest.mark.parametrize("name", FORMS)
def test_a_value_spread_with_escaped_controls_past_the_window_is_refused(name: str) -> None:
    """More escaped controls between a value's characters than a stream's window holds."""
    filler, _ = FORMS[name]
    body = _body(name, WINDOW // len(filler) + 1)
    assert V in _read(name, body)
    with pytest.raises(ScrubRefused):
        scrub_field(body, FINDER, lambda _: None)
    for size in (4096, 1000, 61, 2, 1):  # (2, 1: pieces that cut every escape)
        out, refused = _stream(body, size)
        assert refused, size
        assert V[:MIN_HOLD] not in _read_sent(name, out), size


@pytest.mark.parametrize("name", [n for n in FORMS if not n.startswith(("json", "octal", "bell", "vtab", "e-", "js-"))])
def test_a_value_encoded_whole_between_escaped_controls_is_refused(name: str) -> None:
    """Every character encoded as the filler is (a form body, quoted-printable of it all)."""
    body = _body(name, 1, encode_value=True)
    assert V in _read(name, body)
    with pytest.raises(ScrubRefused):
        scrub_field(body, FINDER, lambda _: None)
    out, refused = _stream(body, 61)
    assert refused
    assert V[:MIN_HOLD] not in _read_sent(name, out)


@pytest.mark.parametrize("control", ["%01", "%u0001", "\\\\U00000001", "\\\\u{1}", "\\\\N{SOH}", "%u200B"])
def test_a_value_between_escaped_controls_in_token_stream_events_is_refused(control: str) -> None:
    """The same in a chat completion stream: a character per event, an escaped control beside it."""
    s = EventScrubber(FINDER, lambda _: None)
    events = [json.dumps({"choices": [{"delta": {"content": "\x01" + chr(c)}}]}).replace("\\u0001", control) for c in V]
    with pytest.raises(ScrubRefused):
        for e in events:
            s.feed(b"data: " + e.encode() + b"\n\n")
        s.finish()


@given(st.text(alphabet=st.characters(codec="ascii"), max_size=400))
@settings(max_examples=300, deadline=None)
def test_escaped_text_without_a_value_goes_out_unchanged(text: str) -> None:
    """Percent-, quoted-printable-, C- and JSON-escaped text that holds no value goes out as it came."""
    for body in (
        urllib.parse.quote(text).encode(),
        quopri.encodestring(text.encode()),
        text.encode("unicode_escape"),
        json.dumps(text).encode(),
    ):
        assert scrub_field(body, FINDER, lambda _: None) == body
        out, refused = _stream(body, 7)
        assert not refused and out == body


def _js_escape(text: str) -> bytes:
    """JavaScript's ``escape()``: ``%XX`` below U+0100, ``%uXXXX`` above (UTF-16 units)."""
    keep = set(string.ascii_letters + string.digits + "@*_+-./")
    units = text.encode("utf-16-be", "surrogatepass")
    out = []
    for i in range(0, len(units), 2):
        u = int.from_bytes(units[i : i + 2])
        out.append(chr(u) if chr(u) in keep else f"%{u:02X}" if u < 0x100 else f"%u{u:04X}")
    return "".join(out).encode()


@given(st.text(max_size=200))
@settings(max_examples=300, deadline=None)
def test_text_in_other_escapes_of_any_character_goes_out_unchanged(text: str) -> None:
    """Any text (controls and characters that are not ASCII among it) in the escapes whose filler is
    now read -- Python's ``\\U``, ``\\N{}``, JavaScript's ``%uXXXX`` and ``\\u{}`` -- goes out as it came
    when it holds no value."""
    for body in (
        text.encode("unicode_escape"),
        "".join(f"\\N{{{unicodedata.name(c)}}}" if unicodedata.name(c, "") else c for c in text).encode(
            "ascii", "backslashreplace"
        ),
        _js_escape(text),
        "".join(c if " " <= c <= "~" else f"\\u{{{ord(c):x}}}" for c in text).encode(),
    ):
        assert scrub_field(body, FINDER, lambda _: None) == body
        out, refused = _stream(body, 7)
        assert not refused and out == body


@pytest.mark.parametrize(
    ("text", "read"),
    [
        (b"a\\001b", b"ab"),
        (b"a\\0013", b"a3"),  # (three digits at most: \001, then 3)
        (b"a\\1b", b"ab"),
        (b"a\\12b", b"a\\12b"),  # (\12 is LF, which a client keeps: not filler)
        (b"a\\011b", b"a\\011b"),  # (TAB)
        (b"a%09b%0Ac%0dd", b"a%09b%0Ac%0dd"),
        (b"a%1b[1mb", b"ab"),
        (b"a=1B[0mb", b"ab"),
        (b"a\\x1b[32mb\\e[0mc", b"abc"),
        (b"a%7Fb=7fc", b"abc"),
        (b"a\\1", b"a\\1"),  # (at the end: a digit may follow, begun)
        (b"a%1b", b"a%1b"),  # (ESC at the end: a CSI may follow, begun)
        (b"100%1 of 2", b"100%1 of 2"),
    ],
)
def test_what_the_skeleton_drops_of_escaped_controls(text: bytes, read: bytes) -> None:
    assert skeleton(text) == read


# -- red team 47: the value's characters and the filler in escapes of two syntaxes ------------------

MIXED_ESCAPES = {
    # JSON's \u0001 between JSON-escaped characters: json.loads, then a printable-only cleaner
    "json-u0001-json-chars": (b"\\u0001", lambda c: b"\\u%04x" % c, lambda b: _clean(_json(b))),
    "json-u001f-hex-chars": (b"\\u001F", lambda c: b"\\x%02x" % c, lambda b: _clean(_c_unescape(b))),
    "json-u0001-octal-chars": (b"\\u0001", lambda c: b"\\%03o" % c, lambda b: _clean(_c_unescape(b))),
    # C's NUL as \0 between escaped characters: \0 then \x32 is NUL then "2" (a view that decoded
    # \x32 first read \02, one octal escape, and the digit went with it)
    "nul-0-hex-chars": (b"\\0", lambda c: b"\\x%02x" % c, lambda b: _clean(_c_unescape(b))),
    "nul-00-hex-chars": (b"\\00", lambda c: b"\\x%02x" % c, lambda b: _clean(_c_unescape(b))),
}


@pytest.mark.parametrize("name", MIXED_ESCAPES)
def test_rt47_a_value_escaped_between_escaped_controls_of_another_syntax_is_refused(name: str) -> None:
    filler, escape, read = MIXED_ESCAPES[name]
    body = b'"' + filler.join(escape(c) for c in V) + b'"'
    assert V in read(body)
    with pytest.raises(ScrubRefused):
        scrub_field(body, FINDER, lambda _: None)
    for size in (1, 7, 61, 4096):
        assert _stream(body, size)[1], size
