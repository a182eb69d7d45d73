"""The EgressPolicy wire format as one declarative table, and everything derived from it.

:data:`EGRESS_POLICY` names every field of a policy document with its type, whether it is required,
its default and what it means. Three things are generated from it, so they cannot drift apart:

- the structural check the loader runs on every document before reading any value
  (:func:`validate`: unknown fields, missing fields, types, patterns, ranges; every error it
  reports is marked ``schema=True``);
- the JSON Schema (draft 2020-12) that ``sandgate policy schema`` prints for editors
  (:func:`json_schema`);
- the field reference in ``docs/policy.md`` (:func:`markdown`).

What a table cannot say (hosts in canonical form, wildcards over public suffixes, a secret bound to
a host no rule allows, duplicate names and placeholders, header names a secret may not go into) is
judged by :mod:`proxy.policy.load` after this check passes for the field in question.

Patterns are written once, without anchors, in the subset of regular expressions that Python and
ECMAScript (what editors run) read the same way. The loader matches them against the whole value;
the schema anchors them with ``^(?:...)$`` (ECMAScript's ``$`` is the end of the text).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from proxy.policy.errors import PolicyError, show

__all__ = [
    "API_VERSION",
    "BAD",
    "EGRESS_POLICY",
    "KIND",
    "Bool",
    "Const",
    "Enum",
    "Field",
    "Int",
    "ListOf",
    "MapOf",
    "Obj",
    "OneOf",
    "Str",
    "Type",
    "json_schema",
    "kind_of",
    "markdown",
    "validate",
]

API_VERSION = "sandgate.dev/v1alpha1"
KIND = "EgressPolicy"
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


class _Bad:
    """Stands in the checked document for a value that failed its check (the error is recorded)."""

    def __repr__(self) -> str:
        return "BAD"


BAD: Final = _Bad()
_NO_DEFAULT: Final = object()


def kind_of(value: object) -> str:
    """A value's type as YAML and JSON name it, for messages ("got null", not "got NoneType")."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, bytes):
        return "binary data (!!binary)"
    if isinstance(value, set):
        return "a set (!!set)"
    return type(value).__name__


class _Walk:
    def __init__(self) -> None:
        self.errors: list[PolicyError] = []

    def err(self, path: str, message: str) -> None:
        self.errors.append(PolicyError(path, message, schema=True))


