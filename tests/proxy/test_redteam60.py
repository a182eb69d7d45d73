"""Red team 60: secret values and placeholders as they change over time. What one value holds of
another is asked of what is served (values held through a failed read, or under a reload's new
bindings, and values kept for scrubbing); a reload may not bring a placeholder that is part of a
value served, nor put a value held in what metrics labels and audit fields carry."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from proxy.metrics import POLICY_RELOADS, SECRET_BLOCKED
from tests.conftest import GITHUB, MAIN_POLICY, OPENAI, needs_root
from tests.support.clients import Reply, curl, raw_request, tunnel
from tests.support.leaks import EXTRA
from tests.support.proxyproc import ProxyProcess
from tests.support.upstream import Seen
from tests.support.wait import wait_for

pytestmark = needs_root

A_OLD = "sk-RT60-OLDA-" + secrets.token_hex(16)
A_NEW = "sk-RT60-NEWA-" + secrets.token_hex(16)
EXTRA += [("rt60-a-old", A_OLD), ("rt60-a-new", A_NEW)]


def policy(openai: Path, github: Path, github_hosts: str = "echo.example.com", more: str = "") -> str:
    return f"""
apiVersion: sandgate.dev/v1alpha1
kind: EgressPolicy
metadata: {{name: rt60}}
spec:
  allow:
    - host: api.openai.com
    - host: echo.example.com
    - host: files.example.org
  secrets:
    - name: openai
      placeholder: {OPENAI.placeholder}
      source: {{file: {openai}}}
      hosts: [api.openai.com]
    - name: github
      placeholder: {GITHUB.placeholder}
      source: {{file: {github}}}
      hosts: [{github_hosts}]
{more}"""


def test_rt60_a_rotated_away_key_inside_another_secrets_new_value_is_never_sent(
    make_proxy: Callable[..., ProxyProcess], upstreams: dict[str, Seen], tmp_path: Path
) -> None:
    """openai rotated from A_OLD to A_NEW (A_OLD still guarded: an agent sending it is refused);
    then github's file was given ``tok-<A_OLD>-x``. The check compared current values only, and
    echo.example.com received openai's replaced key inside github's value."""
    fa, fg = tmp_path / "a.key", tmp_path / "g.key"
    fa.write_text(A_OLD)
    fg.write_text(GITHUB.real)
    p = make_proxy(policy(fa, fg), "--secret-refresh", "0.5")

    def openai() -> Reply:
        return curl(p.url, p.ca, "https://api.openai.com/v1/x", "-H", f"Authorization: Bearer {OPENAI.placeholder}")

    def github() -> Reply:
        return curl(p.url, p.ca, "https://echo.example.com/gh", "-H", f"Authorization: Bearer {GITHUB.placeholder}")

    assert openai().status == 200 and upstreams["api"].requests[-1]["headers"]["authorization"] == f"Bearer {A_OLD}"
    fa.write_text(A_NEW)
    wait_for(lambda: openai().status == 200 and upstreams["api"].requests[-1]["headers"]["authorization"] == f"Bearer {A_NEW}")  # fmt: skip
    assert github().status == 200
    # (red team 60: a replaced value stays guarded until a restart; the log says so as it happens)
    assert '"event": "secret_rotated", "secret": "openai"' in p.stderr()
    before = len(upstreams["echo"].requests)
    fg.write_text(f"tok-{A_OLD}-x")
    wait_for(lambda: github().reason == "secret_invalid")
    assert not any(A_OLD in str(q["headers"]) for q in upstreams["echo"].requests[before:])
    assert openai().status == 200, "openai's own key still goes where it is bound"
    assert "holds a value of secret 'openai'" in p.stderr()


def test_rt60_a_reload_serves_held_values_under_its_bindings_only_once_checked(
    make_proxy: Callable[..., ProxyProcess], upstreams: dict[str, Seen], tmp_path: Path
) -> None:
    """github held ``tok-<openai's key>-x``, bound where openai is. Each reload moving github to
    files.example.org was served at once with the values held, unchecked, until its reads ended
    (40 more secrets made them take a while): a client sending requests meanwhile had openai's key
    delivered to files.example.org inside github's value. Also: openai's own value, refused for
    being held in github's, was forgotten, so github was served alone at the next reload."""
    fa, fg = tmp_path / "a.key", tmp_path / "g.key"
    fa.write_text(OPENAI.real)
    fg.write_text(f"tok-{OPENAI.real}-x")
    more = "".join(
        f"    - {{name: more{i}, placeholder: sk-more-{i}-{i * 7919:032x}, source: {{env: SG_TEST_MAPS}},"
        " hosts: [files.example.org]}\n"
        for i in range(40)
    )
    both = "api.openai.com, echo.example.com"
    text = policy(fa, fg, "echo.example.com", more).replace("hosts: [api.openai.com]", f"hosts: [{both}]")
    p = make_proxy(text, "--secret-refresh", "60")
    stop = threading.Event()
    request = f"GET /h HTTP/1.1\r\nHost: files.example.org\r\nAuthorization: Bearer {GITHUB.placeholder}\r\n\r\n"

    def hammer() -> None:
        while not stop.is_set():
            try:
                s = tunnel(p.port, "files.example.org:443", "files.example.org", p.ca)
                while not stop.is_set():
                    r = raw_request(s, request.encode(), timeout=5)
                    if r.headers.get("connection") == "close":
                        break
                s.close()
            except OSError:
                pass

    before = len(upstreams["files"].requests)
    t = threading.Thread(target=hammer)
    t.start()
    try:
        for i in range(6):
            host = "files.example.org" if i % 2 == 0 else "echo.example.com"
            p.policy.write_text(text.replace("hosts: [echo.example.com]", f"hosts: [{host}]") + f"# {i}\n")
            wait_for(lambda n=i + 1: p.metric(POLICY_RELOADS, result="success") >= n)
            time.sleep(0.7)  # (its reads, then requests under it)
    finally:
        stop.set()
        t.join()
    sent = [str(q["headers"]) for q in upstreams["files"].requests[before:]]
    assert not any(OPENAI.real in s for s in sent), "openai's key went to files.example.org inside github's value"
    assert p.metric(SECRET_BLOCKED, secret="github", reason="secret_invalid") > 0


