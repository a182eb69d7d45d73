"""`sandgate policy check|test|schema` as a policy repository's CI runs them: through the real CLI
entry point, on files, stdin, ConfigMap manifests and multi-document streams; exit 0 = all passed,
1 = a policy is invalid or a case failed, 2 = the run could not happen."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import junitparser
import pytest

from sandgate.cli import main

POLICY = """\
apiVersion: sandgate.dev/v1alpha1
kind: EgressPolicy
metadata: {name: coding-agent}
spec:
  allow:
    - host: api.openai.com
      methods: [GET, POST]
    - host: tools.example.com
  secrets:
    - name: openai
      source: {env: OPENAI}
      hosts: [api.openai.com]
"""

CASES = """\
cases:
  - name: chat completion swaps the key
    request:
      method: POST
      url: https://api.openai.com/v1/chat/completions
      headers: {Authorization: "Bearer ${placeholder:openai}"}
    expect: {decision: allowed, swapped: [openai]}
  - name: key to another host is refused
    request: {method: POST, url: "https://tools.example.com/x", headers: {Authorization: "Bearer ${placeholder:openai}"}}
    expect: {decision: denied, reason: secret_not_bound, secret: openai}
  - name: an unlisted host is denied
    request: {url: "https://attacker.test/"}
    expect: {decision: denied, reason: host_not_allowed}
