"""``sandgate policy check|test|schema``: policy work offline, for a policy repository's CI.

``check`` judges policy files the way the proxy and the webhook will; ``test`` runs request cases
through the proxy's own ``decide`` and ``plan_swap`` (via :func:`simulate`); ``schema`` prints the
JSON Schema editors use. Inputs are files or ``-`` (stdin), each holding an EgressPolicy, the
ConfigMap the cluster reads it from, or several of those as a multi-document YAML stream.

Exit status, for both ``check`` and ``test``: 0 everything passed; 1 the run happened and found a
problem (an invalid policy, a warning under ``--strict``, a failing case); 2 the run could not happen
(an unreadable file, a bad cases file, an invalid policy under test, bad flags).

``test`` has no network and no secret values, so it cannot judge what depends on them: where a
name resolves (private_address) and whether a secret's value can be fetched (secret_unavailable,
secret_invalid).
"""

from __future__ import annotations

import difflib
import json
import re
import sys
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO, Any

import httptools

from injector import constants as k
from proxy.core.authority import ConnFacts, Refusal, resolve_authority
from proxy.core.http1 import check_request
from proxy.core.swap import placeholders_in, plan_swap
from proxy.infile import read_regular
from proxy.policy.decide import RequestFacts, decide, deny, overridden
from proxy.policy.errors import PolicyError, PolicyInvalid, show
from proxy.policy.hosts import HostError, canonical_host, is_ip_literal
from proxy.policy.load import KIND, parse_policy, policy_from_document
from proxy.policy.model import Decision, Policy, PolicyWarning, Reason, Verdict
from proxy.policy.override import query_methods
from proxy.policy.schema import (
    BAD,
    EGRESS_POLICY,
    HEADER,
    HEADER_NAME,
    NAME,
    Enum,
    Field,
    ListOf,
    MapOf,
    Obj,
    OneOf,
    Str,
    json_schema,
    validate,
)
from proxy.policy.yamlsafe import MAX_BYTES, decode, load_documents
from proxy.runtime import Limits

__all__ = ["EXIT_CANNOT_RUN", "EXIT_FAILED", "EXIT_OK", "check", "schema", "simulate", "test"]

EXIT_OK, EXIT_FAILED, EXIT_CANNOT_RUN = 0, 1, 2
STDIN = "-"

_PH_REF = re.compile(r"\$\{placeholder:([^}]*)\}")


# --- reading policy files -----------------------------------------------------------------------


class CannotRead(Exception):
    def __init__(self, label: str, message: str) -> None:
        super().__init__(f"{label}: {message}")
        self.label = label
        self.message = message


@dataclass
class Document:
    """One policy found in an input: a whole file, one document of a stream, or a ConfigMap."""

    label: str  # "FILE", "FILE#N" for the Nth document of a stream, "... (ConfigMap NAME)"
    policy: Policy | None = None
    errors: list[PolicyError] = field(default_factory=list)
    warnings: list[PolicyWarning] = field(default_factory=list)
    skipped: str | None = None  # why this document is not a policy (another object of a manifest)

    @property
    def valid(self) -> bool:
        return self.policy is not None and not self.errors


def read_input(name: str, stdin: IO[bytes]) -> tuple[str, bytes]:
    """(label, bytes) of a file, or of stdin for ``-``; at most one byte over the size limit."""
    if name == STDIN:
        return "<stdin>", stdin.read(MAX_BYTES + 1)
    try:
        return name, read_regular(name, MAX_BYTES)  # (never a FIFO's read that waits for good: red team 63)
    except OSError as e:
        raise CannotRead(name, f"cannot read: {e.strerror or e}") from None


