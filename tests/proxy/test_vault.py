"""Secrets from a real OpenBao (the Vault API): auth methods, rotation, faults, fail-closed.

OpenBao runs as a dev server with TLS; the proxy reaches it directly or through a TCP
pass-through the test controls (refuse, stall) to play an unreachable or hanging Vault. The
Kubernetes TokenReview endpoint is a thin fake (there is no API server here): OpenBao's real
kubernetes auth method calls it over HTTPS, as it would call the API server.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
import trustme
from aiohttp import web

from proxy.metrics import (
    EGRESS_REQUESTS,
    POLICY_RELOADS,
    SECRET_AGE,
    SECRET_AVAILABLE,
    SECRET_LAST_SUCCESS,
    VAULT_REQUESTS,
)
from proxy.netcheck import AddressPolicy
from proxy.relay import Relay
from proxy.secrets import vault as vault_module
from sandgate.run import _RelayThread
from tests.conftest import needs_root
from tests.support.clients import Reply, curl
from tests.support.leaks import EXTRA
from tests.support.listeners import ContactRecorder
from tests.support.openbao import FaultProxy, OpenBao
from tests.support.proxyproc import ProxyProcess, free_port
from tests.support.upstream import Seen
from tests.support.wait import wait_for

pytestmark = needs_root

PH = f"sk-proj-PH-{secrets.token_hex(4)}-vault"
R1 = "sk-REAL-VAULT-" + secrets.token_hex(16)
R2 = "sk-REAL-VAULT-ROTATED-" + secrets.token_hex(16)
R_OTHER = "sk-REAL-OTHER-SANDBOX-" + secrets.token_hex(16)
EXTRA += [("vault-r1", R1), ("vault-r2", R2), ("vault-other", R_OTHER)]

SANDBOX_POLICY = (
    'path "secret/data/agents/*" { capabilities = ["read"] }\npath "kv1/agents/*" { capabilities = ["read"] }'
)


def egress_policy(path: str = "agents/openai", key: str = "api_key", mount: str = "secret", extra: str = "") -> str:
    return f"""
apiVersion: sandgate.dev/v1alpha1
kind: EgressPolicy
metadata: {{name: vault-test}}
spec:
  allow: [{{host: api.openai.com}}, {{host: echo.example.com}}]
  secrets:
    - name: openai
      placeholder: {PH}
      source: {{vault: {{mount: {mount}, path: {path}, key: {key}}}}}
      hosts: [api.openai.com]
{extra}"""


class Vault:
    def __init__(self, bao: OpenBao) -> None:
        self.bao = bao
        self.root = bao.root()
        self.root.secrets.kv.v2.create_or_update_secret("agents/openai", {"api_key": R1}, mount_point="secret")
        self.root.secrets.kv.v2.create_or_update_secret(
            "other-sandbox/openai", {"api_key": R_OTHER}, mount_point="secret"
        )
        self.root.sys.create_or_update_policy("sandbox-a", SANDBOX_POLICY)
        self.token = self.root.auth.token.create(policies=["sandbox-a"], ttl="1h", renewable=True)["auth"][
            "client_token"
        ]
        EXTRA.append(("vault-token", self.token))
        self.root.sys.enable_auth_method("approle")
        self.root.auth.approle.create_or_update_approle("sandbox-a", token_policies=["sandbox-a"], token_ttl="1h")
        self.role_id = self.root.auth.approle.read_role_id("sandbox-a")["data"]["role_id"]
        self.secret_id = self.root.auth.approle.generate_secret_id("sandbox-a")["data"]["secret_id"]

    def write(self, path: str, data: dict[str, object]) -> None:
        self.root.secrets.kv.v2.create_or_update_secret(path, data, mount_point="secret")


@pytest.fixture(scope="module")
def vault(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Vault]:
    bao = OpenBao(tmp_path_factory.mktemp("bao"), free_port())
    try:
        yield Vault(bao)
    finally:
        bao.stop()


def call(p: ProxyProcess, path: str = "/v1/x") -> Reply:
    return curl(p.url, p.ca, f"https://api.openai.com{path}", "-H", f"Authorization: Bearer {PH}")


def vault_args(v: Vault, addr: str | None = None, *extra: str) -> list[str]:
    return ["--vault-addr", addr or v.bao.addr, "--vault-cacert", v.bao.cacert, "--secret-refresh", "0.5", *extra]


def test_token_auth_reads_kv_v2_and_the_swap_delivers_it(vault: Vault, make_proxy: Callable[..., ProxyProcess],
                                                        upstreams: dict[str, Seen]) -> None:  # fmt: skip
    p = make_proxy(egress_policy(), *vault_args(vault), env={"VAULT_TOKEN": vault.token})
    assert call(p).status == 200
    assert upstreams["api"].requests[-1]["headers"]["authorization"] == f"Bearer {R1}"
    assert p.metric(VAULT_REQUESTS, result="success") >= 1
    assert vault.token not in p.stderr() and vault.token not in p.metrics()
    assert '"event": "config"' not in p.stderr()  # (0.5 s + 2 x 5 s is under the 300 s default)


def test_flags_that_let_a_rotated_secret_lapse_behind_a_hanging_read_are_warned_of(
    vault: Vault, make_proxy: Callable[..., ProxyProcess]
) -> None:
    """Red team 58: with --secret-max-stale under --secret-refresh + 2 x --vault-timeout, a secret
    rotated while another's read hangs fails closed until that read times out; nothing said so."""
    p = make_proxy(egress_policy(), *vault_args(vault, None, "--secret-max-stale", "5", "--vault-timeout", "3"),
                   env={"VAULT_TOKEN": vault.token})  # fmt: skip
    assert call(p).status == 200
    assert "--secret-max-stale (5 s) is under --secret-refresh + 2 x --vault-timeout (6.5 s)" in p.stderr()