def test_rt60_a_reload_whose_placeholder_is_part_of_a_value_served_is_refused(
    make_proxy: Callable[..., ProxyProcess], tmp_path: Path
) -> None:
    """A reload gave github a placeholder that is 8 characters of openai's key: it was counted a
    success, and every openai request failed from then on as secret_invalid ("value contains a
    placeholder of the policy", not saying whose)."""
    fa, fg = tmp_path / "a.key", tmp_path / "g.key"
    fa.write_text(OPENAI.real)
    fg.write_text(GITHUB.real)
    p = make_proxy(policy(fa, fg), "--secret-refresh", "0.5")
    openai = ("https://api.openai.com/v1/x", "-H", f"Authorization: Bearer {OPENAI.placeholder}")
    assert curl(p.url, p.ca, *openai).status == 200
    # (quoted: the 8 hex characters are sometimes all digits, which YAML reads as an integer)
    p.policy.write_text(policy(fa, fg).replace(GITHUB.placeholder, f'"{OPENAI.real[16:24]}"'))
    wait_for(lambda: p.metric(POLICY_RELOADS, result="error") == 1)
    assert "spec.secrets[1].placeholder: is part of the value served for secret 'openai'" in p.stderr()
    assert OPENAI.real[16:24] not in p.stderr()
    time.sleep(1.5)  # (refreshes: openai's value, beside the placeholders served, is fine)
    assert curl(p.url, p.ca, *openai).status == 200
    assert p.metric(SECRET_BLOCKED, secret="openai", reason="secret_invalid") == 0


LOW = OPENAI.real.lower()  # (the outbound guard finds a value in any case)


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ("name: test-main", f"name: {LOW}", "metadata.name"),
        ("hosts: [api.openai.com]", f"hosts: [api.openai.com, {LOW}.example.com]", "spec.secrets[0].hosts[1]"),
    ],
    ids=["policy-name", "bound-host"],
)
def test_rt60_a_reload_that_puts_a_value_held_in_the_policys_labels_is_refused(
    make_proxy: Callable[..., ProxyProcess], old: str, new: str, field: str
) -> None:
    """A reload set the policy's name (or a bound host) to openai's key in lower case: it was served,
    and /metrics (sandgate_policy_info, the swaps' host label) and the audit's policy field carried
    the key, which log lines are redacted of. Metrics labels and audit fields carry those texts as
    they are: such a reload is refused, naming the field."""
    p = make_proxy(MAIN_POLICY)
    assert old in MAIN_POLICY
    p.policy.write_text(MAIN_POLICY.replace(old, new))
    wait_for(lambda: p.metric(POLICY_RELOADS, result="error") == 1)
    assert f"{field}: holds a real value the proxy holds (of secret 'openai')" in p.stderr()
    reply = curl(p.url, p.ca, "https://api.openai.com/v1/x", "-H", f"Authorization: Bearer {OPENAI.placeholder}")
    assert reply.status == 200
    assert LOW not in p.metrics().lower() and LOW not in p.audit_path.read_text().lower()
