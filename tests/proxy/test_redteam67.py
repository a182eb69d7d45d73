"""Red team 67: long values, many of them, and rotations, on the runtime itself.

What it found: (1) a value replaced by rotations more than 64 times on its host (or by three
rotations of 40 secrets bound to one gateway) left that host's guard with nothing said, though
the README and the ``secret_rotated`` line promised it guarded until the proxy restarts; the cap
stays (every value guarded costs every request's search), and is now said in both, with a
``secret_unguarded`` warning naming the secret and the host for each value it lets go. (2) The
first answer from a host that 64 values of 8,000 characters are bound to held the event loop
~5 s (a CONNECT sent meanwhile waited 4.7 s), most of it remaking each value's forms, which the
outbound finder's build had already made: the host's finder now takes them from there."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import secrets as pysecrets

import pytest

from proxy import runtime as runtime_module
from proxy.core import values as values_module
from proxy.policy.load import parse_policy
from tests.proxy.test_redteam30 import _Env, _policy, _runtime


def _unguarded(caplog: pytest.LogCaptureFixture) -> list[dict[str, str]]:
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "sandgate.proxy"]
    return [line for line in lines if line.get("event") == "secret_unguarded"]


def test_rt67_a_value_the_cap_lets_go_is_said_with_its_secret_and_host(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Rotations past the cap: the values within it stay scrubbed from the host's answers and
    refused in requests; each one let go is a warning naming the secret and the host, never the value."""
    monkeypatch.setattr(runtime_module, "RETIRED_PER_HOST", 3)
    env = _Env()
    given: list[str] = []

    async def go() -> runtime_module.Runtime:
        env["K"] = "sk-real-" + pysecrets.token_hex(16)
        given.append(env["K"])
        rt = _runtime(_policy([("s", "K", ["h.example"])]), env)
        await rt.load(rt.policy)
        for _ in range(7):
            env["K"] = "sk-real-" + pysecrets.token_hex(16)
            given.append(env["K"])
            await rt.load(rt.policy)
        return rt

    with caplog.at_level(logging.INFO, logger="sandgate.proxy"):
        rt = asyncio.run(go())
    bound = rt.bound_finder("h.example", 443)
    guarded = [v for v in given if bound.search(v.encode()) is not None]
    # the current value, the one it replaced (held by the store), and the last 3 retired
    assert guarded == given[-5:]
    assert all(rt.outbound.search(b"x=" + v.encode()) is not None for v in given[-5:])
    warned = _unguarded(caplog)
    assert len(warned) == len(given) - 5
    assert all(w["secret"] == "s" and w["host"] == "h.example" for w in warned)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert not any(v in logged for v in given)
    rotated = [json.loads(r.getMessage()) for r in caplog.records if '"secret_rotated"' in r.getMessage()]
    assert rotated and all("secret_unguarded" in line["detail"] for line in rotated)


def test_rt67_no_warning_while_every_value_retired_is_within_the_cap(caplog: pytest.LogCaptureFixture) -> None:
    env = _Env()

    async def go() -> None:
        env["K"] = "sk-real-" + pysecrets.token_hex(16)
        rt = _runtime(_policy([("s", "K", ["h.example"])]), env)
        await rt.load(rt.policy)
        for _ in range(5):
            env["K"] = "sk-real-" + pysecrets.token_hex(16)
            await rt.load(rt.policy)
        await rt.load(parse_policy(_policy([], name="p2")))  # (unbinds the last two: retired too)

    with caplog.at_level(logging.INFO, logger="sandgate.proxy"):
        asyncio.run(go())
    assert _unguarded(caplog) == []


def test_rt67_a_hosts_first_answer_remakes_no_values_forms(monkeypatch: pytest.MonkeyPatch) -> None:
    """Eight values of 8,000 characters bound to one host: the host's finder is built from the
    forms the outbound finder's build made (none made again), and finds every value, whole and
    in base64."""
    env = _Env()
    specs = []
    for i in range(8):
        env[f"K{i}"] = "sk-real-" + pysecrets.token_urlsafe(6000)
        specs.append((f"s{i}", f"K{i}", ["gw.example"]))

    async def go() -> runtime_module.Runtime:
        rt = _runtime(_policy(specs), env)
        await rt.load(rt.policy)
        return rt

    rt = asyncio.run(go())
    made: list[str] = []
    real = values_module.patterns_of
    monkeypatch.setattr(values_module, "patterns_of", lambda n, v, p: made.append(n) or real(n, v, p))
    bound = rt.bound_finder("gw.example", 443)
    assert made == []
    for i in range(8):
        v = env[f"K{i}"].encode()
        assert bound.search(b"echo " + v) is not None
        assert bound.search(b"echo " + base64.b64encode(v)) is not None
