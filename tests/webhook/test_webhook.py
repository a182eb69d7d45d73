"""`sandgate webhook` over real HTTPS: AdmissionReview round trips as the API server sends them.

There is no API server here: the tests play its part with the same JSON it posts, then apply the
returned patch with jsonpatch and validate the result for Kubernetes 1.30 and 1.33.
"""

from __future__ import annotations

import base64
import copy
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonpatch
import kubernetes_validate
import pytest
import requests
import trustme

from tests.support.proxyproc import free_port

POLICY = """apiVersion: sandgate.dev/v1alpha1
kind: EgressPolicy
metadata: {name: default}
spec:
  allow: [{host: api.openai.com}]
  secrets:
    - {name: openai, placeholder: sk-sandgate-openai-ph, source: {vault: {mount: secret, path: a/openai, key: k}}, hosts: [api.openai.com], agentEnv: [OPENAI_API_KEY]}
"""
POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "agent", "namespace": "sandbox-a"},
       "spec": {"containers": [{"name": "agent", "image": "example.com/agent:1"}]}}  # fmt: skip


class Webhook:
    def __init__(self, tmp: Path, config: str | None = None) -> None:
        self.dir = tmp
        self.ca = trustme.CA()
        self.cert, self.key = tmp / "tls.crt", tmp / "tls.key"
        self._issue(self.ca)
        self.ca.cert_pem.write_to_path(tmp / "ca.pem")
        (tmp / "policies" / "sandbox-a").mkdir(parents=True)
        (tmp / "policies" / "sandbox-a" / "default.yaml").write_text(POLICY)
        self.port = free_port()
        self.log = (tmp / "stderr.log").open("wb")
        extra = []
        if config is not None:
            (tmp / "injector.yaml").write_text(config)
            extra = ["--config", str(tmp / "injector.yaml")]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sandgate", "webhook", "--tls-cert", str(self.cert), "--tls-key", str(self.key), "--host", "127.0.0.1",
             "--port", str(self.port), "--policy-dir", str(tmp / "policies"), "--kubernetes-version", "1.30",
             "--policy-writer", "group:sandgate-admins", *extra],
            stdout=subprocess.PIPE, stderr=self.log,
        )  # fmt: skip
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        assert line.startswith("sandgate webhook ready"), (tmp / "stderr.log").read_text()

    def _issue(self, ca: trustme.CA) -> None:
        leaf = ca.issue_cert("sandgate-webhook.sandgate.svc", "127.0.0.1")
        leaf.private_key_pem.write_to_path(self.key)
        leaf.cert_chain_pems[0].write_to_path(self.cert)

    def url(self, path: str) -> str:
        return f"https://127.0.0.1:{self.port}{path}"

    def post(
        self, path: str, body: Any, *, ca: Path | None = None, headers: dict[str, str] | None = None
    ) -> requests.Response:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return requests.post(self.url(path), data=data, headers=headers or {"Content-Type": "application/json"},
                             verify=str(ca or self.dir / "ca.pem"), timeout=10)  # fmt: skip

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self.log.close()


@pytest.fixture(scope="module")
def hook(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Webhook]:
    w = Webhook(tmp_path_factory.mktemp("webhook"))
    yield w
    w.stop()


def review(obj: dict[str, Any] | None, operation: str = "CREATE", **extra: Any) -> dict[str, Any]:
    request = {"uid": str(uuid.uuid4()), "kind": {"group": "", "version": "v1", "kind": "Pod"}, "resource": {"group": "", "version": "v1", "resource": "pods"},
               "namespace": "sandbox-a", "operation": operation, "object": obj, "userInfo": {"username": "tenant"}, **extra}  # fmt: skip
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


def test_a_pod_is_injected_and_the_patch_applies_to_what_was_sent(hook: Webhook) -> None:
    sent = review(copy.deepcopy(POD))
    r = hook.post("/mutate", sent)
    assert r.status_code == 200
    body = r.json()
    assert body["apiVersion"] == "admission.k8s.io/v1" and body["kind"] == "AdmissionReview"
    resp = body["response"]
    assert resp["uid"] == sent["request"]["uid"] and resp["allowed"] is True and resp["patchType"] == "JSONPatch"
    pod = jsonpatch.apply_patch(POD, json.loads(base64.b64decode(resp["patch"])))
    for version in ("1.30", "1.33"):
        kubernetes_validate.validate(pod, version, strict=True)
    assert pod["spec"]["runtimeClassName"] == "gvisor"
    assert [c["name"] for c in pod["spec"]["initContainers"]] == ["sandgate-proxy", "sandgate-capture"]


