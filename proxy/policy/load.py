"""Read an ``EgressPolicy`` (sandgate.dev/v1alpha1) into the frozen :class:`Policy`.

Total: for any bytes or text, :func:`parse_policy` and :func:`load_policy` return a Policy or raise
:class:`PolicyInvalid`, nothing else. Three stages, each reporting every problem it finds, each
problem naming the file, the field and what to write instead:

1. :mod:`proxy.policy.yamlsafe` turns bytes into plain values (encoding, size, depth, aliases);
2. :func:`proxy.policy.schema.validate` checks them against the declarative field table (the same
   table the JSON Schema is generated from): names, types, patterns, ranges;
3. :class:`_Builder` judges what a table cannot (canonical hosts, wildcards over public suffixes,
   secret bindings that no rule allows, duplicates) and builds the model. Dubious but valid input
   (a non-standard HTTP method) becomes a warning on :attr:`Policy.warnings`.
"""

from __future__ import annotations

import functools
import hashlib
import urllib.parse
from typing import Any

from proxy.infile import read_regular
from proxy.policy.errors import PolicyError, PolicyInvalid, PolicyUnreadable, show
from proxy.policy.hosts import HostError, canonical_host, is_ip_literal, split_authority
from proxy.policy.model import (
    AllowRule,
    BoundHost,
    Mode,
    Policy,
    PolicyWarning,
    SecretBinding,
    SecretSourceRef,
    Slot,
    default_slot,
)
from proxy.policy.schema import API_VERSION, BAD, EGRESS_POLICY, KIND, validate
from proxy.policy.yamlsafe import MAX_BYTES, decode, load_documents

__all__ = [
    "API_VERSION",
    "KIND",
    "STANDARD_METHODS",
    "PolicyError",
    "PolicyInvalid",
    "PolicyUnreadable",
    "default_placeholder",
    "load_policy",
    "parse_policy",
    "policy_from_document",
    "read_policy_text",
]

# Headers that frame or route the request: swapping a secret into them would change where or how
# the request goes, not just what credential it carries.
_FORBIDDEN_SLOTS = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "upgrade",
        "te",
        "trailer",
        "proxy-authorization",
        "proxy-connection",
        "keep-alive",
        "expect",
    }
)
# RFC 9110 section 9, PATCH (RFC 5789), and the WebDAV family in the IANA HTTP Method Registry
# (RFC 3253, 3648, 3744, 4437, 4791, 4918, 5323, 5842). Anything else is allowed with a warning:
# a rule for "PSOT" is valid, and never matches what the agent sends.
STANDARD_METHODS = frozenset(
    {
        *("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"),
        *("ACL", "BASELINE-CONTROL", "BIND", "CHECKIN", "CHECKOUT", "COPY", "LABEL", "LOCK", "MERGE"),
        *("MKACTIVITY", "MKCALENDAR", "MKCOL", "MKREDIRECTREF", "MKWORKSPACE", "MOVE", "ORDERPATCH"),
        *("PROPFIND", "PROPPATCH", "REBIND", "REPORT", "SEARCH", "UNBIND", "UNCHECKOUT", "UNLOCK"),
        *("UPDATE", "UPDATEREDIRECTREF", "VERSION-CONTROL"),
    }
)


# ICANN section only: the private section lists platforms like githubusercontent.com, whose
# subdomains the contract's own example allowlists. Secrets can never be bound to wildcards anyway.
@functools.cache
def _public_suffixes() -> Any:
    """Loaded on first use (~50 ms): only a wildcard rule needs it, and start-up should not wait.
    Raises PolicyUnreadable when its file cannot be read (out of descriptors, say: red team 69, the
    reload watcher died of the bare OSError); tried again at the next use."""
    from publicsuffixlist import PublicSuffixList

    try:
        return PublicSuffixList(only_icann=True)
    except OSError as e:
        why = f"a wildcard host needs the public suffix list, which cannot be read: {e.strerror or e}"
        raise PolicyUnreadable.one("spec.allow", why, "<policy>") from None


