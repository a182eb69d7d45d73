"""One connection from an agent: how it arrives (CONNECT, transparent TLS or plain HTTP), its TLS,
its requests one after another (pipelined ones wait their turn), its timeouts.

Regular mode: a plain request line first -- ``CONNECT host:port`` (decided at once: allowed tunnels
get ``200`` and their upstream is dialled while the agent's TLS handshake runs; denied ones get
``200`` too, then TLS and a ``403`` that names the reason and the secret a placeholder belonged to),
or an ``http://`` request to the proxy itself. Transparent mode: the first byte says TLS
(``0x16``) or plain HTTP, and the original destination comes from the socket. Each request is an
:class:`proxy.datapath.exchange.Exchange`; the authority facts the connection contributes are one
:class:`proxy.core.authority.ConnFacts`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import socket
import ssl
import struct
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httptools

from proxy.core.authority import ConnFacts, Refusal, parse_connect
from proxy.core.flow import FlowInfo
from proxy.core.http1 import denial
from proxy.core.swap import placeholders_in, real_value_in
from proxy.datapath.conn import Endpoint
from proxy.datapath.upstream import Upstream, UpstreamError
from proxy.policy.decide import RequestFacts, decide, deny
from proxy.policy.hosts import HostError, is_ip_literal, wire_host
from proxy.policy.model import Decision, Policy, Reason, Verdict

if TYPE_CHECKING:
    from proxy.core.finder import Finder
    from proxy.datapath.exchange import Exchange
    from proxy.datapath.server import Server
    from proxy.datapath.websocket import WebSocketRelay

log = logging.getLogger("sandgate.proxy")

__all__ = ["Client", "Head"]

_SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h; IP6T_SO_ORIGINAL_DST has the same number


@dataclass(slots=True)
class Head:
    """A request head as llhttp parsed it."""

    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    keep_alive: bool
    upgrade: bool
    size: int  # request line and fields, counted as "Name: value" lines (see Limits)
    raw: list[tuple[bytes, bytes]]  # the fields as bytes (``headers``, encoded)

    _index: dict[str, list[str]] | None = field(init=False, repr=False, compare=False)

    def __init__(  # (written out: see proxy.native, "Dataclasses")
        self,
        method: str,
        target: str,
        version: str,
        headers: list[tuple[str, str]],
        keep_alive: bool,
        upgrade: bool,
        size: int,
        raw: list[tuple[bytes, bytes]],
    ) -> None:
        self.method, self.target, self.version, self.headers = method, target, version, headers
        self.keep_alive, self.upgrade, self.size, self.raw = keep_alive, upgrade, size, raw
        self._index = None

    def values(self, name: str) -> list[str]:
        """Every value of the field ``name`` (lowercase), in order."""
        if self._index is None:
            index: dict[str, list[str]] = {}
            for n, v in self.headers:
                index.setdefault(n.lower(), []).append(v)
            self._index = index
        return self._index.get(name, [])


class _Events:
    """llhttp callbacks, recorded: the connection processes them in order, pausing between
    requests (a pipelined request waits until the one before has its answer)."""

    def __init__(self) -> None:
        self.queue: deque[tuple[Any, ...]] = deque()
        self.parser: httptools.HttpRequestParser | None = None
        self._url: list[bytes] = []
        self._headers: list[tuple[bytes, bytes]] = []
        self._size = 0
        self._in_head = False
        self.raw_head = 0  # bytes fed while a head was incomplete (a bound on whitespace padding)
        # Bytes fed since the parser last delivered something: a chunk's size line and extensions,
        # a trailer (httptools joins a field's pieces as they come: red team 22, a 48 MiB trailer).
        self.unparsed = 0

    def on_message_begin(self) -> None:
        self._url, self._headers, self._size, self._in_head = [], [], 0, True

    def on_url(self, url: bytes) -> None:
        self._url.append(url)
        self._size += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._size += len(name) + len(value) + 4
        # A field value excludes the whitespace around it (RFC 9110 5.5); llhttp keeps trailing OWS.
        if self._in_head:
            self._headers.append((name, value.strip(b" \t")))
        # Trailers of a chunked request body are dropped: nothing in them is forwarded.

    def on_headers_complete(self) -> None:
        p = self.parser
        assert p is not None
        method = p.get_method().decode("latin-1")
        target = b"".join(self._url).decode("latin-1")
        raw = self._headers
        head = Head(
            method,
            target,
            p.get_http_version(),
            [(n.decode("latin-1"), v.decode("latin-1")) for n, v in raw],
            p.should_keep_alive(),
            p.should_upgrade(),
            len(method) + self._size + 14,  # "M T HTTP/1.1\r\n" ... "\r\n"
            raw,
        )
        self._in_head = False
        self.raw_head = self.unparsed = 0
        self.queue.append(("head", head))

    def on_body(self, body: bytes) -> None:
        self.unparsed = 0
        self.queue.append(("body", body))

    def on_message_complete(self) -> None:
        self.unparsed = 0
        self.queue.append(("end",))

    @property
    def in_head(self) -> bool:
        return self._in_head


class Client(Endpoint):
    toward_agent = True

    def __init__(self, server: Server) -> None:
        self.server = server
        self.rt = server.rt
        self.original: tuple[str, int] | None = None  # transparent mode
        self.facts: ConnFacts | None = None
        self.sni: str | None = None
        self.sni_error: str | None = None
        self.sni_secret: str | None = None  # the secret whose real value the SNI held (refused)
        self._detect = server.transparent  # the first bytes still have to say TLS or not
        self._tunnel: tuple[str, int] | None = None  # regular mode, after a CONNECT
        self._events = _Events()
        self._parser: httptools.HttpRequestParser | None = None
        self.exchange: Exchange | None = None
        self.ws: WebSocketRelay | None = None
        self.pinned: tuple[str, int] | None = None
        # The last request's decision and its answer's scrubbing, for the next request on this
        # connection to reuse when nothing they depend on changed (Exchange._decide, _choose_scrubbing).
        self.last_decision: tuple[Policy, str, int, str, str, Decision] | None = None
        self.last_scrubbing: tuple[int, str, int, Finder | None, frozenset[str]] | None = None
        self.checked: dict[tuple[str, int], str] = {}  # authority -> the address checked for it
        self.denied_tunnel: FlowInfo | None = None
        self._predial: tuple[tuple[str, int], asyncio.Task[Upstream | None]] | None = None
        now = time.monotonic()
        self.last_activity = now
        self.head_started: float | None = None
        self.tls_started: float | None = None
        self._paused_for_queue = False
        self._closing = False

    # -- connection ---------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.server.opened(self)
        if self.server.transparent:
            self.original = _original_destination(transport.get_extra_info("socket"))
            if self.original is None:
                # Not redirected by capture (someone connected to the listener directly): it has
                # no destination to go to.
                self._refuse_connection(Reason.PROTOCOL_NOT_ALLOWED, "no original destination")
        else:
            self._new_parser()

    def on_lost(self) -> None:
        self.server.closed_conn(self)
        if self._predial is not None:
            self._predial[1].add_done_callback(self._unused_predial)
            self._predial[1].cancel()
        if self.ws is not None:
            self.ws.agent_lost()
        elif self.exchange is not None:
            self.exchange.client_lost()
        if self.denied_tunnel is not None and not self.denied_tunnel.audited:
            self.rt.record(self.denied_tunnel, "CONNECT", None)

    def on_peer_closed(self) -> None:
        ex = self.exchange
        if ex is not None and not ex.request_done and self.ws is None:
            # Closed in the middle of a request (its body short of its length): it can never
            # complete. Recorded if it was not yet, then closed (the record written first).
            ex.unsent("the agent closed before its request was complete")
            ex.abort("the agent closed mid-request")
            self.exchange = None
            self.close()
            return
        if self.ws is None and ((ex is not None and not ex.response_done) or self._whole_request_queued()):
            # Half-close after whole requests (``printf '...' | nc``, a TLS close_notify): each is
            # still answered, in turn, then the connection closes (exchange_done).
            self._closing = True
            return
        self.close()

    def _whole_request_queued(self) -> bool:
        """Whether a request read whole (its head and its end) waits in the queue."""
        return any(item[0] == "end" for item in self._events.queue) if self._parser is not None else False

    def on_tls_error(self, error: ssl.SSLError) -> None:
        if self.sni_secret is not None:
            if self.denied_tunnel is not None:
                self.denied_tunnel.audited = True  # this record stands for the tunnel's
            self._outbound(FlowInfo(self._tunnel[0] if self._tunnel else None,
                                    self._tunnel[1] if self._tunnel else (self.original[1] if self.original else None),
                                    Decision(Verdict.DENIED, Reason.SECRET_VALUE_OUTBOUND), tls=True,
                                    secret=self.sni_secret, detail="a real secret value in the TLS server name (SNI)"),
                           None)  # fmt: skip
            return
        detail = "TLS handshake with the agent failed"
        if self.sni_error is not None:
            detail = self.sni_error
        info = self.denied_tunnel or FlowInfo(
            self._tunnel[0] if self._tunnel else None,
            self._tunnel[1] if self._tunnel else (self.original[1] if self.original else None),
            Decision(Verdict.DENIED, Reason.MALFORMED_REQUEST if self.sni_error else Reason.PROTOCOL_NOT_ALLOWED),
            detail=detail,
        )
        if not info.audited and (self.sni_error is not None or self.denied_tunnel is not None):
            self.rt.record(info, None, None)
        self.abort()

    def on_tls_ready(self) -> None:
        self.tls_started = None
        sni = self.sni
        if self._tunnel is not None:
            self.facts = ConnFacts(tls=True, connect=self._tunnel, sni=sni)
        else:
            self.facts = ConnFacts(tls=True, original=self.original, sni=sni)
            if sni is not None and self.original is not None:
                self._start_predial(sni, self.original[1], tls=True)
        self._new_parser()

    def on_sni(self, name: str | None) -> str | int | None:
        """The ClientHello's server name: recorded, and the host whose leaf answers it."""
        self.sni = name
        if name is None:
            return None
        leaked = real_value_in(self.rt.outbound, name, (), (name,))
        if leaked is not None:
            # Never looked up nor dialled (the SNI names the upstream to dial in transparent
            # mode): the handshake fails, recorded in on_tls_error.
            self.sni_secret = leaked
            return ssl.ALERT_DESCRIPTION_ACCESS_DENIED
        try:
            return wire_host(name)
        except HostError as e:
            self.sni_error = f"SNI: {e.fixed}"
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME

    def on_write_paused(self) -> None:
        if self.ws is not None:
            self.ws.agent_write_paused(True)
        elif self.exchange is not None:
            self.exchange.client_write_paused(True)

    def on_write_resumed(self) -> None:
        if self.ws is not None:
            self.ws.agent_write_paused(False)
        elif self.exchange is not None:
            self.exchange.client_write_paused(False)

    # -- bytes from the agent ---------------------------------------------------------------------
    def on_data(self, data: bytes) -> None:
        self.last_activity = time.monotonic()
        if self.ws is not None:
            self.ws.from_agent(data)
            return
        if self._detect:
            self._detect = False
            if data[:1] == b"\x16":  # a TLS handshake record
                self.tls_started = self.last_activity
                default = self._tunnel[0] if self._tunnel is not None else self.original[0] if self.original else None
                assert default is not None
                self.begin_tls(self.server.agent_tls.context(default), server_side=True, first=data)
                return
            # Plain HTTP: inside a tunnel (judged request by request), or on a captured port 80.
            self.facts = ConnFacts(tls=False, connect=self._tunnel, original=self.original)
            self._new_parser()
        if self._parser is None:
            ex = self.exchange
            if ex is not None and ex.head.upgrade and not ex.response_done and len(self._after_upgrade) < 4096:
                # Behind an upgrade request, in a later read than its head: refused as in one read
                # (Exchange._agent_sent_early; recorded when the upgrade is declined), never relayed.
                self._after_upgrade += data[: 4096 - len(self._after_upgrade)]
            return
        ev = self._events
        if ev.in_head or (self.head_started is None and self.exchange is None):
            if self.head_started is None:
                self.head_started = self.last_activity
            ev.raw_head += len(data)
        ev.unparsed += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as e:
            self._upgraded(data[e.args[0] :] if e.args else b"")
        except httptools.HttpParserCallbackError as e:
            raise (e.__context__ or e) from None  # our bug, not the agent's: fail closed as one
        except httptools.HttpParserError:
            ex = self.exchange
            if ex is not None and ex.request_done and not ex.response_done:
                # Bytes that are no request behind a whole one in flight (or after its
                # Connection: close): that one, and any whole one queued, are answered first; the
                # refusal comes when they are (_pump: no parser left), unless the connection
                # closes after them as it said it would.
                self._parser = None
                self.pause_reading()
                self._pump()
                return
            self._malformed()
            return
        if ev.in_head and self.head_started is None:
            # (a head begun in this read behind one in flight: timed from this read, not from the
            # next one's, when that one is answered)
            self.head_started = self.last_activity
        if ev.in_head and ev.raw_head > self.rt.limits.max_header_bytes + 8192:
            self._limit(431, "request headers too large")
            return
        if ev.unparsed > self.rt.limits.max_header_bytes + 8192:
            detail = "request trailer or chunk size line too large"
            ex = self.exchange
            if ex is not None and ex.upstream_started:
                ex.abort(detail)  # (the upstream has the request's beginning: it is cut short)
                self.abort()
                return
            self._limit(431, detail)
            return
        self._pump()

    def _new_parser(self) -> None:
        self._events = _Events()
        self._parser = httptools.HttpRequestParser(self._events)
        self._events.parser = self._parser

    def _upgraded(self, rest: bytes) -> None:
        """llhttp stops after a CONNECT head or an ``Upgrade`` request head."""
        self._parser = None  # what follows is not HTTP/1 for this parser
        self._after_upgrade = rest

    _after_upgrade = b""

    def _pump(self) -> None:
        q = self._events.queue
        while q and not self.closed:
            item = q[0]
            if item[0] == "head":
                if self.exchange is not None:
                    break  # pipelined: the previous request has not been answered yet
                q.popleft()
                # A head begun behind this one in the same read (pipelined) is timed from that
                # read (red team 58: it had no start, so never a 408, and no record at the idle
                # timeout); reading pauses while the queue holds anything, so that read is the last.
                self.head_started = self.last_activity if self._events.in_head else None
                self._start(item[1])
            elif item[0] == "body":
                q.popleft()
                if self.exchange is not None:
                    self.exchange.request_body(item[1])
            else:
                q.popleft()
                if self.exchange is not None:
                    self.exchange.request_end()
        if (
            self._parser is None
            and self.exchange is None
            and self.ws is None
            and not self._detect
            and (self.tls is None or self.tls.established)
        ):
            if not self.closed:
                self._malformed()  # bytes after an upgrade nobody took up (a handshake under way took them)
            return
        if q and not self._paused_for_queue:
            self._paused_for_queue = True
            self.pause_reading()
        elif not q and self._paused_for_queue:
            self._paused_for_queue = False
            self.resume_reading()

    def _start(self, head: Head) -> None:
        from proxy.datapath.exchange import Exchange

        if self.facts is None and head.method == "CONNECT":
            self._connect(head)
            return
        ex = Exchange(self, head)
        self.exchange = ex
        ex.start()

    # -- regular mode: CONNECT ----------------------------------------------------------------------
    def _connect(self, head: Head) -> None:
        rt = self.rt
        if head.size > rt.limits.max_header_bytes:
            self._limit(431, "request headers too large")
            return
        target = parse_connect(head.target)
        leaked = real_value_in(rt.outbound, head.target, head.raw, (head.target,))
        if leaked is not None:
            # Refused before anything is looked up or dialled: the tunnel's name would carry the
            # value in a DNS query and in the upstream's SNI (an allowed wildcard name may hold
            # it), and no request inside could use it (its Host would hold the value too).
            host, port = (None, None) if isinstance(target, Refusal) else target
            self._outbound(FlowInfo(host, port, Decision(Verdict.DENIED, Reason.SECRET_VALUE_OUTBOUND),
                                    secret=leaked, detail="a real secret value in the CONNECT request"), "CONNECT")  # fmt: skip
            return
        if isinstance(target, Refusal):
            self.answer_and_close(
                FlowInfo(None, None, Decision(Verdict.DENIED, target.reason), detail=target.detail), "CONNECT"
            )
            return
        host, port = target
        decision = decide(rt.policy, RequestFacts(host, port))
        self._tunnel = (host, port)
        rest, self._after_upgrade = self._after_upgrade, b""
        if not decision.forwards:
            # Completed anyway: the request inside says whose placeholder was headed there (issue:
            # an exfiltration attempt toward a host outside the allowlist is attributed).
            self.denied_tunnel = FlowInfo(host, port, decision, detail="destination not allowed")
        else:
            self._start_predial(host, port, tls=True)
        self.send(b"HTTP/1.1 200 Connection established\r\n\r\n")
        self._detect = True
        self.head_started = None
        if rest:
            self.on_data(rest)

    def _start_predial(self, host: str, port: int, *, tls: bool) -> None:
        """Resolve, check and dial an allowed destination while the agent's TLS handshake runs,
        so the first request does not wait for the upstream's handshake too."""
        try:
            host = wire_host(host)
        except HostError:
            return
        if not decide(self.rt.policy, RequestFacts(host, port)).forwards:
            return
        task = asyncio.ensure_future(self._dial((host, port), tls))
        self._predial = ((host, port), task)

    def _unused_predial(self, task: asyncio.Task[Upstream | None]) -> None:
        """A tunnel closed before any request took what was dialled for it: the connection goes to
        the pool (bounded: closed past its limits), not left open as long as the upstream keeps it
        (dialling was cancelled if it was under way: :meth:`UpstreamPool.dial` closes what it began)."""
        if task.cancelled() or task.exception() is not None:
            return
        up = task.result()
        if up is not None:
            self.server.pool.put(up)

    def take_predial(self, authority: tuple[str, int]) -> asyncio.Task[Upstream | None] | None:
        if self._predial is not None and self._predial[0] == authority:
            task, self._predial = self._predial[1], None
            return task
        return None

    async def _dial(self, authority: tuple[str, int], tls: bool) -> Upstream | None:
        ip = await self.destination(*authority)
        if not isinstance(ip, str):
            return None
        key = (ip, authority[1], authority[0] if tls else None)
        up = self.server.pool.take(key)
        if up is not None:
            return up
        try:
            return await self.server.pool.dial(key)
        except UpstreamError:
            return None

    async def destination(self, host: str, port: int) -> str | FlowInfo:
        """The address to dial for host:port, checked (A08, A09, A10); or the denial."""
        ip = self.checked.get((host, port))
        if ip is not None:
            return ip
        if is_ip_literal(host):
            addresses = [host]
        else:
            try:
                addresses = await self.server.resolver.resolve(host)
            except OSError:
                return FlowInfo(
                    host, port, Decision(Verdict.DENIED, Reason.HOST_NOT_ALLOWED), detail="destination does not resolve"
                )
        try:
            ips = [ipaddress.ip_address(a.split("%", 1)[0]) for a in addresses]
        except ValueError:
            ips = []
        if not ips or not all(self.rt.addresses.permitted(ip) for ip in ips):
            return FlowInfo(
                host,
                port,
                Decision(Verdict.DENIED, Reason.PRIVATE_ADDRESS),
                detail="destination resolves to a non-public address",
            )
        self.checked[(host, port)] = str(ips[0])
        return str(ips[0])

    def denied_tunnel_request(self, head: Head) -> None:
        """A request inside a tunnel whose CONNECT was denied: answer its reason, and name the
        secret whose placeholder it carried (that is the exfiltration attempt to count)."""
        info = self.denied_tunnel
        assert info is not None
        present = placeholders_in(self.rt.policy.secrets, head.target, head.headers)
        if present:
            info.secret = present[0].name
            log.warning(
                json.dumps(
                    {
                        "event": "secret_blocked",
                        "secret": info.secret,
                        "reason": info.decision.reason,
                        "host": info.host,
                    }
                )
            )
        self.answer_and_close(info, head.method, head.target.split("?", 1)[0])

    # -- answers -----------------------------------------------------------------------------------
    def answer_and_close(self, info: FlowInfo, method: str | None, path: str | None = None) -> None:
        reason = info.decision.reason or Reason.MALFORMED_REQUEST
        self.rt.record(info, method, path)
        self.send(denial(reason, self.rt.redact(info.detail), info.status))  # never a value, even its own
        self.close_lingering()

    def _outbound(self, info: FlowInfo, method: str | None) -> None:
        """Refuse a connection that holds a real value where it would leave (a CONNECT's name,
        an SNI): recorded and logged as the same value in a request is (Exchange._refuse_outbound)."""
        info.host = self.rt.redact_name(info.host)
        log.warning(json.dumps({"event": "secret_value_outbound", "secret": info.secret, "host": info.host,
                                "detail": info.detail}))  # fmt: skip
        if method is None:
            self.rt.record(info, None, None)
            self.abort()
        else:
            self.answer_and_close(info, method)

    def _refuse_connection(self, reason: Reason, detail: str) -> None:
        self.rt.record(FlowInfo(None, None, Decision(Verdict.DENIED, reason), detail=detail), None, None)
        self.abort()

    def _malformed(self) -> None:
        if self.exchange is not None and self.exchange.upstream_started:
            self.exchange.abort("malformed request body")
            self.abort()
            return
        t = self.denied_tunnel
        if t is not None and not t.audited:
            # Inside a tunnel to a destination outside the allowlist: its refusal is the answer, and
            # the connection's one record (not a malformed request's as well).
            self.answer_and_close(t, "CONNECT")
            return
        self.answer_and_close(
            FlowInfo(None, None, deny(self.rt.policy, Reason.MALFORMED_REQUEST), detail="malformed HTTP/1.1 request"),
            None,
        )

    def _limit(self, status: int, detail: str) -> None:
        t = self.denied_tunnel
        if t is not None and not t.audited:
            # (as in _malformed: inside a tunnel to a destination outside the allowlist, its refusal
            # is the answer and the connection's one record; red team 58 saw both, counted twice)
            self.answer_and_close(t, "CONNECT")
            return
        self.answer_and_close(
            FlowInfo(None, None, Decision(Verdict.DENIED, Reason.LIMIT_EXCEEDED), detail=detail, status=status), None
        )

    def timed_out(self, now: float) -> None:
        """Called by the server's sweeper: a head or handshake that takes too long, or silence."""
        limits = self.rt.limits
        if (
            self.head_started is not None
            and now - self.head_started > limits.header_timeout
            and self.exchange is None
            and not self.closed  # (answered already: its answer lingers, reading and discarding; red team 57)
        ):
            self._limit(408, "request headers not received in time")
            return
        if self.tls_started is not None and now - self.tls_started > limits.header_timeout:
            self.abort()
            return
        if now - self.last_activity > limits.idle_timeout:
            if self.exchange is not None:
                self.exchange.unsent("request not completed in time")
                self.exchange.abort("idle timeout")
            self.abort()

    def exchange_done(self, keep_alive: bool) -> None:
        self.exchange = None
        if not keep_alive or (self._closing and not self._whole_request_queued()):
            self.close()
            return
        self.last_activity = time.monotonic()
        self._pump()


def _original_destination(sock: Any) -> tuple[str, int] | None:
    """SO_ORIGINAL_DST of a REDIRECTed connection (IPv4 and IPv6): None when not redirected."""
    if sock is None:
        return None
    try:
        local = sock.getsockname()
        if sock.family == socket.AF_INET6:
            raw = sock.getsockopt(socket.IPPROTO_IPV6, _SO_ORIGINAL_DST, 28)
            port = struct.unpack_from("!H", raw, 2)[0]
            ip = str(ipaddress.IPv6Address(raw[8:24]))
        else:
            raw = sock.getsockopt(socket.SOL_IP, _SO_ORIGINAL_DST, 16)
            port = struct.unpack_from("!H", raw, 2)[0]
            ip = socket.inet_ntoa(raw[4:8])
    except OSError:
        return None
    if (ip, port) == (str(ipaddress.ip_address(local[0])), local[1]):
        return None  # the listener itself: nothing was redirected
    mapped = ipaddress.ip_address(ip)
    if isinstance(mapped, ipaddress.IPv6Address) and mapped.ipv4_mapped is not None:
        ip = str(mapped.ipv4_mapped)
    return ip, port
