"""Red team 35: the boundary between the sidecar and Vault / OpenBao.

Whatever Vault answers, and however it answers, the sidecar gets a clear answer (a ``SecretError``
with its reason, counted as what it was), keeps its memory, and recovers on its own once Vault is
healthy again; a value is never served longer than ``--secret-max-stale`` after it was fetched.
A real OpenBao where it can play the part; elsewhere a scripted "Vault" on loopback
(``tests.support.hostile``: raw bytes, so that it can answer as no Vault would).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from proxy.metrics import Metrics
from proxy.policy.load import parse_policy
from proxy.policy.model import Reason, SecretSourceRef
from proxy.secrets import SecretError, SecretStore
from proxy.secrets.calls import MAX_ANSWER
from proxy.secrets.vault import VaultSettings, VaultSource
from tests.support.hostile import HostileServer, Request, Wire
from tests.support.openbao import OpenBao
from tests.support.proxyproc import free_port

REAL = "sk-REAL-RT35-0123456789abcdef"


def ref(mount: str = "secret", path: str = "a", key: str = "k") -> SecretSourceRef:
    return SecretSourceRef(kind="vault", vault_mount=mount, vault_path=path, vault_key=key)


def vault_requests(source: VaultSource, result: str) -> float:
    value = source.metrics.registry.get_sample_value("sandgate_vault_requests_total", {"result": result})
    return value or 0.0


async def outcome(source: VaultSource, r: SecretSourceRef) -> str | SecretError:
    try:
        return await source.fetch(r)
    except SecretError as e:
        return e


def answer(status: int, body: object, extra: str = "") -> bytes:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s" % (
        status, len(data), extra.encode(), data)  # fmt: skip


Script = Callable[[Request, Wire], Awaitable[None]]


def replying(*answers: bytes) -> Script:
    """A script that sends each answer in turn, the last one from then on."""
    left = list(answers)

    async def script(req: Request, wire: Wire) -> None:
        await wire.send(left.pop(0) if len(left) > 1 else left[0])

    return script


LOOKUP = answer(200, {"data": {"ttl": 0, "renewable": False}})
V2 = answer(200, {"data": {"options": {"version": "2"}}})
V1 = answer(200, {"data": {"options": {"version": "1"}}})
READ_V2 = answer(200, {"data": {"data": {"k": REAL}, "metadata": {}}})


@pytest.fixture
def fake_vault() -> Iterator[HostileServer]:
    """A scripted Vault on loopback, plain HTTP; token lookups answered, the rest per test."""
    server = HostileServer("127.0.0.1", free_port())
    server.scripts["/v1/auth/token/lookup-self"] = replying(LOOKUP)
    server.start()
    yield server
    server.stop()


def source(server: HostileServer, **kw: object) -> VaultSource:
    settings: dict[str, object] = {"token": "hvs.rt35", "timeout": 2.0}
    settings.update(kw)
    return VaultSource(
        VaultSettings(addr=f"http://127.0.0.1:{server.port}", allow_http=True, **settings),  # type: ignore[arg-type]
        Metrics(),
    )


@pytest.fixture(scope="module")
def bao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenBao]:
    b = OpenBao(tmp_path_factory.mktemp("bao"), free_port())
    try:
        yield b
    finally:
        b.stop()


def bao_source(b: OpenBao) -> VaultSource:
    return VaultSource(VaultSettings(addr=b.addr, token=b.root().token, cacert=b.cacert, timeout=5.0), Metrics())


# -- F1, F2: the KV version of a mount --------------------------------------------------------------
def test_rt35_a_kv_mount_enabled_without_a_version_is_read(bao: OpenBao) -> None:
    """`bao secrets enable -path=X kv` describes the mount with ``options: null``: every read of it
    failed with an AttributeError, where `bao kv get` worked."""
    root = bao.root()
    root.sys.enable_secrets_engine("kv", path="rt35plain")
    root.secrets.kv.v1.create_or_update_secret("agents/x", {"k": REAL}, mount_point="rt35plain")
    assert asyncio.run(outcome(bao_source(bao), ref("rt35plain", "agents/x"))) == REAL


def test_rt35_a_mount_upgraded_to_kv_v2_is_read_at_the_next_fetch(bao: OpenBao) -> None:
    """The version of a mount was remembered for good: upgraded while the sidecar ran, every read
    of it failed as "does not exist" until a restart."""
    root = bao.root()
    root.sys.enable_secrets_engine("kv", path="rt35up", options={"version": "1"})
    root.secrets.kv.v1.create_or_update_secret("agents/x", {"k": REAL}, mount_point="rt35up")
    s = bao_source(bao)

    async def go() -> list[str | SecretError]:
        first = await outcome(s, ref("rt35up", "agents/x"))
        await asyncio.to_thread(root.sys.tune_mount_configuration, "rt35up", options={"version": "2"})
        return [first, await outcome(s, ref("rt35up", "agents/x"))]

    assert asyncio.run(go()) == [REAL, REAL]


def test_rt35_a_mount_description_vault_could_not_give_once_is_not_remembered(fake_vault: HostileServer) -> None:
    """One 503 (sealed) to the mount probe made a v1 mount v2 for the sidecar's lifetime."""
    fake_vault.scripts["/v1/sys/internal/ui/mounts/kv1"] = replying(answer(503, {"errors": ["sealed"]}), V1)
    fake_vault.scripts["/v1/kv1/data/a"] = replying(answer(404, {"errors": []}))
    fake_vault.scripts["/v1/kv1/a"] = replying(answer(200, {"data": {"k": REAL}}))
    s = source(fake_vault)

    async def go() -> list[str | SecretError]:
        return [await outcome(s, ref("kv1")), await outcome(s, ref("kv1"))]

    assert asyncio.run(go()) == [REAL, REAL]


