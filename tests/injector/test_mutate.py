"""Golden files for injector.mutate: testdata/<case>.yaml is the admission input, <case>.out.yaml the
expected outcome (the mutated pod, or the refusal). Regenerate after an intended change with
SANDGATE_REGENERATE_GOLDEN=1 and review the diff.

Every patch is applied with jsonpatch to the original pod and must give exactly the mutated pod,
which must be a valid Pod for Kubernetes 1.30 and 1.33 (kubernetes-validate, strict).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import jsonpatch
import kubernetes_validate
import pytest
import yaml

from injector import constants as k
from injector.config import InjectorConfig, parse_config
from injector.mutate import BrokenPolicy, MissingPolicy, MutationResult, mutate, policy_name, review_update
from proxy.identity import POD_IDENTITY_ENV
from proxy.policy.load import PolicyInvalid, parse_policy

DATA = Path(__file__).parent / "testdata"
CASES = sorted(p.stem for p in DATA.glob("*.yaml") if not p.name.endswith(".out.yaml"))
REGENERATE = os.environ.get("SANDGATE_REGENERATE_GOLDEN") == "1"

POLICY = parse_policy("""
apiVersion: sandgate.dev/v1alpha1
kind: EgressPolicy
metadata: {name: default}
spec:
  allow: [{host: api.openai.com}]
  secrets:
    - name: openai
      placeholder: sk-sandgate-openai-placeholder
      source: {vault: {mount: secret, path: sandbox-a/openai, key: api_key}}
      hosts: [api.openai.com]
      agentEnv: [OPENAI_API_KEY]