def test_e04_a_rotated_secret_is_used_without_a_restart(vault: Vault, make_proxy: Callable[..., ProxyProcess],
                                                       upstreams: dict[str, Seen]) -> None:  # fmt: skip
    vault.write("agents/rotating", {"api_key": R1})
    p = make_proxy(egress_policy("agents/rotating"), *vault_args(vault), env={"VAULT_TOKEN": vault.token})
    assert call(p).status == 200 and upstreams["api"].requests[-1]["headers"]["authorization"] == f"Bearer {R1}"
    vault.write("agents/rotating", {"api_key": R2})

    def rotated() -> bool:
        return call(p).status == 200 and upstreams["api"].requests[-1]["headers"]["authorization"] == f"Bearer {R2}"

    wait_for(rotated)
    # The old value is still scrubbed from responses after the rotation.
    reply = curl(p.url, p.ca, "https://api.openai.com/reflect", "-H", f"Authorization: Bearer {PH}")
    assert R2 not in reply.body and R1 not in reply.body


def test_approle_login_and_a_fresh_login_after_the_token_is_revoked(vault: Vault, make_proxy: Callable[..., ProxyProcess],
                                                                   upstreams: dict[str, Seen], tmp_path: Path) -> None:  # fmt: skip
    """E03: on 403 the sidecar logs in again once and retries once."""
    sid = tmp_path / "secret-id"
    sid.write_text(vault.secret_id)
    vault.write("agents/approle", {"api_key": R1})
    p = make_proxy(egress_policy("agents/approle"),
                   *vault_args(vault, None, "--vault-auth", "approle", "--vault-role", vault.role_id, "--vault-secret-id-file", str(sid)),
                   env={})  # fmt: skip
    assert call(p).status == 200 and upstreams["api"].requests[-1]["headers"]["authorization"] == f"Bearer {R1}"
    vault.root.sys.revoke_prefix("auth/approle/login")  # every token the sidecar got is now dead
    vault.write("agents/approle", {"api_key": R2})
    wait_for(
        lambda: call(p).status == 200 and upstreams["api"].requests[-1]["headers"]["authorization"] == f"Bearer {R2}"
    )
    assert '"vault_login"' in p.stderr()


