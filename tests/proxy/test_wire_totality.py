"""Totality of the data path on both sides of the wire: whatever bytes an agent sends (inside a
CONNECT tunnel or to the proxy itself), and whatever bytes an upstream answers a swapped request
with, the sidecar answers the agent with an HTTP response or closes the connection, and never takes
its own code down on them: no internal error (a bug, which fails closed by cutting the connection:
``sandgate_internal_errors_total{task="data_path"}``), no real value in anything the agent reads,
and the sidecar keeps serving.

The bytes come from grammars of the forms requests and answers take (methods, targets, versions,
status lines, the framing fields in every combination, content codings, event streams, credentials
in and out of their slots, the real key in an answer as it is, encoded, cut over chunks, a body
that matches its framing or not, a second message behind the first), then mutated at the byte
level (bytes flipped, inserted, deleted, the whole cut short). Bounded in CI; ``pytest --long``
runs thousands.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import itertools
import socket
import ssl
import time
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import ALL_SECRETS, OPENAI, needs_root
from tests.proxy import test_redteam as world
from tests.proxy.test_redteam import HOST, fetch
from tests.support.hostile import HostileServer, Request, Wire
from tests.support.leaks import encodings
from tests.support.proxyproc import ProxyProcess

pytestmark = needs_root

hostile_ca, hostile, rt = world.hostile_ca, world.hostile, world.rt

PH = OPENAI.placeholder


def _mostly[T](usual: list[T], odd: list[T]) -> st.SearchStrategy[T]:
    """One of ``usual`` about four times in five, else one of ``odd``."""
    return st.sampled_from(usual * (4 * len(odd) // len(usual) + 1) + odd)


METHODS = _mostly(
    ["GET", "POST", "PUT", "HEAD", "DELETE"], ["OPTIONS", "TRACE", "CONNECT", "PATCH", "get", "BREW", "G\x00T", ""]
)
TARGETS = _mostly(
    ["/v1/chat/completions", "/", f"/v1/x?key={PH}&a=%FF;b", "/reflect", "/reflect?gzip=1", "/sse", "/big"],
    [
        "/%2e%2e/admin", "*", "api.openai.com:443", "http://api.openai.com/v1", "https://api.openai.com/",
        "https://api.openai.com:443/v1", "http://attacker.test/", "//api.openai.com/", "/\u00e9", "/a b", "",
    ],
)  # fmt: skip
VERSIONS = _mostly(["HTTP/1.1"], ["HTTP/1.0", "HTTP/2.0", "HTTP/1.2", "HTTP/0.9", "http/1.1", "HTTP/1.1 x", ""])
HOSTS = [
    "API.OPENAI.COM",
    "api.openai.com.",
    "files.example.org",
    "attacker.test",
    "",
    "a b",
    "[::1]",
    "api.openai.com:8443",
]
FIELDS = _mostly(
    [
        ("Authorization", f"Bearer {PH}"), ("Authorization", f"bearer  {PH}"), ("Authorization", PH),
        ("Authorization", "Basic " + base64.b64encode(f"u:{PH}".encode()).decode()), ("x-api-key", PH),
        ("Content-Type", "application/json"), ("Content-Type", "text/plain; charset=utf-7"), ("Accept-Encoding", "gzip, br"),
        ("Connection", "keep-alive, x-api-key"), ("Connection", "close"), ("X-Forwarded-Host", "attacker.test"),
        ("X_Forwarded_Host", "x"), ("x-sandgate-reason", "x"), ("X", "\u00ff\u0080"), ("TE", "trailers"),
        ("Trailer", "x-api-key"), ("Expect", "100-continue"), ("Content-Encoding", "gzip"),
    ],
    [
        *[("Content-Encoding", v) for v in ["br", "zstd", "deflate", "x-unknown", "gzip, gzip"]],
        ("Connection", "upgrade"), ("Upgrade", "websocket"), ("Upgrade", "h2c"), ("Expect", "x"),
        ("Authorization", "Basic !!!"), ("Authorization", "Basic"), ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Sec-WebSocket-Version", "13"), ("", "empty-name"), ("Bad Name", "x"), ("X", "a\r\n b"), ("X", "\x00"),
        *[("Host", h) for h in HOSTS],
    ],
)  # fmt: skip
BODIES = st.sampled_from(
    [b"", b"hello", PH.encode(), b"+AHg-", b'{"k": "' + PH.encode() + b'"}', b"\x1f\x8b\x08\x00\x00\x00\x00\x00"]
)
# A framing for the body (as it is, or not as it is), or none.
FRAMINGS = st.sampled_from(["length"] * 4 + ["chunked"] * 3 + ["none", "bad-length", "bad-chunked"])


def _one_in(n: int, value: bool = True) -> st.SearchStrategy[bool]:
    """``value`` one time in ``n`` (hypothesis draws about evenly from a list, and shrinks to its
    first element; integers it draws at their bounds far more often)."""
    return st.sampled_from([not value] * (n - 1) + [value])


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    """A request head from the grammar (usually well formed, a field or two out of the ordinary),
    a body framed as it says or not, maybe a second request behind it, maybe mutated bytes."""
    line = f"{draw(METHODS)} {draw(TARGETS)} {draw(VERSIONS)}".encode()
    fields = [("Host", "api.openai.com")] if draw(_one_in(8, False)) else []
    fields += draw(st.lists(FIELDS, max_size=4))
    body, framing = draw(BODIES), draw(FRAMINGS)
    if framing == "length":
        fields.append(("Content-Length", str(len(body))))
    elif framing == "bad-length":
        fields.append(("Content-Length", draw(st.sampled_from(["-1", "+5", "5, 6", "99999999999999999999", "0x1"]))))
    elif framing == "chunked":
        fields.append(("Transfer-Encoding", "chunked"))
        body = (b"%x\r\n%s\r\n" % (len(body), body) if body else b"") + b"0\r\n\r\n"
    elif framing == "bad-chunked":
        fields.append(("Transfer-Encoding", draw(st.sampled_from(["chunked", "gzip", "chunked, chunked", "identity"]))))
        body = draw(st.sampled_from([b"zz\r\nhello\r\n0\r\n\r\n", b"5;x=1\r\nhello\r\n0\r\nT: x\r\n\r\n",
                                     b"ffffffffffffffff\r\n", b"5\r\nhello0\r\n\r\n"]))  # fmt: skip
    fields = draw(st.permutations(fields))
    out = line + b"".join(f"\r\n{n}: {v}".encode() for n, v in fields) + b"\r\n\r\n" + body
    if draw(_one_in(3)):
        out += (
            b"GET /second HTTP/1.1\r\nHost: " + draw(st.sampled_from(["api.openai.com", *HOSTS])).encode() + b"\r\n\r\n"
        )
    if draw(_one_in(6)):
        out = out.replace(b"\r\n", draw(st.sampled_from([b"\n", b"\r", b"\r\n\t"])), draw(st.integers(1, 3)))
    for _ in range(draw(st.integers(1, 3)) if draw(_one_in(4)) else 0):
        at = draw(st.integers(0, len(out)))
        kind = draw(st.sampled_from(["flip", "insert", "delete", "cut"]))
        byte = bytes([draw(st.integers(0, 255))])
        if kind == "flip" and at < len(out):
            out = out[:at] + byte + out[at + 1 :]
        elif kind == "insert":
            out = out[:at] + byte + out[at:]
        elif kind == "delete":
            out = out[:at] + out[at + 1 :]
        elif kind == "cut":
            out = out[:at]
    return out


def exchange(proxy: ProxyProcess, data: bytes, way: str) -> bytes:
    """Send ``data`` (in a TLS tunnel to api.openai.com:443, a plain one to its port 80, or to the
    proxy itself), half-close, and read until the proxy closes: what the agent got after the
    tunnel's 200."""
    port = 443 if way == "tls-tunnel" else 80
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as raw:
        s: socket.socket = raw
        if way != "to-the-proxy":
            raw.sendall(f"CONNECT api.openai.com:{port} HTTP/1.1\r\nHost: api.openai.com:{port}\r\n\r\n".encode())
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = raw.recv(4096)
                assert chunk, "the proxy closed instead of answering the CONNECT"
                head += chunk
            assert head.startswith(b"HTTP/1.1 200"), head
        if way == "tls-tunnel":
            ctx = ssl.create_default_context(cafile=str(proxy.ca))
            s = ctx.wrap_socket(raw, server_hostname="api.openai.com")
        s.sendall(data)
        # (Under TLS, no close_notify: the TCP end, on the socket itself, TLS kept for reading.)
        socket.socket.shutdown(s, socket.SHUT_WR)
        got = b""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, ssl.SSLError):
                break
            if not chunk:
                break
            got += chunk
        else:
            pytest.fail(f"no answer nor close within 10 s for {data!r}")
        return got