def documents(label: str, data: bytes) -> list[Document]:
    """Every policy in one input, each judged on its own."""
    try:
        docs = load_documents(decode(data, label), label)
    except PolicyInvalid as e:
        return [Document(label, errors=e.errors)]
    if not docs:
        return [Document(label, errors=[PolicyError("policy", "the file is empty; write an EgressPolicy")])]
    out: list[Document] = []
    for n, doc in enumerate(docs, 1):
        where = label if len(docs) == 1 else f"{label}#{n}"
        if isinstance(doc, dict) and doc.get("kind") == "List" and isinstance(doc.get("items"), list):
            # what `kubectl get configmaps -l sandgate.dev/policy=true -o yaml` prints
            out += [_document(f"{where} items[{i}]", item, single=False) for i, item in enumerate(doc["items"])]
        else:
            out.append(_document(where, doc, single=len(docs) == 1))
    if all(d.skipped for d in out):
        out.append(
            Document(label, errors=[PolicyError("policy", "holds no EgressPolicy and no ConfigMap with a policy.yaml")])
        )
    return out


def _document(label: str, doc: Any, *, single: bool) -> Document:
    if isinstance(doc, dict) and doc.get("kind") == "ConfigMap":
        return _configmap(label, doc)
    if not single and isinstance(doc, dict) and not _looks_like_policy(doc):
        return Document(label, skipped=f"a {show(doc.get('kind'), 40)}, not a policy")
    try:
        policy = policy_from_document(doc, label)
    except PolicyInvalid as e:
        return Document(label, errors=e.errors)
    return Document(label, policy=policy, warnings=list(policy.warnings))


def _looks_like_policy(doc: dict[Any, Any]) -> bool:
    """In a multi-document manifest other objects are skipped; anything that may be a policy with
    a typo is judged as a policy, so a typo can never make a policy silently disappear."""
    kind, api = doc.get("kind"), doc.get("apiVersion")
    if not isinstance(kind, str):
        return True
    if isinstance(api, str) and api.startswith("sandgate.dev/"):
        return True
    return bool(difflib.get_close_matches(kind, [KIND], n=1, cutoff=0.7))


def _configmap(label: str, cm: dict[Any, Any]) -> Document:
    meta = _mapping(cm.get("metadata"))
    name = meta.get("name")
    label = f"{label} (ConfigMap {name if isinstance(name, str) else '?'})"
    marked = _mapping(meta.get("labels")).get(k.POLICY_CONFIGMAP_LABEL)
    text = _mapping(cm.get("data")).get(k.POLICY_CONFIGMAP_KEY)
    if marked is None and text is None:
        return Document(label, skipped=f"a ConfigMap without {k.POLICY_CONFIGMAP_KEY}, not a policy")
    if marked is not None and marked != "true":
        if isinstance(marked, bool):
            return Document(
                label,
                errors=[
                    PolicyError(
                        f"metadata.labels.{k.POLICY_CONFIGMAP_LABEL}",
                        'label values are strings; write "true" (quoted): Kubernetes refuses a boolean',
                    )
                ],
            )
        return Document(label, skipped=f'labelled {k.POLICY_CONFIGMAP_LABEL}: {show(marked)}, not "true"')
    if not isinstance(text, str):
        return Document(
            label,
            errors=[
                PolicyError(
                    f"data.{k.POLICY_CONFIGMAP_KEY}",
                    "a policy ConfigMap holds the EgressPolicy as text under this key (`policy.yaml: |`)",
                )
            ],
        )
    try:
        policy = parse_policy(text, source=label)
    except PolicyInvalid as e:
        return Document(label, errors=[_in_key(err) for err in e.errors])
    doc = Document(label, policy=policy, warnings=list(policy.warnings))
    if marked is None:
        doc.warnings.append(
            PolicyWarning(
                f"metadata.labels.{k.POLICY_CONFIGMAP_LABEL}",
                'missing: the webhook and the injector ignore this ConfigMap; add the label with the value "true"',
            )
        )
    if policy.name != name:
        doc.errors.append(
            PolicyError(
                "metadata.name",
                f"the ConfigMap is named {show(name)} and its policy {policy.name!r}; the webhook refuses a "
                "ConfigMap whose policy has another name: name them the same",
            )
        )
    return doc


def _mapping(value: Any) -> dict[Any, Any]:
    return value if isinstance(value, dict) else {}


