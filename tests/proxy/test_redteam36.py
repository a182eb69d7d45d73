"""Red team 36: the Vault boundary again, after red team 35's fixes (tests/proxy/test_redteam35.py
has the scripted "Vault" and the helpers used here)."""

from __future__ import annotations

import asyncio
import os
import ssl
import time
from pathlib import Path

import pytest
import trustme

from proxy.metrics import Metrics
from proxy.policy.load import parse_policy
from proxy.policy.model import Reason, SecretSourceRef
from proxy.secrets import SecretError, SecretStore
from proxy.secrets.vault import VaultSettings, VaultSource
from tests.proxy.test_redteam35 import (
    LOOKUP,
    READ_V2,
    REAL,
    V2,
    answer,
    bao,  # noqa: F401 (a fixture)
    fake_vault,  # noqa: F401 (a fixture)
    outcome,
    ref,
    replying,
    source,
)
from tests.support.hostile import HostileServer, Request, Wire
from tests.support.openbao import OpenBao
from tests.support.proxyproc import free_port


def _policy(path: str = "a", n: int = 1) -> str:
    secrets = "".join(
        f"    - {{name: s{i}, placeholder: sk-ph-rt36-{i:04d}, source: {{vault: {{mount: secret, path: {path}{i}, key: k}}}}, "
        f"hosts: [api.example.com]}}\n"
        for i in range(n)
    )
    return f"""
apiVersion: sandgate.dev/v1alpha1
kind: EgressPolicy
metadata: {{name: rt36}}
spec:
  allow: [{{host: api.example.com}}]
  secrets:
{secrets}"""


class _Scripted:
    """A source whose answer per path is set by the test: a value, an error, or a delay first."""

    def __init__(self) -> None:
        self.values: dict[str, str | SecretError] = {}
        self.delay: dict[str, float] = {}

    async def fetch(self, r: SecretSourceRef) -> str:
        assert r.vault_path is not None
        await asyncio.sleep(self.delay.get(r.vault_path, 0))
        v = self.values[r.vault_path]
        if isinstance(v, SecretError):
            raise v
        return v


# -- F1: each value is stamped when it was read --------------------------------------------------------
def test_rt36_a_value_read_at_once_is_not_made_younger_by_the_slow_reads_beside_it() -> None:
    """Every value of a refresh was stamped when the last read of the policy ended: one read at
    once, beside eight that stalled, was served seconds past --secret-max-stale."""
    src = _Scripted()
    src.values = {"a0": REAL, "a1": REAL + "1"}
    src.delay = {"a1": 1.0}
    store = SecretStore({"vault": src}, max_stale=60)
    asyncio.run(store.load(parse_policy(_policy(n=2))))
    age = store.age("s0")
    assert age is not None and age >= 0.9, age


# -- F8: a secret moved to another source by a reload ------------------------------------------------------
def test_rt36_a_secret_moved_to_a_source_that_fails_is_not_served_the_old_sources_value() -> None:
    src = _Scripted()
    src.values = {"old0": REAL, "new0": SecretError(Reason.SECRET_UNAVAILABLE, "vault unreachable", transient=True)}
    store = SecretStore({"vault": src}, max_stale=60)
    asyncio.run(store.load(parse_policy(_policy("old"))))
    assert store.get("s0") == REAL
    asyncio.run(store.load(parse_policy(_policy("new"))))
    with pytest.raises(SecretError):
        store.get("s0")
    assert ("s0", REAL) in store.scrub_values(), "the value it was given is still scrubbed"


