"""State the addons share: the current policy (swapped atomically on reload), the secret store,
limits, metrics and audit. One instance per sidecar process."""

from __future__ import annotations

from dataclasses import dataclass, field

from proxy.audit import AuditLog, AuditRecord
from proxy.metrics import NO_REASON, Metrics
from proxy.netcheck import AddressPolicy
from proxy.policy.model import Decision, Policy, Reason, Verdict
from proxy.scrub import ScrubSpec, patterns_for
from proxy.secrets import SecretStore

_SECRET_REASONS = (
    Reason.SECRET_NOT_BOUND,
    Reason.SECRET_UNAVAILABLE,
    Reason.SECRET_INVALID,
    Reason.SECRET_VALUE_OUTBOUND,
)


@dataclass(frozen=True, slots=True)
class Limits:
    max_header_bytes: int = 64 * 1024
    max_request_body: int = 32 * 1024 * 1024
    max_connections: int = 512
    header_timeout: float = 30.0  # seconds from a request head's first byte to its end
    idle_timeout: float = 300.0  # seconds of silence before a connection is closed


@dataclass(slots=True)
class FlowInfo:
    """What the gate decided about one request; later addons read and extend it (flow.metadata)."""

    host: str | None
    port: int | None
    decision: Decision
    tls: bool = False
    swapped: list[str] = field(default_factory=list)
    secret: str | None = None
    detail: str | None = None
    status: int | None = None  # overrides the reason's usual HTTP status (431 for headers)
    audited: bool = False

    def refine(self, later: Decision, secret: str | None, detail: str) -> bool:
        """Apply a later check's verdict; returns whether the request still goes on.

        A denial always wins. A report does not replace an earlier report: the recorded reason
        stays the one enforce mode would have given (the allowlist's, before any secret check)."""
        if not later.forwards or self.decision.verdict is Verdict.ALLOWED:
            self.decision, self.secret, self.detail = later, secret, detail
        return self.decision.forwards


@dataclass(slots=True)
class Runtime:
    policy: Policy
    store: SecretStore
    metrics: Metrics
    audit: AuditLog
    addresses: AddressPolicy
    limits: Limits
    transparent: bool
    relay: tuple[str, int] | None = None  # see proxy.relay: names resolve there and every dial goes through it
    _spec: ScrubSpec = field(default_factory=lambda: ScrubSpec({}))
    _spec_key: object = None

    def spec(self) -> ScrubSpec:
        """Compiled patterns of every real value held (and the ones they replaced), in all the
        encodings we look for. Called on every request: rebuilt only after the store loaded or the
        policy was swapped, never recomputed per request."""
        key = (self.store.generation, id(self.policy))
        if key != self._spec_key:
            placeholders = {s.name: s.placeholder for s in self.policy.secrets}
            self._spec = ScrubSpec(patterns_for(self.store.scrub_values(), placeholders))
            self._spec_key = key
        return self._spec

    def record(self, info: FlowInfo, method: str | None, path: str | None) -> None:
        """Count and audit one decision, exactly once."""
        if info.audited:
            return
        info.audited = True
        d = info.decision
        reason = d.reason.value if d.reason else None
        self.metrics.egress_requests.labels(d.verdict.value, reason or NO_REASON).inc()
        if d.reason in _SECRET_REASONS and info.secret:
            self.metrics.secret_blocked.labels(info.secret, d.reason.value).inc()
        if d.forwards and info.host is not None and info.port is not None:
            for name in info.swapped:
                self.metrics.secret_swaps.labels(
                    name, info.host if info.port == 443 else f"{info.host}:{info.port}"
                ).inc()
        self.audit.write(
            AuditRecord(
                decision=d.verdict.value,
                reason=reason,
                method=method,
                host=info.host,
                port=info.port,
                path=path,
                rule=d.rule,
                secrets=list(info.swapped),
                secret=info.secret,
                detail=info.detail,
                policy=self.policy.name,
            )
        )
