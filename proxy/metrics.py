"""The one list of Sandgate's Prometheus metric names (ARCHITECTURE.md "Metrics").

Labels come only from bounded sets: the reason enum, decisions, secret names and bound hosts from
the policy, fixed result words. Never a raw host, path, query, placeholder or value (B16, F09).
"""

from __future__ import annotations

import contextlib
import errno
import io
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    make_wsgi_app,
)
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from proxy.policy.model import Policy, Reason, Verdict
from proxy.record import NO_REASON, Buckets, Counts

__all__ = [
    "TASKS", "VAULT_RESULTS", "LoopCounter", "LoopHistogram", "OneThreadMetric", "Metrics", "NAMES", "NO_REASON",
    "serve_metrics", "stop_metrics",
]  # fmt: skip

EGRESS_REQUESTS = "sandgate_egress_requests_total"
SECRET_SWAPS = "sandgate_secret_swaps_total"
SECRET_BLOCKED = "sandgate_secret_blocked_total"
SECRET_REDACTIONS = "sandgate_secret_redactions_total"
VAULT_REQUESTS = "sandgate_vault_requests_total"
VAULT_REQUEST_DURATION = "sandgate_vault_request_duration_seconds"
POLICY_RELOADS = "sandgate_policy_reloads_total"
UPSTREAM_REQUEST_DURATION = "sandgate_upstream_request_duration_seconds"
WEBHOOK_ADMISSIONS = "sandgate_webhook_admissions_total"
WEBHOOK_ADMISSION_DURATION = "sandgate_webhook_admission_duration_seconds"
PROXY_READY = "sandgate_proxy_ready"
ACTIVE_CONNECTIONS = "sandgate_proxy_active_connections"
SECRET_AVAILABLE = "sandgate_secret_available"
SECRET_LAST_SUCCESS = "sandgate_secret_last_success_timestamp_seconds"
SECRET_AGE = "sandgate_secret_age_seconds"
INTERNAL_ERRORS = "sandgate_internal_errors_total"
BUILD_INFO = "sandgate_build_info"
POLICY_INFO = "sandgate_policy_info"
AUDIT_PENDING = "sandgate_audit_pending_bytes"
AUDIT_REOPENS = "sandgate_audit_reopens_total"

NAMES = (
    EGRESS_REQUESTS,
    SECRET_SWAPS,
    SECRET_BLOCKED,
    SECRET_REDACTIONS,
    VAULT_REQUESTS,
    VAULT_REQUEST_DURATION,
    POLICY_RELOADS,
    UPSTREAM_REQUEST_DURATION,
    WEBHOOK_ADMISSIONS,
    WEBHOOK_ADMISSION_DURATION,
    PROXY_READY,
    ACTIVE_CONNECTIONS,
    SECRET_AVAILABLE,
    SECRET_LAST_SUCCESS,
    SECRET_AGE,
    INTERNAL_ERRORS,
    BUILD_INFO,
    POLICY_INFO,
    AUDIT_PENDING,
    AUDIT_REOPENS,
)

VAULT_RESULTS = ("success", "timeout", "unreachable", "forbidden", "not_found", "invalid", "auth_error", "error")
TASKS = (
    "policy-watcher",
    "secret-refresher",
    "vault-renewal",
    "sweeper",
    "data_path",
    "audit",
    "log",
)  # internal_errors{task}

disable_created_metrics()  # *_created series double the output and answer no audit question


def _base(name: str) -> str:
    return name.removesuffix("_total")


class OneThreadMetric(Collector):
    """A metric counted on one thread only, the event loop's (the data path's per-request counts),
    and read at scrape time from any (the metrics server's): registered through the client
    library's extension point, a collector. prometheus_client's own metrics take a lock on every
    increment and find their labelled child through two method calls (~1 us a count, three or four
    counts a request); here a count is a dict update. Two threads counting one of these could lose
    counts: only the data path counts them (making a series exist at 0 is safe from any thread)."""

    type = ""  # as exposed: "counter", "histogram"
    labelnames: tuple[str, ...] = ()

    def __init__(self, name: str, documentation: str, registry: CollectorRegistry) -> None:
        self.name, self._doc = name, documentation  # (a counter's without its "_total")
        registry.register(self)

    def describe(self) -> list[Metric]:
        return list(self.collect())


class LoopCounter(OneThreadMetric):
    """A labelled counter (see :class:`OneThreadMetric`); the exposition is the library's own."""

    type = "counter"

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str], registry: CollectorRegistry) -> None:
        self.labelnames = tuple(labelnames)
        # The series: the data path counts them here itself (proxy.record.Recorder), compiled.
        self.counts = Counts()
        super().__init__(name, documentation, registry)

    def zero(self, *labels: str) -> None:
        """Make the series exist at 0 (see :meth:`Metrics.initialise`)."""
        self._check(labels)
        self.counts.values.setdefault(labels, 0)  # (one step under the GIL: never resets a count)

    def inc(self, *labels: str) -> None:
        self._check(labels)
        self.counts.inc(labels)

    def _check(self, labels: tuple[str, ...]) -> None:
        if len(labels) != len(self.labelnames):
            raise ValueError(f"{self.name}: labels {self.labelnames}, got {labels}")

    def value(self, *labels: str) -> int | None:
        return self.counts.values.get(labels)

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self._doc, labels=self.labelnames)
        for labels, n in list(self.counts.values.items()):  # (a snapshot: one C call under the GIL)
            family.add_metric(labels, n)
        yield family