def test_a_refusal_is_allowed_false_with_the_fix(hook: Webhook) -> None:
    pod = copy.deepcopy(POD)
    pod["metadata"]["annotations"] = {"sandgate.dev/policy": "nope"}
    resp = hook.post("/mutate", review(pod)).json()["response"]
    assert resp["allowed"] is False and resp["status"]["code"] == 403
    assert "Create a ConfigMap named 'nope'" in resp["status"]["message"]


@pytest.mark.parametrize("operation", ["UPDATE", "DELETE", "CONNECT"])
def test_other_operations_are_allowed_unchanged(hook: Webhook, operation: str) -> None:
    # (an UPDATE carries the pod before the change too: without it, it is refused; red team 45)
    old = {"oldObject": copy.deepcopy(POD)} if operation == "UPDATE" else {}
    resp = hook.post("/mutate", review(copy.deepcopy(POD), operation, **old)).json()["response"]
    assert resp["allowed"] is True and "patch" not in resp


def test_rt25_a_pod_mounting_its_own_vault_token_is_refused(hook: Webhook) -> None:
    """Red team 25: the pod's own projection of the token the sidecar logs in to Vault with."""
    pod = copy.deepcopy(POD)
    pod["spec"]["volumes"] = [
        {"name": "tok", "projected": {"sources": [{"serviceAccountToken": {"audience": "vault", "path": "t"}}]}}
    ]
    pod["spec"]["containers"][0]["volumeMounts"] = [{"name": "tok", "mountPath": "/tok"}]
    resp = hook.post("/mutate", review(pod)).json()["response"]
    assert resp["allowed"] is False and "serviceAccountToken" in resp["status"]["message"]


def test_rt25_kubectl_debug_cannot_read_the_vault_token_and_a_restricted_one_is_admitted(hook: Webhook) -> None:
    """``kubectl debug`` on an injected pod: an UPDATE of pods/ephemeralcontainers."""
    created = jsonpatch.apply_patch(
        POD, json.loads(base64.b64decode(hook.post("/mutate", review(copy.deepcopy(POD))).json()["response"]["patch"]))
    )
    safe = {"runAsUser": 1000, "runAsGroup": 1000, "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    for mounts, allowed in (([{"name": "sandgate-vault-token", "mountPath": "/tok"}], False), ([], True)):
        new = copy.deepcopy(created)
        new["spec"]["ephemeralContainers"] = [
            {"name": "debugger", "image": "busybox", "securityContext": safe, "volumeMounts": mounts}
        ]
        sent = review(new, "UPDATE", oldObject=created, subResource="ephemeralcontainers")
        resp = hook.post("/mutate", sent).json()["response"]
        assert resp["allowed"] is allowed and resp["uid"] == sent["request"]["uid"], resp


@pytest.mark.parametrize(("container", "allowed"), [("sandgate-proxy", False), ("agent", True)])
def test_rt25_kubectl_exec_into_the_sidecar_is_refused(hook: Webhook, container: str, allowed: bool) -> None:
    options = {
        "apiVersion": "v1",
        "kind": "PodExecOptions",
        "container": container,
        "command": ["cat", "/var/run/secrets/sandgate/vault/token"],
    }
    sent = review(options, "CONNECT", kind={"group": "", "version": "v1", "kind": "PodExecOptions"}, subResource="exec")
    resp = hook.post("/mutate", sent).json()["response"]
    assert resp["allowed"] is allowed and resp["uid"] == sent["request"]["uid"], resp


def test_dry_run_gets_the_same_answer(hook: Webhook) -> None:
    a = hook.post("/mutate", review(copy.deepcopy(POD))).json()["response"]
    b = hook.post("/mutate", review(copy.deepcopy(POD), dryRun=True)).json()["response"]
    assert a["patch"] == b["patch"]


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        (b"{not json", None, 400),
        (json.dumps({"kind": "AdmissionReview"}).encode(), None, 400),
        (b"{}", {"Content-Type": "text/plain"}, 415),
        (b"[" + b" " * (4 << 20) + b"]", None, 413),
    ],
    ids=["malformed", "not-a-review", "wrong-content-type", "oversized"],
)
def test_broken_calls_are_http_errors(hook: Webhook, body: bytes, headers: dict[str, str] | None, status: int) -> None:
    assert hook.post("/mutate", body, headers=headers).status_code == status


