"""Listeners that only count: proof of NO-CONTACT (no SYN reached, no DNS query was asked)."""

from __future__ import annotations

import socket
import threading


class ContactRecorder:
    """Accepts TCP connections on the given addresses and counts them; never answers."""

    def __init__(self, addrs: list[tuple[str, int]]) -> None:
        self.count = 0
        self._socks = []
        for host, port in addrs:
            s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
            s.listen(64)
            self._socks.append(s)
            threading.Thread(target=self._accept, args=(s,), daemon=True).start()

    def _accept(self, s: socket.socket) -> None:
        while True:
            try:
                conn, _ = s.accept()
            except OSError:
                return
            self.count += 1
            conn.close()

    def close(self) -> None:
        for s in self._socks:
            s.close()


class DnsSink:
    """The only resolver in the test namespace (127.0.0.1:53, UDP and TCP): it knows the test names
    (the proxy never reads /etc/hosts) and records every query, so a test can prove that a denied
    name was never asked about."""

    def __init__(self) -> None:
        from sandgate.dnsserver import DnsServer, table
        from tests.support.isolation import HOSTS

        self.queries: list[bytes] = []
        self.hosts = dict(HOSTS)  # a test may change what a name resolves to (rebinding: TTL 0)
        self._server = DnsServer(
            lambda name, rdtype: table(self.hosts)(name, rdtype), on_query=self.queries.append, ttl=0
        )

    @property
    def count(self) -> int:
        return len(self.queries)

    def asked_about(self, label: str) -> bool:
        return any(label.encode() in q for q in self.queries)

    def close(self) -> None:
        self._server.close()
