"""``decide(policy, facts) -> Decision``: the allowlist verdict for one request, default deny.

Pure and total: it never raises for any input that reached it (hosts are canonical by then).
The same function judges a CONNECT (no method/path yet) and each request inside the tunnel.
"""

from __future__ import annotations

import re
import unicodedata
import urllib.parse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from proxy.policy.model import Decision, Mode, Policy, Reason, Verdict
from proxy.policy.override import PROBE, body_names_methods

__all__ = [
    "RequestFacts",
    "allowed",
    "decide",
    "deny",
    "method_matters",
    "overridden",
    "path_is_ambiguous",
    "reads_body_method",
]

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


# A '%' that starts no escape (IIS reads "%u002e" as '.'), an escaped '%' (a server that decodes twice
# reads "%252e%252e" as ".."), an escaped control character (".%00." ends a C string after '.').
_AMBIGUOUS_ESCAPE = re.compile(r"%(?![0-9a-f]{2})|%25|%[01][0-9a-f]|%7f", re.IGNORECASE)
_ROUTING = frozenset("./\\%")  # what, decoded or normalised, changes how a path routes


def path_is_ambiguous(path: str) -> bool:
    """Whether an upstream may route ``path`` otherwise than a glob reads it, so that no path rule
    matches it: a dot segment (also with parameters, ``..;x``; also of more dots or with trailing
    blanks, ``...``, ``.. ``, which Windows servers trim to ``..``), an encoded '.', '/' or '\\',
    a backslash, and (red team 64) what a server decodes again or otherwise: an escaped '%', a '%'
    that starts no escape (``%u002e``), an escaped control character, bytes that are no UTF-8
    (``%c0%ae``, an overlong '.'), or characters that Unicode compatibility normalisation (NFKC)
    turns into '.', '/', '\\' or '%' (a full-width full stop, ``%ef%bc%8e``)."""
    if _AMBIGUOUS_PATH.search(path) is not None:
        return True
    if path.isascii() and "%" not in path:
        return _dot_segment(path)
    if _AMBIGUOUS_ESCAPE.search(path) is not None:
        return True
    try:
        text = urllib.parse.unquote_to_bytes(path).decode("utf-8")
    except UnicodeDecodeError:
        return True
    if any(c < " " or c == "\x7f" for c in text):
        return True
    normal = unicodedata.normalize("NFKC", text)
    if sum(c in _ROUTING for c in normal) != sum(c in _ROUTING for c in text):
        return True
    return _dot_segment(text)


def _dot_segment(text: str) -> bool:
    """A segment (up to its parameters) of dots alone once trailing blanks and dots are trimmed."""
    for segment in text.split("/"):
        head = segment.split(";", 1)[0]
        if head and head.strip(". ") == "" and "." in head:
            return True
    return False


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


def overridden(policy: Policy, facts: RequestFacts, methods: Iterable[str], decision: Decision) -> Decision:
    """``decision`` (:func:`decide`'s of ``facts``), unless one of ``methods``, the methods the
    request names for itself in a ``_method`` parameter (:mod:`proxy.policy.override`: its query,
    or a POST's body), is one the policy would not let through: then that refusal. (Red team 64:
    a rule of ``methods: [GET, POST]`` let ``POST ...?_method=DELETE`` through with the key.)"""
    if not decision.forwards:
        return decision
    for method in methods:
        other = decide(policy, RequestFacts(facts.host, facts.port, method, facts.path))
        if not other.forwards:
            return other
        if other.verdict is not Verdict.ALLOWED and decision.verdict is Verdict.ALLOWED:
            decision = other  # report mode: reported as enforce mode would refuse it
    return decision


def method_matters(policy: Policy, facts: RequestFacts) -> bool:
    """Whether some method, by its name alone, is refused for ``facts``' destination and path
    (any rule that allows it lists its methods): then a method a request names for itself must be
    judged, and a POST body that may name one is held whole and read before it leaves. Decided
    with a name no rule can list: a rule it passes passes every method."""
    if not policy.lists_methods:
        return False  # (the common case, answered without deciding)
    return not decide(policy, RequestFacts(facts.host, facts.port, PROBE, facts.path)).forwards


def reads_body_method(policy: Policy, facts: RequestFacts, content_types: Sequence[str]) -> bool:
    """Whether the body of the request of ``facts`` (its Content-Type field values) must be read
    for a method it names (:mod:`proxy.policy.override`): a POST's that the frameworks parse, where
    the method matters (:func:`method_matters`). Such a body is held whole, also one that would
    otherwise stream (chunked, or past the size held), up to the request body limit."""
    return facts.method == "POST" and method_matters(policy, facts) and body_names_methods(content_types)
