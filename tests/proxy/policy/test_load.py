"""Parsing and validating EgressPolicy documents (A06, A19, B09, B21): every error names the field
and the fix."""

from __future__ import annotations

import textwrap

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.policy.load import PolicyInvalid, default_placeholder, parse_policy
from proxy.policy.model import Mode

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
    assert any(e.startswith(f"{field}:") for e in errors_of(doc))


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


@settings(max_examples=300)
@given(st.dictionaries(st.sampled_from(["mode", "allow", "secrets", "extra"]), _yaml_values, max_size=4))
def test_parser_fuzz_never_fails_except_with_policy_invalid(spec: dict[str, object]) -> None:
    doc = {"apiVersion": "sandgate.dev/v1alpha1", "kind": "EgressPolicy", "metadata": {"name": "f"}, "spec": spec}
    try:
        parse_policy(yaml.safe_dump(doc))
    except PolicyInvalid as e:
        assert e.errors and all(str(x) for x in e.errors)
