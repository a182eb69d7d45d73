"""A WebSocket after the handshake: frames relayed both ways, checked both ways.

The handshake was an ordinary exchange (its swap happened in the handshake's slot; frames are never
swapped) with ``permessage-deflate`` stripped from the offer, so every frame is plain. Toward the
agent, when the handshake carried a real key, messages of both types are one scrubbed stream
(:class:`proxy.core.scrub.SegmentedScrubber`): a value inside a message, however fragmented, is
replaced; a value split over consecutive messages closes the socket (1008). Toward the upstream, a
real value or a placeholder of a secret not bound here closes it too. Control frames are scrubbed
as single fields. wsproto parses and builds the frames; nothing is kept once relayed (F07).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import TYPE_CHECKING

from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Event, Message, Ping, Pong, TextMessage
from wsproto.frame_protocol import CloseReason
from wsproto.utilities import LocalProtocolError

from proxy.core.scrub import ScrubRefused, SegmentedScrubber, scrub_field
from proxy.core.values import Finder
from proxy.policy.decide import deny
from proxy.policy.model import Decision, Reason, Verdict
from proxy.runtime import FlowInfo, Runtime

if TYPE_CHECKING:
    from proxy.datapath.client import Client
    from proxy.datapath.upstream import Upstream

log = logging.getLogger("sandgate.proxy")

__all__ = ["WebSocketRelay"]

_POLICY_VIOLATION = 1008


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
    ) -> None:
        self.client, self.up, self.rt, self.info, self.path = client, up, rt, info, path
        self.agent = Connection(ConnectionType.SERVER)  # we are the server toward the agent
        self.upstream = Connection(ConnectionType.CLIENT)  # and the client toward the upstream
        self._scrub = SegmentedScrubber(scrub, self._hit) if scrub else None
        self._values = SegmentedScrubber(rt.outbound, lambda _: None, replace=False) if rt.outbound else None
        self._placeholders = SegmentedScrubber(foreign, lambda _: None, replace=False) if foreign else None
        self._in_seq = 0  # messages toward the agent
        self._in_text: dict[int, bool] = {}  # message -> text?
        self._in_ended: set[int] = set()  # messages whose last frame arrived from the upstream
        self._agent_seq = 0  # the message being sent to the agent (all before it are finished)
        self._out_seq = 0
        self._closed = False

    # -- agent -> upstream ------------------------------------------------------------------------------
    def from_agent(self, data: bytes) -> None:
        if self._closed:
            return
        try:
            self.agent.receive_data(data)
        except LocalProtocolError:
            self._end()
            return
        for ev in self.agent.events():
            if self._closed:
                return
            if self._closing_agent:  # we sent our close frame: only the agent's answer matters now
                if isinstance(ev, CloseConnection):
                    self._end()
                continue
            if isinstance(ev, Message):
                payload = ev.data.encode() if isinstance(ev, TextMessage) else bytes(ev.data)
                if not self._check_outbound(payload, ev.message_finished):
                    return
                self._to_upstream(type(ev)(data=ev.data, message_finished=ev.message_finished))
                if ev.message_finished:
                    self._out_seq += 1
            elif isinstance(ev, Ping | Pong):
                if not self._check_outbound(bytes(ev.payload), True):
                    return
                self._to_upstream(ev)
            elif isinstance(ev, CloseConnection):
                self._to_upstream(CloseConnection(code=ev.code, reason=ev.reason))
                if self.agent.state is ConnectionState.REMOTE_CLOSING:
                    self._to_agent(ev.response())
                self._end()

    def _check_outbound(self, payload: bytes, finished: bool) -> bool:
        for guard, reason in ((self._values, Reason.SECRET_VALUE_OUTBOUND),
                              (self._placeholders, Reason.SECRET_NOT_BOUND)):  # fmt: skip
            if guard is None:
                continue
            try:
                guard.feed(payload, self._out_seq)
                if finished:
                    guard.end_segment()
                guard.take_held()  # frames are forwarded whole; the guard keeps only what it must see next
            except ScrubRefused as e:
                decision = (
                    Decision(Verdict.DENIED, reason)
                    if reason is Reason.SECRET_VALUE_OUTBOUND
                    else deny(self.rt.policy, reason)
                )
                info = FlowInfo(self.info.host, self.info.port, decision, tls=self.info.tls, secret=e.secret,
                                detail="in a WebSocket message to the upstream")  # fmt: skip
                self.rt.record(info, "GET", self.path)
                if decision.forwards:
                    self._placeholders = None  # report mode
                    continue
                self._violation()
                return False
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
        for ev in self.upstream.events():
            if self._closed:
                return
            try:
                if isinstance(ev, Message):
                    self._message_in(ev)
                elif isinstance(ev, Ping | Pong):
                    payload = self._field(bytes(ev.payload))[:125]
                    self._to_agent(type(ev)(payload=payload))
                elif isinstance(ev, CloseConnection):
                    reason = self._field((ev.reason or "").encode()).decode(errors="replace")[:120]
                    self._flush_in()
                    if self.upstream.state is ConnectionState.REMOTE_CLOSING:
                        self._to_upstream(ev.response())
                    self._close_agent(ev.code, reason or None)
            except ScrubRefused as e:
                log.warning(
                    json.dumps({"event": "redaction", "secret": e.secret, "detail": e.detail, "action": "closed"})
                )
                if e.secret:
                    self.rt.metrics.secret_redactions.labels(e.secret).inc()
                self._violation()
                return

    def _field(self, payload: bytes) -> bytes:
        if self._scrub is None or not payload:
            return payload
        return scrub_field(payload, self._scrub._finder, self._hit)

    def _message_in(self, ev: Message) -> None:  # type: ignore[type-arg]
        seq = self._in_seq
        text = isinstance(ev, TextMessage)
        self._in_text.setdefault(seq, text)
        payload = ev.data.encode() if text else bytes(ev.data)
        if ev.message_finished:
            self._in_seq += 1
            self._in_ended.add(seq)
        if self._scrub is None:
            self._send_in(seq, payload, ev.message_finished)
            return
        out = self._scrub.feed(payload, seq)
        if ev.message_finished:
            out += self._scrub.end_segment()
        self._emit(out)

    def _emit(self, out: list[tuple[int, bytes]]) -> None:
        """Send what the scrubber released, in message order; a message is finished toward the agent
        once its last frame came from the upstream and nothing of it is held back."""
        assert self._scrub is not None
        held = self._scrub.held_segments()
        for i, (seq, chunk) in enumerate(out):
            self._finish_before(seq)
            last = all(s != seq for s, _ in out[i + 1 :])
            final = last and seq in self._in_ended and seq not in held
            if chunk or final:
                self._send_in(seq, chunk, final)
        while self._agent_seq in self._in_ended and self._agent_seq not in held:
            self._send_in(self._agent_seq, b"", True)

    def _finish_before(self, seq: int) -> None:
        while self._agent_seq < seq:
            self._send_in(self._agent_seq, b"", True)

    def _send_in(self, seq: int, payload: bytes, finished: bool) -> None:
        text = self._in_text.get(seq, False)
        event: Message = (  # type: ignore[type-arg]
            TextMessage(data=payload.decode("utf-8"), message_finished=finished)
            if text
            else BytesMessage(data=payload, message_finished=finished)
        )
        self._to_agent(event)
        if finished:
            self._in_text.pop(seq, None)
            self._in_ended.discard(seq)
            self._agent_seq = seq + 1

    def _flush_in(self) -> None:
        if self._scrub is not None:
            self._emit(self._scrub.finish())

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

    _closing_agent = False

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
        if not self._closed:
            self._to_upstream(CloseConnection(code=CloseReason.GOING_AWAY))
            self._end()

    def upstream_closed(self) -> None:
        if not self._closed:
            self._close_agent(CloseReason.GOING_AWAY, None)

    def upstream_write_paused(self, paused: bool) -> None:
        if paused:
            self.client.pause_reading()
        else:
            self.client.resume_reading()

    def agent_write_paused(self, paused: bool) -> None:
        if paused:
            self.up.pause_reading()
        else:
            self.up.resume_reading()
