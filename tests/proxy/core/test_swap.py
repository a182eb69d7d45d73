"""plan_swap(), the pure swap shared by the proxy and `sandgate policy test` (B01, B02, B04, B08-B11)."""

from __future__ import annotations

import base64
import urllib.parse

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.core.finder import Finder
from proxy.core.secret import SecretError
from proxy.core.swap import SwapResult, basic_text, plan_swap, real_value_in, swap_query
from proxy.core.values import build_finder, outbound_runs_of
from proxy.policy.load import parse_policy
from proxy.policy.model import Reason

PH, REAL = "sk-PH-test-openai", "sk-REAL-value"
GH_PH, GH_REAL = "ghp-PH-test-github", "ghs_REAL"
TK_PH, TK_REAL = "tk-PH-test-gitea", "gitea-REAL-token"
POLICY = parse_policy(f"""
apiVersion: sandgate.dev/v1alpha1
kind: EgressPolicy
metadata: {{name: s}}
spec:
  allow: [{{host: api.openai.com, ports: [443, 8443]}}, {{host: echo.example.com}}, {{host: git.example.com}}]
  secrets:
    - {{name: openai, placeholder: {PH}, source: {{env: A}}, hosts: [api.openai.com]}}
    - {{name: github, placeholder: {GH_PH}, source: {{env: B}}, hosts: [git.example.com], headers: [authorization], query: true}}
    - {{name: gitea, placeholder: {TK_PH}, source: {{env: C}}, hosts: [echo.example.com],
        headers: [{{name: authorization, format: "token {{}}"}}, {{name: x-auth, format: "key={{}};v1"}}]}}
""")
VALUES = {"openai": REAL, "github": GH_REAL, "gitea": TK_REAL}


def lookup(name: str) -> str:
    return VALUES[name]


def swap(headers: list[tuple[str, str]], host: str = "api.openai.com", *, port: int = 443, tls: bool = True,
         target: str = "/v1/x", query: list[tuple[str, str]] | None = None, method: str = "POST") -> SwapResult:  # fmt: skip
    return plan_swap(POLICY, host=host, port=port, tls=tls, method=method, target=target, headers=headers,
                     query=query or [], lookup=lookup)  # fmt: skip


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (("Authorization", f"Bearer {PH}"), ("Authorization", f"Bearer {REAL}")),
        (("X-Api-Key", PH), ("X-Api-Key", REAL)),
        (("authorization", f"Bearer {PH}X"), ("authorization", f"Bearer {PH}X")),
        (("authorization", f'Bearer "{PH}"'), ("authorization", f'Bearer "{PH}"')),
        (("authorization", f"Bearer {PH.upper()}"), ("authorization", f"Bearer {PH.upper()}")),
        (("authorization", f"Bearer {PH[:5]}\u200b{PH[5:]}"), ("authorization", f"Bearer {PH[:5]}\u200b{PH[5:]}")),
    ],
    ids=["bearer", "x-api-key", "suffixed", "quoted", "uppercased", "zero-width"],
)
def test_b09_only_exact_whole_tokens_in_slots_are_swapped(header: tuple[str, str], expected: tuple[str, str]) -> None:
    r = swap([header])
    assert r.error is None and r.headers == [expected]
    assert r.swapped == (["openai"] if expected != header else [])


def test_b01_placeholder_to_an_unbound_host_is_refused_wherever_it_is() -> None:
    for headers, target in [
        ([("Authorization", f"Bearer {PH}")], "/"),
        ([("Cookie", f"a={PH}")], "/"),
        ([], f"/?k={PH}"),
        ([], f"/{PH}"),
    ]:
        r = swap(headers, "echo.example.com", target=target)
        assert r.error is Reason.SECRET_NOT_BOUND and r.not_bound == ["openai"] and r.swapped == []


def test_b02_placeholder_outside_a_slot_to_the_bound_host_is_left_alone() -> None:
    r = swap([("Cookie", f"a={PH}"), ("X-Note", PH)], target=f"/v1/{PH}?api_key={PH}", query=[("api_key", PH)])
    assert r.error is None and r.swapped == [] and r.query_swaps == {}
    assert r.headers == [("Cookie", f"a={PH}"), ("X-Note", PH)]


