"""The JSON Schema of EgressPolicy and the loader agree, because both come from one field table.

An editor (yaml-language-server) checks a policy with the schema; the proxy with the loader. These
tests hold them to the same verdict wherever a schema can express the rule: every field the loader
accepts is in the schema with its type, unknown fields fail both, a corpus and generated documents
get the same answer, and the committed docs/egresspolicy.schema.json is what the code generates.
Rules no schema can state (canonical hosts, coverage by the allowlist, duplicates) are the loader's
alone: its errors for them are marked ``schema=False``, and only they may make the two disagree.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from hypothesis import HealthCheck, given, settings

from proxy.policy import schema as table
from proxy.policy.load import PolicyInvalid, policy_from_document
from proxy.policytool import schema, schema_text
from tests.proxy.policy.strategies import policy_documents

ROOT = Path(__file__).resolve().parents[3]
COMMITTED = ROOT / "docs" / "egresspolicy.schema.json"
REGENERATE = os.environ.get("SANDGATE_REGENERATE_GOLDEN") == "1"


def _ecma_pattern(validator: Any, pattern: str, instance: Any, _schema: Any) -> Any:
    """``pattern`` as editors (ECMAScript) read it: our patterns end in ``$``, which there is the end
    of the text; Python's ``$`` also matches before a final newline, so it becomes ``\\Z`` here."""
    if not validator.is_type(instance, "string"):
        return
    assert pattern.endswith(")$"), pattern
    if re.search(pattern[:-1] + r"\Z", instance) is None:
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


Validator = jsonschema.validators.extend(jsonschema.Draft202012Validator, {"pattern": _ecma_pattern})
SCHEMA = schema()
VALIDATOR = Validator(SCHEMA)

# Every field of the table, with a value that is valid for the loader as well.
KITCHEN_SINK: dict[str, Any] = {
    "apiVersion": "sandgate.dev/v1alpha1",
    "kind": "EgressPolicy",
    "metadata": {"name": "coding-agent", "namespace": "agents", "labels": {"team": "ml"}, "annotations": {"a": "b"}},
    "spec": {
        "mode": "report",
        "allow": [
            {"host": "api.openai.com", "ports": [443, 8443], "methods": ["GET", "POST"], "paths": ["/v1/*"]},
            {"host": "*.githubusercontent.com"},
        ],
        "secrets": [
            {
                "name": "openai",
                "placeholder": "sk-sandgate-openai",
                "source": {"vault": {"mount": "secret", "path": "agents/openai", "key": "api_key"}},
                "hosts": ["api.openai.com", "api.openai.com:8443"],
                "headers": ["authorization", {"name": "x-token", "format": "token {}"}],
                "query": True,
                "agentEnv": ["OPENAI_API_KEY"],
            },
            {"name": "gh", "source": {"env": "GH_TOKEN"}, "hosts": ["api.openai.com"]},
            {"name": "file", "source": {"file": "/k"}, "hosts": ["api.openai.com"]},
        ],
    },
}


def schema_ok(doc: Any) -> bool:
    return VALIDATOR.is_valid(doc)


def loader_errors(doc: Any) -> list[Any]:
    try:
        policy_from_document(copy.deepcopy(doc), "t")
    except PolicyInvalid as e:
        return e.errors
    return []


def field_paths(t: table.Type, prefix: tuple[Any, ...] = ()) -> list[tuple[tuple[Any, ...], table.Field]]:
    """(path into KITCHEN_SINK, field) for every field of the table; list items at index 0."""
    out: list[tuple[tuple[Any, ...], table.Field]] = []
    if isinstance(t, table.ListOf):
        return field_paths(t.item, (*prefix, 0))
    if isinstance(t, table.OneOf):
        return [p for a in t.alternatives for p in field_paths(a, prefix)]
    if isinstance(t, table.Obj):
        for f in t.fields:
            out.append(((*prefix, f.name), f))
            out += field_paths(f.type, (*prefix, f.name))
    return out


