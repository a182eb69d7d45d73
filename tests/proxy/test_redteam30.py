"""Red team 30: variants of the day's fixes to the policy's life, on the runtime itself (what a
host was given, retired by a reload or rotations; a refresh behind a reload).

Each test asserts an invariant; a failing test names a break. What broke, fixed since: a refresh
queued behind a reload published the policy it had read before waiting (the old one, for good); the
retired values were re-retired at every load in sorted order, so the cap of 64 dropped the smallest,
however recent; one reload retiring more than 64 values from a host lost the rest at once.
"""

from __future__ import annotations

import asyncio
import secrets as pysecrets
from typing import Any

from proxy import sidecar
from proxy.audit import AuditLog
from proxy.metrics import Metrics
from proxy.netcheck import AddressPolicy
from proxy.policy.load import parse_policy
from proxy.runtime import Limits, Runtime
from proxy.secrets import EnvSource, SecretStore


def _policy(secrets: list[tuple[str, str, list[str]]], name: str = "p") -> str:
    """secrets: (name, env var, hosts)."""
    hosts = sorted({h for _, _, hs in secrets for h in hs} | {"a.example"})
    allow = ", ".join(f"{{host: {h}}}" for h in hosts)
    lines = [
        "apiVersion: sandgate.dev/v1alpha1",
        "kind: EgressPolicy",
        f"metadata: {{name: {name}}}",
        "spec:",
        f"  allow: [{allow}]",
        "  secrets:" if secrets else "  secrets: []",
    ]
    for n, env, hs in secrets:
        lines.append(
            f"    - {{name: {n}, placeholder: sandgate-ph-{n}-xxxxxxxx, source: {{env: {env}}}, hosts: [{', '.join(hs)}]}}"
        )
    return "\n".join(lines) + "\n"


class _Env(dict[str, str]):
    """An env source whose fetches can be made slow."""

    def __init__(self) -> None:
        super().__init__()
        self.delay = 0.0

    async def fetch(self, ref: Any) -> str:
        if self.delay:
            await asyncio.sleep(self.delay)
        return await EnvSource(self).fetch(ref)


def _runtime(policy_text: str, env: _Env) -> Runtime:
    policy = parse_policy(policy_text)
    store = SecretStore({"env": env})
    return Runtime(policy, store, Metrics(), AuditLog(None, {}), AddressPolicy(()), Limits(), False)


def _val() -> str:
    return "sk-real-" + pysecrets.token_hex(16)


def test_rt30_a_reload_unbinding_70_secrets_from_one_host_keeps_scrubbing_all_it_was_given() -> None:
    """README: a host a reload unbinds keeps having its answers scrubbed of the values it was given,
    and those values may not leave. One reload that removes 70 secrets bound to one host (a
    multi-key gateway) keeps 64: six values the host holds come back to the agent in clear and may
    be sent anywhere."""
    env = _Env()
    specs = []
    for i in range(70):
        env[f"K{i:02d}"] = _val()
        specs.append((f"s{i:02d}", f"K{i:02d}", ["gw.example"]))

    async def go() -> list[str]:
        rt = _runtime(_policy(specs), env)
        await rt.load(rt.policy)
        await rt.load(parse_policy(_policy([], name="p2")))
        missed = []
        for i in range(70):
            v = env[f"K{i:02d}"].encode()
            if rt.bound_finder("gw.example", 443).search(b"echo: " + v) is None:
                missed.append(f"s{i:02d} not scrubbed from gw.example")
            if rt.outbound.search(b"x=" + v) is None:
                missed.append(f"s{i:02d} may leave")
        return missed

    missed = asyncio.run(go())
    assert missed == [], missed


def test_rt30_the_last_64_values_a_host_was_given_are_all_kept() -> None:
    """README promises "the last 64 per host". Every load re-retires what it served (retired values
    are in self._values under their secret's name, so _bindings counts them as held) in SORTED order,
    so the ring is ordered by value, not by age: eviction drops the smallest values, however recent.
    Here 70 rotations; the value given one rotation before the current one is evicted when it sorts
    low."""
    env = _Env()
    given: list[str] = []

    async def go() -> list[int]:
        # values that sort in the reverse of their age: the newest are the smallest
        env["K"] = f"sk-real-{9999:04d}-" + pysecrets.token_hex(12)
        given.append(env["K"])
        rt = _runtime(_policy([("s", "K", ["h.example"])]), env)
        await rt.load(rt.policy)
        for i in range(1, 70):
            env["K"] = f"sk-real-{9999 - i:04d}-" + pysecrets.token_hex(12)
            given.append(env["K"])
            await rt.load(rt.policy)
        lost = []
        for age, v in enumerate(reversed(given[-65:-1]), start=1):  # the 64 before the current one
            if rt.bound_finder("h.example", 443).search(v.encode()) is None:
                lost.append(age)
        return lost

    lost = asyncio.run(go())
    assert lost == [], f"values given this many rotations ago are no longer scrubbed: {lost}"


def test_rt30_a_refresh_queued_behind_a_reload_never_puts_the_old_policy_back() -> None:
    """A refresh came due while a reload was fetching (a slow Vault): it waited, then published the
    policy it had read before waiting -- the old one, for good, with the new one's hash in every
    record. A refresh takes the policy served when its turn comes."""
    env = _Env()
    env["K"] = _val()
    old = parse_policy(_policy([("s", "K", ["old-bound.example"])], name="old"))
    new = parse_policy(_policy([("s", "K", ["new-bound.example"])], name="new"))

    async def go() -> str:
        rt = Runtime(old, SecretStore({"env": env}), Metrics(), AuditLog(None, {}), AddressPolicy(()), Limits(), False)
        await rt.load(old)
        env.delay = 0.2
        reload = asyncio.ensure_future(sidecar._load_secrets(rt, new, "sha-new"))
        await asyncio.sleep(0.05)  # the reload holds the lock, fetching
        refresh = asyncio.ensure_future(sidecar._load_secrets(rt, None))  # what _refresh_secrets does
        await asyncio.gather(reload, refresh)
        return rt.policy.name

    assert asyncio.run(go()) == "new"
