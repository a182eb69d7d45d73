"""The EgressPolicy domain model: frozen values, built once by :mod:`proxy.policy.load`.

Nothing here does I/O; the sidecar, the policy tester and the injector share these types.
"""

from __future__ import annotations

import enum
import fnmatch
import re
from dataclasses import dataclass, field

__all__ = [
    "DEFAULT_SLOTS",
    "AllowRule",
    "BoundHost",
    "Decision",
    "Mode",
    "Policy",
    "PolicyWarning",
    "Reason",
    "SecretBinding",
    "SecretSourceRef",
    "Slot",
    "Verdict",
    "host_label",
]


class Reason(enum.StrEnum):
    """Why a request was denied (or would have been, in report mode). One enum everywhere: the
    audit field, the metric label, the 403 body, the ``X-Sandgate-Reason`` header and the tests."""

    HOST_NOT_ALLOWED = "host_not_allowed"
    PORT_NOT_ALLOWED = "port_not_allowed"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    PATH_NOT_ALLOWED = "path_not_allowed"
    AUTHORITY_MISMATCH = "authority_mismatch"
    PRIVATE_ADDRESS = "private_address"
    MALFORMED_REQUEST = "malformed_request"
    SECRET_NOT_BOUND = "secret_not_bound"
    SECRET_UNAVAILABLE = "secret_unavailable"
    SECRET_INVALID = "secret_invalid"
    LIMIT_EXCEEDED = "limit_exceeded"
    PROTOCOL_NOT_ALLOWED = "protocol_not_allowed"
    SECRET_VALUE_OUTBOUND = "secret_value_outbound"  # a real value (not a placeholder) in a request
    SECRET_VALUE_INBOUND = "secret_value_inbound"  # a real value coming back in a form that cannot be scrubbed

    @property
    def http_status(self) -> int:
        return _STATUS.get(self, 403)

    @property
    def reportable(self) -> bool:
        """Report mode lets these through; the rest are platform invariants, enforced always."""
        return self in _REPORTABLE


_STATUS = {
    Reason.METHOD_NOT_ALLOWED: 405,
    Reason.MALFORMED_REQUEST: 400,
    Reason.SECRET_UNAVAILABLE: 503,
    Reason.SECRET_INVALID: 503,
    Reason.LIMIT_EXCEEDED: 413,
    Reason.SECRET_VALUE_INBOUND: 502,
}
_REPORTABLE = frozenset(
    {
        Reason.HOST_NOT_ALLOWED,
        Reason.PORT_NOT_ALLOWED,
        Reason.METHOD_NOT_ALLOWED,
        Reason.PATH_NOT_ALLOWED,
        Reason.SECRET_NOT_BOUND,
    }
)


class Verdict(enum.StrEnum):
    ALLOWED = "allowed"
    DENIED = "denied"
    REPORTED = "reported"  # would have been denied; let through because spec.mode is report


class Mode(enum.StrEnum):
    ENFORCE = "enforce"
    REPORT = "report"


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    reason: Reason | None = None
    rule: int | None = None  # index into spec.allow of the rule that allowed the request

    @property
    def forwards(self) -> bool:
        return self.verdict is not Verdict.DENIED


@dataclass(frozen=True, slots=True)
class AllowRule:
    index: int
    host: str  # canonical; for a wildcard the suffix without "*."
    wildcard: bool
    ports: tuple[int, ...]
    methods: frozenset[str] | None
    paths: tuple[str, ...] | None
    _path_re: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    @property
    def pattern(self) -> str:
        return f"*.{self.host}" if self.wildcard else self.host

    def matches_host(self, host: str) -> bool:
        if self.wildcard:
            # Subdomains at any depth, never the apex: a.b.example.com matches *.example.com.
            return host.endswith("." + self.host)
        return host == self.host

    def matches_path(self, path: str) -> bool:
        return self._path_re is None or self._path_re.fullmatch(path) is not None

    @staticmethod
    def compile_paths(paths: tuple[str, ...] | None) -> re.Pattern[str] | None:
        if paths is None:
            return None
        return re.compile("|".join(f"(?:{fnmatch.translate(p)[4:-3]})" for p in paths), re.S)


@dataclass(frozen=True, slots=True)
class SecretSourceRef:
    kind: str  # "vault" | "env" | "file"
    env: str | None = None
    file: str | None = None
    vault_mount: str | None = None
    vault_path: str | None = None
    vault_key: str | None = None

    def describe(self) -> str:
        """Where the value comes from, for error messages. Never the value."""
        if self.kind == "env":
            return f"environment variable {self.env}"
        if self.kind == "file":
            return f"file {self.file}"
        return f"vault {self.vault_mount}/{self.vault_path}#{self.vault_key}"


