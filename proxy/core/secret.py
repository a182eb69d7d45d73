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

from collections.abc import Iterable

from proxy.core.finder import Finder, Pattern
from proxy.core.scrub import first_hit
from proxy.core.values import outbound_runs_of, patterns_of
from proxy.policy.model import Reason

__all__ = ["DEFAULT_MAX_SECRET_BYTES", "MIN_SECRET_CHARS", "SecretError", "check_value", "reads_in_placeholder"]

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
            "value reads as a placeholder of the policy (in another case or an encoding): every request"
            " carrying that placeholder would be refused as holding a real value"
        )


def reads_in_placeholder(value: str, placeholders: Iterable[str]) -> bool:
    """Whether the outbound guard would find ``value`` (in any form it knows, or a run of it) in a
    request field holding only one of ``placeholders``: the guard's own patterns and search
    (:func:`proxy.core.values.patterns_of`, :func:`~proxy.core.values.outbound_runs_of`,
    :func:`proxy.core.scrub.first_hit`), so the answer is the guard's by construction. A few
    milliseconds: built once per value (``SecretStore`` asks again only when a value changes)."""
    fields = [ph.encode() for ph in placeholders]
    if not fields:
        return False
    runs = [Pattern("", f, b"", part=True) for f in outbound_runs_of(value)]
    guard = Finder(patterns_of("", value, "-" * len(value)) + runs, prefilter=False, loop_for_large=False)
    return any(first_hit(guard, [f]) is not None for f in fields)
