"""Red team, fifth pass: invariant 1 (no real value back to the agent) from the outside, against the
encodings and token-stream reading the team added after red team 3.

Each test is one attack on a real ``sandgate proxy`` (the world of tests/proxy/test_redteam.py: its
hostile HTTPS upstream, bound to the ``rthostile`` secret, which receives the real key after the
swap and tries to hand it back). A test decodes what the agent read the way a real client would
(``bytes.decode`` of the declared charset, Python's ``unicode_escape``, Node's string literals,
``unescape`` and ``JSON.parse``, ``str.splitlines`` as httpx's ``iter_lines``, an HTML text
extractor, the AWS event-stream framing) and asserts the key is not there. A refusal (502
``secret_value_inbound``, a cut body, a 1008 close) holds the line. A break is marked
``xfail(strict=True)``: its fix turns it into a failure to unmark.

Fixed since, their tests passing: ``python-escapes``, ``js-escapes``, ``css-escapes``,
``utf7-long-runs``, ``ebcdic-ascii-head`` (every body with a byte above 0x7F gets an EBCDIC view),
``stateful-charsets``, ``wrapped-base64-short-lines`` (16 base64 characters before a break now),
``json-string-deltas``, ``unparsable-to-python`` (JSON read as a lenient client reads it),
``ndjson-other-line-breaks`` (lines end where ``str.splitlines`` ends them) and
``streamed-padded-references`` (a numeric escape padded with 8 or more zeros is refused: escapes
of unbounded length could outrun any window a stream keeps), and ``aws-event-stream`` (a body
that begins with an event-stream prelude is read message by message: proxy/core/eventstream.py),
and ``ai-sdk-data-stream`` (fixstream, 2026-12-03: a part line -- a one- or two-character type
code, a colon, a JSON value -- is read as a JSON line whose code is an output of its own, and two
in a row make a body a token stream, whatever its label). Still open, an expected failure:
``html-markup-split``.

Breaks:

- ``python-escapes``: the key as a Python/C string literal with octal escapes of one or two digits
  (``\\60`` is ``0``; the view reads only three-digit octal) or named escapes (``\\N{DIGIT ZERO}``,
  no view). Python's ``unicode_escape`` codec decodes both.
- ``js-escapes``: JavaScript ``\\u{00000072}`` (any number of leading zeros; the view reads at most
  four) and ``%u0072`` (``unescape``, the global every JS runtime has; no view).
- ``css-escapes``: CSS escapes (``\\000072``, 1-6 hex digits and an optional space) in a
  stylesheet's ``content:``; a browser renders the key. No view.
- ``utf7-long-runs``: UTF-7 (``charset=utf-7``) with the key's characters in base64 runs of four or
  more between direct characters: the one-run form is not there, and the UTF-7 view is only asked
  for where a run of one to three characters is.
- ``ebcdic-ascii-head``: an EBCDIC body (``charset=cp500``) whose first 4 KiB are EBCDIC spaces or
  punctuation (bytes below 0x80, so ``isascii()``): the EBCDIC view is asked for only when those
  bytes look like EBCDIC letters. A fixed-width mainframe record is padded with exactly that.
- ``stateful-charsets``: ISO-2022-JP (an ``ESC ( B`` between characters: "switch to ASCII", a
  no-op the decoder drops) and HZ (``~`` + newline: a line continuation, dropped). Declared
  charsets ``requests``' ``.text`` decodes; no view removes the shift sequences.
- ``wrapped-base64-short-lines``: base64 wrapped at a width under 40 (32), or whose first line is
  short because a label precedes the blob on it: the wrapped view wants 40 base64 characters
  before every line break, and the blob's first line has fewer.
- ``json-string-deltas``: a token stream whose events are JSON strings (``data: "Your key: rt..."``,
  and the same as NDJSON lines): only a payload beginning with ``{`` or ``[`` is parsed, so the
  stitched text is the raw one, quotes between the halves; the client ``JSON.parse``s each and
  concatenates.
- ``unparsable-to-python``: an SSE event the scrubber's ``json.loads`` rejects but a JS client
  accepts -- an integer of 5000 digits (Python's int digit limit, a ValueError) or an invalid
  UTF-8 byte in an unrelated field (TextDecoder replaces it): the event's text is read as raw
  bytes under another path than the next event's, so the two halves of the key are never in one
  stream. ``JSON.parse`` reads both events; the deltas stitch to the key.
- ``ndjson-other-line-breaks``: ``application/x-ndjson`` whose documents are separated by CR, VT,
  FF, RS, NEL or U+2028 instead of LF. The scrubber splits lines at LF only: one "line" that is no
  JSON, read raw. httpx's ``iter_lines`` (the Ollama client) splits as ``str.splitlines`` does, and
  stitches ``response``.
- ``streamed-padded-references``: HTML numeric references with 200 leading zeros each (the view
  reads any number, and a whole body is refused), streamed in a chunked body or the fragments of
  one WebSocket message. A chunk boundary inside a run of zeros is not a cut escape the hold
  recognises, so the hold never starts; the stream keeps ~1.2 KB of what it sent and the value's
  encoding is ~9 KB. ``html.unescape``: the key.
- ``html-markup-split``: ``<span>rtREALhos</span><span>tile...</span>``: the text an HTML-to-text
  client (an agent's page reader) extracts is the key; no byte stream holds it. Kin of the tracked
  "value split between two fields of one document", for the commonest document an agent reads.
- ``aws-event-stream``: a Bedrock ``InvokeModelWithResponseStream`` answer
  (``application/vnd.amazon.eventstream``): binary-framed messages whose payload is JSON holding
  base64 of the chunk's JSON; the key split over two chunks' ``delta.text``. Each half is inside
  its own base64 run; no scrubber reads this token stream. The client (botocore) decodes the frames
  and the SDK stitches the deltas.
- ``ai-sdk-data-stream``: the Vercel AI SDK's data stream protocol (``text/plain``, one part a
  line, ``0:"<JSON string>"`` per text delta), the key split over two parts: scrubbed as bytes
  (no ``data:`` line), ``"\\n0:"`` between the halves; ``useChat`` stitches the text parts.

Attempts that held (passing tests at the end):

- An SSE stream inside a ``text/plain`` body after a junk first line, the key split over two events
  with lone-CR line ends and ``data:`` cut across chunks (``\\nda`` | ``ta:``): cut.
- UTF-7 with the key in runs of one to three characters, and EBCDIC with no padding, both streamed
  in 7-byte chunks: refused or cut.
- A gzip-compressed ``text/event-stream`` in two gzip members with the key split over two events
  and the member boundary inside the first event: cut.
- JavaScript ``\\u{72}`` escapes, streamed three bytes at a time: refused or cut.
- A WebSocket text message in three fragments with a ping between them, the key across the
  fragment boundaries: replaced.
- Two 103 Early Hints heads, the key as ``\\x72`` escapes and as quoted-printable in Link fields:
  replaced or refused.
- Base64 of the key's UTF-16LE behind a byte order mark (PowerShell ``-EncodedCommand``), streamed:
  replaced.
"""