def test_b04_trace_never_gets_a_swapped_value() -> None:
    r = swap([("Authorization", f"Bearer {PH}")], method="TRACE")
    assert r.error is Reason.METHOD_NOT_ALLOWED and REAL not in str(r.headers)


@pytest.mark.parametrize(("port", "tls"), [(443, False), (8443, True)], ids=["plaintext", "other-port"])
def test_b08_binding_is_https_on_the_bound_port(port: int, tls: bool) -> None:
    assert swap([("Authorization", f"Bearer {PH}")], port=port, tls=tls).error is Reason.SECRET_NOT_BOUND


def test_b10_basic_credentials_are_decoded_swapped_and_reencoded() -> None:
    r = swap([("Authorization", f"Basic {b64('x-access-token:' + GH_PH)}")], "git.example.com")
    assert r.error is None and r.swapped == ["github"]
    assert base64.b64decode(r.headers[0][1].split()[1]).decode() == f"x-access-token:{GH_REAL}"


@pytest.mark.parametrize(
    "value",
    [f"Basic {b64('x-access-token:' + GH_PH)}", f"Basic {b64(GH_PH + ':')}"],
    ids=["password", "user"],
)
def test_b10_basic_toward_an_unbound_host_is_refused(value: str) -> None:
    assert swap([("Authorization", value)], "echo.example.com").error is Reason.SECRET_NOT_BOUND


def test_b10_malformed_basic_in_a_slot_is_400() -> None:
    r = swap([("Authorization", f"Basic !!{GH_PH}!!")], "git.example.com")
    assert r.error is Reason.MALFORMED_REQUEST


@pytest.mark.parametrize("value", [f"Basic {b64('u:' + GH_PH)}\x80", f"Basic \u00e9{b64('u:' + GH_PH)}"])
def test_b10_basic_credentials_with_a_byte_outside_ascii_are_malformed_not_a_crash(value: str) -> None:
    """A field's bytes are read as latin-1: a byte above 0x7F in Basic credentials is a character
    base64 has not; such credentials in a slot are malformed_request, as any other invalid base64
    (the wire-totality fuzz found them cutting the connection as an internal error)."""
    r = swap([("Authorization", value)], "git.example.com")
    assert r.error is Reason.MALFORMED_REQUEST and r.swapped == []


@pytest.mark.parametrize("sep", ["\t", " \t", "\t "])
def test_b10_basic_credentials_after_a_tab_carrying_a_placeholder_are_malformed(sep: str) -> None:
    """RFC 9110's credentials follow the scheme after spaces only; Django REST framework's
    ``split()`` reads a tab too, and finds the placeholder (red team 17): not forwarded as it is."""
    r = swap([("Authorization", f"Basic{sep}{b64('u:' + GH_PH)}")], "git.example.com")
    assert r.error is Reason.MALFORMED_REQUEST and r.swapped == []


def test_b10_no_speculative_decoding_of_other_encodings() -> None:
    for value in [f"Bearer {b64(GH_PH)}", f"Bearer {GH_PH.encode().hex()}"]:
        r = swap([("Authorization", value)], "git.example.com")
        assert r.error is None and r.swapped == [] and r.headers == [("Authorization", value)]


def test_b11_duplicate_credential_headers_are_malformed() -> None:
    r = swap([("authorization", f"Bearer {PH}"), ("Authorization", "Bearer other")])
    assert r.error is Reason.MALFORMED_REQUEST and r.swapped == []


@pytest.mark.parametrize(
    "headers",
    [
        [("X-Api-Key", PH), ("X_Api_Key", "attacker")],
        [("X_API_KEY", "attacker"), ("x-api-key", PH)],
    ],
    ids=["hyphen-then-underscore", "underscore-then-hyphen"],
)
def test_b11_a_credential_header_spelled_with_underscores_too_is_a_duplicate(headers: list[tuple[str, str]]) -> None:
    """WSGI, CGI, PHP and Rack read ``X_Api_Key`` as ``X-Api-Key`` (both ``HTTP_X_API_KEY``): two
    fields of one credential header to them, whatever the real key would be forwarded beside (red
    team 17)."""
    r = swap(headers)
    assert r.error is Reason.MALFORMED_REQUEST and r.swapped == []


