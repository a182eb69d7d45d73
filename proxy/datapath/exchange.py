"""One request and its response: the gate, the swap, the forward, the way back.

In order, before any DNS lookup or dial: the authority (:func:`proxy.core.authority.resolve_authority`),
the allowlist (:func:`proxy.policy.decide.decide`), framing and limits
(:func:`proxy.core.http1.check_request`), a real value anywhere in the head
(``secret_value_outbound``), the swap (:func:`proxy.core.swap.plan_swap`). Then the destination is
resolved and checked, the body is checked (whole when small, streamed with a held-back tail
otherwise) and the request goes upstream in origin-form with the one canonical Host.

On the way back, when the request carried a real key, every byte is scrubbed of the values bound
to this host (:mod:`proxy.core.scrub`): status line (ours), headers, interim 1xx heads, the body
decoded from its content-encoding, SSE event by event, WebSocket messages. What cannot be scrubbed
is refused: ``502`` before the head went out, a cut connection after. Trailers are never forwarded.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import re
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import httptools

from proxy.core.authority import Authority, ConnFacts, Refusal, resolve_authority
from proxy.core.decode import DecodeError, Decoder, check_one_reading
from proxy.core.eventstream import FramedOr, scrub_body
from proxy.core.finder import Finder
from proxy.core.flow import FlowInfo
from proxy.core.http1 import (
    BUFFER_BODY,
    Framing,
    RawHeader,
    check_request,
    denial,
    request_head,
    response_fields,
    response_head,
)
from proxy.core.scrub import (
    STREAM_TYPES,
    EventScrubber,
    ScrubRefused,
    SegmentedScrubber,
    SniffingScrubber,
    declared_charset_views,
    first_hit,
    scrub_field,
    skeleton_views,
    views,
)
from proxy.core.swap import placeholders_in, plan_swap, real_value_in, swap_query
from proxy.datapath.conn import HIGH_WATER
from proxy.datapath.upstream import Upstream, UpstreamError
from proxy.policy.decide import RequestFacts, decide, deny, overridden, reads_body_method
from proxy.policy.model import Decision, Reason, Verdict
from proxy.policy.override import body_methods, query_methods

if TYPE_CHECKING:
    from proxy.datapath.client import Client, Head

log = logging.getLogger("sandgate.proxy")

__all__ = ["Exchange"]

SCAN_WHOLE = 256 * 1024  # a scrubbed response up to this size keeps a Content-Length
_SCRUBBABLE_ENCODINGS = "gzip, deflate, br, zstd"
_NO_BODY = (204, 304)
_BOUND_GREW = "values were bound to this host while its answer was under way (a rotation, a reload)"
_INTERIM = re.compile(rb"HTTP/1\.[01] 1(?!01)[0-9]{2}[ \r]")  # an interim head's status line (101 is final)
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})  # RFC 9110 9.2.2
# The detail of the record of a request sent a second time (_reused_retry).
_SENT_AGAIN = "sent again on a new upstream connection: the pooled one closed without answering"


# Bytes of an answer the parser may take without delivering anything of it: its head (with any 1xx
# heads before it), a chunk's size line and extensions, its trailer. llhttp keeps none of them, but
# httptools joins a field's pieces as they come (red team 22: a 64 MiB field took +247 MiB and
# 8.6 s, stalling every agent), and the agent would get a field that size. As the head of an answer
# to HEAD is bounded.
ANSWER_HEAD_MAX = 256 * 1024
SLICE_TIME = 0.005  # seconds of a streamed answer's scrubbing at a time (see Exchange._pump)


def _upstream_error_answer(status: int, detail: str) -> bytes:
    body = json.dumps({"error": "sandgate_upstream_error", "detail": detail}).encode()
    phrase = "Gateway Timeout" if status == 504 else "Bad Gateway"
    return (
        f"HTTP/1.1 {status} {phrase}\r\nContent-Type: application/json\r\nCache-Control: no-store\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body


class _OutOfStep(Exception):
    """Raised from a response callback: more came than the one response this exchange awaited."""


class Exchange:
    # Per-exchange state: immutable defaults live on the class (an exchange is made per request;
    # only what it changes is written on the instance).
    info: FlowInfo | None = None
    auth: Authority | None = None
    up: Upstream | None = None
    upstream_started = False  # request bytes went upstream
    request_done = False
    response_done = False
    aborted = False
    _path: str | None = None
    _buffer_body = False
    _has_body = True  # (until the framing is known: a request is not taken for whole before)
    _chunked = False
    _body_len = 0
    _websocket = False
    _head_bytes = b""
    _retried = False
    _resent = False  # sent once, recorded, and about to be sent again (_reused_retry): recorded once it leaves
    # response state
    _rp: httptools.HttpResponseParser | None = None
    _rhead_done = False
    _status = 0
    _mode = ""  # "none" | "raw" | "chunked" | "close" | "whole" | "scrub"
    _scrub_finder: Finder | None = None
    _scrub_values: frozenset[str]  # the values _scrub_finder finds (set in __init__: see there)
    _epoch = -1  # the runtime's epoch when they were chosen
    _decided = -1  # the runtime's epoch when the request was decided and its head swapped
    _framing: Framing | None = None
    _decoder: Decoder | None = None
    _scrubber: FramedOr | None = None
    _whole_headers: Sequence[RawHeader] = ()
    _head_only_buf = b""
    _received_any = False
    _upgraded_rest: bytes | None = None
    _dest_ok = False
    _body_ok = True
    _value_guard: SegmentedScrubber | None = None
    _placeholder_guard: SegmentedScrubber | None = None
    _attached_reused = False
    _sent_body = b""
    _body_coding: str | None = None
    _reads_method = False  # a POST body that may name its method, on a route where it matters: read whole
    _held_stream = False  # such a body past the size held: checked as it comes, sent once whole and read
    _body_named: list[str] | None = None  # the methods that body named (judged again after a reload)
    _decoded: bytes | None = None  # a held body decoded from its content-encoding
    _task: asyncio.Future[None] | None = None  # the connect task, referenced while it runs
    # A streamed body's decoded pieces not yet scrubbed and sent: decoding waits while the agent has
    # not read what went out (a few compressed bytes may decode to a gigabyte); and the response's
    # end, when it came meanwhile (its keep-alive).
    _pumping: Iterator[bytes] | None = None
    _end_pending: bool | None = None
    _upstream_keeps: bool | None = None  # (the upstream's keep-alive, as its answer completed)

    def __init__(self, client: Client, head: Head) -> None:
        self.client = client
        self.rt = client.rt
        self.head = head
        self._body: list[bytes] = []  # held until the upstream is ready (and checked, when buffered)
        self._started = time.monotonic()
        self._rheaders: list[tuple[bytes, bytes]] = []
        self._whole: list[bytes] = []
        self._scrub_in: list[bytes] = []  # a streamed body's pieces of one read, not yet scrubbed
        # (Here, not as a class attribute: compiled, a default that is not a literal is not the
        # instance's, and reading it before _choose_scrubbing set it would raise.)
        self._scrub_values = frozenset()

    # -- the gate ----------------------------------------------------------------------------------
    def start(self) -> None:
        c, rt, h = self.client, self.rt, self.head
        if h.size > rt.limits.max_header_bytes:
            return self._refuse(FlowInfo(None, None, Decision(Verdict.DENIED, Reason.LIMIT_EXCEEDED),
                                         detail="request headers too large", status=431))  # fmt: skip
        if c.denied_tunnel is not None:
            leaked = self._real_value_in_head()
            if leaked is not None:  # worse than the destination: the value itself is leaving
                t = c.denied_tunnel
                self.info = FlowInfo(t.host, t.port, t.decision)
                t.audited = True  # this request's record stands for the tunnel's
                return self._refuse_outbound(leaked, "a real secret value in the request")
            self.response_done = True
            c.denied_tunnel_request(h)
            return None
        auth = resolve_authority(c.facts or ConnFacts(tls=False), h.method, h.target, h.values("host"), c.pinned)
        if isinstance(auth, Refusal):
            leaked = self._real_value_in_head()
            if leaked is not None:  # worse than a bad authority: the value itself is leaving
                return self._refuse_outbound(leaked, "a real secret value in the request")
            return self._refuse(FlowInfo(auth.host, auth.port, deny(rt.policy, auth.reason), detail=auth.detail))
        self.auth = auth
        if c.pinned is None:  # one connection, one authority, in every mode
            c.pinned = (auth.host, auth.port)
        self._path = auth.target.split("?", 1)[0]
        decision = self._decide(auth.host, auth.port, h.method, self._path)
        named = query_methods(auth.target.partition("?")[2]) if "?" in auth.target else None
        if named:
            decision = overridden(rt.policy, self._facts(), named, decision)
        info = FlowInfo(auth.host, auth.port, decision, tls=auth.tls)
        self.info = info
        leaked = self._real_value_in_head(auth.host)
        if leaked is not None:  # worse than any other refusal: the value itself is leaving
            return self._refuse_outbound(leaked, "a real secret value in the request")
        if not info.decision.forwards:
            if info.decision.reason in (Reason.HOST_NOT_ALLOWED, Reason.PORT_NOT_ALLOWED):
                # As on a refused CONNECT (transparent mode and plain HTTP have none): name the
                # secret whose placeholder was headed there, the exfiltration attempt to count.
                present = placeholders_in(rt.policy.secrets, auth.target, h.headers)
                info.secret = present[0].name if present else None
            return self._refuse(info)
        check = check_request(h.method, h.version, h.headers, rt.limits.max_request_body)
        if check.refusal is not None or (check.websocket and not h.upgrade):
            reason, detail, status = check.refusal or (
                Reason.MALFORMED_REQUEST,
                "an Upgrade without Connection: upgrade",
                None,
            )
            info.decision, info.detail, info.status = Decision(Verdict.DENIED, reason), detail, status
            return self._refuse(info)
        self._decided = rt.epoch
        planned = self._swapped_head(info)
        if planned is None:
            return None
        headers, target = planned
        # Every response from a host a secret is bound to is scrubbed, swapped or not: the host may
        # echo a key it was given on an earlier request (a session, a stored credential).
        self._choose_scrubbing()
        self._websocket = check.websocket
        framing = self._framing = check.framing
        self._chunked = framing.chunked
        coding = ",".join(h.values("content-encoding")).strip().lower()
        self._body_coding = coding if coding not in ("", "identity") else None
        self._has_body = framing.has_body
        if self._has_body:
            self._buffer_body = framing.held
            if self._body_coding is not None and not self._buffer_body:
                # A compressed body is checked decoded, so it must be small enough to hold whole.
                info.decision, info.detail, info.status = (
                    Decision(Verdict.DENIED, Reason.LIMIT_EXCEEDED), "a compressed request body is held whole to be "
                    f"checked: send it with Content-Length up to {BUFFER_BODY} bytes", 413)  # fmt: skip
                return self._refuse(info)
            if (
                h.method == "POST"
                and rt.policy.lists_methods  # (the common case, without building the request's facts)
                and reads_body_method(rt.policy, self._facts(), h.values("content-type"))
            ):
                self._reads_method = True
                self._held_stream = not self._buffer_body
            if not self._buffer_body:
                self._value_guard, self._placeholder_guard = self._body_guards()
        self._body_ok = not (self._buffer_body or self._held_stream)
        self._head_bytes = self._request_head(headers, target)
        if check.expect_continue:
            c.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        ip = c.checked.get((auth.host, auth.port))
        if ip is not None:
            self._dest_ok = True
            up = c.server.pool.take(self._key(ip))
            if up is not None:
                self._attach(up)
                return None
        self._task = asyncio.ensure_future(self._connect())
        return None

    def _decide(self, host: str, port: int, method: str, path: str) -> Decision:
        """The policy's decision for this request: the last request's on this connection when it
        was made by the same policy for the same destination, method and path (an agent's requests
        on a kept-alive connection mostly are), else ``decide``'s. (``decide`` is pure, its
        decisions immutable, and a policy served is a new object.)"""
        c, policy = self.client, self.rt.policy
        last = c.last_decision
        if (
            last is not None
            and last[0] is policy
            and last[1] == host
            and last[2] == port
            and last[3] == method
            and last[4] == path
        ):
            return last[5]
        decision = decide(policy, RequestFacts(host, port, method, path))
        c.last_decision = (policy, host, port, method, path, decision)
        return decision

    def _facts(self) -> RequestFacts:
        a = self.auth
        assert a is not None and self._path is not None
        return RequestFacts(a.host, a.port, self.head.method, self._path)

    def _swapped_head(self, info: FlowInfo) -> tuple[list[tuple[str, str]], str] | None:
        """The head's fields and target with the policy's templated swaps made (values read from
        the store now); None once the request is refused for a secret."""
        rt, h, auth, path = self.rt, self.head, self.auth, self._path
        assert auth is not None and path is not None
        policy = rt.policy
        query = (
            urllib.parse.parse_qsl(auth.target.partition("?")[2], keep_blank_values=True)
            if "?" in auth.target and any(s.query for s in policy.secrets)
            else []
        )
        result = plan_swap(policy, host=auth.host, port=auth.port, tls=auth.tls, method=h.method, target=auth.target,
                           headers=h.headers, query=query, lookup=rt.store.get)  # fmt: skip
        headers, target = h.headers, auth.target
        if result.error is not None:
            if not info.refine(deny(policy, result.error), result.error_secret, result.detail):
                self._refuse(info)
                return None
            # Report mode: on, unswapped; nothing is ever swapped toward an unbound host.
        else:
            headers = result.headers
            info.swapped = result.swapped
            if result.query_swaps:
                target = path + "?" + swap_query(auth.target.partition("?")[2], result.query_swaps)
        return headers, target

    def _request_head(self, headers: list[tuple[str, str]], target: str) -> bytes:
        h, a = self.head, self.auth
        assert a is not None and self._framing is not None
        accept = _SCRUBBABLE_ENCODINGS if self._scrub_finder and h.values("accept-encoding") else None
        return request_head(h.method, target, a.host, a.port, a.tls, headers, self._framing, self._websocket, accept)

    def _redecide(self) -> bool:
        """The request was decided, and its head swapped, under a policy or values that a load has
        replaced since (its body came slowly, its destination was slow to check or dial): decided
        again, as if it came now, before anything of it leaves (red team 38: a body held back past
        a reload that unbound the secret, or its revocation, still took the key to the host).
        False once refused."""
        rt, a, before = self.rt, self.auth, self.info
        assert a is not None and before is not None
        self._decided = rt.epoch
        facts = self._facts()
        named = query_methods(a.target.partition("?")[2])
        if self._has_body and reads_body_method(rt.policy, facts, self.head.values("content-type")):
            if self._body_named is None and self.request_done:  # (not read: it did not matter)
                self._body_named = self._named_in(b"".join(self._body))
            elif self._body_named is None and self._streams_a_method(
                FlowInfo(a.host, a.port, before.decision, tls=a.tls)
            ):
                return False
        decision = overridden(rt.policy, facts, named + (self._body_named or []), decide(rt.policy, facts))
        info = FlowInfo(a.host, a.port, decision, tls=a.tls)
        self.info = info
        if not info.decision.forwards:
            self._refuse(info)
            return False
        planned = self._swapped_head(info)
        if planned is None:
            return False
        self._choose_scrubbing()
        head = self._request_head(*planned)
        if head == self._head_bytes and (info.decision, info.swapped) == (before.decision, before.swapped):
            self.info = before  # (a load that changed nothing for it: its record stands)
        self._head_bytes = head
        return True

    def _choose_scrubbing(self) -> None:
        """What this answer is scrubbed of: the values bound to its host now."""
        a, rt, c = self.auth, self.rt, self.client
        assert a is not None
        epoch = self._epoch = rt.epoch
        last = c.last_scrubbing  # (the last request's on this connection: the same while no load served since)
        if last is not None and last[0] == epoch and last[1] == a.host and last[2] == a.port:
            self._scrub_finder, self._scrub_values = last[3], last[4]
            return
        bound, self._scrub_values = rt.bound_scrubbing(a.host, a.port)
        self._scrub_finder = bound if bound else None
        c.last_scrubbing = (epoch, a.host, a.port, self._scrub_finder, self._scrub_values)

    def _bound_grew(self) -> bool:
        """Whether a load since the scrubbing was chosen made a value bound to this host that it
        does not find (a rotation, a reload that bound a secret here): the upstream may have been
        given it on another request meanwhile, and be handing it back on this one."""
        rt, a = self.rt, self.auth
        if self._epoch == rt.epoch or a is None:
            return False
        self._epoch = rt.epoch
        return not rt.bound_values(a.host, a.port) <= self._scrub_values

    def _real_value_in_head(self, host: str | None = None) -> str | None:
        """The secret whose real value the agent is sending in the target or a header, or in
        ``host``, the name this request would be dialled by. Checked before the swap."""
        return real_value_in(self.rt.outbound, self.head.target, self.head.raw, (host,) if host else ())

    def _body_guards(self) -> tuple[SegmentedScrubber | None, SegmentedScrubber | None]:
        """A streamed body is checked as it passes, holding back only what could begin a value:
        real values (to any host) and placeholders of secrets not bound here."""
        assert self.auth is not None
        values = self.rt.outbound
        foreign = self.rt.foreign_finder(self.auth.host, self.auth.port, self.auth.tls)
        return (
            SegmentedScrubber(values, lambda _: None, replace=False) if values else None,
            SegmentedScrubber(foreign, lambda _: None, replace=False) if foreign else None,
        )

    # -- getting an upstream -------------------------------------------------------------------------
    def _key(self, ip: str) -> tuple[str, int, str | None]:
        assert self.auth is not None
        a = self.auth
        return (ip, a.port, a.host if a.tls else None)  # TLS toward the agent: TLS, verified, upstream

    async def _connect(self) -> None:
        try:
            await self._connect_inner()
        except Exception as e:
            log.error(json.dumps({"event": "internal_error", "where": "connect", "error": type(e).__name__}))
            self.abort("internal error")
            self.client.abort()

    async def _connect_inner(self) -> None:
        c, a, info = self.client, self.auth, self.info
        assert a is not None and info is not None
        pool = c.server.pool
        pre = c.take_predial((a.host, a.port))
        up: Upstream | None = await pre if pre is not None else None
        if up is not None and up.closed:
            # Dialled (or taken from the pool) for this tunnel at its CONNECT, and closed by the
            # upstream while the agent had not sent its request yet: writes to it would be dropped
            # and nothing would ever answer. Get another, as if none had been dialled.
            up = None
        if up is None:
            dest = await c.destination(a.host, a.port)
            if self.aborted or c.closed:
                return
            if isinstance(dest, FlowInfo):
                info.decision, info.detail = dest.decision, dest.detail
                self._refuse(info)
                return
            self._dest_ok = True
            self._go()
            up = pool.take(self._key(dest))
            if up is None:
                try:
                    up = await pool.dial(self._key(dest))
                except UpstreamError as e:
                    if not self.aborted and not c.closed:
                        self._upstream_failed(e)
                    return
        self._dest_ok = True
        if self.aborted or c.closed:
            pool.put(up)
            return
        self._attach(up)

    def _attach(self, up: Upstream) -> None:
        self.up = up
        self._attached_reused = up.reused
        up.receiver = self
        self._go()  # (the answer's parser after: nothing is read before this callback ends)
        self._rp = httptools.HttpResponseParser(self)

    def _go(self) -> None:
        """Once the destination is checked and the body (when held) is clean: record the decision,
        and once an upstream is attached too, send the request (a whole one first, its record
        after)."""
        if not (self._dest_ok and self._body_ok) or self.aborted:
            return
        info = self.info
        assert info is not None
        if self.up is None or self.upstream_started:
            if not info.audited and not self._resent:
                if not self.upstream_started and self._decided != self.rt.epoch:
                    # Recorded before an upstream is attached (its destination checked): under the
                    # policy in force now, as it will be sent, not the one its record would not
                    # name (red team 39: "allowed" by a policy that denies the host, then "denied").
                    if not self._redecide():
                        return
                    info = self.info
                    assert info is not None
                self.rt.record(info, self.head.method, self._path)
            return
        if self._decided != self.rt.epoch:
            if not self._redecide():
                return
            info = self.info
            assert info is not None
        self.upstream_started = True
        body, self._body = self._body, []
        if self._buffer_body:
            self._sent_body = b"".join(body)
            self.up.send(self._head_bytes + self._sent_body)
        else:
            self.up.send(self._head_bytes + b"".join(self._frame(b) for b in body))
            if self.request_done and self._chunked:
                self.up.send(b"0\r\n\r\n")
        if self._buffer_body or self._held_stream or not self._has_body:
            # The whole request is in that write: it leaves now, and its record (written before
            # the answer can reach the agent, see conn.at_round_end) is made while the upstream
            # works on it, not before.
            self.up.flush_now()
        if not info.audited:
            self.rt.record(info, self.head.method, self._path)
        self.client.resume_reading()

    def _frame(self, data: bytes) -> bytes:
        return b"%x\r\n%s\r\n" % (len(data), data) if self._chunked else data

    # -- the request body --------------------------------------------------------------------------
    def request_body(self, data: bytes) -> None:
        if self.aborted:
            return
        self._body_len += len(data)
        if self._body_len > self.rt.limits.max_request_body:
            self._body_limit()
            return
        if self._buffer_body:
            self._body.append(data)
            return
        data = self._guarded(data, final=False)
        if self.aborted or not data:
            return
        if not self.upstream_started:
            self._body.append(data)
            if not self._held_stream and sum(map(len, self._body)) > BUFFER_BODY:
                self.client.pause_reading()  # resumed once the request goes upstream
            return
        assert self.up is not None
        self.up.send(self._frame(data))

    def _guarded(self, data: bytes, *, final: bool) -> bytes:
        for guard, reason in ((self._value_guard, Reason.SECRET_VALUE_OUTBOUND),
                              (self._placeholder_guard, Reason.SECRET_NOT_BOUND)):  # fmt: skip
            if guard is None:
                continue
            try:
                out = guard.feed(data, 0) if data else []
                if final:
                    out += guard.finish()
            except ScrubRefused as e:
                if self._body_violation(reason, e.secret, e.detail):  # report mode: it goes on unswapped
                    self._placeholder_guard = None
                    data = guard.take_held()
                    continue
                return b""
            data = b"".join(d for _, d in out)
        return data

    def request_end(self) -> None:
        if self.request_done:
            return
        self.request_done = True
        if self.aborted:
            return
        info, a = self.info, self.auth
        assert info is not None and a is not None
        if self._buffer_body:
            body = b"".join(self._body)
            try:
                texts = self._body_texts(body)
            except DecodeError as e:  # (its message names why, never the data)
                info.decision, info.detail = (
                    Decision(Verdict.DENIED, Reason.MALFORMED_REQUEST),
                    f"the body does not decode: {e}",
                )
                return self._refuse(info)
            hit = next((h for t in texts if (h := self.rt.outbound.search(t)) is not None), None)
            if hit is not None:
                return self._refuse_outbound(hit.pattern.secret, "a real secret value in the request body")
            foreign_finder = self.rt.foreign_finder(a.host, a.port, a.tls)
            foreign = next((h for t in texts if (h := foreign_finder.search(t)) is not None), None)
            if foreign is not None and not info.refine(
                deny(self.rt.policy, Reason.SECRET_NOT_BOUND), foreign.pattern.secret, "placeholder in the request body"
            ):
                info.swapped = []
                return self._refuse(info)
            if self._reads_method and not self._method_in_body(body):
                return None
            self._body_ok = True
            self._go()
            return
        tail = self._guarded(b"", final=True)
        if self.aborted:
            return
        if self.upstream_started:
            assert self.up is not None
            if tail:
                self.up.send(self._frame(tail))
            if self._chunked:
                self.up.send(b"0\r\n\r\n")
        elif tail:
            self._body.append(tail)
        if self._held_stream and self._method_in_body(b"".join(self._body)):
            self._body_ok = True
            self._go()

    def _method_in_body(self, body: bytes) -> bool:
        """Judge the methods a POST's whole body names for itself (``_method``); False once refused."""
        info = self.info
        assert info is not None
        self._body_named = named = self._named_in(body)
        if not named:
            return True
        later = overridden(self.rt.policy, self._facts(), named, info.decision)
        if later is info.decision or info.refine(later, info.secret, "the body names a method (_method) not allowed"):
            return True
        info.swapped = []
        self._refuse(info)
        return False

    def _named_in(self, body: bytes) -> list[str]:
        """The methods a held POST body names for itself, as sent and decoded."""
        ctype = self.head.values("content-type")
        return body_methods(ctype, body) + (body_methods(ctype, self._decoded) if self._decoded is not None else [])

    def _streams_a_method(self, info: FlowInfo) -> bool:
        """A POST body that may name its method, streaming (it did not matter when it came) when a
        reload made its method matter, cannot be read for it before it leaves: refused (not in report
        mode, where methods are only reported). Returns whether it was."""
        if deny(self.rt.policy, Reason.METHOD_NOT_ALLOWED).forwards:
            return False
        info.decision, info.detail, info.status = (
            Decision(Verdict.DENIED, Reason.LIMIT_EXCEEDED), "a POST body that may name its method (_method) was "
            "streaming when a policy that allows only some methods here came into force: send it again", 413)  # fmt: skip
        self.info = info
        self._refuse(info)
        return True

    def _body_texts(self, body: bytes) -> list[bytes]:
        """The body as checked: decoded from its content-encoding (bounded), and its side views --
        and, when it was encoded, the bytes as sent too: a gzip header's file name, comment and
        extra field, or a zstd skippable frame, carry bytes no decoder returns, and the upstream
        reads them as they are (red team 9). A body declared UTF-7 is also read whole as UTF-7. And
        each one's skeleton: a value spread with filler of several kinds (red team 16)."""
        if self._body_coding is None:
            return [body, *views(body), *skeleton_views(body), *self._charset_views(body)]
        decoder = Decoder(self._body_coding, self.rt.limits.max_request_body * 4)
        decoded = self._decoded = b"".join(decoder.feed(body)) + b"".join(decoder.finish())
        check_one_reading(self._body_coding, body, decoded, self.rt.limits.max_request_body * 4)
        return [
            body, *views(body), *skeleton_views(body),
            decoded, *views(decoded), *skeleton_views(decoded), *self._charset_views(decoded),
        ]  # fmt: skip

    def _charset_views(self, body: bytes) -> list[bytes]:
        if body.find(b"+") < 0:  # (no UTF-7 run: the Content-Type is not looked for)
            return []
        ctype = next((v for n, v in self.head.headers if n.lower() == "content-type"), "")
        return declared_charset_views(body, ctype)

    def _body_limit(self) -> None:
        a = self.auth
        info = FlowInfo(a.host if a else None, a.port if a else None, Decision(Verdict.DENIED, Reason.LIMIT_EXCEEDED),
                        detail="request body too large", status=413)  # fmt: skip
        self.abort("request body too large")
        self._refuse(info)

    def _body_violation(self, reason: Reason, secret: str, detail: str = "") -> bool:
        """A real value, or a placeholder bound elsewhere, in a streamed body: the upstream sees the
        request cut short before the offending bytes; the agent our answer (or, once the upstream
        has started answering, a closed connection). Returns whether the body goes on (report mode,
        placeholders only). Without ``secret``, the check refused what it could not decide (it held
        back more than its bound of what could begin one): ``limit_exceeded``, with ``detail``."""
        info = self.info
        assert info is not None
        later = FlowInfo(info.host, info.port, info.decision, tls=info.tls)
        if not secret:
            later.decision, later.detail = Decision(Verdict.DENIED, Reason.LIMIT_EXCEEDED), detail
            log.warning(json.dumps({"event": "unscrubbable_request", "host": info.host, "detail": detail}))
        elif reason is Reason.SECRET_VALUE_OUTBOUND:
            later.decision, later.secret, later.detail = (
                Decision(Verdict.DENIED, reason), secret, "a real secret value in the request body")  # fmt: skip
            log.warning(json.dumps({"event": "secret_value_outbound", "secret": secret, "host": info.host}))
        elif later.refine(deny(self.rt.policy, reason), secret, "placeholder in the request body"):
            self.rt.record(later, self.head.method, self._path)
            return True
        self.abort("refused body")
        if self._rhead_done:
            self.rt.record(later, self.head.method, self._path)
            self.client.abort()
        else:
            self._refuse(later)
        return False

    # -- refusals ----------------------------------------------------------------------------------
    def _refuse(self, info: FlowInfo) -> None:
        """Answer our denial and close the connection (nothing after it is read)."""
        self.response_done = True
        self.abort("refused")
        self.client.exchange = None
        self.client.answer_and_close(info, self.head.method, self._path)

    def _refuse_outbound(self, secret: str, detail: str) -> None:
        info = self.info or FlowInfo(None, None, Decision(Verdict.DENIED, Reason.SECRET_VALUE_OUTBOUND))
        info.decision, info.secret, info.detail, info.swapped = (
            Decision(Verdict.DENIED, Reason.SECRET_VALUE_OUTBOUND), secret, detail, [])  # fmt: skip
        info.host = self.rt.redact_name(info.host)  # (the value may be in the name, in a form only a name has)
        log.warning(
            json.dumps({"event": "secret_value_outbound", "secret": secret, "host": info.host, "detail": detail})
        )
        self._refuse(info)

    def _upstream_failed(self, e: UpstreamError) -> None:
        if self.info is not None and not self.info.audited and not self._resent:
            self.rt.record(self.info, self.head.method, self._path)
        log.warning(
            json.dumps({"event": "upstream_error", "host": self.info.host if self.info else None, "detail": str(e)})
        )
        self.response_done = True
        self.aborted = True
        self.client.send(_upstream_error_answer(504 if e.timeout else 502, str(e)))
        self.client.exchange = None
        self.client.close()

    def abort(self, why: str) -> None:
        """Stop this exchange: the upstream connection is dropped (never reused)."""
        self.aborted = True
        if self.up is not None:
            up, self.up = self.up, None
            up.receiver = None
            up.abort()

    def client_lost(self) -> None:
        self.unsent("the agent went away before its request was complete")
        self.abort("the agent went away")

    def unsent(self, detail: str) -> None:
        """The connection ends before this request was recorded (its body, held to be checked
        whole, never completed): a record says it existed and went nowhere."""
        info = self.info
        if info is None or info.audited or self._resent:  # (a second send never made: the first's record stands)
            return
        self.rt.record(FlowInfo(info.host, info.port, Decision(Verdict.DENIED, Reason.LIMIT_EXCEEDED), tls=info.tls,
                                detail=detail), self.head.method, self._path)  # fmt: skip
        info.audited = True

    # -- the response --------------------------------------------------------------------------------
    def upstream_data(self, data: bytes) -> None:
        self._received_any = True
        self.client.last_activity = time.monotonic()
        if self.aborted:
            return
        if self.response_done:  # bytes after a complete response (a body after 204, a second answer)
            self.abort("bytes after the response")
            return
        rp = self._rp
        if rp is None:
            return
        if self.head.method == "HEAD" and not self._rhead_done:
            data = self._head_only(data)
            if not data:
                return
        self._unparsed += len(data)
        try:
            rp.feed_data(data)
            if self._unparsed > ANSWER_HEAD_MAX and not self.response_done:
                self._bad_response("the upstream's response head, a chunk's size line or its trailer is too large")
                return
            if self._scrub_in:
                self._scrub_read()
        except httptools.HttpParserUpgrade as e:
            self._upgraded_rest = data[e.args[0] :] if e.args else b""
            self._switch_to_websocket()
        except httptools.HttpParserCallbackError as e:
            cause = e.__context__
            if isinstance(cause, _OutOfStep):
                self.abort("bytes after the response")
                return
            if isinstance(cause, DecodeError | ScrubRefused):  # raised in our callbacks, on purpose
                self._refuse_response(cause)
                return
            raise (cause or e) from None  # our bug, not the upstream's: fail closed as one
        except httptools.HttpParserError:
            self._bad_response("the upstream answered with a malformed response")
        except (DecodeError, ScrubRefused) as e:
            self._refuse_response(e)

    def _head_only(self, data: bytes) -> bytes:
        """A response to HEAD has no body whatever its headers say: feed llhttp the heads only --
        any interim ones (1xx but 101) and the final one, however many arrive in one read."""
        buf = self._head_only_buf + data
        pos = 0
        while True:
            end = buf.find(b"\r\n\r\n", pos)
            if end == -1:
                self._head_only_buf = buf[pos:]
                if len(self._head_only_buf) > ANSWER_HEAD_MAX:
                    self._bad_response("the upstream's response head is too large")
                return buf[:pos]
            interim = _INTERIM.match(buf, pos) is not None
            pos = end + 4
            if not interim:
                break
        self._head_only_buf = b""
        if pos < len(buf):
            self._no_reuse = True
        return buf[:pos]

    _no_reuse = False
    _unparsed = 0  # bytes fed since the parser last delivered something (see ANSWER_HEAD_MAX)

    # llhttp callbacks (response)
    def on_message_begin(self) -> None:
        if self.response_done or self._end_pending is not None:
            raise _OutOfStep  # a second response in the same bytes (after a 204, say): not the agent's
        self._rheaders = []

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._rhead_done:
            self._rheaders.append((name, value))
        # response trailers are never forwarded

    def on_headers_complete(self) -> None:
        assert self._rp is not None
        self._unparsed = 0
        status = self._rp.get_status_code()
        self._status = status
        if 100 <= status < 200 and status != 101:
            self._interim(status)
            return
        if status == 101:
            return  # handled when llhttp stops for the upgrade
        self._rhead_done = True
        self._begin_response()
        if self.head.method == "HEAD":
            self._end_response(keep=not self._no_reuse)

    def on_body(self, body: bytes) -> None:
        self._unparsed = 0
        if self.aborted:
            return
        mode = self._mode
        if mode != "whole" and self._bound_grew():
            # Its head went out (and part of it, perhaps) scrubbed of fewer values: cut (a whole
            # answer is scrubbed at its end, by what is bound then).
            self._refuse_response(ScrubRefused("", _BOUND_GREW))
            return
        if mode == "raw" or mode == "close":
            self.client.send(body)
        elif mode == "chunked":
            self.client.send(b"%x\r\n%s\r\n" % (len(body), body))
        elif mode == "whole":
            self._whole.append(body)
        elif mode == "scrub":
            # (Scrubbed once the read is parsed, and decoded a piece at a time: see _pump.)
            self._scrub_in.append(body)

    def _scrub_read(self) -> None:
        """Scrub what a read brought of a streamed body, and send what may go. May raise
        DecodeError or ScrubRefused."""
        if self._pumping is not None:
            return  # (after the pieces still waiting: see _pump_on)
        pieces, self._scrub_in = self._scrub_in, []
        if self.aborted or self.response_done:
            return
        # (Each piece fed on its own, as it came: a refusal in one lets the clean ones before it go.)
        decoder = self._decoder
        self._pump(iter(pieces) if decoder is None else itertools.chain.from_iterable(map(decoder.feed, pieces)))

    def _pump(self, pieces: Iterator[bytes]) -> bool:
        """Scrub and send ``pieces`` one by one, until the agent's side stops taking them (then they
        wait for :meth:`_pump_on`: False), or for SLICE_TIME: then the rest waits for the loop's
        other connections, the upstream's reading paused meanwhile (a read of a thousand small
        chunks, each costly to check, held every other agent for seconds: red team 24). May raise
        DecodeError or ScrubRefused."""
        scrubber = self._scrubber
        assert scrubber is not None
        client = self.client
        chunked = self.head.version == "1.1"
        held = 0  # bytes sent since the last flush (held to the callback's end: see Endpoint.send)
        end = time.perf_counter() + SLICE_TIME
        for piece in pieces:
            out = scrubber.feed(piece)
            if out:
                client.send(b"%x\r\n%s\r\n" % (len(out), out) if chunked else out)
                held += len(out)
                if held >= HIGH_WATER:  # (written now, so that the transport can say it is full)
                    client.flush_now()
                    held = 0
            if self.aborted:  # (the agent went away, say: the rest is not decoded)
                self._pumping = None
                return False
            if client.write_paused:
                self._pumping = pieces
                return False
            if time.perf_counter() > end:
                self._pumping = pieces
                if self.up is not None:
                    self.up.pause_reading()
                asyncio.get_running_loop().call_soon(self._next_slice)
                return False
        self._pumping = None
        return True

    def _next_slice(self) -> None:
        """The pieces a slice left (see _pump), unless the agent's side stopped taking them since
        (then its resumption goes on with them)."""
        if self._pumping is None or self.client.write_paused:
            return
        try:
            self._pump_on()
        except Exception as e:  # (a callback of the loop's own: fail closed as the data path does)
            self.client.internal_error(e, "scrub slice")
            return
        if self._pumping is None and self.up is not None and not self.aborted:
            self.up.resume_reading()

    def _pump_on(self) -> None:
        """The agent took what was sent: go on with the pieces that waited, then the reads that
        came behind them, then the response's end."""
        pieces = self._pumping
        if pieces is None or self.aborted or self.response_done:
            return
        try:
            if not self._pump(pieces):
                return
            if self._scrub_in:
                self._scrub_read()
                if self._pumping is not None:
                    return
        except (DecodeError, ScrubRefused) as e:
            self._refuse_response(e)
            return
        keep, self._end_pending = self._end_pending, None
        if keep is not None:
            self._end_response(keep)

    def on_message_complete(self) -> None:
        self._unparsed = 0
        if 100 <= self._status < 200 or self.head.method == "HEAD" or self.aborted:
            return
        # Asked now: once the message is complete the parser moves on, and asked later (an end
        # that waits for the pieces of an answer scrubbed in slices) it said no, and the
        # connection was closed instead of pooled.
        assert self._rp is not None
        self._upstream_keeps = self._rp.should_keep_alive()
        self._end_response(keep=True)

    def _interim(self, status: int) -> None:
        if status == 100:
            return  # we answered Expect ourselves; the upstream's own 100 is not the agent's
        if self._bound_grew():  # (an interim head too: 103 Early Hints, red team 38)
            self._choose_scrubbing()
        headers = self._scrubbed_headers()
        if headers is None:
            return
        self.client.send(response_head(status, response_fields(headers)[0], None))
        self._rheaders = []

    def _scrubbed_headers(self) -> list[RawHeader] | None:
        raw = self._rheaders
        finder = self._scrub_finder
        if finder and first_hit(finder, [f for pair in raw for f in pair]) is not None:
            try:
                scrubbed = [(scrub_field(n, finder, self._hit), scrub_field(v, finder, self._hit)) for n, v in raw]
                left = first_hit(finder, [f for pair in scrubbed for f in pair])
                if left is not None:
                    # The head check finds what scrubbing field by field did not take out (a reading
                    # of the fields together, or of a field as a header: red team 41's continuations
                    # in a field over 8 KiB), whether or not it replaced something else (red team
                    # 42: a plain copy beside it): refused, never forwarded.
                    raise ScrubRefused(left.pattern.secret, "a real value in the head, across its fields")
            except ScrubRefused as e:
                self._refuse_response(e)
                return None
            raw = scrubbed
        return raw

    def _begin_response(self) -> None:
        status = self._status
        if self._bound_grew():
            self._choose_scrubbing()
        headers = self._scrubbed_headers()
        if headers is None:
            return
        out, fields = response_fields(headers)
        cl = fields["content-length"]
        length = int(cl[0]) if cl and cl[0].strip().isdigit() else None
        te = [v.strip().lower() for v in fields["transfer-encoding"]]
        chunked = bool(te)
        if te and te != ["chunked"]:
            # A transfer-coding other than chunked (gzip, ...) would reach the agent undecoded, unscanned.
            self._refuse_response(DecodeError("transfer-coding other than chunked"))
            return
        client_11 = self.head.version == "1.1"
        if self.head.method == "HEAD" or status in _NO_BODY:
            self._mode = "none"
            if cl:
                out.append((b"Content-Length", cl[0].strip().encode("latin-1")))
            self.client.send(response_head(status, out, None))
            return
        if not self._scrub_finder:
            if length is not None and not chunked:
                self._mode = "raw"
                self.client.send(response_head(status, out, length))
            elif client_11:
                self._mode = "chunked"
                self.client.send(response_head(status, out, "chunked"))
            else:
                self._mode = "close"
                self.client.send(response_head(status, out, None))
            return
        coding = ",".join(fields["content-encoding"]).strip().lower()
        if coding and coding != "identity":
            try:
                self._decoder = Decoder(coding, self.rt.limits.max_decoded_body)
            except DecodeError as e:
                self._refuse_response(e)
                return
            out = [(n, v) for n, v in out if n.lower() != b"content-encoding"]
        ctype = fields["content-type"][0].lower().strip() if fields["content-type"] else ""
        # A token stream by its label: read as both an SSE client and a line reader read one (each
        # reads what it reads whatever the label says).
        kind = "mixed" if ctype.startswith(("text/event-stream", *STREAM_TYPES)) else ""
        if not kind and length is not None and not chunked and length <= SCAN_WHOLE:
            self._mode = "whole"
            self._whole_headers = out
            return
        self._stream(out, kind)

    def _stream(self, out: Sequence[RawHeader], kind: str) -> None:
        """Send the answer's head, and scrub its body as a stream (``kind``: see EventScrubber)."""
        assert self._scrub_finder is not None
        # (An event-stream body, Bedrock's, is told by its first bytes, whatever its label says.)
        self._scrubber = FramedOr(
            EventScrubber(self._scrub_finder, self._hit, kind)
            if kind
            else SniffingScrubber(self._scrub_finder, self._hit),
            self._scrub_finder,
            self._hit,
        )
        self._mode = "scrub"
        self.client.send(response_head(self._status, out, "chunked" if self.head.version == "1.1" else None))

    def _end_response(self, keep: bool) -> None:
        if self.response_done:
            return
        mode = self._mode
        try:
            if mode == "chunked":
                self.client.send(b"0\r\n\r\n")
            elif mode == "whole":
                if self._bound_grew():
                    self._choose_scrubbing()
                assert self._scrub_finder is not None
                whole = b"".join(self._whole)
                if self._decoder is not None:
                    decoded = self._decoded_whole(whole, keep)
                    if decoded is None:
                        return  # (streamed after all: see _decoded_whole)
                    whole = decoded
                body = scrub_body(whole, self._scrub_finder, self._hit)  # whole: nothing to hold back
                self.client.send(response_head(self._status, self._whole_headers, len(body)) + body)
            elif mode == "scrub":
                assert self._scrubber is not None
                if self._scrub_in:
                    self._scrub_read()
                if self._pumping is not None:
                    self._end_pending = keep  # (ended once the pieces before it are sent: _pump_on)
                    return
                tail = b"".join(self._decoder.finish()) if self._decoder is not None else b""
                out = (self._scrubber.feed(tail) if tail else b"") + self._scrubber.finish()
                if self.head.version == "1.1":
                    self.client.send((b"%x\r\n%s\r\n" % (len(out), out) if out else b"") + b"0\r\n\r\n")
                else:
                    self.client.send(out)
        except (DecodeError, ScrubRefused) as e:
            self._refuse_response(e)
            return
        self.client.flush_now()  # the answer is whole: out before the bookkeeping below
        self.response_done = True
        self.rt.metrics.upstream_duration.buckets.observe(max(0.0, time.monotonic() - self._started))
        up, self.up = self.up, None
        if up is not None:
            framing = self._framing
            reusable = (
                keep
                and self.request_done
                and self._rp is not None
                and (self._rp.should_keep_alive() if self._upstream_keeps is None else self._upstream_keeps)
                # Never after an upgrade request (the upstream may read on as the other protocol),
                # nor when the body did not fill the length the head declared: the upstream would
                # read the next request on this connection as the rest of it (red team 43).
                and not self.head.upgrade
                and (framing is None or framing.content_length is None or self._body_len == framing.content_length)
            )
            if reusable:
                self.client.server.pool.put(up)
            else:
                self.client.server.pool.remember(up)
                up.receiver = None
                up.close()
        # The parser and a streaming scrubber hold callbacks bound to this exchange: cycles, which
        # left every answered request's exchange, head and parser (and a stream's scrubbers) to the
        # garbage collector instead of freeing them here.
        self._rp = self._scrubber = None
        delimited = mode in ("none", "raw", "chunked", "whole") or (mode == "scrub" and self.head.version == "1.1")
        # (An upgrade the upstream declined ends the connection with its answer: the parser stopped
        # at the upgrade, and what the agent sent behind it was meant for another protocol.)
        client_keeps = self.head.keep_alive and delimited and self.request_done and not self.head.upgrade
        if self.head.upgrade and self.client._after_upgrade and self.info is not None:
            # What the agent sent behind it is dropped with the connection: recorded as refused.
            self.rt.record(FlowInfo(self.info.host, self.info.port, Decision(Verdict.DENIED, Reason.MALFORMED_REQUEST),
                                    tls=self.info.tls, detail="bytes sent behind an upgrade request the upstream declined"),
                           self.head.method, self._path)  # fmt: skip
        self.client.exchange_done(client_keeps)

    def _decoded_whole(self, data: bytes, keep: bool) -> bytes | None:
        """A body with a Content-Length small enough to be scrubbed whole, decoded: the decoded
        bytes, unless they pass what is scrubbed whole (SCAN_WHOLE): then the answer is streamed,
        as a larger one would have been, from the pieces decoded so far (None)."""
        assert self._decoder is not None
        pieces = self._decoder.feed(data)
        decoded: list[bytes] = []
        size = 0
        for piece in pieces:
            decoded.append(piece)
            size += len(piece)
            if size > SCAN_WHOLE:
                self._stream(self._whole_headers, "")
                if self._pump(itertools.chain(decoded, pieces)):
                    self._end_response(keep)
                else:
                    self._end_pending = keep
                return None
        return b"".join(decoded) + b"".join(self._decoder.finish())

    def _hit(self, secret: str) -> None:
        self.rt.metrics.secret_redactions.labels(secret).inc()
        log.warning(json.dumps({"event": "redaction", "secret": secret,
                                "detail": "real value in a response replaced by its placeholder"}))  # fmt: skip

    def _refuse_response(self, e: DecodeError | ScrubRefused) -> None:
        """What comes back cannot be scrubbed: before the head went out the agent gets a 502 with
        the reason; after, the connection is cut."""
        head_sent = self._mode not in ("", "whole")
        if isinstance(e, ScrubRefused):
            reason, detail = Reason.SECRET_VALUE_INBOUND, e.detail
            if e.secret:
                self.rt.metrics.secret_redactions.labels(e.secret).inc()
            if self.info is not None:  # the request was recorded as allowed; the response's refusal is its own
                self.rt.record(FlowInfo(self.info.host, self.info.port, Decision(Verdict.DENIED, reason),
                                        tls=self.info.tls, secret=e.secret or None, detail=detail),
                               self.head.method, self._path)  # fmt: skip
            log.warning(
                json.dumps({"event": "redaction", "secret": e.secret or None, "detail": e.detail, "action": "refused"})
            )
        else:
            reason, detail = Reason.LIMIT_EXCEEDED, str(e)
            log.warning(json.dumps({"event": "unscrubbable_response", "host": self.info.host if self.info else None,
                                    "detail": detail}))  # fmt: skip
        self.abort("unscrubbable response")
        self.response_done = True
        if head_sent:
            self.client.abort()
        else:
            self.client.send(denial(reason, detail, 502))
            self.client.exchange = None
            self.client.close()

    def _agent_sent_early(self) -> None:
        """The agent sent bytes behind its upgrade request before the 101 (RFC 6455 4.1: it must
        wait): they are not relayed as frames. Its fault, not the upstream's: a 400 with the reason,
        and a record of the refusal after the request's own."""
        detail = "bytes sent behind an upgrade request before its answer"
        info = self.info
        if info is not None:
            self.rt.record(FlowInfo(info.host, info.port, Decision(Verdict.DENIED, Reason.MALFORMED_REQUEST),
                                    tls=info.tls, detail=detail), self.head.method, self._path)  # fmt: skip
        self.abort(detail)
        self.response_done = True
        self.client.send(denial(Reason.MALFORMED_REQUEST, detail, 400))
        self.client.exchange = None
        self.client.close()

    def _bad_response(self, detail: str) -> None:
        if self._rhead_done or self._mode:
            self.abort(detail)
            self.response_done = True
            self.client.abort()
            return
        self._upstream_failed(UpstreamError(detail))
        self.abort(detail)

    def upstream_closed(self) -> None:
        """The upstream connection ended while this exchange used it."""
        self.up = None
        if self.response_done or self.aborted:
            return
        if not self._received_any and self._reused_retry():
            return
        if self._end_pending is not None:  # (the answer came whole; its end waits for its pieces: _pump_on)
            self._end_pending = False
            return
        if (self._rhead_done and self._mode == "close") or (self._rhead_done and self._mode in ("scrub", "chunked", "whole")
                                                          and self._close_delimited()):  # fmt: skip
            self._end_response(keep=False)
            return
        if self._rhead_done:
            self.aborted = True
            self.response_done = True
            self.client.abort()  # a response cut short stays cut short
            return
        self._upstream_failed(UpstreamError("the upstream closed the connection without answering"))

    def _close_delimited(self) -> bool:
        names = {n.lower() for n, _ in self._rheaders}
        return b"content-length" not in names and b"transfer-encoding" not in names

    def _reused_retry(self) -> bool:
        """A pooled connection the upstream had closed: try once on a fresh one, when the request
        can be sent again (no body streamed yet) and may be (an idempotent method, RFC 9110 9.2.2:
        the upstream may have acted on a POST before it closed, and a second one would act again)."""
        if (
            self._retried
            or not self._attached_reused
            or (self._body_len and not self._buffer_body)
            or self.head.method not in _IDEMPOTENT
        ):
            return False
        self._retried = True
        info = self.info
        if info is not None and info.audited:
            # It leaves again, its real values with it: a record of its own, counted as the first
            # was (red team 71: an upstream that read the request and hung up had the key twice,
            # with one record and one swap counted).
            # Recorded once it leaves (_go), not before its dial as a first send is: a dial that
            # fails sends nothing, and the first record stands alone.
            self.info = info.again(_SENT_AGAIN)
            self._resent = True
        self._rp = None
        self.upstream_started = False
        if self._buffer_body:
            self._body = [self._sent_body] if self._sent_body else []
        self._task = asyncio.ensure_future(self._connect())
        return True

    def upstream_write_paused(self, paused: bool) -> None:
        if paused:
            self.client.pause_reading()
        else:
            self.client.resume_reading()

    def client_write_paused(self, paused: bool) -> None:
        if not paused and self._pumping is not None:
            self._pump_on()
            if self._pumping is not None:
                return  # (paused again: the upstream stays paused too)
        if self.up is not None:
            if paused:
                self.up.pause_reading()
            else:
                self.up.resume_reading()

    # -- WebSocket ---------------------------------------------------------------------------------
    def _switch_to_websocket(self) -> None:
        from proxy.datapath.websocket import WebSocketRelay

        up = self.up
        if not self._websocket or self._status != 101 or up is None:
            self._bad_response("an upgrade the agent did not ask for")
            return
        if self.client._after_upgrade:
            self._agent_sent_early()
            return
        if self._bound_grew():  # (before its head is scrubbed: red team 38)
            self._choose_scrubbing()
        headers = self._scrubbed_headers()
        if headers is None:
            return
        names = {n.lower() for n, _ in headers}
        if b"sec-websocket-extensions" in names:
            self._bad_response("the upstream chose a WebSocket extension that was not offered")
            return
        self.client.send(response_head(101, response_fields(headers, upgrade=True)[0], None))
        self.response_done = True
        assert self.info is not None and self.auth is not None
        relay = WebSocketRelay(self.client, up, self.rt, self.info, self._path, self._scrub_finder,
                               self.rt.foreign_finder(self.auth.host, self.auth.port, self.auth.tls),
                               self._scrub_values)  # fmt: skip
        self.client.ws = relay
        self.client.exchange = None
        up.receiver = relay
        if self._upgraded_rest:
            relay.upstream_data(self._upgraded_rest)
