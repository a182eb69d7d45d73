"""Red team 64: a request the policy forbids went out with the real key.

- A path rule (``paths: ["/v1/chat/*"]``) matched ``/v1/chat/%252e%252e/%252e%252e/admin`` (``.``
  percent-encoded twice), ``..%252f`` and ``%u002e%u002e`` (IIS's and JavaScript's ``%u``): behind a
  server that decodes twice, or reads ``%u``, that is ``/admin``. Also let through: a full-width
  full stop (``%ef%bc%8e``, which NFKC reads as ``.``), an overlong ``.`` (``%c0%ae``), ``.%00.``,
  ``...``. ``%2e%2e`` was already refused.
- ``methods: [GET, POST]`` let ``POST ...?_method=DELETE`` through: Rails, Laravel and Symfony take
  ``_method`` for the method (the header forms were already removed).
- ``X-HTTP-Host-Override`` was forwarded (``X-Host``, ``X-Forwarded-Host`` and the others of the
  list were removed): any name of the families (``*override*``, ``*forwarded*``, ``x-original-*``,
  ``x-rewrite-*``) is now removed.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.conftest import MAIN_POLICY, OPENAI, needs_root
from tests.support.clients import Reply, raw_request, tunnel
from tests.support.proxyproc import ProxyProcess
from tests.support.upstream import Seen

pytestmark = needs_root

POLICY = f"""
apiVersion: sandgate.dev/v1alpha1
kind: EgressPolicy
metadata: {{name: rt64}}
spec:
  allow:
    - host: api.openai.com
      paths: ["/v1/chat/*"]
      methods: [GET, POST]
  secrets:
    - name: openai
      placeholder: {OPENAI.placeholder}
      source: {{env: {OPENAI.env}}}
      hosts: [api.openai.com]
"""


@pytest.fixture(scope="module")
def rules(make_proxy: Callable[..., ProxyProcess]) -> ProxyProcess:
    return make_proxy(POLICY)


def send(p: ProxyProcess, method: str, target: str, extra: str = "", body: str = "") -> Reply:
    s = tunnel(p.port, "api.openai.com:443", "api.openai.com", p.ca)
    return raw_request(
        s,
        f"{method} {target} HTTP/1.1\r\nHost: api.openai.com\r\nAuthorization: Bearer {OPENAI.placeholder}\r\n{extra}"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}".encode(),
    )


def keyed(upstreams: dict[str, Seen], before: int) -> list[dict[str, object]]:
    return [r for r in upstreams["api"].requests[before:] if OPENAI.real in str(r["headers"])]


@pytest.mark.parametrize(
    "target",
    [
        "/v1/chat/%252e%252e/%252e%252e/admin",
        "/v1/chat/..%252f..%252fadmin",
        "/v1/chat/%u002e%u002e/%u002e%u002e/admin",
        "/v1/chat/%ef%bc%8e%ef%bc%8e/%ef%bc%8e%ef%bc%8e/admin",
        "/v1/chat/%c0%ae%c0%ae/%c0%ae%c0%ae/admin",
        "/v1/chat/.%00./.%00./admin",
        "/v1/chat/.../.../admin",
        "/v1/chat/..%20/..%20/admin",
    ],
    ids=["dot-twice", "slash-twice", "percent-u", "full-width", "overlong", "nul", "three-dots", "dots-blank"],
)
def test_rt64_a_dot_segment_in_any_reading_never_matches_a_path_rule(
    rules: ProxyProcess, upstreams: dict[str, Seen], target: str
) -> None:
    before = len(upstreams["api"].requests)
    reply = send(rules, "GET", target)
    assert (reply.status, reply.reason) == (403, "path_not_allowed")
    if keyed(upstreams, before):  # (not `assert not ...`: pytest would print the real key)
        pytest.fail(f"the real key went out with {target}")


def test_rt64_a_plain_path_under_the_rule_still_swaps(rules: ProxyProcess, upstreams: dict[str, Seen]) -> None:
    before = len(upstreams["api"].requests)
    assert send(rules, "POST", "/v1/chat/completions?x=caf%C3%A9", body="{}").status == 200
    assert keyed(upstreams, before)


@pytest.mark.parametrize("target", ["/v1/chat/x?_method=DELETE", "/v1/chat/x?a=1&%5Fmethod=delete"])
def test_rt64_a_method_named_in_the_query_is_judged_too(
    rules: ProxyProcess, upstreams: dict[str, Seen], target: str
) -> None:
    before = len(upstreams["api"].requests)
    reply = send(rules, "POST", target, body="{}")
    assert (reply.status, reply.reason) == (405, "method_not_allowed")
    if keyed(upstreams, before):
        pytest.fail(f"the real key went out with {target}")
    assert send(rules, "POST", "/v1/chat/x?_method=GET", body="{}").status == 200  # (an allowed one passes)


def test_rt64_a_method_named_in_a_form_body_is_judged_too(rules: ProxyProcess, upstreams: dict[str, Seen]) -> None:
    form = "Content-Type: application/x-www-form-urlencoded\r\n"
    assert send(rules, "POST", "/v1/chat/x", form, "_method=DELETE").status == 405


@pytest.fixture(scope="module")
def main(make_proxy: Callable[..., ProxyProcess]) -> ProxyProcess:
    return make_proxy(MAIN_POLICY)


@pytest.mark.parametrize(
    "header",
    ["X-HTTP-Host-Override", "X-Host-Override", "X_HTTP_Host_Override", "X-Forwarded-Prefix", "X-Forwarded-Uri",
     "X-Original-Method", "X-Original-Path", "X-Rewrite-Path", "X-Override-URL", "X-Sandgate-Anything"],
)  # fmt: skip
def test_rt64_a_routing_header_of_any_name_in_its_families_is_removed(
    main: ProxyProcess, upstreams: dict[str, Seen], header: str
) -> None:
    before = len(upstreams["api"].requests)
    assert send(main, "GET", "/v1/models", f"{header}: attacker.test\r\nX-Kept: yes\r\n").status == 200
    seen = upstreams["api"].requests[before:]
    assert seen and seen[-1]["headers"].get("x-kept") == "yes"
    assert not [n for n in seen[-1]["headers"] if "attacker" in seen[-1]["headers"][n]], seen[-1]["headers"].keys()
