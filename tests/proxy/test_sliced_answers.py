"""An answer scrubbed in slices (SLICE_TIME of scrubbing at a time, the upstream's reading paused
between slices so one costly answer cannot hold every other agent) leaves its upstream connection
in the pool as any other answer does: reading, so that the next request on it gets its answer.

SLICE_TIME is forced below zero here (every piece ends a slice): on a busy machine any token
stream's answer comes to this; the in-process sidecar, the upstream and curl are real.
"""

from __future__ import annotations

import pytest

from proxy.datapath import exchange as exchange_module
from tests.conftest import OPENAI, needs_root
from tests.proxy.conftest import Running, request

pytestmark = [needs_root, pytest.mark.asyncio(loop_scope="session")]


async def test_the_next_request_on_a_pooled_connection_is_answered(
    sidecar: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(exchange_module, "SLICE_TIME", -1.0)
    auth = f"Authorization: Bearer {OPENAI.placeholder}"
    for i in range(3):  # the first dials; the next ones take the connection the one before pooled
        reply = await request(sidecar, f"https://api.openai.com/sse?n=4&i={i}", "-H", auth)
        assert reply.status == 200, reply.body
        assert reply.body.count("data: ") == 5 and "data: [DONE]" in reply.body
        assert OPENAI.real not in reply.body
