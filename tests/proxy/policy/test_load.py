"""Parsing and validating EgressPolicy documents (A06, A19, B09, B21): every error names the field
and the fix."""

from __future__ import annotations

import textwrap

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.policy.load import PolicyInvalid, default_placeholder, parse_policy
from proxy.policy.model import DEFAULT_SLOTS, Mode, Slot

BASE = """
apiVersion: sandgate.dev/v1alpha1
kind: EgressPolicy
metadata: {name: t}
spec:
"""


def policy(spec: str) -> str:
    return BASE + textwrap.indent(textwrap.dedent(spec), "  ")


def errors_of(text: str) -> list[str]:
    with pytest.raises(PolicyInvalid) as e:
        parse_policy(text)
    return [str(x) for x in e.value.errors]


def test_the_architecture_example_parses() -> None:
    p = parse_policy(
        policy("""
        mode: enforce
        allow:
          - host: api.openai.com
            ports: [443]
            methods: [GET, POST]
            paths: ["/v1/*"]
          - host: "*.githubusercontent.com"
          - host: 10.20.30.40
        secrets:
          - name: openai
            placeholder: sk-sandgate-openai
            source:
              vault: {mount: secret, path: agents/openai, key: api_key}
            hosts: [api.openai.com]
            headers: [authorization]
            query: false
            agentEnv: [OPENAI_API_KEY]
    """)
    )
    assert p.name == "t" and p.mode is Mode.ENFORCE and len(p.allow) == 3
    s = p.secrets[0]
    assert (s.source.vault_mount, s.source.vault_path, s.source.vault_key) == ("secret", "agents/openai", "api_key")
    assert p.allow[1].wildcard and p.allow[1].host == "githubusercontent.com"


@pytest.mark.parametrize(
    ("host", "fix"),
    [
        ("*", "bare wildcard"),
        ("*.", "write '*.example.com'"),
        ("*.com", "public suffix"),
        ("*.co.uk", "public suffix"),
        ("login.*.example.com", "whole first label"),
        ("**.example.com", "whole first label"),
        ("*example.com", "whole first label"),
        ("API.openai.com", "write 'api.openai.com'"),
        ("api.openai.com.", "write 'api.openai.com'"),
        ("тест.example.com", "write 'xn--e1aybc.example.com'"),
    ],
)
def test_a06_overbroad_or_noncanonical_hosts_are_rejected_with_the_fix(host: str, fix: str) -> None:
    errs = errors_of(policy(f"allow:\n  - host: {host!r}\n"))
    assert any(e.startswith("spec.allow[0].host:") and fix in e for e in errs), errs


def test_a19_empty_allowlist_is_valid_and_allows_nothing() -> None:
    assert parse_policy(policy("allow: []\n")).allow == ()


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("spec: {allow: [], bogus: 1}", "spec.bogus"),
        ("spec: {allow: [{host: a.example.com, port: 443}]}", "spec.allow[0].port"),
        ("spec: {allow: [{host: a.example.com, ports: [0]}]}", "spec.allow[0].ports"),
        ("spec: {allow: [{host: a.example.com, methods: [get]}]}", "spec.allow[0].methods"),
        ("spec: {allow: [{host: a.example.com, paths: [v1]}]}", "spec.allow[0].paths"),
        ("spec: {mode: audit, allow: []}", "spec.mode"),
        ("spec: {allow: 5}", "spec.allow"),
    ],
)
def test_a19_unknown_or_invalid_fields_name_the_field(text: str, field: str) -> None:
    doc = "apiVersion: sandgate.dev/v1alpha1\nkind: EgressPolicy\nmetadata: {name: t}\n" + text
    assert any(e.startswith((f"{field}:", f"{field}[")) for e in errors_of(doc))


def test_a19_invalid_yaml_and_wrong_kind() -> None:
    assert errors_of("a: [")[0].startswith("yaml:")
    errs = errors_of("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: t}\nspec: {allow: []}")
    assert any(e.startswith("apiVersion:") for e in errs) and any(e.startswith("kind:") for e in errs)


