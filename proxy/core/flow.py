"""What was decided about one request, and what later steps added to it: the record the data path
carries from the gate to the audit log (proxy.runtime.Runtime.record)."""

from __future__ import annotations

from dataclasses import dataclass

from proxy.policy.model import Decision, Verdict

__all__ = ["FlowInfo"]


@dataclass(slots=True)
class FlowInfo:
    """What was decided about one request, and what later steps added to it."""

    host: str | None
    port: int | None
    decision: Decision
    tls: bool
    swapped: list[str]
    secret: str | None
    detail: str | None
    status: int | None  # overrides the reason's usual HTTP status (431 for headers, 408 ...)
    audited: bool

    def __init__(  # (written out: see proxy.native, "Dataclasses")
        self,
        host: str | None,
        port: int | None,
        decision: Decision,
        tls: bool = False,
        swapped: list[str] | None = None,
        secret: str | None = None,
        detail: str | None = None,
        status: int | None = None,
        audited: bool = False,
    ) -> None:
        self.host, self.port, self.decision, self.tls = host, port, decision, tls
        self.swapped = [] if swapped is None else swapped
        self.secret, self.detail, self.status, self.audited = secret, detail, status, audited

    def again(self, detail: str) -> FlowInfo:
        """The record of this request sent once more (a retry): its decision and swaps, not yet
        recorded, ``detail`` saying why."""
        said = detail if self.detail is None else f"{self.detail}; {detail}"
        return FlowInfo(
            self.host, self.port, self.decision, self.tls, list(self.swapped), self.secret, said, self.status
        )

    def refine(self, later: Decision, secret: str | None, detail: str) -> bool:
        """Apply a later check's verdict; returns whether the request still goes on.

        A denial always wins. A report does not replace an earlier report: the recorded reason
        stays the one enforce mode would have given (the allowlist's, before any secret check), and
        so does the secret it names (enforce mode names the placeholder's secret on a refused
        CONNECT too), so report mode counts exfiltration attempts as enforce mode would."""
        if not later.forwards or self.decision.verdict is Verdict.ALLOWED:
            self.decision, self.secret, self.detail = later, secret, detail
        elif self.secret is None:
            self.secret = secret
        return self.decision.forwards
