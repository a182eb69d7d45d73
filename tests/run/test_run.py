"""`sandgate run -- CMD` in its explicit-proxy mode: CMD gets placeholders and the per-run CA, the
upstream gets the real key, CMD's exit code is run's, and nothing is left running afterwards."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import OPENAI, needs_root, secret_env
from tests.support.leaks import encodings
from tests.support.upstream import Seen

pytestmark = needs_root

POLICY = f"""apiVersion: sandgate.dev/v1alpha1
kind: EgressPolicy
metadata: {{name: local}}
spec:
  allow: [{{host: api.openai.com}}]
  secrets:
    - name: openai
      placeholder: {OPENAI.placeholder}
      source: {{env: {OPENAI.env}}}
      hosts: [api.openai.com]
      agentEnv: [OPENAI_API_KEY]
"""


def run(tmp_path: Path, pki: dict[str, Path], *cmd: str) -> subprocess.Popen[str]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    return subprocess.Popen(
        [sys.executable, "-m", "sandgate", "run", "--policy", str(policy), "--upstream-ca", str(pki["ca"]),
         "--allow-private", "127.0.0.0/8", "--explicit-proxy", "--", *cmd],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **secret_env()},
    )  # fmt: skip


def leftover_proxies() -> list[str]:
    out = subprocess.run(["pgrep", "-af", "sandgate-run-"], capture_output=True, text=True, check=False).stdout
    return [line for line in out.splitlines() if "pgrep" not in line]


def test_cmd_holds_placeholders_and_the_upstream_gets_the_key(
    tmp_path: Path, pki: dict[str, Path], upstreams: dict[str, Seen]
) -> None:
    script = 'env; curl -sS -o /dev/null -w "%{http_code}" -H "Authorization: Bearer $OPENAI_API_KEY" https://api.openai.com/v1/run-test'
    p = run(tmp_path, pki, "sh", "-c", script)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    assert out.rstrip().endswith("200")
    assert f"OPENAI_API_KEY={OPENAI.placeholder}" in out and "HTTPS_PROXY=http://127.0.0.1:" in out
    assert all(form not in out for form in encodings(OPENAI.real)), "a real value reached CMD's environment"
    assert "WARNING: explicit-proxy mode" in err
    seen = next(r for r in reversed(upstreams["api"].requests) if r["path"] == "/v1/run-test")
    assert seen["headers"]["authorization"] == f"Bearer {OPENAI.real}"
    assert leftover_proxies() == []


def test_exit_code_is_cmds(tmp_path: Path, pki: dict[str, Path]) -> None:
    p = run(tmp_path, pki, "sh", "-c", "exit 7")
    p.communicate(timeout=60)
    assert p.returncode == 7
    assert leftover_proxies() == []


def test_sigterm_reaches_cmd_and_tears_everything_down(tmp_path: Path, pki: dict[str, Path]) -> None:
    p = run(tmp_path, pki, "sh", "-c", "trap 'exit 42' TERM; echo started; while :; do sleep 0.1; done")
    assert p.stdout is not None
    deadline = time.monotonic() + 30
    while p.stdout.readline().strip() != "started":
        assert time.monotonic() < deadline
    p.send_signal(signal.SIGTERM)
    p.communicate(timeout=30)
    assert p.returncode == 42
    assert leftover_proxies() == []


def test_an_invalid_policy_or_no_command_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("spec: [")
    r = subprocess.run(
        [sys.executable, "-m", "sandgate", "run", "--policy", str(bad), "--", "true"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 2 and "invalid policy" in r.stderr
    good = tmp_path / "good.yaml"
    good.write_text(POLICY)
    r = subprocess.run(
        [sys.executable, "-m", "sandgate", "run", "--policy", str(good)], capture_output=True, text=True, check=False
    )
    assert r.returncode == 2 and "give the command after --" in r.stderr


def test_sigkill_of_run_still_stops_the_proxy(tmp_path: Path, pki: dict[str, Path]) -> None:
    p = run(tmp_path, pki, "sh", "-c", "echo started; exec sleep 31.5")
    assert p.stdout is not None and p.stdout.readline().strip() == "started"
    assert leftover_proxies() != []
    p.kill()
    p.wait(10)
    deadline = time.monotonic() + 15
    while (
        leftover_proxies()
        or subprocess.run(["pgrep", "-f", "sleep 31.5"], capture_output=True, check=False).returncode == 0
    ):
        assert time.monotonic() < deadline, f"the proxy or CMD outlived its run: {leftover_proxies()}"
        time.sleep(0.2)
    # Its directory (with the per-run CA's key) could not be removed by the killed run; the next
    # run removes it.
    stale = [d for d in Path("/tmp").glob("sandgate-run-*") if (d / "run.pid").exists()
             and (d / "run.pid").read_text() == str(p.pid)]  # fmt: skip
    assert stale
    done = run(tmp_path, pki, "true")
    done.communicate(timeout=60)
    assert done.returncode == 0
    assert not any(d.exists() for d in stale)


def test_secrets_from_env_overrides_the_policys_sources(
    tmp_path: Path, pki: dict[str, Path], upstreams: dict[str, Seen]
) -> None:
    """A laptop without Vault runs the cluster's policy as is: --secrets-from env reads each secret
    from SANDGATE_SECRET_<NAME>, which CMD does not get."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        POLICY.replace(f"source: {{env: {OPENAI.env}}}", "source: {vault: {mount: secret, path: x, key: k}}")
    )
    script = 'env; curl -sS -o /dev/null -w "%{http_code}" -H "Authorization: Bearer $OPENAI_API_KEY" https://api.openai.com/v1/from-env'
    p = subprocess.run(
        [sys.executable, "-m", "sandgate", "run", "--policy", str(policy), "--upstream-ca", str(pki["ca"]),
         "--allow-private", "127.0.0.0/8", "--explicit-proxy", "--secrets-from", "env", "--", "sh", "-c", script],
        capture_output=True, text=True, env={**os.environ, "SANDGATE_SECRET_OPENAI": OPENAI.real}, timeout=60,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert p.stdout.rstrip().endswith("200")
    assert "SANDGATE_SECRET_OPENAI" not in p.stdout and OPENAI.real not in p.stdout


def test_secrets_from_vault_refuses_a_policy_with_other_sources(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    p = subprocess.run(
        [sys.executable, "-m", "sandgate", "run", "--policy", str(policy), "--secrets-from", "vault", "--", "true"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert p.returncode == 2
    assert "spec.secrets[0] (openai): its source is env, not vault" in p.stderr


def test_metrics_out_keeps_the_proxys_final_metrics(
    tmp_path: Path, pki: dict[str, Path], upstreams: dict[str, Seen]
) -> None:
    metrics = tmp_path / "metrics.txt"
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    p = subprocess.run(
        [sys.executable, "-m", "sandgate", "run", "--policy", str(policy), "--upstream-ca", str(pki["ca"]),
         "--allow-private", "127.0.0.0/8", "--explicit-proxy", "--metrics-out", str(metrics), "--", "curl", "-sS",
         "-o", "/dev/null", "-H", f"Authorization: Bearer {OPENAI.placeholder}", "https://api.openai.com/v1/m"],
        capture_output=True, text=True, env={**os.environ, **secret_env()}, timeout=60,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert 'sandgate_secret_swaps_total{host="api.openai.com",secret="openai"} 1.0' in metrics.read_text()