@dataclass(frozen=True, slots=True)
class BoundHost:
    host: str  # canonical, never a wildcard
    port: int = 443

    def __str__(self) -> str:
        return host_label(self.host, self.port)


def host_label(host: str, port: int) -> str:
    """``host`` for 443, else ``host:port`` (``[v6]:port``): the ``host`` label of swap metrics."""
    if port == 443:
        return host
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True, slots=True)
class Slot:
    """One place a secret's placeholder is swapped: a header and the exact shape of its value.

    ``format`` holds one ``{}`` where the placeholder stands; the rest of the value must match it
    exactly, except that in ``authorization`` the scheme (the text before the first space) is
    matched case-insensitively, as RFC 9110 says. ``basic``: Basic credentials in this header are
    decoded and ``user:{}`` / ``{}:password`` are swapped too (the default ``authorization`` slot).
    """

    name: str  # lowercase header name
    format: str = "{}"
    basic: bool = False
    prefix: str = field(init=False, compare=False, repr=False)  # the format before / after its {}
    suffix: str = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        prefix, _, suffix = self.format.partition("{}")
        object.__setattr__(self, "prefix", prefix)
        object.__setattr__(self, "suffix", suffix)

    def __str__(self) -> str:
        return f"{self.name}: {self.format}" + (" (or Basic credentials)" if self.basic else "")


def default_slot(name: str) -> Slot:
    """The slot a plain header name in ``headers:`` stands for."""
    name = name.lower()
    if name == "authorization":
        return Slot("authorization", "Bearer {}", basic=True)
    return Slot(name, "{}")


DEFAULT_SLOTS = (default_slot("authorization"), default_slot("x-api-key"))


@dataclass(frozen=True, slots=True)
class SecretBinding:
    name: str
    placeholder: str
    source: SecretSourceRef
    hosts: tuple[BoundHost, ...]
    slots: tuple[Slot, ...] = DEFAULT_SLOTS
    query: bool = False
    agent_env: tuple[str, ...] = ()
    # (host, port) of every bound host: asked on every request that carries the placeholder.
    _bound: frozenset[tuple[str, int]] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_bound", frozenset((b.host, b.port) for b in self.hosts))

    @property
    def headers(self) -> tuple[str, ...]:
        """The names of the slot headers."""
        return tuple(s.name for s in self.slots)

    def bound_to(self, host: str, port: int) -> bool:
        return (host, port) in self._bound


@dataclass(frozen=True, slots=True)
class PolicyWarning:
    """Valid but probably not what was meant (a rule for method "PSOT"): ``sandgate policy check``
    prints it, ``--strict`` fails on it; the proxy serves the policy as written."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


@dataclass(frozen=True, slots=True)
class Policy:
    name: str
    mode: Mode
    allow: tuple[AllowRule, ...]
    secrets: tuple[SecretBinding, ...]
    warnings: tuple[PolicyWarning, ...] = field(default=(), compare=False)
    # The rules by exact host, and the wildcard rules: the data path asks for a host's rules on
    # every request, and a policy may have hundreds of rules.
    _exact: dict[str, tuple[AllowRule, ...]] = field(init=False, compare=False, repr=False)
    _wildcards: tuple[AllowRule, ...] = field(init=False, compare=False, repr=False)
    lists_methods: bool = field(init=False, compare=False, repr=False)  # some rule has `methods`

    def __post_init__(self) -> None:
        exact: dict[str, list[AllowRule]] = {}
        for r in self.allow:
            if not r.wildcard:
                exact.setdefault(r.host, []).append(r)
        object.__setattr__(self, "_exact", {h: tuple(rs) for h, rs in exact.items()})
        object.__setattr__(self, "_wildcards", tuple(r for r in self.allow if r.wildcard))
        object.__setattr__(self, "lists_methods", any(r.methods is not None for r in self.allow))

    def rules_for(self, host: str) -> list[AllowRule]:
        """The rules whose host pattern matches ``host`` (canonical), in policy order."""
        exact = self._exact.get(host, ())
        wild = [r for r in self._wildcards if r.matches_host(host)] if self._wildcards else []
        if not wild:
            return list(exact)
        return sorted([*exact, *wild], key=lambda r: r.index) if exact else wild

    def secret(self, name: str) -> SecretBinding | None:
        return next((s for s in self.secrets if s.name == name), None)
