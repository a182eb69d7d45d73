"""The methods a request names for itself (``_method``): every spelling a framework reads as the
override is read (generated, not only listed), ordinary fields are not, and the policy judges
each method named. After red team 64 only ``?_method=`` and ``?%5Fmethod=`` were read: a name
percent-encoded elsewhere (``_%6Dethod``), PHP's readings (``.method``, ``[method``,
``_method%00x``), Rack 2's ``;``, Salesforce's ``_HttpMethod`` and any ``POST`` body went
through."""

from __future__ import annotations

import json
import urllib.parse

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.policy.decide import RequestFacts, decide, method_matters, overridden, reads_body_method
from proxy.policy.load import parse_policy
from proxy.policy.model import Reason
from proxy.policy.override import UNREADABLE, body_methods, php_name, query_methods, read_as_override

POLICY = parse_policy("""
apiVersion: sandgate.dev/v1alpha1
kind: EgressPolicy
metadata: {name: override}
spec:
  allow:
    - host: api.example.com
      paths: ["/v1/chat/*"]
      methods: [GET, POST]
    - host: any.example.com
""")
CHAT = RequestFacts("api.example.com", 443, "POST", "/v1/chat/x")
ANY = RequestFacts("any.example.com", 443, "POST", "/v1/chat/x")
FORM = "application/x-www-form-urlencoded"


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("_method=DELETE", ["DELETE"]),
        ("a=1&_%6Dethod=delete", ["DELETE"]),  # a name percent-encoded anywhere
        ("%5F%6D%65%74%68%6F%64=PUT", ["PUT"]),
        (".method=DELETE", ["DELETE"]),  # PHP: '.' and ' ' in a name are '_'
        ("[method=DELETE", ["DELETE"]),  # PHP: a '[' without a ']' is '_'
        ("_method[]=DELETE", ["DELETE"]),  # PHP: an array named _method
        ("_method%00junk=DELETE", ["DELETE"]),  # PHP: the name ends at a NUL
        ("++_method=DELETE", ["DELETE"]),  # PHP: leading blanks dropped
        ("_METHOD=delete", ["DELETE"]),  # ASP.NET: form fields by any case
        ("a=1;_method=DELETE", ["DELETE"]),  # Rack 2 splits at ';' too
        ("_method=+DELETE+", ["DELETE"]),
        ("_HttpMethod=PATCH", ["PATCH"]),  # Salesforce
        ("X-HTTP-Method-Override=PUT", ["PUT"]),
        ("_method=DELETE&_method=PUT", ["DELETE", "PUT"]),  # each one (frameworks differ on which wins)
        ("[_method]=DELETE", ["DELETE"]),  # Rack 2 and qs: brackets around a top-level name
        ("[[_method]]=DELETE&[]_method=PUT&_method]=PATCH", ["DELETE", "PUT", "PATCH"]),
        # not names of the override, or nothing named
        ("+method=DELETE", []),  # PHP: " method" is "method" (its leading blank dropped)
        ("method=eth_call", []),  # JSON-RPC's field
        ("payment_method=pm_card_visa", []),  # Stripe's
        ("methods=a&_methods=b&http_method=c", []),
        ("_method=", []),  # empty: the request's own method stays
        ("", []),
        ("a=%zz&b=%", []),
    ],
)
def test_the_query_names_methods_as_the_frameworks_read_them(query: str, named: list[str]) -> None:
    assert query_methods(query) == named
    assert body_methods([], query.encode()) == named  # a POST body without a Content-Type: a form (Rack)
    assert body_methods([FORM], query.encode()) == named


