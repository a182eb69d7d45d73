"""What a secret value must be before it is ever used (issue: secret values are checked before use).

A value goes into a header slot of a request and becomes a pattern the finder looks for in every
byte that flows back to the agent or out to other hosts. So it must be a valid HTTP field value
(printable ASCII; spaces and tabs only between visible characters), long enough to be told apart
from ordinary text, short enough that finding it stays cheap (default 8 KiB), and it must not hold
any placeholder of the policy (its own included), nor be part of one: the scrubber replaces a
value by its placeholder, so either way a replacement could bring a real value back. Nor may the
outbound guard, which refuses a request holding a real value in any form it knows (any case, an
encoding, a run of a long value), read the value in a placeholder: every request carrying that
placeholder would be refused as ``secret_value_outbound`` (red team 57: the value
``SK-...-PH``, a placeholder upper-cased, passed an exact comparison).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from proxy.core.finder import Finder, Pattern
from proxy.core.scrub import first_hit
from proxy.core.values import ebcdic_runs_of, outbound_runs_of, patterns_of, runs_of
from proxy.policy.model import BoundHost, Reason

__all__ = [
    "DEFAULT_MAX_SECRET_BYTES",
    "EDGE",
    "MIN_SECRET_CHARS",
    "SecretError",
    "check_value",
    "holding_others",
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
            " beside the placeholder's own edge): requests or answers carrying that placeholder would be"
            " refused as holding a real value"
        )


# A value's pattern that shares this many characters or more with a placeholder's start or end reads
# as the value beside it in some context (``Bearer `` before it, the ``user:`` of Basic credentials,
# a query's ``key=``, a quote, another placeholder: red team 58). A random key's 6 characters at a
# placeholder's edge by chance: ~1 in 62**6 per pattern.
EDGE = 6


def reads_in_placeholder(value: str, placeholders: Iterable[str]) -> bool:
    """Whether a placeholder reads as ``value``: the patterns the proxy looks for (toward any host,
    :func:`~proxy.core.values.patterns_of` and :func:`~proxy.core.values.outbound_runs_of`; in
    answers, :func:`~proxy.core.values.runs_of` and its EBCDIC misreadings too) found by the search
    itself (:func:`proxy.core.scrub.first_hit`) in a field holding only the placeholder, or sharing
    :data:`EDGE` characters or more with its start or its end, in any case (the placeholder in a
    context). The search is the guard's own, so that part of the answer is the guard's by
    construction. A few milliseconds: ``SecretStore`` asks again only when a value changes."""
    fields = [ph.encode() for ph in placeholders]
    if not fields:
        return False
    pieces = {*outbound_runs_of(value), *runs_of(value), *ebcdic_runs_of(value)}
    patterns = patterns_of("", value, "-" * len(value)) + [Pattern("", f, b"", part=True) for f in pieces]
    guard = Finder(patterns, prefilter=False, loop_for_large=False)
    if any(first_hit(guard, [f]) is not None for f in fields):
        return True
    longest = max(len(f) for f in fields)
    starts: set[bytes] = set()
    ends: set[bytes] = set()
    for f in fields:
        for text in {f, f.lower()}:
            starts.update(text[:k] for k in range(EDGE, len(text) + 1))
            ends.update(text[-k:] for k in range(EDGE, len(text) + 1))
    for p in patterns:
        find = p.find
        for k in range(EDGE, min(len(find), longest) + 1):
            if find[-k:] in starts or find[:k] in ends:
                return True
    return False


def holding_others(values: Mapping[str, str], hosts: Mapping[str, frozenset[BoundHost]]) -> dict[str, str]:
    """Secret -> another secret whose value its own value holds, as the outbound guard reads it (a
    form of it, or a run of a long one), when its own goes to a host the other is not bound to:
    swapped in there, it would carry the other's key where that key must not go (red team 58: a
    value ``tok-<another key>-x``, and a 25-character piece of another key, went out so). Both of
    two overlapping values are held so (each carries pieces of the other; which one is the copy
    cannot be told): fail closed, the operator fixes one. Two secrets with the same value are not:
    each host gets that key through a secret bound to it. ``hosts``: each secret's bound hosts."""
    out: dict[str, str] = {}
    for other, held in values.items():
        runs = [Pattern(other, f, b"", part=True) for f in outbound_runs_of(held)]
        guard: Finder | None = None
        for name, value in values.items():
            if name in out or value == held or hosts.get(name, frozenset()) <= hosts.get(other, frozenset()):
                continue
            if guard is None:
                guard = Finder(patterns_of(other, held, "-" * len(held)) + runs, prefilter=False, loop_for_large=False)
            if first_hit(guard, [value.encode()]) is not None:
                out[name] = other
    return out
