"""The sandbox's resolver: every name is the sink address, and no query ever leaves.

Inside a ``sandgate run`` sandbox, where a connection goes is decided by the proxy (from SNI and
Host, resolving through the relay), never by the agent's DNS. So the agent's resolver can answer
every A query with one constant address (``sandbox.SINK``): capture redirects any connection to it
on a captured port to the proxy, which then allows it, or refuses it with a reason and an audit
line (a name outside the policy is refused there, visibly, instead of failing to resolve). AAAA
and every other type get an empty answer, so clients fall back to IPv4. The answers carry no
information, and the queries go nowhere: this is not a channel out (C04).

Messages are parsed and built with mitmproxy's DNS codec (a dependency already).
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import struct
import threading

from mitmproxy import dns
from mitmproxy.net.dns import response_codes, types


def answer(query: bytes, sink: str) -> bytes | None:
    """The reply to one query, or None for something that is not a query."""
    try:
        msg = dns.DNSMessage.unpack(query)
    except (struct.error, ValueError, IndexError):
        return None
    if not msg.query:
        return None
    if msg.op_code != 0 or len(msg.questions) != 1:
        return msg.fail(response_codes.NOTIMP).packed
    q = msg.questions[0]
    if q.type == types.A:
        return msg.succeed([dns.ResourceRecord.A(q.name, ipaddress.IPv4Address(sink), ttl=60)]).packed
    return msg.succeed([]).packed


class SinkResolver:
    """UDP and TCP on ``host:53`` in a daemon thread each."""

    def __init__(self, sink: str, host: str = "127.0.0.1", port: int = 53) -> None:
        self.sink = sink
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind((host, port))
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind((host, port))
        self.tcp.listen(16)
        threading.Thread(target=self._serve_udp, name="sandbox-dns-udp", daemon=True).start()
        threading.Thread(target=self._serve_tcp, name="sandbox-dns-tcp", daemon=True).start()

    def _serve_udp(self) -> None:
        while True:
            try:
                data, peer = self.udp.recvfrom(4096)
            except OSError:
                return
            if (reply := answer(data, self.sink)) is not None:
                with contextlib.suppress(OSError):
                    self.udp.sendto(reply, peer)

    def _serve_tcp(self) -> None:
        while True:
            try:
                conn, _ = self.tcp.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                with contextlib.suppress(OSError, ValueError):
                    size = int.from_bytes(_read(conn, 2), "big")
                    if (reply := answer(_read(conn, size), self.sink)) is not None:
                        conn.sendall(len(reply).to_bytes(2, "big") + reply)

    def close(self) -> None:
        self.udp.close()
        self.tcp.close()


def _read(conn: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            raise ValueError("short read")
        buf += chunk
    return buf