@pytest.mark.parametrize(
    ("content_types", "body", "named"),
    [
        ([f"{FORM}; charset=utf-8"], b"a=1&_method=delete", ["DELETE"]),
        (["Application/X-WWW-Form-Urlencoded"], b"_method=PUT", ["PUT"]),
        (["text/plain", FORM], b"_method=PUT", ["PUT"]),  # every Content-Type field counts
        (["application/json"], b'{"_method": "DELETE", "a": 1}', ["DELETE"]),
        (["application/vnd.api+json"], b'{"\\u005fmethod": "put"}', ["PUT"]),  # Laravel: "/json" or "+json"
        (["text/plain; x=/json"], b'{"_method": "PUT"}', ["PUT"]),  # (Laravel looks at the whole field)
        (["application/json"], b'{"_method": "GET", "_method": "DELETE"}', ["GET", "DELETE"]),
        (["application/json"], b'{"a": {"_method": "DELETE"}}', []),  # only a top-level member
        (["application/json"], b'[{"_method": "DELETE"}]', []),
        (["application/json"], b'{"_method": ["DELETE"]}', []),
        # JSON this parser cannot read (some other may): a method no rule allows (red team 66)
        (["application/json"], b'{"_method": "DELETE"', [UNREADABLE]),
        (["application/json"], b"\xff\xfe", [UNREADABLE]),
        (["application/json"], b"[" * 100_000 + b"]" * 100_000, [UNREADABLE]),
        # ... and what it now reads as PHP and Node do
        (["application/json"], b'{"n": ' + b"1" * 5000 + b', "_method": "DELETE"}', ["DELETE"]),
        (["application/json"], b'{"n": "\xff", "_method": "DELETE"}', ["DELETE"]),
        (["application/json; charset=utf-7"], b'{"+AF8-method": "DELETE"}', ["DELETE"]),
        ([""], b"_method=DELETE", ["DELETE"]),  # an empty Content-Type: none, to Rack
        ([f"{FORM} x"], b"_method=DELETE", ["DELETE"]),  # PHP ends the media type at a blank
        ([f"{FORM}; charset=utf-16-le"], "_method=DELETE".encode("utf-16-le"), ["DELETE"]),  # ASP.NET
        (["text/plain"], b"_method=DELETE", []),  # read by no framework
        (["application/octet-stream"], b'{"_method": "DELETE"}', []),
        (
            ["multipart/form-data; boundary=XyZ"],
            b'--XyZ\r\nContent-Disposition: form-data; name="a"\r\n\r\n1\r\n'
            b'--XyZ\r\nContent-Disposition: form-data; name="_method"\r\n\r\nDELETE\r\n--XyZ--\r\n',
            ["DELETE"],
        ),
        (
            ['multipart/form-data; boundary="a b"'],
            b"--a b\nContent-Disposition: form-data; name*=utf-8''%5F%6Dethod\n\npatch\n--a b--",
            ["PATCH"],
        ),
        (
            ["multipart/form-data; boundary=XyZ"],
            b'--XyZ\r\ncontent-disposition: form-data; filename="_method"; name=x\r\n\r\nDELETE\r\n--XyZ--',
            [],  # a file called _method is not the field
        ),
        (
            ["multipart/form-data; boundary=XyZ"],  # a Content-Disposition folded: Go and Rack read its name
            b'--XyZ\r\nContent-Disposition: form-data;\r\n name="_method"\r\n\r\nPUT\r\n--XyZ--',
            ["PUT"],
        ),
        (
            ["multipart/form-data; boundary=XyZ"],  # two names: which one a parser takes differs
            b'--XyZ\r\nContent-Type: text/plain; name="a"\r\nContent-Disposition: form-data; name="_method"; '
            b'name="b"\r\n\r\nPUT\r\n--XyZ--',
            ["PUT"],
        ),
        (
            ["multipart/mixed; boundary=XyZ"],  # Rack 2: a part without a name is named by its Content-ID
            b"--XyZ\r\nContent-ID: <_method>\r\n\r\nPUT\r\n--XyZ--",
            ["PUT"],
        ),
        (
            ["multipart/form-data; boundary=XyZ"],  # PHP: 'single quotes' quote too
            b"--XyZ\r\nContent-Disposition: form-data; name='_method'\r\n\r\nPUT\r\n--XyZ--",
            ["PUT"],
        ),
        (
            ["multipart/form-data; xboundary=B; boundary=A"],  # PHP: after the first "boundary", wherever
            b'--B\r\nContent-Disposition: form-data; name="_method"\r\n\r\nPUT\r\n--B--',
            ["PUT"],
        ),
        (
            ["multipart/form-data; boundary= A"],  # PHP: the blank after '=' is the boundary's
            b'-- A\r\nContent-Disposition: form-data; name="_method"\r\n\r\nPUT\r\n-- A--',
            ["PUT"],
        ),
        (
            ["multipart/form-data; boundary=other"],  # not split by any boundary, named on a folded line
            b'--XyZ\r\nContent-Disposition: form-data;\r\n name="_method"\r\n\r\nDELETE\r\n--XyZ--\r\n',
            [UNREADABLE],
        ),
        (
            # a part no boundary here gives (before the first one), and one that two give ("AAA" and
            # PHP's "AA" after "xboundary"): that one counts once, the other is unreadable
            ["multipart/form-data; boundary=AAA; xboundary=AA"],
            b'--ZZZ\r\nContent-Disposition: form-data; name="_method"\r\n\r\nDELETE\r\n'
            b'--AAA\r\nContent-Disposition: form-data; name="_method"\r\n\r\nGET\r\n--AAA--\r\n',
            ["GET", "GET", UNREADABLE],  # (read under each boundary)
        ),
        (
            ["multipart/form-data; boundary=XyZ"],  # a text that shows such a field is not one
            b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="form.html"\r\n\r\n'
            b'<input name="_method" value="delete">\r\n--XyZ--',
            [],
        ),
        (
            ["multipart/form-data; boundary=other"],  # the part is there, its boundary is not this one
            b'--XyZ\r\nContent-Disposition: form-data; name="_method"\r\n\r\nDELETE\r\n--XyZ--\r\n',
            [UNREADABLE],
        ),
    ],
)
def test_a_post_body_names_methods_by_its_content_type(content_types: list[str], body: bytes, named: list[str]) -> None:
    assert body_methods(content_types, body) == named


