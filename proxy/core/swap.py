"""The binding rule, pure: which placeholder may be swapped where. Headers and query in, headers
and query out.

Used by the data path and by ``sandgate policy test``, so the simulator and the proxy cannot
disagree. Rules (SECURITY-CASES B01-B11):

- a placeholder is swapped only where it fills its slot's template exactly (``authorization:
  Bearer {}`` with the scheme matched case-insensitively, or Basic credentials decoded and
  re-encoded where the slot allows them; ``x-api-key: {}``; or the template the policy sets), in
  query values when ``query: true``, and only on HTTPS requests to a host:port the secret is bound
  to; a placeholder anywhere else in a credential header is left as it is;
- a placeholder anywhere in a request to a host it is not bound to is ``secret_not_bound``;
- a duplicated slot header carrying a placeholder (a name with ``_`` for ``-`` counts: CGI-style
  servers read both as one), or Basic credentials in a slot that carry one and do not decode
  strictly, is ``malformed_request``;
- a value that cannot be had is ``secret_unavailable`` / ``secret_invalid``: never a forward of
  the placeholder in its place.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import quote, unquote, unquote_plus

from proxy.core.finder import Finder
from proxy.core.http1 import canonical_name
from proxy.core.scrub import first_hit
from proxy.core.secret import SecretError
from proxy.policy.model import Policy, Reason, SecretBinding, Slot

__all__ = [
    "SwapResult", "basic_text", "decode_basic", "fills_template", "placeholders_in", "plan_swap", "swap_query",
]  # fmt: skip

Header = tuple[str, str]
_REFLECTING_METHODS = frozenset({"TRACE", "TRACK"})


@dataclass(slots=True)
class SwapResult:
    headers: list[Header]
    # Placeholder -> real value, for the query's parameters that are a placeholder (swap_query);
    # empty: the query is unchanged.
    query_swaps: dict[str, str]
    swapped: list[str]  # secret names, in policy order
    not_bound: list[str]  # secrets whose placeholder went to the wrong host
    error: Reason | None
    error_secret: str | None
    detail: str

    def __init__(self, headers: list[Header]) -> None:  # (written out: see proxy.native, "Dataclasses")
        self.headers = headers
        self.query_swaps = {}
        self.swapped = []
        self.not_bound = []
        self.error = self.error_secret = None
        self.detail = ""


_INVALID = "\0invalid"


def decode_basic(value: str) -> tuple[str, str] | None:
    """(scheme as written, decoded ``user:password``) of Basic credentials; the decoded part is
    ``_INVALID`` when the token is not strict base64 of UTF-8 after one space (a tab there too);
    None for any other scheme. What is
    swapped; what is searched for values and placeholders is :func:`basic_text`'s lenient reading."""
    scheme, sep, token = value[:5], value[5:6], value[6:]
    if scheme.lower() != "basic" or sep not in _BASIC_SEPARATORS:
        return None
    if sep != " ":  # (RFC 9110: the scheme, then spaces; a lenient reader takes a tab too: red team 17)
        return (scheme, _INVALID)
    try:
        raw = base64.b64decode(token, validate=True).decode("utf-8")
    except ValueError:  # binascii.Error, UnicodeDecodeError, or a character outside ASCII in the token
        return (scheme, _INVALID)
    return (scheme, raw)


_BASIC_SEPARATORS = (" ", "\t")
_BASE64URL = str.maketrans("-_", "+/")
_NOT_BASE64 = re.compile(r"[^A-Za-z0-9+/]+")


def basic_text(value: str) -> str | None:
    """The ``user:password`` of Basic credentials as the most lenient server reads them, to find a
    value or a placeholder in (never to swap: :func:`decode_basic` is strict): the scheme in any
    case, then any run of spaces or tabs (Express's ``basic-auth``, Django REST framework's
    ``split()``), base64 or base64url, padding optional, other characters skipped and a lone last
    character dropped (Node's ``Buffer.from(token, "base64")``), bytes that are not UTF-8 replaced.
    None for any other scheme; callers ask ``value[5:6] in _BASIC_SEPARATORS`` first (cheap)."""
    if value[5:6] not in _BASIC_SEPARATORS or value[:5].lower() != "basic":
        return None
    token = _NOT_BASE64.sub("", value[6:].translate(_BASE64URL))
    if len(token) % 4 == 1:
        token = token[:-1]
    return base64.b64decode(token + "=" * (-len(token) % 4)).decode("utf-8", "replace")