def _in_key(err: PolicyError) -> PolicyError:
    """Positions in a ConfigMap's policy count from the first line of data.policy.yaml."""
    if err.field in ("yaml", "file", "policy"):
        return PolicyError(f"data.{k.POLICY_CONFIGMAP_KEY}", f"{err.message}", err.schema)
    return err


# --- check ----------------------------------------------------------------------------------------


def check(
    files: Sequence[str],
    *,
    strict: bool = False,
    output: str = "text",
    junit: str | None = None,
    stdout: IO[str] | None = None,
    stdin: IO[bytes] | None = None,
) -> int:
    out = stdout or sys.stdout
    docs: list[Document] = []
    unreadable = False
    if sum(f == STDIN for f in files) > 1:
        return _usage(out, output, "check", "'-' (stdin) can be given once")
    for name in files:
        try:
            label, data = read_input(name, stdin or sys.stdin.buffer)
        except CannotRead as e:
            unreadable = True
            docs.append(Document(e.label, errors=[PolicyError("file", e.message)]))
            continue
        docs.extend(documents(label, data))

    def failed(d: Document) -> bool:
        return d.skipped is None and (not d.valid or (strict and bool(d.warnings)))

    code = EXIT_CANNOT_RUN if unreadable else EXIT_FAILED if any(failed(d) for d in docs) else EXIT_OK
    if junit is not None and not _write_junit(
        junit, "sandgate policy check", [_check_case(d, failed(d)) for d in docs]
    ):
        code = EXIT_CANNOT_RUN
    if output == "json":
        json.dump({"documents": [_doc_json(d) for d in docs], "exit": code}, out, indent=2)
        out.write("\n")
        return code
    for d in docs:
        if d.skipped:
            print(f"{d.label}: skipped ({d.skipped})", file=out)
            continue
        for err in d.errors:
            print(f"{d.label}: {err}", file=out)
        for w in d.warnings:
            print(f"{d.label}: warning: {w}", file=out)
        if d.valid and d.policy is not None:
            p = d.policy
            print(
                f"{d.label}: {'ok' if not failed(d) else 'fails under --strict'} (policy {p.name!r}: "
                f"{_count(len(p.allow), 'allow rule')}, {_count(len(p.secrets), 'secret')}, mode {p.mode})",
                file=out,
            )
    judged = [d for d in docs if d.skipped is None]
    bad = sum(failed(d) for d in judged)
    print(
        f"{_count(len(judged), 'policy', 'policies')} checked: {len(judged) - bad} passed, {bad} failed"
        + (f", {_count(sum(len(d.warnings) for d in judged), 'warning')}" if any(d.warnings for d in judged) else ""),
        file=out,
    )
    return code


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else many or one + 's'}"


def _doc_json(d: Document) -> dict[str, Any]:
    return {
        "source": d.label,
        "policy": d.policy.name if d.policy else None,
        "valid": None if d.skipped else d.valid,
        "skipped": d.skipped,
        "errors": [{"field": e.field, "message": e.message} for e in d.errors],
        "warnings": [{"field": w.field, "message": w.message} for w in d.warnings],
    }


def _check_case(d: Document, failed: bool) -> _JUnitCase:
    lines = [f"{e}" for e in d.errors] + [f"warning: {w}" for w in d.warnings]
    return _JUnitCase(
        name=d.label,
        classname="policy",
        failure=("; ".join(lines) or "fails") if failed else None,
        skipped=d.skipped,
        output="\n".join(lines),
    )


def _usage(out: IO[str], output: str, command: str, message: str) -> int:
    if output == "json":
        json.dump({"errors": [{"source": command, "field": "arguments", "message": message}], "exit": 2}, out, indent=2)
        out.write("\n")
    else:
        print(f"sandgate policy {command}: {message}", file=sys.stderr)
    return EXIT_CANNOT_RUN


# --- schema ---------------------------------------------------------------------------------------