# -- F3: an answer that never ends --------------------------------------------------------------------
def test_rt35_an_endless_answer_is_cut_at_its_bound_with_a_clear_reason(fake_vault: HostileServer) -> None:
    """A fast endless body was read into memory (3 GiB in 10 s) for as long as it came."""

    async def endless(req: Request, wire: Wire) -> None:
        await wire.send(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        piece = b" " * (1 << 18)
        while True:
            await wire.send(b"%x\r\n%s\r\n" % (len(piece), piece))

    fake_vault.scripts["/v1/sys/internal/ui/mounts/secret"] = replying(V2)
    fake_vault.scripts["/v1/secret/data/a"] = endless
    s = source(fake_vault, timeout=30.0)
    started = time.monotonic()
    e = asyncio.run(outcome(s, ref()))
    assert isinstance(e, SecretError) and e.reason is Reason.SECRET_UNAVAILABLE
    assert f"longer than {MAX_ANSWER} bytes" in str(e)
    assert time.monotonic() - started < 20, "cut at its size, not at the deadline"
    assert vault_requests(s, "error") == 1


# -- F4: a renewal that never ends ----------------------------------------------------------------------
def test_rt35_a_renewal_answered_a_byte_at_a_time_does_not_stop_the_reads(
    fake_vault: HostileServer, tmp_path: Path
) -> None:
    """The renewal held the client's lock for as long as its answer trickled, and every read after
    it timed out, behind it, although Vault answered everything else at once."""
    login = answer(200, {"auth": {"client_token": "hvs.rt35", "lease_duration": 3, "renewable": True}})

    async def trickle(req: Request, wire: Wire) -> None:
        await wire.send(b"HTTP/1.1 200 OK\r\nX-Slow: ")
        while True:
            await wire.send(b"a", pause=0.3)

    fake_vault.scripts["/v1/auth/approle/login"] = replying(login)
    fake_vault.scripts["/v1/auth/token/renew-self"] = trickle
    fake_vault.scripts["/v1/sys/internal/ui/mounts/secret"] = replying(V2)
    fake_vault.scripts["/v1/secret/data/a"] = replying(READ_V2)

    async def go(s: VaultSource) -> list[str | SecretError]:
        results = [await outcome(s, ref())]  # (the login: a TTL of 3 s)
        renewal = asyncio.ensure_future(s.renew_loop())
        try:
            await asyncio.sleep(2.5)  # (renewal due at 2 s: it trickles from then on)
            for _ in range(3):
                results.append(await outcome(s, ref()))
                await asyncio.sleep(0.5)
            return results
        finally:
            renewal.cancel()

    secret_id = tmp_path / "secret-id"
    secret_id.write_text("sid-rt35")
    s = source(fake_vault, auth="approle", token=None, role="r", secret_id_file=str(secret_id), timeout=1.0)
    assert asyncio.run(go(s)) == [REAL] * 4
    assert any(r.path.endswith("renew-self") for r in fake_vault.requests), "the renewal was tried"


# -- F5: a slow Vault and many secrets ------------------------------------------------------------------
def test_rt35_a_refresh_of_many_secrets_from_a_slow_vault_gets_every_one(fake_vault: HostileServer) -> None:
    """The time a read waited for a Vault thread counted against its timeout: with 30 secrets and
    Vault answering each in 0.4 s, the last six timed out in the queue at every refresh."""

    async def slow(req: Request, wire: Wire) -> None:
        await asyncio.sleep(0.3)
        await wire.send(READ_V2)

    fake_vault.scripts["/v1/sys/internal/ui/mounts/secret"] = replying(V2)
    for i in range(12):
        fake_vault.scripts[f"/v1/secret/data/s{i}"] = slow
    s = source(fake_vault, timeout=1.0)

    async def go() -> list[str | SecretError]:
        return list(await asyncio.gather(*(outcome(s, ref(path=f"s{i}")) for i in range(12))))

    assert asyncio.run(go()) == [REAL] * 12


# -- F6: a stale value is served within --secret-max-stale of its fetch, on every lookup ----------------
class _Flaky:
    def __init__(self) -> None:
        self.up = True

    async def fetch(self, r: SecretSourceRef) -> str:
        if not self.up:
            raise SecretError(Reason.SECRET_UNAVAILABLE, "vault unreachable", transient=True)
        return REAL


def test_rt35_a_value_is_not_served_past_max_stale_even_before_the_next_refresh() -> None:
    """The age was checked only when a refresh ran: a value was swapped in for up to
    max_stale + the refresh interval after Vault went away."""
    policy = parse_policy("""
apiVersion: sandgate.dev/v1alpha1
kind: EgressPolicy
metadata: {name: rt35}
spec:
  allow: [{host: api.example.com}]
  secrets:
    - {name: s, placeholder: sk-ph-stale-0000, source: {vault: {mount: secret, path: a, key: k}}, hosts: [api.example.com]}
""")
    flaky = _Flaky()
    store = SecretStore({"vault": flaky}, max_stale=0.5)
    asyncio.run(store.load(policy))
    assert store.get("s") == REAL and store.serving("s")
    flaky.up = False  # (and no refresh runs)
    time.sleep(0.6)
    with pytest.raises(SecretError) as e:
        store.get("s")
    assert e.value.reason is Reason.SECRET_UNAVAILABLE and "--secret-max-stale" in str(e.value)
    assert not store.serving("s")


# -- F7: answers of shapes no Vault gives -----------------------------------------------------------------
DEEP = b'{"data":' * 100_000 + b"1" + b"}" * 100_000


@pytest.mark.parametrize(
    ("path", "reply"),
    [
        ("/v1/secret/data/a", b"HTTP/1.1 204 No Content\r\n\r\n"),
        ("/v1/secret/data/a", answer(201, {"data": {"data": {"k": REAL}}})),
        ("/v1/secret/data/a", answer(200, b"not json at all")),
        ("/v1/secret/data/a", answer(200, [])),
        ("/v1/secret/data/a", answer(200, {"data": "a string"})),
        ("/v1/secret/data/a", answer(200, {"data": {"data": ["k"]}})),
        ("/v1/secret/data/a", answer(200, DEEP)),
        ("/v1/secret/data/a", answer(404, {"data": []})),
        ("/v1/secret/data/a", answer(404, [1, 2])),
        ("/v1/auth/token/lookup-self", answer(200, {"data": None})),
        ("/v1/auth/token/lookup-self", answer(200, {"data": {"ttl": "3600"}})),
        ("/v1/auth/token/lookup-self", answer(200, {"data": {"ttl": 10**18}})),
        ("/v1/auth/token/lookup-self", b"HTTP/1.1 204 No Content\r\n\r\n"),
    ],
    ids=[
        "204",
        "201",
        "text",
        "list",
        "data-str",
        "data-list",
        "deep",
        "404-data-list",
        "404-list",
        "lookup-null",
        "ttl-str",
        "ttl-huge",
        "lookup-204",
    ],
)
def test_rt35_an_answer_of_an_odd_shape_is_a_clear_error_counted_as_one(
    fake_vault: HostileServer, path: str, reply: bytes
) -> None:
    """17 of 28 such answers let a TypeError, AttributeError, KeyError or RecursionError out of the
    source, counted as a success (the Vault-failing alert never fired); the log said only "the vault
    source failed (TypeError)"."""
    fake_vault.scripts["/v1/sys/internal/ui/mounts/secret"] = replying(V2)
    fake_vault.scripts["/v1/secret/data/a"] = replying(READ_V2)
    fake_vault.scripts[path] = replying(reply)
    s = source(fake_vault)
    e = asyncio.run(outcome(s, ref()))
    assert isinstance(e, SecretError), e
    assert "secret/a#k" in str(e) or "vault" in str(e)
    assert vault_requests(s, "success") == 0
    assert sum(vault_requests(s, r) for r in ("error", "not_found", "invalid", "unreachable")) == 1


# -- F9: no storms -----------------------------------------------------------------------------------------
def test_rt35_reads_a_role_may_not_make_do_not_log_in_again_for_each(fake_vault: HostileServer, tmp_path: Path) -> None:
    """With AppRole and a role that may not read the secrets, every read of every secret logged in
    again (101 logins, each a new token never revoked, in 10 s)."""
    login = answer(200, {"auth": {"client_token": "hvs.rt35", "lease_duration": 3600, "renewable": True}})
    fake_vault.scripts["/v1/auth/approle/login"] = replying(login)
    fake_vault.scripts["/v1/sys/internal/ui/mounts/secret"] = replying(V2)
    for i in range(10):
        fake_vault.scripts[f"/v1/secret/data/s{i}"] = replying(answer(403, {"errors": ["permission denied"]}))
    (tmp_path / "sid").write_text("sid-rt35")
    s = source(fake_vault, auth="approle", token=None, role="r", secret_id_file=str(tmp_path / "sid"))

    async def go() -> list[str | SecretError]:
        out = []
        for _ in range(3):
            out += await asyncio.gather(*(outcome(s, ref(path=f"s{i}")) for i in range(10)))
        return out

    results = asyncio.run(go())
    assert all(isinstance(r, SecretError) and r.reason is Reason.SECRET_UNAVAILABLE for r in results)
    logins = sum(r.path == "/v1/auth/approle/login" for r in fake_vault.requests)
    assert logins <= 2, logins


def test_rt35_a_refused_renewal_is_tried_again_with_growing_pauses(fake_vault: HostileServer) -> None:
    """A static token whose renewal Vault refused was renewed again every second, forever."""
    fake_vault.scripts["/v1/auth/token/lookup-self"] = replying(answer(200, {"data": {"ttl": 3, "renewable": True}}))
    fake_vault.scripts["/v1/auth/token/renew-self"] = replying(answer(403, {"errors": ["permission denied"]}))
    fake_vault.scripts["/v1/sys/internal/ui/mounts/secret"] = replying(V2)
    fake_vault.scripts["/v1/secret/data/a"] = replying(READ_V2)
    s = source(fake_vault)

    async def go() -> None:
        assert await outcome(s, ref()) == REAL
        renewal = asyncio.ensure_future(s.renew_loop())
        await asyncio.sleep(9)
        renewal.cancel()

    asyncio.run(go())
    renewals = sum(r.path == "/v1/auth/token/renew-self" for r in fake_vault.requests)
    # Due at 2 s, then 1, 2, 4 s after each refusal: 2, 3, 5, 9 (the old loop: one a second, 7).
    assert 1 <= renewals <= 4, renewals
