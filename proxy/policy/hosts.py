"""The one host canonicaliser.

Every component that compares host names (the allowlist, the secret binding, metric labels, audit
lines) goes through :func:`canonical_host`, so a name can never be allowed by one component and
bound to a secret by another that normalises differently (SECURITY-CASES A02, A20).

Canonical form: lowercase A-labels (IDNA 2008 with UTS-46 mapping), one trailing dot stripped, no
empty labels; IPv4 only as a strict dotted quad; IPv6 compressed, without brackets or zone.

Two entry points: :func:`canonical_host` for what an operator wrote (policy files: a U-label is
mapped to its A-label there), and :func:`wire_host` for what arrives on the wire (Host, CONNECT,
SNI, an absolute-form target), which is never mapped: full-width dots, the Kelvin sign or any other
character UTS-46 would fold onto an allowed name is refused, so the only way to name a host on the
wire is to write its canonical form (give or take ASCII case and one trailing dot).
"""

from __future__ import annotations

import functools
import ipaddress
import re

import idna

__all__ = ["HostError", "canonical_host", "is_ip_literal", "split_authority", "wire_authority", "wire_host"]

_LDH = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
# A last label that is all digits, or hex like "0x7f", would let getaddrinfo read the name as a
# legacy numeric IPv4 form ("127.1", "0x7f.1", "2130706433"): never a host name (A08).
_NUMERIC_LABEL = re.compile(r"^(?:[0-9]+|0x[0-9a-f]*)$")


class HostError(ValueError):
    """The string is not a host name or IP literal we accept. ``fixed``: the reason in fixed words,
    without the offending text the message quotes -- what a refusal on the data path may say (its
    answer and audit record never quote request data); the message, quote and all, is for a policy
    file's author."""

    def __init__(self, fixed: str, quoted: str | None = None) -> None:
        super().__init__(fixed if quoted is None else f"{fixed}: {quoted}")
        self.fixed = fixed


@functools.lru_cache(maxsize=4096)
def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@functools.lru_cache(maxsize=4096)
def canonical_host(raw: str) -> str:
    """Return the canonical form of ``raw`` or raise :class:`HostError` saying why.

    Cached (a pure function, called twice per request; UTS-46 mapping is the costly part). Errors
    are not cached; the cache is bounded, so random names from an agent only churn it."""
    if not raw:
        raise HostError("empty host")
    if len(raw) > 260:
        raise HostError("host longer than 253 characters")
    if raw.startswith("[") or ":" in raw:
        inner = raw[1:-1] if raw.startswith("[") and raw.endswith("]") else raw
        if "%" in inner:
            raise HostError("IPv6 zone identifiers are not allowed")
        try:
            return ipaddress.IPv6Address(inner).compressed
        except ValueError:
            raise HostError("not a valid IPv6 literal", repr(raw)) from None
    if any(c.isspace() or ord(c) < 0x21 or c in "/@#?%\\,;\"'<>[]{}|^`" for c in raw):
        raise HostError("host contains whitespace, control or URL-delimiter characters")
    name = raw[:-1] if raw.endswith(".") else raw
    if not name or name.startswith(".") or ".." in name or name.endswith("."):
        raise HostError("empty label (leading, doubled or more than one trailing dot)")
    try:
        return str(ipaddress.IPv4Address(name))
    except ValueError:
        pass
    try:
        ascii_name = idna.encode(name, uts46=True, std3_rules=True, transitional=False).decode()
    except idna.IDNAError as e:
        raise HostError("not a valid host name", str(e)) from None
    ascii_name = ascii_name.lower()
    labels = ascii_name.split(".")
    for label in labels:
        if not _LDH.match(label):
            raise HostError("invalid label", repr(label))
        if label.startswith("xn--"):
            try:
                idna.decode(label)
            except idna.IDNAError:
                raise HostError("invalid punycode label", repr(label)) from None
    if _NUMERIC_LABEL.match(labels[-1]):
        raise HostError("numeric last label: not a host name, and not a canonical dotted-quad IPv4")
    if len(ascii_name) > 253:
        raise HostError("host longer than 253 characters")
    return ascii_name


@functools.lru_cache(maxsize=4096)
def wire_host(raw: str) -> str:
    """The canonical form of a host read from the wire, or :class:`HostError`.

    Accepted: ASCII only -- LDH labels or valid A-labels (lowercased, one trailing dot dropped), a
    strict dotted-quad IPv4, or an IPv6 literal (in brackets or bare). Nothing is Unicode-mapped:
    ASCII is checked before lowercasing, because ``str.lower`` itself folds the Kelvin sign onto
    ``k``. The result always equals ``canonical_host(result)``. Cached, like canonical_host."""
    if not raw.isascii():
        raise HostError("host names on the wire must be ASCII (LDH labels or xn-- A-labels)")
    host = canonical_host(raw)
    # canonical_host maps through UTS-46; for ASCII input that can only lowercase (and drop one
    # trailing dot), which we accept. Anything else it changed is a form we do not take.
    plain = raw[1:-1] if raw.startswith("[") and raw.endswith("]") else raw
    plain = plain[:-1] if plain.endswith(".") else plain
    if ":" not in host and host != plain.lower():
        raise HostError("host is not in canonical form")
    return host


def wire_authority(authority: str) -> tuple[str, int | None]:
    """``host[:port]`` from the wire: (canonical host, port or None), or :class:`HostError`."""
    raw_host, port = split_authority(authority)
    return wire_host(raw_host), port


def split_authority(authority: str) -> tuple[str, int | None]:
    """Split ``host[:port]`` / ``[v6][:port]`` strictly; the host is returned raw (not canonical).

    Ports must be plain decimal without sign, padding or leading zeros, 1..65535 (A07).
    """
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            raise HostError("unterminated IPv6 literal")
        host, rest = authority[: end + 1], authority[end + 1 :]
        if rest and not rest.startswith(":"):
            raise HostError("garbage after IPv6 literal")
        port_text = rest[1:] if rest else None
    elif authority.count(":") == 1:
        host, port_text = authority.split(":")
    elif ":" in authority:
        raise HostError("IPv6 literals must be written in brackets")
    else:
        host, port_text = authority, None
    if port_text is None:
        return host, None
    if not re.fullmatch(r"[1-9][0-9]{0,4}", port_text) or int(port_text) > 65535:
        raise HostError("invalid port", repr(port_text))
    return host, int(port_text)
