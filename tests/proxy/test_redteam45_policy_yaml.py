"""Red team 45: YAML tags whose PyYAML constructors raise something other than a YAML error.

``proxy.policy.yamlsafe`` promises "bytes in, plain Python values or PolicyInvalid out", and
``parse_policy`` "for any bytes or text ... a Policy or PolicyInvalid, nothing else". A scalar
tagged ``!!bool`` that is not a YAML boolean (``!!bool 1``), an empty ``!!int``/``!!float``, and a
scalar key tagged as a collection (``!!seq``, ``!!map``, ``!!set``, ``!!omap``) make PyYAML's
constructors raise KeyError, IndexError or TypeError, which escape as they are:

- ``sandgate proxy`` prints a traceback and exits 1 (the README: "Exit 2 on a bad policy ...
  never a traceback");
- ``sandgate policy check`` / ``test`` print a traceback and exit 1 (docs/policy.md: 1 is "an
  invalid policy" with every problem named, 2 "could not run");
- the policy watcher dies on the reload (``internal_errors{task="policy-watcher"}``) instead of
  counting a rejected reload (``policy_reloads_total{result="error"}``, which the
  ``SandgatePolicyReloadFailed`` alert watches: it never fires).

Copy to tests/proxy/. Every test here fails on the code of 991a75a.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from proxy.metrics import INTERNAL_ERRORS, POLICY_RELOADS
from proxy.policy.load import PolicyInvalid, parse_policy
from tests.conftest import OPENAI, needs_root
from tests.support.clients import curl
from tests.support.proxyproc import ProxyProcess
from tests.support.wait import wait_for

GOOD = f"""apiVersion: sandgate.dev/v1alpha1
kind: EgressPolicy
metadata: {{name: rt45-yaml}}
spec:
  allow:
    - host: api.openai.com
    - host: echo.example.com
  secrets:
    - name: openai
      placeholder: {OPENAI.placeholder}
      source: {{env: SG_TEST_OPENAI}}
      hosts: [api.openai.com]
"""

# Each is a small edit of GOOD a person could make; each must be a PolicyInvalid naming a position.
BROKEN = {
    "bool-tag-on-1": GOOD.replace(
        "    - host: echo.example.com\n", "    - host: echo.example.com\n      ports: [!!bool 1]\n"
    ),
    "empty-int": GOOD.replace(
        "    - host: echo.example.com\n", "    - host: echo.example.com\n      ports: [!!int ]\n"
    ),
    "empty-float": GOOD.replace(
        "    - host: echo.example.com\n", "    - host: echo.example.com\n      ports: [!!float ]\n"
    ),
    "seq-tagged-key": GOOD.replace("metadata:", "!!seq : x\nmetadata:"),
    "omap-tagged-key": GOOD.replace("metadata:", "!!omap x: 1\nmetadata:"),
    "map-tagged-key": GOOD.replace("metadata:", "!!map : x\nmetadata:"),
}


@pytest.mark.parametrize("text", BROKEN.values(), ids=BROKEN.keys())
def test_parse_policy_raises_policy_invalid_and_nothing_else(text: str) -> None:
    with pytest.raises(PolicyInvalid) as info:
        parse_policy(text, source="p.yaml")
    assert "line " in str(info.value)  # where it is, as every other YAML problem says


@pytest.mark.parametrize("name", ["bool-tag-on-1", "empty-float", "omap-tagged-key"])
def test_policy_check_names_the_problem_without_a_traceback(tmp_path: Path, name: str) -> None:
    f = tmp_path / "p.yaml"
    f.write_text(BROKEN[name])
    out = subprocess.run([sys.executable, "-m", "sandgate", "policy", "check", str(f)],
                         capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert "Traceback" not in out.stderr, out.stderr[-400:]
    assert out.returncode == 1 and str(f) in out.stdout + out.stderr


def test_policy_test_with_a_broken_cases_file_exits_2_without_a_traceback(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text(GOOD)
    cases = tmp_path / "cases.yaml"
    cases.write_text("cases:\n  - !!float : 1\n")
    out = subprocess.run([sys.executable, "-m", "sandgate", "policy", "test", str(f), "--cases", str(cases)],
                         capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert "Traceback" not in out.stderr, out.stderr[-400:]
    assert out.returncode == 2


@pytest.mark.parametrize("name", ["bool-tag-on-1", "empty-int", "seq-tagged-key"])
def test_the_proxy_refuses_such_a_policy_at_start_with_exit_2(tmp_path: Path, name: str) -> None:
    f = tmp_path / "p.yaml"
    f.write_text(BROKEN[name])
    out = subprocess.run([sys.executable, "-m", "sandgate", "proxy", "--policy", str(f), "--confdir", str(tmp_path / "c"),
                          "--listen-port", "0", "--metrics-port", "0"],
                         capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert "Traceback" not in out.stderr, out.stderr[-400:]
    assert out.returncode == 2 and str(f) in out.stderr


@needs_root
def test_a_reload_to_such_a_policy_is_a_rejected_reload_not_a_watcher_crash(
    make_proxy: Callable[..., ProxyProcess],
) -> None:
    p = make_proxy(GOOD)
    assert curl(p.url, p.ca, "https://echo.example.com/").status == 200
    p.policy.write_text(BROKEN["bool-tag-on-1"])
    wait_for(lambda: p.metric(POLICY_RELOADS, result="error") + p.metric(INTERNAL_ERRORS, task="policy-watcher") >= 1)
    # What the SandgatePolicyReloadFailed alert watches, and what the operator is told to check.
    assert p.metric(POLICY_RELOADS, result="error") == 1
    assert p.metric(INTERNAL_ERRORS, task="policy-watcher") == 0
    assert curl(p.url, p.ca, "https://echo.example.com/").status == 200  # the last good policy serves


def test_policy_test_with_an_unclosed_ipv6_bracket_in_a_case_url_names_the_case(tmp_path: Path) -> None:
    """``urlsplit`` raises ValueError("Invalid IPv6 URL") on ``https://[::1``; the cases reader
    names every other bad URL (``'ftp://...' is not an absolute http:// or https:// URL``)."""
    f = tmp_path / "p.yaml"
    f.write_text(GOOD)
    cases = tmp_path / "cases.yaml"
    cases.write_text('cases:\n  - name: c\n    request: {url: "https://[::1/v1"}\n    expect: {decision: denied}\n')
    out = subprocess.run([sys.executable, "-m", "sandgate", "policy", "test", str(f), "--cases", str(cases)],
                         capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert "Traceback" not in out.stderr, out.stderr[-400:]
    assert out.returncode == 2 and "cases[0].request.url" in out.stdout + out.stderr
