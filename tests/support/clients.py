"""Clients the way agents use them: curl, and raw sockets for requests no polite client sends."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: str

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def reason(self) -> str | None:
        return self.headers.get("x-sandgate-reason")


def curl(proxy_url: str | None, ca: Path | None, url: str, *args: str, timeout: float = 10) -> Reply:
    """Run curl; a refused CONNECT is reported as the CONNECT response's status."""
    cmd = ["curl", "-sS", "--max-time", str(timeout), "-D", "-", "--noproxy", "", "--proxy-header", "Expect:"]
    if proxy_url:
        cmd += ["--proxy", proxy_url]
    if ca:
        cmd += ["--cacert", str(ca)]
    out = subprocess.run([*cmd, *args, url], capture_output=True, check=False, timeout=timeout + 5)
    return parse_http(out.stdout.decode(errors="replace"), out.stderr.decode(errors="replace"))


def parse_http(text: str, stderr: str = "") -> Reply:
    status, headers, body = 0, {}, text
    # curl -D - prints every response head (CONNECT's, 100 Continue) before the final one.
    while body.startswith("HTTP/"):
        head, _, body = body.partition("\r\n\r\n")
        lines = head.split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
        if status == 200 and lines[0].endswith("Connection established"):
            status, headers = 0, {}  # the tunnel; what came through it (if anything) follows
            continue
        if status >= 200 or not body.startswith("HTTP/"):
            break
    if status == 0 and stderr:
        body = stderr
    return Reply(status, headers, body)


def tunnel(proxy_port: int, authority: str, sni: str | None, ca: Path) -> ssl.SSLSocket:
    """CONNECT through the proxy, then TLS with the given SNI (None: no SNI at all)."""
    sock = socket.create_connection(("127.0.0.1", proxy_port), timeout=10)
    sock.sendall(f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError(f"proxy closed during CONNECT: {head!r}")
        head += chunk
    if not head.startswith(b"HTTP/1.1 200"):
        raise ConnectionRefusedError(head.decode(errors="replace"))
    ctx = ssl.create_default_context(cafile=str(ca))
    if sni is None:
        ctx.check_hostname = False
    return ctx.wrap_socket(sock, server_hostname=sni)


def raw_request(sock: socket.socket, data: bytes, timeout: float = 10) -> Reply:
    sock.settimeout(timeout)
    sock.sendall(data)
    buf = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except (TimeoutError, ConnectionResetError, ssl.SSLError):
            break
        if not chunk:
            break
        buf += chunk
        head, sep, rest = buf.partition(b"\r\n\r\n")
        if sep:
            lower = head.lower()
            if b"content-length:" in lower:
                n = int(lower.split(b"content-length:")[1].split(b"\r\n")[0])
                if len(rest) >= n:
                    break
    sock.close()
    if not buf:
        return Reply(0, {}, "")
    return parse_http(buf.decode(errors="replace"))


def read_head(reader: Any) -> tuple[int, dict[str, str]]:
    """Read one response head from a binary file-like object: (status, lowercased headers)."""
    status_line = reader.readline()
    status = int(status_line.split()[1])
    headers: dict[str, str] = {}
    while (line := reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers


def read_body(reader: Any, headers: dict[str, str]) -> bytes:
    """The body that follows, by Content-Length or chunked framing."""
    if "content-length" in headers:
        return bytes(reader.read(int(headers["content-length"])))
    if headers.get("transfer-encoding", "").lower() == "chunked":
        out = b""
        while (size := int(reader.readline().strip(), 16)) > 0:
            out += reader.read(size)
            reader.readline()
        reader.readline()
        return out
    return bytes(reader.read())