def default_placeholder(policy_name: str, secret_name: str) -> str:
    """Stable per (policy, secret), distinctive, and never a prefix of another default."""
    digest = hashlib.sha256(f"{policy_name}\0{secret_name}".encode()).hexdigest()[:16]
    return f"sandgate-{secret_name}-{digest}"


def read_policy_text(path: str) -> str:
    """The text of a policy file, decoded as :func:`load_policy` decodes it (for callers that
    transform a policy before parsing it). Raises :class:`PolicyInvalid` only
    (:class:`PolicyUnreadable` where the file could not be read)."""
    try:
        # Never a FIFO or a device: the read would block for good (the policy watcher hung,
        # silently, and a later revocation never applied: red team 37) or never end.
        data = read_regular(path, MAX_BYTES)  # (one byte more than allowed is enough to refuse it)
    except OSError as e:
        raise PolicyUnreadable.one("file", f"cannot read: {e.strerror or e}", path) from None
    return decode(data, path)


def load_policy(path: str) -> Policy:
    return parse_policy(read_policy_text(path), source=path)


def parse_policy(text: str | bytes, source: str = "<policy>") -> Policy:
    """One EgressPolicy document from the text (or bytes) of a file or of a ConfigMap's key."""
    docs = load_documents(decode(text, source), source)
    if not docs:
        raise PolicyInvalid.one(
            "policy",
            "is empty; an EgressPolicy is a mapping with apiVersion, kind, metadata and spec",
            source,
        )
    if len(docs) > 1:
        raise PolicyInvalid.one(
            "yaml",
            f"holds {len(docs)} YAML documents; a policy file holds one (`sandgate policy check` reads several)",
            source,
        )
    return policy_from_document(docs[0], source)


def policy_from_document(doc: Any, source: str) -> Policy:
    """A Policy from one parsed YAML document (plain values, as :mod:`yamlsafe` returns them)."""
    checked, errors = validate(doc, EGRESS_POLICY)
    builder = _Builder(errors)
    policy = builder.policy(checked)
    if builder.errors or policy is None:
        raise PolicyInvalid(builder.errors or [PolicyError("policy", "is not a valid EgressPolicy")], source)
    return policy


def _ok(value: Any) -> bool:
    return value is not BAD


def _whole(value: Any) -> bool:
    """Not BAD, and not a list with a BAD item."""
    return value is not BAD and not (isinstance(value, list) and any(v is BAD for v in value))


