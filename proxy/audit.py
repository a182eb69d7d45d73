"""One JSON line per egress decision: the per-use record security teams ship to their SIEM.

The schema is versioned (``schema``) and published (docs/audit.md, docs/audit.schema.json). Fields
are fixed; strings are truncated and JSON-escaped, so a hostile host name cannot forge a line (F10).
Never a secret value, never a query string: secrets appear by name only. Each record names the
policy (and the SHA-256 of the file it was loaded from) and the pod, from the immutable fields the
injector passes to the sidecar (:mod:`proxy.identity`).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TextIO

from proxy.sink import Sink

__all__ = ["SCHEMA", "AuditLog", "AuditRecord"]

SCHEMA = "sandgate.audit/v1"
_MAX = 256


def _clip(s: str | None) -> str | None:
    if s is None:
        return None
    return s if len(s) <= _MAX else s[:_MAX] + "..."


_ENCODE = json.JSONEncoder(ensure_ascii=True, separators=(",", ":")).encode
_QUOTE = json.encoder.encode_basestring_ascii  # a str as a JSON string literal, ASCII only
_second: tuple[int, str] = (-1, "")
_milli: tuple[int, str] = (-1, "")
_MILLIS = [f".{n:03d}Z" for n in range(1000)]  # (formatting the milliseconds was half of _now)


def _now() -> str:
    """RFC 3339, UTC, milliseconds (the formatted millisecond and second reused while they last:
    under load several records share one)."""
    global _second, _milli
    ms = time.time_ns() // 1_000_000
    if _milli[0] == ms:
        return _milli[1]
    sec, frac = divmod(ms, 1000)
    if _second[0] != sec:
        _second = (sec, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)))
    _milli = (ms, _second[1] + _MILLIS[frac])
    return _milli[1]


@dataclass(slots=True)
class AuditRecord:
    decision: str
    reason: str | None
    method: str | None
    host: str | None
    port: int | None
    path: str | None
    rule: int | None
    secrets: list[str]  # swapped, by name
    secret: str | None  # the secret a refusal is about
    detail: str | None  # fixed, value-free words
    policy: str | None
    policy_sha256: str | None

    def __init__(  # (written out: see proxy.native, "Dataclasses")
        self,
        decision: str,
        reason: str | None,
        method: str | None,
        host: str | None,
        port: int | None,
        path: str | None,
        rule: int | None = None,
        secrets: list[str] | None = None,
        secret: str | None = None,
        detail: str | None = None,
        policy: str | None = None,
        policy_sha256: str | None = None,
    ) -> None:
        self.decision = decision
        self.reason = reason
        self.method = method
        self.host = host
        self.port = port
        self.path = path
        self.rule = rule
        self.secrets = [] if secrets is None else secrets
        self.secret = secret
        self.detail = detail
        self.policy = policy
        self.policy_sha256 = policy_sha256

    def to_json(self, pod: Mapping[str, str | None]) -> str:
        return self.encode(pod_fields(pod))

    def encode(self, pod_json: str) -> str:
        """The record's line, ``pod_json`` (from :func:`pod_fields`) spliced in at its end. Built
        field by field with the json module's string encoder (ASCII, every control character
        escaped): what ``json.dumps(..., ensure_ascii=True)`` gives, at a fraction of its cost."""
        return self.members() + tail(self.policy, self.policy_sha256, pod_json)

    def members(self) -> str:
        """The line up to its policy's members (see :func:`tail`)."""
        q = _QUOTE
        return (
            f'{{"schema":"{SCHEMA}","time":"{_now()}","event":"egress","decision":{q(self.decision)},'
            f'"reason":{_str(self.reason)},"method":{_str(_clip(self.method))},"host":{_str(_clip(self.host))},'
            f'"port":{_int(self.port)},"path":{_str(_clip(self.path))},"rule":{_int(self.rule)},'
            f'"secrets":[{",".join(map(q, self.secrets))}],"secret":{_str(self.secret)},'
            f'"detail":{_str(self.detail)},'
        )


def tail(policy: str | None, policy_sha256: str | None, pod_json: str) -> str:
    """The end of a record's line: the policy's members and the pod's, the same in every record
    until a reload (so :class:`AuditLog` encodes it once per policy)."""
    return f'"policy":{_str(policy)},"policy_sha256":{_str(policy_sha256)}{pod_json}}}'


def _str(v: str | None) -> str:
    return "null" if v is None else _QUOTE(v)


def _int(v: int | None) -> str:
    return "null" if v is None else str(int(v))


def pod_fields(pod: Mapping[str, str | None]) -> str:
    """The pod's identity fields as JSON members, each preceded by a comma: the same in every
    record of a process, so encoded once."""
    members = _ENCODE({k: _clip(v) for k, v in pod.items()})[1:-1]
    return "," + members if members else ""


class AuditLog:
    """Audit lines on their own stream: stdout, or the ``--audit-log`` file (diagnostics go to
    stderr). ``pod``: the identity fields every record carries.

    ``stream``: a :class:`~proxy.sink.Sink` (what the sidecar uses: never blocks the event loop;
    see there what happens to records a stream does not take), or a text stream (written and
    flushed as it is, for tools and tests; ``on_error`` is told of what fails, else it raises)."""

    def __init__(
        self,
        stream: TextIO | Sink | None = None,
        pod: Mapping[str, str | None] | None = None,
        policy_sha256: str | None = None,
        on_error: Callable[[Exception], None] | None = None,
    ) -> None:
        self.sink: Sink | _TextStream = (
            stream if isinstance(stream, Sink) else _TextStream(stream or sys.stdout, on_error)
        )
        self.pod = dict(pod or {})
        self._pod_json = pod_fields(self.pod)
        self.policy_sha256 = policy_sha256  # of the policy in force (swapped with it on reload)
        self._flush_due = False
        self._lines: list[str] = []
        self._tail: tuple[str | None, str | None, str] = (None, None, "")

    def write(self, record: AuditRecord) -> None:
        """Write one record. Inside an event loop the stream is written once the loop's current
        round of callbacks is done (every record of a burst in one write); outside, at once."""
        sha = record.policy_sha256 = self.policy_sha256
        policy, known, end = self._tail
        if (policy, known) != (record.policy, sha) or not end:
            end = tail(record.policy, sha, self._pod_json) + "\n"
            self._tail = (record.policy, sha, end)
        self._lines.append(record.members() + end)
        if self._flush_due:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        self._flush_due = True
        loop.call_soon(self.flush_due)  # (the data path has usually flushed it by then: see flush_due)

    def flush_due(self) -> None:
        """:meth:`flush` if a record is waiting (the data path calls this before it sends the
        answers of a round, so a record is written before the answer it describes)."""
        if self._flush_due:
            self.flush()

    def flush(self) -> None:
        """Hand the records written since the last flush to the stream, in one write."""
        self._flush_due = False
        lines = self._lines
        if not lines:
            return
        self._lines = []
        # (ASCII by construction: every string went through the JSON encoder's ASCII escaping)
        self.sink.write("".join(lines).encode("ascii", "backslashreplace"), len(lines))


class _TextStream:
    """A text stream as an AuditLog's sink: written and flushed at once (it may block)."""

    def __init__(self, stream: TextIO, on_error: Callable[[Exception], None] | None) -> None:
        self._stream = stream
        self._on_error = on_error  # a write that failed (disk full, closed pipe): counted and logged

    def write(self, data: bytes, lines: int = 1) -> None:
        try:
            self._stream.write(data.decode("ascii"))
            self._stream.flush()
        except (OSError, ValueError) as e:
            if self._on_error is None:
                raise
            self._on_error(e)
