"""A hostile upstream for the red-team tests: raw bytes on the wire, scripted per request path.

It speaks just enough HTTP/1.1 to read a request (head, then a body by Content-Length or chunked
framing), records what it received (the TLS server name, the raw head, the body, which connection),
and hands the rest to the script registered for the request's path. A script writes whatever bytes
it likes, when it likes: malformed framing, split values, odd encodings, WebSocket frames. Plain TCP
when no TLS context is given (it then also stands in for a server that should have been TLS).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import ssl
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

__all__ = ["HostileServer", "Request", "Wire", "ws_accept", "ws_frame"]


@dataclass
class Request:
    conn: int  # which TCP connection of this server it came on
    sni: str | None
    raw_head: bytes
    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str:
        return next((v for n, v in self.headers if n.lower() == name), "")

    @property
    def token(self) -> str:
        """The credential the proxy put in Authorization (the real value, after a swap)."""
        return self.header("authorization").split(" ", 1)[-1]


@dataclass
class Wire:
    writer: asyncio.StreamWriter
    reader: asyncio.StreamReader
    keep: bool = True  # read another request on this connection after the script returns

    async def send(self, data: bytes, pause: float = 0.0) -> None:
        self.writer.write(data)
        await self.writer.drain()
        if pause:
            await asyncio.sleep(pause)


Script = Callable[[Request, Wire], Awaitable[None]]


def ws_accept(key: str) -> str:
    return base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()


def ws_frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bytes | None = None) -> bytes:
    """One WebSocket frame; ``mask`` for frames a client sends."""
    first = (0x80 if fin else 0) | opcode
    n = len(payload)
    mbit = 0x80 if mask else 0
    if n < 126:
        head = bytes([first, mbit | n])
    elif n < 65536:
        head = bytes([first, mbit | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([first, mbit | 127]) + n.to_bytes(8, "big")
    if mask:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        head += mask
    return head + payload


def ws_fragments(opcode: int, payload: bytes, size: int) -> list[bytes]:
    """One message as frames of ``size`` payload bytes each: the first with ``opcode``, the rest
    continuations, FIN on the last."""
    pieces = [payload[i : i + size] for i in range(0, len(payload), size)] or [b""]
    return [ws_frame(opcode if n == 0 else 0x0, p, fin=n == len(pieces) - 1) for n, p in enumerate(pieces)]


@dataclass
class HostileServer:
    host: str
    port: int
    ssl_ctx: ssl.SSLContext | None = None
    scripts: dict[str, Script] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    raw: list[bytes] = field(default_factory=list)  # every byte received, per connection
    connections: int = 0

    def start(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._snis: dict[int, str | None] = {}
        if self.ssl_ctx is not None:
            self.ssl_ctx.sni_callback = self._on_sni
        fut = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, self.host, self.port, ssl=self.ssl_ctx, reuse_address=True), self._loop
        )
        self._server = fut.result(10)

    def stop(self) -> None:
        async def close() -> None:
            self._server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def _on_sni(self, obj: ssl.SSLObject, name: str | None, ctx: ssl.SSLContext) -> None:
        self._snis[id(obj)] = name

    def on(self, path: str) -> Callable[[Script], Script]:
        def register(fn: Script) -> Script:
            self.scripts[path] = fn
            return fn

        return register

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        conn = self.connections
        obj = writer.get_extra_info("ssl_object")
        sni = self._snis.get(id(obj)) if obj is not None else None
        index = len(self.raw)
        self.raw.append(b"")
        wire = Wire(writer, reader)
        try:
            while wire.keep:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError as e:
                    self.raw[index] += e.partial  # what came before the connection ended
                    return
                except (asyncio.LimitOverrunError, ConnectionError):
                    return
                self.raw[index] += head
                lines = head.decode("latin-1").split("\r\n")
                method, _, rest_line = lines[0].partition(" ")
                path = rest_line.rpartition(" ")[0]
                headers = [(n.strip(), v.strip()) for n, _, v in (ln.partition(":") for ln in lines[1:] if ln)]
                lower = {n.lower(): v for n, v in headers}
                body = b""
                if "content-length" in lower:
                    body = await reader.readexactly(int(lower["content-length"]))
                elif lower.get("transfer-encoding", "").lower() == "chunked":
                    while True:
                        size_line = await reader.readuntil(b"\r\n")
                        size = int(size_line.split(b";")[0], 16)
                        chunk = await reader.readexactly(size + 2)
                        body += chunk[:-2]
                        if size == 0:
                            break
                self.raw[index] += body
                req = Request(conn, sni, head, method, path, headers, body)
                self.requests.append(req)
                script = self.scripts.get(path.split("?", 1)[0]) or _echo
                await script(req, wire)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, asyncio.CancelledError):
            pass
        finally:
            writer.close()  # the loop is still running: stop() cancels before it stops


async def _echo(req: Request, wire: Wire) -> None:
    body = req.raw_head + req.body
    await wire.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
