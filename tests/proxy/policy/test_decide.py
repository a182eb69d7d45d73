"""decide(): default deny, wildcard boundaries, ports, methods, paths, report mode (A05, A07, A19, A20)."""

from __future__ import annotations

import urllib.parse

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.policy.decide import RequestFacts, decide, overridden, path_is_ambiguous
from proxy.policy.load import parse_policy
from proxy.policy.model import Reason, Verdict
from proxy.policy.override import query_methods

POLICY = parse_policy("""
apiVersion: sandgate.dev/v1alpha1
kind: EgressPolicy
metadata: {name: d}
spec:
  allow:
    - host: api.openai.com
      methods: [GET, POST]
      paths: ["/v1/*"]
    - host: "*.example.com"
      ports: [443, 8443]
    - host: 10.20.30.40
""")


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("x.example.com", True), ("a.b.example.com", True), ("example.com", False), ("evil-example.com", False),
        ("evilexample.com", False), ("example.com.attacker.test", False), ("xexample.com", False),
    ],
)  # fmt: skip
def test_a05_wildcard_boundaries(host: str, allowed: bool) -> None:
    d = decide(POLICY, RequestFacts(host, 443))
    assert (d.verdict is Verdict.ALLOWED) is allowed
    if not allowed:
        assert d.reason is Reason.HOST_NOT_ALLOWED


@pytest.mark.parametrize(
    ("facts", "reason"),
    [
        (RequestFacts("api.openai.com", 443, "POST", "/v1/chat"), None),
        (RequestFacts("api.openai.com", 443, "DELETE", "/v1/chat"), Reason.METHOD_NOT_ALLOWED),
        (RequestFacts("api.openai.com", 443, "GET", "/admin"), Reason.PATH_NOT_ALLOWED),
        (RequestFacts("api.openai.com", 443, "GET", "/v1/../admin"), Reason.PATH_NOT_ALLOWED),
        (RequestFacts("api.openai.com", 443, "GET", "/v1/%2e%2e/admin"), Reason.PATH_NOT_ALLOWED),
        (RequestFacts("api.openai.com", 8443), Reason.PORT_NOT_ALLOWED),
        (RequestFacts("x.example.com", 8443, "DELETE", "/anything"), None),
        (RequestFacts("10.20.30.40", 443), None),
        (RequestFacts("10.20.30.41", 443), Reason.HOST_NOT_ALLOWED),
        (RequestFacts("apixopenai.com", 443), Reason.HOST_NOT_ALLOWED),
    ],
)
def test_a07_decisions_by_port_method_and_path(facts: RequestFacts, reason: Reason | None) -> None:
    d = decide(POLICY, facts)
    assert d.reason is reason
    assert (d.verdict is Verdict.ALLOWED) is (reason is None)


def test_a19_empty_allowlist_denies_everything() -> None:
    empty = parse_policy(
        "apiVersion: sandgate.dev/v1alpha1\nkind: EgressPolicy\nmetadata: {name: e}\nspec: {allow: []}"
    )
    assert decide(empty, RequestFacts("api.openai.com", 443, "GET", "/")).reason is Reason.HOST_NOT_ALLOWED


def test_report_mode_reports_allowlist_misses_instead_of_denying() -> None:
    report = parse_policy(
        "apiVersion: sandgate.dev/v1alpha1\nkind: EgressPolicy\nmetadata: {name: r}\nspec: {mode: report, allow: []}"
    )
    d = decide(report, RequestFacts("anything.test", 443, "GET", "/"))
    assert d.verdict is Verdict.REPORTED and d.reason is Reason.HOST_NOT_ALLOWED and d.forwards


@given(
    st.lists(st.from_regex(r"[a-z]{1,8}\.(com|net|org)", fullmatch=True), min_size=1, max_size=200, unique=True),
    st.data(),
)
def test_a20_large_allowlists_match_exactly_their_entries(hosts: list[str], data: st.DataObject) -> None:
    text = "apiVersion: sandgate.dev/v1alpha1\nkind: EgressPolicy\nmetadata: {name: big}\nspec:\n  allow:\n"
    text += "".join(f"    - host: {h}\n" for h in hosts)
    p = parse_policy(text)
    member = data.draw(st.sampled_from(hosts))
    assert decide(p, RequestFacts(member, 443)).verdict is Verdict.ALLOWED
    outsider = data.draw(st.from_regex(r"[a-z]{1,8}\.(com|net|org)", fullmatch=True).filter(lambda h: h not in hosts))
    assert decide(p, RequestFacts(outsider, 443)).reason is Reason.HOST_NOT_ALLOWED


_HOSTS = st.sampled_from(
    ["api.example.com", "example.com", "a.b.example.com", "x.example.org", "example.org", "10.0.0.1"]
)


