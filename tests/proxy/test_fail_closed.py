"""Fail closed on our own bugs: an exception in any hook kills the flow (or refuses the connection)
instead of letting mitmproxy log it and forward the request unchecked.

Fault injection: the Chain's concerns are replaced by ones that raise (a bug cannot be provoked
on purpose from outside); the flows and connection objects are mitmproxy's real ones, and the
hooks are called the way mitmproxy's (patched) dispatcher calls them.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from mitmproxy import exceptions
from mitmproxy.proxy import server_hooks
from mitmproxy.test import tflow

from proxy.addons import Chain


class Boom:
    """Every attribute is a hook that raises; ``async_`` makes requestheaders fail after an await."""

    def __init__(self, async_: bool = False) -> None:
        self.async_ = async_

    def __getattr__(self, name: str) -> Any:
        def hook(*_a: object) -> Any:
            if self.async_ and name == "requestheaders":
                return self._later()
            raise RuntimeError("a bug, with sk-REAL-secret-in-its-message")

        return hook

    async def _later(self) -> None:
        await asyncio.sleep(0)
        raise RuntimeError("a bug after an await")


def chain(async_: bool = False) -> Chain:
    c = Chain.__new__(Chain)
    c.gate = c.swap = c.scrub = c.audit = Boom(async_)  # type: ignore[assignment]
    c.extra = ()
    return c


@pytest.mark.parametrize("hook", ["http_connect", "requestheaders", "request", "responseheaders", "websocket_message"])
def test_a_failing_flow_hook_kills_the_flow(hook: str, caplog: pytest.LogCaptureFixture) -> None:
    flow = tflow.tflow(resp=True)
    with caplog.at_level(logging.ERROR, logger="sandgate.proxy"):
        assert getattr(chain(), hook)(flow) is None
    assert flow.error is not None and flow.error.msg == flow.error.KILLED_MESSAGE
    assert f'"hook": "{hook}"' in caplog.text and "RuntimeError" in caplog.text
    assert "sk-REAL" not in caplog.text  # the exception's text is never logged


def test_a_failure_after_an_await_kills_the_flow() -> None:
    flow = tflow.tflow()
    pending = chain(async_=True).requestheaders(flow)
    assert pending is not None
    asyncio.run(pending)  # type: ignore[arg-type]
    assert flow.error is not None and flow.error.msg == flow.error.KILLED_MESSAGE


def test_a_failing_connection_hook_refuses_the_connection() -> None:
    flow = tflow.tflow()
    chain().client_connected(flow.client_conn)
    assert flow.client_conn.error == "sandgate: internal error"
    data = server_hooks.ServerConnectionHookData(flow.server_conn, flow.client_conn)
    chain().server_connect(data)
    assert data.server.error == "sandgate: internal error"


def test_a_killed_flow_is_not_killed_twice() -> None:
    flow = tflow.tflow()
    flow.kill()
    chain().request(flow)  # must not raise ControlException("Flow is not killable")
    with pytest.raises(exceptions.ControlException):
        flow.kill()