def gunzipped(data: bytes) -> str:
    """What a client reads of each gzip body in ``data`` (as far as it decodes)."""
    out = []
    for part in data.split(b"\r\n\r\n")[1:]:
        if part[:2] == b"\x1f\x8b":
            with contextlib.suppress(zlib.error):
                out.append(zlib.decompressobj(wbits=31).decompress(part, 1 << 20))
    return b"\n".join(out).decode("latin-1")


def real_values_in(data: bytes) -> list[str]:
    """The secrets whose real value is in what the agent got, in the common encodings, gzip-encoded
    bodies read decoded."""
    text = data.decode("latin-1") + "\n" + gunzipped(data)
    return [s.name for s in ALL_SECRETS for form in encodings(s.real) if form in text]


@pytest.mark.parametrize("way", ["tls-tunnel", "plain-tunnel", "to-the-proxy"])
def test_any_bytes_from_an_agent_get_an_answer_and_never_an_internal_error(
    proxy: ProxyProcess, way: str, request: pytest.FixtureRequest
) -> None:
    before = proxy.metric("sandgate_internal_errors_total", task="data_path")
    examples = 3000 if request.config.getoption("--long") else 150

    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(requests())
    def check(data: bytes) -> None:
        got = exchange(proxy, data, way)
        assert got == b"" or got.startswith(b"HTTP/1.1 "), (data, got[:200])
        assert not real_values_in(got), (data, got[:200])
        # (each time, so that an internal error is tied to its bytes, and hypothesis shrinks them)
        assert proxy.metric("sandgate_internal_errors_total", task="data_path") == before, proxy.stderr()[-600:]

    check()
    served = exchange(proxy, b"GET /after HTTP/1.1\r\nHost: api.openai.com\r\nConnection: close\r\n\r\n", "tls-tunnel")
    assert served.startswith(b"HTTP/1.1 200"), served[:200]


