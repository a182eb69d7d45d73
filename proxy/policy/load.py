"""Parse and validate an ``EgressPolicy`` (sandgate.dev/v1alpha1) into :class:`Policy`.

The wire format (YAML) stays here; the rest of the code only sees the frozen model. Every problem
is collected (not just the first) and names the field and what to write instead, so
``sandgate policy check`` can print them all.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml
from publicsuffixlist import PublicSuffixList

from proxy.policy.hosts import HostError, canonical_host, is_ip_literal, split_authority
from proxy.policy.model import (
    DEFAULT_SLOTS,
    AllowRule,
    BoundHost,
    Mode,
    Policy,
    SecretBinding,
    SecretSourceRef,
    Slot,
    default_slot,
)

__all__ = ["API_VERSION", "KIND", "PolicyError", "PolicyInvalid", "load_policy", "parse_policy"]

API_VERSION = "sandgate.dev/v1alpha1"
KIND = "EgressPolicy"

_NAME = re.compile(r"^[a-z0-9-]{1,63}$")
_PLACEHOLDER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._~-]{7,199}$")
_HEADER = re.compile(r"^[a-z0-9!#$%&'*+.^_`|~-]+$")
_ENV = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_METHOD = re.compile(r"^[A-Z]+$")
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
# ICANN section only: the private section lists platforms like githubusercontent.com, whose
# subdomains the contract's own example allowlists. Secrets can never be bound to wildcards anyway.
_PSL = PublicSuffixList(only_icann=True)


@dataclass(frozen=True, slots=True)
class PolicyError:
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class PolicyInvalid(ValueError):
    def __init__(self, errors: list[PolicyError], source: str = "<policy>") -> None:
        self.errors = errors
        self.source = source
        super().__init__("\n".join(f"{source}: {e}" for e in errors))


def default_placeholder(policy_name: str, secret_name: str) -> str:
    """Stable per (policy, secret), distinctive, and never a prefix of another default."""
    digest = hashlib.sha256(f"{policy_name}\0{secret_name}".encode()).hexdigest()[:16]
    return f"sandgate-{secret_name}-{digest}"


def load_policy(path: str) -> Policy:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise PolicyInvalid([PolicyError("file", f"cannot read: {e.strerror}")], path) from None
    return parse_policy(text, source=path)


def parse_policy(text: str, source: str = "<policy>") -> Policy:
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise PolicyInvalid([PolicyError("yaml", f"not valid YAML: {e}")], source) from None
    parser = _Parser()
    policy = parser.policy(doc)
    if parser.errors or policy is None:
        raise PolicyInvalid(parser.errors, source)
    return policy


class _Parser:
    def __init__(self) -> None:
        self.errors: list[PolicyError] = []

    def err(self, field: str, message: str) -> None:
        self.errors.append(PolicyError(field, message))

    def mapping(self, value: Any, field: str, known: set[str], required: Iterable[str] = ()) -> dict[str, Any] | None:
        if not isinstance(value, Mapping):
            self.err(field, f"must be a mapping, got {type(value).__name__}")
            return None
        for key in value:
            if key not in known:
                self.err(f"{field}.{key}", f"unknown field; known fields: {', '.join(sorted(known))}")
        for key in sorted(set(required) - set(value)):
            self.err(f"{field}.{key}", "required field is missing")
        return dict(value)

    def str_list(self, value: Any, field: str) -> list[str] | None:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.err(field, "must be a list of strings")
            return None
        return list(value)

    def policy(self, doc: Any) -> Policy | None:
        top = self.mapping(
            doc, "policy", {"apiVersion", "kind", "metadata", "spec"}, {"apiVersion", "kind", "metadata", "spec"}
        )
        if top is None:
            return None
        if "apiVersion" in top and top["apiVersion"] != API_VERSION:
            self.err("apiVersion", f"must be {API_VERSION!r}")
        if "kind" in top and top["kind"] != KIND:
            self.err("kind", f"must be {KIND!r}")
        name = "invalid"
        meta = self.mapping(
            top.get("metadata", {}), "metadata", {"name", "namespace", "labels", "annotations"}, {"name"}
        )
        if meta is not None and "name" in meta:
            if isinstance(meta["name"], str) and _NAME.match(meta["name"]):
                name = meta["name"]
            else:
                self.err("metadata.name", "must match [a-z0-9-]{1,63}")
        spec = self.mapping(top.get("spec", {}), "spec", {"mode", "allow", "secrets"}, {"allow"})
        if spec is None:
            return None
        mode = Mode.ENFORCE
        if "mode" in spec:
            try:
                mode = Mode(spec["mode"])
            except ValueError:
                self.err("spec.mode", "must be 'enforce' or 'report'")
        allow_raw = spec.get("allow", [])
        if allow_raw is None:
            allow_raw = []
        if not isinstance(allow_raw, list):
            self.err("spec.allow", "must be a list of rules ([] denies everything)")
            allow_raw = []
        allow = tuple(r for i, item in enumerate(allow_raw) if (r := self.rule(i, item)) is not None)
        secrets_raw = spec.get("secrets", []) or []
        if not isinstance(secrets_raw, list):
            self.err("spec.secrets", "must be a list")
            secrets_raw = []
        secrets = tuple(s for i, item in enumerate(secrets_raw) if (s := self.secret(name, i, item, allow)) is not None)
        self.cross_check(secrets)
        return Policy(name=name, mode=mode, allow=allow, secrets=secrets)

    def host_field(self, raw: Any, field: str) -> str | None:
        if not isinstance(raw, str):
            self.err(field, "must be a string host name")
            return None
        try:
            canon = canonical_host(raw)
        except HostError as e:
            self.err(field, f"{e}")
            return None
        if canon != raw:
            self.err(field, f"not canonical; write {canon!r}")
            return None
        return canon

    def rule(self, index: int, item: Any) -> AllowRule | None:
        field = f"spec.allow[{index}]"
        r = self.mapping(item, field, {"host", "ports", "methods", "paths"}, {"host"})
        if r is None or "host" not in r:
            return None
        raw_host = r["host"]
        wildcard = isinstance(raw_host, str) and raw_host.startswith("*.")
        if wildcard and raw_host in ("*.", "*.."):
            self.err(f"{field}.host", "a wildcard needs a domain after '*.': write '*.example.com'")
            return None
        if raw_host == "*":
            self.err(
                f"{field}.host", "a bare wildcard would allow every host; list hosts, or '*.example.com' for subdomains"
            )
            return None
        if isinstance(raw_host, str) and "*" in (raw_host[2:] if wildcard else raw_host):
            self.err(f"{field}.host", "a wildcard is only allowed as the whole first label: write '*.example.com'")
            return None
        host = self.host_field(raw_host[2:] if wildcard else raw_host, f"{field}.host")
        if host is None:
            return None
        if wildcard:
            if is_ip_literal(host):
                self.err(f"{field}.host", "wildcards apply to host names, not IP addresses")
                return None
            if "." not in host or _PSL.is_public(host):
                self.err(
                    f"{field}.host",
                    f"'*.{host}' covers a public suffix (every site under it); list the exact hosts instead",
                )
                return None
        ports: tuple[int, ...] = (443,)
        if "ports" in r:
            p = r["ports"]
            if not isinstance(p, list) or not p or not all(type(x) is int and 1 <= x <= 65535 for x in p):
                self.err(f"{field}.ports", "must be a non-empty list of port numbers 1..65535, e.g. [443]")
            else:
                ports = tuple(sorted(set(p)))
        methods = None
        if "methods" in r:
            m = self.str_list(r["methods"], f"{field}.methods")
            if m is not None:
                bad = [x for x in m if not _METHOD.match(x)]
                if bad or not m:
                    self.err(f"{field}.methods", f"methods are upper-case tokens like GET, POST; got {bad or m}")
                else:
                    methods = frozenset(m)
        paths = None
        if "paths" in r:
            ps = self.str_list(r["paths"], f"{field}.paths")
            if ps is not None:
                bad = [x for x in ps if not x.startswith("/") or "?" in x]
                if bad or not ps:
                    self.err(
                        f"{field}.paths",
                        f"paths are globs starting with '/' without a query, e.g. '/v1/*'; got {bad or ps}",
                    )
                else:
                    paths = tuple(ps)
        return AllowRule(index, host, wildcard, ports, methods, paths, AllowRule.compile_paths(paths))

    def secret(self, policy_name: str, index: int, item: Any, allow: tuple[AllowRule, ...]) -> SecretBinding | None:
        field = f"spec.secrets[{index}]"
        s = self.mapping(
            item,
            field,
            {"name", "placeholder", "source", "hosts", "headers", "query", "agentEnv"},
            {"name", "source", "hosts"},
        )
        if s is None or "name" not in s:
            return None
        name = s["name"]
        if not isinstance(name, str) or not _NAME.match(name):
            self.err(f"{field}.name", "must match [a-z0-9-]{1,63}")
            return None
        placeholder = s.get("placeholder", default_placeholder(policy_name, name))
        if not isinstance(placeholder, str) or not _PLACEHOLDER.match(placeholder):
            self.err(
                f"{field}.placeholder", "must be 8-200 characters of [A-Za-z0-9._~-], starting with a letter or digit"
            )
        source = self.source(s.get("source"), f"{field}.source")
        hosts: list[BoundHost] = []
        raw_hosts = self.str_list(s.get("hosts", []), f"{field}.hosts") or []
        if not raw_hosts and "hosts" in s:
            self.err(f"{field}.hosts", "a secret must be bound to at least one host")
        for j, entry in enumerate(raw_hosts):
            hf = f"{field}.hosts[{j}]"
            if "*" in entry:
                self.err(
                    hf,
                    "secrets are bound to exact hosts, never wildcards: a wildcard would deliver the key to any subdomain",
                )
                continue
            try:
                raw_host, port = split_authority(entry)
            except HostError as e:
                self.err(hf, f"{e}")
                continue
            host = self.host_field(raw_host.strip("[]") if raw_host.startswith("[") else raw_host, hf)
            if host is None:
                continue
            bound = BoundHost(host, port or 443)
            if not any(r.matches_host(host) and bound.port in r.ports for r in allow):
                self.err(
                    hf,
                    f"no spec.allow rule covers {bound}: add '- host: {host}'"
                    + (f" with ports: [{bound.port}]" if bound.port != 443 else "")
                    + " to spec.allow, or remove the binding",
                )
            hosts.append(bound)
        slots: tuple[Slot, ...] = DEFAULT_SLOTS
        if "headers" in s:
            parsed = self.slots(s["headers"], f"{field}.headers")
            if parsed is not None:
                slots = parsed
        query = s.get("query", False)
        if not isinstance(query, bool):
            self.err(f"{field}.query", "must be true or false")
            query = False
        agent_env: tuple[str, ...] = ()
        if "agentEnv" in s:
            es = self.str_list(s["agentEnv"], f"{field}.agentEnv")
            if es is not None:
                bad = [e for e in es if not _ENV.match(e)]
                if bad:
                    self.err(f"{field}.agentEnv", f"not valid environment variable names: {bad}")
                agent_env = tuple(es)
        if source is None or not isinstance(placeholder, str):
            return None
        return SecretBinding(name, placeholder, source, tuple(hosts), slots, query, agent_env)

    def slots(self, raw: Any, field: str) -> tuple[Slot, ...] | None:
        """``headers: [authorization, {name: x-token, format: "token {}"}]``."""
        if not isinstance(raw, list) or not raw:
            self.err(field, "must be a non-empty list of header names or {name, format} mappings")
            return None
        out: dict[str, Slot] = {}
        for j, item in enumerate(raw):
            f = f"{field}[{j}]"
            name: Any
            fmt: Any
            if isinstance(item, str):
                name, fmt = item, None
            else:
                m = self.mapping(item, f, {"name", "format"}, {"name"})
                if m is None:
                    continue
                name, fmt = m.get("name"), m.get("format")
            if not isinstance(name, str) or not _HEADER.match(name.lower()):
                self.err(f, "a header name is a token like 'authorization' or 'x-api-key'")
                continue
            name = name.lower()
            if name in _FORBIDDEN_SLOTS:
                self.err(f, f"{name!r} frames or routes the request; a secret cannot be swapped into it")
                continue
            if name in out:
                self.err(f, f"{name!r} is listed twice")
                continue
            if fmt is None:
                out[name] = default_slot(name)
                continue
            if (
                not isinstance(fmt, str)
                or fmt.count("{}") != 1
                or "{" in fmt.replace("{}", "")
                or "}" in fmt.replace("{}", "")
                or not all(0x20 <= ord(c) <= 0x7E for c in fmt)
                or fmt != fmt.strip()
                or len(fmt) > 256
            ):
                self.err(
                    f"{f}.format",
                    "a template of printable ASCII with exactly one {} where the placeholder goes, "
                    "no leading or trailing space, e.g. 'token {}' or '{}'",
                )
                continue
            out[name] = Slot(name, fmt)
        return tuple(out.values()) if len(out) == len(raw) else None

    def source(self, raw: Any, field: str) -> SecretSourceRef | None:
        src = self.mapping(raw, field, {"vault", "env", "file"})
        if src is None:
            return None
        if len(src) != 1:
            self.err(field, "must have exactly one of: vault, env, file")
            return None
        kind, value = next(iter(src.items()))
        if kind == "env":
            if not isinstance(value, str) or not _ENV.match(value):
                self.err(f"{field}.env", "must be an environment variable name")
                return None
            return SecretSourceRef("env", env=value)
        if kind == "file":
            if not isinstance(value, str) or not value:
                self.err(f"{field}.file", "must be a file path")
                return None
            return SecretSourceRef("file", file=value)
        v = self.mapping(value, f"{field}.vault", {"mount", "path", "key"}, {"mount", "path", "key"})
        if v is None or not all(isinstance(v.get(k), str) and v.get(k) for k in ("mount", "path", "key")):
            if v is not None:
                self.err(
                    f"{field}.vault",
                    "mount, path and key must be non-empty strings, e.g. {mount: secret, path: agents/openai, key: api_key}",
                )
            return None
        return SecretSourceRef(
            "vault", vault_mount=v["mount"].strip("/"), vault_path=v["path"].strip("/"), vault_key=v["key"]
        )

    def cross_check(self, secrets: tuple[SecretBinding, ...]) -> None:
        seen_names: dict[str, int] = {}
        seen_env: dict[str, str] = {}
        for i, s in enumerate(secrets):
            if s.name in seen_names:
                self.err(f"spec.secrets[{i}].name", f"duplicate secret name {s.name!r}")
            seen_names[s.name] = i
            for e in s.agent_env:
                if e in seen_env:
                    self.err(f"spec.secrets[{i}].agentEnv", f"{e} is already set by secret {seen_env[e]!r}")
                seen_env[e] = s.name
        for i, a in enumerate(secrets):
            for b in secrets[i + 1 :]:
                if a.placeholder == b.placeholder:
                    self.err(
                        f"spec.secrets[{secrets.index(b)}].placeholder",
                        f"duplicate placeholder (also used by {a.name!r})",
                    )
                elif a.placeholder in b.placeholder or b.placeholder in a.placeholder:
                    short, long_ = (a, b) if len(a.placeholder) < len(b.placeholder) else (b, a)
                    self.err(
                        f"spec.secrets[{secrets.index(long_)}].placeholder",
                        f"contains the placeholder of {short.name!r}; placeholders must not contain one another",
                    )