def placeholders_in(secrets: Sequence[SecretBinding], target: str, headers: Sequence[Header]) -> list[SecretBinding]:
    """Secrets whose placeholder appears anywhere in the request target, a header name or value
    (Basic credentials included, decoded as leniently as any server does), or their
    percent-decoded forms."""
    texts = [target, unquote(target)] if "%" in target else [target]
    for n, v in headers:
        texts += (n, v)
        if "%" in v:
            texts.append(unquote(v))
        basic = basic_text(v) if v[5:6] in _BASIC_SEPARATORS else None
        if basic is not None:
            texts.append(basic)
    blob = "\n".join(texts)  # no placeholder holds a newline (the policy's grammar): none spans two texts
    return [s for s in secrets if s.placeholder in blob]


def real_value_in(
    finder: Finder, target: str, raw: Sequence[tuple[bytes, bytes]], names: Sequence[str] = ()
) -> str | None:
    """The secret whose real value (in any form ``finder`` knows) a request head holds: in its
    target, a header name or a header value, Basic credentials decoded as leniently as any server
    does (B18); None if none. ``finder`` is the outbound guard: every value held.

    ``names`` are host names the proxy would look up and dial for it (its authority, a CONNECT's
    target, an SNI). A nameserver reads the whole name, so each is also read upper-cased and
    without its dots and hyphens, in both cases: a name's case means nothing (the proxy
    lower-cases it), so base32 or base32hex lower-cased is one of a value's forms there, decoded as
    losslessly as the upper-case form the finder knows; and a form too long for one label (63
    characters: hex of a value over 31) is cut over several, or broken by hyphens (red team 72)."""
    if not finder:
        return None
    parts = [target.encode("latin-1")]
    for n, v in raw:
        parts += (n, v)
        if v[5:6] in (b" ", b"\t"):  # (the one cheap question first)
            basic = basic_text(v.decode("latin-1"))
            if basic is not None:
                parts.append(basic.encode("latin-1", "replace"))
    hit = first_hit(finder, parts)
    if hit is not None or not names:
        return None if hit is None else hit.pattern.secret
    readings: list[bytes] = []
    for name in names:
        joined = name.replace(".", "").replace("-", "")  # (str.translate: 2.6 us, this 0.15)
        for form in (name.upper(), joined, joined.upper()) if joined != name else (name.upper(),):
            readings.append(form.encode("latin-1", "replace"))
    hit = first_hit(finder, readings)
    if hit is not None and hit.pattern.part:
        # A run of a long value (16 characters of it) is read in a name as written, not in these
        # readings: joined labels make runs of ordinary names ("hostile2.example.net" read as
        # "hostile2example...") that a value with words in it holds. Whole forms only here.
        hit = next((h for r in readings for h in finder.hits(r) if not h.pattern.part), None)
    return None if hit is None else hit.pattern.secret


def fills_template(slot: Slot, value: str, placeholder: str) -> bool:
    """Whether ``value`` is exactly the slot's template with ``placeholder`` in it. In
    ``authorization`` the scheme (up to the template's first space) is case-insensitive."""
    expected = slot.prefix + placeholder + slot.suffix
    if len(value) != len(expected):
        return False
    cut = slot.prefix.find(" ") if slot.name == "authorization" else -1
    if cut > 0:
        return value[:cut].lower() == expected[:cut].lower() and value[cut:] == expected[cut:]
    return value == expected