def schema() -> dict[str, Any]:
    """The JSON Schema of an EgressPolicy document, generated from the loader's own field table."""
    return json_schema(
        EGRESS_POLICY,
        title="Sandgate EgressPolicy (sandgate.dev/v1alpha1)",
        description="The hosts a sandbox may reach and the secrets swapped in on the way. Generated by "
        "`sandgate policy schema` from the table the loader validates with; `sandgate policy check` also judges "
        "what a schema cannot (canonical hosts, public-suffix wildcards, secret bindings the allowlist does not "
        "cover, duplicates).",
    )


def schema_text() -> str:
    return json.dumps(schema(), indent=2, ensure_ascii=False) + "\n"


# --- test -----------------------------------------------------------------------------------------

_SECRET_NAME = Str(NAME, what="a secret name", hint="the name of a secret of the policy")
_POLICY_NAME = Str(NAME, what="a policy name", hint="the metadata.name of a policy in the policy file")

REQUEST = Obj(
    "Request",
    (
        Field("method", Str(HEADER, what="an HTTP method"), "The request method.", default="GET"),
        Field(
            "url",
            Str(min_len=1, what="a URL", hint="e.g. https://api.openai.com/v1/models"),
            "An absolute http:// or https:// URL; ${placeholder:NAME} stands for a secret's placeholder.",
            required=True,
        ),
        Field(
            "headers",
            OneOf(
                (
                    MapOf(Str(what="a header value"), what="a mapping of header names to values"),
                    ListOf(
                        Obj(
                            "Header",
                            (
                                Field("name", HEADER_NAME, "The header name.", required=True),
                                Field("value", Str(what="a header value"), "Its value.", required=True),
                            ),
                        ),
                        what="a list of {name, value}",
                    ),
                ),
                what="a mapping of header names to values, or a list of {name, value} (to repeat a header)",
            ),
            "Request headers; values may use ${placeholder:NAME}.",
            default={},
        ),
    ),
)
EXPECT = Obj(
    "Expect",
    (
        Field("decision", Enum(tuple(v.value for v in Verdict)), "allowed, denied or reported."),
        Field("reason", Enum((*(r.value for r in Reason), None)), "The reason; null for none (an allowed request)."),
        Field("swapped", ListOf(_SECRET_NAME, what="a list of secret names"), "The secrets swapped into the request."),
        Field(
            "secret", _SECRET_NAME, "The secret a refusal is about (e.g. the one sent to a host it is not bound to)."
        ),
    ),
    min_props=1,
    props_message="must state at least one of: decision, reason, swapped, secret",
)
CASE = Obj(
    "Case",
    (
        Field("name", Str(min_len=1, what="a case name"), "Names the case in the output.", default_doc="cases[N]"),
        Field("policy", _POLICY_NAME, "Which policy of a file with several runs this case."),
        Field("request", REQUEST, "The request to simulate.", required=True),
        Field("expect", EXPECT, "What the proxy must decide.", required=True),
    ),
)
CASES = Obj(
    "Cases",
    (
        Field("policy", _POLICY_NAME, "The policy every case runs against, unless a case names one."),
        Field(
            "cases",
            ListOf(CASE, min_items=1, what="a list of cases", empty="has no cases: a test of nothing would pass"),
            "The cases.",
            required=True,
        ),
    ),
    root_path="cases file",
)


@dataclass
class _Case:
    name: str
    policy_label: str
    policy: Policy
    method: str
    url: str
    headers: list[tuple[str, str]]
    expect: dict[str, Any]


@dataclass
class _Result:
    case: _Case
    decision: Decision
    swapped: list[str]
    secret: str | None
    failures: list[str]

    @property
    def line(self) -> str:
        d = self.decision
        return (
            d.verdict.value
            + (f" ({d.reason.value})" if d.reason else "")
            + (f" swapped={self.swapped}" if self.swapped else "")
            + (f" secret={self.secret}" if self.secret else "")
        )


