"""Red team 65: after 71ec5e4 read ``_method`` in a POST body, a body naming DELETE in a spelling
the proxy did not read reached the upstream with the real key under ``methods: [GET, POST]``
(each reading below checked against Rack 2.2, php-cgi 8.2, qs and busboy by the red team): a
multipart part named by its last or single-quoted ``name``, a folded Content-Disposition, a
``Content-ID`` (Rack), a header merely ending in ``Content-Disposition`` (Rack); a form name in
brackets (Rack 2, qs); an empty Content-Type (Rack: none); ``application/x-www-form-urlencoded x``
(PHP cuts the media type at a blank); and a ``deflate`` body that reads two ways, 65 KB of filler
zlib-wrapped and ``&_method=DELETE`` as raw deflate (.NET's DeflateStream). Each now gets a refusal
and the key stays home."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable

import pytest

from proxy.core.decode import DecodeError, check_one_reading
from tests.conftest import OPENAI, needs_root
from tests.proxy.test_redteam64 import POLICY, keyed
from tests.support.clients import Reply, raw_request, tunnel
from tests.support.proxyproc import ProxyProcess
from tests.support.upstream import Seen

pytestmark = needs_root


@pytest.fixture(scope="module")
def rules(make_proxy: Callable[..., ProxyProcess]) -> ProxyProcess:
    return make_proxy(POLICY)


def post(p: ProxyProcess, fields: tuple[str, ...], body: bytes, method: str = "POST") -> Reply:
    head = "\r\n".join(
        [f"{method} /v1/chat/x HTTP/1.1", "Host: api.openai.com", f"Authorization: Bearer {OPENAI.placeholder}",
         *fields, f"Content-Length: {len(body)}", "Connection: close"]
    )  # fmt: skip
    s = tunnel(p.port, "api.openai.com:443", "api.openai.com", p.ca)
    return raw_request(s, (head + "\r\n\r\n").encode() + body)


MP = "Content-Type: multipart/form-data; boundary=XyZ"


def part(head: bytes, value: bytes = b"DELETE") -> bytes:
    return b"--XyZ\r\n" + head + b"\r\n\r\n" + value + b"\r\n--XyZ--\r\n"


CASES = {
    # PHP (rfc1867.c: the last name= of a Content-Disposition wins) and Rack 2.2
    # (/Content-Disposition:[^:]*;\s*name=(VALUE)/, greedy: the last) read "_method"; the proxy reads "x".
    "multipart-duplicate-name": ((MP,), part(b'Content-Disposition: form-data; name="x"; name="_method"')),
    # PHP's multipart_buffer_headers: a line starting with a blank (or with no ':') continues the previous header.
    "multipart-folded-disposition": ((MP,), part(b'Content-Disposition: form-data;\r\n name="_method"')),
    # Rack 2.x multipart parser: no name in Content-Disposition -> the name is the part's Content-ID.
    "multipart-content-id": ((MP,), part(b"Content-Disposition: form-data\r\nContent-ID: _method")),
    # Rack 2.2: MULTIPART_CONTENT_DISPOSITION is not anchored at a line start.
    "multipart-prefixed-disposition": ((MP,), part(b'X-Content-Disposition: form-data; name="_method"')),
    # PHP's getword_conf takes a value in single quotes as quoted: name='_method' is "_method".
    "multipart-single-quoted-name": ((MP,), part(b"Content-Disposition: form-data; name='_method'")),
    # The same, name*= first (PHP and Rack read only name=), a "name=" inside a quoted value before
    # it, a continuation line without a leading blank (PHP appends it; Rack 2's [^:]* spans it).
    "multipart-name-star-first": ((MP,), part(b"Content-Disposition: form-data; name*=utf-8''x; name=\"_method\"")),
    "multipart-quoted-semicolon": ((MP,), part(b'Content-Disposition: form-data; x="a;name=y"; name="_method"')),
    "multipart-continuation-line": ((MP,), part(b'Content-Disposition: form-data;\r\nname="_method"')),
    # Rack 2.x parses multipart/mixed too (PARSEABLE_DATA_MEDIA_TYPES), the name from Content-ID.
    "multipart-mixed-content-id": (("Content-Type: multipart/mixed; boundary=XyZ",), part(b"Content-ID: _method")),
    # Rack 2.x normalize_params: name =~ /\A[\[\]]*([^\[\]]+)\]*/ -> "_method"; qs (Express extended) -> "_method".
    "form-bracketed-name": (("Content-Type: application/x-www-form-urlencoded",), b"[_method]=DELETE"),
    "form-bracketed-name-escaped": (("Content-Type: application/x-www-form-urlencoded",), b"%5B_method%5D=DELETE"),
    "form-leading-brackets": (("Content-Type: application/x-www-form-urlencoded",), b"[]_method=DELETE"),
    "form-nested-brackets": (("Content-Type: application/x-www-form-urlencoded",), b"[[_method]]=DELETE"),
    "form-trailing-bracket": (("Content-Type: application/x-www-form-urlencoded",), b"_method]=DELETE"),
    # Rack: an empty CONTENT_TYPE is nil -> a POST body without one is parsed as a form.
    "empty-content-type": (("Content-Type: ",), b"_method=DELETE"),
    # PHP's SAPI cuts the media type at ';', ',' or ' ' -> application/x-www-form-urlencoded -> $_POST.
    "form-type-blank-suffix": (("Content-Type: application/x-www-form-urlencoded x",), b"_method=DELETE"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_rt65_a_method_named_in_the_body_in_a_spelling_a_framework_reads_is_judged(
    rules: ProxyProcess, upstreams: dict[str, Seen], case: str
) -> None:
    fields, body = CASES[case]
    before = len(upstreams["api"].requests)
    reply = post(rules, fields, body)
    if keyed(upstreams, before):
        pytest.fail(f"{case}: the real key went out with a body naming DELETE (status {reply.status})")
    assert (reply.status, reply.reason) == (405, "method_not_allowed")


def polyglot(payload: bytes = b"&_method=DELETE") -> bytes:
    # zlib view: CMF 0x78, FLG 0x01, then a final stored block of 0xFEFE bytes from byte 7, adler32.
    # raw view: a non-final stored block (LEN 0x0101, NLEN 0xFEFE) of 257 bytes, then a final
    # fixed-Huffman block with the payload; what follows it is ignored.
    head = bytes([0x78, 0x01, 0x01, 0xFE, 0xFE])
    c = zlib.compressobj(9, zlib.DEFLATED, -15, 9, zlib.Z_FIXED)
    body = head + b"\x01\x01" + b"x" * 255 + c.compress(payload) + c.flush()
    body += b"y" * (7 + 0xFEFE - len(body))
    return body + struct.pack(">I", zlib.adler32(body[7:]))


def test_rt65_the_deflate_body_reads_two_ways_and_is_refused_for_it() -> None:
    body = polyglot()
    raw = zlib.decompressobj(-15)
    assert raw.decompress(body).endswith(b"&_method=DELETE") and raw.eof
    decoded = zlib.decompress(body)
    assert b"_method" not in decoded
    with pytest.raises(DecodeError, match="reads two ways"):
        check_one_reading("deflate", body, decoded, 1 << 20)
    # a body with one reading, zlib-wrapped or raw, is decoded as before
    for one in (zlib.compress(b"_method=GET" * 100), zlib.compress(b"x" * 10_000)[2:-4]):
        check_one_reading("deflate", one, b"(not compared: it has no second reading)", 1 << 20)
    # a raw reading longer than the bound cannot be compared: refused
    bomb = polyglot(b"\0" * (4 << 20))
    with pytest.raises(DecodeError, match="reads two ways"):
        check_one_reading("deflate", bomb, zlib.decompress(bomb), 1 << 20)


def test_rt65_a_deflate_body_read_raw_names_delete(rules: ProxyProcess, upstreams: dict[str, Seen]) -> None:
    body = polyglot()
    head = (
        "POST /v1/chat/x HTTP/1.1\r\nHost: api.openai.com\r\n"
        f"Authorization: Bearer {OPENAI.placeholder}\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Encoding: deflate\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    before = len(upstreams["api"].requests)
    s = tunnel(rules.port, "api.openai.com:443", "api.openai.com", rules.ca)
    reply = raw_request(s, head.encode() + body)
    if keyed(upstreams, before):
        pytest.fail(f"the real key went out with a deflate body whose raw reading names DELETE ({reply.status})")
    assert (reply.status, reply.reason) == (400, "malformed_request")
    assert "reads two ways" in reply.body