def test_a19_secret_bound_to_a_host_no_rule_covers_is_rejected_with_the_fix() -> None:
    errs = errors_of(
        policy("""
        allow: [{host: api.openai.com}]
        secrets:
          - {name: s, source: {env: X}, hosts: [other.example.com]}
          - {name: t, source: {env: Y}, hosts: ["api.openai.com:8443"]}
    """)
    )
    assert any("spec.secrets[0].hosts[0]" in e and "add '- host: other.example.com'" in e for e in errs)
    assert any("spec.secrets[1].hosts[0]" in e and "ports: [8443]" in e for e in errs)


def test_b21_wildcard_secret_bindings_are_rejected() -> None:
    errs = errors_of(
        policy("""
        allow: [{host: "*.example.com"}]
        secrets: [{name: s, source: {env: X}, hosts: ["*.example.com"]}]
    """)
    )
    assert any("spec.secrets[0].hosts[0]" in e and "never wildcards" in e for e in errs)


def test_b09_placeholders_must_not_contain_one_another() -> None:
    errs = errors_of(
        policy("""
        allow: [{host: a.example.com}]
        secrets:
          - {name: openai, placeholder: sk-PH-openai, source: {env: A}, hosts: [a.example.com]}
          - {name: openai-org, placeholder: sk-PH-openai_ORG, source: {env: B}, hosts: [a.example.com]}
          - {name: dup, placeholder: sk-PH-openai, source: {env: C}, hosts: [a.example.com]}
    """)
    )
    assert any("spec.secrets[1].placeholder" in e and "contains the placeholder of 'openai'" in e for e in errs)
    assert any("spec.secrets[2].placeholder" in e and "duplicate" in e for e in errs)


def test_secret_sources_need_exactly_one_kind() -> None:
    errs = errors_of(
        policy("""
        allow: [{host: a.example.com}]
        secrets:
          - {name: s, source: {env: X, file: /k}, hosts: [a.example.com]}
          - {name: t, source: {vault: {mount: secret}}, hosts: [a.example.com]}
    """)
    )
    assert any(e.startswith("spec.secrets[0].source:") and "exactly one" in e for e in errs)
    assert any(e.startswith("spec.secrets[1].source.vault.") for e in errs)


def test_default_placeholders_are_stable_distinctive_and_prefix_free() -> None:
    p = parse_policy(
        policy("""
        allow: [{host: a.example.com}]
        secrets:
          - {name: openai, source: {env: A}, hosts: [a.example.com]}
          - {name: openai-org, source: {env: B}, hosts: [a.example.com]}
    """)
    )
    a, b = (s.placeholder for s in p.secrets)
    assert a == default_placeholder("t", "openai") and a.startswith("sandgate-openai-")
    assert a not in b and b not in a


_yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 70000) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, derandomize=True, deadline=None)
@given(st.dictionaries(st.sampled_from(["mode", "allow", "secrets", "extra"]), _yaml_values, max_size=4))
def test_parser_fuzz_never_fails_except_with_policy_invalid(spec: dict[str, object]) -> None:
    doc = {"apiVersion": "sandgate.dev/v1alpha1", "kind": "EgressPolicy", "metadata": {"name": "f"}, "spec": spec}
    try:
        parse_policy(yaml.safe_dump(doc))
    except PolicyInvalid as e:
        assert e.errors and all(str(x) for x in e.errors)


def only_error(text: str) -> str:
    errs = errors_of(text)
    assert len(errs) == 1, errs
    return errs[0]