def test_a_slot_spelled_with_underscores_alone_is_not_swapped() -> None:
    """Not a slot: servers that are not CGI-style read ``X_Api_Key`` as another field."""
    r = swap([("X_Api_Key", PH)])
    assert r.error is None and r.swapped == [] and r.headers == [("X_Api_Key", PH)]


def test_query_swap_replaces_exact_values_only() -> None:
    r = swap([], "git.example.com", target=f"/?t={GH_PH}&u=x{GH_PH}", query=[("t", GH_PH), ("u", f"x{GH_PH}")])
    sent = swap_query(f"t={GH_PH}&u=x{GH_PH}", r.query_swaps)
    assert urllib.parse.parse_qsl(sent) == [("t", GH_REAL), ("u", f"x{GH_PH}")] and r.swapped == ["github"]


@pytest.mark.parametrize(
    ("raw", "sent"),
    [
        (f"t={GH_PH}", f"t={GH_REAL}"),
        (f"a=%FF&t={GH_PH}&b=x;y&c=%7e+d", f"a=%FF&t={GH_REAL}&b=x;y&c=%7e+d"),  # (the rest byte for byte)
        (f"t={GH_PH.replace('-', '%2D')}&flag", f"t={GH_REAL}&flag"),  # (a value that decodes to it)
        (f"t=x{GH_PH}&{GH_PH}=1", f"t=x{GH_PH}&{GH_PH}=1"),  # (not a whole value: as it is)
    ],
)
def test_the_query_is_swapped_in_place(raw: str, sent: str) -> None:
    """Only the parameters whose value is the placeholder change; the agent's other parameters keep
    their own encoding (a rebuilt query re-encoded them: ``%FF`` became ``%EF%BF%BD``)."""
    pairs = urllib.parse.parse_qsl(raw, keep_blank_values=True)
    r = swap([], "git.example.com", target=f"/?{raw}", query=pairs)
    assert swap_query(raw, r.query_swaps) == sent


_QUERY_PARTS = st.sampled_from(["t", "u", "=", "&", ";", "+", "%", "%FF", "%2D", "%7e", "x", GH_PH, GH_PH[:5], "-"])


@given(st.lists(_QUERY_PARTS, max_size=14).map("".join))
def test_swap_query_agrees_with_parse_qsl(raw: str) -> None:
    """Differential: what a server's parse_qsl reads of the swapped query is what the rule says (each
    value that is the placeholder, the real one; the rest unchanged), and with nothing to swap the
    query is the agent's, byte for byte."""
    pairs = urllib.parse.parse_qsl(raw, keep_blank_values=True)
    out = swap_query(raw, {GH_PH: GH_REAL})
    expected = [(k, GH_REAL if v == GH_PH else v) for k, v in pairs]
    assert urllib.parse.parse_qsl(out, keep_blank_values=True) == expected
    assert swap_query(raw, {}) == raw
    if all(v != GH_PH for _, v in pairs):
        assert out == raw


@pytest.mark.parametrize("reason", [Reason.SECRET_UNAVAILABLE, Reason.SECRET_INVALID])
def test_an_unavailable_value_fails_closed_never_forwarding_the_placeholder(reason: Reason) -> None:
    def failing(name: str) -> str:
        raise SecretError(reason, "down")

    r = plan_swap(POLICY, host="api.openai.com", port=443, tls=True, method="GET", target="/", headers=[("Authorization", f"Bearer {PH}")],
                  query=[], lookup=failing)  # fmt: skip
    assert r.error is reason and r.error_secret == "openai" and r.swapped == []


