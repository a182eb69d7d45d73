"""Red team, second pass: a reflecting upstream sends a real value back in shapes the scrubbers missed.

Each test is one attack on a real ``sandgate proxy`` (the world of tests/proxy/test_redteam.py:
its hostile upstream, policy and secrets), asserting what the agent must never read. All eleven
breaks found are fixed: the scrubbers' decoded views now stack two decodings (JSON escapes over
percent-encoding, percent-encoding twice) and add HTML character references, UTF-16/32, base64
wrapped at a line length and mixed case; hex/base64 of the lower- and upper-cased value are forms;
token streams are stitched per ``index`` too, an event stream is recognised whatever its
Content-Type, and an encoded prefix of a value is held back like a plain one. A value the proxy
cannot replace in place is refused (502 ``secret_value_inbound``, or the connection cut): either
outcome holds the line, and the tests accept both.

Attempts that held (14, each a passing test at the end of this module, where none existed):

- A real value in one of 60 response fields: plain in the last value, base64url in a field name,
  every byte percent-encoded in the 60th value (the newline-joined search of ``fields_clean``).
- A Content-Encoding field naming the key: the 502 repeats the field, already scrubbed.
- Content-Encoding spelled ``GZIP``, `` x-gzip ``, ``identity, gzip``, ``gzip, identity``: decoded
  and scrubbed, or refused with a 502; never forwarded raw.
- A Content-Length body of 256 KiB - 1, 256 KiB and 256 KiB + 1 with the key as its last bytes
  (whole scrub vs streamed): replaced either way.
- One streamed body with a copy of the key cut by a chunk boundary at each of its offsets: all held
  back and replaced.
- A 120 KB hex or base64 body (the find-loop engine for encoded input) with the value's hex/base64
  form in its middle: found.

Not written as tests (semantic transformations no byte scrubber can follow, noted for the threat
model): a value split between two header fields or two JSON keys of one document; an upstream that
gzips without Content-Encoding (``application/gzip``), reverses, ROT13s or encrypts what it
echoes. A real value the agent learned through one of the breaks here can leave again in the same
shape: the outbound check (``secret_value_outbound``) uses the same forms.
"""

from __future__ import annotations

import base64
import html
import json
import urllib.parse

import pytest

from tests.conftest import needs_root
from tests.proxy import test_redteam as world
from tests.proxy.test_redteam import HOST, _chunks, _respond, dechunk, fetch, leaked, ws_agent_reads, ws_handshake
from tests.support.hostile import HostileServer, Request, Wire, ws_frame
from tests.support.proxyproc import ProxyProcess

pytestmark = needs_root

# The first red team's world, as this module's own fixtures (module-scoped: a proxy of its own).
hostile_ca, hostile, rt = world.hostile_ca, world.hostile, world.rt


def body_of(raw: bytes) -> bytes:
    head, _, rest = raw.partition(b"\r\n\r\n")
    return dechunk(raw) if b"transfer-encoding: chunked" in head.lower() else rest


def refused(raw: bytes) -> bool:
    """Whether the proxy answered 502 ``secret_value_inbound``: the other way to hold the line (a
    value it cannot replace in place is refused, never forwarded)."""
    head = raw.partition(b"\r\n\r\n")[0].lower()
    return head.startswith(b"http/1.1 502") and b"x-sandgate-reason: secret_value_inbound" in head


def knows(read: str) -> int:
    """How many leading characters of the real key the agent read."""
    return next(
        (i for i, (a, b) in enumerate(zip(read, HOST.real, strict=False)) if a != b), min(len(read), len(HOST.real))
    )


def pct_all(text: str) -> str:
    """Every byte percent-encoded (what ``quote`` does to reserved characters, done to all)."""
    return "".join(f"%{b:02X}" for b in text.encode())


# == forms and combinations the finder does not know =============================================


