"""The sidecar's concerns, in their fixed order: Gate -> Swap -> Scrub -> Audit.

Each translates mitmproxy's flow objects to and from the pure core (``proxy.policy``,
``proxy.swap``, ``proxy.scrub``) and talks to the next through ``flow.metadata["sandgate"]``.
mitmproxy sees one addon, :class:`Chain`, which calls them in that order: one dispatch per hook
instead of one per concern (mitmproxy visits every addon for every event).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import ipaddress
import json
import logging
import socket
import time
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass, field
from typing import Any

from mitmproxy import connection, http, tcp, udp
from mitmproxy.proxy import server_hooks

from proxy.mitm_patches import abort_flow_connections, restore_server_address
from proxy.policy.decide import RequestFacts, decide, deny
from proxy.policy.hosts import HostError, canonical_host, is_ip_literal, split_authority
from proxy.policy.model import Decision, Reason, Verdict
from proxy.relay import resolve_via_relay
from proxy.runtime import FlowInfo, Runtime
from proxy.scrub import DecodeError, StreamDecoder, StreamScrubber, scrub_text
from proxy.swap import decode_basic, plan_swap

log = logging.getLogger("sandgate.proxy")

META = "sandgate"
DENIAL = "sandgate_denial"  # set on flows answered by our own denial response
# Headers an agent could use to make an upstream or an intermediary route the request somewhere
# else, or to pose as us (SECURITY-CASES A17); removed before forwarding.
_ROUTING_HEADERS = frozenset(
    {
        "x-forwarded-host",
        "x-forwarded-for",
        "x-forwarded-proto",
        "forwarded",
        "x-host",
        "x-original-url",
        "x-rewrite-url",
        "x-http-method-override",
        "proxy-authorization",
        "proxy-connection",
        "x-upstream-https-proxy",
    }
)
_RESERVED_PREFIX = "x-sandgate-"
_SCRUBBABLE_ENCODINGS = "gzip, deflate, br"


def info_of(flow: http.HTTPFlow) -> FlowInfo | None:
    info = flow.metadata.get(META)
    return info if isinstance(info, FlowInfo) else None


def deny_response(decision: Decision, detail: str | None = None, status: int | None = None) -> http.Response:
    assert decision.reason is not None
    reason = decision.reason
    status = status or reason.http_status
    body: dict[str, object] = {"error": "sandgate_denied", "reason": reason.value}
    if detail:
        body["detail"] = detail
    return http.Response.make(
        status,
        json.dumps(body).encode(),
        {"content-type": "application/json", "x-sandgate-reason": reason.value, "cache-control": "no-store"},
    )


@dataclass(slots=True)
class ConnState:
    """Per client connection: the authority it is bound to and the addresses we checked for it."""

    connect: tuple[str, int] | None = None  # regular mode: the CONNECT authority (canonical)
    pinned: tuple[str, int] | None = None  # transparent mode: the first request's authority
    checked: dict[tuple[str, int], str] = field(default_factory=dict)  # authority -> dialable IP
    dialing: dict[str, tuple[str, int]] = field(default_factory=dict)  # server conn id -> logical address


class Gate:
    """Decides every request before any DNS lookup or upstream dial, resolves the destination
    itself, and pins the dial to the address it checked."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.conns: dict[str, ConnState] = {}

    # -- connections -------------------------------------------------------------------------
    def client_connected(self, client: connection.Client) -> None:
        if len(self.conns) >= self.rt.limits.max_connections:
            client.error = "sandgate: connection limit reached"
            self.rt.record(
                FlowInfo(None, None, Decision(Verdict.DENIED, Reason.LIMIT_EXCEEDED), detail="too many connections"),
                None,
                None,
            )
            return
        self.conns[client.id] = ConnState()
        self.rt.metrics.active_connections.set(len(self.conns))

    def client_disconnected(self, client: connection.Client) -> None:
        self.conns.pop(client.id, None)
        self.rt.metrics.active_connections.set(len(self.conns))

    # -- regular mode: CONNECT ------------------------------------------------------------------
    def http_connect(self, flow: http.HTTPFlow) -> None:
        state = self.conns.get(flow.client_conn.id)
        try:
            host = canonical_host(flow.request.host)
        except HostError as e:
            self._deny(
                flow,
                FlowInfo(
                    None,
                    flow.request.port,
                    Decision(Verdict.DENIED, Reason.MALFORMED_REQUEST),
                    detail=f"CONNECT authority: {e}",
                ),
            )
            return
        port = flow.request.port
        decision = decide(self.rt.policy, RequestFacts(host, port))
        info = FlowInfo(host, port, decision)
        flow.metadata[META] = info
        if not decision.forwards:
            self._deny(flow, info)
            return
        # An allowed (or, in report mode, reported) tunnel is not recorded itself: each request in
        # it is, with its full facts, so one request counts once.
        if state is not None:
            state.connect = (host, port)

    # -- every request ---------------------------------------------------------------------------
    def requestheaders(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        """Synchronous unless the destination still has to be resolved for this connection: then
        it returns the coroutine that resolves, checks and finishes (mitmproxy awaits it)."""
        if flow.response or flow.error:
            return None
        state = self.conns.get(flow.client_conn.id)
        if state is None:  # a connection over the limit, or one we never saw: fail closed
            self._deny(flow, FlowInfo(None, None, Decision(Verdict.DENIED, Reason.LIMIT_EXCEEDED)))
            return None
        req = flow.request
        tls = flow.client_conn.tls_established
        authority = self._authority(flow, state, tls)
        if isinstance(authority, FlowInfo):
            self._deny(flow, authority)
            return None
        host, port = authority
        facts = RequestFacts(host, port, req.method, req.path.split("?", 1)[0])
        info = FlowInfo(host, port, decide(self.rt.policy, facts), tls=tls)
        flow.metadata[META] = info
        if info.decision.forwards:
            self._checks(flow, info)
        if info.decision.forwards and (host, port) not in state.checked:
            return self._resolve_then_finish(flow, state, info)
        self._finish(flow, info)
        return None

    async def _resolve_then_finish(self, flow: http.HTTPFlow, state: ConnState, info: FlowInfo) -> None:
        await self._check_destination(state, info)
        self._finish(flow, info)

    def _finish(self, flow: http.HTTPFlow, info: FlowInfo) -> None:
        if not info.decision.forwards:
            self._deny(flow, info)
            return
        assert info.host is not None and info.port is not None
        req = flow.request
        present = {k.lower() for k in req.headers}
        for name in present & _ROUTING_HEADERS:
            req.headers.pop(name, None)
        for name in [n for n in present if n.startswith(_RESERVED_PREFIX)]:
            req.headers.pop(name, None)
        if self.rt.relay is not None and flow.server_conn.via is None:
            flow.server_conn.via = ("http", self.rt.relay)
        # The upstream sees the canonical authority the decision was made on (A01).
        shown = f"[{info.host}]" if ":" in info.host else info.host
        req.headers["host"] = shown if info.port == (443 if info.tls else 80) else f"{shown}:{info.port}"

    def _authority(self, flow: http.HTTPFlow, state: ConnState, tls: bool) -> tuple[str, int] | FlowInfo:
        req = flow.request

        def bad(reason: Reason, detail: str, host: str | None = None, port: int | None = None) -> FlowInfo:
            return FlowInfo(host, port, deny(self.rt.policy, reason), detail=detail)

        if req.http_version not in ("HTTP/1.1", "HTTP/1.0"):
            return bad(Reason.PROTOCOL_NOT_ALLOWED, "only HTTP/1.x is accepted")
        values = req.headers.get_all("host")
        if len(values) != 1:
            return bad(Reason.MALFORMED_REQUEST, "exactly one Host header is required")
        try:
            raw_host, host_port = split_authority(values[0])
            host = canonical_host(raw_host)
        except HostError as e:
            return bad(Reason.MALFORMED_REQUEST, f"Host header: {e}")
        default_port = 443 if tls else 80
        if self.rt.transparent:
            dst_port = req.port
            port = dst_port
            if host_port is not None and host_port != dst_port:
                return bad(Reason.AUTHORITY_MISMATCH, "Host port differs from the destination port", host, port)
            if tls:
                sni = flow.client_conn.sni
                if not sni:
                    if not is_ip_literal(host):
                        return bad(Reason.PROTOCOL_NOT_ALLOWED, "TLS without SNI to a host name", host, port)
                else:
                    try:
                        if canonical_host(sni) != host:
                            return bad(Reason.AUTHORITY_MISMATCH, "SNI and Host disagree", host, port)
                    except HostError:
                        return bad(Reason.MALFORMED_REQUEST, "invalid SNI", host, port)
            if is_ip_literal(host) and host != canonical_host(req.host):
                return bad(Reason.AUTHORITY_MISMATCH, "IP literal Host differs from the destination", host, port)
            if state.pinned is None:
                state.pinned = (host, port)
            elif state.pinned != (host, port):
                return bad(Reason.AUTHORITY_MISMATCH, "one connection, one authority", host, port)
            return host, port
        if state.connect is not None:
            c_host, c_port = state.connect
            if host != c_host or (host_port or default_port) != c_port:
                return bad(Reason.AUTHORITY_MISMATCH, "Host differs from the CONNECT authority", host, c_port)
            if tls:
                sni = flow.client_conn.sni
                try:
                    if sni and canonical_host(sni) != c_host:
                        return bad(Reason.AUTHORITY_MISMATCH, "SNI differs from the CONNECT authority", host, c_port)
                except HostError:
                    return bad(Reason.MALFORMED_REQUEST, "invalid SNI", host, c_port)
                if not sni and not is_ip_literal(c_host):
                    return bad(Reason.PROTOCOL_NOT_ALLOWED, "TLS without SNI to a host name", host, c_port)
            return c_host, c_port
        # Regular mode, absolute-form request ("GET http://host/ HTTP/1.1").
        try:
            url_host = canonical_host(req.host)
        except HostError as e:
            return bad(Reason.MALFORMED_REQUEST, f"request target: {e}")
        url_default = 443 if req.scheme == "https" else 80
        if url_host != host or (host_port or url_default) != req.port:
            return bad(Reason.AUTHORITY_MISMATCH, "Host differs from the request target", url_host, req.port)
        return url_host, req.port

    def _checks(self, flow: http.HTTPFlow, info: FlowInfo) -> None:
        req = flow.request
        header_bytes = sum(len(k) + len(v) + 4 for k, v in req.headers.fields)
        if header_bytes > self.rt.limits.max_header_bytes:
            info.decision, info.detail = Decision(Verdict.DENIED, Reason.LIMIT_EXCEEDED), "request headers too large"
            info.status = 431
            return
        cl = req.headers.get_all("content-length")
        if len(cl) > 1 or (cl and not cl[0].isdigit()):
            info.decision, info.detail = Decision(Verdict.DENIED, Reason.MALFORMED_REQUEST), "invalid Content-Length"
            return
        if cl and int(cl[0]) > self.rt.limits.max_request_body:
            info.decision, info.detail = Decision(Verdict.DENIED, Reason.LIMIT_EXCEEDED), "request body too large"
            return
        upgrade = req.headers.get("upgrade", "").lower()
        if upgrade and upgrade != "websocket":
            info.decision, info.detail = (
                Decision(Verdict.DENIED, Reason.PROTOCOL_NOT_ALLOWED),
                "only WebSocket upgrades are allowed",
            )
            return
        if not cl and "chunked" in req.headers.get("transfer-encoding", "").lower():
            guard = BodyGuard(self.rt, flow, info)
            req.stream = guard

    async def _check_destination(self, state: ConnState, info: FlowInfo) -> None:
        assert info.host is not None and info.port is not None
        key = (info.host, info.port)
        if key in state.checked:
            return
        if is_ip_literal(info.host):
            addrs = [info.host]
        else:
            try:
                if self.rt.relay is not None:  # a sealed sandbox has no resolver: ask the relay
                    addrs = await resolve_via_relay(self.rt.relay, info.host)
                else:
                    infos = await asyncio.get_running_loop().getaddrinfo(info.host, info.port, type=socket.SOCK_STREAM)
                    addrs = [str(ai[4][0]) for ai in infos]
            except OSError:
                info.decision, info.detail = (
                    Decision(Verdict.DENIED, Reason.HOST_NOT_ALLOWED),
                    "destination does not resolve",
                )
                return
        ips = [ipaddress.ip_address(a.split("%", 1)[0]) for a in addrs]
        if not ips or not all(self.rt.addresses.permitted(ip) for ip in ips):
            info.decision, info.detail = (
                Decision(Verdict.DENIED, Reason.PRIVATE_ADDRESS),
                "destination resolves to a non-public address",
            )
            return
        state.checked[key] = str(ips[0])

    # -- the dial: only to the address we checked --------------------------------------------------
    def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        state = self.conns.get(data.client.id)
        address = data.server.address
        if state is None or address is None:
            data.server.error = "sandgate: unchecked destination"
            return
        if self.rt.relay is not None:
            # Behind a relay the only connection ever opened is the tunnel to it; which IP the
            # tunnel goes to is pinned in http_connect_upstream.
            if data.server.via is not None or tuple(address[:2]) != self.rt.relay:
                data.server.error = "sandgate: unchecked destination"
            return
        if self.rt.transparent:
            logical = state.pinned
        else:
            try:
                logical = (canonical_host(str(address[0])), int(address[1]))
            except HostError:
                logical = None
        ip = state.checked.get(logical) if logical else None
        if logical is None or ip is None:
            data.server.error = "sandgate: unchecked destination"
            return
        state.dialing[data.server.id] = tuple(address[:2])  # type: ignore[assignment]
        data.server.address = (ip, logical[1])

    def http_connect_upstream(self, flow: http.HTTPFlow) -> None:
        """The CONNECT we send the relay names the IP we checked for this connection, never a
        name (the relay would resolve it again) nor the address the agent dialled."""
        state = self.conns.get(flow.client_conn.id)
        logical: tuple[str, int] | None = None
        if state is not None and self.rt.transparent:
            logical = state.pinned
        elif state is not None:
            with contextlib.suppress(HostError):
                logical = (canonical_host(flow.request.host), flow.request.port)
        ip = state.checked.get(logical) if state is not None and logical is not None else None
        if logical is None or ip is None:
            flow.request.host, flow.request.port = "0.0.0.0", 0  # the relay refuses this: fail closed
            flow.request.authority = "0.0.0.0:0"
            return
        port = logical[1]
        flow.request.host, flow.request.port = ip, port
        flow.request.authority = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
        flow.request.headers.pop("host", None)

    def _restore(self, data: server_hooks.ServerConnectionHookData) -> None:
        # mitmproxy matches reusable upstream connections by address: give back the logical one.
        state = self.conns.get(data.client.id)
        if state is not None and (orig := state.dialing.pop(data.server.id, None)) is not None:
            if data.server.connected:
                restore_server_address(data.server, orig)
            else:
                data.server.address = orig

    def server_connected(self, data: server_hooks.ServerConnectionHookData) -> None:
        self._restore(data)

    def server_connect_error(self, data: server_hooks.ServerConnectionHookData) -> None:
        self._restore(data)

    # -- anything that is not HTTP is closed, never passed through raw ------------------------------
    def websocket_message(self, flow: http.HTTPFlow) -> None:
        # mitmproxy keeps every message of a WebSocket in the flow: an hour-long socket would grow
        # without bound (F07). The message being relayed is held by mitmproxy itself; drop history.
        if flow.websocket is not None:
            flow.websocket.messages.clear()

    def tcp_start(self, flow: tcp.TCPFlow) -> None:
        flow.kill()
        self.rt.record(
            FlowInfo(None, None, Decision(Verdict.DENIED, Reason.PROTOCOL_NOT_ALLOWED), detail="raw TCP"), None, None
        )

    def udp_start(self, flow: udp.UDPFlow) -> None:
        flow.kill()
        self.rt.record(
            FlowInfo(None, None, Decision(Verdict.DENIED, Reason.PROTOCOL_NOT_ALLOWED), detail="UDP"), None, None
        )

    def _deny(self, flow: http.HTTPFlow, info: FlowInfo) -> None:
        flow.metadata[META] = info
        refuse(flow, info)
        self.rt.record(info, flow.request.method, _path(flow))


def refuse(flow: http.HTTPFlow, info: FlowInfo) -> None:
    """Answer with the denial, or close the connection when the request still has a large body
    coming that we would otherwise read first (mitmproxy answers only after the whole body). An
    oversize body is left to the body limit, which answers 413 at its first byte."""
    req = flow.request
    cl = req.headers.get("content-length", "")
    pending = "chunked" in req.headers.get("transfer-encoding", "").lower() or (
        cl.isdigit() and int(cl) > _MAX_READ_FOR_DENIAL
    )
    if pending and req.method != "CONNECT" and info.decision.reason is not Reason.LIMIT_EXCEEDED:
        flow.kill()
    else:
        flow.response = deny_response(info.decision, info.detail, info.status)
        flow.metadata[DENIAL] = True


# A denied request's body is read (and dropped) before the 403 goes out; beyond this we close.
_MAX_READ_FOR_DENIAL = 1 << 20


def _path(flow: http.HTTPFlow) -> str | None:
    if flow.request.method == "CONNECT":
        return None
    return flow.request.path.split("?", 1)[0]


class BodyAborted(Exception):
    """Raised from a request body stream to abort the upstream request mid-body (fail closed)."""


class BodyGuard:
    """Streams a request body without Content-Length, refusing a real secret value, or a placeholder
    headed for a host its secret is not bound to (the size limit is enforced in ``mitm_patches``). On a violation the connection is
    torn down before the offending chunk is forwarded, so the upstream sees an aborted request."""

    def __init__(self, rt: Runtime, flow: http.HTTPFlow, info: FlowInfo) -> None:
        self.rt, self.flow, self.info = rt, flow, info
        self.tail = b""
        assert info.host is not None and info.port is not None
        self.foreign = [
            (s.name, s.placeholder.encode())
            for s in rt.policy.secrets
            if not (info.tls and s.bound_to(info.host, info.port))
        ]
        self.spec = rt.spec()
        self.keep = max([len(p) for _, p in self.foreign] + [self.spec.max_prefix + 1], default=1) - 1

    def __call__(self, chunk: bytes) -> bytes:
        window = self.tail + chunk
        m = self.spec.regex.search(window) if self.spec.regex is not None else None
        if m is not None:  # a real value leaving in a streamed body (B18): never, in any mode
            info = FlowInfo(self.info.host, self.info.port, Decision(Verdict.DENIED, Reason.SECRET_VALUE_OUTBOUND), tls=self.info.tls,
                            secret=self.spec.patterns[m.group(0)][0], detail="a real secret value in the request body")  # fmt: skip
            self.flow.metadata[META] = info
            self.rt.record(info, self.flow.request.method, _path(self.flow))
            abort_flow_connections(self.flow)
            raise BodyAborted("a real secret value in the request body")
        for name, ph in self.foreign:
            if ph in window:
                self._refuse(name)
        self.tail = window[-self.keep :] if self.keep else b""
        return chunk

    def _refuse(self, secret: str) -> None:
        # The headers went out already and were recorded; this is a second, separate record.
        info = FlowInfo(self.info.host, self.info.port, self.info.decision, tls=self.info.tls)
        forwards = info.refine(deny(self.rt.policy, Reason.SECRET_NOT_BOUND), secret, "placeholder in the request body")
        self.flow.metadata[META] = info
        self.rt.record(info, self.flow.request.method, _path(self.flow))
        if forwards:  # report mode: the body goes on unswapped
            self.foreign = []
            return
        abort_flow_connections(self.flow)
        raise BodyAborted("placeholder in the request body")


class Swap:
    """Replaces placeholders with real values in bound slots; refuses misplaced placeholders."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        info = info_of(flow)
        if flow.response or info is None or not info.decision.forwards or info.host is None or info.port is None:
            return
        req = flow.request
        leaked = self._real_value_in(req)
        if leaked is not None:
            self._refuse_outbound(flow, info, leaked, "a real secret value in the request")
            return
        result = plan_swap(
            self.rt.policy,
            host=info.host,
            port=info.port,
            tls=info.tls and req.scheme == "https",
            method=req.method,
            target=req.path,
            headers=[(k, v) for k, v in req.headers.items(multi=True)],
            # Parsing the query costs on every request; only a secret with `query: true` reads it.
            query=list(req.query.items(multi=True)) if any(sec.query for sec in self.rt.policy.secrets) else [],
            lookup=self.rt.store.get,
        )
        if result.error is not None:
            if not info.refine(deny(self.rt.policy, result.error), result.error_secret, result.detail):
                refuse(flow, info)
                return
            # Report mode: the placeholder goes on unswapped; nothing is ever swapped toward an unbound host.
            return
        if result.swapped:
            req.headers = http.Headers([(k.encode(), v.encode()) for k, v in result.headers])
            if "accept-encoding" in req.headers:
                # The response may echo the key: ask only for encodings the scrubber can decode.
                req.headers["accept-encoding"] = _SCRUBBABLE_ENCODINGS
            if result.query is not None:
                req.query = result.query
            info.swapped = result.swapped

    def _real_value_in(self, req: http.Request) -> str | None:
        """The secret whose real value (in any encoding we know) the agent is sending, if any
        (SECURITY-CASES B18). Checked before the swap, so the value we put in is never counted."""
        spec = self.rt.spec()
        if spec.regex is None:
            return None
        texts = [req.path, *req.headers.values()]
        for value in req.headers.values():
            basic = decode_basic(value)
            if basic is not None:
                texts.append(basic[1])
        for text in texts:
            m = spec.regex.search(text.encode("utf-8", "surrogateescape"))
            if m is not None:
                return spec.patterns[m.group(0)][0]
        return None

    def _refuse_outbound(self, flow: http.HTTPFlow, info: FlowInfo, secret: str, detail: str) -> None:
        info.decision, info.secret, info.detail, info.swapped = (
            Decision(Verdict.DENIED, Reason.SECRET_VALUE_OUTBOUND),
            secret,
            detail,
            [],
        )
        log.warning(
            json.dumps({"event": "secret_value_outbound", "secret": secret, "host": info.host, "detail": detail})
        )
        refuse(flow, info)

    def request(self, flow: http.HTTPFlow) -> None:
        """The whole (buffered) body is here and nothing has been dialled yet: a placeholder in it
        for a secret not bound to this host, or a real value, is refused with a proper 403."""
        info = info_of(flow)
        if (
            flow.response
            or info is None
            or not info.decision.forwards
            or info.host is None
            or callable(flow.request.stream)
        ):
            return
        body = flow.request.raw_content or b""
        if not body:
            return
        spec = self.rt.spec()
        m = spec.regex.search(body) if spec.regex is not None else None
        if m is not None:
            self._refuse_outbound(flow, info, spec.patterns[m.group(0)][0], "a real secret value in the request body")
            return
        for s in self.rt.policy.secrets:
            if not (info.tls and s.bound_to(info.host, info.port or 0)) and s.placeholder.encode() in body:
                # Recorded by Audit.request, which runs next: one record per request.
                if not info.refine(
                    deny(self.rt.policy, Reason.SECRET_NOT_BOUND), s.name, "placeholder in the request body"
                ):
                    info.swapped = []
                    refuse(flow, info)
                return


class Scrub:
    """Real values coming back are replaced by their placeholder, in headers and (streamed,
    decoded) bodies of responses to requests that carried a swapped secret."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        resp = flow.response
        info = info_of(flow)
        if resp is None or info is None:
            return
        if info.decision.forwards and flow.request.timestamp_start:
            self.rt.metrics.upstream_duration.observe(max(0.0, time.time() - flow.request.timestamp_start))
        # No HTTP/3 upgrade hints: QUIC would leave the proxy's path (C03).
        resp.headers.pop("alt-svc", None)
        if flow.metadata.get(DENIAL):
            return  # our own answer: nothing from upstream in it
        # Only the proxy speaks in X-Sandgate-* headers; an upstream's are dropped (A17).
        for name in [n for n in resp.headers if n.lower().startswith(_RESERVED_PREFIX)]:
            resp.headers.pop(name, None)
        if not info.swapped:
            resp.stream = True  # pass through unbuffered: SSE and downloads stay streaming
            return
        spec = self.rt.spec()
        hit = self._hit
        for i, (field_name, raw) in enumerate(resp.headers.fields):
            text = raw.decode("utf-8", "surrogateescape")
            scrubbed = scrub_text(text, spec, hit)
            if scrubbed is not text:
                fields = list(resp.headers.fields)
                fields[i] = (field_name, scrubbed.encode("utf-8", "surrogateescape"))
                resp.headers.fields = tuple(fields)
        if flow.request.method == "HEAD" or resp.status_code in (101, 204, 304):  # no body to scrub
            resp.stream = True
            return
        encoding = resp.headers.get("content-encoding", "").strip().lower()
        decoder: StreamDecoder | None = None
        if encoding and encoding != "identity":
            if encoding not in StreamDecoder.SUPPORTED:
                # We cannot look inside it, so it cannot reach the agent: close (fail closed).
                log.warning(
                    json.dumps({"event": "unscrubbable_response", "host": info.host, "encoding": encoding[:32]})
                )
                flow.kill()
                return
            decoder = StreamDecoder(encoding)
            resp.headers.pop("content-encoding")
        resp.headers.pop("content-length", None)
        if flow.request.http_version == "HTTP/1.1":
            resp.headers["transfer-encoding"] = "chunked"
        resp.stream = ResponseFilter(flow, StreamScrubber(spec, hit), decoder)

    def _hit(self, secret: str) -> None:
        self.rt.metrics.secret_redactions.labels(secret).inc()
        log.warning(
            json.dumps(
                {
                    "event": "redaction",
                    "secret": secret,
                    "detail": "real value in a response replaced by its placeholder",
                }
            )
        )


class ResponseFilter:
    def __init__(self, flow: http.HTTPFlow, scrubber: StreamScrubber, decoder: StreamDecoder | None) -> None:
        self.flow, self.scrubber, self.decoder = flow, scrubber, decoder

    def __call__(self, chunk: bytes) -> Iterable[bytes]:
        # Never hand mitmproxy an empty chunk: in chunked framing it is the end-of-body marker, and
        # the agent's client would take the rest of the stream for the next response.
        if chunk == b"":  # end of the body
            tail = self.decoder.flush() if self.decoder else b""
            out = self.scrubber.feed(tail) + self.scrubber.flush()
            return [out] if out else []
        if self.decoder is not None:
            try:
                chunk = self.decoder.feed(chunk)
            except DecodeError as e:
                # Undecodable or a decompression bomb: we cannot scrub it, so it does not reach the agent.
                abort_flow_connections(self.flow)
                raise BodyAborted(str(e)) from None
        out = self.scrubber.feed(chunk)
        return [out] if out else []


class Audit:
    """Last in the chain: counts and audits every decision that reached it unrecorded."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        info = info_of(flow)
        if (
            info is not None
            and not callable(flow.request.stream)
            and flow.request.headers.get("content-length", "0") not in ("", "0")
        ):
            return  # a buffered body is checked in `request`; record there
        if info is not None:
            self.rt.record(info, flow.request.method, _path(flow))

    def request(self, flow: http.HTTPFlow) -> None:
        info = info_of(flow)
        if info is not None:
            self.rt.record(info, flow.request.method, _path(flow))

    def error(self, flow: http.HTTPFlow) -> None:
        info = info_of(flow)
        if info is not None and not info.audited:
            self.rt.record(info, flow.request.method, _path(flow))


def _fail_closed(hook: Any) -> Any:
    """A bug in a hook must not let a request through: mitmproxy logs an addon's exception and
    carries on with the flow, which here would mean a request forwarded unchecked or unswapped, or
    a response unscrubbed. Instead the flow is killed (its connections closed) or the connection
    refused, and the error is logged by type only (its text may quote request data)."""

    @functools.wraps(hook)
    def wrapper(self: Any, arg: Any) -> Any:
        try:
            res = hook(self, arg)
        except Exception as e:
            _internal_error(hook.__name__, arg, e)
            return None
        if res is not None and inspect.isawaitable(res):
            return _await_fail_closed(hook.__name__, arg, res)
        return res

    return wrapper


async def _await_fail_closed(name: str, arg: Any, pending: Awaitable[None]) -> None:
    try:
        await pending
    except Exception as e:
        _internal_error(name, arg, e)


def _internal_error(hook: str, arg: Any, exc: Exception) -> None:
    log.error(json.dumps({"event": "internal_error", "hook": hook, "error": type(exc).__name__, "action": "closed"}))
    if isinstance(arg, http.HTTPFlow | tcp.TCPFlow | udp.UDPFlow):
        if arg.killable:
            arg.kill()
    elif isinstance(arg, connection.Client):
        arg.error = "sandgate: internal error"
    elif isinstance(arg, server_hooks.ServerConnectionHookData):
        arg.server.error = "sandgate: internal error"


class Chain:
    """The one addon mitmproxy dispatches to. The order of the concerns is written out here."""

    def __init__(self, rt: Runtime, *extra: Any) -> None:
        self.gate, self.swap, self.scrub, self.audit = Gate(rt), Swap(rt), Scrub(rt), Audit(rt)
        self.extra = extra  # e.g. the readiness signal, given the `running` hook

    def running(self) -> None:
        for e in self.extra:
            e.running()

    @_fail_closed
    def client_connected(self, client: connection.Client) -> None:
        self.gate.client_connected(client)

    @_fail_closed
    def client_disconnected(self, client: connection.Client) -> None:
        self.gate.client_disconnected(client)

    @_fail_closed
    def http_connect(self, flow: http.HTTPFlow) -> None:
        self.gate.http_connect(flow)

    @_fail_closed
    def requestheaders(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        pending = self.gate.requestheaders(flow)
        if pending is not None:
            return self._after_gate(flow, pending)
        self.swap.requestheaders(flow)
        self.audit.requestheaders(flow)
        return None

    async def _after_gate(self, flow: http.HTTPFlow, pending: Awaitable[None]) -> None:
        await pending
        self.swap.requestheaders(flow)
        self.audit.requestheaders(flow)

    @_fail_closed
    def request(self, flow: http.HTTPFlow) -> None:
        self.swap.request(flow)
        self.audit.request(flow)

    @_fail_closed
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        self.scrub.responseheaders(flow)

    @_fail_closed
    def error(self, flow: http.HTTPFlow) -> None:
        self.audit.error(flow)

    @_fail_closed
    def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        self.gate.server_connect(data)

    @_fail_closed
    def http_connect_upstream(self, flow: http.HTTPFlow) -> None:
        self.gate.http_connect_upstream(flow)

    @_fail_closed
    def server_connected(self, data: server_hooks.ServerConnectionHookData) -> None:
        self.gate.server_connected(data)

    @_fail_closed
    def server_connect_error(self, data: server_hooks.ServerConnectionHookData) -> None:
        self.gate.server_connect_error(data)

    @_fail_closed
    def websocket_message(self, flow: http.HTTPFlow) -> None:
        self.gate.websocket_message(flow)

    @_fail_closed
    def tcp_start(self, flow: tcp.TCPFlow) -> None:
        self.gate.tcp_start(flow)

    @_fail_closed
    def udp_start(self, flow: udp.UDPFlow) -> None:
        self.gate.udp_start(flow)
