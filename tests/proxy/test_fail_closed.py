"""Fail closed on our own bugs: an exception anywhere in the data path cuts the connection it
happened on (and its peer) instead of letting a request through unchecked or a response through
unscrubbed; it is logged by exception type only and counted as
``sandgate_internal_errors_total{task="data_path"}``.

Fault injection: the sidecar runs in this process (``proxy.sidecar.serve``), with one of its own
functions replaced by one that raises (a bug cannot be provoked on purpose from outside); the
connections, TLS, the upstream and the client are real.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from proxy.datapath import exchange as exchange_module
from proxy.datapath.exchange import Exchange
from proxy.sidecar import ProxyConfig, serve
from tests.conftest import MAIN_POLICY, OPENAI, needs_root, secret_env
from tests.support.clients import curl
from tests.support.proxyproc import free_port
from tests.support.upstream import Seen

pytestmark = [needs_root, pytest.mark.asyncio(loop_scope="session")]

SECRET_LEAKED = "sensitive-request-detail-8271"


class Running:
    log: io.StringIO

    def __init__(self, port: int, metrics_port: int, confdir: Path) -> None:
        self.port, self.metrics_port, self.confdir = port, metrics_port, confdir

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def internal_errors(self) -> float:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            text = r.read().decode()
        for line in text.splitlines():
            if line.startswith('sandgate_internal_errors_total{task="data_path"}'):
                return float(line.split()[-1])
        return 0.0


@pytest.fixture
async def sidecar(tmp_path: Path, pki: dict[str, Path], upstreams: dict[str, Seen],
                  monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Running]:  # fmt: skip
    for k, v in secret_env().items():
        monkeypatch.setenv(k, v)
    policy = tmp_path / "policy.yaml"
    policy.write_text(MAIN_POLICY)
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
    run = Running(port, metrics_port, tmp_path / "conf")
    run.log = log_sink
    yield run
    stop.set()
    logging.getLogger("sandgate").removeHandler(caplog_handler)
    assert await asyncio.wait_for(task, 10) == 0


def raising(exc: Exception) -> Callable[..., Any]:
    def boom(*_a: object, **_k: object) -> Any:
        raise exc

    return boom


async def request(run: Running, url: str, *args: str) -> Any:
    return await asyncio.to_thread(curl, run.url, run.confdir / "ca.crt", url, *args)


@pytest.mark.parametrize(
    ("target", "name"),
    [(Exchange, "start"), (Exchange, "on_headers_complete"), (Exchange, "on_body"), (exchange_module, "scrub_body")],
    ids=["gate", "response-head", "response-body", "scrubber"],
)
async def test_a_bug_cuts_the_connection_and_is_logged_by_type_only(
    sidecar: Running, monkeypatch: pytest.MonkeyPatch, target: object, name: str
) -> None:
    monkeypatch.setattr(target, name, raising(RuntimeError(SECRET_LEAKED)))
    before = sidecar.internal_errors()
    reply = await request(sidecar, "https://api.openai.com/v1/fail-closed", "-H",
                          f"Authorization: Bearer {OPENAI.placeholder}")  # fmt: skip
    assert reply.status in (0, 502)  # cut (or, before anything was sent, a generic 502)
    assert OPENAI.real not in reply.body
    logged = sidecar.log.getvalue()
    assert "RuntimeError" in logged and SECRET_LEAKED not in logged
    assert sidecar.internal_errors() > before


async def test_the_proxy_keeps_serving_after_a_bug(sidecar: Running, monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as m:
        m.setattr(Exchange, "start", raising(KeyError("x")))
        assert (await request(sidecar, "https://echo.example.com/a")).status == 0
    assert (await request(sidecar, "https://echo.example.com/b")).status == 200