@given(
    rules=st.lists(
        st.tuples(st.sampled_from(["api.example.com", "example.com", "*.example.com", "*.b.example.com",
                                   "x.example.org", "*.example.org", "10.0.0.1"]),
                  st.sampled_from([443, 8443])),
        min_size=1, max_size=8,
    ),
    host=_HOSTS,
)  # fmt: skip
def test_rules_for_a_host_are_the_linear_scan_in_policy_order(rules: list[tuple[str, int]], host: str) -> None:
    """The host index decide() uses finds what reading every rule in order would: the same rules,
    the same order (the first matching rule is the one a decision names)."""
    allow = "".join(f'    - {{host: "{h}", ports: [{p}]}}\n' for h, p in rules)
    policy = parse_policy(
        f"apiVersion: sandgate.dev/v1alpha1\nkind: EgressPolicy\nmetadata: {{name: i}}\nspec:\n  allow:\n{allow}"
    )
    assert policy.rules_for(host) == [r for r in policy.allow if r.matches_host(host)]
    for port in (443, 8443):
        expected = next((r.index for r in policy.allow if r.matches_host(host) and port in r.ports), None)
        assert decide(policy, RequestFacts(host, port)).rule == expected


_SEGMENTS = ["a", "v1", ".", "..", ".;", "..;", "..;x=1", ".;y", "..%3b", "..%3Bz", "%2e", "%2E%2e", "a;b", "a%3bb",
             "...", ".a", "a..", ";", "%3b", "..%2f", "%5c..", "x%20y"]  # fmt: skip


@given(st.lists(st.sampled_from(_SEGMENTS), min_size=1, max_size=6), st.booleans())
def test_a_path_not_ambiguous_has_no_dot_segment_as_servlet_containers_read_it(
    segments: list[str], slash: bool
) -> None:
    """Tomcat, Jetty and Spring read a segment up to its parameters (``;``), decoded: a path the
    check lets a glob judge holds no ``.`` or ``..`` segment read so (``/v1/..;/admin`` is their
    ``/admin``: red team 43)."""
    path = "/" + "/".join(segments) + ("/" if slash else "")
    read = [urllib.parse.unquote(s.split(";", 1)[0]) for s in path.split("/")]
    if any(s in (".", "..") for s in read):
        assert path_is_ambiguous(path), path


# How servers read a path segment beyond one percent-decoding: decoded twice, IIS's %uXXXX,
# Unicode compatibility normalisation (NFKC), overlong UTF-8 as a lenient decoder reads it, a C
# string ended at NUL, Windows trimming trailing dots and blanks. Each turns these into '.'.
_DOT_FORMS = ["%2e", "%252e", "%25252e", "%u002e", "%U002E", "%ef%bc%8e", "\uff0e", "%e2%80%a4", "%c0%ae", ".%00"]


def _server_readings(segment: str) -> set[str]:
    import re
    import unicodedata

    once = urllib.parse.unquote(segment, errors="replace")
    readings = {segment, once, urllib.parse.unquote(once, errors="replace")}
    readings |= {re.sub(r"%u([0-9a-f]{4})", lambda m: chr(int(m.group(1), 16)), r, flags=re.I) for r in set(readings)}
    readings |= {r.replace("\xc0\xae", ".") for r in {urllib.parse.unquote(segment, encoding="latin-1")}}
    readings |= {unicodedata.normalize("NFKC", r) for r in set(readings)}
    readings |= {r.split("\x00", 1)[0] + "." if "\x00" in r else r for r in set(readings)}
    return {r.split(";", 1)[0].rstrip(". ") or r.split(";", 1)[0] for r in readings}


@given(
    st.lists(st.sampled_from(["a", "v1", ".", *_DOT_FORMS]), min_size=1, max_size=3), st.sampled_from(["", " ", "."])
)
def test_a_dot_segment_in_any_servers_reading_makes_a_path_ambiguous(parts: list[str], tail: str) -> None:
    """Red team 64: a segment a server reads as ``.`` or ``..`` (any reading above) never lets a
    path rule match: the glob reads it as text, the server as a step up."""
    segment = "".join(parts) + tail
    if {".", ".."} & _server_readings(segment) or set(segment) == {"."}:
        assert path_is_ambiguous(f"/v1/{segment}/admin"), segment


@pytest.mark.parametrize(
    "path",
    ["/v1/chat/completions", "/v1/files/caf%C3%A9.txt", "/v1/a%20b", "/v1/.well-known/x", "/v1/file.", "/v1/a.b/c",
     "/v1/%41", "/v1/x-y_z~"],
)  # fmt: skip
def test_ordinary_paths_are_not_ambiguous(path: str) -> None:
    assert not path_is_ambiguous(path)


OVERRIDE_POLICY = parse_policy("""
apiVersion: sandgate.dev/v1alpha1
kind: EgressPolicy
metadata: {name: o}
spec:
  allow:
    - host: api.openai.com
      methods: [GET, POST]
    - host: any.example.com
""")


@pytest.mark.parametrize(
    ("host", "query", "reason"),
    [
        ("api.openai.com", "_method=DELETE", Reason.METHOD_NOT_ALLOWED),
        ("api.openai.com", "a=1&_method=delete", Reason.METHOD_NOT_ALLOWED),
        ("api.openai.com", "%5Fmethod=PUT", Reason.METHOD_NOT_ALLOWED),
        ("api.openai.com", "_method=GET", None),
        ("api.openai.com", "method=DELETE", None),  # (not the override's name)
        ("api.openai.com", "", None),
        ("any.example.com", "_method=DELETE", None),  # (no method rule there)
    ],
)
def test_a_method_a_query_names_is_judged_too(host: str, query: str, reason: Reason | None) -> None:
    facts = RequestFacts(host, 443, "POST", "/x")
    decision = overridden(OVERRIDE_POLICY, facts, query_methods(query), decide(OVERRIDE_POLICY, facts))
    assert decision.reason is reason