from __future__ import annotations

import base64
import gzip
import html
import html.parser
import json
import re
import struct
import subprocess
import unicodedata
import zlib
from collections.abc import Callable

import pytest

from tests.conftest import needs_root
from tests.proxy import test_redteam as world
from tests.proxy.test_redteam import HOST, _chunks, _respond, fetch, ws_agent_reads, ws_handshake
from tests.proxy.test_redteam2 import body_of, refused
from tests.proxy.test_redteam3 import deltas, is_cut_or_refused
from tests.support.hostile import HostileServer, Request, Wire, ws_fragments, ws_frame
from tests.support.proxyproc import ProxyProcess

pytestmark = needs_root

hostile_ca, hostile, rt = world.hostile_ca, world.hostile, world.rt

CHUNKED = "HTTP/1.1 200 OK\r\nContent-Type: {}\r\nTransfer-Encoding: chunked\r\n\r\n"


def node(script: str, data: bytes) -> str:
    """Run ``script`` in Node with ``buf`` (a Buffer of ``data``) in scope; what it returns, as text:
    the way a JavaScript client reads the bytes."""
    js = f"const buf = require('fs').readFileSync(0); const out = (() => {{ {script} }})(); process.stdout.write(out);"
    return subprocess.run(["node", "-e", js], input=data, capture_output=True, check=True, timeout=30).stdout.decode()


async def stream_body(w: Wire, ctype: str, body: bytes, size: int, pause: float = 0.0) -> None:
    """``body`` as a chunked response, ``size`` bytes a chunk, each its own write."""
    await w.send(CHUNKED.format(ctype).encode())
    for i in range(0, len(body), size):
        await w.send(_chunks(body[i : i + size])[:-5], pause=pause)
    await w.send(b"0\r\n\r\n")


async def send_pieces(w: Wire, ctype: str, pieces: list[bytes]) -> None:
    """A chunked response, each piece its own chunk and write."""
    await w.send(CHUNKED.format(ctype).encode())
    for p in pieces:
        await w.send(_chunks(p)[:-5], pause=0.02)
    await w.send(b"0\r\n\r\n")


def whole_reply(
    rt: ProxyProcess, hostile: HostileServer, path: str, ctype: str, make: Callable[[str], bytes]
) -> bytes | None:
    """Register ``make(token) -> body`` as a Content-Length response at ``path``; the agent's body,
    or None when the proxy refused it."""

    @hostile.on(path)
    async def _(req: Request, w: Wire) -> None:
        await w.send(_respond(f"Content-Type: {ctype}\r\n", make(req.token)))

    raw = fetch(rt, path)
    if refused(raw):
        return None
    assert raw.startswith(b"HTTP/1.1 200"), raw[:200]
    return body_of(raw)