def _child(path: str, key: object) -> str:
    if isinstance(key, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", key):
        return f"{path}.{key}" if path else key
    return f"{path}.{show(key, 40)}" if path else show(key, 40)


def _anchored(core: str) -> str:
    return f"^(?:{core})$"


class Type:
    """A node type of the wire format. ``what`` is the noun phrase messages use ("a port number")."""

    what: str

    def check(self, value: Any, path: str, w: _Walk) -> Any:
        """The value as the loader reads it (defaults filled in), or :data:`BAD` after recording why."""
        raise NotImplementedError

    def schema(self, defs: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def doc(self) -> str:
        """The type for the field reference (Markdown)."""
        raise NotImplementedError

    def json_kinds(self) -> frozenset[str]:
        raise NotImplementedError

    def mismatch(self, value: Any, path: str, w: _Walk) -> _Bad:
        w.err(path, f"must be {self.what}, got {kind_of(value)}")
        return BAD


@dataclass(frozen=True)
class Str(Type):
    pattern: str | None = None  # unanchored; matched against the whole value
    min_len: int = 0
    max_len: int | None = None
    what: str = "a string"
    hint: str = ""  # what a valid value looks like, for a value the pattern refuses
    fix: Callable[[str], str | None] | None = None  # a value-specific suggestion ("write 'GET'")

    def check(self, value: Any, path: str, w: _Walk) -> Any:
        if not isinstance(value, str):
            return self.mismatch(value, path, w)
        ok = True
        if len(value) < self.min_len:
            w.err(path, "must not be empty" + (f": {self.hint}" if self.hint else ""))
            ok = False
        if self.max_len is not None and len(value) > self.max_len:
            w.err(path, f"is {len(value)} characters long; at most {self.max_len}")
            ok = False
        if ok and self.pattern is not None and re.fullmatch(self.pattern, value) is None:
            suggestion = self.fix(value) if self.fix else None
            w.err(path, f"{show(value)} is not {self.what}: {self.hint}" + (f"; {suggestion}" if suggestion else ""))
            ok = False
        return value if ok else BAD

    def schema(self, defs: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "string"}
        if self.min_len:
            out["minLength"] = self.min_len
        if self.max_len is not None:
            out["maxLength"] = self.max_len
        if self.pattern is not None:
            out["pattern"] = _anchored(self.pattern)
        return out

    def doc(self) -> str:
        if self.hint:
            return f"string ({self.hint})"
        return f"string matching `{self.pattern}`" if self.pattern else "string"

    def json_kinds(self) -> frozenset[str]:
        return frozenset({"string"})


@dataclass(frozen=True)
class Const(Type):
    value: str

    @property
    def what(self) -> str:  # type: ignore[override]
        return repr(self.value)

    def check(self, value: Any, path: str, w: _Walk) -> Any:
        if not (isinstance(value, str) and value == self.value):
            w.err(path, f"must be {self.value!r}, got {show(value)}")
            return BAD
        return value

    def schema(self, defs: dict[str, Any]) -> dict[str, Any]:
        return {"const": self.value}

    def doc(self) -> str:
        return f"`{self.value}`"

    def json_kinds(self) -> frozenset[str]:
        return frozenset({"string"})


@dataclass(frozen=True)
class Enum(Type):
    values: tuple[str | None, ...]

    @property
    def what(self) -> str:  # type: ignore[override]
        return "one of " + ", ".join("null" if v is None else repr(v) for v in self.values)

    def check(self, value: Any, path: str, w: _Walk) -> Any:
        if not (value is None or isinstance(value, str)) or value not in self.values:
            close = (
                difflib.get_close_matches(value, [v for v in self.values if v], n=1) if isinstance(value, str) else []
            )
            w.err(path, f"must be {self.what}, got {show(value)}" + (f"; did you mean {close[0]!r}?" if close else ""))
            return BAD
        return value

    def schema(self, defs: dict[str, Any]) -> dict[str, Any]:
        return {"enum": list(self.values)}

    def doc(self) -> str:
        return " | ".join("`null`" if v is None else f"`{v}`" for v in self.values)

    def json_kinds(self) -> frozenset[str]:
        return frozenset("null" if v is None else "string" for v in self.values)


@dataclass(frozen=True)
class Int(Type):
    minimum: int
    maximum: int
    what: str = "an integer"

    def check(self, value: Any, path: str, w: _Walk) -> Any:
        # JSON (and so JSON Schema) has one number type: 443.0 is the integer 443.
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            return self.mismatch(value, path, w)
        if not self.minimum <= value <= self.maximum:
            w.err(path, f"{show(value)} is not {self.what} ({self.minimum}..{self.maximum})")
            return BAD
        return value

    def schema(self, defs: dict[str, Any]) -> dict[str, Any]:
        return {"type": "integer", "minimum": self.minimum, "maximum": self.maximum}

    def doc(self) -> str:
        return f"integer {self.minimum}..{self.maximum}"

    def json_kinds(self) -> frozenset[str]:
        return frozenset({"integer"})


@dataclass(frozen=True)
class Bool(Type):
    what: str = "true or false"

    def check(self, value: Any, path: str, w: _Walk) -> Any:
        return value if isinstance(value, bool) else self.mismatch(value, path, w)

    def schema(self, defs: dict[str, Any]) -> dict[str, Any]:
        return {"type": "boolean"}

    def doc(self) -> str:
        return "boolean"

    def json_kinds(self) -> frozenset[str]:
        return frozenset({"boolean"})


@dataclass(frozen=True)
class ListOf(Type):
    item: Type
    min_items: int = 0
    max_items: int | None = None
    nullable: bool = False  # `allow:` with nothing after it reads as null; it means []
    what: str = "a list"
    empty: str = "must not be empty"

    def check(self, value: Any, path: str, w: _Walk) -> Any:
        if value is None and self.nullable:
            return []
        if not isinstance(value, list):
            return self.mismatch(value, path, w)
        ok = True
        if len(value) < self.min_items:
            w.err(path, self.empty)
            ok = False
        if self.max_items is not None and len(value) > self.max_items:
            w.err(path, f"has {len(value)} entries; at most {self.max_items}")
            ok = False
        items = [self.item.check(v, f"{path}[{i}]", w) for i, v in enumerate(value)]
        return items if ok else BAD

    def schema(self, defs: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"type": ["array", "null"] if self.nullable else "array"}
        out["items"] = self.item.schema(defs)
        if self.min_items:
            out["minItems"] = self.min_items
        if self.max_items is not None:
            out["maxItems"] = self.max_items
        return out

    def doc(self) -> str:
        return f"list of {self.item.doc()}" + (f", at least {self.min_items}" if self.min_items else "")

    def json_kinds(self) -> frozenset[str]:
        return frozenset({"array", "null"} if self.nullable else {"array"})


@dataclass(frozen=True)
class MapOf(Type):
    value: Type
    what: str = "a mapping"

    def check(self, value: Any, path: str, w: _Walk) -> Any:
        if not isinstance(value, dict):
            return self.mismatch(value, path, w)
        out: dict[str, Any] = {}
        ok = True
        for k, v in value.items():
            if not isinstance(k, str):
                w.err(_child(path, k), f"keys here are strings, got {kind_of(k)}; quote it")
                ok = False
                continue
            out[k] = self.value.check(v, _child(path, k), w)
        return out if ok else BAD

    def schema(self, defs: dict[str, Any]) -> dict[str, Any]:
        return {"type": "object", "propertyNames": {"type": "string"}, "additionalProperties": self.value.schema(defs)}

    def doc(self) -> str:
        return f"map of string to {self.value.doc()}"

    def json_kinds(self) -> frozenset[str]:
        return frozenset({"object"})


@dataclass(frozen=True)
class Field:
    name: str
    type: Type
    doc: str
    required: bool = False
    default: Any = _NO_DEFAULT  # a JSON value, filled in when the field is absent
    default_doc: str = ""  # for defaults that are not a constant ("derived from the name")


@dataclass(frozen=True)
class Obj(Type):
    name: str  # its name in the schema's $defs and the reference's headings
    fields: tuple[Field, ...]
    doc_text: str = ""
    min_props: int = 0
    max_props: int | None = None
    props_message: str = ""  # for min/max_props, e.g. "must have exactly one of: vault, env, file"
    what: str = "a mapping"
    root_path: str = "document"  # the field name of errors about the whole value at the root

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    def field(self, name: str) -> Field:
        return next(f for f in self.fields if f.name == name)

    def check(self, value: Any, path: str, w: _Walk) -> Any:
        """The known fields, checked, defaults filled in; unknown and missing ones are reported and left
        out, so the loader still judges the rest of the mapping."""
        if not isinstance(value, dict):
            return self.mismatch(value, path or self.root_path, w)
        for key in value:
            if key not in self.names:
                close = difflib.get_close_matches(key, self.names, n=1, cutoff=0.6) if isinstance(key, str) else []
                hint = f"did you mean {close[0]!r}? " if close else ""
                w.err(_child(path, key), f"unknown field; {hint}known fields: {', '.join(self.names)}")
        if len(value) < self.min_props or (self.max_props is not None and len(value) > self.max_props):
            w.err(path or self.root_path, self.props_message)
        out: dict[str, Any] = {}
        for f in self.fields:
            if f.name in value:
                out[f.name] = f.type.check(value[f.name], _child(path, f.name), w)
            elif f.required:
                w.err(_child(path, f.name), "required field is missing")
            elif f.default is not _NO_DEFAULT:
                out[f.name] = _copy(f.default)
        return out

    def schema(self, defs: dict[str, Any]) -> dict[str, Any]:
        if self.name not in defs:
            defs[self.name] = {}  # reserve the name first: a type may refer to itself
            defs[self.name] = self.body(defs)
        return {"$ref": f"#/$defs/{self.name}"}

    def body(self, defs: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "object"}
        if self.doc_text:
            out["description"] = self.doc_text
        props: dict[str, Any] = {}
        for f in self.fields:
            prop = f.type.schema(defs)
            prop["description"] = f.doc + (f" Default: {f.default_doc}." if f.default_doc else "")
            if f.default is not _NO_DEFAULT:
                prop["default"] = f.default
            props[f.name] = prop
        out["properties"] = props
        required = [f.name for f in self.fields if f.required]
        if required:
            out["required"] = required
        if self.min_props:
            out["minProperties"] = self.min_props
        if self.max_props is not None:
            out["maxProperties"] = self.max_props
        out["additionalProperties"] = False
        return out

    def doc(self) -> str:
        return f"[{self.name}](#{self.name.lower()})"

    def json_kinds(self) -> frozenset[str]:
        return frozenset({"object"})


@dataclass(frozen=True)
class OneOf(Type):
    """One of several types that JSON tells apart by kind (a string, or a mapping)."""

    alternatives: tuple[Type, ...]
    what: str = "one of several forms"

    def __post_init__(self) -> None:
        kinds = [k for a in self.alternatives for k in a.json_kinds()]
        assert len(kinds) == len(set(kinds)), "the alternatives of a OneOf must differ in their JSON kind"

    def check(self, value: Any, path: str, w: _Walk) -> Any:
        kind = _json_kind(value)
        for alt in self.alternatives:
            if kind in alt.json_kinds():
                return alt.check(value, path, w)
        return self.mismatch(value, path, w)

    def schema(self, defs: dict[str, Any]) -> dict[str, Any]:
        return {"anyOf": [a.schema(defs) for a in self.alternatives]}

    def doc(self) -> str:
        return " or ".join(a.doc() for a in self.alternatives)

    def json_kinds(self) -> frozenset[str]:
        return frozenset(k for a in self.alternatives for k in a.json_kinds())


def _json_kind(value: object) -> str | None:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        return "integer"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return None


def _copy(value: Any) -> Any:
    if isinstance(value, list):
        return [_copy(v) for v in value]
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    return value


def validate(value: Any, root: Obj) -> tuple[Any, list[PolicyError]]:
    """Check ``value`` against ``root``: the checked value (with :data:`BAD` where a check failed
    and defaults filled in) and every structural error, each with ``schema=True``."""
    w = _Walk()
    return root.check(value, "", w), w.errors


def json_schema(root: Obj, *, title: str, description: str) -> dict[str, Any]:
    defs: dict[str, Any] = {}
    body = root.body(defs)
    body.pop("description", None)
    return {"$schema": JSON_SCHEMA_DIALECT, "title": title, "description": description, **body, "$defs": defs}


def markdown(root: Obj) -> str:
    """One table per mapping type, the root first, in the order the fields are declared."""
    seen: list[Obj] = []

    def collect(t: Type) -> None:
        if isinstance(t, Obj):
            if t in seen:
                return
            seen.append(t)
            for f in t.fields:
                collect(f.type)
        elif isinstance(t, ListOf):
            collect(t.item)
        elif isinstance(t, MapOf):
            collect(t.value)
        elif isinstance(t, OneOf):
            for a in t.alternatives:
                collect(a)

    collect(root)
    out: list[str] = []
    for obj in seen:
        out += [f"### {obj.name}", ""]
        if obj.doc_text:
            out += [obj.doc_text, ""]
        out += ["| Field | Type | Default | Meaning |", "| --- | --- | --- | --- |"]
        for f in obj.fields:
            if f.required:
                default = "required"
            elif f.default_doc:
                default = f.default_doc
            elif f.default is not _NO_DEFAULT:
                default = f"`{_inline(f.default)}`"
            else:
                default = "none"
            cells = (f"`{f.name}`", f.type.doc(), default, f.doc)
            out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        out.append("")
    return "\n".join(out)


def _inline(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_inline(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# --- The EgressPolicy table -------------------------------------------------------------------

NAME = r"[a-z0-9-]{1,63}"
PLACEHOLDER = r"[A-Za-z0-9][A-Za-z0-9._~-]{7,199}"
HEADER = r"[A-Za-z0-9!#$%&'*+.^_`|~-]+"  # an RFC 9110 token
ENV_VAR = r"[A-Za-z_][A-Za-z0-9_]*"
METHOD = r"[A-Z]+(?:-[A-Z]+)*"
PATH_GLOB = r"/[!->@-~]*"  # printable ASCII without space and '?': what a request path can hold
# Printable ASCII but braces, exactly one {} where the placeholder goes, no space at either end.
SLOT_FORMAT = r"(?:[!-z|~][ -z|~]*)?\{\}(?:[ -z|~]*[!-z|~])?"
DNS_LABEL = r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?"
MAX_SECRETS = 256


def _method_fix(value: str) -> str | None:
    upper = value.upper()
    return f"write {show(upper)}" if upper != value and re.fullmatch(METHOD, upper) else None


_HOST_DOC = (
    "Canonical form: lowercase A-labels (IDNA 2008), no trailing dot, no port, no scheme; an IPv4 "
    "dotted quad or an IPv6 literal without brackets."
)

RULE = Obj(
    "Rule",
    (
        Field(
            "host",
            Str(min_len=1, what="a host name", hint="write 'api.example.com' or '*.example.com'"),
            "The host this rule allows: an exact name, '*.example.com' for every subdomain at any depth (never "
            "the apex, never a public suffix), or an IP literal that matches only itself. " + _HOST_DOC,
            required=True,
        ),
        Field(
            "ports",
            ListOf(
                Int(1, 65535, what="a port number"),
                min_items=1,
                what="a list of port numbers, e.g. [443]",
                empty="must list at least one port, e.g. [443]; remove the field for the default",
            ),
            "The destination ports this rule allows.",
            default=[443],
        ),
        Field(
            "methods",
            ListOf(
                Str(
                    METHOD, what="an HTTP method", hint="methods are upper-case tokens like GET, POST", fix=_method_fix
                ),
                min_items=1,
                what="a list of HTTP methods, e.g. [GET, POST]",
                empty="must list at least one method; remove the field to allow any",
            ),
            "The request methods this rule allows. Methods outside RFC 9110, PATCH and the WebDAV methods "
            "are accepted with a warning. A method the request names for itself must be allowed too: a '_method' "
            "(or '_HttpMethod', or '*method*override*') parameter of the query or of a POST's form, JSON or "
            "multipart body, in any spelling Rails, Laravel, Spring, Symfony, Express or ASP.NET read (one that "
            "does not parse names a method no rule allows); such a POST body is held whole before it leaves, one "
            "that would stream (chunked, or over 256 KiB) too, up to --max-request-body. The header forms "
            "(X-HTTP-Method-Override...) are removed.",
            default_doc="any method",
        ),
        Field(
            "paths",
            ListOf(
                Str(
                    PATH_GLOB,
                    what="a path glob",
                    hint="a glob over the path that starts with '/', printable ASCII without spaces or a query "
                    "(percent-encode the rest), e.g. '/v1/*'",
                ),
                min_items=1,
                what="a list of path globs, e.g. ['/v1/*']",
                empty="must list at least one path; remove the field to allow any",
            ),
            "Globs over the request path, without the query. '*' matches any characters, '/' included; '?' is not "
            "a wildcard (it would start a query). A path with dot segments (also with parameters, '..;x', as servlet containers read them, or "
            "of more dots, '...') or encoded '.', '/' or '\\', in any reading a server may make (decoded twice, '%u002e', "
            "a full-width full stop, an overlong UTF-8 '.', an escaped NUL), never matches.",
            default_doc="any path",
        ),
    ),
    "One allowlist entry: a request is allowed when one rule matches its host, port, method and path.",
)

VAULT = Obj(
    "VaultSource",
    (
        Field("mount", Str(min_len=1, what="a mount path"), "The KV v2 mount, e.g. 'secret'.", required=True),
        Field("path", Str(min_len=1, what="a secret path"), "The secret's path under the mount.", required=True),
        Field(
            "key", Str(min_len=1, what="a key name"), "The key inside the secret whose value is used.", required=True
        ),
    ),
    "A value in Vault/OpenBao KV version 2, read with the proxy's own Vault identity.",
)

SOURCE = Obj(
    "Source",
    (
        Field("vault", VAULT, "Read the value from Vault/OpenBao (the cluster default)."),
        Field(
            "env",
            Str(ENV_VAR, what="an environment variable name", hint="e.g. OPENAI_API_KEY"),
            "Read the value from this variable of the proxy's environment (local runs).",
        ),
        Field(
            "file",
            Str(min_len=1, what="a file path"),
            "Read the value from this file, which only the proxy can read (local runs).",
        ),
    ),
    "Where the real value comes from: exactly one of vault, env, file.",
    min_props=1,
    max_props=1,
    props_message="must have exactly one of: vault, env, file",
)

HEADER_NAME = Str(HEADER, what="a header name", hint="a header name is a token like 'authorization' or 'x-api-key'")

SLOT = Obj(
    "Slot",
    (
        Field("name", HEADER_NAME, "The header name (case-insensitive).", required=True),
        Field(
            "format",
            Str(
                SLOT_FORMAT,
                max_len=256,
                what="a slot template",
                hint="a template of printable ASCII with exactly one {} where the placeholder goes and no space at "
                "either end, e.g. 'token {}' or '{}'",
            ),
            "The exact shape of the header's value, with one {} where the placeholder stands. The rest must match "
            "exactly, except the scheme of an authorization value (the text before the first space), which is "
            "matched case-insensitively.",
            default_doc="'Bearer {}' (and Basic credentials) for authorization, '{}' for any other header",
        ),
    ),
    "A header a secret is swapped into, with the exact shape of its value.",
)

SECRET = Obj(
    "Secret",
    (
        Field(
            "name",
            Str(NAME, what="a secret name", hint="1-63 of a-z, 0-9 and '-', e.g. 'openai'"),
            "Names the secret in metrics, audit lines and `${placeholder:NAME}` in test cases.",
            required=True,
        ),
        Field(
            "placeholder",
            Str(
                PLACEHOLDER,
                what="a placeholder",
                hint="8-200 characters of [A-Za-z0-9._~-], starting with a letter or digit",
            ),
            "What the agent holds instead of the real value. Placeholders of one policy must not contain one another.",
            default_doc="`sandgate-<name>-<16 hex digits>`, stable per policy and secret",
        ),
        Field("source", SOURCE, "Where the real value comes from.", required=True),
        Field(
            "hosts",
            ListOf(
                Str(min_len=1, what="a host", hint="write 'api.example.com' or 'api.example.com:8443'"),
                min_items=1,
                what="a list of hosts, e.g. [api.openai.com]",
                empty="a secret must be bound to at least one host",
            ),
            "The only destinations the real value is sent to: exact hosts, optionally host:port (default port 443), "
            "never wildcards; each must be allowed by a rule in spec.allow. A placeholder sent anywhere else is "
            "refused (secret_not_bound).",
            required=True,
        ),
        Field(
            "headers",
            ListOf(
                OneOf((HEADER_NAME, SLOT), what="a header name or a {name, format} mapping"),
                min_items=1,
                what="a list of header names or {name, format} mappings",
                empty="must list at least one header; remove the field for the default [authorization, x-api-key]",
            ),
            "The slots the placeholder is swapped in: a header name (its default template) or {name, format}. "
            "A placeholder anywhere else in a request to a bound host is not swapped.",
            default=["authorization", "x-api-key"],
        ),
        Field("query", Bool(), "Also swap a placeholder that is a whole query-string value.", default=False),
        Field(
            "agentEnv",
            ListOf(
                Str(ENV_VAR, what="an environment variable name", hint="e.g. OPENAI_API_KEY"), what="a list of names"
            ),
            "Environment variables that hold the placeholder in the agent's containers (set by the injector).",
            default=[],
        ),
    ),
    "A real credential, the placeholder that stands for it and the only places it is swapped in.",
)

METADATA = Obj(
    "Metadata",
    (
        Field(
            "name",
            Str(NAME, what="a policy name", hint="1-63 of a-z, 0-9 and '-', e.g. 'coding-agent'"),
            "The policy's name; in a cluster, the name of its ConfigMap and of the pod annotation sandgate.dev/policy.",
            required=True,
        ),
        Field(
            "namespace",
            Str(DNS_LABEL, max_len=63, what="a namespace name", hint="a DNS label, e.g. 'agents'"),
            "Informational; in a cluster the ConfigMap's namespace is what counts.",
        ),
        Field("labels", MapOf(Str()), "Informational, as in Kubernetes."),
        Field("annotations", MapOf(Str()), "Informational, as in Kubernetes."),
    ),
)

SPEC = Obj(
    "Spec",
    (
        Field(
            "mode",
            Enum(("enforce", "report")),
            "enforce: deny what no rule allows. report: let those requests through and log and count them as "
            "'reported' (allowlist reasons and secret_not_bound only; the other rules are enforced in both modes).",
            default="enforce",
        ),
        Field(
            "allow",
            ListOf(RULE, nullable=True, what="a list of rules ([] denies everything)"),
            "The allowlist. Everything it does not match is denied; [] (or an empty value) denies everything.",
            required=True,
        ),
        Field(
            "secrets",
            ListOf(
                SECRET,
                nullable=True,
                max_items=MAX_SECRETS,
                what="a list of secrets",
            ),
            f"The secrets swapped into requests (at most {MAX_SECRETS}).",
            default=[],
        ),
    ),
)

EGRESS_POLICY = Obj(
    "EgressPolicy",
    (
        Field("apiVersion", Const(API_VERSION), "The version of this format.", required=True),
        Field("kind", Const(KIND), "Always EgressPolicy.", required=True),
        Field("metadata", METADATA, "Names the policy.", required=True),
        Field("spec", SPEC, "What the sandbox may reach and which secrets it may use there.", required=True),
    ),
    "A Sandgate egress policy: the hosts a sandbox may reach and the secrets swapped in on the way.",
    root_path="policy",
)