def simulate(
    policy: Policy, method: str, url: str, headers: list[tuple[str, str]]
) -> tuple[Decision, list[str], str | None]:
    """(decision, swapped secret names, secret the decision is about) for the request a client
    makes of ``url`` through the proxy: over a CONNECT tunnel with TLS for https (SNI the URL's host
    name), in absolute form for http, with a Host field of the URL's authority unless ``headers``
    has its own. The data path's own steps in its order (:mod:`proxy.datapath.client` and
    :mod:`proxy.datapath.exchange`): the CONNECT's destination, its parser (:func:`_parsed`), the
    one authority, the allowlist, the head's framing and upgrade (limits at their defaults), the
    swap. (Red team 63: judged by the URL alone, ``"Bearer <placeholder> "`` was said not swapped
    where the proxy, whose parser drops the blanks, swapped it; a Host naming another host,
    userinfo, ``Upgrade: h2c`` and ``Content-Length: abc`` were said allowed.) ``tests/proxy/
    test_policytool_agrees.py`` holds it to a running proxy on generated requests."""
    method = method.upper()
    try:
        parts = urllib.parse.urlsplit(url)
        host = canonical_host(parts.hostname or "")
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except (HostError, ValueError):
        return Decision(Verdict.DENIED, Reason.MALFORMED_REQUEST), [], None
    if parts.username is not None or parts.password is not None:
        return deny(policy, Reason.MALFORMED_REQUEST), [], None  # (as a request target with userinfo is)
    authority = parts.netloc.rpartition("@")[2]
    origin = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    wire = origin if parts.scheme == "https" else f"http://{authority}{origin}"
    sent = headers if any(n.lower() == "host" for n, _ in headers) else [("Host", authority), *headers]
    parsed = _parsed(method, wire, sent)
    if parts.scheme == "https":
        # The CONNECT first: one outside the allowlist is answered, and every request inside it is
        # refused for that, the secret whose placeholder it carried named (when the head parsed).
        tunnel = decide(policy, RequestFacts(host, port))
        if not tunnel.forwards:
            present = placeholders_in(policy.secrets, origin, parsed[0]) if parsed is not None else []
            return tunnel, [], present[0].name if present else None
    if parsed is None:
        return deny(policy, Reason.MALFORMED_REQUEST), [], None
    fields, upgrade = parsed
    if parts.scheme == "https":
        conn = ConnFacts(True, connect=(host, port), sni=None if is_ip_literal(host) else host)
    else:
        conn = ConnFacts(False)
    auth = resolve_authority(conn, method, wire, [v for n, v in fields if n.lower() == "host"])
    if isinstance(auth, Refusal):
        return deny(policy, auth.reason), [], None
    path = auth.target.split("?", 1)[0]
    facts = RequestFacts(auth.host, auth.port, method, path)
    decision = overridden(policy, facts, query_methods(auth.target.partition("?")[2]), decide(policy, facts))
    if not decision.forwards:
        secret = None
        if decision.reason in (Reason.HOST_NOT_ALLOWED, Reason.PORT_NOT_ALLOWED):
            present = placeholders_in(policy.secrets, auth.target, fields)
            secret = present[0].name if present else None
        return decision, [], secret
    check = check_request(method, "1.1", fields, Limits().max_request_body)
    if check.refusal is not None:
        return Decision(Verdict.DENIED, check.refusal[0]), [], None
    if check.websocket and not upgrade:
        return Decision(Verdict.DENIED, Reason.MALFORMED_REQUEST), [], None  # (an Upgrade without Connection: upgrade)
    result = plan_swap(
        policy,
        host=auth.host,
        port=auth.port,
        tls=auth.tls,
        method=method,
        target=auth.target,
        headers=fields,
        query=urllib.parse.parse_qsl(auth.target.partition("?")[2], keep_blank_values=True),
        lookup=lambda name: f"<real value of {name}>",
    )
    if result.error is not None:
        d = deny(policy, result.error) if result.error.reportable else Decision(Verdict.DENIED, result.error)
        return d, [], result.error_secret
    return decision, result.swapped, None


