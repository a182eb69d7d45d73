"""Supervised background work: no task may die silently.

The sidecar and the webhook each run a few long-lived tasks beside their servers (the policy
watcher, the secret refresher, Vault token renewal, the webhook's certificate reload). A task that
raises, or returns when it should run forever, is logged by exception type only (its text may
quote input), counted through ``on_failure`` (``sandgate_internal_errors_total{task}``), and
started again after a back-off that doubles up to ``max_backoff``. A task that keeps failing
(``max_failures`` within ``window`` seconds) is given up: :meth:`Supervisor.fatal` resolves and the
process is expected to exit non-zero, so the kubelet restarts the container instead of letting it
serve on a stale policy. :attr:`Supervisor.healthy` is what readiness reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable

__all__ = ["Supervisor"]

log = logging.getLogger("sandgate.supervise")


class Supervisor:
    def __init__(
        self,
        on_failure: Callable[[str], None] = lambda task: None,
        *,
        max_failures: int = 5,
        window: float = 60.0,
        first_backoff: float = 0.1,
        max_backoff: float = 5.0,
    ) -> None:
        self._on_failure = on_failure
        self._max_failures = max_failures
        self._window = window
        self._first_backoff = first_backoff
        self._max_backoff = max_backoff
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._fatal: asyncio.Future[str] | None = None
        self.failed: str | None = None  # the task that was given up, if any

    @property
    def healthy(self) -> bool:
        return self.failed is None

    def start(self, name: str, factory: Callable[[], Awaitable[None]]) -> None:
        """Run ``factory()`` as the task ``name``, again whenever it ends."""
        if name in self._tasks:
            raise ValueError(f"task {name!r} is already supervised")
        self._tasks[name] = asyncio.get_running_loop().create_task(self._keep(name, factory), name=f"sandgate:{name}")

    async def fatal(self) -> str:
        """Resolves with the name of the first task that could not be kept running."""
        if self._fatal is None:
            self._fatal = asyncio.get_running_loop().create_future()
            if self.failed is not None:
                self._fatal.set_result(self.failed)
        return await self._fatal

    async def stop(self) -> None:
        tasks = list(self._tasks.values())
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks.clear()

    async def _keep(self, name: str, factory: Callable[[], Awaitable[None]]) -> None:
        failures: deque[float] = deque()
        backoff = self._first_backoff
        while True:
            started = time.monotonic()
            try:
                await factory()
                error = "ended"  # these tasks run until cancelled: returning is a bug too
            except asyncio.CancelledError:
                raise
            except Exception as e:
                error = type(e).__name__
            self._on_failure(name)
            now = time.monotonic()
            if now - started > self._window:
                backoff = self._first_backoff  # it ran well for a while: start the back-off over
            failures.append(now)
            while failures and now - failures[0] > self._window:
                failures.popleft()
            if len(failures) >= self._max_failures:
                log.error(json.dumps({"event": "internal_error", "task": name, "error": error, "action": "gave up"}))
                self.failed = self.failed or name
                if self._fatal is not None and not self._fatal.done():
                    self._fatal.set_result(name)
                return
            log.error(
                json.dumps(
                    {"event": "internal_error", "task": name, "error": error, "action": f"restarting in {backoff:g} s"}
                )
            )
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self._max_backoff)
