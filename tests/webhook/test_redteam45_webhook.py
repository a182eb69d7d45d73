"""Red team 45: the webhook's edges.

1. ``parse_review`` uses ``json.loads`` as it is, which takes ``NaN``, ``Infinity`` and
   ``-Infinity``: a body that is not JSON (RFC 8259; the API server's Go encoder can never write
   one) is admitted, and a container holding such a value is copied into the JSON patch, which
   then is not JSON either (``json.dumps`` writes ``NaN``). The README: "A body that is not the
   AdmissionReview the API server sends ... is HTTP 400".
2. A policy whose YAML makes PyYAML's constructors raise (``!!bool 1``, see
   tests/proxy/test_redteam45_policy_yaml.py) is not refused with its field: /validate and /mutate
   answer the generic "internal error ... Retry" (a retry cannot help), counted as ``error``.
3. ``sandgate webhook --config`` with such a tag: traceback, exit 1 (``injector.config`` uses
   ``yaml.safe_load`` and catches only YAMLError).

Copy to tests/webhook/. Every test fails on 991a75a.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.webhook.test_webhook import POD, POLICY, Webhook, review
from webhook.review import BadReview, parse_review


@pytest.fixture(scope="module")
def hook(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Webhook]:
    w = Webhook(tmp_path_factory.mktemp("webhook-rt45"))
    yield w
    w.stop()


def _strict(text: str) -> object:
    def refuse(constant: str) -> object:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_a_body_with_non_json_numbers_is_a_400_and_never_a_patch_that_is_not_json(hook: Webhook, literal: str) -> None:
    body = json.dumps(review(POD)).replace('"image": "example.com/agent:1"',
                                           f'"image": "example.com/agent:1", "x-extra": {literal}')  # fmt: skip
    assert literal in body
    r = hook.post("/mutate", body.encode())
    if r.status_code == 200:
        resp = r.json()["response"]
        if "patch" in resp:
            try:
                _strict(base64.b64decode(resp["patch"]).decode())
            except ValueError as e:
                pytest.fail(f"the body was admitted and the patch sent back is not JSON: {e}")
    assert r.status_code == 400 and "error" in r.json()


BROKEN = POLICY.replace("allow: [{host: api.openai.com}]", "allow: [{host: api.openai.com, ports: [!!bool 1]}]")


def test_validate_refuses_a_policy_pyyaml_cannot_construct_naming_where(hook: Webhook) -> None:
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "default", "namespace": "sandbox-a",
          "labels": {"sandgate.dev/policy": "true"}}, "data": {"policy.yaml": BROKEN}}  # fmt: skip
    resp = hook.post("/validate", review(cm, userInfo={"username": "alice", "groups": ["sandgate-admins"]})).json()[
        "response"
    ]
    assert resp["allowed"] is False
    assert resp["status"]["code"] == 403 and "internal error" not in resp["status"]["message"], resp["status"]
    assert "line " in resp["status"]["message"]


def test_mutate_refuses_a_pod_whose_policy_pyyaml_cannot_construct_naming_the_policy(hook: Webhook) -> None:
    (hook.dir / "policies" / "sandbox-a" / "broken.yaml").write_text(BROKEN.replace("name: default", "name: broken"))
    pod = json.loads(json.dumps(POD))
    pod["metadata"]["annotations"] = {"sandgate.dev/policy": "broken"}
    resp = hook.post("/mutate", review(pod)).json()["response"]
    assert resp["allowed"] is False
    assert "internal error" not in resp["status"]["message"], resp["status"]
    assert "broken" in resp["status"]["message"]


def test_a_config_with_such_a_tag_stops_the_webhook_with_exit_2_and_no_traceback(tmp_path: Path) -> None:
    (tmp_path / "injector.yaml").write_text("gkeSandbox: !!bool 1\n")
    done = subprocess.run(
        [sys.executable, "-m", "sandgate", "webhook", "--tls-cert", "x", "--tls-key", "y", "--policy-dir", str(tmp_path),
         "--config", str(tmp_path / "injector.yaml")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert "Traceback" not in done.stderr, done.stderr[-400:]
    assert done.returncode == 2 and "--config" in done.stderr


def test_the_uid_of_a_non_json_body_is_not_needed_to_refuse_it(hook: Webhook) -> None:
    """(Held: kept as a guard next to the NaN case.) A body that is not JSON at all is a 400."""
    r = hook.post(
        "/mutate", b'{"apiVersion": "admission.k8s.io/v1", "request": {"uid": "' + str(uuid.uuid4()).encode() + b'"'
    )
    assert r.status_code == 400


INJECTED = {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "agent", "namespace": "sandbox-a",
                         "annotations": {"sandgate.dev/status": "injected", "sandgate.dev/policy": "default"}},
            "spec": {"initContainers": [{"name": "sandgate-proxy", "image": "x", "restartPolicy": "Always"}],
                     "containers": [{"name": "agent", "image": "example.com/agent:1"}]}}  # fmt: skip
STRIPPED = {**INJECTED, "metadata": {"name": "agent", "namespace": "sandbox-a"},
            "spec": {"containers": [{"name": "agent", "image": "example.com/agent:1"}]}}  # fmt: skip


@pytest.mark.parametrize(("obj", "old"), [(STRIPPED, None), (None, INJECTED)], ids=["no-oldObject", "no-object"])
def test_a_pod_update_the_webhook_cannot_judge_is_refused_not_skipped(
    hook: Webhook, obj: dict | None, old: dict | None
) -> None:
    """With both objects, taking the sidecar out of an injected pod is refused. Without oldObject
    (or without object) the same UPDATE is ``allowed: true`` (counted "skipped"): whether the pod
    was injected cannot be told, and the webhook lets it through. /validate refuses a ConfigMap
    DELETE without its oldObject for exactly that reason (red team 30): fail closed here too."""
    both = hook.post("/mutate", review(STRIPPED, operation="UPDATE", oldObject=INJECTED)).json()["response"]
    assert both["allowed"] is False  # (what the API server's real review gets)
    sent = review(obj, operation="UPDATE", **({"oldObject": old} if old is not None else {}))
    resp = hook.post("/mutate", sent).json()["response"]
    assert resp["allowed"] is False, "an UPDATE without the objects to compare was admitted unchecked"


def test_an_exec_without_its_options_is_refused_not_admitted(hook: Webhook) -> None:
    """F13's other half: a CONNECT pods/exec (or attach) whose options (the container) are missing
    cannot be told from one into the sidecar; the API server always sends them. Refused."""
    for sub in ("exec", "attach"):
        sent = review(None, "CONNECT", kind={"group": "", "version": "v1", "kind": "PodExecOptions"}, subResource=sub)
        resp = hook.post("/mutate", sent).json()["response"]
        assert resp["allowed"] is False and "request.object" in resp["status"]["message"], resp


# The general form of F12: whatever a body holds, parse_review gives a review that JSON can say
# back (so nothing in it can make the patch not JSON), or a 400.

_BODY = json.dumps(review(POD))
# where a value may start (after ": ", "[" or ", "), so that most edits stay JSON-shaped
_VALUE_STARTS = [i + len(m) for i in range(len(_BODY)) for m in (": ", "[", ", ") if _BODY.startswith(m, i)]
_INSERTS = ["NaN, ", "Infinity, ", "-Infinity, ", "1e999, ", "-1e400, ", "NaN", "[", "]", "{", "}", ",", '"', "0", "\\"]


@settings(max_examples=300, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(_VALUE_STARTS), st.sampled_from(_INSERTS)), min_size=1, max_size=3))
@example([(_BODY.index('"example.com/agent:1"'), "NaN, ")])
def test_a_review_body_is_json_that_writes_back_or_a_400(edits: list[tuple[int, str]]) -> None:
    body = _BODY
    for at, piece in sorted(edits, reverse=True):
        body = body[:at] + piece + body[at:]
    try:
        parsed = parse_review(body.encode())
    except BadReview as e:
        assert e.status == 400 and str(e)
        return
    json.dumps(parsed, allow_nan=False)