# -- the upstream's side ------------------------------------------------------------------------------

KEY = b"\x00KEY\x00"  # where the upstream writes the real key it was sent (rendered per request)
STATUS = _mostly(
    [b"HTTP/1.1 200 OK", b"HTTP/1.1 401 Unauthorized", b"HTTP/1.1 500 Internal Server Error"],
    [b"HTTP/1.0 200 OK", b"HTTP/1.1 204 No Content", b"HTTP/1.1 304 Not Modified", b"HTTP/1.1 101 Switching Protocols",
     b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK", b"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\nHTTP/1.1 200 OK",
     b"HTTP/2 200", b"ICY 200 OK", b"HTTP/1.1 999 X", b"HTTP/1.1 200 " + KEY, b""],
)  # fmt: skip
ANSWER_FIELDS = _mostly(
    [
        (b"Content-Type", b"application/json"), (b"Content-Type", b"text/event-stream"), (b"Content-Type", b"text/plain"),
        (b"Content-Encoding", b"gzip"), (b"Set-Cookie", b"k=" + KEY), (b"WWW-Authenticate", b'Bearer error="' + KEY + b'"'),
        (b"Location", b"https://x.invalid/?key=" + KEY), (b"Connection", b"close"), (b"X-Sandgate-Reason", b"forged"),
        (b"Alt-Svc", b'h3=":443"'), (b"Connection", b"keep-alive"),
    ],
    [
        (b"Content-Encoding", b"br"), (b"Content-Encoding", b"zstd"), (b"Content-Encoding", b"deflate"),
        (b"Content-Encoding", b"x-bogus"), (b"Content-Encoding", b"gzip, gzip"), (b"Transfer-Encoding", b"gzip, chunked"),
        (b"Content-Type", b"application/vnd.amazon.eventstream"), (b"Content-Type", b"text/plain; charset=utf-7"),
        (b"Content-Length", b"5"), (b"Content-Length", b"-1"), (b"Upgrade", b"websocket"), (b"X-" + KEY, b"1"),
        (b"Bad Name", b"x"), (b"X", b"a\r\n b"), (b"Trailer", b"X-Key"),
    ],
)  # fmt: skip
ANSWER_BODIES = st.sampled_from(
    [
        b"", b'{"error": "Incorrect API key provided: ' + KEY + b'"}', b"data: {\"token\": \"" + KEY + b"\"}\n\n",
        b"data: [DONE]\n\n", b"hello", b"\x1f\x8b\x08\x00\x00\x00\x00\x00", b"\x00\x01\xff" * 20,
        b"+AHg-" + KEY, b'0:"' + KEY + b'"\n',
    ]
)  # fmt: skip
ANSWER_FRAMINGS = st.sampled_from(["length"] * 3 + ["chunked"] * 3 + ["close", "bad-length", "bad-chunked"])


