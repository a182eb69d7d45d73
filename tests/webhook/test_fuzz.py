"""Fuzzing the real webhook over real HTTPS: 1,000 damaged AdmissionReviews, seeded.

Each review starts valid (a pod CREATE or UPDATE, a DELETE or CONNECT, a policy ConfigMap change)
and is damaged a few times at random places: a field dropped, its JSON type swapped, null, a long
string, nesting past the bounds (up to 100,000 deep), a huge annotation, another operation, the
other endpoint. Every answer must be a valid AdmissionReview for the same uid (any patch applying
to what was sent) or a 400 with a JSON error; never a 5xx, and the backstop is never needed.

A failure names its seed; replay one with ``SANDGATE_FUZZ_SEED=<seed>``, then keep it in
``REGRESSIONS``.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import random
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonpatch
import pytest
import requests

from tests.webhook.test_webhook import POD, POLICY, Webhook

BASE_SEED = 20_250_000
COUNT = 1_000
# Seeds that once failed, replayed on every run. 20250019: the first 500 of the webhook before
# reviews were checked at its edge.
REGRESSIONS = [20_250_019]

INJECTED_POD = {
    **copy.deepcopy(POD),
    "metadata": {**POD["metadata"], "annotations": {"sandgate.dev/status": "injected"}},
}
POLICY_CM = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "default", "namespace": "sandbox-a", "labels": {"sandgate.dev/policy": "true"}},
             "data": {"policy.yaml": POLICY}}  # fmt: skip
_DEEP = "__sandgate_fuzz_deep_{}__"


def _request(operation: str, obj: Any, old: Any, kind: str, resource: str, **extra: Any) -> dict[str, Any]:
    request = {"uid": str(uuid.UUID(int=random.getrandbits(128))), "kind": {"group": "", "version": "v1", "kind": kind},
               "resource": {"group": "", "version": "v1", "resource": resource}, "namespace": "sandbox-a", "operation": operation,
               "userInfo": {"username": "alice", "groups": ["sandgate-admins", "system:authenticated"]}, "object": obj,
               "oldObject": old, "dryRun": False, **extra}  # fmt: skip
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


def _base(rng: random.Random) -> tuple[str, dict[str, Any]]:
    pod, injected, cm = copy.deepcopy(POD), copy.deepcopy(INJECTED_POD), copy.deepcopy(POLICY_CM)
    if rng.random() < 0.5:
        pod["spec"]["containers"][0]["env"] = [{"name": "OPENAI_API_KEY", "value": "x"}]
        pod["spec"]["containers"][0]["securityContext"] = {"runAsUser": 2000}
        pod["spec"]["volumes"] = [{"name": "data", "emptyDir": {}}]
    choices = [
        ("/mutate", _request("CREATE", pod, None, "Pod", "pods")),
        ("/mutate", _request("UPDATE", injected, copy.deepcopy(injected), "Pod", "pods")),
        ("/mutate", _request("UPDATE", injected, copy.deepcopy(injected), "Pod", "pods", subResource="ephemeralcontainers")),
        ("/mutate", _request("DELETE", None, pod, "Pod", "pods")),
        ("/mutate", _request("CONNECT", {"apiVersion": "v1", "kind": "PodExecOptions"}, None, "PodExecOptions", "pods", subResource="exec")),
        ("/validate", _request("CREATE", cm, None, "ConfigMap", "configmaps")),
        ("/validate", _request("UPDATE", cm, copy.deepcopy(cm), "ConfigMap", "configmaps")),
        ("/validate", _request("DELETE", None, cm, "ConfigMap", "configmaps")),
    ]  # fmt: skip
    weights = [5, 2, 1, 1, 1, 2, 1, 1]
    return rng.choices(choices, weights)[0]


def _junk(rng: random.Random, depth: int = 0) -> Any:
    leaves: list[Any] = [None, True, False, 0, -1, 1337, 2**63, 1.5, "", "x", "\ud800", "ünï", "sk-live-" + "a" * 20]
    if depth < 2 and rng.random() < 0.3:
        return rng.choice([[_junk(rng, depth + 1)], {"k": _junk(rng, depth + 1)}, [], {}])
    return rng.choice(leaves)


def _paths(doc: Any) -> list[tuple[Any, Any]]:
    """(container, key) for every value in ``doc``."""
    out: list[tuple[Any, Any]] = []
    stack = [doc]
    while stack:
        node = stack.pop()
        items = (
            list(node.items()) if isinstance(node, dict) else list(enumerate(node)) if isinstance(node, list) else []
        )
        for key, child in items:
            out.append((node, key))
            stack.append(child)
    return out


def _damage(rng: random.Random, path: str, review: dict[str, Any]) -> tuple[str, dict[str, Any], list[int]]:
    deep: list[int] = []
    for _ in range(rng.randint(1, 3)):
        spots = _paths(review)
        parent, key = rng.choice(spots)
        kind = rng.choice(["drop", "swap", "null", "long", "deep", "annotation", "operation", "endpoint"])
        if kind == "drop" and isinstance(parent, dict):
            del parent[key]
        elif kind in ("swap", "drop"):
            parent[key] = _junk(rng)
        elif kind == "null":
            parent[key] = None
        elif kind == "long":
            parent[key] = rng.choice(["p" * 300, "é" * 5_000, "a" * 100_000])
        elif kind == "deep":
            deep.append(rng.choice([50, 99, 101, 1_000, 100_000]))
            parent[key] = _DEEP.format(len(deep) - 1)
        elif kind == "annotation":
            obj = review.get("request", {}).get("object") if isinstance(review.get("request"), dict) else None
            if isinstance(obj, dict) and isinstance(obj.get("metadata"), dict):
                annotations = obj["metadata"].setdefault("annotations", {})
                if isinstance(annotations, dict):
                    annotations[rng.choice(["sandgate.dev/policy", "x" * 300, "huge"])] = rng.choice(
                        ["p" * 300, "q" * 1_000_000, "default", "../default", "Default"]
                    )
        elif kind == "operation" and isinstance(review.get("request"), dict):
            review["request"]["operation"] = rng.choice(["CREATE", "UPDATE", "DELETE", "CONNECT", "create", "PATCH"])
        elif kind == "endpoint":
            path = "/validate" if path == "/mutate" else "/mutate"
    return path, review, deep


def _encode(review: dict[str, Any], deep: list[int]) -> bytes:
    text = json.dumps(review)
    for i, depth in enumerate(deep):
        text = text.replace(json.dumps(_DEEP.format(i)), "[" * depth + "]" * depth)
    return text.encode("utf-8", "surrogatepass")


def _ca(hook: Webhook) -> str:
    # Per request: a session's verify loses to REQUESTS_CA_BUNDLE from the environment.
    return str(hook.dir / "ca.pem")


def one(hook: Webhook, session: requests.Session, seed: int) -> str:
    """Sends the review of ``seed``, checks the answer, and says what kind of answer it was."""
    rng = random.Random(seed)
    random.seed(seed)  # the uids
    path, review, deep = _damage(rng, *_base(rng))
    body = _encode(review, deep)
    r = session.post(
        hook.url(path), data=body, headers={"Content-Type": "application/json"}, verify=_ca(hook), timeout=10
    )
    where = f"seed {seed} ({path}, {len(body)} bytes): replay with SANDGATE_FUZZ_SEED={seed}"
    assert r.status_code < 500, f"{where}: HTTP {r.status_code} {r.text[:300]}"
    if r.status_code != 200:
        assert r.status_code == 400, f"{where}: HTTP {r.status_code}"
        assert isinstance(r.json().get("error"), str), where
        return "400"
    answer = r.json()
    assert answer["apiVersion"] == "admission.k8s.io/v1" and answer["kind"] == "AdmissionReview", where
    resp = answer["response"]
    assert resp["uid"] == review["request"]["uid"] and isinstance(resp["allowed"], bool), where
    if not resp["allowed"]:
        assert isinstance(resp["status"]["message"], str) and resp["status"]["message"], where
        assert "sk-live" not in resp["status"]["message"], f"{where}: a refusal quoted a value"
    if "patch" in resp:
        assert resp["patchType"] == "JSONPatch", where
        patch = json.loads(base64.b64decode(resp["patch"]))
        jsonpatch.apply_patch(review["request"]["object"], patch)  # raises if it does not apply
        return "patched"
    return "allowed" if resp["allowed"] else "refused"


@pytest.fixture(scope="module")
def hook(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Webhook]:
    w = Webhook(tmp_path_factory.mktemp("webhook-fuzz"))
    yield w
    w.stop()


def _seeds() -> list[int]:
    if os.environ.get("SANDGATE_FUZZ_SEED"):
        return [int(os.environ["SANDGATE_FUZZ_SEED"])]
    return [BASE_SEED + i for i in range(COUNT)]


def test_1000_damaged_reviews_get_a_review_for_their_uid_or_a_400_never_a_5xx(hook: Webhook) -> None:
    with requests.Session() as session:
        seen = Counter(one(hook, session, seed) for seed in _seeds())
        metrics = session.get(hook.url("/metrics"), verify=_ca(hook), timeout=5).text
    errors = [line for line in metrics.splitlines() if 'result="error"' in line and not line.endswith(" 0.0")]
    assert errors == [], (
        f"the backstop answered some reviews (an unhandled exception; see {Path(hook.dir) / 'stderr.log'})"
    )
    assert hook.proc.poll() is None
    if len(_seeds()) == COUNT:  # the damage reaches every kind of answer, not just the 400 of the envelope
        assert min(seen[kind] for kind in ("400", "patched", "allowed", "refused")) >= 50, seen


@pytest.mark.parametrize("seed", REGRESSIONS)
def test_regressions(hook: Webhook, seed: int) -> None:
    with requests.Session() as session:
        one(hook, session, seed)