# == breaks =======================================================================================


def _py_short_octal(text: str) -> bytes:
    return "".join(f"\\{ord(c):o}" for c in text).encode()  # '0' is \60: two digits


def _py_named(text: str) -> bytes:
    return "".join(f"\\N{{{unicodedata.name(c)}}}" for c in text).encode()


@pytest.mark.parametrize("encode", [_py_short_octal, _py_named], ids=["short-octal", "named"])
def test_rt5_python_string_escapes(rt: ProxyProcess, hostile: HostileServer, encode: Callable[[str], bytes]) -> None:
    """The key in a Python/C string literal (a debug dump, a generated config): octal escapes written
    shortest (``\\60`` for ``0``, ``\\162`` for ``r``) or named escapes (``\\N{LATIN SMALL LETTER
    R}``). Invariant 1 (escape syntaxes of other string literals): the view reads only three-digit
    octal and no ``\\N``; Python's ``unicode_escape`` decodes both: the key."""
    path = f"/rt5/py-escapes-{encode.__name__}"
    body = whole_reply(rt, hostile, path, "text/x-python", lambda t: b"KEY = '" + encode(t) + b"'\n")
    assert body is None or HOST.real not in body.decode("unicode_escape")


JS_ESCAPES = {
    "u-braces-8-digits": (
        lambda t: ("const key = '" + "".join(f"\\u{{{ord(c):08x}}}" for c in t) + "';").encode(),
        "return require('vm').runInNewContext(buf.toString() + '; key');",
    ),
    "percent-u": (
        lambda t: "".join(f"%u{ord(c):04X}" for c in t).encode(),
        "return unescape(buf.toString());",
    ),
}


@pytest.mark.parametrize("kind", list(JS_ESCAPES))
def test_rt5_js_escapes(rt: ProxyProcess, hostile: HostileServer, kind: str) -> None:
    """JavaScript code-point escapes padded to eight digits (``\\u{00000072}``: JS takes any number of
    leading zeros) and ``%u0072`` (``unescape``, a global of every JS runtime). Invariant 1 (escape
    syntaxes): the view's ``\\u{`` takes at most four zeros, and no view reads ``%u``. Node
    evaluates the literal / unescapes: the key."""
    encode, decode = JS_ESCAPES[kind]
    body = whole_reply(rt, hostile, f"/rt5/js-{kind}", "application/javascript", encode)
    assert body is None or HOST.real not in node(decode, body)


def _css_unescape(text: str) -> str:
    """CSS Syntax 4.3.7: a backslash, 1-6 hex digits, one optional whitespace."""
    return re.sub(r"\\([0-9a-fA-F]{1,6})[ \t\n]?", lambda m: chr(int(m.group(1), 16)), text)


def test_rt5_css_escapes(rt: ProxyProcess, hostile: HostileServer) -> None:
    """A stylesheet whose ``content:`` holds the key as CSS escapes (``\\000072``). Invariant 1
    (escape syntaxes): the backslash view wants ``u``, ``x``, ``U`` or octal after the backslash.
    A browser (the agent's page renderer) shows the generated content: the key."""
    body = whole_reply(rt, hostile, "/rt5/css", "text/css",
                       lambda t: ('.k::after { content: "' + "".join(f"\\{ord(c):06x}" for c in t) + '"; }').encode())  # fmt: skip
    assert body is None or HOST.real not in _css_unescape(body.decode())


def _utf7_long_runs(text: str) -> bytes:
    """One direct character, then a run of four in base64, and so on: valid UTF-7."""
    out, i = "", 0
    while i < len(text):
        out += text[i]
        run = text[i + 1 : i + 5]
        i += 5
        if run:
            out += "+" + base64.b64encode(run.encode("utf-16-be")).decode().rstrip("=") + "-"
    return out.encode()


def test_rt5_utf7_with_runs_of_four(rt: ProxyProcess, hostile: HostileServer) -> None:
    """``charset=utf-7``, the key's characters alternately direct and in base64 runs of four.
    Invariant 1 (UTF-7): the form needs the value in one run; the view is asked for only where a
    short run (one to three characters, 3-8 base64 digits and ``-``) is, and there is none.
    ``requests``' ``.text`` decodes the declared charset: the key."""
    body = whole_reply(
        rt, hostile, "/rt5/utf7-long", "text/plain; charset=utf-7", lambda t: b"key: " + _utf7_long_runs(t)
    )
    assert body is None or HOST.real not in body.decode("utf-7")


