"""A method a request names for itself (``_method``) is judged by the policy's ``methods``, end to
end through a running sidecar. Red team 64 closed ``POST ...?_method=DELETE``; these went through
after it with the key, under ``methods: [GET, POST]``: the name spelled otherwise in the query
(``_%6Dethod``, PHP's ``.method`` and ``[method``, Rack 2's ``;``, Salesforce's ``_HttpMethod``)
and any POST body (a form, JSON for Laravel, a multipart part, a compressed form). A body that
may name its method and would stream (chunked, or over the 256 KiB held otherwise) is held whole
where the policy allows only some methods, and streams as before where it allows any."""

from __future__ import annotations

import gzip
import time
from collections.abc import Callable

import pytest

from tests.conftest import MAIN_POLICY, OPENAI, needs_root
from tests.proxy.test_redteam38 import _reload
from tests.proxy.test_redteam64 import POLICY, keyed
from tests.support.clients import Reply, raw_request, tunnel
from tests.support.proxyproc import ProxyProcess
from tests.support.upstream import Seen

pytestmark = needs_root

FORM = "application/x-www-form-urlencoded"


@pytest.fixture(scope="module")
def rules(make_proxy: Callable[..., ProxyProcess]) -> ProxyProcess:
    return make_proxy(POLICY)


@pytest.fixture(scope="module")
def any_method(make_proxy: Callable[..., ProxyProcess]) -> ProxyProcess:
    return make_proxy(MAIN_POLICY)


def post(
    p: ProxyProcess, target: str, body: bytes = b"{}", fields: tuple[str, ...] = (), chunked: bool = False
) -> Reply:
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {len(body)}"
    sent = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if chunked else body
    head = "\r\n".join(
        [f"POST {target} HTTP/1.1", "Host: api.openai.com", f"Authorization: Bearer {OPENAI.placeholder}",
         *fields, framing, "Connection: close"]
    )  # fmt: skip
    s = tunnel(p.port, "api.openai.com:443", "api.openai.com", p.ca)
    return raw_request(s, (head + "\r\n\r\n").encode() + sent)


def refused_without_the_key(reply: Reply, upstreams: dict[str, Seen], before: int, status: int, reason: str) -> None:
    assert (reply.status, reply.reason) == (status, reason)
    if keyed(upstreams, before):  # (not `assert not ...`: pytest would print the real key)
        pytest.fail("the real key went out")


@pytest.mark.parametrize(
    "query",
    ["_%6Dethod=DELETE", ".method=DELETE", "[method=DELETE", "a=1;_method=DELETE", "_method%00x=DELETE",
     "_method[]=DELETE", "_HttpMethod=PATCH", "X-HTTP-Method-Override=PUT"],
)  # fmt: skip
def test_a_method_named_in_the_query_in_any_spelling_is_judged(
    rules: ProxyProcess, upstreams: dict[str, Seen], query: str
) -> None:
    before = len(upstreams["api"].requests)
    refused_without_the_key(post(rules, f"/v1/chat/x?{query}"), upstreams, before, 405, "method_not_allowed")


@pytest.mark.parametrize(
    ("fields", "body"),
    [
        ((), b"a=1&_method=DELETE"),  # no Content-Type: Rack reads it as a form
        ((f"Content-Type: {FORM}; charset=utf-8",), b"_%6Dethod=delete"),
        (("Content-Type: application/json",), b'{"messages": [], "\\u005fmethod": "DELETE"}'),  # Laravel
        (
            ("Content-Type: multipart/form-data; boundary=XyZ",),
            b'--XyZ\r\nContent-Disposition: form-data; name="_method"\r\n\r\nDELETE\r\n--XyZ--\r\n',
        ),
        ((f"Content-Type: {FORM}", "Content-Encoding: gzip"), gzip.compress(b"_method=DELETE")),
    ],
    ids=["no-content-type", "form", "json", "multipart", "gzip-form"],
)
def test_a_method_named_in_a_post_body_is_judged(
    rules: ProxyProcess, upstreams: dict[str, Seen], fields: tuple[str, ...], body: bytes
) -> None:
    before = len(upstreams["api"].requests)
    refused_without_the_key(post(rules, "/v1/chat/x", body, fields), upstreams, before, 405, "method_not_allowed")


