"""Run a computation written in steps (a generator that yields None between steps, then its answer)
on the event loop, letting requests run between the steps."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable


async def finish[T](steps: Iterable[T | None]) -> T:
    """The answer of ``steps``: the last thing it yields that is not None, the event loop run once
    for each None before it."""
    answer: T | None = None
    for step in steps:
        if step is None:
            await asyncio.sleep(0)
        else:
            answer = step
    if answer is None:
        raise ValueError("the steps ended without an answer")
    return answer