def test_policy_configmaps_are_validated_and_only_writers_may_change_them(hook: Webhook) -> None:
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "default", "namespace": "sandbox-a", "labels": {"sandgate.dev/policy": "true"}},
          "data": {"policy.yaml": POLICY}}  # fmt: skip
    admin = {"username": "alice", "groups": ["sandgate-admins"]}
    ok = hook.post("/validate", review(cm, userInfo=admin)).json()["response"]
    assert ok["allowed"] is True
    tenant = hook.post("/validate", review(cm, userInfo={"username": "agent-ci", "groups": ["tenants"]})).json()[
        "response"
    ]
    assert tenant["allowed"] is False and "may not change Sandgate policies" in tenant["status"]["message"]
    broken = copy.deepcopy(cm)
    broken["data"]["policy.yaml"] = POLICY.replace("allow: [{host: api.openai.com}]", "allow: [{host: '*.com'}]")
    bad = hook.post("/validate", review(broken, userInfo=admin)).json()["response"]
    assert bad["allowed"] is False and "spec.allow[0].host" in bad["status"]["message"]
    other = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "sandbox-a"}, "data": {}}
    assert hook.post("/validate", review(other, userInfo={"username": "anyone"})).json()["response"]["allowed"] is True


def test_rt27_an_unlabelled_configmap_a_sidecar_would_load_as_its_policy_is_a_writers_only(hook: Webhook) -> None:
    """The sidecar's policy volume names its ConfigMap, label or not, and the proxy reloads it: a
    policy deleted while pods use it, then created again unlabelled by anyone with ConfigMap
    rights, would be their policy (binding the real key to the creator's host)."""
    evil = POLICY.replace("hosts: [api.openai.com]", "hosts: [attacker.example]")
    cm = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "default", "namespace": "sandbox-a"},
        "data": {"policy.yaml": evil},
    }
    tenant = {"username": "agent-ci", "groups": ["tenants"]}
    for operation, obj, old in (("CREATE", cm, None), ("UPDATE", cm, {**cm, "data": {}}), ("DELETE", None, cm)):
        resp = hook.post("/validate", review(obj, operation, oldObject=old, userInfo=tenant)).json()["response"]
        assert resp["allowed"] is False and "may not change Sandgate policies" in resp["status"]["message"], operation
    admin = {"username": "alice", "groups": ["sandgate-admins"]}
    broken = {**cm, "data": {"policy.yaml": "spec: {allow: [{host: '*.com'}]}"}}
    assert hook.post("/validate", review(broken, userInfo=admin)).json()["response"]["allowed"] is False


def test_rt30_a_policy_in_binary_data_is_a_writers_only_and_never_unchecked(hook: Webhook) -> None:
    """The kubelet takes the sidecar's ``policy.yaml`` key from data or binaryData: a tenant's
    unlabelled ConfigMap with it in binaryData, or a writer's policy moved there (unchecked), were
    admitted. binaryData.policy.yaml is the writers' and refused: a policy is written under data."""
    evil = base64.b64encode(POLICY.replace("hosts: [api.openai.com]", "hosts: [attacker.example]").encode()).decode()
    cm = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "default", "namespace": "sandbox-a"},
        "binaryData": {"policy.yaml": evil},
    }
    tenant = {"username": "agent-ci", "groups": ["tenants"]}
    for operation, obj, old in (("CREATE", cm, None), ("UPDATE", cm, {**cm, "binaryData": {}})):
        resp = hook.post("/validate", review(obj, operation, oldObject=old, userInfo=tenant)).json()["response"]
        assert resp["allowed"] is False, operation
    admin = {"username": "alice", "groups": ["sandgate-admins"]}
    resp = hook.post("/validate", review(cm, userInfo=admin)).json()["response"]
    assert resp["allowed"] is False and "binaryData" in resp["status"]["message"]


