"""One JSON line per egress decision: the per-use record security teams ship to their SIEM.

The schema is versioned (``schema``) and published (docs/audit.md, docs/audit.schema.json). Fields
are fixed; strings are truncated and JSON-escaped, so a hostile host name cannot forge a line (F10).
Never a secret value, never a query string: secrets appear by name only. Each record names the
policy (and the SHA-256 of the file it was loaded from) and the pod, from the immutable fields the
injector passes to the sidecar (:mod:`proxy.identity`).
"""

from __future__ import annotations

import datetime
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TextIO

__all__ = ["SCHEMA", "AuditLog", "AuditRecord"]

SCHEMA = "sandgate.audit/v1"
_MAX = 256


def _clip(s: str | None) -> str | None:
    if s is None:
        return None
    return s if len(s) <= _MAX else s[:_MAX] + "..."


def _now() -> str:
    """RFC 3339, UTC, milliseconds."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(slots=True)
class AuditRecord:
    decision: str
    reason: str | None
    method: str | None
    host: str | None
    port: int | None
    path: str | None
    rule: int | None = None
    secrets: list[str] = field(default_factory=list)  # swapped, by name
    secret: str | None = None  # the secret a refusal is about
    detail: str | None = None  # fixed, value-free words
    policy: str | None = None
    policy_sha256: str | None = None

    def to_json(self, pod: Mapping[str, str | None]) -> str:
        return json.dumps(
            {
                "schema": SCHEMA,
                "time": _now(),
                "event": "egress",
                "decision": self.decision,
                "reason": self.reason,
                "method": _clip(self.method),
                "host": _clip(self.host),
                "port": self.port,
                "path": _clip(self.path),
                "rule": self.rule,
                "secrets": self.secrets,
                "secret": self.secret,
                "detail": self.detail,
                "policy": self.policy,
                "policy_sha256": self.policy_sha256,
                **{k: _clip(v) for k, v in pod.items()},
            },
            ensure_ascii=True,
            separators=(",", ":"),
        )


class AuditLog:
    """Audit lines on their own stream: stdout, or the ``--audit-log`` file (diagnostics go to
    stderr). ``pod``: the identity fields every record carries."""

    def __init__(
        self,
        stream: TextIO | None = None,
        pod: Mapping[str, str | None] | None = None,
        policy_sha256: str | None = None,
    ) -> None:
        self._stream = stream or sys.stdout
        self.pod = dict(pod or {})
        self.policy_sha256 = policy_sha256  # of the policy in force (swapped with it on reload)

    def write(self, record: AuditRecord) -> None:
        record.policy_sha256 = self.policy_sha256
        self._stream.write(record.to_json(self.pod) + "\n")
        self._stream.flush()