class LoopHistogram(OneThreadMetric):
    """An unlabelled histogram (see :class:`OneThreadMetric`)."""

    type = "histogram"

    def __init__(self, name: str, documentation: str, buckets: Sequence[float], registry: CollectorRegistry) -> None:
        # The observations: the data path observes them there itself (a compiled call), see
        # proxy.record.Buckets.
        self.buckets = Buckets(sorted(float(b) for b in buckets))
        super().__init__(name, documentation, registry)

    def observe(self, value: float) -> None:
        self.buckets.observe(value)

    def collect(self) -> Iterator[Metric]:
        b = self.buckets
        counts, total = list(b.counts), b.sum
        cumulative, buckets = 0, []
        for bound, n in zip([*b.bounds, float("inf")], counts, strict=True):
            cumulative += n
            buckets.append((floatToGoString(bound), cumulative))
        yield HistogramMetricFamily(self.name, self._doc, buckets=buckets, sum_value=total)


class Metrics:
    """The sidecar's metrics, on a registry of their own (one per proxy, so tests can run several)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        ProcessCollector(registry=self.registry)
        r = self.registry
        # Counted by the data path, on the event loop, for every request: see LoopCounter.
        self.egress_requests = LoopCounter(
            _base(EGRESS_REQUESTS),
            "Egress decisions: one per request (or refused connection).",
            ["decision", "reason"],
            registry=r,
        )
        self.secret_swaps = LoopCounter(
            _base(SECRET_SWAPS),
            "Placeholders replaced by the real secret, by secret and bound host.",
            ["secret", "host"],
            registry=r,
        )
        self.secret_blocked = LoopCounter(
            _base(SECRET_BLOCKED),
            "Requests that needed or carried a secret and were refused.",
            ["secret", "reason"],
            registry=r,
        )
        self.secret_redactions = Counter(
            _base(SECRET_REDACTIONS),
            "Real secret values found in responses and replaced by the placeholder.",
            ["secret"],
            registry=r,
        )
        self.policy_reloads = Counter(_base(POLICY_RELOADS), "Policy file reloads by result.", ["result"], registry=r)
        self.upstream_duration = LoopHistogram(
            UPSTREAM_REQUEST_DURATION,
            "Time from the request's start to the upstream's response headers.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=r,
        )
        self.ready = Gauge(
            PROXY_READY,
            "1 when the proxy serves and records: listeners up, its event loop turning, the audit stream taking writes.",
            registry=r,
        )
        self.audit_pending = Gauge(
            AUDIT_PENDING, "Bytes of audit records waiting for the audit stream to take them (0 when it keeps up).",
            registry=r,
        )  # fmt: skip
        self.audit_reopens = Counter(
            _base(AUDIT_REOPENS), "Times the --audit-log file was opened anew: its path named another file or none.",
            registry=r,
        )  # fmt: skip
        self.active_connections = Gauge(ACTIVE_CONNECTIONS, "Client connections currently open.", registry=r)
        self.vault_requests = Counter(
            _base(VAULT_REQUESTS),
            "Vault/OpenBao reads and logins by result: success, timeout, unreachable, forbidden, not_found, invalid, auth_error, error.",
            ["result"],
            registry=r,
        )
        self.vault_duration = Histogram(
            VAULT_REQUEST_DURATION, "Duration of Vault/OpenBao reads, including login when one was needed.", registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )  # fmt: skip
        self.secret_last_success = Gauge(
            SECRET_LAST_SUCCESS, "Unix time of the last successful fetch of the secret's value.", ["secret"], registry=r
        )
        self.secret_age = Gauge(
            SECRET_AGE, "Age of the value being served (grows while the source is unreachable, within the stale window).",
            ["secret"], registry=r,
        )  # fmt: skip
        self.internal_errors = Counter(
            _base(INTERNAL_ERRORS),
            "Failures of Sandgate's own background tasks, by task (each was logged and the task restarted).",
            ["task"],
            registry=r,
        )
        self.build_info = Gauge(BUILD_INFO, "1, labelled with the running Sandgate version.", ["version"], registry=r)
        self.policy_info = Gauge(
            POLICY_INFO, "1 for the policy in force: its name, mode and the SHA-256 of its file.",
            ["policy", "mode", "sha256"], registry=r,
        )  # fmt: skip
        self._policy_labels: tuple[str, str, str] | None = None
        self.secret_available = Gauge(
            SECRET_AVAILABLE, "1 when the secret's value is held and valid, else 0.", ["secret"], registry=r
        )

    def initialise(self, policy: Policy, sha256: str, version: str) -> None:
        """Give every series the policy can produce its zero now, at start and on each reload, so
        that ``increase()`` sees the first event (a counter that appears at 1 has no step from 0 to
        see). Labels stay bounded: only what the policy names and the fixed enums."""
        self.build_info.labels(version).set(1)
        labels = (policy.name, policy.mode.value, sha256)
        if self._policy_labels is not None and self._policy_labels != labels:
            self.policy_info.remove(*self._policy_labels)
        self.policy_info.labels(*labels).set(1)
        self._policy_labels = labels
        self.egress_requests.zero(Verdict.ALLOWED.value, NO_REASON)
        for reason in Reason:
            self.egress_requests.zero(Verdict.DENIED.value, reason.value)
            if reason.reportable:
                self.egress_requests.zero(Verdict.REPORTED.value, reason.value)
        for result in ("success", "error"):
            self.policy_reloads.labels(result)
        for result in VAULT_RESULTS:
            self.vault_requests.labels(result)
        for task in TASKS:
            self.internal_errors.labels(task)
        for secret in policy.secrets:
            self.secret_redactions.labels(secret.name)
            for reason in Reason:
                self.secret_blocked.zero(secret.name, reason.value)
            for bound in secret.hosts:
                self.secret_swaps.zero(secret.name, str(bound))


class _MetricsHandler(WSGIRequestHandler):
    """One scrape per connection, read within the server's ``client_timeout``: a request head that
    has not arrived whole by then (a silent or trickling connection) is dropped, and so is an
    answer the client does not take within as long."""

    server: _MetricsServer

    def log_message(self, format: str, *args: Any) -> None:
        """Nothing: a scrape is not news (prometheus_client's handler is silent too)."""

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.client_timeout)
        self.rfile.close()  # (the socket's own file: replaced by one with a deadline)
        self.rfile = io.BufferedReader(_HeadReader(self.connection, time.monotonic() + self.server.client_timeout))

    def get_environ(self) -> dict[str, str]:
        # (called once the head is read: the answer gets a timeout of its own)
        self.connection.settimeout(self.server.client_timeout)
        return super().get_environ()