@pytest.mark.parametrize("pad", [" " * 4096, ("-" * 79 + "\n") * 52], ids=["space-padded-record", "rule-lines"])
def test_rt5_ebcdic_after_an_ascii_looking_head(rt: ProxyProcess, hostile: HostileServer, pad: str) -> None:
    """A ``charset=cp500`` body whose first 4 KiB are EBCDIC spaces (0x40: a blank-padded fixed-width
    record) or rule lines of dashes: all bytes below 0x80. Invariant 1 (EBCDIC): ``_reads_ebcdic``
    says no to a head that ``isascii()``, so no EBCDIC view is made of the body; the key follows.
    The client decodes the declared charset: the key."""
    path = f"/rt5/ebcdic-{len(pad)}"
    body = whole_reply(
        rt, hostile, path, "text/plain; charset=cp500", lambda t: (pad + "KEY: " + t + "\n").encode("cp500")
    )
    assert body is None or HOST.real not in body.decode("cp500")


STATEFUL = {"iso2022_jp": "\x1b(B", "hz": "~\n"}


@pytest.mark.parametrize("charset", list(STATEFUL))
def test_rt5_stateful_charsets(rt: ProxyProcess, hostile: HostileServer, charset: str) -> None:
    """ISO-2022-JP (Japanese mail and web) with ``ESC ( B`` ("switch to ASCII", already the mode)
    after every character; HZ (``hz-gb-2312``) with ``~`` + newline (a line continuation) after
    every character. Invariant 1 (charsets a client decodes): both decoders drop the sequences; no
    view does. ``requests``' ``.text`` decodes the declared charset: the key."""
    sep = STATEFUL[charset]
    body = whole_reply(rt, hostile, f"/rt5/charset-{charset}", f"text/plain; charset={charset.replace('_', '-')}",
                       lambda t: ("key: " + "".join(c + sep for c in t)).encode("latin-1"))  # fmt: skip
    assert body is None or HOST.real not in body.decode(charset)


@pytest.mark.parametrize("layout", ["width-32", "label-on-first-line"])
def test_rt5_wrapped_base64_with_short_lines(rt: ProxyProcess, hostile: HostileServer, layout: str) -> None:
    """Base64 wrapped at 32 characters, or at 64 with a label before the blob on its first line
    (``credential: <36 chars>``, as a text wrapper breaks a long word), so the line break inside the
    key's encoding follows fewer than 40 base64 characters. Invariant 1 (wrapped base64): the view
    does not join the lines; ``base64.b64decode`` of the text without whitespace: the key."""

    def make(token: str) -> bytes:
        blob = base64.b64encode(b"stored credential: " + token.encode()).decode()
        if layout == "width-32":
            return "\n".join(blob[i : i + 32] for i in range(0, len(blob), 32)).encode()
        rest = blob[36:]
        return (
            "credential: " + blob[:36] + "\n" + "\n".join(rest[i : i + 64] for i in range(0, len(rest), 64))
        ).encode()

    body = whole_reply(rt, hostile, f"/rt5/b64-{layout}", "text/plain", make)
    if body is None:
        return
    blob = re.sub(r"\s", "", body.decode().removeprefix("credential: "))
    assert HOST.real.encode() not in base64.b64decode(blob)


@pytest.mark.parametrize("ctype", ["text/event-stream", "application/x-ndjson"], ids=["sse", "ndjson"])
def test_rt5_json_string_deltas(rt: ProxyProcess, hostile: HostileServer, ctype: str) -> None:
    """A token stream whose events are bare JSON strings: ``data: "Your key: rtREAL..."`` then
    ``data: "...tail"`` (or the same as NDJSON lines). Invariant 1 (token streams stitched by JSON
    path, here the root): the scrubber parses only objects and arrays, stitches the raw payloads,
    and reads ``..."`` ``"...`` -- quotes between the halves. The client ``JSON.parse``s each
    event and concatenates: the key."""
    sse = ctype == "text/event-stream"
    path = f"/rt5/json-strings-{'sse' if sse else 'ndjson'}"

    @hostile.on(path)
    async def _(req: Request, w: Wire) -> None:
        t = req.token
        docs = [json.dumps(text).encode() for text in (f"Your key: {t[:20]}", t[20:])]
        await send_pieces(w, ctype, [b"data: " + doc + b"\n\n" if sse else doc + b"\n" for doc in docs])

    raw = fetch(rt, path)
    assert raw.startswith(b"HTTP/1.1 200")
    read = node(
        "return buf.toString().split(/\\r\\n|\\r|\\n/).filter(l => l.trim())"
        ".map(l => JSON.parse(l.startsWith('data:') ? l.slice(5) : l)).join('');",
        body_of(raw),
    )
    assert HOST.real not in read


UNPARSABLE = {"int-5000-digits": b'"usage":{"n":' + b"7" * 5000 + b"}", "invalid-utf8": b'"fp":"\xff"'}


