"""The benchmark's upstream: a small JSON endpoint, a 64 KiB body and an SSE stream, over HTTPS."""

from __future__ import annotations

import asyncio
import ssl
import sys

from aiohttp import web

SMALL = b'{"id":"chatcmpl-bench","object":"chat.completion","choices":[{"index":0,"message":{"content":"ok"}}]}'
BIG = b"x" * 65536


async def main(cert: str, host: str, port: int) -> None:
    async def small(_: web.Request) -> web.Response:
        return web.Response(body=SMALL, content_type="application/json")

    async def big(_: web.Request) -> web.Response:
        return web.Response(body=BIG, content_type="application/octet-stream")

    async def sse(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        delay = float(request.query.get("delay_ms", "0")) / 1000
        for i in range(50):
            await resp.write(f'data: {{"token":"t{i}"}}\n\n'.encode())
            if delay:
                await asyncio.sleep(delay)
        await resp.write(b"data: [DONE]\n\n")
        return resp

    app = web.Application()
    app.router.add_get("/v1/small", small)
    app.router.add_get("/v1/big", big)
    app.router.add_get("/v1/sse", sse)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, sys.argv[4])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port, ssl_context=ctx).start()
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))  # CERT HOST PORT KEY