TEMPLATES = [
    # issue 11, finding 3: a slot has a template; the placeholder anywhere else in it is not swapped
    ("authorization", f"Bearer {PH}", f"Bearer {REAL}"),
    ("authorization", f"bearer {PH}", f"bearer {REAL}"),
    ("authorization", f"BEARER {PH}", f"BEARER {REAL}"),
    ("authorization", PH, None),
    ("authorization", f"Token {PH}", None),
    ("authorization", f"Bearer  {PH}", None),
    ("authorization", f"Bearer {PH} {PH}", None),
    ("authorization", f"Bearer {PH},Bearer {PH}", None),
    ("authorization", f"Bearer{PH}", None),
    ("authorization", f"Bearer\t{PH}", None),
    ("authorization", f"Bearer {PH};", None),
    ("x-api-key", PH, REAL),
    ("X-API-KEY", PH, REAL),
    ("x-api-key", f"Bearer {PH}", None),
    ("x-api-key", f"{PH} ", None),
    ("x-api-key", f"{PH},{PH}", None),
    ("cookie", PH, None),
    ("x-other", PH, None),
]


@pytest.mark.parametrize(("name", "value", "swapped"), TEMPLATES, ids=[f"{n}:{v[:14]}" for n, v, _ in TEMPLATES])
def test_default_templates_swap_exactly_their_shape(name: str, value: str, swapped: str | None) -> None:
    r = swap([(name, value)])
    assert r.error is None
    assert r.headers == [(name, swapped if swapped is not None else value)]
    assert r.swapped == (["openai"] if swapped is not None else [])


CUSTOM = [
    ("authorization", f"token {TK_PH}", f"token {TK_REAL}"),
    ("authorization", f"Token {TK_PH}", f"Token {TK_REAL}"),  # the scheme of authorization: any case
    ("authorization", f"Bearer {TK_PH}", None),  # a custom format replaces the default
    ("authorization", f"Basic {b64('x:' + TK_PH)}", None),  # ...Basic included
    ("x-auth", f"key={TK_PH};v1", f"key={TK_REAL};v1"),
    ("x-auth", f"KEY={TK_PH};v1", None),  # outside authorization the template is exact
    ("x-auth", f"key={TK_PH};v2", None),
    ("x-api-key", TK_PH, None),  # not a slot of this secret
]


@pytest.mark.parametrize(("name", "value", "swapped"), CUSTOM, ids=[f"{n}:{v[:14]}" for n, v, _ in CUSTOM])
def test_a_policy_template_is_the_slot_shape(name: str, value: str, swapped: str | None) -> None:
    r = swap([(name, value)], "echo.example.com")
    assert r.error is None
    assert r.headers == [(name, swapped if swapped is not None else value)]


def test_a_placeholder_outside_its_template_reaches_the_bound_host_as_a_placeholder() -> None:
    r = swap([("Authorization", f"Token {PH}")])
    assert r.error is None and r.swapped == [] and REAL not in str(r.headers)


@given(
    st.text(alphabet=st.characters(blacklist_characters=":", blacklist_categories=("Cs",)), max_size=20),
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=30),
    st.sampled_from(["Basic ", "basic  ", "BASIC\t", "Basic \t "]),
    st.booleans(),
    st.booleans(),
)
def test_basic_credentials_are_read_as_the_most_lenient_server_reads_them(
    user: str, password: str, scheme: str, urlsafe: bool, unpadded: bool
) -> None:
    """What a real value or a placeholder is looked for in: any run of spaces or tabs after the
    scheme in any case, base64 or base64url, with or without padding (red team 8)."""
    raw = f"{user}:{password}".encode()
    token = (base64.urlsafe_b64encode if urlsafe else base64.b64encode)(raw).decode()
    if unpadded:
        token = token.rstrip("=")
    assert basic_text(scheme + token) == raw.decode()


@pytest.mark.parametrize("value", ["Bearer abc", "Basically yes", "Basic", "Digest x", ""])
def test_other_schemes_are_not_basic_credentials(value: str) -> None:
    assert basic_text(value) is None


# -- real_value_in: a real value in a request head, and in the names the proxy would look up -------
_VALUE = "sk-proj-" + "Qm7rT2xV" * 4  # 40 characters: runs of it are refused too
_OUTBOUND: list[Finder] = []


