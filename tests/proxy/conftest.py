"""The sidecar in this process (``proxy.sidecar.serve``) on the session's event loop, for tests
that change one of its module constants or functions (monkeypatch) and drive it with real clients
through real TLS to the real test upstreams."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from proxy.sidecar import ProxyConfig, serve
from tests.conftest import MAIN_POLICY, secret_env
from tests.support.clients import curl
from tests.support.proxyproc import free_port
from tests.support.upstream import Seen


class Running:
    log: io.StringIO

    def __init__(self, port: int, metrics_port: int, confdir: Path, policy: Path) -> None:
        self.port, self.metrics_port, self.confdir, self.policy = port, metrics_port, confdir, policy

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def metric(self, series: str) -> float:
        """One series' value on the metrics port (0 when absent)."""
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            text = r.read().decode()
        for line in text.splitlines():
            if line.startswith(series + " "):
                return float(line.split()[-1])
        return 0.0

    def internal_errors(self) -> float:
        return self.metric('sandgate_internal_errors_total{task="data_path"}')


@contextlib.asynccontextmanager
async def running_sidecar(tmp_path: Path, pki: dict[str, Path], policy_text: str) -> AsyncIterator[Running]:
    """The sidecar serving ``policy_text`` (its file: :attr:`Running.policy`), its log lines kept in
    :attr:`Running.log`; stopped, and its exit asserted clean, after."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_text)
    port, metrics_port = free_port(), free_port()
    cfg = ProxyConfig(policy=policy, listen_port=port, metrics_port=metrics_port, confdir=tmp_path / "conf",
                      upstream_ca=(pki["ca"],), allow_private=("127.0.0.0/8",), audit_log=tmp_path / "audit.log")  # fmt: skip
    stop = asyncio.Event()
    task = asyncio.ensure_future(serve(cfg, stop=stop))
    await asyncio.sleep(0)
    logging.getLogger("sandgate").addHandler(caplog_handler := logging.StreamHandler(log_sink := io.StringIO()))
    for _ in range(200):
        if (tmp_path / "conf" / "ca.crt").exists():
            break
        await asyncio.sleep(0.05)
    run = Running(port, metrics_port, tmp_path / "conf", policy)
    run.log = log_sink
    try:
        yield run
    finally:
        stop.set()
        logging.getLogger("sandgate").removeHandler(caplog_handler)
    assert await asyncio.wait_for(task, 10) == 0


@pytest.fixture
async def sidecar(tmp_path: Path, pki: dict[str, Path], upstreams: dict[str, Seen],
                  monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Running]:  # fmt: skip
    """The sidecar serving tests.conftest.MAIN_POLICY, its secrets in the environment."""
    for k, v in secret_env().items():
        monkeypatch.setenv(k, v)
    async with running_sidecar(tmp_path, pki, MAIN_POLICY) as run:
        yield run


async def request(run: Running, url: str, *args: str) -> Any:
    return await asyncio.to_thread(curl, run.url, run.confdir / "ca.crt", url, *args)