def test_rt30_a_configmap_delete_without_the_old_object_is_refused(hook: Webhook) -> None:
    """Whether it is a policy cannot be told: fail closed, as for any ConfigMap the webhook cannot read."""
    sent = review(None, "DELETE", userInfo={"username": "agent-ci"})
    sent["request"]["kind"] = {"group": "", "version": "v1", "kind": "ConfigMap"}
    sent["request"]["resource"] = {"group": "", "version": "v1", "resource": "configmaps"}
    resp = hook.post("/validate", sent).json()["response"]
    assert resp["allowed"] is False and "oldObject" in resp["status"]["message"]


def test_rt27_the_vault_ca_configmap_is_a_writers_only(tmp_path: Path) -> None:
    """``vaultCACertConfigMap``: whom the sidecar trusts as Vault, and so where its token goes."""
    w = Webhook(tmp_path, config="vaultAddr: https://vault.vault.svc:8200\nvaultCACertConfigMap: vault-ca\n")
    try:
        cm = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "vault-ca", "namespace": "sandbox-a"},
            "data": {"ca.crt": "x"},
        }
        tenant = w.post("/validate", review(cm, userInfo={"username": "agent-ci"})).json()["response"]
        assert tenant["allowed"] is False
        admin = w.post("/validate", review(cm, userInfo={"username": "alice", "groups": ["sandgate-admins"]})).json()[
            "response"
        ]
        assert admin["allowed"] is True
    finally:
        w.stop()


def test_a_valid_policy_with_warnings_is_admitted_and_the_writer_sees_them(hook: Webhook) -> None:
    """As `sandgate policy check` prints them: kubectl shows an admission's warnings to whoever
    applied the ConfigMap ("Warning: ..."). A clean policy has none."""
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "default", "namespace": "sandbox-a", "labels": {"sandgate.dev/policy": "true"}},
          "data": {"policy.yaml": POLICY.replace("allow: [{host: api.openai.com}]", "allow: [{host: api.openai.com, methods: [PSOT]}]")}}  # fmt: skip
    admin = {"username": "alice", "groups": ["sandgate-admins"]}
    resp = hook.post("/validate", review(cm, userInfo=admin)).json()["response"]
    assert resp["allowed"] is True
    assert resp["warnings"] == ["sandgate policy: spec.allow[0].methods[0]: 'PSOT' is not a standard HTTP method "
                                "(RFC 9110, PATCH or WebDAV); did you mean 'POST'?"]  # fmt: skip
    cm["data"]["policy.yaml"] = POLICY
    assert "warnings" not in hook.post("/validate", review(cm, userInfo=admin)).json()["response"]


def test_health_and_metrics(hook: Webhook) -> None:
    ca = str(hook.dir / "ca.pem")
    assert requests.get(hook.url("/healthz"), verify=ca, timeout=5).text == "ok"
    assert requests.get(hook.url("/readyz"), verify=ca, timeout=5).status_code == 200
    hook.post("/mutate", review(copy.deepcopy(POD)))
    metrics = requests.get(hook.url("/metrics"), verify=ca, timeout=5).text
    assert 'sandgate_webhook_admissions_total{operation="CREATE",result="injected"}' in metrics
    assert "sandgate_webhook_admission_duration_seconds_count" in metrics
    from proxy.version import version

    assert f'sandgate_build_info{{version="{version()}"}} 1.0' in metrics


def test_the_certificate_is_reloaded_without_a_restart(hook: Webhook) -> None:
    new_ca = trustme.CA()
    new_ca.cert_pem.write_to_path(hook.dir / "new-ca.pem")
    hook._issue(new_ca)
    deadline = time.monotonic() + 15
    while True:
        try:
            r = hook.post("/mutate", review(copy.deepcopy(POD)), ca=hook.dir / "new-ca.pem")
            break
        except requests.exceptions.SSLError:
            if time.monotonic() > deadline:
                pytest.fail("the new certificate was not served")
            time.sleep(0.2)
    assert r.status_code == 200 and hook.proc.poll() is None
    with pytest.raises(requests.exceptions.SSLError):
        hook.post("/mutate", review(copy.deepcopy(POD)), ca=hook.dir / "ca.pem")
    hook.ca = new_ca
    new_ca.cert_pem.write_to_path(hook.dir / "ca.pem")