def locate(doc: Any, path: tuple[Any, ...]) -> tuple[dict[str, Any], str]:
    """The mapping that holds the field at ``path`` and its key; a list index in ``path`` stands for
    the first item of that list that has the rest of the path."""
    head, rest = path[0], path[1:]
    if isinstance(doc, list):
        for item in doc:
            try:
                return locate(item, rest)
            except KeyError:
                continue
        raise KeyError(path)
    if not isinstance(doc, dict) or head not in doc:
        raise KeyError(path)
    return (doc, head) if not rest else locate(doc[head], rest)


def test_the_committed_schema_is_what_the_table_generates() -> None:
    if REGENERATE:
        COMMITTED.write_text(schema_text())
    assert COMMITTED.read_text() == schema_text(), (
        "docs/egresspolicy.schema.json is stale: SANDGATE_REGENERATE_GOLDEN=1 .venv/bin/pytest tests/proxy/policy/test_schema.py"
    )


def test_the_schema_is_a_valid_draft_2020_12_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_the_kitchen_sink_uses_every_field_and_both_accept_it() -> None:
    missing = [p for p, _ in field_paths(table.EGRESS_POLICY) if not _present(p)]
    assert not missing, f"add these fields to KITCHEN_SINK: {missing}"
    assert loader_errors(KITCHEN_SINK) == [] and schema_ok(KITCHEN_SINK)


def _present(path: tuple[Any, ...]) -> bool:
    try:
        locate(KITCHEN_SINK, path)
    except KeyError:
        return False
    return True


# A value of each JSON kind, to put where the field wants another kind.
_OF_KIND = [("integer", 5), ("string", "5"), ("boolean", True), ("object", {"a": 1}), ("array", [1])]


@pytest.mark.parametrize(
    ("path", "f"),
    field_paths(table.EGRESS_POLICY),
    ids=[".".join(map(str, p)) for p, _ in field_paths(table.EGRESS_POLICY)],
)
def test_every_field_has_its_type_in_the_schema_and_a_wrong_type_fails_both(
    path: tuple[Any, ...], f: table.Field
) -> None:
    wrong = next(v for kind, v in _OF_KIND if kind not in f.type.json_kinds())
    doc = copy.deepcopy(KITCHEN_SINK)
    holder, key = locate(doc, path)
    holder[key] = wrong
    errors = loader_errors(doc)
    assert not schema_ok(doc), f"the schema accepts {wrong!r} at {path}"
    assert any(e.schema for e in errors), f"the loader has no structural error for {wrong!r} at {path}: {errors}"


@pytest.mark.parametrize(
    "where",
    [
        (),
        ("metadata",),
        ("spec",),
        ("spec", "allow", 0),
        ("spec", "secrets", 0),
        ("spec", "secrets", 0, "source", "vault"),
    ],
    ids=["policy", "metadata", "spec", "rule", "secret", "vault"],
)
def test_an_unknown_field_fails_both(where: tuple[Any, ...]) -> None:
    doc = copy.deepcopy(KITCHEN_SINK)
    target = doc
    for step in where:
        target = target[step]
    target["bogus"] = 1
    errors = loader_errors(doc)
    assert not schema_ok(doc)
    assert [e.field.rsplit(".", 1)[-1] for e in errors] == ["bogus"], errors


POLICY_HEAD = "apiVersion: sandgate.dev/v1alpha1\nkind: EgressPolicy\nmetadata: {name: t}\n"

