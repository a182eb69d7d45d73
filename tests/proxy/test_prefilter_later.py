"""A finder serves before its prefilter is compiled, and gets it at the event loop's next turn.

The prefilter (Hyperscan, proxy.core.anyof) was most of a small finder's build: ~11 ms of the
sidecar's start for a policy's 5 values, and as much again inside the first answer from each bound
host. It only ever says "nothing here" sooner: until it is there the automaton answers alone, with
the same hits. The runtime now serves the finder and compiles its prefilter at the loop's next
turn; the sidecar holds them all until its ready line.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.audit import AuditLog
from proxy.core import finder as finder_module
from proxy.core import values
from proxy.core.values import Finder
from proxy.metrics import Metrics
from proxy.netcheck import AddressPolicy
from proxy.policy.load import parse_policy
from proxy.runtime import Limits, Runtime
from proxy.secrets import EnvSource, SecretStore

VALUE = "sk-proj-" + "Q7x" * 14
PH = "sandgate-ph-openai-xxxxxxxx"
CLEAN = b"an answer without any value in it " * 100  # past the prefilter's threshold
POLICY = parse_policy(f"""
apiVersion: sandgate.dev/v1alpha1
kind: EgressPolicy
metadata: {{name: later}}
spec:
  allow: [{{host: api.example.com}}]
  secrets:
    - {{name: openai, placeholder: {PH}, source: {{env: SG_LATER_KEY}}, hosts: [api.example.com]}}
""")


def _hits(finder: Finder, data: bytes) -> list[tuple[int, int, bytes]]:
    return [(h.start, h.end, h.pattern.find) for h in finder.hits(data)]


@given(
    before=st.binary(max_size=300),
    form=st.sampled_from([f for f, _ in values.forms(VALUE, PH)] + [b""]),
    after=st.binary(max_size=300),
    case=st.booleans(),
)
def test_a_finder_without_its_prefilter_finds_what_one_with_it_finds(
    before: bytes, form: bytes, after: bytes, case: bool
) -> None:
    data = before + (form.swapcase() if case else form) + after + CLEAN
    later = Finder.for_values([("openai", VALUE, PH)], runs=True, prefilter=False)
    now = Finder.for_values([("openai", VALUE, PH)], runs=True)
    assert _hits(later, data) == _hits(now, data)
    later.add_prefilter()
    assert _hits(later, data) == _hits(now, data)


def test_until_its_prefilter_is_there_a_finder_never_says_nothing_is_there() -> None:
    finder = Finder.for_values([("openai", VALUE, PH)], runs=True, prefilter=False)
    assert not finder.nowhere(CLEAN)  # ("may be there": the automaton is asked)
    finder.add_prefilter()
    assert finder.nowhere(CLEAN)
    assert not finder.nowhere(b"x" * 300 + VALUE.lower().encode())


def _runtime() -> Runtime:
    store = SecretStore({"env": _Env()})
    return Runtime(POLICY, store, Metrics(), AuditLog(None, {}), AddressPolicy(()), Limits(), False)


class _Env(EnvSource):
    async def fetch(self, ref: object) -> str:
        return VALUE


def test_the_runtime_serves_its_finders_at_once_and_compiles_their_prefilters_at_the_next_turn() -> None:
    async def go() -> tuple[bool, bool, bool, bool, bool]:
        rt = _runtime()
        assert await rt.load(POLICY) == {}  # (the load's own last step served the finder: no turn since)
        bound = rt.bound_finder("api.example.com", 443)
        before = rt.outbound.nowhere(CLEAN) or bound.nowhere(CLEAN)
        served = bool(rt.outbound.hits(VALUE.encode())) and bool(bound.hits(VALUE.encode()))
        await asyncio.sleep(0)
        return before, served, rt.outbound.nowhere(CLEAN), bound.nowhere(CLEAN), bool(bound.hits(VALUE.encode()))

    assert asyncio.run(go()) == (False, True, True, True, True)


def test_a_prefilter_that_cannot_be_built_is_counted_and_its_finder_still_finds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    any_of = finder_module.any_of

    def broken(finds: list[bytes]) -> Callable[[bytes], bool | None] | None:
        if finds:  # (the runtime's empty finder, made before any load, has nothing to compile)
            raise MemoryError
        return any_of(finds)

    monkeypatch.setattr(finder_module, "any_of", broken)  # (what add_prefilter compiles with)

    async def go() -> tuple[bool, float]:
        rt = _runtime()
        assert await rt.load(POLICY) == {}
        await asyncio.sleep(0)
        errors = rt.metrics.registry.get_sample_value("sandgate_internal_errors_total", {"task": "data_path"})
        return bool(rt.outbound.hits(b"x" * 300 + VALUE.encode())), errors or 0.0

    assert asyncio.run(go()) == (True, 1.0)


def test_the_find_loop_is_given_up_past_its_budget() -> None:
    finder = Finder.for_values([("openai", VALUE, PH)], runs=True)
    assert len(finder.patterns) >= 16
    assert finder_module._loop_within(finder.patterns, finder_module._SAMPLE, 10**12)
    assert not finder_module._loop_within(finder.patterns, finder_module._SAMPLE, 0)


def test_prefilters_held_for_the_start_compile_once_released(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sidecar holds them until its ready line (they are ~11 ms of its start)."""
    compiled: list[list[bytes]] = []
    any_of = finder_module.any_of

    def recorded(finds: list[bytes]) -> Callable[[bytes], bool | None] | None:
        if finds:  # (not the runtime's empty finder, made before any load)
            compiled.append(finds)
        return any_of(finds)

    monkeypatch.setattr(finder_module, "any_of", recorded)  # (what add_prefilter compiles with)

    async def go() -> tuple[int, bool, bool]:
        rt = _runtime()
        rt.hold_prefilters()
        assert await rt.load(POLICY) == {}
        await asyncio.sleep(0.05)
        held = len(compiled)
        found = bool(rt.outbound.hits(VALUE.encode()))  # (it serves meanwhile)
        rt.release_prefilters()
        await asyncio.sleep(0)
        return held, found, rt.outbound.nowhere(CLEAN)

    assert asyncio.run(go()) == (0, True, True)
    assert len(compiled) == 1
