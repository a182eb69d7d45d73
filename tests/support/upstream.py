"""Real HTTPS upstreams for tests (aiohttp + a trustme CA), standing in for api.openai.com & co.

``echo`` reflects what it received (request line, headers, body) as JSON and records every request,
so a test can assert exactly what an upstream saw. ``/reflect`` puts the Authorization value back
into headers and body (the B12 reflector; ``?pad=N`` makes the body N bytes longer); ``/sse`` streams events; ``/gzip`` answers compressed.
Run as a module to serve on given addresses in another network namespace.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import ssl
import sys
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Seen:
    requests: list[dict[str, Any]] = field(default_factory=list)
    path: str | None = None  # also append JSON lines here (upstreams in another network namespace)

    def add(self, entry: dict[str, Any]) -> None:
        self.requests.append(entry)
        if self.path:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(entry) + "\n")

    def authorizations(self) -> list[str]:
        return [r["headers"].get("authorization", "") for r in self.requests]


def make_app(name: str, seen: Seen, gates: dict[str, Any] | None = None) -> web.Application:
    gates = gates if gates is not None else {}

    async def record(request: web.Request) -> dict[str, Any]:
        body = await request.read()
        entry = {
            "upstream": name,
            "method": request.method,
            "path": request.path_qs,
            "headers": {k.lower(): v for k, v in request.headers.items()},
            "body": body.decode("utf-8", "replace"),
            "peer": list(request.transport.get_extra_info("peername") or ()) if request.transport else [],
            "tls_resumed": bool(
                request.transport and (obj := request.transport.get_extra_info("ssl_object")) and obj.session_reused
            ),
        }
        seen.add(entry)
        return entry

    async def echo(request: web.Request) -> web.Response:
        return web.json_response(await record(request))

    async def reflect(request: web.Request) -> web.Response:
        entry = await record(request)
        auth = entry["headers"].get("authorization", "")
        token = auth.split(" ", 1)[-1]
        body = json.dumps(
            {"error": f"Incorrect API key provided: {token}", "b64": base64.b64encode(token.encode()).decode()}
            | ({"pad": "x" * int(request.query["pad"])} if "pad" in request.query else {})  # (a larger body)
        )
        resp = web.Response(text=body, content_type="application/json")
        resp.headers["WWW-Authenticate"] = f'Bearer realm="x", error="{token}"'
        resp.headers["Location"] = f"https://x.invalid/?key={token}"
        resp.headers["X-Sandgate-Reason"] = "forged"
        if request.query.get("gzip"):
            resp.body = gzip.compress(body.encode())
            resp.headers["Content-Encoding"] = "gzip"
        return resp

    async def sse(request: web.Request) -> web.StreamResponse:
        entry = await record(request)
        token = entry["headers"].get("authorization", "").split(" ", 1)[-1]
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        count = int(request.query.get("n", "5"))
        delay = float(request.query.get("delay", "0"))
        gate = gates.get(request.query.get("gate", ""))
        for i in range(count):
            await resp.write(f'data: {{"token": "t{i}"}}\n\n'.encode())
            if delay:
                await asyncio.sleep(delay)
            if gate is not None and i == 0:
                # Hold the stream until the test has seen event 0 through the proxy (not buffered).
                await asyncio.get_running_loop().run_in_executor(None, gate.wait, 10)
        if request.query.get("leak"):
            half = len(token) // 2
            await resp.write(f"data: {token[:half]}".encode())
            await asyncio.sleep(0.05)
            await resp.write(f"{token[half:]}\n\n".encode())
        await resp.write(b"data: [DONE]\n\n")
        return resp

    async def redirect(request: web.Request) -> web.Response:
        await record(request)
        raise web.HTTPFound(request.query.get("to", "https://attacker.test/"))

    async def big(request: web.Request) -> web.Response:
        await record(request)
        return web.Response(body=b"x" * int(request.query.get("n", "100000")))

    async def chat(request: web.Request) -> web.Response:
        await record(request)
        return web.json_response({
            "id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": "gpt-test",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": f"hello from {name}"}}],
        })  # fmt: skip

    async def ws(request: web.Request) -> web.WebSocketResponse:
        await record(request)
        sock = web.WebSocketResponse()
        await sock.prepare(request)
        async for msg in sock:
            seen.add(
                {"upstream": name, "method": "WS", "path": request.path, "headers": {}, "body": msg.data, "peer": []}
            )
            await sock.send_str(f"echo:{msg.data}")
        return sock

    async def close(request: web.Request) -> web.Response:
        await record(request)
        return web.Response(text="closing", headers={"Connection": "close"})

    async def altsvc(request: web.Request) -> web.Response:
        await record(request)
        return web.Response(text="ok", headers={"Alt-Svc": 'h3=":443"; ma=86400'})

    app = web.Application(client_max_size=64 << 20)
    app.router.add_get("/ws", ws)
    app.router.add_get("/altsvc", altsvc)
    app.router.add_get("/close", close)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_route("*", "/redirect", redirect)
    app.router.add_route("*", "/big", big)
    app.router.add_route("*", "/reflect", reflect)
    app.router.add_route("*", "/sse", sse)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


async def serve(app: web.Application, host: str, port: int, ssl_ctx: ssl.SSLContext | None) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_ctx)
    await site.start()
    return runner


def _count_tcp(host: str, port: int, path: str) -> None:
    import socket
    import threading

    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))
    s.listen(16)

    def loop() -> None:
        while True:
            conn, _ = s.accept()
            with open(path, "a") as f:
                f.write("connect\n")
            conn.close()

    threading.Thread(target=loop, daemon=True).start()


def _count_udp(host: str, port: int, path: str) -> None:
    import socket
    import threading

    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((host, port))

    def loop() -> None:
        while True:
            s.recvfrom(4096)
            with open(path, "a") as f:
                f.write("datagram\n")

    threading.Thread(target=loop, daemon=True).start()


class UpstreamThread:
    """All test upstreams, served from one background event loop so tests can use blocking
    clients (curl, requests, the openai SDK) freely."""

    def __init__(self) -> None:
        import threading

        self.seen: dict[str, Seen] = {}
        self.gates: dict[str, threading.Event] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._runners: list[web.AppRunner] = []

    def start(self, name: str, host: str, port: int, ssl_ctx: ssl.SSLContext | None) -> Seen:
        seen = self.seen.setdefault(name, Seen())
        app = make_app(name, seen, self.gates)
        fut = asyncio.run_coroutine_threadsafe(serve(app, host, port, ssl_ctx), self._loop)
        self._runners.append(fut.result(10))
        return seen

    def run(self, coro: Any) -> Any:
        """Run a coroutine on the upstreams' loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    def start_app(self, app: web.Application, host: str, port: int, ssl_ctx: ssl.SSLContext | None) -> None:
        fut = asyncio.run_coroutine_threadsafe(serve(app, host, port, ssl_ctx), self._loop)
        self._runners.append(fut.result(10))

    def stop(self) -> None:
        for r in self._runners:
            asyncio.run_coroutine_threadsafe(r.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)


if __name__ == "__main__":  # python -m tests.support.upstream CERT RECORD_DIR KIND:NAME@HOST:PORT ...
    cert, record_dir, *specs = sys.argv[1:]

    async def main() -> None:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert)
        for spec in specs:
            kind_name, addr = spec.split("@")
            kind, name = kind_name.split(":")
            host, port = addr.rsplit(":", 1)
            host = host.strip("[]")
            path = f"{record_dir}/{name}"
            if kind == "https":
                seen = Seen(path=path + ".jsonl")
                await serve(make_app(name, seen), host, int(port), ctx)
            elif kind == "tcp":
                _count_tcp(host, int(port), path + ".count")
            elif kind == "udp":
                _count_udp(host, int(port), path + ".count")
        print("upstreams ready", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())
