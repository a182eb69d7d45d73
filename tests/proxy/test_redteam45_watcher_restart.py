"""Red team 45: the policy watcher, restarted after a failure, forgets the change it failed on.

``_watch_policy`` takes the file's stamp (dev, inode, mtime, ctime, size) when it STARTS, and
reloads only when the stamp differs from that. The supervisor restarts it after any exception
(0.1 s, then 0.2, 0.4 ... s later). So a change whose reload failed for a transient reason (any
exception out of the read or out of ``serve_held``: a thread that could not be started, a
MemoryError, a bug), and any change written during the back-off, is taken as "already seen" by
the restarted watcher and is never applied. The proxy keeps the old allowlist with no further
signal than one ``internal_errors_total{task="policy-watcher"}``: a revocation is silently lost
until the file changes again.

Fault injection as in test_fail_closed.py: the sidecar runs in this process and its reader raises
once, standing in for any transient failure. Copy to tests/proxy/. Fails on 991a75a.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import proxy.sidecar as sidecar_module
from tests.conftest import needs_root
from tests.proxy.conftest import Running, request, running_sidecar
from tests.support.upstream import Seen

pytestmark = [needs_root, pytest.mark.asyncio(loop_scope="session")]

POLICY = """apiVersion: sandgate.dev/v1alpha1
kind: EgressPolicy
metadata: {name: rt45-watcher}
spec:
  allow:
    - host: api.openai.com
    - host: echo.example.com
"""
REVOKED = POLICY.replace("    - host: echo.example.com\n", "")


@pytest.fixture
async def sidecar(tmp_path: Path, pki: dict[str, Path], upstreams: dict[str, Seen]) -> AsyncIterator[Running]:
    async with running_sidecar(tmp_path, pki, POLICY) as run:
        yield run


async def test_a_revocation_whose_reload_failed_once_is_still_applied(
    sidecar: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert (await request(sidecar, "https://echo.example.com/before")).status == 200
    real = sidecar_module.read_policy
    failures = []

    def fails_once(path: Path) -> Any:
        if not failures:
            failures.append(time.monotonic())
            raise RuntimeError("can't start new thread")  # (what to_thread raises when threads run out)
        return real(path)

    monkeypatch.setattr(sidecar_module, "read_policy", fails_once)
    sidecar.policy.write_text(REVOKED)  # the security team takes echo.example.com away
    for _ in range(100):
        if failures:
            break
        await asyncio.sleep(0.05)
    assert failures, "the watcher never looked at the change"
    # The failure is counted (as it should be) ...
    assert sidecar.metric('sandgate_internal_errors_total{task="policy-watcher"}') == 1
    # ... and the watcher is restarted: the revocation must apply on its next look, not never.
    deadline = time.monotonic() + 8
    status = None
    while time.monotonic() < deadline:
        reply = await request(sidecar, "https://echo.example.com/after")
        status = reply.reason or reply.status
        if status == "host_not_allowed":
            break
        await asyncio.sleep(0.5)
    assert status == "host_not_allowed", f"the revoked host still answers {status} 8 s after the watcher restarted"


async def test_a_change_written_while_the_watcher_backs_off_is_applied(
    sidecar: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first change fails to load (transiently); a second one, written during the supervisor's
    back-off before the watcher runs again, is taken as the file the restarted watcher starts from."""
    assert (await request(sidecar, "https://echo.example.com/before")).status == 200
    real = sidecar_module.read_policy
    failed = []

    def fails_once_and_meanwhile_the_file_changes(path: Path) -> Any:
        if not failed:
            failed.append(1)
            sidecar.policy.write_text(REVOKED)  # written while the first reload is failing
            raise MemoryError
        return real(path)

    monkeypatch.setattr(sidecar_module, "read_policy", fails_once_and_meanwhile_the_file_changes)
    sidecar.policy.write_text(POLICY.replace("metadata: {name: rt45-watcher}", "metadata: {name: rt45-watcher-2}"))
    deadline = time.monotonic() + 10
    status = None
    while time.monotonic() < deadline:
        reply = await request(sidecar, "https://echo.example.com/after")
        status = reply.reason or reply.status
        if status == "host_not_allowed":
            break
        await asyncio.sleep(0.5)
    assert failed and status == "host_not_allowed", f"the revocation never applied (echo.example.com: {status})"