def _outbound() -> Finder:
    if not _OUTBOUND:
        *_, finder = build_finder([("k", _VALUE, "sk-placeholder-k")], outbound_runs_of, prefilter=False)
        assert finder is not None
        _OUTBOUND.append(finder)
    return _OUTBOUND[0]


_RAW = _VALUE.encode()
_B32 = base64.b32encode(_RAW).decode().rstrip("=")


@pytest.mark.parametrize(
    ("name", "found"),
    [
        ("api.example.com", False),
        ("sk-proj-example.com", False),  # (the vendor prefix alone is no value)
        (f"{_VALUE.lower()}.example.com", True),
        (f"{_B32}.example.com", True),
        (f"{_B32.lower()}.example.com", True),  # a name's case means nothing
        (f"{base64.b32hexencode(_RAW).decode().rstrip('=').lower()}.example.com", True),
        (f"{_RAW.hex()[:40]}.{_RAW.hex()[40:]}.example.com", True),  # hex too long for one label
        (f"{_VALUE[:20]}.{_VALUE[20:]}.example.com", True),
        # (Pieces of a value between hyphens, in the proxy-level tests: this value has hyphens of its
        # own, which the joined reading takes out too, and runs are read only as written.)
    ],
    ids=["clean", "prefix-only", "lowercase", "base32", "base32-lower", "base32hex-lower", "hex-two-labels",
         "two-labels"],
)  # fmt: skip
def test_real_value_in_a_name_is_found_in_the_forms_a_nameserver_reads(name: str, found: bool) -> None:
    assert (real_value_in(_outbound(), f"{name}:443", (), (f"{name}:443",)) == "k") is found
    # The same text as a target, not a name: only the forms as written (case kept, labels apart).
    if found and name.startswith(_B32.lower()):
        assert real_value_in(_outbound(), name, ()) is None


@given(cuts=st.lists(st.integers(min_value=1, max_value=63), min_size=1, max_size=4), data=st.data())
def test_real_value_in_finds_base32_or_hex_of_a_value_cut_anywhere_over_labels(
    cuts: list[int], data: st.DataObject
) -> None:
    """However a lower- or upper-cased base32 or hex form is cut over labels (each at most 63
    characters, as DNS allows), the name holds the value."""
    form = data.draw(st.sampled_from([_B32, _B32.lower(), _RAW.hex(), _RAW.hex().upper()]))
    labels, rest = [], form
    for cut in cuts:
        if not rest:
            break
        labels.append(rest[:cut])
        rest = rest[cut:]
    while rest:
        labels.append(rest[:63])
        rest = rest[63:]
    name = ".".join([*labels, "example", "com"])
    assert real_value_in(_outbound(), f"{name}:443", (), (f"{name}:443",)) == "k", name


def test_real_value_in_reads_no_run_of_a_value_in_a_name_s_joined_labels() -> None:
    """A value with a word in it (the red-team suite's ``rtREALhostile<hex>``) has runs that an
    ordinary name holds once its labels are joined (``hostile2.example.net`` read as
    ``hostile2example...``, when the hex begins with ``2e``): a CONNECT to it was refused. Runs are
    read in a name as written; the joined and upper-cased readings look for whole forms only."""
    value = "rtREALhostile2e" + "5a0c91f3b7d2" * 2
    *_, finder = build_finder([("h", value, "rt-PH-h")], outbound_runs_of, prefilter=False)
    assert finder is not None
    assert real_value_in(finder, "hostile2e.example.net", (), ("hostile2e.example.net",)) == "h"  # a run, as written
    assert real_value_in(finder, "hostile2.example.net:443", (), ("hostile2.example.net:443",)) is None
    hexed = value.encode().hex()
    assert real_value_in(finder, "", (), (f"{hexed[:40]}.{hexed[40:]}.example.net",)) == "h"
    assert real_value_in(finder, "", (), ("-".join(value[i : i + 6] for i in range(0, len(value), 6)),)) == "h"