def _parsed(method: str, target: str, fields: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], bool] | None:
    """(fields, whether it is an upgrade) of the head the proxy's parser (llhttp through httptools,
    strict, as the data path builds it) reads of ``method``, ``target`` and ``fields`` sent as
    clients send them, values without the blanks around them (as the data path strips them); None
    when it refuses the head (a control character in a value, a method it does not know, a
    Content-Length that is not digits, two of them, one beside Transfer-Encoding...)."""
    read: list[tuple[str, str]] = []

    class _Fields:
        def on_header(self, name: bytes, value: bytes) -> None:
            read.append((name.decode("latin-1"), value.decode("latin-1").strip(" \t")))

    lines = [f"{method} {target} HTTP/1.1", *(f"{n}: {v}" for n, v in fields)]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")  # (as clients send text)
    parser = httptools.HttpRequestParser(_Fields())
    try:
        parser.feed_data(head)
    except httptools.HttpParserUpgrade:
        pass  # (it stops after the head of a CONNECT or an upgrade: the proxy's own checks judge those)
    except httptools.HttpParserError:
        return None
    return read, parser.should_upgrade()


def test(
    policy_file: str,
    cases_file: str,
    *,
    output: str = "text",
    junit: str | None = None,
    stdout: IO[str] | None = None,
    stdin: IO[bytes] | None = None,
) -> int:
    out = stdout or sys.stdout
    if policy_file == STDIN and cases_file == STDIN:
        return _usage(out, output, "test", "only one of the policy and the cases can come from stdin ('-')")
    problems: list[tuple[str, PolicyError]] = []
    warnings: list[tuple[str, PolicyWarning]] = []
    policies: list[Document] = []
    cases_label, cases_data = cases_file, b""
    try:
        label, data = read_input(policy_file, stdin or sys.stdin.buffer)
        for d in documents(label, data):
            problems += [(d.label, e) for e in d.errors]
            warnings += [(d.label, w) for w in d.warnings]
            if d.valid:
                policies.append(d)
        cases_label, cases_data = read_input(cases_file, stdin or sys.stdin.buffer)
    except CannotRead as e:
        problems.append((e.label, PolicyError("file", e.message)))
    cases: list[_Case] = []
    if not problems:
        cases = _read_cases(cases_label, cases_data, policies, problems)
    if problems:
        if junit is not None:
            _write_junit(
                junit,
                "sandgate policy test",
                [_JUnitCase("load", "sandgate.policy", error="; ".join(f"{s}: {e}" for s, e in problems))],
            )
        return _cannot_run(out, output, problems, warnings)
    results = [_run(c) for c in cases]
    failed = sum(bool(r.failures) for r in results)
    code = EXIT_FAILED if failed else EXIT_OK
    several = len(policies) > 1
    if junit is not None and not _write_junit(
        junit,
        "sandgate policy test",
        [
            _JUnitCase(
                r.case.name + (f" [{r.case.policy_label}]" if several else ""),
                f"sandgate.policy.{r.case.policy.name}",
                failure="; ".join(r.failures) or None,
                output=r.line,
            )
            for r in results
        ],
    ):
        code = EXIT_CANNOT_RUN
    if output == "json":
        json.dump(
            {
                "results": [_result_json(r) for r in results],
                "passed": len(results) - failed,
                "failed": failed,
                "warnings": [{"source": s, "field": w.field, "message": w.message} for s, w in warnings],
                "errors": [],
                "exit": code,
            },
            out,
            indent=2,
        )
        out.write("\n")
        return code
    for s, w in warnings:
        print(f"{s}: warning: {w}", file=sys.stderr)
    for r in results:
        where = f" [{r.case.policy_label}]" if several else ""
        print(f"{'FAIL' if r.failures else 'PASS'} {r.case.name}{where}: {r.line}", file=out)
        for f in r.failures:
            print(f"     {f}", file=out)
    print(f"{len(results) - failed} passed, {failed} failed", file=out)
    return code


