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
    """Binds 127.0.0.1:53 (UDP and TCP), the only resolver in the test namespace, and records
    every query; answers nothing."""

    def __init__(self) -> None:
        self.queries: list[bytes] = []
        self._udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._udp.bind(("127.0.0.1", 53))
        self._tcp = ContactRecorder([("127.0.0.1", 53)])
        threading.Thread(target=self._recv, daemon=True).start()

    def _recv(self) -> None:
        while True:
            try:
                data, _ = self._udp.recvfrom(4096)
            except OSError:
                return
            self.queries.append(data)

    @property
    def count(self) -> int:
        return len(self.queries) + self._tcp.count

    def asked_about(self, label: str) -> bool:
        return any(label.encode() in q for q in self.queries)

    def close(self) -> None:
        self._udp.close()
        self._tcp.close()
