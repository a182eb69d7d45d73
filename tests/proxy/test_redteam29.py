"""Red team 29: the secret sources and the policy's life (reloads, rotations), against a real
``sandgate proxy`` (the world of tests/proxy/test_redteam.py: its hostile HTTPS upstream keeps what
it is sent and hands it back when asked).

Each test asserts an invariant; a failing test names a break. What broke, fixed since: a reload
that unbinds a host (or renames the secret) turned off the scrubbing of what that host had been
given, and it handed the real key back verbatim; a policy rewritten in place with its size and
mtime kept was never loaded.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import trustme

from proxy.metrics import Metrics
from proxy.policy.model import SecretSourceRef
from proxy.secrets import FileSource, SecretError
from proxy.secrets.vault import VaultSettings, VaultSource
from tests.conftest import needs_root
from tests.proxy import test_redteam as world
from tests.proxy.test_redteam import HOSTILE_NAME, get, recv_all, tls_to
from tests.support.hostile import HostileServer, Request, Wire
from tests.support.proxyproc import ProxyProcess
from tests.support.wait import wait_for

pytestmark = needs_root

hostile_ca, hostile = world.hostile_ca, world.hostile

REAL = "rt29REAL" + secrets.token_hex(16)
PH = f"rt29-PH-{secrets.token_hex(4)}"


def policy(bound: str, name: str = "rt29key", allow: str = "echo.example.com") -> str:
    return f"""
apiVersion: sandgate.dev/v1alpha1
kind: EgressPolicy
metadata: {{name: rt29}}
spec:
  allow:
    - host: {HOSTILE_NAME}
    - host: api.openai.com
    - host: {allow}
  secrets:
    - name: {name}
      placeholder: {PH}
      source: {{env: RT29_KEY}}
      hosts: [{bound}]
"""


def reloads(p: ProxyProcess) -> float:
    return p.metric("sandgate_policy_reloads_total", result="success")


@pytest.fixture
def keeper(hostile: HostileServer) -> list[str]:
    """/rt29/keep keeps the key it is sent; /rt29/give-back answers with the last one kept."""
    kept: list[str] = []

    @hostile.on("/rt29/keep")
    async def _(req: Request, w: Wire) -> None:
        kept.append(req.token)
        await w.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    @hostile.on("/rt29/give-back")
    async def _(req: Request, w: Wire) -> None:
        body = f'{{"your_old_key": "{kept[-1] if kept else ""}"}}'.encode()
        await w.send(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        )

    return kept


def give_back(p: ProxyProcess) -> bytes:
    s = tls_to(p, HOSTILE_NAME)
    s.sendall(get("/rt29/give-back"))
    return recv_all(s, 5)


@pytest.mark.parametrize("how", ["unbind-host", "rename-secret", "remove-secret"])
def test_rt29_a_host_a_reload_unbinds_never_hands_back_what_it_was_given(
    make_proxy: Callable[..., ProxyProcess], hostile_ca: tuple[trustme.CA, Path], keeper: list[str], how: str
) -> None:
    """The operator revokes a misbehaving host (the secret now goes to api.openai.com only, or under
    a new name, or not at all); the host stays allowed and echoes the key it was given: scrubbed
    still, as before the reload."""
    p = make_proxy(policy(HOSTILE_NAME), "--upstream-ca", str(hostile_ca[1]), env={"RT29_KEY": REAL})
    s = tls_to(p, HOSTILE_NAME)
    s.sendall(get("/rt29/keep", auth=f"Bearer {PH}"))
    recv_all(s, 5)
    assert keeper and keeper[-1] == REAL, "setup: the key was not swapped to its bound host"
    assert REAL.encode() not in give_back(p), "setup: the echo was not scrubbed while bound"
    before = reloads(p)
    new = {
        "unbind-host": policy("api.openai.com"),
        "rename-secret": policy("api.openai.com", name="rt29key-v2"),
        "remove-secret": policy("api.openai.com").split("  secrets:")[0],
    }[how]
    p.policy.write_text(new)
    wait_for(lambda: reloads(p) > before)
    got = give_back(p)
    assert REAL.encode() not in got and REAL[8:24].encode() not in got, (
        f"the revoked host handed back the key: {got[-120:]!r}"
    )


def test_rt29_a_policy_rewritten_in_place_with_its_size_and_mtime_kept_is_loaded(
    make_proxy: Callable[..., ProxyProcess], hostile_ca: tuple[trustme.CA, Path]
) -> None:
    """`cp -p`, `install -p`, rsync --inplace -t, archives with fixed timestamps: the same length,
    the old mtime; the change is loaded all the same (the inode's ctime no one can set)."""
    p = make_proxy(policy(HOSTILE_NAME), "--upstream-ca", str(hostile_ca[1]), env={"RT29_KEY": REAL})
    st = p.policy.stat()
    text = p.policy.read_text()
    new = text.replace("echo.example.com", "ecno.example.com")
    assert len(new) == len(text) and new != text
    before = reloads(p)
    with p.policy.open("r+") as f:  # (in place: the same inode)
        f.write(new)
    os.utime(p.policy, ns=(st.st_atime_ns, st.st_mtime_ns))
    wait_for(lambda: reloads(p) > before)


# -- the Vault client, a file source, the env file -------------------------------------------------


class Recorder(ThreadingHTTPServer):
    """127.0.0.1: records every request's headers and body; ``answer`` says what to send back."""

    def __init__(self, answer: Callable[[BaseHTTPRequestHandler], None]) -> None:
        seen: list[tuple[str, dict[str, str], bytes]] = []
        self.seen = seen

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _any(self) -> None:
                n = int(self.headers.get("content-length") or 0)
                seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}, self.rfile.read(n)))
                answer(self)

            do_GET = do_POST = do_PUT = _any

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def close(self) -> None:
        self.shutdown()
        self.server_close()


