"""The metrics port is bounded (red team 45, F8): in a pod it listens on all addresses and the agent
shares the pod's network. At most 16 connections at a time (more are closed at once), each with
``--header-timeout`` (at most 10 s) for its whole request head: a connection that trickles its
head is closed as surely as a silent one, and scrapes work again once they are gone."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

from proxy.sidecar import METRICS_MAX_CONNECTIONS
from tests.conftest import needs_root
from tests.support.proxyproc import ProxyProcess

pytestmark = needs_root

POLICY = """apiVersion: sandgate.dev/v1alpha1
kind: EgressPolicy
metadata: {name: metrics-port}
spec:
  allow: [{host: api.openai.com}]
"""


def closed_within(s: socket.socket, seconds: float) -> bool:
    """Whether the server ends the connection (closes, resets, or answers and closes) in time."""
    s.settimeout(seconds)
    try:
        while s.recv(4096):
            pass
    except TimeoutError:
        return False
    except OSError:
        pass
    return True


def test_a_connection_that_trickles_its_request_head_is_closed(make_proxy: Callable[..., ProxyProcess]) -> None:
    """A byte every half second: each read is quick, the head never ends. A timeout per read
    would never fire; the head has one deadline."""
    p = make_proxy(POLICY, "--header-timeout", "2")
    head = b"GET /metrics HTTP/1.1\r\nX-Pad: " + b"a" * 100
    with socket.create_connection(("127.0.0.1", p.metrics_port), timeout=5) as s:
        t0 = time.monotonic()
        for byte in head:
            try:
                s.sendall(bytes([byte]))
            except OSError:
                break  # (closed by the proxy: what this test wants)
            time.sleep(0.5)
            if time.monotonic() - t0 > 8:
                break
        assert closed_within(s, 1), "a trickled request head kept its metrics connection open past --header-timeout"
    assert time.monotonic() - t0 < 6
    assert "sandgate_proxy_ready 1.0" in p.metrics()


def test_connections_over_the_cap_are_closed_at_once_and_scrapes_come_back(
    make_proxy: Callable[..., ProxyProcess],
) -> None:
    p = make_proxy(POLICY, "--header-timeout", "2")
    held = [socket.create_connection(("127.0.0.1", p.metrics_port), timeout=5) for _ in range(METRICS_MAX_CONNECTIONS)]
    try:
        time.sleep(0.3)  # (each accepted and given its thread)
        with socket.create_connection(("127.0.0.1", p.metrics_port), timeout=5) as extra:
            assert closed_within(extra, 1), "a connection over the cap was kept"
        assert all(closed_within(s, 4) for s in held)  # the silent ones, after --header-timeout
    finally:
        for s in held:
            s.close()
    time.sleep(0.2)
    assert "sandgate_proxy_ready 1.0" in p.metrics()