class _Builder:
    """The rules the field table cannot express, over a document that passed (parts of) it.

    Every value it reads has the type the table declares, or is :data:`BAD` (already reported) or
    absent (a missing required field, already reported): each method skips what it cannot judge and
    reports everything else, so one run lists all the problems."""

    def __init__(self, errors: list[PolicyError]) -> None:
        self.errors = errors
        self.warnings: list[PolicyWarning] = []

    def err(self, field: str, message: str) -> None:
        self.errors.append(PolicyError(field, message))

    def policy(self, doc: Any) -> Policy | None:
        if not isinstance(doc, dict):
            return None
        meta = doc.get("metadata")
        name = meta.get("name") if isinstance(meta, dict) else None
        name = name if isinstance(name, str) else None
        spec = doc.get("spec", BAD)
        if not isinstance(spec, dict):
            return None
        mode = Mode(spec["mode"]) if isinstance(spec.get("mode"), str) else Mode.ENFORCE
        allow_raw = spec.get("allow", BAD)
        rules: list[AllowRule | None] = (
            [self.rule(i, r) if isinstance(r, dict) else None for i, r in enumerate(allow_raw)]
            if isinstance(allow_raw, list)
            else [None]
        )
        allow = tuple(r for r in rules if r is not None)
        # A secret's hosts are checked against the allowlist only when every rule could be read:
        # otherwise "no rule covers" would blame the binding for the broken rule.
        cover = _Coverage(allow) if None not in rules else None
        secrets_raw = spec.get("secrets", [])
        secrets: list[SecretBinding | None] = (
            [
                self.secret(name or "invalid", i, s, cover) if isinstance(s, dict) else None
                for i, s in enumerate(secrets_raw)
            ]
            if isinstance(secrets_raw, list)
            else [None]
        )
        good = tuple(s for s in secrets if s is not None)
        self.cross_check(good, [i for i, s in enumerate(secrets) if s is not None])
        if name is None or None in rules or None in secrets:
            return None
        return Policy(name=name, mode=mode, allow=allow, secrets=good, warnings=tuple(self.warnings))

    # --- allow rules ---

    def rule(self, index: int, r: dict[str, Any]) -> AllowRule | None:
        field = f"spec.allow[{index}]"
        target = self.allow_host(r["host"], f"{field}.host") if "host" in r and _ok(r["host"]) else None
        ports, methods, paths = r.get("ports", BAD), r.get("methods"), r.get("paths")
        if isinstance(methods, list):
            for j, m in enumerate(methods):
                if isinstance(m, str) and m not in STANDARD_METHODS:
                    self.warn_method(f"{field}.methods[{j}]", m)
        # Lists hold BAD where an item failed the table's check (already reported).
        if target is None or not all(_whole(v) for v in (ports, methods, paths)):
            return None
        host, wildcard = target
        path_tuple = tuple(paths) if paths is not None else None
        return AllowRule(
            index,
            host,
            wildcard,
            tuple(sorted(set(ports))),
            frozenset(methods) if methods is not None else None,
            path_tuple,
            AllowRule.compile_paths(path_tuple),
        )

    def warn_method(self, field: str, method: str) -> None:
        near = _nearest(method, STANDARD_METHODS)
        self.warnings.append(
            PolicyWarning(
                field,
                f"{method!r} is not a standard HTTP method (RFC 9110, PATCH or WebDAV)"
                + (f"; did you mean {near!r}?" if near else "; the rule matches it only if an agent sends it exactly"),
            )
        )

    def allow_host(self, raw: str, field: str) -> tuple[str, bool] | None:
        """(canonical host or wildcard suffix, wildcard) for ``spec.allow[i].host``."""
        if raw == "*":
            self.err(field, "a bare wildcard would allow every host; list hosts, or '*.example.com' for subdomains")
            return None
        wildcard = raw.startswith("*.")
        if wildcard and raw in ("*.", "*.."):
            self.err(field, "a wildcard needs a domain after '*.': write '*.example.com'")
            return None
        if "*" in (raw[2:] if wildcard else raw):
            self.err(field, "a wildcard is only allowed as the whole first label: write '*.example.com'")
            return None
        hint = _misplaced(raw[2:] if wildcard else raw, in_allow=True)
        if hint is not None:
            self.err(field, hint)
            return None
        host = self.canonical(raw[2:] if wildcard else raw, field, prefix="*." if wildcard else "")
        if host is None:
            return None
        if wildcard:
            if is_ip_literal(host):
                self.err(field, "wildcards apply to host names, not IP addresses")
                return None
            if "." not in host or _public_suffixes().is_public(host):
                self.err(
                    field, f"'*.{host}' covers a public suffix (every site under it); list the exact hosts instead"
                )
                return None
        return host, wildcard

    def canonical(self, raw: str, field: str, prefix: str = "", suffix: str = "") -> str | None:
        """``raw`` if it is canonical; otherwise an error that shows the canonical spelling."""
        try:
            canon = canonical_host(raw)
        except HostError as e:
            self.err(field, str(e))
            return None
        if canon != raw:
            self.err(field, f"not canonical; write {prefix + canon + suffix!r}")
            return None
        return canon

    # --- secrets ---

    def secret(self, policy_name: str, index: int, s: dict[str, Any], cover: _Coverage | None) -> SecretBinding | None:
        field = f"spec.secrets[{index}]"
        name = s.get("name", BAD)
        placeholder = s.get("placeholder")
        if placeholder is None and _ok(name):
            placeholder = default_placeholder(policy_name, name)
        source = self.source(s["source"], f"{field}.source") if isinstance(s.get("source"), dict) else None
        hosts = self.bound_hosts(s["hosts"], f"{field}.hosts", cover) if isinstance(s.get("hosts"), list) else None
        slots = self.slots(s["headers"], f"{field}.headers") if isinstance(s.get("headers"), list) else None
        query, agent_env = s.get("query", BAD), s.get("agentEnv", BAD)
        if (
            not _ok(name)
            or not isinstance(placeholder, str)
            or source is None
            or hosts is None
            or slots is None
            or not isinstance(query, bool)
            or not isinstance(agent_env, list)
            or not _whole(agent_env)
        ):
            return None
        return SecretBinding(name, placeholder, source, hosts, slots, query, tuple(agent_env))

    def bound_hosts(self, raw: list[Any], field: str, cover: _Coverage | None) -> tuple[BoundHost, ...] | None:
        out: list[BoundHost] = []
        ok = True
        for j, entry in enumerate(raw):
            hf = f"{field}[{j}]"
            bound = self.bound_host(entry, hf) if isinstance(entry, str) else None
            if bound is None:
                ok = False
                continue
            if cover is not None and not cover.covers(bound):
                self.err(
                    hf,
                    f"no spec.allow rule covers {bound}: add '- host: {bound.host}'"
                    + (f" with ports: [{bound.port}]" if bound.port != 443 else "")
                    + " to spec.allow, or remove the binding",
                )
                ok = False
            out.append(bound)
        return tuple(out) if ok and out else None

    def bound_host(self, entry: str, field: str) -> BoundHost | None:
        if "*" in entry:
            self.err(
                field,
                "secrets are bound to exact hosts, never wildcards: a wildcard would deliver the key to any subdomain",
            )
            return None
        hint = _misplaced(entry, in_allow=False)
        if hint is not None:
            self.err(field, hint)
            return None
        try:
            raw_host, port = split_authority(entry)
        except HostError as e:
            self.err(field, str(e))
            return None
        bracketed = raw_host.startswith("[")
        host = self.canonical(
            raw_host[1:-1] if bracketed else raw_host,
            field,
            prefix="[" if bracketed else "",
            suffix=("]" if bracketed else "") + (f":{port}" if port else ""),
        )
        return None if host is None else BoundHost(host, port or 443)

    def slots(self, raw: list[Any], field: str) -> tuple[Slot, ...] | None:
        """``headers: [authorization, {name: x-token, format: "token {}"}]``."""
        out: dict[str, Slot] = {}
        ok = True
        for j, item in enumerate(raw):
            f = f"{field}[{j}]"
            name: Any
            fmt: Any
            if isinstance(item, str):
                name, fmt = item, None
            elif isinstance(item, dict) and isinstance(item.get("name"), str) and _ok(item.get("format")):
                name, fmt = item["name"], item.get("format")
            else:
                ok = False
                continue
            name = name.lower()
            if name in _FORBIDDEN_SLOTS:
                self.err(f, f"{name!r} frames or routes the request; a secret cannot be swapped into it")
                ok = False
            elif name in out:
                self.err(f, f"{name!r} is listed twice; list each header once")
                ok = False
            else:
                out[name] = default_slot(name) if fmt is None else Slot(name, fmt)
        return tuple(out.values()) if ok else None

    def source(self, src: dict[str, Any], field: str) -> SecretSourceRef | None:
        if len(src) != 1:
            return None  # reported by the table (exactly one of vault, env, file)
        kind, value = next(iter(src.items()))
        if not _ok(value):
            return None
        if kind == "env":
            return SecretSourceRef("env", env=value)
        if kind == "file":
            return SecretSourceRef("file", file=value)
        if not all(_ok(value.get(k, BAD)) for k in ("mount", "path", "key")):
            return None
        mount, path = value["mount"].strip("/"), value["path"].strip("/")
        for part, text in (("mount", mount), ("path", path)):
            if not text:
                self.err(f"{field}.vault.{part}", f"{show(value[part])} names nothing once its slashes are removed")
        if not mount or not path:
            return None
        return SecretSourceRef("vault", vault_mount=mount, vault_path=path, vault_key=value["key"])

    def cross_check(self, secrets: tuple[SecretBinding, ...], indexes: list[int]) -> None:
        """``indexes[k]`` is the position in spec.secrets of ``secrets[k]`` (some may have failed)."""
        seen_names: dict[str, int] = {}
        seen_env: dict[str, str] = {}
        for k, s in enumerate(secrets):
            i = indexes[k]
            if s.name in seen_names:
                self.err(f"spec.secrets[{i}].name", f"duplicate secret name {s.name!r}")
            seen_names[s.name] = i
            for e in s.agent_env:
                if e in seen_env:
                    self.err(f"spec.secrets[{i}].agentEnv", f"{e} is already set by secret {seen_env[e]!r}")
                seen_env[e] = s.name
        # Quadratic, and bounded by the table's limit on the number of secrets.
        for ka, a in enumerate(secrets):
            for kb in range(ka + 1, len(secrets)):
                b = secrets[kb]
                if a.placeholder == b.placeholder:
                    self.err(
                        f"spec.secrets[{indexes[kb]}].placeholder", f"duplicate placeholder (also used by {a.name!r})"
                    )
                elif a.placeholder in b.placeholder or b.placeholder in a.placeholder:
                    short, k_long = (a, kb) if len(a.placeholder) < len(b.placeholder) else (b, ka)
                    self.err(
                        f"spec.secrets[{indexes[k_long]}].placeholder",
                        f"contains the placeholder of {short.name!r}; placeholders must not contain one another",
                    )