def vault_ref() -> SecretSourceRef:
    return SecretSourceRef(kind="vault", vault_mount="secret", vault_path="agents/k", vault_key="api_key")


@pytest.mark.parametrize("auth", ["token", "approle"])
def test_rt29_a_vault_redirect_is_never_followed_with_the_credential(tmp_path: Path, auth: str) -> None:
    """A standby node, a load balancer or anything that makes Vault answer 307 to another address:
    requests would follow it with X-Vault-Token (it strips Authorization only) or the login's
    secret_id. Refused with a reason; the other address gets nothing."""
    thief = Recorder(lambda h: (h.send_response(200), h.send_header("Content-Length", "0"), h.end_headers()))

    def redirect(h: BaseHTTPRequestHandler) -> None:
        h.send_response(307)
        h.send_header("Location", f"{thief.url}{h.path}")
        h.send_header("Content-Length", "0")
        h.end_headers()

    front = Recorder(redirect)
    token, secret_id = "s.REALTOKEN" + secrets.token_hex(8), "SECRETID" + secrets.token_hex(8)
    (tmp_path / "sid").write_text(secret_id)
    try:
        src = VaultSource(
            VaultSettings(addr=front.url, auth=auth, token=token, role="r", secret_id_file=str(tmp_path / "sid"),
                          allow_http=True, timeout=3),
            Metrics(),
        )  # fmt: skip
        with pytest.raises(SecretError, match="redirect"):
            asyncio.run(src.fetch(vault_ref()))
        assert front.seen and thief.seen == [], "the redirect was followed"
    finally:
        thief.close()
        front.close()


def test_rt29_a_file_source_that_is_no_regular_file_is_refused_not_read(tmp_path: Path) -> None:
    """A FIFO would block the read for good (the proxy never started), a device never end."""
    fifo = tmp_path / "key"
    os.mkfifo(fifo)
    ref = SecretSourceRef(kind="file", file=str(fifo))
    with pytest.raises(SecretError, match="not a regular file"):
        asyncio.run(asyncio.wait_for(FileSource().fetch(ref), 5))
    with pytest.raises(SecretError, match="not a regular file"):
        asyncio.run(FileSource().fetch(SecretSourceRef(kind="file", file="/dev/zero")))


@pytest.mark.parametrize(
    ("content", "why"),
    [("[" * 200_000, "nests too deep"), ('{"A=B": "x"}', "without '='")],
    ids=["deep", "bad-name"],
)
def test_rt29_an_env_file_the_proxy_cannot_use_is_a_clear_refusal_and_is_removed(
    tmp_path: Path, content: str, why: str
) -> None:
    env_file = tmp_path / "env.json"
    env_file.write_text(content)
    r = subprocess.run(
        [sys.executable, "-m", "sandgate", "proxy", "--policy", str(tmp_path / "none.yaml"), "--env-file", str(env_file)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert r.returncode == 2 and why in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert not env_file.exists(), "the env file (it holds the Vault token) was left behind"


class TrickleVault:
    """Reads a request, then sends a header that never ends, a byte every 0.3 s: within every
    per-read timeout a client has."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c: socket.socket) -> None:
        with c, contextlib.suppress(OSError):
            c.recv(65536)
            c.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
            while not self.stop.wait(0.3):
                c.sendall(b"a")

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


def test_rt29_a_vault_answering_a_byte_at_a_time_does_not_stop_policy_reloads(
    make_proxy: Callable[..., ProxyProcess],
) -> None:
    """Each read outlived its timeout in a thread of the loop's default pool; a dozen refreshes
    held all of them, and the policy watcher (which reads the file in that pool) never ran again:
    a revocation never applied, silently. Vault's calls have threads of their own now."""
    vault = TrickleVault()
    secrets_ = "".join(
        f"    - name: v{i}\n      placeholder: rt29-ph-{PH}-{i}\n"
        f"      source: {{vault: {{mount: secret, path: a/{i}, key: k}}}}\n      hosts: [api.openai.com]\n"
        for i in range(3)
    )
    text = f"""
apiVersion: sandgate.dev/v1alpha1
kind: EgressPolicy
metadata: {{name: rt29-trickle}}
spec:
  allow:
    - host: echo.example.com
    - host: api.openai.com
  secrets:
{secrets_}"""
    try:
        p = make_proxy(text, "--vault-addr", f"http://127.0.0.1:{vault.port}", "--vault-allow-http",
                       "--vault-timeout", "1", "--secret-refresh", "1", env={"VAULT_TOKEN": "s.rt29" + secrets.token_hex(8)})  # fmt: skip
        time.sleep(10)  # (ten refreshes of three secrets)
        before = reloads(p)
        p.policy.write_text(text.replace("echo.example.com", "files.example.org"))
        wait_for(lambda: reloads(p) > before)
    finally:
        vault.close()