@pytest.mark.parametrize("kind", list(UNPARSABLE))
def test_rt5_sse_event_python_cannot_parse(rt: ProxyProcess, hostile: HostileServer, kind: str) -> None:
    """OpenAI-style deltas, the key split over two events; the first also carries a field Python's
    ``json.loads`` rejects and a JS client does not: an integer of 5000 digits (Python's digit
    limit raises ValueError; ``JSON.parse`` gives a number) or a byte that is not UTF-8 (a
    TextDecoder replaces it). Invariant 1 (SSE stitched by JSON path): the scrubber reads the
    first event as raw text under the root path and the second under ``.choices[0]...``: no stream
    holds both halves. ``JSON.parse`` of each event (openai-node, a browser): the key."""
    path = f"/rt5/sse-unparsable-{kind}"

    @hostile.on(path)
    async def _(req: Request, w: Wire) -> None:
        t = req.token
        events = [
            b'data: {"choices":[{"index":0,"delta":{"content":"Your key: ' + t[:20].encode() + b'"}}],'
            + UNPARSABLE[kind] + b"}\n\n",
            b'data: {"choices":[{"index":0,"delta":{"content":"' + t[20:].encode() + b'"}}]}\n\n',
            b"data: [DONE]\n\n",
        ]  # fmt: skip
        await send_pieces(w, "text/event-stream", events)

    raw = fetch(rt, path)
    assert raw.startswith(b"HTTP/1.1 200")
    read = node(
        "return new TextDecoder().decode(buf).split(/\\r\\n|\\r|\\n/).filter(l => l.startsWith('data: {'))"
        ".map(l => JSON.parse(l.slice(6)).choices[0].delta.content).join('');",
        body_of(raw),
    )
    assert HOST.real not in read


@pytest.mark.parametrize(
    "sep", ["\r", "\x0b", "\x0c", "\x1e", "\x85", "\u2028"], ids=["cr", "vt", "ff", "rs", "nel", "u2028"]
)
def test_rt5_ndjson_split_at_other_line_breaks(rt: ProxyProcess, hostile: HostileServer, sep: str) -> None:
    """An Ollama-style ``application/x-ndjson`` stream (``{"response": "..."}`` per line), the key
    split over two documents separated by a line break other than LF. Invariant 1 (token streams):
    the scrubber splits lines at LF only, so both documents are one line that is not JSON, read as
    raw text with JSON syntax between the halves. httpx's ``iter_lines`` (the ``ollama`` client)
    splits as ``str.splitlines`` does, json-loads each line and stitches ``response``: the key."""
    path = f"/rt5/ndjson-{ord(sep):x}"

    @hostile.on(path)
    async def _(req: Request, w: Wire) -> None:
        t = req.token
        docs = [json.dumps({"model": "m", "response": text, "done": False}) for text in (f"Your key: {t[:20]}", t[20:])]
        await w.send(CHUNKED.format("application/x-ndjson").encode())
        await w.send(_chunks((sep.join(docs) + "\n").encode())[:-5], pause=0.02)
        await w.send(_chunks(b'{"model": "m", "response": "", "done": true}\n'))

    raw = fetch(rt, path)
    assert raw.startswith(b"HTTP/1.1 200")
    lines = body_of(raw).decode().splitlines()  # what httpx.Response.iter_lines yields
    assert HOST.real not in "".join(json.loads(ln)["response"] for ln in lines if ln.strip())


def _padded_refs(text: str) -> bytes:
    return b"".join(b"&#x" + b"0" * 200 + b"%x;" % ord(c) for c in text)


def test_rt5_streamed_html_references_with_long_zero_padding(rt: ProxyProcess, hostile: HostileServer) -> None:
    """The key as HTML numeric references each padded with 200 zeros (``html.unescape`` takes any
    number; so does the view, and a Content-Length body is refused), in a chunked body sent 150
    bytes a chunk. Invariant 1 (HTML references, streamed): a chunk ending inside a run of zeros
    is not a cut escape (``_PARTIAL_ESCAPE`` looks 16 characters back), so no view ends in a prefix
    of the value and the hold never starts; ~1.2 KB of what was sent stay in reach, the encoding is
    ~9 KB. The agent unescapes: the key."""

    @hostile.on("/rt5/padded-refs")
    async def _(req: Request, w: Wire) -> None:
        await stream_body(w, "text/html", b"<p>" + _padded_refs(req.token) + b"</p>", 150)

    raw = fetch(rt, "/rt5/padded-refs")
    assert raw.startswith(b"HTTP/1.1 200")
    assert HOST.real not in html.unescape(body_of(raw).decode())