@pytest.fixture(scope="module")
def tokenreview(upstreams: dict[str, Seen]) -> tuple[str, str, str]:
    """A TokenReview endpoint (the Kubernetes API's, faked): it authenticates exactly one token."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    good = ".".join(
        base64.urlsafe_b64encode(json.dumps(part).encode()).decode().rstrip("=")
        for part in (
            {"alg": "RS256", "kid": "test"},
            {"iss": "kubernetes/serviceaccount", "sub": "system:serviceaccount:sandbox-a:agent",
             "kubernetes.io/serviceaccount/namespace": "sandbox-a", "kubernetes.io/serviceaccount/service-account.name": "agent",
             # OpenBao checks the token's service-account UID against the TokenReview answer.
             "kubernetes.io/serviceaccount/service-account.uid": "u-1"},
        )
    ) + ".c2ln"  # fmt: skip

    async def review(request: web.Request) -> web.Response:
        body = await request.json()
        ok = body["spec"]["token"] == good
        status = {"authenticated": ok}
        if ok:
            status["user"] = {
                "username": "system:serviceaccount:sandbox-a:agent",
                "uid": "u-1",
                "groups": ["system:serviceaccounts"],
            }  # type: ignore[assignment]
        return web.json_response({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "status": status})

    app = web.Application()
    app.router.add_post("/apis/authentication.k8s.io/v1/tokenreviews", review)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)
    port = free_port()
    upstreams["_thread"].start_app(app, "127.0.0.1", port, ctx)  # type: ignore[attr-defined]
    return f"https://127.0.0.1:{port}", ca.cert_pem.bytes().decode(), good


def test_kubernetes_auth_logs_in_with_a_projected_token(vault: Vault, tokenreview: tuple[str, str, str], make_proxy: Callable[..., ProxyProcess],
                                                      upstreams: dict[str, Seen], tmp_path: Path) -> None:  # fmt: skip
    host, ca_pem, good = tokenreview
    root = vault.root
    if "kubernetes/" not in root.sys.list_auth_methods()["data"]:
        root.sys.enable_auth_method("kubernetes")
    root.auth.kubernetes.configure(host, kubernetes_ca_cert=ca_pem, disable_local_ca_jwt=True)
    root.auth.kubernetes.create_role("sandbox-a", bound_service_account_names=["agent"], bound_service_account_namespaces=["sandbox-a"],
                                     policies=["sandbox-a"])  # fmt: skip
    vault.write("agents/k8s", {"api_key": R1})
    jwt = tmp_path / "token"
    jwt.write_text(good)
    args = vault_args(
        vault, None, "--vault-auth", "kubernetes", "--vault-role", "sandbox-a", "--vault-jwt-file", str(jwt)
    )
    p = make_proxy(egress_policy("agents/k8s"), *args, env={})
    assert call(p).status == 200, p.stderr()
    assert upstreams["api"].requests[-1]["headers"]["authorization"] == f"Bearer {R1}"

    bad = tmp_path / "bad-token"
    bad.write_text(good.replace(".c2ln", ".Zm9yZ2Vk"))
    refused = make_proxy(egress_policy("agents/k8s"), *[a if a != str(jwt) else str(bad) for a in args], env={})
    reply = call(refused)
    assert reply.status == 503 and reply.reason == "secret_unavailable"
    assert refused.metric(VAULT_REQUESTS, result="auth_error") >= 1


def test_e10_a_sandbox_token_cannot_read_another_sandboxs_secret(vault: Vault, make_proxy: Callable[..., ProxyProcess],
                                                                upstreams: dict[str, Seen]) -> None:  # fmt: skip
    p = make_proxy(egress_policy("other-sandbox/openai"), *vault_args(vault), env={"VAULT_TOKEN": vault.token})
    before = len(upstreams["api"].requests)
    reply = call(p)
    assert reply.status == 503 and reply.reason == "secret_unavailable"
    assert len(upstreams["api"].requests) == before
    assert p.metric(VAULT_REQUESTS, result="forbidden") >= 1
    assert "(403)" in p.stderr() and R_OTHER not in p.stderr()


@pytest.mark.parametrize(
    ("setup", "path", "mount", "key", "reason", "words"),
    [
        ("deleted", "agents/deleted", "secret", "api_key", "secret_unavailable", "is deleted"),
        ("destroyed", "agents/destroyed", "secret", "api_key", "secret_unavailable", "is destroyed"),
        ("none", "agents/missing", "secret", "api_key", "secret_unavailable", "does not exist"),
        ("nokey", "agents/nokey", "secret", "api_key", "secret_unavailable", "has no key"),
        ("crlf", "agents/crlf", "secret", "api_key", "secret_invalid", "illegal in a header"),
        ("number", "agents/number", "secret", "api_key", "secret_invalid", "not a string"),
        ("kv1", "agents/openai", "kv1", "api_key", None, ""),
    ],
)
def test_e06_each_way_a_secret_can_be_wrong_fails_closed_with_its_reason(
    vault: Vault, make_proxy: Callable[..., ProxyProcess], upstreams: dict[str, Seen],
    setup: str, path: str, mount: str, key: str, reason: str | None, words: str,
) -> None:  # fmt: skip
    root = vault.root
    kv2 = root.secrets.kv.v2
    if setup in ("deleted", "destroyed"):
        kv2.create_or_update_secret(path, {"api_key": R1}, mount_point="secret")
        if setup == "deleted":
            kv2.delete_latest_version_of_secret(path, mount_point="secret")
        else:
            kv2.destroy_secret_versions(path, [1], mount_point="secret")
    elif setup == "nokey":
        kv2.create_or_update_secret(path, {"other": R1}, mount_point="secret")
    elif setup == "crlf":
        kv2.create_or_update_secret(path, {"api_key": "sk-x\r\nX-Injected: 1"}, mount_point="secret")
    elif setup == "number":
        kv2.create_or_update_secret(path, {"api_key": 12345}, mount_point="secret")
    elif setup == "kv1":
        if "kv1/" not in root.sys.list_mounted_secrets_engines()["data"]:
            root.sys.enable_secrets_engine("kv", path="kv1", options={"version": "1"})
        root.secrets.kv.v1.create_or_update_secret(path, {"api_key": R1}, mount_point="kv1")
    p = make_proxy(egress_policy(path, key, mount), *vault_args(vault), env={"VAULT_TOKEN": vault.token})
    before = len(upstreams["api"].requests)
    reply = call(p)
    if reason is None:
        assert reply.status == 200 and upstreams["api"].requests[-1]["headers"]["authorization"] == f"Bearer {R1}"
        return
    assert reply.status == 503 and reply.reason == reason
    assert len(upstreams["api"].requests) == before, "the placeholder was forwarded"
    assert words in p.stderr()
    assert p.metric(SECRET_AVAILABLE, secret="openai") == 0
    # Requests that need no secret keep flowing.
    assert curl(p.url, p.ca, "https://echo.example.com/").status == 200


def test_e01_unreachable_vault_serves_the_last_good_value_for_the_stale_window_then_fails_closed(
    vault: Vault, make_proxy: Callable[..., ProxyProcess], upstreams: dict[str, Seen]
) -> None:
    fault = FaultProxy(("127.0.0.1", vault.bao.port))
    try:
        p = make_proxy(egress_policy(), *vault_args(vault, f"https://127.0.0.1:{fault.port}", "--secret-max-stale", "2"),
                       env={"VAULT_TOKEN": vault.token})  # fmt: skip
        assert call(p).status == 200
        fault.mode = "refuse"
        wait_for(lambda: p.metric(VAULT_REQUESTS, result="unreachable") >= 1)
        assert call(p).status == 200, "within the stale window the last good value serves"
        wait_for(lambda: call(p).reason == "secret_unavailable")
        assert p.metric(EGRESS_REQUESTS, decision="denied", reason="secret_unavailable") >= 1
        assert f"127.0.0.1:{fault.port}" not in p.stderr(), "the Vault address is not in the log"
        fault.mode = "pass"
        wait_for(lambda: call(p).status == 200)
        assert upstreams["api"].requests[-1]["headers"]["authorization"] == f"Bearer {R1}"
    finally:
        fault.close()


def test_rt37_the_secret_gauges_say_what_requests_get_between_refreshes(
    vault: Vault, make_proxy: Callable[..., ProxyProcess]
) -> None:
    """The gauges were set by the refresh only: past --secret-max-stale requests got 503 while
    sandgate_secret_available said 1 and the age stood still, until the next refresh."""
    fault = FaultProxy(("127.0.0.1", vault.bao.port))
    try:
        p = make_proxy(egress_policy(), "--vault-addr", f"https://127.0.0.1:{fault.port}", "--vault-cacert",
                       vault.bao.cacert, "--secret-refresh", "4", "--secret-max-stale", "5", "--vault-timeout", "1",
                       env={"VAULT_TOKEN": vault.token})  # fmt: skip
        assert call(p).status == 200 and p.metric(SECRET_AVAILABLE, secret="openai") == 1
        fault.mode = "refuse"
        first = p.metric(SECRET_AGE, secret="openai")
        time.sleep(1.5)
        assert p.metric(SECRET_AGE, secret="openai") >= first + 1, "the age grows as it is read"
        wait_for(lambda: call(p).reason == "secret_unavailable")
        assert p.metric(SECRET_AVAILABLE, secret="openai") == 0
    finally:
        fault.close()


def test_rt37_a_reload_that_takes_a_host_away_applies_at_once_behind_a_hanging_vault(
    vault: Vault, make_proxy: Callable[..., ProxyProcess]
) -> None:
    """A reload was served only once every secret of the new policy was read, after the refresh
    under way: behind a Vault that did not answer, a host taken out of the allowlist kept getting
    requests (and keys) for 23 s."""
    fault = FaultProxy(("127.0.0.1", vault.bao.port))
    try:
        p = make_proxy(egress_policy(), "--vault-addr", f"https://127.0.0.1:{fault.port}", "--vault-cacert",
                       vault.bao.cacert, "--secret-refresh", "1", "--vault-timeout", "4",
                       env={"VAULT_TOKEN": vault.token})  # fmt: skip
        assert call(p).status == 200
        fault.mode = "stall"
        time.sleep(1.5)  # (a refresh is under way, reading from the Vault that does not answer)
        p.policy.write_text(egress_policy().replace("{host: echo.example.com}", "{host: files.example.org}"))
        wait_for(lambda: curl(p.url, p.ca, "https://echo.example.com/").reason == "host_not_allowed", timeout=2.5)
        assert call(p).status == 200, "the secret the new policy keeps is served meanwhile"
    finally:
        fault.close()


def test_rt38_a_reload_right_after_another_applies_at_once_behind_a_hanging_vault(
    vault: Vault, make_proxy: Callable[..., ProxyProcess]
) -> None:
    """The watcher awaited a reload's reads before it looked at the file again: a reload written
    while the one before was reading (ceil(secrets / 2) x --vault-timeout) waited for them (20 s,
    40 keys to a host it had taken away). Nor may those reads, dropped, count as successes."""
    extra = "".join(
        f"    - {{name: more{i}, placeholder: sk-more-{i}-{secrets.token_hex(8)}, source: {{vault: {{mount: secret, path: agents/more{i}, "
        f"key: api_key}}}}, hosts: [api.openai.com]}}\n"
        for i in range(4)
    )
    fault = FaultProxy(("127.0.0.1", vault.bao.port))
    try:
        text = egress_policy(extra=extra)
        p = make_proxy(text, "--vault-addr", f"https://127.0.0.1:{fault.port}", "--vault-cacert", vault.bao.cacert,
                       "--secret-refresh", "30", "--vault-timeout", "3", env={"VAULT_TOKEN": vault.token})  # fmt: skip
        assert call(p).status == 200
        success = p.metric(SECRET_LAST_SUCCESS, secret="openai")
        fault.mode = "stall"
        p.policy.write_text(
            text.replace("{host: echo.example.com}", "{host: echo.example.com}, {host: files.example.org}")
        )
        wait_for(lambda: curl(p.url, p.ca, "https://files.example.org/").reason != "host_not_allowed")  # (served)
        time.sleep(0.5)  # (its reads are under way, and take 9 s)
        p.policy.write_text(text.replace("{host: echo.example.com}", "{host: files.example.org}"))
        wait_for(lambda: curl(p.url, p.ca, "https://echo.example.com/").reason == "host_not_allowed", timeout=2.5)
        time.sleep(10)  # (the first reload's reads end, dropped; the second's fail)
        assert p.metric(SECRET_LAST_SUCCESS, secret="openai") == success
    finally:
        fault.close()


def test_e02_a_hanging_vault_times_out_and_requests_without_secrets_keep_flowing(
    vault: Vault, make_proxy: Callable[..., ProxyProcess]
) -> None:
    fault = FaultProxy(("127.0.0.1", vault.bao.port))
    try:
        fault.mode = "stall"
        p = make_proxy(egress_policy(), *vault_args(vault, f"https://127.0.0.1:{fault.port}", "--vault-timeout", "0.5"),
                       env={"VAULT_TOKEN": vault.token})  # fmt: skip
        reply = call(p)
        assert reply.status == 503 and reply.reason == "secret_unavailable"
        assert p.metric(VAULT_REQUESTS, result="timeout") >= 1
        assert curl(p.url, p.ca, "https://echo.example.com/").status == 200
    finally:
        fault.close()


def test_e02_a_vault_that_trickled_its_answers_is_used_again_once_it_recovers(
    vault: Vault, make_proxy: Callable[..., ProxyProcess], upstreams: dict[str, Seen], tmp_path: Path
) -> None:
    """One TLS record a byte, every 0.2 s, satisfies every per-read timeout, so the calls never ended
    on their own: they held the Vault client's threads for good, and once Vault answered normally
    again nothing could reach it (every secret failed closed until a restart). A call ends at its
    deadline now, connections and all."""
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    fault = FaultProxy(("127.0.0.1", vault.bao.port), tls=(server, ssl.create_default_context(cafile=vault.bao.cacert)))
    try:
        p = make_proxy(egress_policy(), "--vault-addr", f"https://127.0.0.1:{fault.port}", "--vault-cacert",
                       str(tmp_path / "ca.pem"), "--secret-refresh", "0.5", "--vault-timeout", "1",
                       "--secret-max-stale", "2", env={"VAULT_TOKEN": vault.token})  # fmt: skip
        assert call(p).status == 200
        fault.mode = "trickle"
        wait_for(lambda: p.metric(VAULT_REQUESTS, result="timeout") >= 3)
        wait_for(lambda: call(p).reason == "secret_unavailable")
        fault.recover()  # (the trickling connections go on trickling)
        wait_for(lambda: call(p).status == 200)
        assert upstreams["api"].requests[-1]["headers"]["authorization"] == f"Bearer {R1}"
    finally:
        fault.close()


def test_the_vault_client_takes_no_proxy_from_the_environment(
    vault: Vault, make_proxy: Callable[..., ProxyProcess]
) -> None:
    """HTTPS_PROXY (and ALL_PROXY, NO_PROXY, REQUESTS_CA_BUNDLE, ~/.netrc) in the sidecar's
    environment used to decide where the Vault token went and whom it trusted: the Vault client
    reads only its own flags now (--vault-proxy for a proxy)."""
    recorder = ContactRecorder([("127.0.0.1", port := free_port())])
    try:
        p = make_proxy(egress_policy(), *vault_args(vault),
                       env={"VAULT_TOKEN": vault.token, "HTTPS_PROXY": f"http://127.0.0.1:{port}",
                            "ALL_PROXY": f"http://127.0.0.1:{port}"})  # fmt: skip
        assert call(p).status == 200
        assert recorder.count == 0, "the Vault client went through the environment's proxy"
    finally:
        recorder.close()


def test_vault_proxy_sends_the_vault_client_through_that_proxy(
    vault: Vault, make_proxy: Callable[..., ProxyProcess], upstreams: dict[str, Seen]
) -> None:
    """What `sandgate run` does: the sandbox's proxy reaches Vault through the host's relay."""
    relay = Relay("127.0.0.1", [vault.bao.port], AddressPolicy(["127.0.0.0/8"]))
    thread = _RelayThread(relay, "127.0.0.1")
    host, port = thread.start_relay(0)
    try:
        p = make_proxy(egress_policy(), *vault_args(vault, None, "--vault-proxy", f"http://{host}:{port}"),
                       env={"VAULT_TOKEN": vault.token})  # fmt: skip
        assert call(p).status == 200
        assert upstreams["api"].requests[-1]["headers"]["authorization"] == f"Bearer {R1}"
        assert relay.tunnels >= 1
    finally:
        thread.stop()


@pytest.mark.parametrize("url", ["https://127.0.0.1:3128", "http://", "127.0.0.1:3128", "http://u:p@127.0.0.1:3128",
                                 "http://127.0.0.1:3128/path"])  # fmt: skip
def test_a_vault_proxy_that_is_not_a_plain_http_address_is_refused_at_start(
    vault: Vault, tmp_path: Path, url: str
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(egress_policy())
    r = subprocess.run([sys.executable, "-m", "sandgate", "proxy", "--policy", str(policy), *vault_args(vault),
                        "--vault-proxy", url, "--listen-port", "0", "--metrics-port", str(free_port()),
                        "--confdir", str(tmp_path / "c")], env={**os.environ, "VAULT_TOKEN": vault.token},
                       capture_output=True, text=True, timeout=30, check=False)  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert "--vault-proxy must be a URL like http://proxy.example:3128" in r.stderr


def test_e09_a_plain_http_vault_address_is_refused_at_start(vault: Vault, tmp_path: Path) -> None:
    import subprocess
    import sys

    policy = tmp_path / "p.yaml"
    policy.write_text(egress_policy())
    r = subprocess.run([sys.executable, "-m", "sandgate", "proxy", "--policy", str(policy), "--vault-addr", "http://127.0.0.1:8200",
                        "--listen-port", "0", "--metrics-port", str(free_port()), "--confdir", str(tmp_path / "c")],
                       capture_output=True, text=True, timeout=30, env={"VAULT_TOKEN": vault.token, "PATH": "/usr/bin:/bin"}, check=False)  # fmt: skip
    assert r.returncode == 2 and "plain http" in r.stderr
    assert vault.token not in r.stderr


def test_e03_a_short_lived_token_is_renewed_before_it_expires(vault: Vault, make_proxy: Callable[..., ProxyProcess],
                                                             upstreams: dict[str, Seen]) -> None:  # fmt: skip
    short = vault.root.auth.token.create(policies=["sandbox-a"], ttl="3s", renewable=True, explicit_max_ttl="1h")[
        "auth"
    ]["client_token"]
    EXTRA.append(("vault-short-token", short))
    vault.write("agents/renewed", {"api_key": R1})
    p = make_proxy(egress_policy("agents/renewed"), *vault_args(vault), env={"VAULT_TOKEN": short})
    assert call(p).status == 200
    time.sleep(5)  # past the token's first TTL: only renewal keeps it alive
    vault.write("agents/renewed", {"api_key": R2})
    wait_for(
        lambda: call(p).status == 200 and upstreams["api"].requests[-1]["headers"]["authorization"] == f"Bearer {R2}"
    )
    assert '"vault_renew", "result": "success"' in p.stderr()


def test_e09_a_vault_certificate_from_an_untrusted_ca_is_refused(vault: Vault, make_proxy: Callable[..., ProxyProcess],
                                                                tmp_path: Path) -> None:  # fmt: skip
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(other_ca)
    p = make_proxy(
        egress_policy(),
        "--vault-addr",
        vault.bao.addr,
        "--vault-cacert",
        str(other_ca),
        env={"VAULT_TOKEN": vault.token},
    )
    reply = call(p)
    assert reply.status == 503 and reply.reason == "secret_unavailable"
    assert "TLS verification failed" in p.stderr()


@pytest.mark.parametrize(
    ("failure", "words"),
    [
        (vault_module._Unavailable("error", "vault answered a token TTL that is not a number of seconds"),
         "vault answered a token TTL that is not a number of seconds"),
        (TimeoutError(), "vault did not answer the renewal in time"),
        (requests.ConnectionError("http://vault:8200/v1/auth/token/renew-self"), "vault unreachable"),
    ],
    ids=["bad-ttl", "timeout", "unreachable"],
)  # fmt: skip
def test_a_failed_renewal_is_logged_in_words_not_a_class_name(failure: Exception, words: str) -> None:
    """Red team 57: a renewal answered with a TTL of 0, a string or 10**30 was logged as
    ``"detail": "_Unavailable"``."""
    assert vault_module._renew_failure(failure) == words


def test_rt60_a_reload_moving_a_value_that_holds_another_key_is_refused_while_vault_is_down(
    vault: Vault, make_proxy: Callable[..., ProxyProcess], upstreams: dict[str, Seen]
) -> None:
    """Secret ``wrapper`` held ``tok-<openai's key>-x``, fine while it went only where openai goes.
    Vault then became unreachable (the values held keep serving), and a reload moved wrapper to
    echo.example.com: the values held were served under the new bindings unchecked (the check
    asked only values a read had just given), and echo got openai's key inside wrapper's."""
    wrapper_ph = f"sk-proj-PH-{secrets.token_hex(4)}-wrapper"

    def policy(wrapper_host: str) -> str:
        wrapper = f"""    - name: wrapper
      placeholder: {wrapper_ph}
      source: {{vault: {{mount: secret, path: agents/wrapper, key: api_key}}}}
      hosts: [{wrapper_host}]
