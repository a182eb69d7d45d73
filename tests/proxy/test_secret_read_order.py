"""Reads of a secret that overlap: the one begun first may finish last (a slow Vault answering a
reload's read while a refresh begun after it is served). What it read is older than what is served:
it must never replace it, or a key rotated away comes back in service until the next refresh.

Each test holds a read back with an event until a read begun after it has been served."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from proxy import sidecar
from proxy.audit import AuditLog
from proxy.metrics import Metrics
from proxy.netcheck import AddressPolicy
from proxy.policy.load import parse_policy
from proxy.policy.model import Policy, Reason
from proxy.runtime import Limits, Runtime
from proxy.secrets import SecretError, SecretStore

OLD, NEW = "sk-real-old-" + "a" * 24, "sk-real-new-" + "b" * 24


def _policy(names: list[str], host: str = "api.example.com", name: str = "order") -> Policy:
    """A secret per name, read from the environment variable of the same name."""
    secrets = "".join(
        f"    - {{name: {n}, placeholder: sandgate-ph-{n}-xxxxxxxx, source: {{env: {n}}}, hosts: [{host}]}}\n"
        for n in names
    )
    return parse_policy(f"""
apiVersion: sandgate.dev/v1alpha1
kind: EgressPolicy
metadata: {{name: {name}}}
spec:
  allow: [{{host: {host}}}]
  secrets:
{secrets}""")


class _Vault:
    """An env-kind source standing for Vault: a read gets what ``values`` holds as it begins (a value
    or an error), then waits for the next event queued for its variable in ``gates``, if any."""

    def __init__(self, values: dict[str, str | SecretError]) -> None:
        self.values = values
        self.gates: dict[str, list[asyncio.Event]] = {}
        self.begun = 0

    async def fetch(self, ref: Any) -> str:
        answer = self.values[ref.env]
        self.begun += 1
        queued = self.gates.get(ref.env)
        if queued:
            await queued.pop(0).wait()
        if isinstance(answer, SecretError):
            raise answer
        return answer


async def _began(vault: _Vault, reads: int) -> None:
    while vault.begun < reads:
        await asyncio.sleep(0)


def test_secret_read_begun_before_a_rotation_and_ended_after_a_later_one_does_not_bring_the_old_value_back() -> None:
    async def go() -> tuple[str, str]:
        vault = _Vault({"s": OLD})
        store = SecretStore({"env": vault})
        policy = _policy(["s"])
        await store.load(policy)
        slow = asyncio.Event()
        vault.gates["s"] = [slow]
        first = asyncio.ensure_future(store.load(policy))  # begins before the rotation, answers late
        await _began(vault, 2)
        vault.values["s"] = NEW  # the key is rotated in Vault
        await store.load(policy)  # begun after the rotation, served first
        served = store.get("s")
        slow.set()
        await first
        return served, store.get("s")

    assert asyncio.run(go()) == (NEW, NEW), "the value rotated away is served again"


def test_secret_read_order_is_per_secret_an_older_read_still_gives_the_values_it_has_newer() -> None:
    """The older read loses the secret a later read gave, not the others: ``b`` was kept (a
    transient failure) from a read begun before it, and its value is the newer one."""

    async def go() -> tuple[str, str]:
        vault = _Vault({"a": OLD, "b": OLD})
        store = SecretStore({"env": vault})
        policy = _policy(["a", "b"])
        await store.load(policy)  # a, b: OLD
        slow_a, slow_b = asyncio.Event(), asyncio.Event()
        vault.gates = {"a": [slow_a], "b": [slow_b]}
        vault.values["b"] = NEW  # b rotated before the first read begins, a after it
        first = asyncio.ensure_future(store.load(policy))  # a: OLD, b: NEW; answers late
        await _began(vault, 4)
        vault.values["a"] = NEW
        vault.values["b"] = SecretError(Reason.SECRET_UNAVAILABLE, "vault unreachable", transient=True)
        await store.load(policy)  # a: NEW; b keeps OLD (the last good value)
        assert (store.get("a"), store.get("b")) == (NEW, OLD)
        slow_a.set()
        slow_b.set()
        await first
        return store.get("a"), store.get("b")

    assert asyncio.run(go()) == (NEW, NEW)


def test_secret_revoked_by_a_later_read_is_not_served_again_by_one_begun_before() -> None:
    async def go() -> str | None:
        vault = _Vault({"s": OLD})
        store = SecretStore({"env": vault})
        policy = _policy(["s"])
        await store.load(policy)
        slow = asyncio.Event()
        vault.gates["s"] = [slow]
        first = asyncio.ensure_future(store.load(policy))
        await _began(vault, 2)
        vault.values["s"] = SecretError(Reason.SECRET_UNAVAILABLE, "permission denied")  # not transient
        await store.load(policy)
        slow.set()
        await first
        try:
            return store.get("s")
        except SecretError:
            return None

    assert asyncio.run(go()) is None, "a value read before the secret was revoked is served again"


@pytest.mark.parametrize("second", ["value", "transient"])
def test_secret_read_order_does_not_depend_on_which_read_finishes_first(second: str) -> None:
    """Two overlapping reads give the same outcome whichever ends first: a transient failure of the
    later one keeps the earlier one's value as the last good one, in either order."""

    async def go(first_ends_first: bool) -> str | None:
        vault = _Vault({"s": OLD})
        store = SecretStore({"env": vault}, max_stale=60)
        policy = _policy(["s"])
        await store.load(policy)
        gate_1, gate_2 = asyncio.Event(), asyncio.Event()
        vault.gates["s"] = [gate_1, gate_2]
        vault.values["s"] = NEW
        one = asyncio.ensure_future(store.load(policy))
        await _began(vault, 2)
        vault.values["s"] = (
            NEW + "2" if second == "value" else SecretError(Reason.SECRET_UNAVAILABLE, "unreachable", transient=True)
        )
        two = asyncio.ensure_future(store.load(policy))
        await _began(vault, 3)
        for gate, task in [(gate_1, one), (gate_2, two)][:: 1 if first_ends_first else -1]:
            gate.set()
            await task
        try:
            return store.get("s")
        except SecretError:
            return None

    outcomes = {asyncio.run(go(True)), asyncio.run(go(False))}
    assert outcomes == {NEW + "2" if second == "value" else NEW}, outcomes