def test_rt5_websocket_html_references_with_long_zero_padding(rt: ProxyProcess, hostile: HostileServer) -> None:
    """As above, in one WebSocket text message sent in 150-byte fragments. Invariant 1 (WebSocket)."""

    @hostile.on("/rt5/ws-padded-refs")
    async def _(req: Request, w: Wire) -> None:
        payload = _padded_refs(req.token)
        await w.send(ws_handshake(req))
        for frame in ws_fragments(0x1, payload, 150):
            await w.send(frame)
        await w.send(ws_frame(0x8, b"\x03\xe8"), pause=0.05)
        w.keep = False

    head, frames = ws_agent_reads(rt, "/rt5/ws-padded-refs")
    assert head.startswith(b"HTTP/1.1 101")
    message = b"".join(p for _, op, p in frames if op in (0x0, 0x1))
    assert HOST.real not in html.unescape(message.decode())


class _Text(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.text = ""

    def handle_data(self, data: str) -> None:
        self.text += data


@pytest.mark.parametrize(
    "size",
    [
        20,  # (two spans: one holds a run of the key, refused since runs are read, 2026-12-04)
        pytest.param(
            6, marks=pytest.mark.xfail(strict=True, reason="no scrubber reads the text of a document across its markup")
        ),
    ],
    ids=["two-spans", "spans-shorter-than-a-run"],
)
def test_rt5_html_text_split_by_markup(rt: ProxyProcess, hostile: HostileServer, size: int) -> None:
    """An error page showing the key in ``<span>`` elements. Invariant 1 (any Content-Type, a
    client decode): the bytes never hold the key whole; the text an HTML-to-text reader extracts
    (what a browsing agent reads of a page) does. Kin of the tracked "value split between two
    fields of one document", in the commonest document there is. Cut in two, one span holds a run
    of the key (refused); cut in spans shorter than a run, nothing is found: still a break."""

    def page(t: str) -> bytes:
        spans = "".join(f"<span>{t[i : i + size]}</span>" for i in range(0, len(t), size))
        return f"<p>Invalid key {spans}</p>".encode()

    body = whole_reply(rt, hostile, f"/rt5/html-spans-{size}", "text/html", page)
    if body is None:
        return
    reader = _Text()
    reader.feed(body.decode())
    assert HOST.real not in reader.text


def _es_message(payload: bytes) -> bytes:
    """One AWS event-stream message (the framing of Bedrock, Transcribe, S3 Select)."""
    headers = b""
    for name, value in ((":event-type", "chunk"), (":content-type", "application/json"), (":message-type", "event")):
        headers += bytes([len(name)]) + name.encode() + b"\x07" + struct.pack(">H", len(value)) + value.encode()
    total = 12 + len(headers) + len(payload) + 4
    prelude = struct.pack(">II", total, len(headers))
    msg = prelude + struct.pack(">I", zlib.crc32(prelude)) + headers + payload
    return msg + struct.pack(">I", zlib.crc32(msg))


def _es_read(data: bytes) -> list[bytes]:
    """The payloads of the event-stream messages in ``data`` (what botocore's EventStream yields)."""
    out = []
    while len(data) >= 16:
        total, hlen = struct.unpack(">II", data[:8])
        out.append(data[12 + hlen : total - 4])
        data = data[total:]
    return out


def _bedrock_deltas(token: str) -> list[bytes]:
    messages = []
    for text in (f"Your key: {token[:20]}", token[20:]):
        chunk = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}
        payload = json.dumps({"bytes": base64.b64encode(json.dumps(chunk).encode()).decode()}).encode()
        messages.append(_es_message(payload))
    return messages


def test_rt5_bedrock_event_stream_deltas(rt: ProxyProcess, hostile: HostileServer) -> None:
    """A Bedrock ``InvokeModelWithResponseStream`` answer: event-stream messages, each payload
    ``{"bytes": base64(chunk JSON)}``, the chunks Anthropic ``content_block_delta`` events; the key
    split over two deltas. Invariant 1 (token streams a client stitches): the body is scrubbed as
    bytes, where each half is inside its own base64 run (no form of the whole value). botocore
    decodes the frames and the base64; the SDK stitches ``delta.text``: the key."""

    @hostile.on("/rt5/bedrock")
    async def _(req: Request, w: Wire) -> None:
        await send_pieces(w, "application/vnd.amazon.eventstream", _bedrock_deltas(req.token))

    raw = fetch(rt, "/rt5/bedrock")
    assert raw.startswith(b"HTTP/1.1 200")
    text = "".join(
        json.loads(base64.b64decode(json.loads(p)["bytes"]))["delta"]["text"] for p in _es_read(body_of(raw))
    )
    assert HOST.real not in text