"""
        return egress_policy(extra=wrapper)

    vault.write("agents/openai", {"api_key": R1})
    vault.write("agents/wrapper", {"api_key": f"tok-{R1}-x"})
    fault = FaultProxy(("127.0.0.1", vault.bao.port))
    try:
        p = make_proxy(policy("api.openai.com"), *vault_args(vault, f"https://127.0.0.1:{fault.port}", "--secret-refresh", "0.5"),
                       env={"VAULT_TOKEN": vault.token})  # fmt: skip
        reply = curl(p.url, p.ca, "https://api.openai.com/v1/x", "-H", f"Authorization: Bearer {wrapper_ph}")
        assert reply.status == 200 and upstreams["api"].requests[-1]["headers"]["authorization"] == f"Bearer tok-{R1}-x"
        fault.mode = "refuse"
        wait_for(lambda: p.metric(VAULT_REQUESTS, result="unreachable") >= 1)
        before = len(upstreams["echo"].requests)
        p.policy.write_text(policy("echo.example.com"))
        wait_for(lambda: p.metric(POLICY_RELOADS, result="success") == 1)
        reply = curl(p.url, p.ca, "https://echo.example.com/w", "-H", f"Authorization: Bearer {wrapper_ph}")
        # (secret_invalid as the reload is served; secret_unavailable once its reads have failed)
        assert reply.status == 503 and reply.reason in ("secret_invalid", "secret_unavailable")
        assert not any(R1 in str(q["headers"]) for q in upstreams["echo"].requests[before:])
        assert "holds a value of secret 'openai'" in p.stderr() and R1 not in p.stderr()
    finally:
        fault.close()
