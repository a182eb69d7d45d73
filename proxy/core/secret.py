"""What a secret value must be before it is ever used (issue: secret values are checked before use).

A value goes into a header slot of a request and becomes a pattern the finder looks for in every
byte that flows back to the agent or out to other hosts. So it must be a valid HTTP field value
(printable ASCII; spaces and tabs only between visible characters), long enough to be told apart
from ordinary text, short enough that finding it stays cheap (default 8 KiB), and it must not hold
any placeholder of the policy (its own included), nor be part of one: the scrubber replaces a
value by its placeholder, so either way a replacement could bring a real value back.
"""

from __future__ import annotations

from collections.abc import Iterable

from proxy.policy.model import Reason

__all__ = ["DEFAULT_MAX_SECRET_BYTES", "MIN_SECRET_CHARS", "SecretError", "check_value"]

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
    for ph in placeholders:
        if ph in value:
            raise invalid("value contains a placeholder of the policy")
        if value in ph:
            raise invalid("value is part of a placeholder of the policy")