def test_secret_a_reloads_read_ending_after_a_refresh_begun_later_does_not_put_the_old_value_back() -> None:
    """Through the sidecar: a reload is served, its reads go on in the background (slow Vault); the
    key is rotated and a refresh reads and serves the new value; then the reload's read ends."""

    async def go() -> tuple[str, str, str]:
        vault = _Vault({"s": OLD})
        before, after = _policy(["s"], name="before"), _policy(["s"], host="other.example.com", name="after")
        rt = Runtime(
            before, SecretStore({"env": vault}), Metrics(), AuditLog(None, {}), AddressPolicy(()), Limits(), False
        )
        await sidecar._load_secrets(rt, before)
        slow = asyncio.Event()
        vault.gates["s"] = [slow]
        await rt.serve_held(after, "sha-after")  # what the policy watcher does, then reads in the background
        reading = asyncio.ensure_future(sidecar._read_reload(rt, after, "sha-after"))
        await _began(vault, 2)
        vault.values["s"] = NEW
        await sidecar._load_secrets(rt, None)  # the refresher, on the policy served
        served = rt.store.get("s")
        slow.set()
        await reading
        return rt.policy.name, served, rt.store.get("s")

    assert asyncio.run(go()) == ("after", NEW, NEW), "the reload's late read served the value rotated away"


def test_a_stalled_read_of_one_secret_does_not_age_another_past_max_stale() -> None:
    """Red team 57: the values of a read are served together, once its last secret is read; with one
    secret's read stalled to its timeout, another's answer waited with it, and the value held for
    that other secret (its source healthy) aged past --secret-max-stale and failed closed every
    cycle. A value read again unchanged is fresh at once; the stalled secret's own value still
    expires as it must."""

    async def go() -> tuple[str, bool]:
        vault = _Vault({"stalled": OLD, "healthy": NEW})
        store = SecretStore({"env": vault}, max_stale=1.0)
        policy = _policy(["stalled", "healthy"])
        await store.load(policy)
        await asyncio.sleep(0.6)  # the refresh interval
        stall = asyncio.Event()
        vault.gates["stalled"] = [stall]
        refresh = asyncio.ensure_future(store.load(policy))
        await _began(vault, 4)
        await asyncio.sleep(0.7)  # 1.3 s since the first load; "healthy" was read again 0.7 s ago
        healthy = store.get("healthy")
        stalled_served = store.serving("stalled")
        stall.set()
        await refresh
        return healthy, stalled_served

    assert asyncio.run(go()) == (NEW, False)


async def test_rt60_a_value_that_is_in_the_policys_own_text_is_invalid() -> None:
    """Metrics labels and audit fields carry the policy's name as it is: a value read that it holds
    cannot be kept from their readers, and is not used (a reload that brings such a text is refused:
    test_redteam60)."""
    store = SecretStore({"env": _Vault({"a": OLD, "b": NEW})})
    failed = await store.load(_policy(["a", "b"], name=f"team-{OLD}"))
    assert set(failed) == {"a"} and failed["a"].reason is Reason.SECRET_INVALID
    assert "appears in the policy itself" in str(failed["a"]) and OLD not in str(failed["a"])
    assert store.get("b") == NEW