def _metric(hook: Webhook, operation: str, result: str) -> float:
    text = requests.get(hook.url("/metrics"), verify=str(hook.dir / "ca.pem"), timeout=5).text
    line = f'sandgate_webhook_admissions_total{{operation="{operation}",result="{result}"}} '
    return next((float(x.removeprefix(line)) for x in text.splitlines() if x.startswith(line)), 0.0)


def _pod_with(path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    pod = copy.deepcopy(POD)
    node: Any = pod
    for key in path[:-1]:
        node = node.setdefault(key, {}) if isinstance(key, str) else node[key]
    node[path[-1]] = value
    return pod


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("metadata", "annotations", "sandgate.dev/policy"), "p" * 300, "no EgressPolicy 'pppp"),
        (("metadata", "annotations"), ["sandgate.dev/policy"], "metadata.annotations must be a map of strings to strings (got a list)"),
        (("spec", "containers"), "agent", "spec.containers must be a list of containers ({name, image, ...}) (got a string)"),
        (("spec", "containers", 0, "env"), {"A": "1"}, "spec.containers[0].env must be a list of {name, value|valueFrom} (got an object)"),
        (("spec", "volumes"), "data", "spec.volumes must be a list of {name, <volume source>} (got a string)"),
        (("spec", "securityContext"), [], "spec.securityContext must be an object (got a list)"),
        (("spec", "containers", 0, "securityContext"), None, ""),
    ],
    ids=["policy-annotation-300-chars", "annotations-list", "containers-string", "env-object", "volumes-string",
         "securityContext-list", "securityContext-null"],
)  # fmt: skip
def test_a_pod_the_webhook_cannot_read_is_refused_for_that_uid_naming_the_field(
    hook: Webhook, path: tuple[str | int, ...], value: Any, message: str
) -> None:
    before = _metric(hook, "CREATE", "denied")
    sent = review(_pod_with(path, value))
    r = hook.post("/mutate", sent)
    assert r.status_code == 200
    resp = r.json()["response"]
    assert resp["uid"] == sent["request"]["uid"]
    if not message:  # null reads as absent: injected like any pod
        assert resp["allowed"] is True and resp["patchType"] == "JSONPatch"
        return
    assert resp["allowed"] is False and message in resp["status"]["message"]
    assert _metric(hook, "CREATE", "denied") == before + 1


def _deep_body(depth: int) -> bytes:
    sent = review(copy.deepcopy(POD))
    return (json.dumps(sent)[:-1] + ', "x": ' + "[" * depth + "]" * depth + "}").encode()


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (_deep_body(100_000), "nested deeper than 100 levels"),
        (_deep_body(101), "nested deeper than 100 levels"),
        (json.dumps(review(POD, userInfo=["tenant"])).encode(), "request.userInfo must be an object (got a list)"),
        (json.dumps(review(POD, userInfo={"username": "a", "groups": "admins"})).encode(), "request.userInfo.groups must be a list of group names (got a string)"),
        (json.dumps(review(POD, operation="PATCH")).encode(), "request.operation must be 'CREATE', 'UPDATE', 'DELETE' or 'CONNECT'"),
        (json.dumps(review(POD, namespace="../kube-system")).encode(), "request.namespace must be a namespace name"),
        (json.dumps(review(POD, dryRun="yes")).encode(), "request.dryRun must be true or false (got a string)"),
        (json.dumps(review(POD, uid=None)).encode(), "request.uid must be a string (got null)"),
        (json.dumps(review("a pod")).encode(), "request.object must be an object (got a string)"),
        (json.dumps(review(None)).encode(), "request.object: a CREATE carries the pod"),
        (json.dumps({**review(POD), "request": "x"}).encode(), "request must be an object (got a string)"),
        (b'"AdmissionReview"', "the body must be an object (got a string)"),
        (b"\xff\xfe", "the body is not JSON"),
    ],
    ids=["nested-100000-deep", "nested-101-deep", "userInfo-list", "groups-string", "operation-unknown",
         "namespace-not-a-name", "dryRun-string", "uid-null", "object-string", "object-null", "request-string",
         "body-string", "body-not-utf8"],
)  # fmt: skip
def test_a_review_the_api_server_would_not_send_is_a_400_naming_the_field(
    hook: Webhook, body: bytes, error: str
) -> None:
    for path in ("/mutate", "/validate"):
        r = hook.post(path, body)
        if path == "/validate" and error.startswith("request.object: a CREATE"):
            continue  # a ConfigMap review without an object is not a policy: nothing to check
        assert r.status_code == 400, (path, r.text)
        assert error in r.json()["error"], path


