"""Red team 61: a secret's value that carries another secret's key in a form the proxy's own guard
reads as that key (encoded, in Basic credentials stored encoded, a long run of it, its upper-case
copy) went to a host that key is not bound to: the check across secrets compared plain,
lower-cased containment only."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import GITHUB, OPENAI, needs_root
from tests.support.clients import curl
from tests.support.leaks import EXTRA
from tests.support.proxyproc import ProxyProcess
from tests.support.upstream import Seen

pytestmark = needs_root

# openai's key in this file: hex, so that its upper-case copy is the same key to a server that
# folds case, and long enough that 16-character runs of it are guarded outbound.
B = "sk-RT61B-" + secrets.token_hex(20)
EXTRA.append(("rt61-b", B))

CARRIERS = {
    "basic-base64": base64.b64encode(f"ci-bot:{B}".encode()).decode(),  # Basic credentials stored encoded
    "base64": base64.b64encode(B.encode()).decode(),
    "hex": B.encode().hex(),
    "run-of-24": "tok-" + B[9:33] + "-rt61x",
    "upper-case": B.upper(),
}


def policy(openai: Path, github: Path) -> str:
    return f"""
apiVersion: sandgate.dev/v1alpha1
kind: EgressPolicy
metadata: {{name: rt61}}
spec:
  allow:
    - host: api.openai.com
    - host: echo.example.com
  secrets:
    - name: openai
      placeholder: {OPENAI.placeholder}
      source: {{file: {openai}}}
      hosts: [api.openai.com]
    - name: github
      placeholder: {GITHUB.placeholder}
      source: {{file: {github}}}
      hosts: [echo.example.com]
"""


@pytest.mark.parametrize("form", list(CARRIERS))
def test_rt61_a_value_carrying_another_secrets_key_in_any_form_the_guard_reads_is_refused(
    make_proxy: Callable[..., ProxyProcess], upstreams: dict[str, Seen], tmp_path: Path, form: str
) -> None:
    """openai's key B is bound to api.openai.com only; github's value (echo.example.com) carries B
    in a form the agent may not send anywhere (the guard refuses it as B: checked first). github
    fails closed; nothing of it reaches echo."""
    fa, fg = tmp_path / "a.key", tmp_path / "g.key"
    fa.write_text(B)
    fg.write_text(CARRIERS[form])
    p = make_proxy(policy(fa, fg), "--secret-refresh", "0.5")
    assert curl(p.url, p.ca, "https://echo.example.com/a", "-H", f"X-Note: {CARRIERS[form]}").reason == (
        "secret_value_outbound"
    )
    before = len(upstreams["echo"].requests)
    reply = curl(p.url, p.ca, "https://echo.example.com/gh", "-H", f"Authorization: Bearer {GITHUB.placeholder}")
    assert (reply.status, reply.reason) == (503, "secret_invalid")
    assert len(upstreams["echo"].requests) == before
    assert "holds a value of secret 'openai'" in p.stderr()
