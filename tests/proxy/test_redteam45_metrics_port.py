"""Red team 45: the metrics port has no bound and no timeout.

The sidecar serves /metrics with prometheus_client's ``start_http_server``: a thread per
connection, no cap, no read timeout. In a pod it listens on 0.0.0.0 (injector: ``--metrics-host
0.0.0.0``), and the agent shares the pod's network namespace (loopback is never captured), so the
agent can open as many silent connections as it likes: each one holds a thread of the sidecar for
ever (measured: ~25 KiB of RSS and one thread per connection, 1,500 connections in 60 s took the
sidecar from 60 to 97 MiB and 1,462 threads; the sidecar's limit is 256 MiB). The proxy port has
``--max-connections``, ``--header-timeout`` and ``--idle-timeout``; the metrics port has none of
them. A silent connection must be closed, as a silent request head on the proxy port is (408).

Copy to tests/proxy/. Fails on 991a75a (the connection is never closed).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path

from tests.conftest import needs_root
from tests.support.proxyproc import ProxyProcess

pytestmark = needs_root

POLICY = """apiVersion: sandgate.dev/v1alpha1
kind: EgressPolicy
metadata: {name: rt45-metrics}
spec:
  allow: [{host: api.openai.com}]
"""


def threads_of(p: ProxyProcess) -> int:
    for line in Path(f"/proc/{p.proc.pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return -1


def test_a_silent_connection_to_the_metrics_port_is_closed(make_proxy: Callable[..., ProxyProcess]) -> None:
    p = make_proxy(POLICY, "--header-timeout", "2", "--idle-timeout", "5")
    before = threads_of(p)
    held = []
    for _ in range(20):
        s = socket.create_connection(("127.0.0.1", p.metrics_port), timeout=5)
        s.sendall(b"GET /metrics HTTP/1.1\r\n")  # a request head that never ends
        held.append(s)
    time.sleep(2)
    grown = threads_of(p) - before
    deadline = time.monotonic() + 35  # past the default 30 s header timeout, whatever the fix picks
    closed = 0
    try:
        for s in held:
            s.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                s.recv(1024)  # an answer (408, 400) or the close: either ends the wait
                closed += 1
            except TimeoutError:
                pass
            except OSError:  # reset
                closed += 1
    finally:
        for s in held:
            s.close()
    assert closed == len(held), (
        f"{len(held) - closed} of {len(held)} silent metrics connections still open after 35 s "
        f"(each held one of {grown} new sidecar threads)"
    )
    assert p.metrics()  # and the port still serves
