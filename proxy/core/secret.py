"""What a secret value must be before it is ever used (issue: secret values are checked before use).

A value goes into a header slot of a request and becomes a pattern the finder looks for in every
byte that flows back to the agent or out to other hosts. So it must be a valid HTTP field value
(printable ASCII; spaces and tabs only between visible characters), long enough to be told apart
from ordinary text, short enough that finding it stays cheap (default 8 KiB), and it must not hold
any placeholder of the policy (its own included), nor be part of one: the scrubber replaces a
value by its placeholder, so either way a replacement could bring a real value back. Nor may the
proxy's finders, which refuse a request or an answer holding a real value in any form they know
(any case, an encoding, a piece of it), read the value in a placeholder as clients send it
(:func:`reads_in_placeholder`): every request or answer carrying that placeholder would be refused
(red team 57: the value ``SK-...-PH``, a placeholder upper-cased, passed an exact comparison; red
team 58: ``Bearer sk-...``, beside the placeholder's start). And across a policy's values
(:func:`holding_others_in_steps`): a value may not hold, nor be held in, another secret's value
when it goes to a host that secret is not bound to.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Iterator, Mapping
from urllib.parse import quote

from proxy.core.finder import Finder, Pattern
from proxy.core.scrub import first_hit
from proxy.core.values import ebcdic_runs_of, outbound_runs_of, patterns_of, runs_of
from proxy.policy.model import BoundHost, Reason

__all__ = [
    "DEFAULT_MAX_SECRET_BYTES",
    "MIN_SECRET_CHARS",
    "SecretError",
    "check_value",
    "holding_others",
    "holding_others_in_steps",
    "reads_in_placeholder",
]

DEFAULT_MAX_SECRET_BYTES = 8 * 1024
MIN_SECRET_CHARS = 8


class SecretError(Exception):
    """A secret could not be had. ``reason`` is secret_unavailable or secret_invalid; the message
    says what is wrong in words safe to log (never the value). ``transient``: the source could
    not be reached (a last good value may still serve for a bounded time), as opposed to an answer
    that the secret is gone, forbidden or unusable (fail closed at once)."""

    def __init__(self, reason: Reason, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.reason = reason
        self.transient = transient


def check_value(value: str, placeholders: Iterable[str] = (), max_bytes: int = DEFAULT_MAX_SECRET_BYTES) -> None:
    """Raise ``SecretError(secret_invalid)`` saying what is wrong, never quoting the value."""

    def invalid(why: str) -> SecretError:
        return SecretError(Reason.SECRET_INVALID, why)

    if not value:
        raise invalid("value is empty")
    if len(value) > max_bytes:
        raise invalid(f"value is longer than {max_bytes} bytes (--max-secret-bytes)")
    if not value.isascii() or not all(c.isprintable() or c == "\t" for c in value):
        raise invalid("value holds bytes that are illegal in a header (control or non-ASCII characters)")
    if value[0] in " \t" or value[-1] in " \t":
        raise invalid("value starts or ends with whitespace")
    if len(value) < MIN_SECRET_CHARS:
        raise invalid(f"value is shorter than {MIN_SECRET_CHARS} characters: too short to be found reliably")
    placeholders = list(placeholders)
    for ph in placeholders:
        if ph in value:
            raise invalid("value contains a placeholder of the policy")
        if value in ph:
            raise invalid("value is part of a placeholder of the policy")
    if reads_in_placeholder(value, placeholders):
        raise invalid(
            "value reads as a placeholder of the policy (in another case, an encoding, a piece of it, or"
            " with what a client sends around it, as in 'Bearer <placeholder>'): requests or answers carrying"
            " that placeholder would be refused as holding a real value"
        )


# How a placeholder travels, around it: bare, after an authorization scheme, a query's name, in
# quotes, in JSON; and encoded as clients send it: Basic credentials (three users: base64's three
# alignments) and percent-encoding (red team 58 found a value read in each but the first; red team
# 59, that guessing at contexts instead, from a value's characters at a placeholder's edge, refused
# real keys and values beside their own names).
_AROUND = (
    (b"", b""),
    (b"Bearer ", b""),
    (b"Token ", b""),
    (b"key=", b"&"),
    (b'"', b'"'),
    (b'{"api_key": "', b'"}'),
)


def _contexts(placeholder: bytes) -> list[bytes]:
    texts = [before + placeholder + after for before, after in _AROUND]
    texts += [b"Basic " + base64.b64encode(user + b":" + placeholder) for user in (b"", b"a", b"ab")]
    texts += [quote(b"Bearer " + placeholder, safe="").encode(), quote(placeholder, safe="").encode()]
    return texts


def reads_in_placeholder(value: str, placeholders: Iterable[str]) -> bool:
    """Whether a placeholder, as requests and answers carry it (:data:`_AROUND`, and encoded), reads
    as ``value``: the patterns the proxy looks for (toward any host,
    :func:`~proxy.core.values.patterns_of` and :func:`~proxy.core.values.outbound_runs_of`; in
    answers, :func:`~proxy.core.values.runs_of` and its EBCDIC misreadings too) found by the
    search itself (:func:`proxy.core.scrub.first_hit`), so the answer is the proxy's own on those
    texts. A few milliseconds: ``SecretStore`` asks again only when a value changes."""
    texts = [t for ph in placeholders for t in _contexts(ph.encode())]
    if not texts:
        return False
    pieces = {*outbound_runs_of(value), *runs_of(value), *ebcdic_runs_of(value)}
    patterns = patterns_of("", value, "-" * len(value)) + [Pattern("", f, b"", part=True) for f in pieces]
    guard = Finder(patterns, prefilter=False, loop_for_large=False)
    return any(first_hit(guard, [t]) is not None for t in texts)


def holding_others(values: Mapping[str, str], hosts: Mapping[str, frozenset[BoundHost]]) -> dict[str, str]:
    """:func:`holding_others_in_steps`, at once."""
    *_, out = holding_others_in_steps(values, hosts)
    assert out is not None
    return out


def holding_others_in_steps(
    values: Mapping[str, str], hosts: Mapping[str, frozenset[BoundHost]]
) -> Iterator[dict[str, str] | None]:
    """Secret -> another secret whose value overlaps its own whole (one holds the other, in a form
    the outbound guard reads: another case, an encoding), when its own goes to a host the other is
    not bound to: swapped in there, it would carry the other's key (or its own would go out inside
    the other's) where that key must not go (red team 58: a value ``tok-<another key>-x``, and a
    25-character piece of another key, went out so). Both of two such values are held so when
    both go where the other is not bound (which is the copy cannot be told): fail closed, the
    operator fixes one. Two secrets with the same value are not: each host gets that key through a
    secret bound to it. Runs of a value are not asked: keys of one vendor share structure (OpenAI's
    ``T3BlbkFJ``), which would make unrelated keys overlap (red team 59). ``hosts``: each secret's
    bound hosts.

    In steps, as :func:`proxy.core.values.build_finder` is: None after each value's finder is
    built (~2 ms; 50 secrets take ~0.15 s in all), so that the caller lets requests run between
    them; then the answer."""
    guards: dict[str, Finder] = {}
    out: dict[str, str] = {}
    for a, va in values.items():
        for b, vb in values.items():
            if a in out or va == vb or hosts.get(a, frozenset()) <= hosts.get(b, frozenset()):
                continue
            for value in (va, vb):
                if value not in guards:
                    guards[value] = Finder(
                        patterns_of("", value, "-" * len(value)), prefilter=False, loop_for_large=False
                    )
                    yield None
            if first_hit(guards[vb], [va.encode()]) is not None or first_hit(guards[va], [vb.encode()]) is not None:
                out[a] = b
    yield out
