"""The reference docs say what the code does: every deny reason with its status and report-mode
behaviour (docs/deny-reasons.md), every metric with its type and labels (docs/metrics.md and the
README's table), checked against the enum and the live metric objects, so neither drifts."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client.metrics import MetricWrapperBase

from proxy.metrics import NAMES, TASKS, VAULT_RESULTS, Metrics, OneThreadMetric
from proxy.policy.model import Reason
from webhook.app import Metrics as WebhookMetrics

ROOT = Path(__file__).resolve().parents[2]


def table_rows(path: Path) -> list[list[str]]:
    """The cells of every table row whose first cell is code (`...`)."""
    return [
        [c.strip() for c in line.strip().strip("|").split("|")]
        for line in path.read_text().splitlines()
        if line.startswith("| `")
    ]


def test_deny_reasons_doc_lists_exactly_the_enum_with_its_status_and_report_mode() -> None:
    rows = {r[0].strip("`"): r for r in table_rows(ROOT / "docs" / "deny-reasons.md")}
    assert set(rows) == {r.value for r in Reason}
    for reason in Reason:
        _, status, mode, when = rows[reason.value][:4]
        assert int(re.match(r"\d+", status).group()) == reason.http_status, reason  # type: ignore[union-attr]
        assert mode == ("reported" if reason.reportable else "enforced"), reason
        assert len(when) > 40, f"{reason}: say when it happens"


def _exported() -> dict[str, tuple[str, tuple[str, ...]]]:
    """name -> (type, label names) of every metric the sidecar and the webhook register."""
    out: dict[str, tuple[str, tuple[str, ...]]] = {}
    for metrics in (Metrics(), WebhookMetrics()):
        for m in vars(metrics).values():
            if isinstance(m, MetricWrapperBase):
                kind = m._type  # prometheus_client keeps these private
                name = m._name + ("_total" if kind == "counter" else "")
                out[name] = (kind, tuple(m._labelnames))
            elif isinstance(m, OneThreadMetric):  # the data path's own (proxy.metrics.LoopCounter ...)
                out[m.name + ("_total" if m.type == "counter" else "")] = (m.type, m.labelnames)
    return out


def test_metrics_doc_lists_every_metric_with_its_type_and_labels() -> None:
    exported = _exported()
    assert set(exported) == set(NAMES)
    documented = {
        r[0].strip("`"): (r[1], tuple(re.findall(r"`([a-z_0-9]+)`", r[2])))
        for r in table_rows(ROOT / "docs" / "metrics.md")
        if r[0].startswith("`sandgate_")
    }
    assert documented == exported
    doc = (ROOT / "docs" / "metrics.md").read_text()
    assert [v for v in (*TASKS, *VAULT_RESULTS) if f"`{v}`" not in doc] == []


def test_the_readme_names_every_metric_and_links_the_references() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Metrics\n", 1)[1].split("\n## ", 1)[0]
    assert [n for n in NAMES if f"`{n}`" not in section] == []
    for doc in ("docs/metrics.md", "docs/audit.md", "docs/deny-reasons.md"):
        assert f"]({doc})" in readme
