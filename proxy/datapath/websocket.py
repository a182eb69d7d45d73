"""A WebSocket after the handshake: frames relayed both ways, checked both ways.

The handshake was an ordinary exchange (its swap happened in the handshake's slot; frames are never
swapped) with ``permessage-deflate`` stripped from the offer, so every frame is plain. Each direction
is one stream of messages, text and binary alike, run through a scrubber
(:class:`proxy.core.scrub.SegmentedScrubber`) and framed anew: what the scrubber releases goes out at
once as fragments, and a message is finished toward its peer once nothing of it is held back.

- Toward the agent, from a host a secret is bound to: a real value inside a message, however
  fragmented, is replaced by its placeholder; one split over two messages closes the socket (1008).
  Text messages (and binary ones that begin as JSON) are held until complete and read as a token
  stream too (:class:`_Messages`): a value split over the JSON deltas of two messages, as a
  Realtime API client stitches them, closes the socket. Binary messages are also one byte stream
  of their own (:class:`proxy.core.scrub.MessageScrubber`): a file's pieces with text messages
  between, as a client joins them.
- Toward the upstream: a real value (any host), or a placeholder of a secret not bound here, closes
  the socket (1008), counted like the same thing in a request body; nothing of it is sent first.
- Control frames (ping, pong, close reasons) are scrubbed whole; one that ends with what could
  begin a value, or completes one begun in the previous, closes the socket.

wsproto parses and builds the frames; nothing is kept once relayed (F07). Its parsing costs ~9 us a
frame, and a read of 256 KiB may hold 128K empty ones: each direction's frames are taken SLICE_TIME
at a time, that side's reading paused in between, so that one socket's flood of tiny frames (red
team 22: 6M empty continuation frames, a minute of CPU) does not keep every other connection of the
sidecar waiting for its whole read.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Event, Message, Ping, Pong, TextMessage
from wsproto.frame_protocol import CloseReason
from wsproto.utilities import LocalProtocolError

from proxy.core.finder import Finder, Pattern
from proxy.core.flow import FlowInfo
from proxy.core.scrub import (
    MAX_EVENT,
    MIN_HOLD,
    MessageScrubber,
    PathStitcher,
    ScrubRefused,
    SegmentedScrubber,
    behind_past_bound,
    json_message,
    json_still_undecided,
    message_texts,
    scrub_field,
    views,
)
from proxy.core.values import PART_HOLD
from proxy.policy.decide import RequestFacts, decide, deny
from proxy.policy.model import Decision, Reason, Verdict
from proxy.runtime import Runtime

if TYPE_CHECKING:
    from proxy.datapath.client import Client
    from proxy.datapath.upstream import Upstream

log = logging.getLogger("sandgate.proxy")

__all__ = ["WebSocketRelay"]

_POLICY_VIOLATION = 1008
SLICE_TIME = 0.005  # seconds of one direction's frames at a time (asked after each: one may cost ms)


class _Messages:
    """One direction: messages in, scrubbed fragments out, in order.

    With a ``stitcher`` (toward the agent, from a host a secret is bound to), text messages (and
    binary ones that begin as JSON) are also a token stream: each is held until it is complete (up
    to MAX_EVENT bytes; a longer one is refused), and the text a client stitches from consecutive
    messages (each JSON string leaf by its path, or the message) is checked across them, as SSE
    events are: a message whose text ends with what could begin a value waits, with every message
    after it, until the next one says otherwise; a value split across messages closes the
    socket."""

    def __init__(
        self,
        scrubber: SegmentedScrubber | MessageScrubber | None,
        send: Callable[[Event], None],
        stitcher: PathStitcher | None = None,
    ) -> None:
        self.scrubber = scrubber
        self._send = send
        self._stitcher = stitcher
        self._seq = 0  # the message being received
        self._out = 0  # the message being sent (all before it are finished)
        self._text: dict[int, bool] = {}
        self._stitched: dict[int, bool] = {}  # messages read as a token stream's events
        self._ended: set[int] = set()  # messages whose last frame has arrived
        self._whole = bytearray()  # a text message's fragments, until it is complete (stitching)
        self._waiting: deque[tuple[int, Event, int]] = deque()  # fragments behind a message the stitcher holds, sizes
        self._waiting_size = 0  # their bytes

    def message(self, ev: Message) -> None:  # type: ignore[type-arg]
        """May raise ScrubRefused: then nothing of the offending bytes was sent."""
        seq = self._seq
        text = isinstance(ev, TextMessage)
        self._text.setdefault(seq, text)
        payload = ev.data.encode() if text else bytes(ev.data)
        # Stitched: text messages, and binary ones that begin as JSON, in any UTF json.loads reads
        # (clients json-load a binary message just the same), told from the message's first bytes,
        # not its first fragment (which may be empty or blank): held until they tell.
        stitched = self._stitched.get(seq)
        if stitched is None:
            if self._stitcher is not None and not text:
                if not ev.message_finished and json_still_undecided(self._whole, payload):
                    self._hold_whole(payload)
                    return
                head = bytes(self._whole) + payload
                if not json_message(head):
                    payload, self._whole = head, bytearray()  # (what was held goes with this fragment)
            stitched = self._stitched[seq] = text or json_message(bytes(self._whole) + payload)
        if self._stitcher is not None and stitched:
            self._hold_whole(payload)
            if not ev.message_finished:
                return
            payload, self._whole = bytes(self._whole), bytearray()
        if ev.message_finished:
            self._seq += 1
            self._ended.add(seq)
        if self.scrubber is None:
            self._fragment(seq, payload, ev.message_finished)
            return
        if not text and isinstance(self.scrubber, MessageScrubber):
            self.scrubber.binary(seq)
        out = self.scrubber.feed(payload, seq)
        if ev.message_finished:
            out += self.scrubber.end_segment()
        if self._stitcher is not None and stitched:
            # The texts of the message as it goes out: a value inside one leaf is replaced, not
            # refused (the scrubber's replacement is the same; on_hit counts it once, there).
            self._stitcher.add(seq, message_texts(scrub_field(payload, self.scrubber.finder, lambda _: None)))
        self._emit(out)
        self._release()

    def _hold_whole(self, payload: bytes) -> None:
        if len(self._whole) + len(payload) > MAX_EVENT:
            raise ScrubRefused("", "a WebSocket message read as text larger than the scrubber's bound")
        self._whole += payload

    def _emit(self, out: list[tuple[int, bytes]]) -> None:
        assert self.scrubber is not None
        held = self.scrubber.held_segments()
        for i, (seq, chunk) in enumerate(out):
            self._finish_before(seq)
            last = all(s != seq for s, _ in out[i + 1 :])
            final = last and seq in self._ended and seq not in held
            if chunk or final:
                self._fragment(seq, chunk, final)
        while self._out in self._ended and self._out not in held:
            self._fragment(self._out, b"", True)

    def _finish_before(self, seq: int) -> None:
        while self._out < seq:
            self._fragment(self._out, b"", True)

    def _fragment(self, seq: int, payload: bytes, finished: bool) -> None:
        event: Message = (  # type: ignore[type-arg]
            TextMessage(data=payload.decode("utf-8"), message_finished=finished)
            if self._text.get(seq, False)
            else BytesMessage(data=payload, message_finished=finished)
        )
        held = self._stitcher.first_held() if self._stitcher is not None else None
        if self._waiting or (held is not None and seq >= held):
            self._waiting.append((seq, event, len(payload)))
            self._waiting_size += len(payload)
            if behind_past_bound(len(self._waiting), self._waiting_size):
                raise ScrubRefused("", "WebSocket messages held back behind one that could begin a real value, "
                                   "past the scrubber's bound")  # fmt: skip
        else:
            self._send(event)
        if finished:
            self._text.pop(seq, None)
            self._stitched.pop(seq, None)
            self._ended.discard(seq)
            self._out = seq + 1

    def _release(self) -> None:
        """Send what waited behind a message the stitcher no longer holds."""
        if not self._waiting or self._stitcher is None:
            return
        held = self._stitcher.first_held()
        waiting = self._waiting
        while waiting and (held is None or waiting[0][0] < held):
            _, event, size = waiting.popleft()
            self._waiting_size -= size
            self._send(event)

    def flush(self) -> None:
        """The stream ends: everything held is checked a last time and sent (or refused)."""
        if self.scrubber is not None:
            self._emit(self.scrubber.finish())
        if self._stitcher is not None:
            self._stitcher.finish()
            waiting, self._waiting, self._waiting_size = self._waiting, deque(), 0
            for _, event, _ in waiting:
                self._send(event)


_BOUND_GREW = "values were bound to this host while the socket was open (a rotation, a reload)"
_POLICY_MOVED = "the policy in force changed what this socket may carry while it was open"


class WebSocketRelay:
    def __init__(
        self,
        client: Client,
        up: Upstream,
        rt: Runtime,
        info: FlowInfo,
        path: str | None,
        scrub: Finder | None,
        foreign: Finder,
        scrub_values: frozenset[str] = frozenset(),
    ) -> None:
        self.client, self.up, self.rt, self.info, self.path = client, up, rt, info, path
        # What ``scrub`` finds, as of the runtime's epoch: a message after a load that bound more
        # values to this host ends the socket (the upstream may have been given one meanwhile).
        self._scrub_values, self._epoch, self._out_epoch = scrub_values, rt.epoch, rt.epoch
        self.agent = Connection(ConnectionType.SERVER)  # we are the server toward the agent
        self.upstream = Connection(ConnectionType.CLIENT)  # and the client toward the upstream
        self._scrub = scrub
        self._inbound = _Messages(
            MessageScrubber(scrub, self._hit) if scrub else None,
            self._to_agent,
            PathStitcher(scrub, lambda _: None) if scrub else None,
        )
        # Outbound: real values and the placeholders not bound here, one finder, refused whole.
        self._values = rt.outbound
        self._guard = Finder([*rt.outbound.patterns, *(Pattern(p.secret, p.find, b"", True) for p in foreign.patterns)])
        self._outbound = _Messages(
            SegmentedScrubber(self._guard, lambda _: None, replace=False) if self._guard else None, self._to_upstream
        )
        self._control_in = b""  # the last control payload each way: a value split over two
        self._control_out = b""
        self._closed = False
        self._closing_agent = False
        # Per direction: frames not taken yet (a slice ended), and whether the peer's writes are
        # paused (its reading resumes only when both are over).
        self._from_agent: Iterator[Event] | None = None
        self._from_upstream: Iterator[Event] | None = None
        self._upstream_full = False
        self._agent_full = False

    # -- agent -> upstream ------------------------------------------------------------------------------
    def from_agent(self, data: bytes) -> None:
        if self._closed:
            return
        try:
            self.agent.receive_data(data)
        except LocalProtocolError:
            self._end()
            return
        if self._from_agent is None:  # (else a slice is due: it takes these frames too)
            if self._out_epoch != self.rt.epoch and self._policy_moved():
                return
            self._agent_frames(self.agent.events())

    def _policy_moved(self) -> bool:
        """After a load since the socket opened: whether the policy in force no longer allows it,
        or its outbound guard lacks a value or a foreign placeholder it would have now (the socket
        kept the policy of its handshake: red team 38); then it is closed, with a record."""
        rt, info = self.rt, self.info
        self._out_epoch = rt.epoch
        host, port = info.host, info.port
        assert host is not None and port is not None
        decision = decide(rt.policy, RequestFacts(host, port, "GET", self.path or "/"))
        guard = {p.find for p in self._guard.patterns}
        foreign = rt.foreign_finder(host, port, info.tls)
        now = {p.find for p in rt.outbound.patterns} | {p.find for p in foreign.patterns}
        if decision.forwards and now <= guard:
            return False
        reason = decision.reason if not decision.forwards and decision.reason else Reason.SECRET_NOT_BOUND
        log.warning(json.dumps({"event": "websocket_closed", "host": host, "detail": _POLICY_MOVED}))
        self.rt.record(FlowInfo(host, port, Decision(Verdict.DENIED, reason), tls=info.tls, detail=_POLICY_MOVED),
                       "GET", self.path)  # fmt: skip
        self._violation()
        return True

    def _agent_frames(self, events: Iterator[Event]) -> None:
        """The agent's frames, a slice at a time (see SLICE_TIME)."""
        end = time.perf_counter() + SLICE_TIME
        for ev in events:
            if self._closed or self._agent_event(ev):
                return
            if time.perf_counter() > end:
                self._from_agent = events
                self.client.pause_reading()
                asyncio.get_running_loop().call_soon(self._next_agent_slice)
                return
        self._from_agent = None

    def _next_agent_slice(self) -> None:
        events = self._from_agent
        if events is None or self._closed:
            return
        self._agent_frames(events)
        if self._from_agent is None and not self._closed and not self._upstream_full:
            self.client.resume_reading()

    def _agent_event(self, ev: Event) -> bool:
        """One frame from the agent; True once the socket is closed for it."""
        if self._closing_agent:  # we sent our close frame: only the agent's answer matters now
            if isinstance(ev, CloseConnection):
                self._end()
            return False
        try:
            if isinstance(ev, Message):
                self._outbound.message(ev)
            elif isinstance(ev, Ping | Pong):
                self._control_out = self._check_control(self._guard, self._control_out, bytes(ev.payload))
                self._to_upstream(ev)
            elif isinstance(ev, CloseConnection):
                self._check_control(self._guard, b"", (ev.reason or "").encode())
                self._to_upstream(CloseConnection(code=ev.code, reason=ev.reason))
                if self.agent.state is ConnectionState.REMOTE_CLOSING:
                    self._to_agent(ev.response())
                self._end()
        except ScrubRefused as e:
            return self._outbound_refused(e)
        return False

    def _outbound_refused(self, e: ScrubRefused) -> bool:
        """Count and audit what the agent tried to send; True when the socket is closed for it.
        Report mode lets an unbound placeholder through (values never)."""
        placeholder = any(p.secret == e.secret and p.placeholder for p in self._guard.patterns) and not any(
            p.secret == e.secret for p in self._values.patterns
        )
        reason = Reason.SECRET_NOT_BOUND if placeholder else Reason.SECRET_VALUE_OUTBOUND
        decision = deny(self.rt.policy, reason) if placeholder else Decision(Verdict.DENIED, reason)
        info = FlowInfo(self.info.host, self.info.port, decision, tls=self.info.tls, secret=e.secret,
                        detail="in a WebSocket message to the upstream")  # fmt: skip
        self.rt.record(info, "GET", self.path)
        if decision.forwards and self._outbound.scrubber is not None:
            # Report mode: from now on only real values are refused; what was held goes on.
            held = self._outbound.scrubber.take_held()
            self._guard = self._values
            self._outbound.scrubber = (
                SegmentedScrubber(self._values, lambda _: None, replace=False) if self._values else None
            )
            if held:
                self._to_upstream(BytesMessage(data=held, message_finished=False))
            return False
        self._violation()
        return True

    # -- upstream -> agent ------------------------------------------------------------------------------
    def upstream_data(self, data: bytes) -> None:
        if self._closed:
            return
        try:
            self.upstream.receive_data(data)
        except LocalProtocolError:
            self._end()
            return
        if self._from_upstream is None:  # (else a slice is due: it takes these frames too)
            self._upstream_frames(self.upstream.events())

    def _upstream_frames(self, events: Iterator[Event]) -> None:
        """The upstream's frames, a slice at a time (see SLICE_TIME)."""
        end = time.perf_counter() + SLICE_TIME
        for ev in events:
            if self._closed or self._closing_agent or self._upstream_event(ev):
                return
            if time.perf_counter() > end:
                self._from_upstream = events
                self.up.pause_reading()
                asyncio.get_running_loop().call_soon(self._next_upstream_slice)
                return
        self._from_upstream = None

    def _next_upstream_slice(self) -> None:
        events = self._from_upstream
        if events is None or self._closed:
            return
        self._upstream_frames(events)
        if self._from_upstream is None and not self._closed and not self._agent_full:
            self.up.resume_reading()

    def _upstream_event(self, ev: Event) -> bool:
        """One frame from the upstream; True once the socket is closed for it."""
        if self._epoch != self.rt.epoch:
            self._epoch = self.rt.epoch
            host, port = self.info.host, self.info.port
            if host is not None and port is not None and not self.rt.bound_values(host, port) <= self._scrub_values:
                log.warning(
                    json.dumps({"event": "redaction", "secret": None, "detail": _BOUND_GREW, "action": "closed"})
                )
                self.rt.record(FlowInfo(host, port, Decision(Verdict.DENIED, Reason.SECRET_VALUE_INBOUND),
                                        tls=self.info.tls, detail=f"in a WebSocket from the upstream: {_BOUND_GREW}"),
                               "GET", self.path)  # fmt: skip
                self._violation()
                return True
        try:
            if isinstance(ev, Message):
                self._inbound.message(ev)
            elif isinstance(ev, Ping | Pong):
                payload = self._field(bytes(ev.payload))[:125]
                if self._scrub:
                    self._control_in = self._check_control(self._scrub, self._control_in, payload)
                self._to_agent(type(ev)(payload=payload))
            elif isinstance(ev, CloseConnection):
                reason = self._field((ev.reason or "").encode()).decode(errors="replace")[:120]
                self._inbound.flush()
                if self.upstream.state is ConnectionState.REMOTE_CLOSING:
                    self._to_upstream(ev.response())
                self._close_agent(ev.code, reason or None)
        except ScrubRefused as e:
            log.warning(json.dumps({"event": "redaction", "secret": e.secret, "detail": e.detail, "action": "closed"}))
            if e.secret:
                self.rt.metrics.secret_redactions.labels(e.secret).inc()
            # The upgrade was recorded as allowed; this refusal is its own record, written
            # before the close goes to the agent (as for an HTTP response refused the same way).
            self.rt.record(FlowInfo(self.info.host, self.info.port, Decision(Verdict.DENIED, Reason.SECRET_VALUE_INBOUND),
                                    tls=self.info.tls, secret=e.secret or None,
                                    detail=f"in a WebSocket message from the upstream: {e.detail}"), "GET", self.path)  # fmt: skip
            self._violation()
            return True
        return False

    def _field(self, payload: bytes) -> bytes:
        if self._scrub is None or not payload:
            return payload
        return scrub_field(payload, self._scrub, self._hit)

    @staticmethod
    def _check_control(finder: Finder, previous: bytes, payload: bytes) -> bytes:
        """A control payload must hold no value (in any view), complete none begun in the previous
        one, and not end with what could begin one. Returns it, to check the next one against."""
        if not finder:
            return payload
        for text in (previous + payload, *views(previous + payload)):
            hit = finder.search(text)
            if hit is not None and hit.end > len(previous):
                raise ScrubRefused(hit.pattern.secret, "a real value in a WebSocket control frame")
        if finder.holdback(payload, PART_HOLD) >= MIN_HOLD:
            raise ScrubRefused("", "a WebSocket control frame ending with what could begin a real value")
        return payload

    # -- plumbing ---------------------------------------------------------------------------------------
    def _to_agent(self, event: Event) -> None:
        with contextlib.suppress(LocalProtocolError):  # that side is closing: nothing more goes there
            self.client.send(self.agent.send(event))

    def _to_upstream(self, event: Event) -> None:
        with contextlib.suppress(LocalProtocolError):
            self.up.send(self.upstream.send(event))

    def _violation(self) -> None:
        """Close both sides with 1008 (policy violation)."""
        self._to_upstream(CloseConnection(code=_POLICY_VIOLATION))
        self._close_agent(_POLICY_VIOLATION, "sandgate: policy violation")

    def _close_agent(self, code: int, reason: str | None) -> None:
        """The closing handshake toward the agent: our close frame, then its answer (or 2 s), then
        the connection. The upstream side is done at once: nothing more goes to or comes from it."""
        if self._closing_agent or self._closed:
            return
        self._closing_agent = True
        self._to_agent(CloseConnection(code=code, reason=reason))
        self.up.receiver = None
        self.up.close()
        asyncio.get_running_loop().call_later(2.0, self._end)

    def _end(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.client.close_lingering()
        self.up.receiver = None
        self.up.close()

    def _hit(self, secret: str) -> None:
        self.rt.metrics.secret_redactions.labels(secret).inc()
        log.warning(
            json.dumps({"event": "redaction", "secret": secret, "detail": "real value in a WebSocket message replaced"})
        )

    # -- connection events --------------------------------------------------------------------------------
    def agent_lost(self) -> None:
        events, self._from_agent = self._from_agent, None
        for ev in events or ():  # (frames that came before the end: relayed first, as they were read)
            if self._closed or self._agent_event(ev):
                break
        if not self._closed:
            self._to_upstream(CloseConnection(code=CloseReason.GOING_AWAY))
            self._end()

    def upstream_closed(self) -> None:
        events, self._from_upstream = self._from_upstream, None
        for ev in events or ():  # (frames that came before the end: relayed first, its close among them)
            if self._closed or self._closing_agent or self._upstream_event(ev):
                break
        if not self._closed:
            self._close_agent(CloseReason.GOING_AWAY, None)

    def upstream_write_paused(self, paused: bool) -> None:
        self._upstream_full = paused
        if paused:
            self.client.pause_reading()
        elif self._from_agent is None:  # (else the agent's last slice resumes it)
            self.client.resume_reading()

    def agent_write_paused(self, paused: bool) -> None:
        self._agent_full = paused
        if paused:
            self.up.pause_reading()
        elif self._from_upstream is None:  # (else the upstream's last slice resumes it)
            self.up.resume_reading()
