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
from collections.abc import Callable, Iterable, Iterator, Mapping
from urllib.parse import quote

from proxy.core.finder import Finder
from proxy.core.scrub import first_hit, views
from proxy.core.values import build_finder, ebcdic_runs_of, outbound_runs_of, patterns_of, public_prefix, runs_of
from proxy.policy.model import BoundHost, Policy, Reason, SecretBinding

__all__ = [
    "DEFAULT_MAX_SECRET_BYTES",
    "MIN_SECRET_CHARS",
    "READS_AS_PLACEHOLDER",
    "reads_as_placeholder",
    "SecretError",
    "check_value",
    "holding_others",
    "holding_others_in_steps",
    "read_in_placeholders_in_steps",
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
    for ph in placeholders:
        if ph in value:
            raise invalid("value contains a placeholder of the policy")
        if value in ph:
            raise invalid("value is part of a placeholder of the policy")


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


def _contexts(placeholder: bytes, formats: Iterable[str] = ()) -> list[bytes]:
    texts = [before + placeholder + after for before, after in _AROUND]
    # The policy's own slot templates (``Key {}``, ``tok:{}``): exactly how its requests carry it.
    texts += [t for t in dict.fromkeys(f.encode().replace(b"{}", placeholder) for f in formats) if t not in texts]
    texts += [b"Basic " + base64.b64encode(user + b":" + placeholder) for user in (b"", b"a", b"ab")]
    texts += [quote(b"Bearer " + placeholder, safe="").encode(), quote(placeholder, safe="").encode()]
    return texts


READS_AS_PLACEHOLDER = (
    "value reads as a placeholder of the policy (in another case, an encoding, a piece of it, or with what a"
    " client sends around it, as in 'Bearer <placeholder>'): requests or answers carrying that placeholder would"
    " be refused as holding a real value"
)
# What clients put before a key (a header's scheme, a query's name, JSON): stored with the key, it is
# text every request carrying any placeholder holds too (red team 62: ``Bearer `` + a short key).
_SCHEMES = ("bearer ", "token ", "basic ", "key=", '{"api_key": "')


def reads_as_placeholder(value: str) -> str:
    """Why ``value``, which :func:`read_in_placeholders_in_steps` found, cannot be used: the same
    for every value, and where it begins with what clients send before a key, what to store
    instead (the scheme is public text, never the value's own characters)."""
    low = value.lower()
    scheme = next((s for s in _SCHEMES if low.startswith(s)), None)
    if scheme is None:
        return READS_AS_PLACEHOLDER
    return (
        f"{READS_AS_PLACEHOLDER}; it begins with {value[: len(scheme)]!r}, which requests carrying any placeholder"
        " hold too: store the key alone (a slot's format puts the scheme around it: 'Bearer {}' for authorization"
        " unless the policy says otherwise)"
    )


def slot_formats(secrets: Iterable[SecretBinding]) -> dict[str, tuple[str, ...]]:
    """Placeholder -> the ``format`` of each slot of its secret: the ``formats`` of
    :func:`read_in_placeholders_in_steps`."""
    return {s.placeholder: tuple(slot.format for slot in s.slots) for s in secrets}


def read_in_placeholders_in_steps(
    values: Iterable[tuple[str, str]], placeholders: Iterable[str], formats: Mapping[str, Iterable[str]] | None = None
) -> Iterator[set[str] | None]:
    """The secrets (of (name, value) pairs) whose value a placeholder reads as, as requests and
    answers carry it (:data:`_AROUND`, encoded, and in the slot templates ``formats`` gives for
    it: placeholder -> the ``format`` of each slot of its secret): the patterns the proxy looks for (toward any
    host, :func:`~proxy.core.values.patterns_of` and :func:`~proxy.core.values.outbound_runs_of`; in
    answers, :func:`~proxy.core.values.runs_of` and its EBCDIC misreadings too) found by the
    search itself (:func:`proxy.core.scrub.first_hit`), so the answer is the proxy's own on those
    texts. One finder for all the values, built in steps as :func:`proxy.core.values.build_finder`
    builds one: None between steps (the caller lets requests run), then the answer; a value found
    is left out and the rest searched again (rare: a value found is an operator's mistake)."""
    templates = formats or {}
    texts = [t for ph in placeholders for t in _contexts(ph.encode(), templates.get(ph, ()))]
    yield from _found_in_steps(values, texts, _all_pieces)


def _found_in_steps(
    values: Iterable[tuple[str, str]], texts: list[bytes], pieces: Callable[[str], list[bytes]]
) -> Iterator[set[str] | None]:
    """The secrets (of (name, value) pairs) whose value the proxy's own search
    (:func:`proxy.core.scrub.first_hit`) finds in one of ``texts``: a finder of the values' forms
    and their ``pieces`` built in steps, as :func:`proxy.core.values.build_finder` builds one; a
    value found is left out and the rest searched again (a text may hold more than one)."""
    # A value longer than every text is found only by a piece of it (no reading of a text is
    # longer than the text): asked only when one of its GRAM-character pieces is in a text or a
    # reading of one (lowercased, as pieces are). A policy of 240 values of 2 KB took 15 s to
    # search whole, and its values have no such piece; 256 values beside the policy's names and
    # hosts, 0.4 s at start.
    longest = max((len(t) for t in texts), default=0)
    grams: set[bytes] = set()
    for i, text in enumerate(texts, 1):
        for reading in (text, *views(text)):
            low = reading.lower()
            grams.update(low[j : j + GRAM] for j in range(len(low) - GRAM + 1))
        if i % 256 == 0:
            yield None
    asked = []
    for name, value in values:
        low = value.lower().encode("utf-8", "surrogateescape")
        if len(value) <= longest or any(low[j : j + GRAM] in grams for j in range(len(low) - GRAM + 1)):
            asked.append((name, value))
    found: set[str] = set()
    while texts:
        left = [(name, value, "-" * len(value)) for name, value in asked if name not in found]
        if not left:
            break
        guard: Finder | None = None
        for step in build_finder(left, pieces, prefilter=False):
            if step is None:
                yield None
            else:
                guard = step
        assert guard is not None
        hits = set()
        for i, text in enumerate(texts, 1):
            hit = first_hit(guard, [text])
            if hit is not None:
                hits.add(hit.pattern.secret)
            if i % 256 == 0:
                yield None
        if not hits:
            break
        found |= hits
    yield found


def label_texts(policy: Policy) -> list[tuple[str, str]]:
    """(field, text) of the policy's own strings that metrics labels and audit fields carry as they
    are: its name, its secrets' names and their bound hosts."""
    out = [("metadata.name", policy.name)]
    for i, secret in enumerate(policy.secrets):
        out.append((f"spec.secrets[{i}].name", secret.name))
        out += [(f"spec.secrets[{i}].hosts[{j}]", str(b)) for j, b in enumerate(secret.hosts)]
    return out


IN_THE_POLICY = (
    "value appears in the policy itself (its name, a secret's name or a bound host), which metrics labels and audit"
    " lines carry as they are: it cannot be kept from anyone who reads them"
)


def in_texts_in_steps(values: Iterable[tuple[str, str]], texts: Iterable[str]) -> Iterator[set[str] | None]:
    """The secrets (of (name, value) pairs) whose value the outbound guard finds in one of
    ``texts`` (:func:`label_texts`: what the log lines are redacted of, metrics labels and the
    audit's policy field are not: red team 60 put a key in the policy's name and read it from
    /metrics). In steps: None between them, then the answer."""
    encoded = [t.encode("utf-8", "surrogateescape") for t in texts]
    yield from _found_in_steps(values, encoded, outbound_runs_of)


GRAM = 7  # the shortest piece of a value (proxy.core.values.runs_of)


def _all_pieces(value: str) -> list[bytes]:
    return list(dict.fromkeys([*outbound_runs_of(value), *runs_of(value), *ebcdic_runs_of(value)]))


def reads_in_placeholder(
    value: str, placeholders: Iterable[str], formats: Mapping[str, Iterable[str]] | None = None
) -> bool:
    """:func:`read_in_placeholders_in_steps` of one value, at once."""
    *_, found = read_in_placeholders_in_steps([("", value)], placeholders, formats)
    return bool(found)


def holding_others(
    values: Mapping[str, str],
    hosts: Mapping[str, frozenset[BoundHost]],
    kept: Iterable[tuple[str, str, frozenset[BoundHost]]] = (),
) -> dict[str, str]:
    """:func:`holding_others_in_steps`, at once."""
    *_, out = holding_others_in_steps(values, hosts, kept)
    assert out is not None
    return out


HELD_PIECE = 16  # the pieces of a value another may carry it by: a common run of 23 (1.5 x - 1) holds one
# (past its public prefix: keys of one vendor share that; and longer than the outbound guard's runs,
# which keys of one vendor share too: red team 59)


def _carried_by(value: str, encoded: bool) -> tuple[list[bytes], list[bytes]]:
    """What of ``value`` another value may carry it by: (pieces, forms). Pieces: runs of HELD_PIECE
    characters past its public prefix, lowercased, every HELD_PIECE // 2 characters and at the end
    (a common run of 1.5 x HELD_PIECE - 1 holds one), or the whole value lowercased when shorter.
    Forms (when ``encoded``: another value is longer, so an encoding of this one may fit in it):
    the value whole in every form the outbound guard knows (:func:`proxy.core.values.patterns_of`:
    base64, hex, base32, base85, two stacked, UTF-16...; red team 62: a ``.dockerconfigjson``
    holds base64 of base64)."""
    low = value.lower().encode("utf-8", "surrogateescape")
    secret = low[public_prefix(value) :]
    if len(secret) < HELD_PIECE:
        pieces = [low]
    else:
        starts = list(range(0, len(secret) - HELD_PIECE + 1, HELD_PIECE // 2))
        if starts[-1] != len(secret) - HELD_PIECE:
            starts.append(len(secret) - HELD_PIECE)
        pieces = [secret[i : i + HELD_PIECE] for i in starts]
    if not encoded:
        return pieces, []
    forms = _FORMS.get(value)
    if forms is None:
        forms = [p.find for p in patterns_of("", value, "")]  # (the placeholder side unused: ~0.4 ms a key)
        if len(_FORMS) >= 1024:
            _FORMS.clear()
        _FORMS[value] = forms
    return pieces, forms


# The forms of the values asked lately: a reload or a rotation asks every value again, most of
# them unchanged. (Values only, in memory, as the store holds them.)
_FORMS: dict[str, list[bytes]] = {}


def _readings(value: str) -> tuple[bytes, list[bytes]]:
    """(``value``'s bytes, them and their decoded views lowercased: :func:`proxy.core.scrub.views`)."""
    raw = value.encode("utf-8", "surrogateescape")
    return raw, list(dict.fromkeys([raw.lower(), *views(raw)]))


class _Index:
    """Who (a key of each value given) a text carries, by :func:`_carried_by`: pieces and forms of
    HELD_PIECE bytes or more found by a window of that many bytes at every offset (one dictionary
    lookup each), shorter ones by ``in``."""

    def __init__(self) -> None:
        self.pieces: dict[bytes, set[object]] = {}
        self.forms: dict[bytes, list[tuple[object, bytes]]] = {}
        self.short: list[tuple[object, bytes, bool]] = []  # (key, bytes, a form: searched in the raw bytes)

    def add(self, key: object, value: str, encoded: bool) -> None:
        pieces, forms = _carried_by(value, encoded)
        for p in pieces:
            if len(p) >= HELD_PIECE:
                self.pieces.setdefault(p, set()).add(key)
            else:
                self.short.append((key, p, False))
        for f in forms:
            if len(f) >= HELD_PIECE:
                mid = (len(f) - HELD_PIECE) // 2
                self.forms.setdefault(f[mid : mid + HELD_PIECE], []).append((key, f))
            else:
                self.short.append((key, f, True))

    def carried(self, value: str) -> set[object]:
        raw, readings = _readings(value)
        out: set[object] = set()
        n = HELD_PIECE
        for r in readings:
            for o in range(len(r) - n + 1):
                owners = self.pieces.get(r[o : o + n])
                if owners:
                    out |= owners
        for o in range(len(raw) - n + 1):
            for key, f in self.forms.get(raw[o : o + n], ()):
                if key not in out and f in raw:
                    out.add(key)
        for key, s, form in self.short:
            if key not in out and (s in raw if form else any(s in r for r in readings)):
                out.add(key)
        return out


def holding_others_in_steps(
    values: Mapping[str, str],
    hosts: Mapping[str, frozenset[BoundHost]],
    kept: Iterable[tuple[str, str, frozenset[BoundHost]]] = (),
) -> Iterator[dict[str, str] | None]:
    """Secret -> another secret whose value its own carries, or is carried in, when its own goes to
    a host the other is not bound to: swapped in there, it would carry the other's key (or its own
    would go out inside the other's) where that key must not go. Carried: whole, in any case or
    encoded as clients and stores encode a value (:func:`_carried_by`), in a decoded view of it
    (:func:`proxy.core.scrub.views`: Basic credentials stored encoded), or a run of 23
    characters or more of it past its public prefix (red team 58: ``tok-<another key>-x`` and a
    25-character piece of another key went out so; red team 61: its base64, its hex, ``Basic``
    credentials, its upper-case copy, a 24-character piece). Both of two such values are held so
    when both go where the other is not bound (which is the copy cannot be told): fail closed, the
    operator fixes one. Two secrets with the same value (exactly) are not: each host gets that key
    through a secret bound to it. The shorter runs the outbound guard refuses are not asked: keys
    of one vendor share structure (OpenAI's ``T3BlbkFJ``), which would make unrelated keys overlap
    (red team 59). ``hosts``: each secret's bound hosts.

    ``kept``: values held that are no secret's value now, (secret, value, the hosts it may still
    go to): one a rotation replaced (its secret's hosts) or a reload unbound (none). A value that
    carries one, or shares a run with it, is refused the same way (red team 60: a key rotated away,
    still guarded, went out inside another secret's new value; red team 62: as that key less its
    last character). So is a value the kept one once wrapped: which is whose cannot be told, and
    the kept value refuses it until a restart (the log says which secret's).

    In steps: None after each secret's row (the caller lets requests run), then the answer."""
    old = list(kept)
    longest = max((len(v) for v in values.values()), default=0)  # (only a current value carries)
    index = _Index()
    for name, value in values.items():
        index.add(name, value, longest > len(value))
        yield None
    for i, (_, value, _) in enumerate(old):
        index.add(i, value, longest > len(value))
        yield None
    carries: dict[str, set[object]] = {}
    for name, value in values.items():
        carries[name] = index.carried(value) - {name}
        yield None
    out: dict[str, str] = {}
    for a, va in values.items():
        goes = hosts.get(a, frozenset())
        for b, vb in values.items():
            if b == a or va == vb or goes <= hosts.get(b, frozenset()):
                continue
            if b in carries[a] or a in carries[b]:
                out[a] = b
                break
        else:
            for i, (b, vb, to) in enumerate(old):
                if b != a and va != vb and i in carries[a] and not goes <= to:
                    out[a] = b
                    break
    yield out