POLICY_CM = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "default", "namespace": "sandbox-a", "labels": {"sandgate.dev/policy": "true"}},
             "data": {"policy.yaml": POLICY}}  # fmt: skip
ADMIN = {"username": "alice", "groups": ["sandgate-admins"]}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"data": {"policy.yaml": "spec: " + "[" * 600 + "]" * 600}}, "nested deeper than 32 levels"),
        ({"data": {"policy.yaml": ["apiVersion: sandgate.dev/v1alpha1"]}}, "data[policy.yaml] must be a string (got a list)"),
        ({"data": "policy.yaml"}, "data must be an object (got a string)"),
        ({"metadata": {"name": "default", "labels": ["sandgate.dev/policy"]}}, "metadata.labels must be an object (got a list)"),
        ({"metadata": {"name": "Default", "labels": {"sandgate.dev/policy": "true"}}}, "the ConfigMap and the policy must have the same name"),
    ],
    ids=["policy-nested-600-deep", "policy-a-list", "data-a-string", "labels-a-list", "name-mismatch"],
)  # fmt: skip
def test_a_policy_configmap_the_webhook_cannot_read_is_refused_naming_the_field(
    hook: Webhook, change: dict[str, Any], message: str
) -> None:
    sent = review({**copy.deepcopy(POLICY_CM), **change}, userInfo=ADMIN)
    r = hook.post("/validate", sent)
    assert r.status_code == 200
    resp = r.json()["response"]
    assert resp["uid"] == sent["request"]["uid"] and resp["allowed"] is False and message in resp["status"]["message"]


def test_a_bad_config_stops_the_webhook_with_the_message_and_no_traceback(tmp_path: Path) -> None:
    (tmp_path / "injector.yaml").write_text("exemptNamespaces: kube-system\nproxyPort: x\n")
    done = subprocess.run(
        [sys.executable, "-m", "sandgate", "webhook", "--tls-cert", "x", "--tls-key", "y", "--policy-dir", str(tmp_path),
         "--config", str(tmp_path / "injector.yaml")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert "write a list: [kube-system]" in done.stderr and "proxyPort must be a TCP port" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_background_task_that_keeps_failing_ends_the_process_non_zero(tmp_path: Path) -> None:
    w = Webhook(tmp_path)
    try:
        w.cert.unlink()  # the mounted Secret is gone: the reload loop cannot even find its files
        assert w.proc.wait(30) == 1
    finally:
        w.stop()
    log = (tmp_path / "stderr.log").read_text()
    assert '"task": "tls-reload"' in log and '"error": "FileNotFoundError"' in log and "gave up" in log
    assert "background task tls-reload keeps failing; exiting" in log


def test_a_certificate_pair_that_does_not_load_keeps_the_old_one_in_use_and_is_counted(tmp_path: Path) -> None:
    w = Webhook(tmp_path)
    try:
        # A new certificate whose key has not arrived yet: loading it into the live context would
        # leave that context unable to complete any handshake.
        trustme.CA().issue_cert("127.0.0.1").cert_chain_pems[0].write_to_path(w.cert)
        deadline = time.monotonic() + 15
        while (
            'sandgate_internal_errors_total{task="tls-reload"} 1.0'
            not in requests.get(w.url("/metrics"), verify=str(w.dir / "ca.pem"), timeout=5).text
        ):
            assert time.monotonic() < deadline, "the failed reload was not counted"
            time.sleep(0.2)
        r = w.post("/mutate", review(copy.deepcopy(POD)))  # still the old certificate, and it works
        assert r.status_code == 200 and r.json()["response"]["allowed"] is True
        assert requests.get(w.url("/readyz"), verify=str(w.dir / "ca.pem"), timeout=5).status_code == 200
    finally:
        w.stop()
    assert '"event": "tls_reload", "result": "error", "error": "SSLError"' in (tmp_path / "stderr.log").read_text()
