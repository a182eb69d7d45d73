"""Red team 66: after red team 65, a POST body still named DELETE past ``methods: [GET, POST]``
with the key, in readings the red team checked with PHP 8.2 and Express (body-parser with
method-override):

- JSON that Python's parser refused and theirs read: an integer of over 4,300 digits (PHP, Node),
  a byte that is no UTF-8 (body-parser replaces it), nesting past Python's recursion limit (Node),
  and ``charset=utf-7`` (body-parser decodes any ``utf-*``; ``+AF8-method`` is ``_method``). A
  JSON body is now read in its declared charsets with bytes replaced, numbers not converted, and
  one that still does not parse names a method no rule allows;
- a multipart boundary PHP takes elsewhere than a ``; boundary=`` parameter (``xboundary=BBB``
  first, a blank after ``=``, ``, boundary=``), the part's Content-Disposition folded so that a
  line-by-line look missed it.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.conftest import OPENAI, needs_root
from tests.proxy.test_redteam64 import POLICY, keyed
from tests.support.clients import Reply, raw_request, tunnel
from tests.support.proxyproc import ProxyProcess
from tests.support.upstream import Seen

pytestmark = needs_root


@pytest.fixture(scope="module")
def rules(make_proxy: Callable[..., ProxyProcess]) -> ProxyProcess:
    return make_proxy(POLICY)


def post(p: ProxyProcess, body: bytes, ctype: str = "application/json") -> Reply:
    head = (
        f"POST /v1/chat/x HTTP/1.1\r\nHost: api.openai.com\r\nAuthorization: Bearer {OPENAI.placeholder}\r\n"
        f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    s = tunnel(p.port, "api.openai.com:443", "api.openai.com", p.ca)
    return raw_request(s, head.encode() + body)


CASES = {
    "huge-integer": b'{"n":' + b"1" * 5000 + b',"_method":"DELETE"}',
    "invalid-utf8": b'{"n":"\xff","_method":"DELETE"}',
    "deep-nesting": b'{"n":' + b"[" * 5000 + b"]" * 5000 + b',"_method":"DELETE"}',
}
UTF7 = "application/json; charset=utf-7"  # body-parser accepts any utf-* charset; iconv-lite decodes UTF-7


@pytest.mark.parametrize("body", CASES.values(), ids=CASES.keys())
def test_rt66_a_json_body_python_cannot_parse_still_has_its_method_judged(
    rules: ProxyProcess, upstreams: dict[str, Seen], body: bytes
) -> None:
    before = len(upstreams["api"].requests)
    reply = post(rules, body)
    if keyed(upstreams, before):
        pytest.fail(f"the real key went out with a JSON body naming _method=DELETE (status {reply.status})")
    assert (reply.status, reply.reason) == (405, "method_not_allowed")


def test_rt66_a_json_body_in_utf7_naming_delete_is_judged(rules: ProxyProcess, upstreams: dict[str, Seen]) -> None:
    # '+AF8-method' is '_method' in UTF-7: Express's body-parser decodes the declared charset.
    before = len(upstreams["api"].requests)
    reply = post(rules, b'{"+AF8-method":"DELETE"}', UTF7)
    if keyed(upstreams, before):
        pytest.fail(f"the real key went out with a UTF-7 JSON body naming _method=DELETE (status {reply.status})")
    assert (reply.status, reply.reason) == (405, "method_not_allowed")


def test_rt66_control_a_plain_json_delete_is_refused(rules: ProxyProcess, upstreams: dict[str, Seen]) -> None:
    before = len(upstreams["api"].requests)
    assert post(rules, b'{"_method":"DELETE"}').status == 405
    if keyed(upstreams, before):
        pytest.fail("the real key went out")


MULTIPART = {
    "substring-boundary-folded": (
        "Content-Type: multipart/form-data; xboundary=BBB; boundary=AAA",
        b'--BBB\r\nContent-Disposition: form-data;\r\n name="_method"\r\n\r\nDELETE\r\n--BBB--\r\n',
    ),
    # PHP keeps the blank after '=' in the boundary ("-- AAA"); the proxy drops it and splits at "--AAA".
    "blank-after-equals-folded": (
        "Content-Type: multipart/form-data; boundary= AAA",
        b'-- AAA\r\nContent-Disposition: form-data;\r\n name="_method"\r\n\r\nDELETE\r\n-- AAA--\r\n',
    ),
    # PHP finds "boundary" anywhere; the proxy wants it after a ';'.
    "comma-before-boundary-folded": (
        "Content-Type: multipart/form-data, boundary=AAA",
        b'--AAA\r\nContent-Disposition: form-data;\r\n name="_method"\r\n\r\nDELETE\r\n--AAA--\r\n',
    ),
}


@pytest.mark.parametrize("case", MULTIPART.values(), ids=MULTIPART.keys())
def test_rt66_a_multipart_boundary_php_reads_elsewhere_still_has_its_method_judged(
    rules: ProxyProcess, upstreams: dict[str, Seen], case: tuple[str, bytes]
) -> None:
    ctype, body = case
    before = len(upstreams["api"].requests)
    reply = post(rules, body, ctype.removeprefix("Content-Type: "))
    if keyed(upstreams, before):
        pytest.fail(f"the real key went out with a multipart body naming _method=DELETE (status {reply.status})")
    assert (reply.status, reply.reason) == (405, "method_not_allowed")