# -- every spelling of the name a framework reads ------------------------------------------------------


def _escaped(ch: str, draw: st.DrawFn) -> str:
    code = "%" + f"{ord(ch):02x}"
    return draw(st.sampled_from([ch, code, code.upper()]))


@st.composite
def override_names(draw: st.DrawFn) -> str:
    """A name, as sent in a query or form, that PHP, Rack or ASP.NET reads as an override."""
    target = draw(st.sampled_from(["_method", "_HttpMethod", "X-HTTP-Method-Override", "_method_override"]))
    out = [draw(st.sampled_from(["", "+", "%20", "+%20"]))]  # leading blanks: PHP drops them
    bracket = False
    for i, ch in enumerate(target):
        if ch == "_":
            # PHP: '.' and an unclosed '[' are '_'; a blank too, but not a leading one
            ch = draw(st.sampled_from(["_", ".", "["] + ([" "] if i else [])))
            bracket = bracket or ch == "["
            if ch == " ":
                out.append(draw(st.sampled_from(["+", "%20"])))
                continue
        elif ch.isalpha():
            ch = draw(st.sampled_from([ch.lower(), ch.upper()]))
        out.append(_escaped(ch, draw))
    # after it: an array's index (a ']' would close a '[' read as '_' above), or a NUL and more
    out.append(draw(st.sampled_from(["", "%00x", "%00"] + ([] if bracket else ["[]", "[0]"]))))
    return "".join(out)


@st.composite
def method_values(draw: st.DrawFn) -> tuple[str, str]:
    """(the value as sent, the method it names)."""
    method = draw(st.sampled_from(["DELETE", "PUT", "PATCH", "PURGE", "TRACE"]))
    sent = "".join(_escaped(draw(st.sampled_from([c.lower(), c])), draw) for c in method)
    return draw(st.sampled_from(["", "+", "%20"])) + sent + draw(st.sampled_from(["", "+", "%09"])), method


_OTHER_PAIRS = st.lists(st.sampled_from(["a=1", "model=gpt", "payment_method=card", "method=x", "q=a%26b"]), max_size=3)


@given(name=override_names(), value=method_values(), before=_OTHER_PAIRS, after=_OTHER_PAIRS, sep=st.sampled_from("&;"))
def test_every_spelling_of_the_override_is_read_and_judged(
    name: str, value: tuple[str, str], before: list[str], after: list[str], sep: str
) -> None:
    sent, method = value
    query = sep.join([*before, f"{name}={sent}", *after])
    assert method in query_methods(query), query
    assert method in body_methods([FORM], query.encode()), query
    # and the policy refuses the request for it (DELETE and the rest are not in [GET, POST])
    assert overridden(POLICY, CHAT, query_methods(query), decide(POLICY, CHAT)).reason is Reason.METHOD_NOT_ALLOWED