@pytest.mark.parametrize(
    ("host", "says"),
    [
        (
            "pypi.org:443",
            "spec.allow[0].host: a host has no port here: write 'pypi.org' and put the port in ports: [443]",
        ),
        ("[::1]:8443", "spec.allow[0].host: a host has no port here: write '::1' and put the port in ports: [8443]"),
        ("https://pypi.org", "spec.allow[0].host: a URL is not a host: write the bare host 'pypi.org'"),
        (
            "https://pypi.org:8443/simple",
            "write the bare host 'pypi.org' and put the port in ports: [8443], and the path in paths: ['/simple']",
        ),
        ("pypi.org/simple", "a host has no path: write 'pypi.org' and the path in paths: ['/simple']"),
        ("*.pypi.org:443", "a host has no port here: write 'pypi.org' and put the port in ports: [443]"),
    ],
    ids=["host-port", "ipv6-port", "url", "url-port-path", "path", "wildcard-port"],
)
def test_a_port_url_or_path_in_an_allow_host_says_where_it_goes(host: str, says: str) -> None:
    assert says in only_error(policy(f"allow: [{{host: {host!r}}}]\n"))


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        ("https://pypi.org", "a URL is not a host: write the bare host 'pypi.org'"),
        ("https://pypi.org:8443/x", "a URL is not a host: write the bare host 'pypi.org:8443'"),
        ("https://[::1]:8443", "a URL is not a host: write the bare host '[::1]:8443'"),
        ("pypi.org/simple", "a host has no path: write 'pypi.org'"),
    ],
    ids=["url", "url-port", "url-ipv6", "path"],
)
def test_a_url_in_a_secrets_hosts_says_to_write_the_bare_host(entry: str, says: str) -> None:
    err = only_error(
        policy(f"""
        allow: [{{host: pypi.org}}]
        secrets: [{{name: s, source: {{env: X}}, hosts: [{entry!r}]}}]
    """)
    )
    assert err == f"spec.secrets[0].hosts[0]: {says}"


def test_host_and_port_is_allowed_in_a_secrets_hosts() -> None:
    p = parse_policy(
        policy("""
        allow: [{host: pypi.org, ports: [8443]}, {host: "::1", ports: [8443]}]
        secrets: [{name: s, source: {env: X}, hosts: ["pypi.org:8443", "[::1]:8443"]}]
    """)
    )
    assert [str(h) for h in p.secrets[0].hosts] == ["pypi.org:8443", "[::1]:8443"]  # bracketed: unambiguous


@pytest.mark.parametrize(
    ("method", "warning"),
    [
        ("PSOT", "'PSOT' is not a standard HTTP method (RFC 9110, PATCH or WebDAV); did you mean 'POST'?"),
        ("GTE", "did you mean 'GET'?"),
        ("DELTE", "did you mean 'DELETE'?"),
        ("PROPFND", "did you mean 'PROPFIND'?"),
        ("FROBNICATE", "the rule matches it only if an agent sends it exactly"),
    ],
    ids=["transposed", "transposed-short", "dropped-letter", "webdav", "far-from-any"],
)
def test_non_standard_methods_are_warnings_with_the_likely_intended_method(method: str, warning: str) -> None:
    p = parse_policy(policy(f"allow: [{{host: a.example.com, methods: [GET, {method}]}}]\n"))
    assert [w.field for w in p.warnings] == ["spec.allow[0].methods[1]"]
    assert warning in p.warnings[0].message
    assert method in p.allow[0].methods  # valid as written: the proxy serves it


@pytest.mark.parametrize("method", ["GET", "PATCH", "VERSION-CONTROL", "MKCALENDAR", "CONNECT"])
def test_standard_and_webdav_methods_give_no_warning(method: str) -> None:
    assert parse_policy(policy(f"allow: [{{host: a.example.com, methods: [{method}]}}]\n")).warnings == ()


def test_a_lowercase_method_is_an_error_that_shows_the_upper_case_spelling() -> None:
    assert only_error(policy("allow: [{host: a.example.com, methods: [post]}]\n")) == (
        "spec.allow[0].methods[0]: 'post' is not an HTTP method: methods are upper-case tokens like GET, POST; "
        "write 'POST'"
    )