def _cannot_run(
    out: IO[str], output: str, problems: list[tuple[str, PolicyError]], warnings: list[tuple[str, PolicyWarning]]
) -> int:
    if output == "json":
        json.dump(
            {
                "results": [],
                "errors": [{"source": s, "field": e.field, "message": e.message} for s, e in problems],
                "warnings": [{"source": s, "field": w.field, "message": w.message} for s, w in warnings],
                "exit": EXIT_CANNOT_RUN,
            },
            out,
            indent=2,
        )
        out.write("\n")
    else:
        for s, e in problems:
            print(f"{s}: {e}", file=sys.stderr)
        for s, w in warnings:
            print(f"{s}: warning: {w}", file=sys.stderr)
        print("sandgate policy test: not run (exit 2)", file=sys.stderr)
    return EXIT_CANNOT_RUN


def _read_cases(
    label: str, data: bytes, policies: list[Document], problems: list[tuple[str, PolicyError]]
) -> list[_Case]:
    """Every case, checked before any runs: a typo in a case is an error, never a silent pass."""
    try:
        docs = load_documents(decode(data, label), label)
    except PolicyInvalid as e:
        problems += [(label, err) for err in e.errors]
        return []
    if len(docs) != 1:
        problems.append(
            (
                label,
                PolicyError("cases file", "is empty" if not docs else f"holds {len(docs)} YAML documents; write one"),
            )
        )
        return []
    checked, errors = validate(docs[0], CASES)
    problems += [(label, e) for e in errors]
    if not isinstance(checked, dict) or not isinstance(checked.get("cases"), list):
        return []
    by_name = {d.policy.name: d for d in policies if d.policy is not None}
    default = checked.get("policy")
    out: list[_Case] = []
    for i, raw in enumerate(checked["cases"]):
        if not isinstance(raw, dict):
            continue
        case = _case(i, raw, default if isinstance(default, str) else None, policies, by_name, label, problems)
        if case is not None:
            out.append(case)
    return out


def _case(
    i: int,
    raw: dict[str, Any],
    default: str | None,
    policies: list[Document],
    by_name: dict[str, Document],
    label: str,
    problems: list[tuple[str, PolicyError]],
) -> _Case | None:
    path = f"cases[{i}]"

    def err(field: str, message: str) -> None:
        problems.append((label, PolicyError(f"{path}.{field}" if field else path, message)))

    wanted = raw.get("policy") if isinstance(raw.get("policy"), str) else default
    if wanted is not None:
        doc = by_name.get(wanted)
        if doc is None:
            err(
                "policy",
                f"no policy named {wanted!r} in the policy file (it has: {', '.join(sorted(by_name)) or 'none'})",
            )
            return None
    elif len(policies) == 1:
        doc = policies[0]
    else:
        err(
            "policy",
            f"the policy file holds {len(policies)} policies ({', '.join(sorted(by_name))}): "
            "name one with `policy:` in the case or at the top of the cases file",
        )
        return None
    assert doc.policy is not None
    policy = doc.policy
    req, expect = raw.get("request"), raw.get("expect")
    if not isinstance(req, dict) or not isinstance(expect, dict):
        return None
    ok = True
    for key in ("swapped", "secret"):
        names = expect.get(key)
        for name in names if isinstance(names, list) else [names] if isinstance(names, str) else []:
            if isinstance(name, str) and policy.secret(name) is None:
                err(f"expect.{key}", f"no secret named {name!r} in policy {policy.name!r}")
                ok = False

    def expand(text: str, field: str) -> str | None:
        unknown = [m for m in _PH_REF.findall(text) if policy.secret(m) is None]
        if unknown:
            err(field, f"${{placeholder:...}}: no secret named {show(unknown[0])} in policy {policy.name!r}")
            return None
        return _PH_REF.sub(lambda m: policy.secret(m.group(1)).placeholder, text)  # type: ignore[union-attr]

    url = expand(req["url"], "request.url") if isinstance(req.get("url"), str) else None
    if url is not None:
        try:
            parts = urllib.parse.urlsplit(url)
        except ValueError as e:  # "Invalid IPv6 URL": a [ without its ] (red team 45)
            err("request.url", f"{show(req['url'])} is not a URL ({e}): write an absolute http:// or https:// URL")
            url = None
        else:
            if parts.scheme not in ("http", "https") or not parts.netloc:
                err("request.url", f"{show(req['url'])} is not an absolute http:// or https:// URL")
                url = None
    raw_headers = req.get("headers", BAD)
    pairs = (
        list(raw_headers.items())
        if isinstance(raw_headers, dict)
        else [(h["name"], h["value"]) for h in raw_headers if isinstance(h, dict)]
        if isinstance(raw_headers, list)
        else []
    )
    headers: list[tuple[str, str]] = []
    for j, (name, value) in enumerate(pairs):
        if isinstance(name, str) and isinstance(value, str):
            v = expand(value, f"request.headers[{j}]" if isinstance(raw_headers, list) else f"request.headers.{name}")
            if v is None:
                ok = False
            else:
                headers.append((name, v))
    method = req.get("method")
    if not ok or url is None or not isinstance(method, str) or BAD in expect.values():
        return None
    name = raw.get("name")
    return _Case(name if isinstance(name, str) else path, doc.label, policy, method, url, headers, expect)