@given(
    name=st.sampled_from(["_method", "_HttpMethod", "X-HTTP-Method-Override"]),
    before=st.text("[]", max_size=4),
    after=st.text("]", max_size=3),
    value=method_values(),
)
def test_a_name_in_brackets_is_read_as_rack_and_qs_read_it(
    name: str, before: str, after: str, value: tuple[str, str]
) -> None:
    """Rack 2 takes the first run without brackets after any leading ones; qs one pair around it."""
    sent = "".join(urllib.parse.quote(c) if c in "[]" and len(before) % 2 else c for c in before + name + after)
    assert value[1] in query_methods(f"a=1&{sent}={value[0]}")


@given(
    name=st.sampled_from(["_method", "_HttpMethod", "_METHOD", "x_http_method_override"]),
    escaped=st.sets(st.integers(0, 20)),
    value=st.sampled_from(["DELETE", "put", " patch "]),
)
def test_a_json_member_is_read_however_its_name_is_escaped(name: str, escaped: set[int], value: str) -> None:
    written = "".join(f"\\u{ord(c):04x}" if i in escaped else c for i, c in enumerate(name))
    body = ('{"model": "x", "' + written + '": ' + json.dumps(value) + "}").encode()
    assert body_methods(["application/json"], body) == [value.strip().upper()]


@given(st.text(max_size=30))
def test_a_name_that_does_not_hold_method_is_never_read(name: str) -> None:
    if "method" not in php_name(name).lower():
        assert not read_as_override(name)


# -- what the policy makes of them ------------------------------------------------------------------------


def test_a_method_named_is_judged_by_the_rule_and_an_allowed_one_passes() -> None:
    decision = decide(POLICY, CHAT)
    assert overridden(POLICY, CHAT, ["DELETE"], decision).reason is Reason.METHOD_NOT_ALLOWED
    assert overridden(POLICY, CHAT, ["GET"], decision) is decision
    assert overridden(POLICY, CHAT, [UNREADABLE], decision).reason is Reason.METHOD_NOT_ALLOWED
    assert overridden(POLICY, ANY, ["DELETE", UNREADABLE], decide(POLICY, ANY)).forwards  # any method goes there


def test_a_body_is_read_for_a_method_only_where_one_matters() -> None:
    assert method_matters(POLICY, CHAT) and not method_matters(POLICY, ANY)
    assert reads_body_method(POLICY, CHAT, [FORM])
    assert reads_body_method(POLICY, CHAT, [])  # no Content-Type: a form to Rack
    assert reads_body_method(POLICY, CHAT, ["application/json; charset=utf-8"])
    assert not reads_body_method(POLICY, CHAT, ["text/plain"])
    assert not reads_body_method(POLICY, RequestFacts(CHAT.host, CHAT.port, "PUT", CHAT.path), [FORM])  # POST only
    assert not reads_body_method(POLICY, ANY, [FORM])


def test_report_mode_reports_a_method_named_as_enforce_mode_refuses_it() -> None:
    report = parse_policy(
        """
apiVersion: sandgate.dev/v1alpha1
kind: EgressPolicy
metadata: {name: override}
spec:
  mode: report
  allow: [{host: api.example.com, methods: [POST]}]
"""
    )
    decision = overridden(report, CHAT, ["DELETE"], decide(report, CHAT))
    assert decision.forwards and decision.reason is Reason.METHOD_NOT_ALLOWED


_CONTENT_TYPES = st.lists(
    st.one_of(
        st.text(max_size=40),
        st.sampled_from([FORM, "application/json", "multipart/form-data; boundary=b", ""]).flatmap(
            lambda t: st.text(max_size=30).map(lambda extra: t + extra)
        ),
        st.sampled_from(
            ["punycode", "idna", "utf-7", "utf-16", "rot13", "hex", "uu", "zlib", "undefined", "x" * 300]
        ).map(lambda c: f"{FORM}; charset={c}"),
    ),
    max_size=3,
)


@given(content_types=_CONTENT_TYPES, body=st.binary(max_size=300))
def test_any_body_and_content_type_get_an_answer(content_types: list[str], body: bytes) -> None:
    """Totality: whatever an agent sends, the reading returns (a list of method names), never raises."""
    named = body_methods(content_types, body)
    assert all(isinstance(m, str) and m for m in named)
    assert isinstance(query_methods(body.decode("latin-1")), list)