@st.composite
def answers(draw: st.DrawFn) -> tuple[bytes, list[tuple[bytes, bytes]], bytes, str, int, list[tuple[str, int, int]]]:
    """An answer's parts, the key still a marker: status line, fields, body, framing, where the
    body is cut into chunks, and byte mutations (kind, where, byte) applied once rendered."""
    status = draw(STATUS)
    fields = draw(st.lists(ANSWER_FIELDS, max_size=4))
    body = b"".join(draw(st.lists(ANSWER_BODIES, min_size=1, max_size=3)))
    framing = draw(ANSWER_FRAMINGS)
    cut = draw(st.integers(1, 40))
    mutations = [
        (
            draw(st.sampled_from(["flip", "insert", "delete", "cut"])),
            draw(st.integers(0, 4096)),
            draw(st.integers(0, 255)),
        )
        for _ in range(draw(st.integers(1, 3)) if draw(_one_in(4)) else 0)
    ]
    return status, fields, body, framing, cut, mutations


def render(
    parts: tuple[bytes, list[tuple[bytes, bytes]], bytes, str, int, list[tuple[str, int, int]]], key: str
) -> bytes:
    status, fields, body, framing, cut, mutations = parts
    forms = itertools.cycle([key.encode(), base64.b64encode(key.encode())])

    def fill(b: bytes) -> bytes:  # each marker: the key as it is, then in base64, in turn
        pieces = b.split(KEY)
        return b"".join(x + (next(forms) if i < len(pieces) - 1 else b"") for i, x in enumerate(pieces))

    body = fill(body)
    if any(n == b"Content-Encoding" and v == b"gzip" for n, v in fields):
        body = gzip.compress(body)
    fields = [(fill(n), fill(v)) for n, v in fields]
    if framing == "length":
        fields.append((b"Content-Length", str(len(body)).encode()))
    elif framing == "bad-length":
        fields.append((b"Content-Length", str(len(body) + 7).encode()))
    elif framing in ("chunked", "bad-chunked"):
        fields.append((b"Transfer-Encoding", b"chunked"))
        pieces = [body[i : i + cut] for i in range(0, len(body), cut)]
        body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
        if framing == "bad-chunked":
            body = body.replace(b"\r\n", b"\n", 1)
    out = fill(status) + b"".join(b"\r\n" + n + b": " + v for n, v in fields) + b"\r\n\r\n" + body
    for kind, at, byte in mutations:
        at %= len(out) + 1
        if kind == "flip" and at < len(out):
            out = out[:at] + bytes([byte]) + out[at + 1 :]
        elif kind == "insert":
            out = out[:at] + bytes([byte]) + out[at:]
        elif kind == "delete":
            out = out[:at] + out[at + 1 :]
        elif kind == "cut":
            out = out[:at]
    return out


def test_any_bytes_from_an_upstream_get_the_agent_an_answer_and_never_an_internal_error(
    rt: ProxyProcess, hostile: HostileServer, request: pytest.FixtureRequest
) -> None:
    """The hostile upstream (the real key is swapped in toward it: it holds the key and may write
    it back anywhere) answers with bytes from the grammar, then closes."""
    before = rt.metric("sandgate_internal_errors_total", task="data_path")
    examples = 3000 if request.config.getoption("--long") else 150
    counter = itertools.count()

    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(answers())
    def check(parts: tuple[bytes, list[tuple[bytes, bytes]], bytes, str, int, list[tuple[str, int, int]]]) -> None:
        path = f"/totality/{next(counter)}"

        @hostile.on(path)
        async def _(req: Request, w: Wire) -> None:
            await w.send(render(parts, req.token))
            w.keep = False

        got = fetch(rt, path)
        assert got == b"" or got.startswith(b"HTTP/1.1 "), got[:300]
        text = got.decode("latin-1")
        text += gunzipped(got)
        assert not [f for f in encodings(HOST.real) if f in text], got[:300]
        assert rt.metric("sandgate_internal_errors_total", task="data_path") == before, rt.stderr()[-600:]
        del hostile.scripts[path]

    check()
    assert fetch(rt, "/after").startswith(b"HTTP/1.1 200")
