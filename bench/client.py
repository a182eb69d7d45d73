"""The benchmark's HTTPS client: blocking TLS sockets, a prebuilt request, a minimal response parser.

Kept cheap on purpose (no http.client, whose header parsing alone costs more than the floor's work
per request), so that the proxy on its own core, not this client, sets every rate. It speaks just
enough HTTP/1.1 for bench/upstream.py: Content-Length and chunked bodies, CONNECT through a proxy.
"""

from __future__ import annotations

import selectors
import socket
import ssl
import time
from collections.abc import Callable

HOST = "api.openai.com"
PLACEHOLDER = "sk-sandgate-bench-openai"


def request_bytes(path: str, host: str = HOST) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {PLACEHOLDER}\r\n\r\n".encode()


class HTTPError(Exception):
    """The proxy or the upstream answered something else than the benchmark expects."""


class Conn:
    """One client connection: TCP to the proxy (or straight to the upstream), CONNECT, TLS."""

    def __init__(self, proxy: int | None, ctx: ssl.SSLContext, host: str = HOST, timeout: float = 10) -> None:
        self.buf = bytearray()
        self.connect_status = 200
        self.sock: socket.socket = socket.create_connection(
            (host, 443) if proxy is None else ("127.0.0.1", proxy), timeout=timeout
        )
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if proxy is not None:
            self.sock.sendall(f"CONNECT {host}:443 HTTP/1.1\r\nHost: {host}:443\r\n\r\n".encode())
            self.connect_status = int(self.head()[9:12])
            if self.connect_status != 200:  # a refused tunnel: the answer is the proxy's, in clear
                self.close()
                return
            if self.buf:
                raise HTTPError("bytes after the CONNECT answer")
        self.sock = ctx.wrap_socket(self.sock, server_hostname=host)

    def close(self) -> None:
        self.sock.close()

    def _fill(self) -> None:
        data = self.sock.recv(262144)
        if not data:
            raise HTTPError("connection closed mid-response")
        self.buf += data

    def head(self) -> bytes:
        while (i := self.buf.find(b"\r\n\r\n")) < 0:
            self._fill()
        head = bytes(self.buf[: i + 4])
        del self.buf[: i + 4]
        return head

    def exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def line(self) -> bytes:
        while (i := self.buf.find(b"\r\n")) < 0:
            self._fill()
        line = bytes(self.buf[: i + 2])
        del self.buf[: i + 2]
        return line

    def request(self, req: bytes) -> tuple[int, bytes, bytes]:
        """Send ``req`` and read the whole answer: (status, head, body)."""
        self.sock.sendall(req)
        head = self.head()
        status = int(head[9:12])
        lower = head.lower()
        if (i := lower.find(b"\r\ncontent-length:")) >= 0:
            return status, head, self.exactly(int(lower[i + 17 : lower.index(b"\r\n", i + 2)]))
        if b"\r\ntransfer-encoding: chunked" in lower:
            body = bytearray()
            while size := int(self.line().split(b";", 1)[0], 16):
                body += self.exactly(size + 2)[:-2]
            while self.line() != b"\r\n":  # trailers
                pass
            return status, head, bytes(body)
        return status, head, b""

    def sse(self, req: bytes, t0: float | None = None) -> tuple[float, float, float]:
        """(headers, first event, last event) seconds after ``t0`` (default: when ``req`` is sent),
        reading the chunked stream as it comes; the connection stays usable."""
        t0 = time.perf_counter() if t0 is None else t0
        self.sock.sendall(req)
        self.head()
        t_head = time.perf_counter() - t0
        t_first = 0.0
        while True:
            size = int(self.line().split(b";", 1)[0], 16)
            if size == 0:
                while self.line() != b"\r\n":
                    pass
                return t_head, t_first, time.perf_counter() - t0
            chunk = self.exactly(size + 2)
            if not t_first and b"data:" in chunk:
                t_first = time.perf_counter() - t0


def message_size(buf: bytearray, head: bytes) -> int | None:
    """The length of the whole answer at the start of ``buf`` (``head`` and its body: Content-Length
    or chunked, without trailers), or None while it is incomplete."""
    lower = head.lower()
    if (i := lower.find(b"\r\ncontent-length:")) >= 0:
        size = len(head) + int(lower[i + 17 : lower.index(b"\r\n", i + 2)])
        return size if len(buf) >= size else None
    if b"\r\ntransfer-encoding: chunked" not in lower:
        raise HTTPError(f"an answer without Content-Length or chunked framing: {head[:200]!r}")
    pos = len(head)
    while (eol := buf.find(b"\r\n", pos)) >= 0:
        chunk = int(buf[pos:eol].split(b";", 1)[0], 16)
        pos = eol + 2 + chunk + 2
        if chunk == 0:
            return pos if len(buf) >= pos else None
    return None


def load(conns: list[Conn], total: int, req: bytes, check: Callable[[int, bytes], None]) -> list[float]:
    """``total`` requests spread over ``conns``, one in flight on each, from ONE thread (no GIL
    hand-offs: about half the client CPU per request of a thread per connection); the latency of
    each, in seconds. ``check(status, head)`` vets each answer."""
    sel = selectors.DefaultSelector()
    sent: dict[Conn, float] = {}
    latencies: list[float] = []
    todo = total

    def send(conn: Conn) -> None:
        nonlocal todo
        todo -= 1
        sent[conn] = time.perf_counter()
        if conn.sock.send(req) != len(req):
            raise HTTPError("short write of a small request")

    try:
        for conn in conns:
            conn.sock.setblocking(False)
            sel.register(conn.sock, selectors.EVENT_READ, conn)
        for conn in conns[:total]:
            send(conn)
        while len(latencies) < total:
            events = sel.select(timeout=10)
            if not events:
                raise HTTPError("no answer within 10 s")
            for key, _ in events:
                conn = key.data
                while True:
                    try:
                        data = conn.sock.recv(262144)
                    except ssl.SSLWantReadError:
                        break
                    if not data:
                        raise HTTPError("connection closed mid-response")
                    conn.buf += data
                end = conn.buf.find(b"\r\n\r\n")
                if end < 0:
                    continue
                head = bytes(conn.buf[: end + 4])
                size = message_size(conn.buf, head)
                if size is None:
                    continue
                latencies.append(time.perf_counter() - sent[conn])
                del conn.buf[:size]
                check(int(head[9:12]), head)
                if todo > 0:
                    send(conn)
    finally:
        sel.close()
        for conn in conns:
            conn.sock.settimeout(10)
    return latencies