def _run(case: _Case) -> _Result:
    decision, swapped, secret = simulate(case.policy, case.method, case.url, case.headers)
    e = case.expect
    failures: list[str] = []
    reason = decision.reason.value if decision.reason else None
    if "decision" in e and e["decision"] != decision.verdict.value:
        failures.append(f"expected decision {e['decision']!r}, got {decision.verdict.value!r}")
    if "reason" in e and e["reason"] != reason:
        failures.append(f"expected reason {e['reason']!r}, got {reason!r}")
    if "swapped" in e and sorted(e["swapped"]) != sorted(swapped):
        failures.append(f"expected swapped {sorted(e['swapped'])!r}, got {sorted(swapped)!r}")
    if "secret" in e and e["secret"] != secret:
        failures.append(f"expected secret {e['secret']!r}, got {secret!r}")
    return _Result(case, decision, swapped, secret, failures)


def _result_json(r: _Result) -> dict[str, Any]:
    return {
        "name": r.case.name,
        "policy": r.case.policy_label,
        "passed": not r.failures,
        "request": {"method": r.case.method, "url": r.case.url},
        "decision": r.decision.verdict.value,
        "reason": r.decision.reason.value if r.decision.reason else None,
        "swapped": r.swapped,
        "secret": r.secret,
        "failures": r.failures,
    }


# --- JUnit XML ------------------------------------------------------------------------------------


@dataclass
class _JUnitCase:
    name: str
    classname: str
    failure: str | None = None
    error: str | None = None
    skipped: str | None = None
    output: str = ""


def _write_junit(path: str, suite: str, cases: list[_JUnitCase]) -> bool:
    """The de-facto JUnit format (Jenkins, GitLab, GitHub Actions read it): one testsuite.
    False (said on stderr) when the file cannot be written: a CI would miss the report."""
    counts = {
        "tests": str(len(cases)),
        "failures": str(sum(c.failure is not None for c in cases)),
        "errors": str(sum(c.error is not None for c in cases)),
        "skipped": str(sum(c.skipped is not None for c in cases)),
    }
    root = ET.Element("testsuites", {"name": suite, **counts})
    ts = ET.SubElement(root, "testsuite", {"name": suite, **counts})
    for c in cases:
        tc = ET.SubElement(ts, "testcase", {"classname": c.classname, "name": c.name})
        if c.failure is not None:
            ET.SubElement(tc, "failure", {"message": c.failure[:1000], "type": "mismatch"}).text = c.failure
        if c.error is not None:
            ET.SubElement(tc, "error", {"message": c.error[:1000], "type": "not run"}).text = c.error
        if c.skipped is not None:
            ET.SubElement(tc, "skipped", {"message": c.skipped})
        if c.output:
            ET.SubElement(tc, "system-out").text = c.output
    ET.indent(root)
    try:
        ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
    except OSError as e:
        print(f"sandgate policy: --junit {path}: cannot write: {e.strerror or e}", file=sys.stderr)
        return False
    return True
