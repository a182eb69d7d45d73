"""The benchmark keeps working (tiny counts; it measures nothing here: no timing is asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import needs_root

ROOT = Path(__file__).resolve().parents[2]


@needs_root
def test_benchmark_runs_and_prints_its_table() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    tables: list[list[str]] = []
    for line in out.stdout.splitlines():
        if line.startswith("| configuration"):
            tables.append([])
        elif line.startswith("| ") and tables:
            tables[-1].append(line.split("|")[1].strip())
    assert len(tables) == 5  # keep-alive, new connection, SSE (new and kept-alive connections), throughput
    assert all(rows == ["direct", "mitmdump (bare)", "sandgate", "squid (CONNECT only)"] for rows in tables)
    sse = next(
        line
        for line in out.stdout.splitlines()
        if line.startswith("| sandgate |") and line.rstrip().endswith(("| yes |", "| NO |"))
    )
    assert sse.rstrip().endswith("| yes |"), "the sidecar buffered an SSE stream"
    assert "Swaps counted in its metrics: yes" in out.stdout
    assert "Vault requests per 1,000 proxied requests" in out.stdout
    assert "Soak: sandgate RSS" in out.stdout


def test_webhook_benchmark_runs_and_prints_its_table() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "webhook.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "| sequential, 50 |" in out.stdout and "admissions/s" in out.stdout
