"""The benchmark's upstream: a small JSON body, a 64 KiB body and an SSE stream, over HTTPS.

    python bench/upstream.py CERT KEY HOST PORT     (env BENCH_PLACEHOLDER, BENCH_KEY)

A thread per connection on blocking TLS sockets, canned answers: it shares a core with the client,
so it must cost far less per request than the cheapest proxy measured (an asyncio or aiohttp
server costs about what the floor does). Every answer carries ``x-bench-auth: real`` when the
request's Authorization held the real key, ``placeholder`` when it held the placeholder: the
benchmark checks that each proxy really swapped. Prints ``ready``.
"""

from __future__ import annotations

import os
import socket
import ssl
import sys
import threading
import time
from urllib.parse import parse_qs, urlsplit

SMALL = b'{"id":"chatcmpl-bench","object":"chat.completion","choices":[{"index":0,"message":{"content":"ok"}}]}'
BIG = b"x" * 65536


def answer(status: str, content_type: str, auth: bytes, body: bytes | None) -> bytes:
    framing = b"Transfer-Encoding: chunked" if body is None else b"Content-Length: %d" % len(body)
    head = b"HTTP/1.1 %s\r\nContent-Type: %s\r\nx-bench-auth: %s\r\n%s\r\n\r\n" % (
        status.encode(),
        content_type.encode(),
        auth,
        framing,
    )
    return head + (body or b"")


CANNED = {
    (path, auth): answer("200 OK", ctype, auth, body)
    for auth in (b"real", b"placeholder", b"other")
    for path, ctype, body in ((b"/v1/small", "application/json", SMALL), (b"/v1/big", "application/octet-stream", BIG))
}


def serve(conn: ssl.SSLSocket, auths: dict[bytes, bytes]) -> None:
    buf = b""
    try:
        conn.do_handshake()
        while True:
            while (i := buf.find(b"\r\n\r\n")) < 0:
                data = conn.recv(65536)
                if not data:
                    return
                buf += data
            head, buf = buf[:i], buf[i + 4 :]  # the benchmark's requests have no body
            target = head.split(b" ", 2)[1]
            auth = b"other"
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.lower() == b"authorization":
                    auth = auths.get(value.strip(), b"other")
            path, _, _ = target.partition(b"?")
            if path == b"/v1/sse":
                stream(conn, target.decode(), auth)
            elif (path, auth) in CANNED:
                conn.sendall(CANNED[(path, auth)])
            else:
                conn.sendall(answer("404 Not Found", "text/plain", auth, b"no such path"))
    except OSError:
        pass
    finally:
        conn.close()


def stream(conn: ssl.SSLSocket, target: str, auth: bytes) -> None:
    """``events`` events (default 50) and a [DONE], each after a gap of ``delay_ms``: what an LLM's
    token stream looks like."""
    query = parse_qs(urlsplit(target).query)
    delay, events = float(query.get("delay_ms", ["0"])[0]) / 1000, int(query.get("events", ["50"])[0])
    conn.sendall(answer("200 OK", "text/event-stream", auth, None))
    for i in range(events + 1):
        time.sleep(delay)
        event = b'data: {"token":"t%d"}\n\n' % i if i < events else b"data: [DONE]\n\n"
        conn.sendall(b"%x\r\n%s\r\n" % (len(event), event))
    conn.sendall(b"0\r\n\r\n")


def main(cert: str, key: str, host: str, port: int) -> None:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["http/1.1"])
    auths = {
        b"Bearer " + os.environ["BENCH_KEY"].encode(): b"real",
        b"Bearer " + os.environ["BENCH_PLACEHOLDER"].encode(): b"placeholder",
    }
    listener = socket.create_server((host, port), backlog=1024)
    print("ready", flush=True)
    while True:
        sock, _ = listener.accept()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        tls = ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        threading.Thread(target=serve, args=(tls, auths), daemon=True).start()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