""")
CONFIG = InjectorConfig(
    image="registry.example/sandgate@sha256:" + "0" * 64,
    kubernetes_version="1.30",
    vault_addr="https://vault.vault.svc:8200",
)


def run_case(case: str) -> tuple[dict[str, Any], MutationResult]:
    spec = yaml.safe_load((DATA / f"{case}.yaml").read_text())
    config = parse_config(yaml.safe_dump(spec.get("config") or {}), base=CONFIG)
    pod = spec["pod"]
    policy: Any = POLICY
    if spec.get("policy") == "missing":
        policy = MissingPolicy(policy_name(pod))
    elif spec.get("policy") == "invalid":
        try:
            parse_policy(
                "apiVersion: sandgate.dev/v1alpha1\nkind: EgressPolicy\nmetadata: {name: default}\nspec: {allow: [{host: '*.com'}]}"
            )
        except PolicyInvalid as e:
            policy = BrokenPolicy("default", tuple(str(x) for x in e.errors))
    return pod, mutate(copy.deepcopy(pod), policy, config, operation=spec.get("operation", "CREATE"))


def outcome(result: MutationResult) -> dict[str, Any]:
    if not result.allowed:
        return {"allowed": False, "message": result.message}
    if result.pod is None:
        return {"allowed": True, "unchanged": result.skipped}
    return {"allowed": True, "pod": result.pod}


@pytest.mark.parametrize("case", CASES)
def test_golden(case: str) -> None:
    original, result = run_case(case)
    got = outcome(result)
    golden = DATA / f"{case}.out.yaml"
    if REGENERATE:
        golden.write_text(yaml.safe_dump(got, sort_keys=False, width=120))
    assert got == yaml.safe_load(golden.read_text()), (
        f"{case}: differs from {golden.name} (regenerate with SANDGATE_REGENERATE_GOLDEN=1)"
    )
    if result.pod is not None:
        assert jsonpatch.apply_patch(original, result.patch) == result.pod
        for version in ("1.30", "1.33"):
            kubernetes_validate.validate(result.pod, version, strict=True)


def test_d17_injecting_an_injected_pod_changes_nothing() -> None:
    _, first = run_case("plain")
    assert first.pod is not None
    again = mutate(copy.deepcopy(first.pod), POLICY, CONFIG)
    assert again.allowed and again.pod is None and again.patch == [] and again.skipped == "already injected"


def test_d16_only_the_sidecar_gets_the_vault_token_and_no_pod_token_is_mounted() -> None:
    _, result = run_case("plain")
    pod = result.pod
    assert pod is not None and pod["spec"]["automountServiceAccountToken"] is False
    for c in pod["spec"]["initContainers"] + pod["spec"]["containers"]:
        mounts = {m["name"] for m in c.get("volumeMounts", [])}
        assert (k.VOLUME_VAULT_TOKEN in mounts) == (c["name"] == k.SIDECAR)
        assert (k.VOLUME_CONF in mounts) == (c["name"] == k.SIDECAR), "the CA key's volume is the sidecar's alone"
        assert (k.VOLUME_POLICY in mounts) == (c["name"] == k.SIDECAR)
    token = next(v for v in pod["spec"]["volumes"] if v["name"] == k.VOLUME_VAULT_TOKEN)
    assert token["projected"]["sources"][0]["serviceAccountToken"]["audience"] == CONFIG.vault_audience


def _vault_role(pod: dict[str, Any], config: InjectorConfig, namespace: str = "") -> str | None:
    result = mutate(copy.deepcopy(pod), POLICY, config, namespace=namespace)
    if result.pod is None:
        return None
    sidecar = next(c for c in result.pod["spec"]["initContainers"] if c["name"] == k.SIDECAR)
    role: str = sidecar["args"][sidecar["args"].index("--vault-role") + 1]
    return role


def test_rt31_each_namespace_logs_in_to_vault_as_its_own_role_by_default() -> None:
    """Every namespace's policy is usually called `default`: a role named after the policy alone
    was one role for every tenant, so any tenant's service-account token read every tenant's keys."""
    pod = yaml.safe_load((DATA / "plain.yaml").read_text())["pod"]
    del pod["metadata"]["namespace"]
    roles = {ns: _vault_role(pod, CONFIG, ns) for ns in ("tenant-a", "tenant-b")}
    assert roles == {"tenant-a": "tenant-a.default", "tenant-b": "tenant-b.default"}
    assert _vault_role(pod, CONFIG) is None  # no namespace to name the role after: refused
    assert "namespace is not known" in mutate(copy.deepcopy(pod), POLICY, CONFIG).message
    shared = parse_config("vaultRole: agents", base=CONFIG)  # one role on purpose: the operator's choice
    assert _vault_role(pod, shared, "tenant-a") == _vault_role(pod, shared, "tenant-b") == "agents"
    assert _vault_role(pod, parse_config("vaultRole: sg-{namespace}_{policy}", base=CONFIG), "t") == "sg-t_default"


def test_d14_sidecar_first_then_capture_then_user_init_containers() -> None:
    _, result = run_case("d14-init-containers")
    assert result.pod is not None
    names = [c["name"] for c in result.pod["spec"]["initContainers"]]
    assert names == [k.SIDECAR, k.CAPTURE, "fetch-tools"]
    assert result.pod["spec"]["initContainers"][0]["restartPolicy"] == "Always"


def test_agents_get_placeholders_and_the_ca_never_a_real_value() -> None:
    _, result = run_case("plain")
    assert result.pod is not None
    agent = next(c for c in result.pod["spec"]["containers"] if c["name"] == "agent")
    env = {e["name"]: e.get("value") for e in agent["env"]}
    assert env["OPENAI_API_KEY"] == "sk-sandgate-openai-placeholder"  # the pod's own value is replaced
    assert env["SSL_CERT_FILE"] == k.CA_FILE and env["NODE_EXTRA_CA_CERTS"] == k.CA_FILE
    assert agent["securityContext"]["runAsUser"] == CONFIG.agent_uid
    assert {"name": k.VOLUME_CA, "mountPath": k.CA_DIR, "readOnly": True} in agent["volumeMounts"]


def test_d05_ephemeral_debug_containers_follow_the_same_rules() -> None:
    _, result = run_case("plain")
    injected = result.pod
    assert injected is not None
    debug = copy.deepcopy(injected)
    debug["spec"]["ephemeralContainers"] = [
        {"name": "debugger", "image": "busybox", "securityContext": {"capabilities": {"add": ["NET_ADMIN", "NET_RAW"]}}}
    ]
    refused = review_update(injected, debug, CONFIG, subresource="ephemeralcontainers")
    assert not refused.allowed and "NET_ADMIN" in refused.message and "runAsUser" in refused.message
    debug["spec"]["ephemeralContainers"] = [
        {"name": "debugger", "image": "busybox", "securityContext": {"runAsUser": 4242, "runAsGroup": 4242}}
    ]
    refused = review_update(injected, debug, CONFIG, subresource="ephemeralcontainers")
    assert not refused.allowed and "allowPrivilegeEscalation" in refused.message  # (never mutated: it says so itself)
    debug["spec"]["ephemeralContainers"][0]["securityContext"]["allowPrivilegeEscalation"] = False
    refused = review_update(injected, debug, CONFIG, subresource="ephemeralcontainers")
    assert not refused.allowed and "capabilities.drop: include ALL" in refused.message  # (red team 46)
    debug["spec"]["ephemeralContainers"][0]["securityContext"]["capabilities"] = {"drop": ["ALL"]}
    assert review_update(injected, debug, CONFIG, subresource="ephemeralcontainers").allowed


def test_d06_our_containers_cannot_be_changed_on_a_running_pod() -> None:
    _, result = run_case("plain")
    injected = result.pod
    assert injected is not None
    swapped = copy.deepcopy(injected)
    swapped["spec"]["initContainers"][0]["image"] = "attacker.example/proxy:latest"
    verdict = review_update(injected, swapped, CONFIG)
    assert not verdict.allowed and "cannot be changed" in verdict.message
    agent_update = copy.deepcopy(injected)
    agent_update["spec"]["containers"][0]["image"] = "example.com/agent:1.1"
    assert review_update(injected, agent_update, CONFIG).allowed


def _with(path: tuple[str | int, ...], value: Any, pod: dict[str, Any] | None = None) -> dict[str, Any]:
    out = copy.deepcopy(pod or PLAIN)
    node: Any = out
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return out


def _nested(depth: int) -> Any:
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value


PLAIN: dict[str, Any] = yaml.safe_load((DATA / "plain.yaml").read_text())["pod"]


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("metadata", "annotations"), [], "metadata.annotations must be a map of strings to strings (got a list)"),
        (("metadata", "annotations"), {k.POLICY_ANNOTATION: 7}, "metadata.annotations[sandgate.dev/policy] must be a string (got a number)"),
        (("spec", "containers"), "agent", "spec.containers must be a list of containers ({name, image, ...}) (got a string)"),
        (("spec", "containers", 0, "env"), "A=1", "spec.containers[0].env must be a list of {name, value|valueFrom} (got a string)"),
        (("spec", "containers", 0, "env", 0), ["OPENAI_API_KEY"], "spec.containers[0].env[0] must be an object (got a list) - spec.containers[0].env must be a list of {name, value|valueFrom}"),
        (("spec", "containers", 0, "env", 0, "name"), None, "spec.containers[0].env[0].name must be a string (got null)"),
        (("spec", "volumes"), "scratch", "spec.volumes must be a list of {name, <volume source>} (got a string)"),
        (("spec", "securityContext"), [], "spec.securityContext must be an object (got a list)"),
        (("spec", "securityContext"), {"runAsUser": "0"}, "spec.securityContext.runAsUser must be an integer (got a string)"),
        (("spec", "containers", 0, "securityContext"), 3, "spec.containers[0].securityContext must be an object (got a number)"),
        (("spec", "containers", 0, "securityContext"), {"privileged": "true"}, "spec.containers[0].securityContext.privileged must be true or false (got a string)"),
        (("spec", "hostNetwork"), 1, "spec.hostNetwork must be true or false (got a number)"),
        (("spec", "containers", 0, "name"), None, "spec.containers[0].name must be a string (got null)"),
        (("spec", "affinity"), _nested(100_000), "nested deeper than 64 levels"),
        (("spec", "containers", 0, "name"), "c" * 100_000, "spec.containers[0].name must be at most 253 characters"),
    ],
    ids=["annotations-list", "annotation-number", "containers-string", "env-string", "env-item-list", "env-name-null",
         "volumes-string", "pod-securityContext-list", "runAsUser-string", "securityContext-number", "privileged-string",
         "hostNetwork-number", "container-name-null", "nested-100000-deep", "container-name-100000-chars"],
)  # fmt: skip
def test_a_pod_the_injector_cannot_read_is_refused_naming_the_field(
    path: tuple[str | int, ...], value: Any, message: str
) -> None:
    result = mutate(_with(path, value), POLICY, CONFIG)
    assert not result.allowed and result.pod is None and message in result.message


def test_a_refusal_never_quotes_the_value_it_could_not_read() -> None:
    pod = _with(("spec", "containers", 0, "env"), [{"name": "OPENAI_API_KEY", "value": {"v": "sk-live-real-key"}}])
    result = mutate(pod, POLICY, CONFIG)
    assert not result.allowed and "spec.containers[0].env[0].value must be a string (got an object)" in result.message
    assert "sk-live" not in result.message


@pytest.mark.parametrize(
    "path",
    [("metadata", "annotations"), ("metadata", "labels"), ("spec", "volumes"), ("spec", "securityContext"),
     ("spec", "containers", 0, "env"), ("spec", "containers", 0, "securityContext"), ("spec", "initContainers")],
    ids=lambda p: ".".join(map(str, p)),
)  # fmt: skip
def test_null_reads_as_absent_as_kubernetes_reads_it(path: tuple[str | int, ...]) -> None:
    pod = _with(path, None)
    result = mutate(copy.deepcopy(pod), POLICY, CONFIG)
    assert result.allowed and result.pod is not None
    assert jsonpatch.apply_patch(pod, result.patch) == result.pod
    for version in ("1.30", "1.33"):
        kubernetes_validate.validate(result.pod, version, strict=True)


def test_an_update_the_injector_cannot_read_is_refused_naming_the_field() -> None:
    _, result = run_case("plain")
    assert result.pod is not None
    broken = _with(("spec", "ephemeralContainers"), [{"name": "debug", "securityContext": "privileged"}], result.pod)
    verdict = review_update(result.pod, broken, CONFIG, subresource="ephemeralcontainers")
    assert not verdict.allowed
    assert "spec.ephemeralContainers[0].securityContext must be an object (got a string)" in verdict.message


def test_agents_get_a_group_that_is_not_the_proxys() -> None:
    _, result = run_case("plain")
    assert result.pod is not None
    agent = next(c for c in result.pod["spec"]["containers"] if c["name"] == "agent")
    assert agent["securityContext"]["runAsGroup"] == CONFIG.agent_gid != CONFIG.proxy_uid
    sidecar = next(c for c in result.pod["spec"]["initContainers"] if c["name"] == k.SIDECAR)
    assert sidecar["securityContext"]["runAsGroup"] == CONFIG.proxy_uid


def test_a_group_the_pod_chose_is_kept() -> None:
    chosen = _with(("spec", "securityContext"), {"runAsGroup": 3000})
    result = mutate(chosen, POLICY, CONFIG)
    assert result.pod is not None
    assert "runAsGroup" not in result.pod["spec"]["containers"][0]["securityContext"]
    own = _with(("spec", "containers", 0, "securityContext"), {"runAsGroup": 4000})
    result = mutate(own, POLICY, CONFIG)
    assert result.pod is not None and result.pod["spec"]["containers"][0]["securityContext"]["runAsGroup"] == 4000


def test_only_the_sidecar_learns_the_pods_identity_from_the_downward_api() -> None:
    _, result = run_case("plain")
    assert result.pod is not None
    for c in result.pod["spec"]["initContainers"] + result.pod["spec"]["containers"]:
        refs = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in c.get("env", []) if "valueFrom" in e}
        if c["name"] == k.SIDECAR:
            assert refs == {var: path for var, path in POD_IDENTITY_ENV.values()}
        else:
            assert not set(refs) & {var for var, _ in POD_IDENTITY_ENV.values()}


@pytest.mark.parametrize(
    ("name", "hint"), [("research", False), ("Research", True), ("p" * 1_000_000, True)], ids=["label", "upper", "1MB"]
)
def test_a_missing_policy_names_what_to_create_without_echoing_the_annotation(name: str, hint: bool) -> None:
    result = mutate(copy.deepcopy(PLAIN), MissingPolicy(name), CONFIG)
    assert not result.allowed and "Create a ConfigMap named" in result.message and len(result.message) < 1000
    assert ("a policy's name is a DNS-1123 label" in result.message) == hint