def test_rt2_json_escaped_percent_encoding(rt: ProxyProcess, hostile: HostileServer) -> None:
    """The upstream percent-encodes every byte of the key and JSON-escapes the ``%`` as ``\\u0025``
    (an encoder escaping non-alphanumerics). Invariant 1 (JSON-escaped + percent-encoded, a
    combination): the JSON view decodes to ``%72%74...`` which is no form of the value, the percent
    view sees no ``%`` in the raw bytes. The agent json-loads and unquotes: the real key."""

    @hostile.on("/rt2/json-pct")
    async def _(req: Request, w: Wire) -> None:
        escaped = pct_all(req.token).replace("%", "\\u0025")
        await w.send(_respond("Content-Type: application/json\r\n", f'{{"next": "{escaped}"}}'.encode()))

    raw = fetch(rt, "/rt2/json-pct")
    if refused(raw):
        return
    assert raw.startswith(b"HTTP/1.1 200")
    read = urllib.parse.unquote(json.loads(body_of(raw))["next"])
    assert HOST.real not in read, "json.loads + unquote gives the agent the real key"


def test_rt2_double_percent_encoding(rt: ProxyProcess, hostile: HostileServer) -> None:
    """A redirect URL carried inside another URL's query: the key percent-encoded twice
    (``%2572%2574...``). Invariant 1 (percent-encoded, combined with itself): the percent view
    decodes once, to ``%72%74...``, which is no form of the value. The agent unquotes twice."""

    @hostile.on("/rt2/pct-pct")
    async def _(req: Request, w: Wire) -> None:
        inner = urllib.parse.quote(f"https://cb.invalid/?k={pct_all(req.token)}", safe="")
        await w.send(_respond(f"Location: https://x.invalid/login?next={inner}\r\n", b"ok"))

    raw = fetch(rt, "/rt2/pct-pct")
    assert raw.startswith(b"HTTP/1.1")
    location = next((ln for ln in raw.decode("latin-1").split("\r\n") if ln.lower().startswith("location:")), "")
    assert HOST.real not in urllib.parse.unquote(urllib.parse.unquote(location))


def test_rt2_mime_base64_line_wrapped(rt: ProxyProcess, hostile: HostileServer) -> None:
    """The upstream returns a stored document base64-encoded the MIME way (``base64.encodebytes``:
    a newline every 76 characters), the key placed so its encoding crosses a line end. Invariant 1
    (base64 at any alignment): the base64 forms are searched as one unbroken run. The agent
    ``b64decode``s the body (newlines are skipped) and reads the key."""

    @hostile.on("/rt2/mime-b64")
    async def _(req: Request, w: Wire) -> None:
        doc = b"Authorization header received by the upstream: " + req.token.encode() + b"\n"
        await w.send(_respond("Content-Type: text/plain\r\n", base64.encodebytes(doc)))

    raw = fetch(rt, "/rt2/mime-b64")
    if refused(raw):
        return
    assert raw.startswith(b"HTTP/1.1 200")
    assert HOST.real.encode() not in base64.b64decode(body_of(raw))


@pytest.mark.parametrize("wrap", ["hex", "base64"])
def test_rt2_encoded_uppercased_value(rt: ProxyProcess, hostile: HostileServer, wrap: str) -> None:
    """The upstream upper-cases what it stores (a case-insensitive key store) and returns it hex- or
    base64-encoded. Invariant 1 (upper-cased + hex/base64, a combination): only hex/base64 of the
    value as-is are forms. The agent decodes and lower-cases the hex tail of the key (its case is
    known, as for every hex or single-case key): the real key."""
    path = f"/rt2/upper-{wrap}"

    @hostile.on(path)
    async def _(req: Request, w: Wire) -> None:
        up = req.token.upper().encode()
        await w.send(_respond("", up.hex().encode() if wrap == "hex" else base64.b64encode(up)))

    raw = fetch(rt, path)
    if refused(raw):
        return
    assert raw.startswith(b"HTTP/1.1 200")
    body = body_of(raw)
    try:
        read = (bytes.fromhex(body.decode()) if wrap == "hex" else base64.b64decode(body, validate=True)).decode()
    except ValueError:
        read = ""
    prefix = "rtREALhostile"
    assert prefix + read[len(prefix) :].lower() != HOST.real


