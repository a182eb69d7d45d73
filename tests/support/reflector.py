"""A hostile upstream for the channel tests: it reflects the real key it was sent in every channel an
HTTP/1.1 response has, writing the bytes itself (no framework in between) so the test decides exactly
how they are framed, chunked, compressed and split.

The key is whatever followed ``Bearer `` in the request's Authorization header. The path picks the
channel (see ``RESPONSES`` and ``websocket``).
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import json
import ssl
import struct
import zlib
from collections.abc import Callable

import brotli
from backports import zstd


def chunked(body: bytes, size: int, trailers: bytes = b"") -> bytes:
    out = b"".join(b"%x\r\n%s\r\n" % (len(body[i : i + size]), body[i : i + size]) for i in range(0, len(body), size))
    return out + b"0\r\n" + trailers + b"\r\n"


def head(status: str, *headers: str) -> bytes:
    return ("\r\n".join([f"HTTP/1.1 {status}", *headers]) + "\r\n\r\n").encode()


def sse_delta(text: str) -> bytes:
    return b"data: " + json.dumps({"choices": [{"delta": {"content": text}}]}).encode() + b"\n\n"


def _compressed(name: str, data: bytes) -> bytes:
    return {"gzip": gzip.compress, "br": brotli.compress, "zstd": zstd.compress, "deflate": zlib.compress}[name](data)


def _encoded(name: str) -> Callable[[str], bytes]:
    def respond(key: str) -> bytes:
        body = f'{{"error": "Incorrect API key provided: {key}"}}'.encode() * 40
        data = _compressed(name, body)
        return head("200 OK", f"Content-Encoding: {name}", "Content-Type: application/json",
                    "Transfer-Encoding: chunked") + chunked(data, 7)  # fmt: skip

    return respond


RESPONSES: dict[str, Callable[[str], bytes]] = {
    # a key split over two SSE token events, the way a model streams text
    "/sse-split": lambda k: (
        head("200 OK", "Content-Type: text/event-stream", "Transfer-Encoding: chunked")
        + chunked(sse_delta("Your key: ") + sse_delta(k[:9]) + sse_delta(k[9:]) + b"data: [DONE]\n\n", 64)
    ),
    # the same key whole inside one event: replaced in place, the stream goes on
    "/sse-whole": lambda k: (
        head("200 OK", "Content-Type: text/event-stream", "Transfer-Encoding: chunked")
        + chunked(sse_delta(f"Your key: {k}") + b"data: [DONE]\n\n", 5)
    ),
    # compressed bodies whose compressed bytes come in 7-byte chunks
    "/gzip": _encoded("gzip"),
    "/br": _encoded("br"),
    "/zstd": _encoded("zstd"),
    "/deflate": _encoded("deflate"),
    "/compress": lambda k: head("200 OK", "Content-Encoding: compress", "Content-Length: 4") + b"\x1f\x9d\x90\x00",
    "/stacked": lambda k: head("200 OK", "Content-Encoding: gzip, br", "Content-Length: 4") + b"abcd",
    "/trailers": lambda k: (
        head("200 OK", "Transfer-Encoding: chunked", "Trailer: X-Key")
        + chunked(b"no key in the body", 5, f"X-Key: {k}\r\n".encode())
    ),
    "/early-hints": lambda k: (
        head("103 Early Hints", f"Link: </x?key={k}>; rel=preload") + head("200 OK", "Content-Length: 2") + b"ok"
    ),
    "/reason": lambda k: f"HTTP/1.1 401 {k}\r\nContent-Length: 2\r\n\r\nno".encode(),
    "/header": lambda k: (
        head(
            "200 OK",
            f"Set-Cookie: session={base64.b64encode(k.encode()).decode()}",
            f'WWW-Authenticate: Bearer error="{k}"',
            "Content-Length: 2",
        )
        + b"ok"
    ),
    "/big-split": lambda k: (
        head("200 OK", "Transfer-Encoding: chunked") + chunked(b"x" * 70000 + k.encode() + b"y" * 70000, 4096)
    ),
}

_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def ws_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    first = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        return bytes([first, n]) + payload
    if n < 65536:
        return bytes([first, 126]) + struct.pack("!H", n) + payload
    return bytes([first, 127]) + struct.pack("!Q", n) + payload


def websocket_frames(path: str, key: str) -> bytes:
    k = key.encode()
    if path == "/ws-text":
        return ws_frame(1, b"echo " + k)
    if path == "/ws-binary":
        return ws_frame(2, b"\x00\x01" + k + b"\xff")
    if path == "/ws-fragmented":
        return ws_frame(1, b"echo " + k[:6], fin=False) + ws_frame(0, k[6:14], fin=False) + ws_frame(0, k[14:])
    if path == "/ws-split-messages":
        return ws_frame(1, b"echo " + k[:10]) + ws_frame(1, k[10:])
    if path == "/ws-ping":
        return ws_frame(9, k[:100]) + ws_frame(1, b"after ping")
    if path == "/ws-close":
        return ws_frame(8, struct.pack("!H", 1000) + k[:100])
    return ws_frame(1, b"unknown path")


class Reflector:
    """TLS on ``host:port``; serves one request per connection."""

    def __init__(self, ssl_ctx: ssl.SSLContext) -> None:
        self.ssl_ctx = ssl_ctx
        self.server: asyncio.Server | None = None
        self.keys: list[str] = []
        self.heads: list[bytes] = []

    async def start(self, host: str, port: int) -> None:
        self.server = await asyncio.start_server(self._serve, host, port, ssl=self.ssl_ctx)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            raw = await reader.readuntil(b"\r\n\r\n")
            lines = raw.decode("latin-1").split("\r\n")
            path = lines[0].split(" ")[1]
            headers = {n.strip().lower(): v.strip() for n, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
            key = headers.get("authorization", "").split(" ", 1)[-1]
            self.keys.append(key)
            self.heads.append(raw)
            if path.startswith("/ws"):
                accept = base64.b64encode(hashlib.sha1(headers["sec-websocket-key"].encode() + _WS_GUID).digest())
                writer.write(head("101 Switching Protocols", "Upgrade: websocket", "Connection: Upgrade",
                                  f"Sec-WebSocket-Accept: {accept.decode()}"))  # fmt: skip
                writer.write(websocket_frames(path, key))
                await writer.drain()
                await asyncio.sleep(1)
            else:
                writer.write(RESPONSES[path](key))
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError, KeyError, IndexError):
            pass
        finally:
            writer.close()

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
