"""Fail closed on our own bugs: an exception anywhere in the data path cuts the connection it
happened on (and its peer) instead of letting a request through unchecked or a response through
unscrubbed; it is logged by exception type only and counted as
``sandgate_internal_errors_total{task="data_path"}``.

Fault injection: the sidecar runs in this process (``proxy.sidecar.serve``), with one of its own
functions replaced by one that raises (a bug cannot be provoked on purpose from outside); the
connections, TLS, the upstream and the client are real.

Where the per-request modules run compiled (``proxy.native``), their own functions cannot be
replaced: the first test's cases are ``plain_python`` (./scripts/test runs them again with
SANDGATE_NATIVE=0), and the second replaces what the compiled code calls through Python (the policy's
``decide`` on the request's way, the runtime's bound values on the answer's), so the compiled
code's own handling of a bug is tested too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from proxy.core.values import Finder
from proxy.datapath import exchange as exchange_module
from proxy.datapath.exchange import Exchange
from proxy.runtime import Runtime
from tests.conftest import OPENAI, needs_root
from tests.proxy.conftest import Running, request

pytestmark = [needs_root, pytest.mark.asyncio(loop_scope="session")]

SECRET_LEAKED = "sensitive-request-detail-8271"


def raising(exc: Exception) -> Callable[..., Any]:
    def boom(*_a: object, **_k: object) -> Any:
        raise exc

    return boom


@pytest.mark.plain_python
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


class _BrokenAutomaton:
    """An automaton that raises whatever it is asked: a bug in what scrubs the answer."""

    def find_matches_as_indexes(self, data: bytes, overlapping: bool = False) -> list[tuple[int, int, int]]:
        raise RuntimeError(SECRET_LEAKED)


def _broken_scrubbing(self: Runtime, host: str, port: int) -> tuple[Finder, frozenset[str]]:
    """A finder whose every search raises. (Its automaton is given, as build_finder gives its own;
    no prefilter, nor probes (under _PROBE patterns), nor engine timing, which could answer first.)"""
    patterns = Finder.for_values([("openai", OPENAI.real, OPENAI.placeholder)]).patterns[:8]
    finder = Finder(patterns, shards=[_BrokenAutomaton()], loop_for_large=False, prefilter=False)  # type: ignore[list-item]
    return finder, frozenset([OPENAI.real])


@pytest.mark.parametrize(("target", "name", "replacement"), [
    (exchange_module, "decide", raising(RuntimeError(SECRET_LEAKED))),  # deciding the request
    (Runtime, "bound_scrubbing", _broken_scrubbing),  # scrubbing the answer's head
], ids=["request", "answer"])  # fmt: skip
async def test_a_bug_under_the_data_path_cuts_the_connection_compiled_or_not(
    sidecar: Running, monkeypatch: pytest.MonkeyPatch, target: object, name: str, replacement: object
) -> None:
    monkeypatch.setattr(target, name, replacement)
    before = sidecar.internal_errors()
    reply = await request(sidecar, "https://api.openai.com/v1/fail-closed", "-H",
                          f"Authorization: Bearer {OPENAI.placeholder}")  # fmt: skip
    assert reply.status in (0, 502)
    assert OPENAI.real not in reply.body
    logged = sidecar.log.getvalue()
    assert "RuntimeError" in logged and SECRET_LEAKED not in logged
    assert sidecar.internal_errors() > before


async def test_the_proxy_keeps_serving_after_a_bug(sidecar: Running, monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as m:
        m.setattr(exchange_module, "decide", raising(KeyError("x")))
        assert (await request(sidecar, "https://echo.example.com/a")).status == 0
    assert (await request(sidecar, "https://echo.example.com/b")).status == 200
