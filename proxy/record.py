"""Each decision counted and written to the audit log, exactly once: the bookkeeping the data path
does for every request, in a compiled module (see :mod:`proxy.native`).

:class:`Counts` holds a labelled counter's series (``proxy.metrics.LoopCounter`` exposes them to
Prometheus); :class:`Recorder` counts a decision in them and writes its audit record, with nothing
in the record that carries a value the proxy holds (the runtime's redaction, asked only when a
field holds one).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable

from proxy.audit import AuditLog, AuditRecord
from proxy.core.finder import Finder
from proxy.core.flow import FlowInfo
from proxy.core.scrub import fields_clean
from proxy.policy.model import Verdict, host_label

__all__ = ["NO_REASON", "Buckets", "Counts", "Recorder"]

NO_REASON = "none"  # the reason label of allowed requests

Redact = Callable[[str | None, str | None, str | None, str | None], tuple[str | None, ...]]


class Counts:
    """A labelled counter's series, by their label values: counted on the event loop's thread
    only (see ``proxy.metrics.OneThreadMetric``), so a count is one dict update."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, ...], int] = {}

    def inc(self, labels: tuple[str, ...]) -> None:
        values = self.values
        values[labels] = values.get(labels, 0) + 1


class Buckets:
    """A histogram's observations by bucket, and their sum: observed on the event loop's thread only
    (see ``proxy.metrics.OneThreadMetric``). ``bounds``: the buckets' upper bounds, ascending; a
    value equal to a bound is counted in that bound's bucket (Prometheus' ``le``), a value above
    every bound in the last one (+Inf only)."""

    def __init__(self, bounds: list[float]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value


class Recorder:
    """Counts a decision in ``requests`` (decision, reason), ``blocked`` (secret, reason: a refusal
    about a secret) and ``swaps`` (secret, host label: each swap of a forwarded request), and
    writes its record to ``audit``. ``redact``: the runtime's, of (method, host, path, detail),
    asked when one of them holds a value ``held`` finds; ``policy``: the name the record gives.
    The runtime sets ``held`` and ``policy`` as it serves a policy or values."""

    def __init__(
        self,
        requests: Counts,
        blocked: Counts,
        swaps: Counts,
        audit: AuditLog,
        redact: Redact,
        held: Finder,
        policy: str,
    ) -> None:
        self.requests = requests
        self.blocked = blocked
        self.swaps = swaps
        self.audit = audit
        self.redact = redact
        self.held = held  # the finder of every value the proxy holds (the runtime's, swapped with it)
        self.policy = policy  # the served policy's name (likewise)

    def record(self, info: FlowInfo, method: str | None, path: str | None) -> None:
        """Count and audit ``info``'s decision, once (``info.audited`` says it was)."""
        if info.audited:
            return
        info.audited = True
        d = info.decision
        # (str(): the enums are StrEnums, and their value as a plain str is their str(), in C,
        # where .value is two calls into Python)
        verdict = str(d.verdict)
        reason = None if d.reason is None else str(d.reason)
        self.requests.inc((verdict, NO_REASON if reason is None else reason))
        secret = info.secret
        if reason is not None and secret:
            self.blocked.inc((secret, reason))
        host, port = info.host, info.port
        if d.verdict is not Verdict.DENIED and host is not None and port is not None and info.swapped:
            label = host_label(host, port)
            for name in info.swapped:
                self.swaps.inc((name, label))
        detail = info.detail
        fields = [t.encode("utf-8", "surrogateescape") for t in (method, host, path, detail) if t]
        if host:  # (lower-cased by the proxy: a form a name held upper-cased, base32's, is read so too)
            fields.append(host.upper().encode("utf-8", "surrogateescape"))
        held = self.held
        if fields and held.patterns and not fields_clean(held, fields):
            method, host, path, detail = self.redact(method, host, path, detail)
        self.audit.write(
            AuditRecord(
                decision=verdict,
                reason=reason,
                method=method,
                host=host,
                port=port,
                path=path,
                rule=d.rule,
                secrets=list(info.swapped),
                secret=secret,
                detail=detail,
                policy=self.policy,
            )
        )
