"""`sandgate run`'s environments (CMD's, and the sandbox init's and proxy's, which gVisor lets CMD
read): no variable holding a real value `run` knows, in any form the proxy's outbound guard reads
(red team 30: base64 of Basic credentials in NPM_CONFIG__AUTH, DOCKER_AUTH_CONFIG, a git header;
hex; upper case; a line break inside). Pure: the environments are computed, nothing runs."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable
from pathlib import Path

import pytest

from proxy.policy.load import parse_policy
from sandgate.run import agent_env, secret_holder

VALUE = "sk-real-" + secrets.token_hex(16)
POLICY = parse_policy("""
apiVersion: sandgate.dev/v1alpha1
kind: EgressPolicy
metadata: {name: p}
spec:
  allow: [{host: api.openai.com}]
  secrets:
    - {name: openai, placeholder: sandgate-ph-openai-xxxxxxxx, source: {env: OPENAI_REAL}, hosts: [api.openai.com]}
""")
FORMS: dict[str, Callable[[str], str]] = {
    "plain": lambda v: f"x{v}x",
    "basic-auth-base64": lambda v: base64.b64encode(f"user:{v}".encode()).decode(),
    "base64": lambda v: base64.b64encode(v.encode()).decode(),
    "hex": lambda v: v.encode().hex(),
    "upper": lambda v: v.upper(),
    "split-by-a-line-break": lambda v: v[:12] + "\n" + v[12:],
    "a-run-of-16": lambda v: v[5:21],
}


@pytest.mark.parametrize("form", FORMS)
def test_a_variable_holding_a_real_value_in_any_form_reaches_no_environment(
    monkeypatch: pytest.MonkeyPatch, form: str
) -> None:
    monkeypatch.setenv("OPENAI_REAL", VALUE)
    monkeypatch.setenv("NPM_CONFIG__AUTH", FORMS[form](VALUE))
    monkeypatch.setenv("HOME_ISH", "/home/agent")
    env = agent_env(POLICY, Path("/tmp/ca.pem"))
    assert "OPENAI_REAL" not in env and "NPM_CONFIG__AUTH" not in env
    assert env["HOME_ISH"] == "/home/agent"
    assert env.get("OPENAI_API_KEY") is None or env["OPENAI_API_KEY"] != VALUE


def test_ordinary_variables_are_kept() -> None:
    holds = secret_holder([VALUE])
    for text in ("/usr/local/bin:/usr/bin", "en_US.UTF-8", "xterm-256color", VALUE[:8], "sk-real-"):
        assert not holds(text), text