# (id, spec, the loader accepts it, the schema accepts it). A schema that accepts what the loader
# refuses is expected only where no schema can say the rule (the loader's error has schema=False).
CORPUS = [
    ("minimal", "spec: {allow: []}", True, True),
    ("null-allow", "spec: {allow: }", True, True),
    ("integral-float-port", "spec: {allow: [{host: a.example.com, ports: [443.0]}]}", True, True),
    ("report-mode", "spec: {mode: report, allow: [{host: a.example.com}]}", True, True),
    ("nonstandard-method-is-a-warning", "spec: {allow: [{host: a.example.com, methods: [PSOT]}]}", True, True),
    ("slot-template", "spec: {allow: [{host: a.example.com}], secrets: [{name: s, source: {env: X}, hosts: [a.example.com], headers: [{name: x-t, format: 't {}'}]}]}", True, True),
    ("missing-spec", "", False, False),
    ("unknown-top-level-field", "spec: {allow: []}\nkinds: x", False, False),
    ("mode-typo", "spec: {mode: enforcing, allow: []}", False, False),
    ("port-zero", "spec: {allow: [{host: a.example.com, ports: [0]}]}", False, False),
    ("port-string", "spec: {allow: [{host: a.example.com, ports: ['443']}]}", False, False),
    ("ports-empty", "spec: {allow: [{host: a.example.com, ports: []}]}", False, False),
    ("lowercase-method", "spec: {allow: [{host: a.example.com, methods: [get]}]}", False, False),
    ("relative-path", "spec: {allow: [{host: a.example.com, paths: [v1]}]}", False, False),
    ("path-with-query", "spec: {allow: [{host: a.example.com, paths: ['/a?b=1']}]}", False, False),
    ("two-sources", "spec: {allow: [{host: a.example.com}], secrets: [{name: s, source: {env: X, file: /k}, hosts: [a.example.com]}]}", False, False),
    ("no-source", "spec: {allow: [{host: a.example.com}], secrets: [{name: s, source: {}, hosts: [a.example.com]}]}", False, False),
    ("no-hosts", "spec: {allow: [], secrets: [{name: s, source: {env: X}, hosts: []}]}", False, False),
    ("bad-template", "spec: {allow: [{host: a.example.com}], secrets: [{name: s, source: {env: X}, hosts: [a.example.com], headers: [{name: x, format: '{} {}'}]}]}", False, False),
    ("short-placeholder", "spec: {allow: [{host: a.example.com}], secrets: [{name: s, placeholder: abc, source: {env: X}, hosts: [a.example.com]}]}", False, False),
    ("name-with-newline", 'spec: {allow: []}\nmetadata: {name: "t\\n"}', False, False),
    # Only the loader can judge these:
    ("uppercase-host", "spec: {allow: [{host: API.example.com}]}", False, True),
    ("host-with-port", "spec: {allow: [{host: 'a.example.com:443'}]}", False, True),
    ("public-suffix-wildcard", "spec: {allow: [{host: '*.co.uk'}]}", False, True),
    ("uncovered-binding", "spec: {allow: [{host: a.example.com}], secrets: [{name: s, source: {env: X}, hosts: [b.example.com]}]}", False, True),
    ("routing-header-slot", "spec: {allow: [{host: a.example.com}], secrets: [{name: s, source: {env: X}, hosts: [a.example.com], headers: [host]}]}", False, True),
    ("duplicate-secret", "spec: {allow: [{host: a.example.com}], secrets: [{name: s, source: {env: X}, hosts: [a.example.com]}, {name: s, source: {env: Y}, hosts: [a.example.com]}]}", False, True),
]  # fmt: skip


@pytest.mark.parametrize(("text", "loader_ok", "schema_accepts"), [c[1:] for c in CORPUS], ids=[c[0] for c in CORPUS])
def test_corpus_gets_the_same_verdict_wherever_a_schema_can_say_it(
    text: str, loader_ok: bool, schema_accepts: bool
) -> None:
    head = POLICY_HEAD.replace("metadata: {name: t}\n", "") if "metadata:" in text else POLICY_HEAD
    doc = yaml.safe_load(head + text)
    errors = loader_errors(doc)
    assert (not errors) is loader_ok, errors
    assert schema_ok(doc) is schema_accepts
    assert any(e.schema for e in errors) is (not schema_accepts), errors


