"""One JSON line per egress decision: what security teams grep and ship to their SIEM.

Fields are fixed; strings are truncated and JSON-escaped, so a hostile host name cannot forge a
line (F10). Never a secret value, never a query string: secrets appear by name only.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from typing import TextIO

__all__ = ["AuditLog", "AuditRecord"]

_MAX = 256


def _clip(s: str | None) -> str | None:
    if s is None:
        return None
    return s if len(s) <= _MAX else s[:_MAX] + "..."


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
    secret: str | None = None  # the secret a secret_* denial is about
    detail: str | None = None  # fixed, value-free words
    policy: str | None = None

    def to_json(self) -> str:
        return json.dumps(
            {
                "ts": round(time.time(), 3),
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
            },
            ensure_ascii=True,
            separators=(",", ":"),
        )


class AuditLog:
    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stderr

    def write(self, record: AuditRecord) -> None:
        self._stream.write(record.to_json() + "\n")
        self._stream.flush()