@pytest.mark.parametrize("label", ["application/vnd.amazon.eventstream", "application/octet-stream"])
def test_rt5_bedrock_event_stream_with_a_content_length(rt: ProxyProcess, hostile: HostileServer, label: str) -> None:
    """The same answer as one Content-Length body (scrubbed whole), under its own label or another:
    an event stream is told by its first bytes. Held: refused."""
    body = whole_reply(rt, hostile, f"/rt5/bedrock-whole/{label}", label, lambda t: b"".join(_bedrock_deltas(t)))
    assert body is None or HOST.real not in "".join(
        json.loads(base64.b64decode(json.loads(p)["bytes"]))["delta"]["text"] for p in _es_read(body)
    )
    assert body is None, "refused: a value split over two messages of a whole body"


def test_rt5_ai_sdk_data_stream_deltas(rt: ProxyProcess, hostile: HostileServer) -> None:
    """The Vercel AI SDK data stream protocol (``X-Vercel-AI-Data-Stream: v1``, ``text/plain``): one
    part a line, ``0:`` followed by a JSON string for each text delta; the key split over two
    parts. Invariant 1 (token streams a client stitches): the body has no ``data:`` line, so it is
    scrubbed as bytes, where ``"\\n0:"`` sits between the halves. ``useChat`` / ``processDataStream``
    JSON-parses each text part and appends it: the key."""

    @hostile.on("/rt5/ai-sdk")
    async def _(req: Request, w: Wire) -> None:
        t = req.token
        await w.send(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nX-Vercel-AI-Data-Stream: v1\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        parts = [b'f:{"messageId":"msg-1"}', *(b"0:" + json.dumps(x).encode() for x in (f"Your key: {t[:20]}", t[20:]))]
        for part in [*parts, b'e:{"finishReason":"stop"}', b'd:{"finishReason":"stop"}']:
            await w.send(_chunks(part + b"\n")[:-5], pause=0.02)
        await w.send(b"0\r\n\r\n")

    raw = fetch(rt, "/rt5/ai-sdk")
    assert raw.startswith(b"HTTP/1.1 200")
    text = "".join(json.loads(ln[2:]) for ln in body_of(raw).decode().splitlines() if ln.startswith("0:"))
    assert HOST.real not in text


# == attempts that held ==========================================================================


def test_rt5_sse_in_a_plain_body_after_junk_with_cr_line_ends(rt: ProxyProcess, hostile: HostileServer) -> None:
    """A ``text/plain`` body: a junk first line, then SSE events with lone-CR line ends, ``data:``
    cut across two chunks (``\\rda`` | ``ta:``), the key split over two events. Held: cut."""

    @hostile.on("/rt5/sniff-cr")
    async def _(req: Request, w: Wire) -> None:
        t = req.token
        e1 = json.dumps({"choices": [{"delta": {"content": f"Your key: {t[:20]}"}}]}).encode()
        e2 = json.dumps({"choices": [{"delta": {"content": t[20:]}}]}).encode()
        pieces = [b"ok\r\rda", b"ta: " + e1 + b"\r\r\rda", b"ta: " + e2 + b"\r\r", b"data: [DONE]\r\r"]
        await send_pieces(w, "text/plain", pieces)

    raw = fetch(rt, "/rt5/sniff-cr")
    assert raw.startswith(b"HTTP/1.1 200")
    assert HOST.real not in deltas(body_of(raw).decode().replace("\r", "\n"))


@pytest.mark.parametrize("charset", ["utf-7", "cp500"])
def test_rt5_short_utf7_runs_and_ebcdic_streamed_in_small_chunks(
    rt: ProxyProcess, hostile: HostileServer, charset: str
) -> None:
    """UTF-7 with the key's characters in runs of one to three, and plain EBCDIC, streamed 7 bytes
    a chunk. Held: refused or cut."""

    def encode(t: str) -> bytes:
        if charset == "cp500":
            return ("KEY: " + t + "\n").encode("cp500")
        out = ""
        for i in range(0, len(t), 4):
            out += t[i] + "+" + base64.b64encode(t[i + 1 : i + 4].encode("utf-16-be")).decode().rstrip("=") + "-"
        return out.encode()

    @hostile.on(f"/rt5/small-{charset}")
    async def _(req: Request, w: Wire) -> None:
        await stream_body(w, f"text/plain; charset={charset}", encode(req.token), 7)

    raw = fetch(rt, f"/rt5/small-{charset}")
    assert is_cut_or_refused(raw)
    assert HOST.real not in body_of(raw).decode(charset, "replace")


def test_rt5_gzip_sse_in_two_members_split_over_events(rt: ProxyProcess, hostile: HostileServer) -> None:
    """A gzip ``text/event-stream`` made of two gzip members, the member boundary inside the first
    event, the key split over two events, streamed in 50-byte chunks. Held: cut."""

    @hostile.on("/rt5/gzip-sse")
    async def _(req: Request, w: Wire) -> None:
        t = req.token
        events = b"".join(
            b"data: " + json.dumps({"choices": [{"delta": {"content": c}}]}).encode() + b"\n\n"
            for c in (f"Your key: {t[:20]}", t[20:])
        )
        body = gzip.compress(events[:30]) + gzip.compress(events[30:])
        await w.send(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Encoding: gzip\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        for i in range(0, len(body), 50):
            await w.send(_chunks(body[i : i + 50])[:-5], pause=0.01)
        await w.send(b"0\r\n\r\n")

    raw = fetch(rt, "/rt5/gzip-sse")
    assert is_cut_or_refused(raw)
    assert HOST.real not in deltas(body_of(raw).decode())


def test_rt5_js_braces_escapes_streamed_three_bytes_at_a_time(rt: ProxyProcess, hostile: HostileServer) -> None:
    """``\\u{72}\\u{74}...`` in a chunked body, three bytes a chunk. Held: refused or cut."""

    @hostile.on("/rt5/js-braces-small")
    async def _(req: Request, w: Wire) -> None:
        literal = "".join(f"\\u{{{ord(c):x}}}" for c in req.token)
        await stream_body(w, "application/javascript", f"const key = '{literal}';".encode(), 3)

    raw = fetch(rt, "/rt5/js-braces-small")
    assert is_cut_or_refused(raw)
    src = body_of(raw).decode()
    assert HOST.real not in re.sub(r"\\u\{([0-9a-f]+)\}", lambda m: chr(int(m.group(1), 16)), src)


def test_rt5_websocket_fragments_with_a_ping_between(rt: ProxyProcess, hostile: HostileServer) -> None:
    """One text message in three fragments, pings between them, the key across both fragment
    boundaries. Held: replaced by the placeholder."""

    @hostile.on("/rt5/ws-frag-ping")
    async def _(req: Request, w: Wire) -> None:
        m = f"your key is {req.token}!".encode()
        await w.send(ws_handshake(req))
        await w.send(ws_frame(0x1, m[:20], fin=False), pause=0.02)
        await w.send(ws_frame(0x9, b"hi"), pause=0.02)
        await w.send(ws_frame(0x0, m[20:40], fin=False), pause=0.02)
        await w.send(ws_frame(0x9, b"hi"), pause=0.02)
        await w.send(ws_frame(0x0, m[40:], fin=True), pause=0.02)
        await w.send(ws_frame(0x8, b"\x03\xe8"), pause=0.05)
        w.keep = False

    head, frames = ws_agent_reads(rt, "/rt5/ws-frag-ping")
    assert head.startswith(b"HTTP/1.1 101")
    message = b"".join(p for _, op, p in frames if op in (0x0, 0x1))
    assert HOST.real.encode() not in message
    assert HOST.placeholder.encode() in message or any(op == 0x8 for _, op, _ in frames)


def test_rt5_early_hints_with_escaped_links(rt: ProxyProcess, hostile: HostileServer) -> None:
    """Two 103 heads, the key as ``\\x72`` escapes and as quoted-printable in Link fields. Held."""

    @hostile.on("/rt5/hints")
    async def _(req: Request, w: Wire) -> None:
        t = req.token
        xs = "".join(f"\\x{ord(c):02x}" for c in t)
        qp = "".join(f"={ord(c):02X}" for c in t)
        await w.send(f"HTTP/1.1 103 Early Hints\r\nLink: </a.js?k={xs}>; rel=preload\r\n\r\n".encode())
        await w.send(f"HTTP/1.1 103 Early Hints\r\nLink: </b.css?k={qp}>; rel=preload\r\n\r\n".encode())
        await w.send(_respond("", b"ok"))

    raw = fetch(rt, "/rt5/hints")
    assert raw.startswith((b"HTTP/1.1 103", b"HTTP/1.1 502"))
    text = raw.decode("latin-1")
    text = re.sub(r"\\x([0-9a-f]{2})", lambda m: chr(int(m.group(1), 16)), text)
    text = re.sub(r"=([0-9A-F]{2})", lambda m: chr(int(m.group(1), 16)), text)
    assert HOST.real not in text


def test_rt5_base64_of_utf16_with_a_bom_streamed(rt: ProxyProcess, hostile: HostileServer) -> None:
    """Base64 of ``BOM + UTF-16LE("key: " + key)`` (PowerShell ``-EncodedCommand``), 5 bytes a
    chunk. Held: replaced or refused."""

    @hostile.on("/rt5/b64-utf16-bom")
    async def _(req: Request, w: Wire) -> None:
        blob = base64.b64encode(b"\xff\xfe" + f"key: {req.token}".encode("utf-16-le"))
        await stream_body(w, "text/plain", b"powershell -EncodedCommand " + blob, 5)

    raw = fetch(rt, "/rt5/b64-utf16-bom")
    if is_cut_or_refused(raw):
        return
    blob = body_of(raw).split(b" ")[-1]
    assert HOST.real not in base64.b64decode(blob + b"==", validate=False).decode("utf-16", "replace")