@settings(max_examples=400, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policy_documents())
def test_generated_documents_get_the_same_verdict_from_schema_and_loader(doc: Any) -> None:
    errors = loader_errors(doc)
    structural = [e for e in errors if e.schema]
    assert schema_ok(doc) is (not structural), (errors, list(VALIDATOR.iter_errors(doc))[:3])
    if not errors:
        assert schema_ok(doc)


def test_defaults_in_the_schema_are_what_the_loader_uses() -> None:
    p = policy_from_document(
        yaml.safe_load(
            POLICY_HEAD
            + "spec: {allow: [{host: a.example.com}], secrets: [{name: s, source: {env: X}, hosts: [a.example.com]}]}"
        ),
        "t",
    )
    rule, secret = SCHEMA["$defs"]["Rule"]["properties"], SCHEMA["$defs"]["Secret"]["properties"]
    assert list(p.allow[0].ports) == rule["ports"]["default"]
    assert list(p.secrets[0].headers) == secret["headers"]["default"]
    assert (
        p.secrets[0].query is secret["query"]["default"]
        and list(p.secrets[0].agent_env) == secret["agentEnv"]["default"]
    )
    assert p.mode.value == SCHEMA["$defs"]["Spec"]["properties"]["mode"]["default"]


def _patterns(node: Any) -> list[str]:
    if isinstance(node, dict):
        return ([node["pattern"]] if isinstance(node.get("pattern"), str) else []) + [
            p for v in node.values() for p in _patterns(v)
        ]
    if isinstance(node, list):
        return [p for v in node for p in _patterns(v)]
    return []


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node to run ECMAScript regular expressions")
def test_ecmascript_reads_every_pattern_as_python_does() -> None:
    """Editors run the patterns as JavaScript regular expressions with the 'u' flag."""
    samples = ["", "a", "GET", "get", "VERSION-CONTROL", "-GET", "GET\n", "token {}", "{}", " {}", "{} ", "{x}",
               "/v1/*", "/a?b", "/é", "sk-sandgate-openai", "x" * 300, "OPENAI_API_KEY", "1BAD", "a b", "t\n", "agents",
               "x-api-key", "tök{}", "a{}b{}", "\u212a", "Bearer {}"]  # fmt: skip
    patterns = sorted(set(_patterns(SCHEMA)))
    script = (
        "const [pats, samples] = JSON.parse(require('fs').readFileSync(0, 'utf8'));"
        "console.log(JSON.stringify(pats.map(p => samples.map(s => new RegExp(p, 'u').test(s)))));"
    )
    run = subprocess.run(
        ["node", "-e", script], input=json.dumps([patterns, samples]), capture_output=True, text=True, check=True
    )
    js = json.loads(run.stdout)
    py = [[re.search(p[:-1] + r"\Z", s) is not None for s in samples] for p in patterns]
    assert js == py


POLICY_DOC = ROOT / "docs" / "policy.md"


def _generated_docs(text: str) -> str:
    from proxy.policytool import CASES

    for name, root in (("policy fields", table.EGRESS_POLICY), ("cases fields", CASES)):
        begin, end = f"<!-- BEGIN GENERATED: {name} -->\n", f"<!-- END GENERATED: {name} -->"
        head, _, rest = text.partition(begin)
        _, _, tail = rest.partition(end)
        assert rest and tail is not None, f"docs/policy.md lost its {name} markers"
        text = head + begin + table.markdown(root) + end + tail
    return text


def test_the_field_reference_in_docs_policy_md_is_generated_from_the_table() -> None:
    text = POLICY_DOC.read_text()
    if REGENERATE:
        POLICY_DOC.write_text(_generated_docs(text))
        text = POLICY_DOC.read_text()
    assert text == _generated_docs(text), (
        "docs/policy.md's field reference is stale: SANDGATE_REGENERATE_GOLDEN=1 .venv/bin/pytest tests/proxy/policy/test_schema.py"
    )
