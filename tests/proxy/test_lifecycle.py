"""What an operator sees: start-up errors, the ready line, the CA file, hot reload, report mode,
missing secrets, and the policy tools."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

from proxy import native
from proxy.metrics import EGRESS_REQUESTS, POLICY_RELOADS, SECRET_AVAILABLE, SECRET_BLOCKED
from tests.conftest import OPENAI, needs_root
from tests.support.clients import curl
from tests.support.proxyproc import ProxyProcess, free_port
from tests.support.upstream import Seen
from tests.support.wait import wait_for

SANDGATE = [sys.executable, "-m", "sandgate"]


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SANDGATE, *args], capture_output=True, text=True, timeout=timeout, env=env, check=False)


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


GOOD = """\
apiVersion: sandgate.dev/v1alpha1
kind: EgressPolicy
metadata: {name: good}
spec:
  allow:
    - host: api.openai.com
    - host: echo.example.com
  secrets:
    - name: openai
      placeholder: PLACEHOLDER
      source: {env: SG_TEST_OPENAI}
      hosts: [api.openai.com]
"""


def test_help_explains_every_command() -> None:
    out = run("--help").stdout
    for cmd in ("proxy", "policy", "demo"):
        assert cmd in out
    proxy_help = run("proxy", "--help").stdout
    for flag in (
        "--policy",
        "--mode",
        "--listen-port",
        "--metrics-port",
        "--confdir",
        "--upstream-ca",
        "--allow-private",
        "--audit-log",
    ):
        assert flag in proxy_help


def test_a19_invalid_policy_exits_2_naming_field_and_fix(tmp_path: Path) -> None:
    bad = write(
        tmp_path,
        "bad.yaml",
        GOOD.replace("- host: echo.example.com", "- host: '*.com'").replace("PLACEHOLDER", "sk-ph-1"),
    )
    r = run(
        "proxy", "--policy", str(bad), "--listen-port", "0", "--metrics-port", "0", "--confdir", str(tmp_path / "c")
    )
    assert r.returncode == 2
    assert "spec.allow[1].host" in r.stderr and "public suffix" in r.stderr
    missing = run("proxy", "--policy", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2 and "cannot read" in missing.stderr


def test_policy_check_reports_every_problem(tmp_path: Path) -> None:
    good = write(tmp_path, "good.yaml", GOOD.replace("PLACEHOLDER", "sk-ph-good-1"))
    bad = write(tmp_path, "bad.yaml", GOOD.replace("PLACEHOLDER", "x").replace("api.openai.com]", "other.example.com]"))
    r = run("policy", "check", str(good), str(bad))
    assert r.returncode == 1
    assert f"{good}: ok" in r.stdout
    assert f"{bad}: spec.secrets[0].placeholder" in r.stdout and f"{bad}: spec.secrets[0].hosts[0]" in r.stdout
    assert run("policy", "check", str(good)).returncode == 0


def test_policy_test_simulates_with_the_proxy_logic(tmp_path: Path) -> None:
    policy = write(tmp_path, "p.yaml", GOOD.replace("PLACEHOLDER", "sk-ph-good-1"))
    cases = write(
        tmp_path,
        "cases.yaml",
        """\
        cases:
          - name: swap
            request: {method: POST, url: "https://api.openai.com/v1/x", headers: {Authorization: "Bearer ${placeholder:openai}"}}
            expect: {decision: allowed, swapped: [openai]}
          - name: exfil
            request: {method: POST, url: "https://echo.example.com/", headers: {Authorization: "Bearer ${placeholder:openai}"}}
            expect: {decision: denied, reason: secret_not_bound}
          - name: wrong expectation
            request: {method: GET, url: "https://evil.test/"}
            expect: {decision: allowed}
    """,
    )
    r = run("policy", "test", str(policy), "--cases", str(cases))
    assert r.returncode == 1
    assert "PASS swap: allowed swapped=['openai']" in r.stdout
    assert "PASS exfil: denied (secret_not_bound)" in r.stdout
    assert "FAIL wrong expectation: denied (host_not_allowed)" in r.stdout
    assert "2 passed, 1 failed" in r.stdout


@needs_root
def test_busy_port_exits_2_with_a_clear_message(proxy: ProxyProcess, tmp_path: Path) -> None:
    policy = write(tmp_path, "p.yaml", GOOD.replace("PLACEHOLDER", "sk-ph-good-1"))
    r = run("proxy", "--policy", str(policy), "--listen-port", str(proxy.port), "--metrics-port", str(free_port()),
            "--confdir", str(tmp_path / "c"))  # fmt: skip
    assert r.returncode == 2 and f"cannot listen on 127.0.0.1:{proxy.port}" in r.stderr


@needs_root
def test_ready_line_and_a_ca_file_without_the_key(proxy: ProxyProcess) -> None:
    assert proxy.ready_line.startswith("sandgate proxy ready: listen=127.0.0.1:")
    assert proxy.ready_line.endswith(f" datapath={native.mode()}")  # (what its per-request modules run as)
    pem = proxy.ca.read_text()
    assert pem.count("BEGIN CERTIFICATE") == 1 and "PRIVATE KEY" not in pem
    assert (proxy.confdir / "ca-key.pem").stat().st_mode & 0o077 == 0
    assert proxy.metric("sandgate_proxy_ready") == 1


@needs_root
def test_missing_secret_fails_requests_closed_and_others_keep_flowing(
    make_proxy: Callable[..., ProxyProcess], upstreams: dict[str, Seen]
) -> None:
    """E01-style fail closed: the value is unavailable, the placeholder is never forwarded."""
    p = make_proxy(GOOD.replace("PLACEHOLDER", OPENAI.placeholder), env={})
    assert p.metric(SECRET_AVAILABLE, secret="openai") == 0
    before = len(upstreams["api"].requests)
    reply = curl(p.url, p.ca, "https://api.openai.com/v1/x", "-H", f"Authorization: Bearer {OPENAI.placeholder}")
    assert reply.status == 503 and reply.reason == "secret_unavailable"
    assert len(upstreams["api"].requests) == before
    assert p.metric(SECRET_BLOCKED, secret="openai", reason="secret_unavailable") == 1
    assert curl(p.url, p.ca, "https://api.openai.com/v1/no-secret").status == 200
    assert "SG_TEST_OPENAI is not set" in p.stderr()
    strict = run("proxy", "--policy", str(p.policy), "--require-secrets", "--listen-port", "0", "--metrics-port", str(free_port()),
                 "--confdir", str(p.workdir / "c2"), env={"PATH": "/usr/bin:/bin"})  # fmt: skip
    assert strict.returncode == 3 and "openai" in strict.stderr


@needs_root
def test_secret_invalid_value_with_crlf_is_never_injected(
    make_proxy: Callable[..., ProxyProcess], upstreams: dict[str, Seen]
) -> None:
    p = make_proxy(GOOD.replace("PLACEHOLDER", OPENAI.placeholder), env={"SG_TEST_OPENAI": "sk-x\r\nX-Injected: 1"})
    reply = curl(p.url, p.ca, "https://api.openai.com/v1/x", "-H", f"Authorization: Bearer {OPENAI.placeholder}")
    assert reply.status == 503 and reply.reason == "secret_invalid"
    assert all("x-injected" not in r["headers"] for r in upstreams["api"].requests)


@needs_root
def test_report_mode_lets_allowlist_misses_through_and_never_swaps_toward_unbound_hosts(
    make_proxy: Callable[..., ProxyProcess], upstreams: dict[str, Seen]
) -> None:
    text = (
        GOOD.replace("PLACEHOLDER", OPENAI.placeholder)
        .replace("spec:\n", "spec:\n  mode: report\n")
        .replace("    - host: echo.example.com\n", "")
    )
    p = make_proxy(text)
    reply = curl(p.url, p.ca, "https://echo.example.com/probe", "-H", f"Authorization: Bearer {OPENAI.placeholder}")
    assert reply.status == 200
    seen = upstreams["echo"].requests[-1]
    assert seen["path"] == "/probe" and seen["headers"]["authorization"] == f"Bearer {OPENAI.placeholder}"
    assert p.metric(EGRESS_REQUESTS, decision="reported", reason="host_not_allowed") >= 1, p.audit()
    assert any(r["decision"] == "reported" for r in p.audit())
    # Invariants hold in report mode too: no private addresses.
    assert curl(p.url, p.ca, "https://internal.example.com/").reason == "private_address"


@needs_root
def test_policy_hot_reload_applies_valid_versions_and_keeps_the_old_on_error(
    make_proxy: Callable[..., ProxyProcess], upstreams: dict[str, Seen]
) -> None:
    p = make_proxy(GOOD.replace("PLACEHOLDER", OPENAI.placeholder).replace("    - host: echo.example.com\n", ""))
    assert curl(p.url, p.ca, "https://echo.example.com/").reason == "host_not_allowed"
    p.policy.write_text(GOOD.replace("PLACEHOLDER", OPENAI.placeholder))
    wait_for(lambda: p.metric(POLICY_RELOADS, result="success") == 1)
    assert curl(p.url, p.ca, "https://echo.example.com/").status == 200
    p.policy.write_text("spec: [this is not a policy")
    wait_for(lambda: p.metric(POLICY_RELOADS, result="error") == 1)
    assert curl(p.url, p.ca, "https://echo.example.com/").status == 200  # the old policy still serves
    assert "policy_reload" in p.stderr()


def demo_dirs() -> set[Path]:
    """The directories the demo makes in /tmp: its own, its run's and its private network's. (Only
    these: tests on other pytest-xdist workers make and remove other ``sandgate-*`` ones meanwhile.)"""
    return {
        d for prefix in ("sandgate-demo-", "sandgate-run-", "sandgate-net-") for d in Path("/tmp").glob(prefix + "*")
    }


@needs_root
def test_demo_runs_and_reports_the_swap_the_denials_and_the_metrics() -> None:
    before = demo_dirs()
    r = run("demo", timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert "streamed answer: 'Keys stay outside the sandbox.'" in out
    assert "(the REAL key, swapped in by the proxy)" in out
    assert "denied   secret_not_bound" in out and "denied   host_not_allowed" in out
    assert 'sandgate_secret_swaps_total{host="api.openai.com",secret="openai"} 1.0' in out
    assert "Real key in audit log or metrics: no" in out
    assert "OpenBao" in out and 'sandgate_vault_requests_total{result="success"}' in out
    assert "Bypass attempt (step 4): blocked" in out
    if shutil.which("runsc"):
        assert "Isolation: gVisor sandbox" in out and "gVisor sandbox in network namespace" in r.stderr
    assert demo_dirs() <= before, "the demo or its run left a directory behind"


@needs_root
def test_file_source_serves_the_value_and_a_missing_file_fails_closed(
    make_proxy: Callable[..., ProxyProcess], upstreams: dict[str, Seen], tmp_path: Path
) -> None:
    key = tmp_path / "openai.key"
    key.write_text(OPENAI.real + "\n")
    key.chmod(0o600)
    text = GOOD.replace("PLACEHOLDER", OPENAI.placeholder).replace(
        "source: {env: SG_TEST_OPENAI}", f"source: {{file: {key}}}"
    )
    p = make_proxy(text, env={})
    assert (
        curl(p.url, p.ca, "https://api.openai.com/v1/f", "-H", f"Authorization: Bearer {OPENAI.placeholder}").status
        == 200
    )
    assert upstreams["api"].requests[-1]["headers"]["authorization"] == f"Bearer {OPENAI.real}"
    missing = make_proxy(text.replace(str(key), str(tmp_path / "absent.key")), env={})
    reply = curl(
        missing.url, missing.ca, "https://api.openai.com/v1/f", "-H", f"Authorization: Bearer {OPENAI.placeholder}"
    )
    assert reply.status == 503 and reply.reason == "secret_unavailable"


@needs_root
def test_e08_the_proxy_never_dumps_core(proxy: ProxyProcess) -> None:
    limits = Path(f"/proc/{proxy.proc.pid}/limits").read_text()
    core = next(line for line in limits.splitlines() if line.startswith("Max core file size"))
    assert core.split()[4:6] == ["0", "0"]