# -- F2, F6: credential files and the environment's token ---------------------------------------------------
@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_rt36_a_credential_file_that_is_no_regular_file_is_refused_not_read(
    fake_vault: HostileServer,  # noqa: F811
    tmp_path: Path,
    kind: str,
) -> None:
    """A FIFO blocked a Vault thread, and the lock every read needs, for good; /dev/zero filled the
    memory (1.3 GiB in a second), and the log blamed Vault."""
    path = tmp_path / "secret-id"
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path = Path("/dev/zero")
    s = source(fake_vault, auth="approle", token=None, role="r", secret_id_file=str(path), timeout=2.0)
    started = time.monotonic()
    e = asyncio.run(outcome(s, ref()))
    assert isinstance(e, SecretError) and "cannot read the approle credential file" in str(e), e
    assert time.monotonic() - started < 1.5
    assert not fake_vault.requests


def test_rt36_a_login_carries_no_token_from_the_environment_nor_reads_one_from_home(
    fake_vault: HostileServer,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """hvac took VAULT_TOKEN or ~/.vault-token when given none, and sent it with an AppRole login;
    a FIFO at ~/.vault-token hung the login for good."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("VAULT_TOKEN", "hvs.FROM-THE-ENVIRONMENT")
    os.mkfifo(tmp_path / ".vault-token")
    (tmp_path / "sid").write_text("sid-rt36")
    login = answer(200, {"auth": {"client_token": "hvs.rt36", "lease_duration": 3600, "renewable": True}})
    fake_vault.scripts["/v1/auth/approle/login"] = replying(login)
    fake_vault.scripts["/v1/sys/internal/ui/mounts/secret"] = replying(V2)
    fake_vault.scripts["/v1/secret/data/a"] = replying(READ_V2)
    s = source(fake_vault, auth="approle", token=None, role="r", secret_id_file=str(tmp_path / "sid"))
    assert asyncio.run(outcome(s, ref())) == REAL
    logins = [r for r in fake_vault.requests if r.path == "/v1/auth/approle/login"]
    assert logins and not logins[0].header("x-vault-token")


# -- F3: --vault-proxy with a name --------------------------------------------------------------------------
def test_rt36_through_a_vault_proxy_the_name_goes_to_the_proxy_unresolved(tmp_path: Path) -> None:
    """The client resolved VAULT_ADDR's name itself and sent CONNECT <address>: sandgate run's
    relay, which accepts Vault by its name only (its sandbox resolves every name to a sink),
    refused it, and a named Vault could never be read."""
    # (a name under .localhost: the client's resolver answers it without a query, so the old code
    # sent CONNECT 127.0.0.1:PORT, and no test ever asks a DNS server)
    host = "vault.rt36.localhost"
    ca = trustme.CA()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(host).configure_cert(ctx)
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    vault = HostileServer("127.0.0.1", free_port(), ssl_ctx=ctx)
    vault.scripts["/v1/auth/token/lookup-self"] = replying(LOOKUP)
    vault.scripts["/v1/sys/internal/ui/mounts/secret"] = replying(V2)
    vault.scripts["/v1/secret/data/a"] = replying(READ_V2)
    proxy = HostileServer("127.0.0.1", free_port())
    seen: list[str] = []

    async def tunnel(req: Request, wire: Wire) -> None:
        seen.append(req.path)
        up_r, up_w = await asyncio.open_connection("127.0.0.1", vault.port)
        await wire.send(b"HTTP/1.1 200 Connection established\r\n\r\n")
        wire.keep = False

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            while data := await r.read(65536):
                w.write(data)
                await w.drain()
            w.close()

        await asyncio.gather(pipe(wire.reader, up_w), pipe(up_r, wire.writer), return_exceptions=True)

    target = f"{host}:{vault.port}"
    proxy.scripts[target] = tunnel
    vault.start()
    proxy.start()
    try:
        s = VaultSource(
            VaultSettings(addr=f"https://{target}", token="hvs.rt36", cacert=str(tmp_path / "ca.pem"), timeout=2.0,
                          proxy=f"http://127.0.0.1:{proxy.port}"),
            Metrics(),
        )  # fmt: skip
        assert asyncio.run(outcome(s, ref())) == REAL
        assert seen and set(seen) == {target}
    finally:
        proxy.stop()
        vault.stop()


# -- F5: a login that fails is not tried for every secret ------------------------------------------------
@pytest.mark.parametrize(
    "reply",
    [
        answer(500, {"errors": ["internal error"]}),
        answer(400, {"errors": ["invalid secret id"]}),
        answer(200, {"auth": {"client_token": "hvs.rt36", "lease_duration": "forever"}}),
    ],
    ids=["500", "400", "odd-ttl"],
)
def test_rt36_a_failing_login_is_not_tried_again_for_every_secret(
    fake_vault: HostileServer,  # noqa: F811
    tmp_path: Path,
    reply: bytes,
) -> None:
    """20 secrets, 3 refreshes: 60 logins (with a real Vault, perhaps 60 tokens never revoked)."""
    fake_vault.scripts["/v1/auth/approle/login"] = replying(reply)
    (tmp_path / "sid").write_text("sid-rt36")
    s = source(fake_vault, auth="approle", token=None, role="r", secret_id_file=str(tmp_path / "sid"))

    async def go() -> list[str | SecretError]:
        out: list[str | SecretError] = []
        for _ in range(3):
            out += await asyncio.gather(*(outcome(s, ref(path=f"s{i}")) for i in range(20)))
        return out

    results = asyncio.run(go())
    assert all(isinstance(r, SecretError) for r in results)
    assert sum(r.path == "/v1/auth/approle/login" for r in fake_vault.requests) == 1


# -- F7: a token that may read its secrets but not itself ------------------------------------------------
def test_rt36_a_least_privilege_token_that_cannot_look_itself_up_reads_its_secrets(
    bao: OpenBao,  # noqa: F811
) -> None:
    root = bao.root()
    root.secrets.kv.v2.create_or_update_secret("rt36/a", {"k": REAL}, mount_point="secret")
    root.sys.create_or_update_policy("rt36-read-only", 'path "secret/data/rt36/a" { capabilities = ["read"] }')
    token = root.auth.token.create(policies=["rt36-read-only"], no_default_policy=True, ttl="1h")["auth"][
        "client_token"
    ]
    s = VaultSource(VaultSettings(addr=bao.addr, token=token, cacert=bao.cacert, timeout=5.0), Metrics())
    assert asyncio.run(outcome(s, ref(path="rt36/a"))) == REAL


# -- F9: a renewal answer without a TTL ---------------------------------------------------------------------
def test_rt36_a_renewal_answer_without_a_ttl_does_not_end_renewal(fake_vault: HostileServer, tmp_path: Path) -> None:  # noqa: F811
    """One renew-self answer without lease_duration was taken for "does not expire": renewal
    stopped for good, and the token expired."""
    login = answer(200, {"auth": {"client_token": "hvs.rt36", "lease_duration": 3, "renewable": True}})
    renewed = answer(200, {"auth": {"client_token": "hvs.rt36", "lease_duration": 3, "renewable": True}})
    fake_vault.scripts["/v1/auth/approle/login"] = replying(login)
    fake_vault.scripts["/v1/auth/token/renew-self"] = replying(answer(200, {"auth": {"renewable": True}}), renewed)
    fake_vault.scripts["/v1/sys/internal/ui/mounts/secret"] = replying(V2)
    fake_vault.scripts["/v1/secret/data/a"] = replying(READ_V2)
    (tmp_path / "sid").write_text("sid-rt36")
    s = source(fake_vault, auth="approle", token=None, role="r", secret_id_file=str(tmp_path / "sid"))

    async def go() -> None:
        assert await outcome(s, ref()) == REAL
        renewal = asyncio.ensure_future(s.renew_loop())
        await asyncio.sleep(5)
        renewal.cancel()

    asyncio.run(go())
    assert sum(r.path == "/v1/auth/token/renew-self" for r in fake_vault.requests) >= 2