"""


def configmap(policy: str = POLICY, name: str = "coding-agent", labels: str = '{sandgate.dev/policy: "true"}') -> str:
    return (
        f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: agents\n  labels: {labels}\n"
        "data:\n  policy.yaml: |\n" + textwrap.indent(policy, "    ")
    )


def write(tmp_path: Path, name: str, content: str | bytes) -> str:
    p = tmp_path / name
    if isinstance(content, bytes):
        p.write_bytes(content)
    else:
        p.write_text(content)
    return str(p)


def run(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *argv: str, stdin: bytes = b""
) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    code = main(["policy", *argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


# --- check ----------------------------------------------------------------------------------------


def test_check_a_valid_policy_exits_0_with_a_summary(tmp_path: Path, capsys: Any, monkeypatch: Any) -> None:
    f = write(tmp_path, "p.yaml", POLICY)
    code, out, _ = run(capsys, monkeypatch, "check", f)
    assert code == 0
    assert out.splitlines() == [
        f"{f}: ok (policy 'coding-agent': 2 allow rules, 1 secret, mode enforce)",
        "1 policy checked: 1 passed, 0 failed",
    ]


@pytest.mark.parametrize(
    ("content", "line"),
    [
        (b"metadata: {name: rel-\xff}", "file: is not UTF-8: byte 0xff at line 1, column 22"),
        (b"\x00\x01\x02\xff\xfe", "file: is not UTF-8"),
        (b"[" * 600, "yaml: line 1, column 33: nested more than 32 levels deep"),
        (b"", "policy: the file is empty; write an EgressPolicy"),
        (b"a: [\n", "yaml: line "),
        (
            POLICY.replace("api.openai.com\n      methods", "api.openai.com:443\n      methods").encode(),
            "put the port in ports: [443]",
        ),
        (
            POLICY.replace("{name: coding-agent}", "{name: Coding}").encode(),
            "metadata.name: 'Coding' is not a policy name",
        ),
    ],
    ids=["not-utf8", "binary", "deep", "empty", "yaml-syntax", "host-with-port", "bad-name"],
)
def test_check_an_invalid_policy_exits_1_naming_file_field_and_fix(
    tmp_path: Path, capsys: Any, monkeypatch: Any, content: bytes, line: str
) -> None:
    f = write(tmp_path, "bad.yaml", content)
    code, out, _ = run(capsys, monkeypatch, "check", f)
    assert code == 1
    assert any(ln.startswith(f"{f}: ") and line in ln for ln in out.splitlines()), out
    assert "<unicode string>" not in out and "NoneType" not in out


def test_check_an_unreadable_file_exits_2_and_still_checks_the_others(
    tmp_path: Path, capsys: Any, monkeypatch: Any
) -> None:
    good = write(tmp_path, "p.yaml", POLICY)
    missing = str(tmp_path / "missing.yaml")
    code, out, _ = run(capsys, monkeypatch, "check", good, missing, str(tmp_path))
    assert code == 2
    assert f"{good}: ok" in out
    assert f"{missing}: file: cannot read: No such file or directory" in out
    assert f"{tmp_path}: file: cannot read: Is a directory" in out


def test_check_prints_warnings_and_strict_fails_on_them(tmp_path: Path, capsys: Any, monkeypatch: Any) -> None:
    f = write(tmp_path, "p.yaml", POLICY.replace("[GET, POST]", "[GET, PSOT]"))
    code, out, _ = run(capsys, monkeypatch, "check", f)
    assert code == 0
    assert (
        f"{f}: warning: spec.allow[0].methods[1]: 'PSOT' is not a standard HTTP method (RFC 9110, PATCH or WebDAV); "
        "did you mean 'POST'?"
    ) in out.splitlines()
    code, out, _ = run(capsys, monkeypatch, "check", "--strict", f)
    assert code == 1 and "fails under --strict" in out and "0 passed, 1 failed, 1 warning" in out


def test_check_reads_stdin_for_dash(capsys: Any, monkeypatch: Any) -> None:
    code, out, _ = run(capsys, monkeypatch, "check", "-", stdin=POLICY.encode())
    assert code == 0 and out.startswith("<stdin>: ok (policy 'coding-agent'")
    code, out, _ = run(capsys, monkeypatch, "check", "-", stdin=b"\xff")
    assert code == 1 and out.startswith("<stdin>: file: is not UTF-8")


def test_check_reads_the_policy_configmap_the_cluster_uses(tmp_path: Path, capsys: Any, monkeypatch: Any) -> None:
    f = write(tmp_path, "cm.yaml", configmap())
    code, out, _ = run(capsys, monkeypatch, "check", f)
    assert code == 0 and out.startswith(f"{f} (ConfigMap coding-agent): ok (policy 'coding-agent'")


@pytest.mark.parametrize(
    ("manifest", "code", "says"),
    [
        (configmap(labels="{}"), 0, 'warning: metadata.labels.sandgate.dev/policy: missing: the webhook and the injector ignore'),
        (configmap(labels="{sandgate.dev/policy: true}"), 1, 'label values are strings; write "true" (quoted)'),
        (configmap(name="other"), 1, "metadata.name: the ConfigMap is named 'other' and its policy 'coding-agent'"),
        (configmap(POLICY.replace("api.openai.com\n      methods", "API.openai.com\n      methods")), 1,
         "(ConfigMap coding-agent): spec.allow[0].host: not canonical; write 'api.openai.com'"),
        (configmap("allow: [\n"), 1, "(ConfigMap coding-agent): data.policy.yaml: line "),
        ("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  labels: {sandgate.dev/policy: \"true\"}\ndata: {}\n", 1,
         "data.policy.yaml: a policy ConfigMap holds the EgressPolicy as text under this key"),
        ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {other.yaml: x}\n", 1,
         "policy: holds no EgressPolicy and no ConfigMap with a policy.yaml"),
    ],
    ids=["unlabelled", "boolean-label", "name-mismatch", "invalid-policy", "yaml-error-in-key", "no-key", "not-a-policy"],
)  # fmt: skip
def test_check_judges_a_configmap_as_the_webhook_will(
    tmp_path: Path, capsys: Any, monkeypatch: Any, manifest: str, code: int, says: str
) -> None:
    f = write(tmp_path, "cm.yaml", manifest)
    got, out, _ = run(capsys, monkeypatch, "check", f)
    assert got == code and says in out, out


def test_check_names_each_document_of_a_stream(tmp_path: Path, capsys: Any, monkeypatch: Any) -> None:
    f = write(
        tmp_path,
        "all.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n---\n"
        + configmap()
        + "---\n"
        + POLICY.replace("coding-agent", "second").replace("[GET, POST]", "[GETT]")
        + "---\napiVersion: sandgate.dev/v1alpha1\nkind: EgressPolicyy\nmetadata: {name: typo}\nspec: {allow: []}\n",
    )
    code, out, _ = run(capsys, monkeypatch, "check", f)
    assert code == 1
    assert out.splitlines() == [
        f"{f}#1: skipped (a 'Deployment', not a policy)",
        f"{f}#2 (ConfigMap coding-agent): ok (policy 'coding-agent': 2 allow rules, 1 secret, mode enforce)",
        f"{f}#3: warning: spec.allow[0].methods[0]: 'GETT' is not a standard HTTP method (RFC 9110, PATCH or "
        "WebDAV); did you mean 'GET'?",
        f"{f}#3: ok (policy 'second': 2 allow rules, 1 secret, mode enforce)",
        f"{f}#4: kind: must be 'EgressPolicy', got 'EgressPolicyy'",
        "3 policies checked: 2 passed, 1 failed, 1 warning",
    ]


def test_check_json_output(tmp_path: Path, capsys: Any, monkeypatch: Any) -> None:
    good = write(tmp_path, "p.yaml", POLICY.replace("[GET, POST]", "[PSOT]"))
    bad = write(tmp_path, "bad.yaml", POLICY.replace("ports", "x").replace("{env: OPENAI}", "{env: 1X}"))
    code, out, _ = run(capsys, monkeypatch, "check", "-o", "json", good, bad)
    report = json.loads(out)
    assert code == 1 and report["exit"] == 1
    assert report["documents"] == [
        {
            "source": good,
            "policy": "coding-agent",
            "valid": True,
            "skipped": None,
            "errors": [],
            "warnings": [
                {
                    "field": "spec.allow[0].methods[0]",
                    "message": "'PSOT' is not a standard HTTP method (RFC 9110, PATCH or WebDAV); did you mean 'POST'?",
                }
            ],
        },
        {
            "source": bad,
            "policy": None,
            "valid": False,
            "skipped": None,
            "errors": [
                {
                    "field": "spec.secrets[0].source.env",
                    "message": "'1X' is not an environment variable name: e.g. OPENAI_API_KEY",
                }
            ],
            "warnings": [],
        },
    ]


def test_check_junit_has_one_testcase_per_policy(tmp_path: Path, capsys: Any, monkeypatch: Any) -> None:
    good, bad = write(tmp_path, "p.yaml", POLICY), write(tmp_path, "bad.yaml", b"\xff")
    report = tmp_path / "check.xml"
    code, _, _ = run(capsys, monkeypatch, "check", "--junit", str(report), good, bad)
    assert code == 1
    suite = next(iter(junitparser.JUnitXml.fromfile(str(report))))
    assert (suite.tests, suite.failures) == (2, 1)
    verdicts = {c.name: [type(r).__name__ for r in c.result] for c in suite}
    assert verdicts == {good: [], bad: ["Failure"]}


# --- test -----------------------------------------------------------------------------------------


def test_test_runs_cases_through_the_proxys_decisions(tmp_path: Path, capsys: Any, monkeypatch: Any) -> None:
    p, c = write(tmp_path, "p.yaml", POLICY), write(tmp_path, "c.yaml", CASES)
    code, out, _ = run(capsys, monkeypatch, "test", p, "--cases", c)
    assert code == 0
    assert out.splitlines() == [
        "PASS chat completion swaps the key: allowed swapped=['openai']",
        "PASS key to another host is refused: denied (secret_not_bound) secret=openai",
        "PASS an unlisted host is denied: denied (host_not_allowed)",
        "3 passed, 0 failed",
    ]


def test_a_failing_case_exits_1_and_says_what_differed(tmp_path: Path, capsys: Any, monkeypatch: Any) -> None:
    p = write(tmp_path, "p.yaml", POLICY)
    c = write(tmp_path, "c.yaml", CASES.replace("expect: {decision: denied, reason: host_not_allowed}", "expect: {decision: allowed, swapped: [openai]}"))  # fmt: skip
    code, out, _ = run(capsys, monkeypatch, "test", p, "--cases", c)
    assert code == 1
    assert out.splitlines()[-4:] == [
        "FAIL an unlisted host is denied: denied (host_not_allowed)",
        "     expected decision 'allowed', got 'denied'",
        "     expected swapped ['openai'], got []",
        "2 passed, 1 failed",
    ]


@pytest.mark.parametrize(
    ("case", "error"),
    [
        ("{request: {url: 'https://a.test/', methd: GET}, expect: {decision: denied}}",
         "cases[0].request.methd: unknown field; did you mean 'method'?"),
        ("{request: {url: 'https://a.test/'}, expect: {decison: denied}}", "cases[0].expect.decison: unknown field; did you mean 'decision'?"),
        ("{request: {url: 'https://a.test/'}, expect: {decision: denied}, expected: {}}", "cases[0].expected: unknown field"),
        ("{request: {method: GET}, expect: {decision: denied}}", "cases[0].request.url: required field is missing"),
        ("{request: {url: 'https://a.test/'}}", "cases[0].expect: required field is missing"),
        ("{request: {url: 'https://a.test/'}, expect: {}}", "cases[0].expect: must state at least one of: decision, reason, swapped, secret"),
        ("{request: {url: 'https://a.test/'}, expect: {decision: deny}}", "cases[0].expect.decision: must be one of 'allowed', 'denied', 'reported', got 'deny'; did you mean 'denied'?"),
        ("{request: {url: 'https://a.test/'}, expect: {reason: host_denied}}", "cases[0].expect.reason: must be one of 'host_not_allowed'"),
        ("{request: {url: 'https://a.test/'}, expect: {swapped: [opneai]}}", "cases[0].expect.swapped: no secret named 'opneai' in policy 'coding-agent'"),
        ("{request: {url: 'https://a.test/'}, expect: {secret: nobody}}", "cases[0].expect.secret: no secret named 'nobody'"),
        ("{request: {url: 'https://a.test/', headers: {A: '${placeholder:opneai}'}}, expect: {decision: denied}}",
         "cases[0].request.headers.A: ${placeholder:...}: no secret named 'opneai' in policy 'coding-agent'"),
        ("{request: {url: 'api.openai.com/v1'}, expect: {decision: denied}}", "cases[0].request.url: 'api.openai.com/v1' is not an absolute http:// or https:// URL"),
        ("{request: {url: 'https://a.test/', headers: {A: 5}}, expect: {decision: denied}}", "cases[0].request.headers.A: must be a header value, got an integer"),
        ("{request: {url: 'https://a.test/'}, expect: {decision: denied}, policy: other}", "cases[0].policy: no policy named 'other' in the policy file"),
        ("just a string", "cases[0]: must be a mapping, got a string"),
    ],
    ids=["request-typo", "expect-typo", "case-typo", "no-url", "no-expect", "empty-expect", "bad-decision", "bad-reason",
         "unknown-swapped", "unknown-secret", "unknown-placeholder", "relative-url", "non-string-header", "unknown-policy",
         "not-a-mapping"],
)  # fmt: skip
def test_a_typo_in_a_cases_file_is_an_error_not_a_pass(
    tmp_path: Path, capsys: Any, monkeypatch: Any, case: str, error: str
) -> None:
    p = write(tmp_path, "p.yaml", POLICY)
    c = write(tmp_path, "c.yaml", f"cases:\n  - {case}\n")
    code, out, err = run(capsys, monkeypatch, "test", p, "--cases", c)
    assert code == 2 and out == ""
    assert f"{c}: {error}" in err, err
    assert err.splitlines()[-1] == "sandgate policy test: not run (exit 2)"


@pytest.mark.parametrize(
    ("cases", "error"),
    [
        ("cases: []\n", "cases: has no cases: a test of nothing would pass"),
        ("case: []\n", "case: unknown field; did you mean 'cases'?"),
        ("- {request: {url: 'https://a.test/'}}\n", "cases file: must be a mapping, got a list"),
        ("", "cases file: is empty"),
        ("cases: [\n", "yaml: line "),
    ],
    ids=["no-cases", "typo", "a-list", "empty", "yaml"],
)
def test_a_malformed_cases_file_exits_2(tmp_path: Path, capsys: Any, monkeypatch: Any, cases: str, error: str) -> None:
    p, c = write(tmp_path, "p.yaml", POLICY), write(tmp_path, "c.yaml", cases)
    code, _, err = run(capsys, monkeypatch, "test", p, "--cases", c)
    assert code == 2 and f"{c}: {error}" in err, err


def test_an_invalid_or_unreadable_input_exits_2(tmp_path: Path, capsys: Any, monkeypatch: Any) -> None:
    good, cases = write(tmp_path, "p.yaml", POLICY), write(tmp_path, "c.yaml", CASES)
    bad = write(tmp_path, "bad.yaml", b"metadata: {name: rel-\xff}")
    code, _, err = run(capsys, monkeypatch, "test", bad, "--cases", cases)
    assert code == 2 and f"{bad}: file: is not UTF-8" in err
    code, _, err = run(capsys, monkeypatch, "test", str(tmp_path / "nope.yaml"), "--cases", cases)
    assert code == 2 and "cannot read: No such file or directory" in err
    code, _, err = run(capsys, monkeypatch, "test", good, "--cases", str(tmp_path / "nope.yaml"))
    assert code == 2 and "nope.yaml: file: cannot read" in err


def test_test_reads_the_policy_or_the_cases_from_stdin(tmp_path: Path, capsys: Any, monkeypatch: Any) -> None:
    p, c = write(tmp_path, "p.yaml", POLICY), write(tmp_path, "c.yaml", CASES)
    assert run(capsys, monkeypatch, "test", "-", "--cases", c, stdin=POLICY.encode())[0] == 0
    assert run(capsys, monkeypatch, "test", p, "--cases", "-", stdin=CASES.encode())[0] == 0
    code, _, err = run(capsys, monkeypatch, "test", "-", "--cases", "-")
    assert code == 2 and "only one of the policy and the cases can come from stdin" in err


def test_test_accepts_a_configmap_and_picks_policies_of_a_stream_by_name(
    tmp_path: Path, capsys: Any, monkeypatch: Any
) -> None:
    second = POLICY.replace("coding-agent", "locked").replace("    - host: tools.example.com\n", "")
    p = write(tmp_path, "all.yaml", configmap() + "---\n" + second)
    c = write(tmp_path, "c.yaml", CASES)
    code, _, err = run(capsys, monkeypatch, "test", p, "--cases", c)
    assert code == 2 and "the policy file holds 2 policies (coding-agent, locked): name one with `policy:`" in err
    picked = write(
        tmp_path,
        "picked.yaml",
        "policy: coding-agent\n" + CASES + "  - name: locked has no tools host\n    policy: locked\n"
        "    request: {url: 'https://tools.example.com/'}\n    expect: {reason: host_not_allowed}\n",
    )
    code, out, _ = run(capsys, monkeypatch, "test", p, "--cases", picked)
    assert code == 0
    assert (
        out.splitlines()[0]
        == f"PASS chat completion swaps the key [{p}#1 (ConfigMap coding-agent)]: allowed swapped=['openai']"
    )
    assert out.splitlines()[3] == f"PASS locked has no tools host [{p}#2]: denied (host_not_allowed)"


def test_test_json_and_junit_reports(tmp_path: Path, capsys: Any, monkeypatch: Any) -> None:
    p = write(tmp_path, "p.yaml", POLICY)
    c = write(tmp_path, "c.yaml", CASES.replace("reason: host_not_allowed", "reason: path_not_allowed"))
    report = tmp_path / "out" / "junit.xml"
    report.parent.mkdir()
    code, out, _ = run(capsys, monkeypatch, "test", p, "--cases", c, "-o", "json", "--junit", str(report))
    assert code == 1
    data = json.loads(out)
    assert (data["passed"], data["failed"], data["exit"]) == (2, 1, 1)
    assert data["results"][2] == {
        "name": "an unlisted host is denied",
        "policy": p,
        "passed": False,
        "request": {"method": "GET", "url": "https://attacker.test/"},
        "decision": "denied",
        "reason": "host_not_allowed",
        "swapped": [],
        "secret": None,
        "failures": ["expected reason 'path_not_allowed', got 'host_not_allowed'"],
    }
    ET.parse(report)  # well-formed XML
    suite = next(iter(junitparser.JUnitXml.fromfile(str(report))))
    assert (suite.tests, suite.failures, suite.errors) == (3, 1, 0)
    results = {c.name: c.result for c in suite}
    assert list(results) == [
        "chat completion swaps the key",
        "key to another host is refused",
        "an unlisted host is denied",
    ]
    assert results["chat completion swaps the key"] == []
    (failure,) = results["an unlisted host is denied"]
    assert isinstance(failure, junitparser.Failure) and "expected reason 'path_not_allowed'" in failure.message


def test_a_run_that_could_not_happen_still_writes_a_junit_error(tmp_path: Path, capsys: Any, monkeypatch: Any) -> None:
    p, c = write(tmp_path, "p.yaml", POLICY), write(tmp_path, "c.yaml", "cases: []\n")
    report = tmp_path / "junit.xml"
    code, out, _ = run(capsys, monkeypatch, "test", p, "--cases", c, "--junit", str(report), "-o", "json")
    assert code == 2 and json.loads(out)["errors"][0]["field"] == "cases"
    suite = next(iter(junitparser.JUnitXml.fromfile(str(report))))
    assert (suite.tests, suite.errors) == (1, 1)


def test_an_unwritable_junit_file_exits_2(tmp_path: Path, capsys: Any, monkeypatch: Any) -> None:
    p, c = write(tmp_path, "p.yaml", POLICY), write(tmp_path, "c.yaml", CASES)
    code, _, err = run(capsys, monkeypatch, "test", p, "--cases", c, "--junit", str(tmp_path / "no" / "dir.xml"))
    assert code == 2 and "--junit" in err and "cannot write" in err


# --- schema and the real entry point --------------------------------------------------------------


def test_schema_prints_the_committed_json_schema(capsys: Any, monkeypatch: Any) -> None:
    code, out, _ = run(capsys, monkeypatch, "schema")
    committed = Path(__file__).resolve().parents[2] / "docs" / "egresspolicy.schema.json"
    assert code == 0 and out == committed.read_text()
    assert json.loads(out)["title"].startswith("Sandgate EgressPolicy")


def test_the_installed_command_exits_1_on_binary_input_without_a_traceback() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "sandgate", "policy", "check", "-"],
        input=bytes(range(256)),
        capture_output=True,
        check=False,
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout.decode().startswith("<stdin>: file: is not UTF-8") and b"Traceback" not in proc.stderr


def _yaml_blocks(markdown: str) -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", markdown, re.S)


@pytest.mark.parametrize("doc", ["README.md", "docs/policy.md"])
def test_the_policies_in_the_docs_pass_check(tmp_path: Path, capsys: Any, monkeypatch: Any, doc: str) -> None:
    text = (Path(__file__).resolve().parents[2] / doc).read_text()
    policies = [b for b in _yaml_blocks(text) if re.search(r"^kind: (EgressPolicy|ConfigMap)$", b, re.M)]
    assert policies
    for i, block in enumerate(policies):
        code, out, _ = run(capsys, monkeypatch, "check", write(tmp_path, f"{i}.yaml", block))
        assert code == 0, out


def test_the_cases_in_docs_policy_md_pass_against_its_example_policy(
    tmp_path: Path, capsys: Any, monkeypatch: Any
) -> None:
    blocks = _yaml_blocks((Path(__file__).resolve().parents[2] / "docs" / "policy.md").read_text())
    policy = write(tmp_path, "p.yaml", blocks[0])
    cases = write(tmp_path, "c.yaml", next(b for b in blocks if b.lstrip().startswith(("cases:", "policy:"))))
    code, out, err = run(capsys, monkeypatch, "test", policy, "--cases", cases)
    assert code == 0, out + err


def test_check_reads_the_list_kubectl_get_prints(tmp_path: Path, capsys: Any, monkeypatch: Any) -> None:
    items = textwrap.indent(configmap(), "    ").replace("    apiVersion: v1", "  - apiVersion: v1", 1)
    listing = (
        "apiVersion: v1\nkind: List\nitems:\n"
        + items
        + "  - {apiVersion: v1, kind: ConfigMap, metadata: {name: kube-root-ca.crt}, data: {ca.crt: x}}\n"
    )
    code, out, _ = run(capsys, monkeypatch, "check", "-", stdin=listing.encode())
    assert code == 0
    assert out.splitlines()[:2] == [
        "<stdin> items[0] (ConfigMap coding-agent): ok (policy 'coding-agent': 2 allow rules, 1 secret, mode enforce)",
        "<stdin> items[1] (ConfigMap kube-root-ca.crt): skipped (a ConfigMap without policy.yaml, not a policy)",
    ]