class _Coverage:
    """Which (host, port) the allowlist reaches, indexed: a policy of 1 MiB may hold tens of
    thousands of rules and bindings, and a pairwise check would take minutes."""

    def __init__(self, rules: tuple[AllowRule, ...]) -> None:
        self.exact: dict[str, set[int]] = {}
        self.wild: dict[str, set[int]] = {}
        for r in rules:
            (self.wild if r.wildcard else self.exact).setdefault(r.host, set()).update(r.ports)

    def covers(self, b: BoundHost) -> bool:
        if b.port in self.exact.get(b.host, ()):
            return True
        labels = b.host.split(".")
        return not is_ip_literal(b.host) and any(
            b.port in self.wild.get(".".join(labels[i:]), ()) for i in range(1, len(labels))
        )


def _misplaced(raw: str, *, in_allow: bool) -> str | None:
    """The fix for a URL, a path or (in ``allow``) a port written where a bare host belongs."""
    if "://" in raw:
        try:
            parts = urllib.parse.urlsplit(raw)
            host, port = parts.hostname, parts.port
        except ValueError:
            host, port = None, None
        if not host:
            return "a URL is not a host: write the bare host name"
        if in_allow:
            return (
                f"a URL is not a host: write the bare host {show(host)}"
                + (f" and put the port in ports: [{port}]" if port else "")
                + (f", and the path in paths: [{show(parts.path)}]" if parts.path not in ("", "/") else "")
            )
        shown = (f"[{host}]" if ":" in host else host) + (f":{port}" if port else "")
        return f"a URL is not a host: write the bare host {show(shown)}"
    if "/" in raw:
        host, _, path = raw.partition("/")
        where = f" and the path in paths: [{show('/' + path)}]" if in_allow else ""
        return f"a host has no path: write {show(host)}{where}"
    if in_allow:
        try:
            host, port = split_authority(raw)
        except HostError:
            return None
        if port is not None:
            return f"a host has no port here: write {show(host.strip('[]'))} and put the port in ports: [{port}]"
    return None


def _nearest(word: str, candidates: frozenset[str]) -> str | None:
    """The candidate one edit away (two for longer words), counting a swap of neighbours as one."""
    limit = 1 if len(word) <= 4 else 2
    best: tuple[int, str] | None = None
    for c in sorted(candidates):
        if abs(len(c) - len(word)) > limit:
            continue
        d = _osa_distance(word.upper(), c)
        if d <= limit and (best is None or d < best[0]):
            best = (d, c)
    return best[1] if best else None


def _osa_distance(a: str, b: str) -> int:
    """Optimal string alignment distance (Levenshtein plus adjacent transpositions)."""
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        prev2, prev = prev, cur
    return prev[len(b)]
