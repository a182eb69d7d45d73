"""The supervisor keeps background tasks alive, counts every failure, and gives up loudly."""

from __future__ import annotations

import asyncio
import logging

import pytest

from proxy.supervise import Supervisor


async def test_a_task_that_raises_is_logged_by_type_counted_and_restarted(caplog: pytest.LogCaptureFixture) -> None:
    failures: list[str] = []
    runs = 0
    second_run = asyncio.Event()

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise UnicodeDecodeError("utf-8", b"\xff secret-looking input", 0, 1, "invalid start byte")
        second_run.set()
        await asyncio.sleep(3600)

    sup = Supervisor(failures.append, first_backoff=0.01)
    with caplog.at_level(logging.ERROR, logger="sandgate.supervise"):
        sup.start("policy-watcher", flaky)
        await asyncio.wait_for(second_run.wait(), 2)
    await sup.stop()
    assert failures == ["policy-watcher"] and sup.healthy
    assert "UnicodeDecodeError" in caplog.text and "restarting" in caplog.text
    assert "secret-looking" not in caplog.text  # the exception's text is never logged


async def test_a_task_that_returns_is_a_failure_too() -> None:
    failures: list[str] = []
    done = asyncio.Event()
    calls = 0

    async def returns() -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            done.set()
            await asyncio.sleep(3600)

    sup = Supervisor(failures.append, first_backoff=0.01)
    sup.start("refresher", returns)
    await asyncio.wait_for(done.wait(), 2)
    await sup.stop()
    assert failures == ["refresher"]


async def test_a_task_that_keeps_failing_is_given_up_and_fatal_resolves() -> None:
    failures: list[str] = []

    async def broken() -> None:
        raise RecursionError

    sup = Supervisor(failures.append, max_failures=3, first_backoff=0.001)
    sup.start("watcher", broken)
    assert await asyncio.wait_for(sup.fatal(), 2) == "watcher"
    assert not sup.healthy and sup.failed == "watcher" and failures == ["watcher"] * 3
    await sup.stop()


async def test_cancelling_is_not_a_failure() -> None:
    failures: list[str] = []
    sup = Supervisor(failures.append)
    sup.start("idle", lambda: asyncio.sleep(3600))
    await asyncio.sleep(0)
    await sup.stop()
    assert failures == [] and sup.healthy


async def test_one_name_one_task() -> None:
    sup = Supervisor()
    sup.start("a", lambda: asyncio.sleep(3600))
    with pytest.raises(ValueError, match="already supervised"):
        sup.start("a", lambda: asyncio.sleep(3600))
    await sup.stop()