def slot_policy(headers: str) -> str:
    return policy(f"""
        allow: [{{host: a.example.com}}]
        secrets: [{{name: s, source: {{env: X}}, hosts: [a.example.com], headers: {headers}}}]
    """)


def test_slot_templates_parse_to_slots_and_plain_names_to_their_defaults() -> None:
    s = parse_policy(slot_policy("[Authorization, x-api-key, {name: X-Token, format: 'token {}'}, {name: x-raw}]"))
    assert s.secrets[0].slots == (
        Slot("authorization", "Bearer {}", basic=True),
        Slot("x-api-key", "{}"),
        Slot("x-token", "token {}"),
        Slot("x-raw", "{}"),
    )
    assert parse_policy(slot_policy("[authorization, x-api-key]")).secrets[0].slots == DEFAULT_SLOTS


@pytest.mark.parametrize(
    ("headers", "error"),
    [
        ("[]", "spec.secrets[0].headers: must list at least one header; remove the field for the default"),
        (
            "[host]",
            "spec.secrets[0].headers[0]: 'host' frames or routes the request; a secret cannot be swapped into it",
        ),
        ("[authorization, Authorization]", "spec.secrets[0].headers[1]: 'authorization' is listed twice"),
        ("['x api']", "spec.secrets[0].headers[0]: 'x api' is not a header name: a header name is a token like"),
        ("[5]", "spec.secrets[0].headers[0]: must be a header name or a {name, format} mapping, got an integer"),
        ("[{format: '{}'}]", "spec.secrets[0].headers[0].name: required field is missing"),
        ("[{name: x, fromat: '{}'}]", "spec.secrets[0].headers[0].fromat: unknown field; did you mean 'format'?"),
        (
            "[{name: x, format: 'token'}]",
            "spec.secrets[0].headers[0].format: 'token' is not a slot template: a template of",
        ),
        ("[{name: x, format: '{} {}'}]", "with exactly one {} where the placeholder goes"),
        ("[{name: x, format: 'token {} '}]", "no space at either end"),
        ("[{name: x, format: '{x}'}]", "is not a slot template"),
        ("[{name: x, format: 'tökén {}'}]", "printable ASCII"),
        ("[{name: x, format: 5}]", "spec.secrets[0].headers[0].format: must be a slot template, got an integer"),
        ("[{name: x, format: '" + "a" * 300 + "{}'}]", "is 302 characters long; at most 256"),
    ],
    ids=[
        "empty",
        "routing-header",
        "twice",
        "not-a-token",
        "not-a-string",
        "no-name",
        "typo",
        "no-braces",
        "two-braces",
        "trailing-space",
        "other-braces",
        "non-ascii",
        "format-not-a-string",
        "too-long",
    ],
)
def test_slot_template_errors_name_the_entry_and_the_fix(headers: str, error: str) -> None:
    assert error in only_error(slot_policy(headers))


def test_every_error_is_reported_at_once_not_only_the_first() -> None:
    errs = errors_of(
        policy("""
        mode: audit
        allow: [{host: API.example.com, ports: [0]}, {host: "*.com"}]
        secrets: [{name: Bad, source: {env: X, file: /k}, hosts: []}]
    """)
    )
    fields = [e.split(":")[0] for e in errs]
    assert fields == [
        "spec.mode",
        "spec.allow[0].ports[0]",
        "spec.secrets[0].name",
        "spec.secrets[0].source",
        "spec.secrets[0].hosts",
        "spec.allow[0].host",
        "spec.allow[1].host",
    ], errs


def test_a_duplicate_key_is_an_error_not_a_silent_override() -> None:
    # PyYAML keeps the last `allow:`; the first list would vanish without a word.
    err = only_error(policy("allow: [{host: a.example.com}]\nallow: []\n"))
    assert err.startswith("yaml: line 7, column 3: the key 'allow' appears twice")