class _HeadReader(io.RawIOBase):
    """A socket read with one deadline for everything read (socket timeouts bound each read only:
    a client sending a byte a second would never time out)."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        super().__init__()
        self._sock, self._deadline = sock, deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("request head not received in time")
        self._sock.settimeout(left)
        return self._sock.recv_into(buffer)


ACCEPT_PAUSE = 0.1  # seconds between accepts while the process is out of descriptors
_OUT_OF = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class _MetricsServer(ThreadingWSGIServer):
    """prometheus_client's server (a thread per connection), with a cap on connections and a
    timeout on each: over the cap a connection is closed at once, unread."""

    client_timeout: float = 30.0
    max_connections: int = 16
    request_queue_size = 64  # (the listen backlog; socketserver's 5 drops connections made together)

    def server_activate(self) -> None:
        super().server_activate()
        self._slots = threading.BoundedSemaphore(self.max_connections)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def get_request(self) -> tuple[Any, Any]:
        """socketserver's accept. Out of descriptors (or memory), the connection stays in the backlog
        and the loop, which ignores the error, found the socket readable again at once: the thread
        took a whole CPU for as long as a scrape waited (red team 68). It now pauses before the
        next try."""
        try:
            return super().get_request()
        except OSError as e:
            if e.errno in _OUT_OF:
                time.sleep(ACCEPT_PAUSE)
            raise

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that timed out, reset or sent garbage: its connection is closed, nothing is
        printed (the library's default prints a traceback on stderr for each)."""


def serve_metrics(
    host: str, port: int, registry: CollectorRegistry, *, timeout: float, max_connections: int
) -> WSGIServer:
    """Serve ``registry`` on ``host``:``port`` (``/metrics``, any path) from a thread of its own, so
    that a scrape still answers when the event loop is stuck (readiness says so). At most
    ``max_connections`` at a time, each given ``timeout`` seconds for its request head and as
    many for taking the answer. Raises OSError (and what getaddrinfo raises) when it cannot listen."""
    info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, sockaddr = info[0]

    class Server(_MetricsServer):
        address_family = family

    Server.client_timeout, Server.max_connections = timeout, max_connections
    httpd = make_server(str(sockaddr[0]), port, make_wsgi_app(registry), Server, handler_class=_MetricsHandler)
    thread = threading.Thread(target=httpd.serve_forever, name="sandgate:metrics", daemon=True)
    thread.start()
    return httpd


def stop_metrics(server: WSGIServer) -> None:
    """Stop the metrics server at once. Its loop polls every 0.5 s, so ``shutdown()`` alone held
    every exit that long; a listening socket shut down wakes the poll now (Linux), and the loop,
    whose accept then fails (ignored), sees the shutdown asked."""
    with contextlib.suppress(OSError):
        server.socket.shutdown(socket.SHUT_RDWR)
    server.shutdown()
    server.server_close()
