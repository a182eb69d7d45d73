"""The host-bound placeholder swap, pure: headers and query in, headers and query out.

Used by the sidecar's swap addon and by ``sandgate policy test``, so the simulator and the proxy
cannot disagree. Rules (SECURITY-CASES B01-B11):

- a placeholder is swapped only as a whole token, only in its secret's configured header slots
  (Basic credentials decoded and re-encoded) or query values when ``query: true``, and only on
  HTTPS requests to a host:port the secret is bound to;
- a placeholder anywhere in a request to a host it is not bound to is ``secret_not_bound``;
- a duplicated slot header carrying a placeholder, or undecodable Basic credentials in a slot,
  is ``malformed_request``;
- a value that cannot be had is ``secret_unavailable`` / ``secret_invalid``: never a forward of
  the placeholder in its place.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from proxy.policy.model import Policy, Reason, SecretBinding
from proxy.secrets import SecretError

__all__ = ["SwapResult", "plan_swap"]

Header = tuple[str, str]
_REFLECTING_METHODS = frozenset({"TRACE", "TRACK"})


@dataclass(slots=True)
class SwapResult:
    headers: list[Header]
    query: list[Header] | None  # None: the query is unchanged
    swapped: list[str] = field(default_factory=list)  # secret names, in policy order
    not_bound: list[str] = field(default_factory=list)  # secrets whose placeholder went to the wrong host
    error: Reason | None = None
    error_secret: str | None = None
    detail: str = ""


def decode_basic(value: str) -> tuple[str, str] | None:
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        raw = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return ("", "\0invalid")
    return (scheme, raw)


def placeholders_in(secrets: Sequence[SecretBinding], target: str, headers: Sequence[Header]) -> list[SecretBinding]:
    """Secrets whose placeholder appears anywhere in the request target or a header value
    (Basic credentials included, decoded)."""
    texts = [target]
    for _, v in headers:
        texts.append(v)
        basic = decode_basic(v)
        if basic is not None:
            texts.append(basic[1])
    return [s for s in secrets if any(s.placeholder in t for t in texts)]


def _swap_tokens(value: str, placeholder: str, real: str) -> str | None:
    """Replace whole space-separated tokens equal to the placeholder; None when there is none."""
    tokens = value.split(" ")
    if placeholder not in tokens:
        return None
    return " ".join(real if t == placeholder else t for t in tokens)


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
    result = SwapResult(headers=list(headers), query=None)
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
    new_query: list[Header] | None = None
    for secret in bound:
        slot_fields = [i for i, (n, _) in enumerate(result.headers) if n.lower() in secret.headers]
        with_ph = [
            i
            for i in slot_fields
            if secret.placeholder in result.headers[i][1]
            or secret.placeholder in ((decode_basic(result.headers[i][1]) or ("", ""))[1])
        ]
        names = [result.headers[i][0].lower() for i in slot_fields]
        if with_ph and len(names) != len(set(names)):
            return _fail(result, Reason.MALFORMED_REQUEST, secret, "a credential header appears more than once")
        edits: dict[int, str] = {}
        for i in with_ph:
            value = result.headers[i][1]
            basic = decode_basic(value)
            if basic is not None:
                scheme, raw = basic
                if raw == "\0invalid":
                    return _fail(
                        result, Reason.MALFORMED_REQUEST, secret, "Basic credentials are not valid base64 of UTF-8"
                    )
                user, sep, password = raw.partition(":")
                if secret.placeholder not in (user, password) or not sep:
                    continue
                real = _value(secret, lookup)
                if isinstance(real, Reason):
                    return _fail(result, real, secret, "secret value unavailable")
                user = real if user == secret.placeholder else user
                password = real if password == secret.placeholder else password
                token = base64.b64encode(f"{user}:{password}".encode()).decode()
                edits[i] = f"{scheme} {token}"
                continue
            if secret.placeholder not in value.split(" "):
                continue
            real = _value(secret, lookup)
            if isinstance(real, Reason):
                return _fail(result, real, secret, "secret value unavailable")
            swapped = _swap_tokens(value, secret.placeholder, real)
            assert swapped is not None
            edits[i] = swapped
        if secret.query and any(v == secret.placeholder for _, v in query):
            real = _value(secret, lookup)
            if isinstance(real, Reason):
                return _fail(result, real, secret, "secret value unavailable")
            base = new_query if new_query is not None else list(query)
            new_query = [(k, real if v == secret.placeholder else v) for k, v in base]
            if secret.name not in result.swapped:
                result.swapped.append(secret.name)
        for i, v in edits.items():
            result.headers[i] = (result.headers[i][0], v)
        if edits and secret.name not in result.swapped:
            result.swapped.append(secret.name)
    result.query = new_query
    return result


def _value(secret: SecretBinding, lookup: Callable[[str], str]) -> str | Reason:
    try:
        return lookup(secret.name)
    except SecretError as e:
        return e.reason


def _fail(result: SwapResult, reason: Reason, secret: SecretBinding, detail: str) -> SwapResult:
    result.error = reason
    result.error_secret = secret.name
    result.detail = detail
    result.swapped = []
    return result