def test_rt2_mixed_case_value(rt: ProxyProcess, hostile: HostileServer) -> None:
    """The upstream echoes the key with its case scrambled (alternating, as a 'case-insensitive'
    echo or a display transform may). Invariant 1 (lower/upper-cased): the agent lower-cases the
    body and reads the lower-cased real value -- the very form the finder scrubs elsewhere."""

    @hostile.on("/rt2/mixed-case")
    async def _(req: Request, w: Wire) -> None:
        t = req.token
        scrambled = "".join(c.upper() if i % 2 else c.lower() for i, c in enumerate(t))
        await w.send(_respond("", f"invalid key {scrambled}".encode()))

    raw = fetch(rt, "/rt2/mixed-case")
    if refused(raw):
        return
    assert raw.startswith(b"HTTP/1.1 200")
    assert HOST.real.lower() not in body_of(raw).decode("latin-1").lower()


def test_rt2_utf16_body(rt: ProxyProcess, hostile: HostileServer) -> None:
    """A text body in UTF-16LE, declared as such (``charset=utf-16le``, as Windows services and some
    JSON APIs still send). Invariant 1 (any Content-Type, the value as-is): every form is searched as
    UTF-8/ASCII bytes; ``r\\0t\\0R\\0...`` matches none. The agent decodes the declared charset."""

    @hostile.on("/rt2/utf16")
    async def _(req: Request, w: Wire) -> None:
        await w.send(
            _respond("Content-Type: text/plain; charset=utf-16le\r\n", f"key: {req.token}".encode("utf-16-le"))
        )

    raw = fetch(rt, "/rt2/utf16")
    if refused(raw):
        return
    assert raw.startswith(b"HTTP/1.1 200")
    assert HOST.real not in body_of(raw).decode("utf-16-le", "replace")


def test_rt2_html_character_references(rt: ProxyProcess, hostile: HostileServer) -> None:
    """An error page that echoes input as numeric character references (``&#114;&#116;...``, what an
    HTML/XML escaper that escapes everything produces). Invariant 1 (every form a client decodes
    without being asked: a browser or ``html.unescape``): no view decodes ``&#..;``."""

    @hostile.on("/rt2/html")
    async def _(req: Request, w: Wire) -> None:
        refs = "".join(f"&#{ord(c)};" if i % 2 else f"&#x{ord(c):x};" for i, c in enumerate(req.token))
        await w.send(_respond("Content-Type: text/html\r\n", f"<p>Bad key: {refs}</p>".encode()))

    raw = fetch(rt, "/rt2/html")
    if refused(raw):
        return
    assert raw.startswith(b"HTTP/1.1 200")
    assert HOST.real not in html.unescape(body_of(raw).decode("latin-1"))


# == token streams ===============================================================================


def _sse(doc: object) -> bytes:
    return b"data: " + json.dumps(doc).encode() + b"\n\n"


def test_rt2_sse_interleaved_choices(rt: ProxyProcess, hostile: HostileServer) -> None:
    """OpenAI streaming with ``n=2``: each event carries one choice at array position 0, told apart
    by its ``"index"`` field, and the two choices' events interleave. The key is split between two
    events of choice 0 with an event of choice 1 between them. Invariant 1 (SSE, split across events):
    the proxy stitches by JSON path (``.choices[0].delta.content`` for both choices), reads
    ``<half>Hello<half>``, finds nothing. The client stitches by index: the real key."""

    @hostile.on("/rt2/sse-n2")
    async def _(req: Request, w: Wire) -> None:
        t = req.token
        await w.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        for index, text in ((0, t[:20]), (1, "Hello"), (0, t[20:]), (1, " world")):
            event = _sse({"choices": [{"index": index, "delta": {"content": text}}]})
            await w.send(_chunks(event)[:-5], pause=0.02)
        await w.send(_chunks(b"data: [DONE]\n\n"))

    raw = fetch(rt, "/rt2/sse-n2")
    assert raw.startswith(b"HTTP/1.1 200")
    stitched: dict[int, str] = {}
    for line in dechunk(raw).decode().splitlines():
        if line.startswith("data: {"):
            choice = json.loads(line[6:])["choices"][0]
            stitched[choice["index"]] = stitched.get(choice["index"], "") + choice["delta"]["content"]
    assert HOST.real not in stitched.get(0, ""), "the client's stitching of choice 0 holds the key"