def test_a_body_naming_an_allowed_method_or_none_still_swaps(rules: ProxyProcess, upstreams: dict[str, Seen]) -> None:
    for fields, body in [((f"Content-Type: {FORM}",), b"_method=GET&payment_method=card"),
                         (("Content-Type: application/json",), b'{"method": "eth_call", "model": "x"}'),
                         (("Content-Type: text/plain",), b"_method=DELETE")]:  # fmt: skip
        before = len(upstreams["api"].requests)
        assert post(rules, "/v1/chat/x", body, fields).status == 200
        assert keyed(upstreams, before), body


BIG = b'{"model": "x", "image": "' + b"A" * 300_000 + b'"'  # past the 256 KiB held otherwise


@pytest.mark.parametrize(
    ("fields", "body", "chunked", "named"),
    [((f"Content-Type: {FORM}",), b"a=1&_method=DELETE", True, True), ((), b"a=1", True, False),
     (("Content-Type: application/json",), BIG + b', "_method": "DELETE"}', False, True),
     (("Content-Type: application/json",), BIG + b"}", False, False),
     (("Content-Type: application/json",), BIG + b', "_method": "DELETE"}', True, True)],
    ids=["chunked-form", "chunked-no-method", "big-json", "big-json-no-method", "big-chunked-json"],
)  # fmt: skip
def test_a_body_that_would_stream_is_held_whole_and_read_where_the_method_matters(
    rules: ProxyProcess, any_method: ProxyProcess, upstreams: dict[str, Seen], fields: tuple[str, ...],
    body: bytes, chunked: bool, named: bool
) -> None:  # fmt: skip
    """Before it was read, such a body was refused (a vision request of a few MiB, under a rule that
    lists methods): it is held (up to --max-request-body), read, and sent whole, or refused."""
    before = len(upstreams["api"].requests)
    reply = post(rules, "/v1/chat/x", body, fields, chunked)
    if named:
        refused_without_the_key(reply, upstreams, before, 405, "method_not_allowed")
    else:
        assert reply.status == 200 and keyed(upstreams, before)
        assert upstreams["api"].requests[-1]["body"] == body.decode()  # (whole, as sent)
    # where the policy allows any method, it streams as before
    before = len(upstreams["api"].requests)
    assert post(any_method, "/v1/chat/x", body, fields, chunked).status == 200
    assert keyed(upstreams, before)


def test_a_streamed_body_no_framework_reads_for_a_method_passes(
    rules: ProxyProcess, upstreams: dict[str, Seen]
) -> None:
    before = len(upstreams["api"].requests)
    assert post(rules, "/v1/chat/x", b"_method=DELETE", ("Content-Type: text/plain",), chunked=True).status == 200
    assert keyed(upstreams, before)


def test_a_held_body_is_judged_by_the_policy_a_reload_brought_meanwhile(
    make_proxy: Callable[..., ProxyProcess], upstreams: dict[str, Seen]
) -> None:
    """Its head came under a policy that allows any method (its body was not read for one); the
    policy reloaded before its body came lists methods: the body is read and judged."""
    p = make_proxy(POLICY.replace("      methods: [GET, POST]\n", ""))
    body = b"_method=DELETE"
    s = tunnel(p.port, "api.openai.com:443", "api.openai.com", p.ca)
    s.sendall(f"POST /v1/chat/x HTTP/1.1\r\nHost: api.openai.com\r\nAuthorization: Bearer {OPENAI.placeholder}\r\n"
              f"Content-Type: {FORM}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode())  # fmt: skip
    time.sleep(0.5)
    _reload(p, POLICY)
    before = len(upstreams["api"].requests)
    refused_without_the_key(raw_request(s, body), upstreams, before, 405, "method_not_allowed")
