"""A small authoritative DNS server for the machine-local worlds Sandgate builds.

Two uses, one server: inside a ``sandgate run`` sandbox, the resolver that answers every A query
with the sink address (:func:`sink`; the proxy decides where a connection goes, so the answer carries
no information and no query leaves: C04); and in the private networks of the demo, the benchmark and
the test suite, the nameserver that knows the stand-in hosts (:func:`table`), since the proxy never
reads ``/etc/hosts``. Messages are parsed and built with dnspython; anything that is not a plain
query gets no reply (never echo, never loop).
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import threading
from collections.abc import Callable, Mapping, Sequence

import dns.exception
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

__all__ = ["DnsServer", "answer", "sink", "table"]

# (name without the trailing dot, record type) -> addresses; None: no such name (NXDOMAIN)
Lookup = Callable[[str, int], list[str] | None]


def sink(address: str) -> Lookup:
    """Every A query gets ``address``; every other type an empty answer."""

    def lookup(name: str, rdtype: int) -> list[str]:
        return [address] if rdtype == dns.rdatatype.A else []

    return lookup


def table(hosts: Mapping[str, str | Sequence[str]]) -> Lookup:
    """Names from ``hosts`` (name -> one address or several, IPv4 and IPv6); other names do not exist."""
    known = {
        name.lower().rstrip("."): [ipaddress.ip_address(ip) for ip in ([ips] if isinstance(ips, str) else ips)]
        for name, ips in hosts.items()
    }

    def lookup(name: str, rdtype: int) -> list[str] | None:
        ips = known.get(name.lower())
        if ips is None:
            return None
        want = 4 if rdtype == dns.rdatatype.A else 6 if rdtype == dns.rdatatype.AAAA else 0
        return [str(ip) for ip in ips if ip.version == want]

    return lookup


def answer(query: bytes, lookup: Lookup, ttl: int = 60) -> bytes | None:
    """The reply to one query, or None for something that is not a query."""
    try:
        msg = dns.message.from_wire(query)
    except (dns.exception.DNSException, ValueError):
        return None
    if msg.flags & dns.flags.QR:
        return None
    reply = dns.message.make_response(msg)
    if msg.opcode() != dns.opcode.QUERY or len(msg.question) != 1:
        reply.set_rcode(dns.rcode.NOTIMP)
        return reply.to_wire()
    q = msg.question[0]
    addresses = lookup(q.name.to_text(omit_final_dot=True), q.rdtype)
    if addresses is None:
        reply.set_rcode(dns.rcode.NXDOMAIN)
    elif addresses:
        reply.answer.append(dns.rrset.from_text_list(q.name, ttl, dns.rdataclass.IN, q.rdtype, addresses))
    return reply.to_wire()


class DnsServer:
    """UDP and TCP on ``host:port``, a daemon thread each. ``on_query`` sees every raw query."""

    def __init__(
        self,
        lookup: Lookup,
        host: str = "127.0.0.1",
        port: int = 53,
        on_query: Callable[[bytes], None] = lambda q: None,
        ttl: int = 60,
    ) -> None:
        self.lookup = lookup
        self.on_query = on_query
        self.ttl = ttl
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind((host, port))
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind((host, port))
        self.tcp.listen(16)
        threading.Thread(target=self._serve_udp, name="dns-udp", daemon=True).start()
        threading.Thread(target=self._serve_tcp, name="dns-tcp", daemon=True).start()

    def _serve_udp(self) -> None:
        while True:
            try:
                data, peer = self.udp.recvfrom(4096)
            except OSError:
                return
            self.on_query(data)
            if (reply := answer(data, self.lookup, self.ttl)) is not None:
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
                    data = _read(conn, size)
                    self.on_query(data)
                    if (reply := answer(data, self.lookup, self.ttl)) is not None:
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