def test_rt2_sse_split_under_another_content_type(rt: ProxyProcess, hostile: HostileServer) -> None:
    """The same token stream that is refused as ``text/event-stream`` (the key split over two
    events), labelled ``application/json``. Invariant 1 (SSE, any Content-Type): the body scrubber
    sees no contiguous value. The agent's SSE reader (the OpenAI SDK's does not look at the
    Content-Type) stitches the deltas: the real key."""

    @hostile.on("/rt2/sse-json-label")
    async def _(req: Request, w: Wire) -> None:
        t = req.token
        await w.send(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        for text in ("Your key: ", t[:20], t[20:]):
            await w.send(_chunks(_sse({"choices": [{"delta": {"content": text}}]}))[:-5], pause=0.02)
        await w.send(_chunks(b"data: [DONE]\n\n"))

    raw = fetch(rt, "/rt2/sse-json-label")
    assert raw.startswith(b"HTTP/1.1 200")
    text = "".join(
        json.loads(ln[6:])["choices"][0]["delta"]["content"]
        for ln in dechunk(raw).decode().splitlines()
        if ln.startswith("data: {")
    )
    assert HOST.real not in text


def test_rt2_sse_percent_encoded_value_split_across_events(rt: ProxyProcess, hostile: HostileServer) -> None:
    """A value split across SSE events is refused before the agent reads more than two of its
    characters (raw text is held back). Percent-encoded, it is not: the first event carries every
    character but the last, percent-encoded, and goes out at once; the second completes it and the
    stream is cut -- too late. Invariant 1 (percent-encoded, split across events): the agent
    unquotes the first event and knows all but one hex digit of the key (16 guesses)."""

    @hostile.on("/rt2/sse-pct-split")
    async def _(req: Request, w: Wire) -> None:
        t = pct_all(req.token)
        await w.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        for text in ("next=", t[:-3], t[-3:]):
            await w.send(_chunks(_sse({"choices": [{"delta": {"content": text}}]}))[:-5], pause=0.05)
        await w.send(_chunks(b"data: [DONE]\n\n"))

    raw = fetch(rt, "/rt2/sse-pct-split")
    read = ""
    for ln in dechunk(raw).decode("latin-1").splitlines():
        if ln.startswith("data: {"):
            read += json.loads(ln[6:])["choices"][0]["delta"]["content"]
    read = urllib.parse.unquote(read.removeprefix("next="))
    assert knows(read) < 8, f"the agent read {knows(read)} of {len(HOST.real)} characters of the key"


def test_rt2_websocket_percent_encoded_value_split_across_messages(rt: ProxyProcess, hostile: HostileServer) -> None:
    """As for SSE: the key percent-encoded, all but its last character in one text message, the
    rest in the next. The first message goes out unheld (no raw prefix of a form in it); the second
    gets the stream refused. Invariant 1 (WebSocket, split across messages): the agent has all
    but one character of the key."""

    @hostile.on("/rt2/ws-pct-split")
    async def _(req: Request, w: Wire) -> None:
        t = pct_all(req.token).encode()
        await w.send(ws_handshake(req))
        await w.send(ws_frame(0x1, b"k=" + t[:-3]), pause=0.05)
        await w.send(ws_frame(0x1, t[-3:]), pause=0.05)
        await w.send(ws_frame(0x8, b"\x03\xe8"))
        w.keep = False

    head, frames = ws_agent_reads(rt, "/rt2/ws-pct-split")
    assert head.startswith(b"HTTP/1.1 101")
    read = urllib.parse.unquote(b"".join(p for _, op, p in frames if op == 0x1).decode("latin-1").removeprefix("k="))
    assert knows(read) < 8, f"the agent read {knows(read)} of {len(HOST.real)} characters of the key"


# == attempts that held, where no test covered them yet ===========================================


@pytest.mark.parametrize(
    "shape", ["last-of-60-fields", "b64-in-field-name", "pct-in-60th-value", "coding-named-by-the-key"]
)
def test_rt2_value_in_one_of_many_response_fields_is_scrubbed(
    rt: ProxyProcess, hostile: HostileServer, shape: str
) -> None:
    """Response fields are searched as one newline-joined blob: a value in any one field, in any
    form, is still found -- including a Content-Encoding that names the key, whose 502 repeats the
    (already scrubbed) field."""
    path = f"/rt2/fields-{shape}"

    @hostile.on(path)
    async def _(req: Request, w: Wire) -> None:
        t = req.token
        clean = "".join(f"X-F{i}: v{i}\r\n" for i in range(59))
        if shape == "last-of-60-fields":
            extra = f"{clean}X-Last: {t}\r\n"
        elif shape == "b64-in-field-name":
            extra = f"{clean}X-{base64.urlsafe_b64encode(t.encode()).decode().rstrip('=')}: 1\r\n"
        elif shape == "pct-in-60th-value":
            extra = f"{clean}X-Last: a={pct_all(t)}\r\n"
        else:
            extra = f"Content-Encoding: {t}\r\n"
        await w.send(_respond(extra, b"ok"))

    raw = fetch(rt, path)
    assert raw.startswith(b"HTTP/1.1")
    assert not leaked(raw)
    assert HOST.real not in urllib.parse.unquote(raw.decode("latin-1"))


@pytest.mark.parametrize("coding", ["GZIP", " x-gzip ", "identity, gzip", "gzip, identity"])
def test_rt2_content_encoding_spellings_are_decoded_or_refused(
    rt: ProxyProcess, hostile: HostileServer, coding: str
) -> None:
    import gzip

    path = f"/rt2/coding-{coding.strip().replace(' ', '').replace(',', '-')}"

    @hostile.on(path)
    async def _(req: Request, w: Wire) -> None:
        await w.send(_respond(f"Content-Encoding: {coding}\r\n", gzip.compress(f"key {req.token}".encode() * 50)))

    raw = fetch(rt, path)
    body = body_of(raw)
    if raw.startswith(b"HTTP/1.1 200"):
        assert b"content-encoding" not in raw.partition(b"\r\n\r\n")[0].lower() and not leaked(body)
    else:
        assert raw.startswith(b"HTTP/1.1 502") and not leaked(raw)


@pytest.mark.parametrize("extra", [-1, 0, 1], ids=["under", "at", "over"])
def test_rt2_whole_body_around_the_scan_whole_bound(rt: ProxyProcess, hostile: HostileServer, extra: int) -> None:
    """256 KiB with a Content-Length is scrubbed whole, one byte more is streamed: a value at the
    very end is replaced either way."""
    path = f"/rt2/whole-{extra}"

    @hostile.on(path)
    async def _(req: Request, w: Wire) -> None:
        t = req.token.encode()
        await w.send(_respond("", b"x" * (256 * 1024 + extra - len(t)) + t))

    raw = fetch(rt, path)
    assert raw.startswith(b"HTTP/1.1 200") and not leaked(raw)
    assert body_of(raw).endswith(HOST.placeholder.encode())


def test_rt2_value_split_by_a_chunk_at_every_offset(rt: ProxyProcess, hostile: HostileServer) -> None:
    """One streamed body with one copy of the key per offset, each copy cut by a chunk boundary at
    that offset: every copy is held back and replaced."""

    @hostile.on("/rt2/every-offset")
    async def _(req: Request, w: Wire) -> None:
        t = req.token.encode()
        await w.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        pieces = [b" " + t[:1]] + [t[i:] + b" " + t[: i + 1] for i in range(1, len(t) - 1)] + [t[len(t) - 1 :]]
        for p in pieces:
            await w.send(b"%x\r\n%s\r\n" % (len(p), p))
        await w.send(b"0\r\n\r\n")

    raw = fetch(rt, "/rt2/every-offset")
    assert raw.startswith(b"HTTP/1.1 200") and not leaked(raw)
    assert dechunk(raw).count(HOST.placeholder.encode()) == len(HOST.real) - 1


@pytest.mark.parametrize("form", ["hex", "base64"])
def test_rt2_value_inside_a_large_encoded_body(rt: ProxyProcess, hostile: HostileServer, form: str) -> None:
    """A body over 4 KiB that reads as hex or base64 may be searched by the find loop instead of
    the automaton: the value's hex/base64 form in its middle is found all the same."""
    path = f"/rt2/large-{form}"

    @hostile.on(path)
    async def _(req: Request, w: Wire) -> None:
        import os

        blob = os.urandom(30000) + req.token.encode() + os.urandom(30000)
        await w.send(_respond("", blob.hex().encode() if form == "hex" else base64.b64encode(blob), chunked=True))

    raw = fetch(rt, path)
    assert raw.startswith(b"HTTP/1.1 200") and not leaked(raw)