def plan_swap(
    policy: Policy,
    *,
    host: str,
    port: int,
    tls: bool,
    method: str,
    target: str,
    headers: Sequence[Header],
    query: Sequence[Header],
    lookup: Callable[[str], str],
) -> SwapResult:
    """``lookup(name)`` returns the real value or raises :class:`proxy.secrets.SecretError`."""
    result = SwapResult(headers=list(headers))
    present = placeholders_in(policy.secrets, target, headers)
    if not present:
        return result
    bound = [s for s in present if tls and s.bound_to(host, port)]
    result.not_bound = [s.name for s in present if s not in bound]
    if bound and method.upper() in _REFLECTING_METHODS:
        # TRACE echoes the request back: a swapped value would land in the agent's hands (B04).
        return _fail(result, Reason.METHOD_NOT_ALLOWED, bound[0], "no secret is swapped into a TRACE request")
    if result.not_bound:
        result.error = Reason.SECRET_NOT_BOUND
        result.error_secret = result.not_bound[0]
        result.detail = "a placeholder was sent to a host its secret is not bound to"
        return result
    names = [n.lower() for n, _ in result.headers]
    # WSGI, CGI, PHP and Rack read a field name's "_" as "-": to them X_Api_Key is a second field of
    # X-Api-Key (red team 17). Only the slot's own spelling is swapped; both count as its fields.
    canonical = [canonical_name(n) for n in names]
    for secret in bound:
        for slot in secret.slots:
            want = canonical_name(slot.name)
            if want not in canonical:
                continue
            fields = [i for i, n in enumerate(canonical) if n == want]
            carrying = [
                i for i in fields if names[i] == slot.name and _carries(result.headers[i][1], secret.placeholder)
            ]
            if not carrying:
                continue
            if len(fields) > 1:
                return _fail(result, Reason.MALFORMED_REQUEST, secret, "a credential header appears more than once")
            i = carrying[0]
            swapped = _fill(slot, result.headers[i][1], secret, lookup)
            if isinstance(swapped, tuple):
                return _fail(result, swapped[0], secret, swapped[1])
            if swapped is not None:
                result.headers[i] = (result.headers[i][0], swapped)
                if secret.name not in result.swapped:
                    result.swapped.append(secret.name)
        if secret.query and any(v == secret.placeholder for _, v in query):
            real = _value(secret, lookup)
            if isinstance(real, Reason):
                return _fail(result, real, secret, _unusable(real))
            result.query_swaps[secret.placeholder] = real
            if secret.name not in result.swapped:
                result.swapped.append(secret.name)
    return result


def swap_query(raw: str, swaps: dict[str, str]) -> str:
    """The query ``raw`` (what follows ``?``) with each parameter whose value reads, decoded as
    ``parse_qsl`` decodes it, as a placeholder in ``swaps`` given that placeholder's real value
    (percent-encoded); every other byte as the agent sent it (re-encoding the whole query would
    turn ``%FF`` into ``%EF%BF%BD`` and ``;`` into ``%3B``, and break requests)."""
    if not swaps:
        return raw
    pieces = raw.split("&")
    for i, piece in enumerate(pieces):
        name, eq, value = piece.partition("=")
        real = swaps.get(unquote_plus(value)) if eq else None
        if real is not None:
            pieces[i] = name + "=" + quote(real, safe="")
    return "&".join(pieces)


def _carries(value: str, placeholder: str) -> bool:
    """Whether a slot's value carries the placeholder: as is, or in Basic credentials read as the
    most lenient server reads them (so credentials that only a lenient reader decodes to the
    placeholder are refused as malformed by _fill, not forwarded as they are)."""
    if placeholder in value:
        return True
    basic = basic_text(value) if value[5:6] in _BASIC_SEPARATORS else None
    return basic is not None and placeholder in basic


def _fill(
    slot: Slot, value: str, secret: SecretBinding, lookup: Callable[[str], str]
) -> str | tuple[Reason, str] | None:
    """The slot's value with the real secret in place of the placeholder; None when the
    placeholder does not fill the slot's template (left as it is); (reason, detail) to refuse."""
    ph = secret.placeholder
    if fills_template(slot, value, ph):
        real = _value(secret, lookup)
        if isinstance(real, Reason):
            return real, _unusable(real)
        at = len(slot.prefix)  # the agent's own spelling of the scheme stays
        return value[:at] + real + value[at + len(ph) :]
    if not slot.basic:
        return None
    basic = decode_basic(value)
    if basic is None:
        return None
    scheme, raw = basic
    if raw == _INVALID:
        return Reason.MALFORMED_REQUEST, "Basic credentials are not valid base64 of UTF-8"
    user, sep, password = raw.partition(":")
    if not sep or ph not in (user, password):
        return None
    real = _value(secret, lookup)
    if isinstance(real, Reason):
        return real, _unusable(real)
    user = real if user == ph else user
    password = real if password == ph else password
    return f"{scheme} {base64.b64encode(f'{user}:{password}'.encode()).decode()}"


def _value(secret: SecretBinding, lookup: Callable[[str], str]) -> str | Reason:
    try:
        return lookup(secret.name)
    except SecretError as e:
        return e.reason


def _unusable(reason: Reason) -> str:
    """The refusal's detail when the secret's value is not there to swap in (the log says why)."""
    if reason is Reason.SECRET_INVALID:
        return "secret value cannot be used (the proxy's log says why)"
    return "secret value unavailable"


def _fail(result: SwapResult, reason: Reason, secret: SecretBinding, detail: str) -> SwapResult:
    result.error = reason
    result.error_secret = secret.name
    result.detail = detail
    result.swapped = []
    return result
