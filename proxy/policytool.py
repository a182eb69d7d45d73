"""``sandgate policy check`` and ``sandgate policy test``: policy work offline, for a policy repo's CI.

``test`` runs each case through the proxy's own ``decide`` and ``plan_swap``. It has no network and
no secret values, so it cannot judge what depends on them: where a name resolves (private_address)
and whether a secret's value can be fetched (secret_unavailable/invalid).
"""

from __future__ import annotations

import re
import sys
import urllib.parse
from pathlib import Path
from typing import Any

import yaml

from proxy.core.swap import plan_swap
from proxy.policy.decide import RequestFacts, decide, deny
from proxy.policy.hosts import HostError, canonical_host
from proxy.policy.load import PolicyInvalid, load_policy
from proxy.policy.model import Decision, Policy, Reason, Verdict

_PH_REF = re.compile(r"\$\{placeholder:([a-z0-9-]+)\}")


def check(files: list[Path]) -> int:
    failed = 0
    for f in files:
        try:
            policy = load_policy(str(f))
        except PolicyInvalid as e:
            failed += 1
            for err in e.errors:
                print(f"{f}: {err}")
            continue
        print(
            f"{f}: ok (policy {policy.name!r}: {len(policy.allow)} allow rules, {len(policy.secrets)} secrets, mode {policy.mode})"
        )
    return 1 if failed else 0


def simulate(
    policy: Policy, method: str, url: str, headers: list[tuple[str, str]]
) -> tuple[Decision, list[str], str | None]:
    """(decision, swapped secret names, secret the decision is about)."""
    parts = urllib.parse.urlsplit(url)
    try:
        host = canonical_host(parts.hostname or "")
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except (HostError, ValueError):
        return Decision(Verdict.DENIED, Reason.MALFORMED_REQUEST), [], None
    decision = decide(policy, RequestFacts(host, port, method.upper(), parts.path or "/"))
    if not decision.forwards:
        return decision, [], None
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    result = plan_swap(
        policy,
        host=host,
        port=port,
        tls=parts.scheme == "https",
        method=method,
        target=target,
        headers=headers,
        query=urllib.parse.parse_qsl(parts.query, keep_blank_values=True),
        lookup=lambda name: f"<real value of {name}>",
    )
    if result.error is not None:
        d = deny(policy, result.error) if result.error.reportable else Decision(Verdict.DENIED, result.error)
        return d, [], result.error_secret
    return decision, result.swapped, None


def _expand(text: str, policy: Policy) -> str:
    def sub(m: re.Match[str]) -> str:
        s = policy.secret(m.group(1))
        if s is None:
            raise ValueError(f"no secret named {m.group(1)!r} in the policy")
        return s.placeholder

    return _PH_REF.sub(sub, text)


def test(policy_file: Path, cases_file: Path) -> int:
    try:
        policy = load_policy(str(policy_file))
    except PolicyInvalid as e:
        print(e, file=sys.stderr)
        return 1
    try:
        doc = yaml.safe_load(cases_file.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        print(f"{cases_file}: cannot read cases: {e}", file=sys.stderr)
        return 1
    cases = doc.get("cases") if isinstance(doc, dict) else None
    if not isinstance(cases, list):
        print(f"{cases_file}: expected a mapping with a list under 'cases'", file=sys.stderr)
        return 1
    failures = 0
    for i, case in enumerate(cases):
        label, problems, line = _run_case(policy, i, case)
        failures += bool(problems)
        print(f"{'FAIL' if problems else 'PASS'} {label}: {line}")
        for p in problems:
            print(f"     {p}")
    print(f"{len(cases) - failures} passed, {failures} failed")
    return 1 if failures else 0


def _run_case(policy: Policy, i: int, case: Any) -> tuple[str, list[str], str]:
    label = f"case {i}"
    if not isinstance(case, dict) or not isinstance(case.get("request"), dict):
        return label, ["a case needs a 'request' mapping with method and url"], "invalid case"
    label = str(case.get("name", label))
    req = case["request"]
    try:
        url = _expand(str(req.get("url", "")), policy)
        headers = [(str(k), _expand(str(v), policy)) for k, v in (req.get("headers") or {}).items()]
    except ValueError as e:
        return label, [str(e)], "invalid case"
    decision, swapped, secret = simulate(policy, str(req.get("method", "GET")), url, headers)
    line = (
        f"{decision.verdict.value}"
        + (f" ({decision.reason.value})" if decision.reason else "")
        + (f" swapped={swapped}" if swapped else "")
    )
    if secret:
        line += f" secret={secret}"
    problems = []
    expect = case.get("expect") or {}
    if "decision" in expect and expect["decision"] != decision.verdict.value:
        problems.append(f"expected decision {expect['decision']!r}, got {decision.verdict.value!r}")
    if "reason" in expect and expect["reason"] != (decision.reason.value if decision.reason else None):
        problems.append(
            f"expected reason {expect['reason']!r}, got {decision.reason.value if decision.reason else None!r}"
        )
    if "swapped" in expect and sorted(expect["swapped"] or []) != sorted(swapped):
        problems.append(f"expected swapped {expect['swapped']!r}, got {swapped!r}")
    return label, problems, line
