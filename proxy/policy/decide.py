"""``decide(policy, facts) -> Decision``: the allowlist verdict for one request, default deny.

Pure and total: it never raises for any input that reached it (hosts are canonical by then).
The same function judges a CONNECT (no method/path yet) and each request inside the tunnel.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from proxy.policy.model import Decision, Mode, Policy, Reason, Verdict

__all__ = ["RequestFacts", "allowed", "decide", "deny", "path_is_ambiguous"]

# Dot segments and encoded dots/slashes/backslashes can make an upstream route a path differently
# from how a glob reads it ("/v1/../admin", "/v1/%2e%2e/admin"): such paths never match a path rule.
# A segment is read up to its parameters, as Tomcat, Jetty and Spring read it: "/v1/..;x/admin" is
# their "/admin" (red team 43).
_AMBIGUOUS_PATH = re.compile(r"(^|/)\.{1,2}(?:(?:;|%3b)[^/]*)?(/|$)|%2e|%2f|%5c|\\", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class RequestFacts:
    host: str  # canonical (proxy.policy.hosts.canonical_host)
    port: int
    method: str | None = None  # None while only the destination is known (CONNECT, ClientHello)
    path: str | None = None  # without the query


def path_is_ambiguous(path: str) -> bool:
    return _AMBIGUOUS_PATH.search(path) is not None


_ALLOWED: dict[int | None, Decision] = {}  # one (immutable) decision a rule index: bounded by the policy's size


def allowed(rule: int | None) -> Decision:
    decision = _ALLOWED.get(rule)
    if decision is None:
        decision = Decision(Verdict.ALLOWED, None, rule)
        if len(_ALLOWED) < 4096:
            _ALLOWED[rule] = decision
    return decision


def deny(policy: Policy | None, reason: Reason, rule: int | None = None) -> Decision:
    """Deny, or only report when the policy is in report mode and the reason is reportable."""
    if policy is not None and policy.mode is Mode.REPORT and reason.reportable:
        return Decision(Verdict.REPORTED, reason, rule)
    return Decision(Verdict.DENIED, reason, rule)


def decide(policy: Policy, facts: RequestFacts) -> Decision:
    by_host = policy.rules_for(facts.host)
    if not by_host:
        return deny(policy, Reason.HOST_NOT_ALLOWED)
    by_port = [r for r in by_host if facts.port in r.ports]
    if not by_port:
        return deny(policy, Reason.PORT_NOT_ALLOWED)
    if facts.method is None:
        return allowed(by_port[0].index)
    by_method = [r for r in by_port if r.methods is None or facts.method in r.methods]
    if not by_method:
        return deny(policy, Reason.METHOD_NOT_ALLOWED)
    path = facts.path or "/"
    for rule in by_method:
        if rule.paths is None:
            return allowed(rule.index)
        if not path_is_ambiguous(path) and rule.matches_path(path):
            return allowed(rule.index)
    return deny(policy, Reason.PATH_NOT_ALLOWED)
