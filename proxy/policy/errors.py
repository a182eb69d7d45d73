"""The one way policy loading fails: :class:`PolicyInvalid`, a list of :class:`PolicyError`.

Every reader of a policy (the proxy and its reload watcher, the webhook's /validate, ``sandgate
policy``, ``sandgate run``) catches this exception and nothing else, so whatever the bytes of a
policy file are, each of them gets a message that names the file, the field and the fix.
"""

from __future__ import annotations

import reprlib
from dataclasses import dataclass

__all__ = ["PolicyError", "PolicyInvalid", "PolicyUnreadable", "show"]


@dataclass(frozen=True, slots=True)
class PolicyError:
    field: str  # dotted path such as "spec.allow[0].host"; "yaml" / "file" before there is a document
    message: str  # what is wrong and what to write instead
    # The JSON Schema (``sandgate policy schema``) expresses this rule too, so an editor flags it as
    # well; False for rules only the loader can judge (canonical hosts, duplicates, coverage).
    schema: bool = False

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class PolicyInvalid(ValueError):
    def __init__(self, errors: list[PolicyError], source: str = "<policy>") -> None:
        self.errors = errors
        self.source = source
        super().__init__("\n".join(f"{source}: {e}" for e in errors))

    @classmethod
    def one(cls, field: str, message: str, source: str) -> PolicyInvalid:
        return cls([PolicyError(field, message)], source)


class PolicyUnreadable(PolicyInvalid):
    """The file could not be read (an ``OSError``: out of descriptors, a permission, an I/O error):
    nothing is known of what it says. A one-off reader refuses it like an invalid policy; the
    proxy's reload watcher reads it again at its next look, where an invalid version is not read
    again until it changes (red team 68: a revocation read while the proxy was out of descriptors
    was never applied)."""


def show(value: object, limit: int = 60) -> str:
    """``repr`` of a value from a policy for a message: bounded, so a 1 MiB string cannot make a
    1 MiB error line (or a 1 MiB admission response)."""
    text = _REPR.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


_REPR = reprlib.Repr(maxlevel=2, maxlist=4, maxdict=4, maxstring=50, maxother=50, maxlong=40)
