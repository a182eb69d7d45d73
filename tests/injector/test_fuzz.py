"""Properties of the injector over generated input, the way an API server or a fuzzer could send it.

Pods are generated valid, then damaged: any field replaced by another JSON type, null, a long
string or a deeply nested value, or removed. Whatever comes in, ``mutate`` and ``review_update``
answer with a verdict or a patch, never an exception; every patch applies to what was sent, and when
what was sent is a valid Pod, so is the result (kubernetes-validate, strict). The injector's config
parser likewise answers every document with a config or a ConfigError.

Seeded (``derandomize``) and bounded, so CI runs the same examples in a few seconds; a failure
prints the example to replay and belongs in the regression tables of test_mutate / test_config.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import jsonpatch
import kubernetes_validate
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from injector import constants as k
from injector.config import ConfigError, InjectorConfig, parse_config
from injector.mutate import MutationResult, mutate, review_update
from injector.shape import MAX_DEPTH, nested_deeper_than
from tests.injector.test_mutate import CONFIG, POLICY

FUZZ = settings(
    max_examples=150,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

VOLUME_NAMES = ["data", "cache", "tok", "sandgate-conf", "sandgate-vault-token", "sandgate-x"]
name = st.from_regex(r"[a-z][a-z0-9-]{0,6}", fullmatch=True)
env_var = st.fixed_dictionaries(
    {"name": st.sampled_from([*k.CA_ENV, *k.PROXY_ENV, "OPENAI_API_KEY", "HOME", "SANDGATE_POD_UID"])},
    optional={
        "value": st.text(max_size=8),
        "valueFrom": st.just({"fieldRef": {"fieldPath": "metadata.name"}}),
    },
)
capabilities = st.fixed_dictionaries(
    {}, optional={"add": st.lists(st.sampled_from(["CHOWN", "NET_ADMIN", "cap_net_raw", "ALL"]), max_size=2),
                  "drop": st.just(["ALL"])}
)  # fmt: skip
ids = st.sampled_from([0, 1000, 1337, 2000, 65534])
security_context = st.fixed_dictionaries(
    {},
    optional={
        "runAsUser": ids, "runAsGroup": ids, "runAsNonRoot": st.booleans(), "privileged": st.booleans(),
        "allowPrivilegeEscalation": st.booleans(), "readOnlyRootFilesystem": st.booleans(), "capabilities": capabilities,
    },
)  # fmt: skip
container = st.fixed_dictionaries(
    {"name": st.one_of(name, st.sampled_from(sorted(k.OUR_CONTAINERS))), "image": st.just("example.com/agent:1")},
    optional={
        "env": st.lists(env_var, max_size=3),
        "volumeMounts": st.lists(
            st.fixed_dictionaries({"name": st.sampled_from([*VOLUME_NAMES, "sandgate-ca"]), "mountPath": st.sampled_from(["/data", "/data", k.CA_DIR])},
                                  optional={"readOnly": st.booleans()}),
            max_size=2,
        ),
        "securityContext": security_context,
        "ports": st.lists(st.fixed_dictionaries({"containerPort": st.integers(1, 65535)}, optional={"hostPort": st.integers(1, 65535)}), max_size=2),
        "restartPolicy": st.just("Always"),
    },
)  # fmt: skip
sa_token = st.fixed_dictionaries({"path": st.just("t")}, optional={"audience": st.sampled_from(["vault", "api"])})
volume_source = st.sampled_from(
    [
        {}, {"emptyDir": {}}, {"hostPath": {"path": "/"}}, {"configMap": {"name": "c"}}, {"secret": {"secretName": "s"}},
        {"persistentVolumeClaim": {"claimName": "w"}}, {"nfs": {"server": "198.18.0.9", "path": "/"}},
        {"gitRepo": {"repository": "https://198.18.0.9/r"}}, {"csi": {"driver": "nfs.csi.k8s.io"}},
        {"cephfs": {"monitors": ["198.18.0.9:6789"]}},
    ]
) | st.lists(st.one_of(st.just({"configMap": {"name": "c"}}), sa_token.map(lambda t: {"serviceAccountToken": t})),
             min_size=1, max_size=2).map(lambda sources: {"projected": {"sources": sources}})  # fmt: skip
volume = st.builds(lambda name, source: {"name": name, **source}, st.sampled_from(VOLUME_NAMES), volume_source)
pod_strategy = st.fixed_dictionaries(
    {
        "apiVersion": st.just("v1"),
        "kind": st.just("Pod"),
        "metadata": st.fixed_dictionaries(
            {"name": name},
            optional={
                "namespace": st.sampled_from(["sandbox-a", "kube-system"]),
                "labels": st.dictionaries(st.sampled_from(["app", "team"]), name, max_size=2),
                "annotations": st.dictionaries(
                    st.sampled_from([k.POLICY_ANNOTATION, k.STATUS_ANNOTATION, "sidecar.istio.io/inject"]),
                    st.sampled_from(["default", k.STATUS_INJECTED, "false"]),
                    max_size=3,
                ),
            },
        ),
        "spec": st.fixed_dictionaries(
            {"containers": st.lists(container, min_size=1, max_size=3)},
            optional={
                "initContainers": st.lists(container, max_size=2),
                "volumes": st.lists(volume, max_size=2),
                "securityContext": st.fixed_dictionaries(
                    {}, optional={"runAsUser": ids, "runAsGroup": ids, "fsGroup": ids, "supplementalGroups": st.lists(ids, max_size=2)}
                ),
                "hostNetwork": st.booleans(),
                "shareProcessNamespace": st.booleans(),
                "runtimeClassName": st.sampled_from(["gvisor", "runc"]),
                "dnsPolicy": st.sampled_from(["ClusterFirst", "None"]),
                "nodeSelector": st.dictionaries(st.sampled_from(["disk", "sandbox.gke.io/runtime"]), name, max_size=2),
                "tolerations": st.lists(st.just({"key": "a", "operator": "Exists"}), max_size=1),
                "automountServiceAccountToken": st.booleans(),
                "os": st.fixed_dictionaries({"name": st.sampled_from(["linux", "windows"])}),
            },
        ),
    }
)  # fmt: skip


def nested(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = {"a": value} if depth % 2 else [value]
    return value


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
junk = st.one_of(
    json_values,
    st.just(None),
    st.text(min_size=300, max_size=300),
    # Deeper than the bound, yet shallow enough for this test's own deepcopy; test_mutate sends 100,000.
    st.integers(MAX_DEPTH - 2, 300).map(nested),
)


def _paths(value: Any) -> list[tuple[str | int, ...]]:
    out: list[tuple[str | int, ...]] = []
    stack: list[tuple[tuple[str | int, ...], Any]] = [((), value)]
    while stack:
        path, node = stack.pop()
        items: list[tuple[str | int, Any]] = []
        if isinstance(node, dict):
            items = list(node.items())
        elif isinstance(node, list):
            items = list(enumerate(node))
        for key, child in items:
            out.append((*path, key))
            stack.append(((*path, key), child))
    return sorted(out, key=repr)


@st.composite
def damaged_pods(draw: st.DrawFn) -> dict[str, Any]:
    pod = copy.deepcopy(draw(pod_strategy))  # st.just() values are shared between examples
    for _ in range(draw(st.integers(0, 3))):
        paths = _paths(pod)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent: Any = pod
        try:
            for key in path[:-1]:
                parent = parent[key]
            if draw(st.booleans()) and isinstance(parent, dict):
                del parent[path[-1]]
            else:
                parent[path[-1]] = draw(junk)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier damage moved this path
    return pod


def _valid(pod: Any) -> bool:
    if not (isinstance(pod, dict) and pod.get("apiVersion") == "v1" and pod.get("kind") == "Pod"):
        return False  # kubernetes-validate picks its schema from these
    if nested_deeper_than(pod, MAX_DEPTH):
        return False
    try:
        kubernetes_validate.validate(pod, "1.33", strict=True)
    except kubernetes_validate.ValidationError:
        return False
    return True


def _check(sent: Any, result: MutationResult) -> None:
    assert isinstance(result, MutationResult)
    if not result.allowed:
        assert result.message and result.pod is None and not result.patch
        event("refused")
    if result.pod is not None:
        assert jsonpatch.apply_patch(sent, result.patch) == result.pod
        valid = _valid(sent)
        event(f"patched, input {'valid' if valid else 'invalid'}")
        if valid:
            kubernetes_validate.validate(result.pod, "1.33", strict=True)


@FUZZ
@given(damaged_pods(), st.sampled_from(["CREATE", "CREATE", "UPDATE", "DELETE", "CONNECT"]))
def test_mutate_answers_every_pod_with_a_verdict_or_a_patch_that_applies(pod: dict[str, Any], operation: str) -> None:
    sent = copy.deepcopy(pod)
    result = mutate(pod, POLICY, CONFIG, operation=operation)
    assert pod == sent, "mutate changed its input"
    _check(sent, result)


@FUZZ
@given(pod_strategy)
def test_every_valid_pod_is_refused_or_injected_into_a_valid_pod(pod: dict[str, Any]) -> None:
    _check(pod, mutate(copy.deepcopy(pod), POLICY, CONFIG))


@FUZZ
@given(damaged_pods(), damaged_pods(), st.sampled_from(["", "ephemeralcontainers", "status"]))
def test_review_update_answers_every_pair(old: dict[str, Any], new: dict[str, Any], subresource: str) -> None:
    injected = mutate(copy.deepcopy(old), POLICY, CONFIG).pod or old
    verdict = review_update(injected, new, CONFIG, subresource=subresource)
    assert isinstance(verdict, MutationResult) and (verdict.allowed or verdict.message)


config_keys = st.sampled_from(
    ["image", "imagePullPolicy", "mode", "runtimeClassName", "gkeSandbox", "nativeSidecars", "kubernetesVersion",
     "proxyUID", "agentUID", "agentGID", "proxyPort", "metricsPort", "redirectPorts", "vaultAddr", "vaultRole",
     "vaultAuthMount", "vaultAudience", "vaultCACertConfigMap", "tokenExpirationSeconds", "exemptNamespaces",
     "exemptLabels", "resources", "proxyUid", "bogus"]
)  # fmt: skip
config_values = st.one_of(
    json_values,
    st.sampled_from(
        ["explicit", "always", "Never", "1.30", "gvisor", "https://vault:8200", "kube-system", 1, 600, 1338, 15002, 65536, -1]
    ),
    st.lists(st.integers(0, 70000), max_size=3),
    st.lists(st.sampled_from(["kube-system", "Bad_NS", ""]), max_size=2),
    st.fixed_dictionaries({}, optional={"requests": st.dictionaries(st.sampled_from(["cpu", "memory", "bad key"]),
                                                                    st.sampled_from(["100m", "1Gi", 2, 0.5, "lots", True]))}),
)  # fmt: skip


@FUZZ
@given(
    st.one_of(
        st.dictionaries(config_keys, config_values, max_size=5).map(lambda d: yaml.safe_dump(d)),
        st.text(max_size=60),
        st.integers(17, 3_000).map(lambda n: "resources: " + "[" * n + "]" * n),
    )
)
def test_the_config_parser_answers_every_document_with_a_config_or_a_config_error(text: str) -> None:
    try:
        cfg = parse_config(text)
    except ConfigError as e:
        assert str(e) and "Traceback" not in str(e)
        return
    assert isinstance(cfg, InjectorConfig)
    # Whatever it accepted makes valid pods.
    result = mutate(yaml.safe_load(PLAIN_POD), POLICY, cfg)
    if result.pod is not None:
        kubernetes_validate.validate(result.pod, "1.33", strict=True)


PLAIN_POD = "{apiVersion: v1, kind: Pod, metadata: {name: a, namespace: sandbox-a}, spec: {containers: [{name: agent, image: x}]}}"


# -- the sandbox's invariants, over every admitted pod and every admitted update --------------------
# An oracle of its own (not the injector's rules): what an agent's container must not have, read
# from the pod the API server would run.

SAFE_SOURCES = {"emptyDir", "configMap", "secret", "downwardAPI", "persistentVolumeClaim", "ephemeral", "image"}
SAFE_PROJECTIONS = {"configMap", "secret", "downwardAPI", "clusterTrustBundle"}
SIDECAR_ONLY = {k.VOLUME_CONF, k.VOLUME_POLICY, k.VOLUME_VAULT_TOKEN, k.VOLUME_VAULT_CA}
ESCAPE_CAPS = {"ALL", "NET_ADMIN", "NET_RAW", "SYS_ADMIN", "SYS_PTRACE", "SETUID", "SETGID", "BPF", "SYS_MODULE"}


def _volume_holes(vol: dict[str, Any]) -> list[str]:
    sources = [key for key in vol if key != "name"]
    if any(source != "projected" and source not in SAFE_SOURCES for source in sources):
        return [f"volume {vol['name']}: {sources} reaches outside the capture"]
    projections = [key for p in (vol.get("projected") or {}).get("sources") or [] for key in p]
    if any(p not in SAFE_PROJECTIONS for p in projections) and vol["name"] != k.VOLUME_VAULT_TOKEN:
        return [f"volume {vol['name']}: projects {projections}"]
    return []


def holes(pod: dict[str, Any], sent: dict[str, Any]) -> list[str]:
    """Every way the agent's containers of ``pod`` (injected into from ``sent``) could get around
    the sidecar or at its secrets, and references injection left dangling."""
    had = {v.get("name") for v in sent["spec"].get("volumes") or []}
    spec = pod["spec"]
    pod_sc = spec.get("securityContext") or {}
    out = [f"spec.{key}" for key in ("hostNetwork", "hostPID", "hostIPC", "shareProcessNamespace") if spec.get(key)]
    if spec.get("runtimeClassName") != CONFIG.runtime_class:
        out.append(f"runtimeClassName {spec.get('runtimeClassName')!r}")
    if spec.get("automountServiceAccountToken") is not False:
        out.append("the API token is mounted")
    if (spec.get("os") or {}).get("name", "linux") != "linux":
        out.append("not a Linux pod")
    if CONFIG.proxy_gid in (pod_sc.get("supplementalGroups") or []) or pod_sc.get("fsGroup") == CONFIG.proxy_gid:
        out.append("the proxy's group")
    volumes = {v["name"]: v for v in spec.get("volumes") or []}
    every = (spec.get("initContainers") or []) + spec["containers"] + (spec.get("ephemeralContainers") or [])
    ours = [c for c in every if c["name"] in k.OUR_CONTAINERS]
    if [c["name"] for c in ours] != [k.SIDECAR, k.CAPTURE]:
        out.append(f"Sandgate's containers are {[c['name'] for c in ours]}")
    for c in every:
        if c["name"] in k.OUR_CONTAINERS:
            continue
        sc = c.get("securityContext") or {}
        where = f"container {c['name']}"
        uid = sc.get("runAsUser", pod_sc.get("runAsUser"))
        if uid in (None, 0, CONFIG.proxy_uid):
            out.append(f"{where} runs as {uid}")
        if sc.get("runAsGroup", pod_sc.get("runAsGroup")) in (None, CONFIG.proxy_gid):
            out.append(f"{where} runs in the image's group or the proxy's")
        for ref in (c.get("volumeMounts") or []) + (c.get("volumeDevices") or []):
            if ref["name"] in had and ref["name"] not in volumes:
                out.append(f"{where} names a volume the pod has not: {ref['name']}")
        if sc.get("privileged") or sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{where} may gain privileges")
        added = {str(cap).upper().removeprefix("CAP_") for cap in (sc.get("capabilities") or {}).get("add") or []}
        if added & ESCAPE_CAPS:
            out.append(f"{where} adds {sorted(added & ESCAPE_CAPS)}")
        if c.get("targetContainerName") in k.OUR_CONTAINERS:
            out.append(f"{where} targets {c['targetContainerName']}")
        if any(p.get("hostPort") for p in c.get("ports") or []):
            out.append(f"{where} has a host port")
        for m in c.get("volumeMounts") or []:
            if m["name"] in SIDECAR_ONLY or (m["name"] == k.VOLUME_CA and m.get("readOnly") is not True):
                out.append(f"{where} mounts {m['name']}")
            elif m["name"] in volumes:
                out += [f"{where}: {hole}" for hole in _volume_holes(volumes[m["name"]])]
        env = c.get("env") or []
        for name in ("OPENAI_API_KEY", *k.CA_ENV):
            last = [e for e in env if e.get("name") == name][-1:]
            if not last or "valueFrom" in last[0]:
                out.append(f"{where}: {name} is {last}")
    for v in volumes.values():
        if not v["name"].startswith("sandgate-"):
            out += _volume_holes(v)
    # What the API server's Go validation refuses and kubernetes-validate's schema does not say.
    had_paths = {c.get("name"): [m.get("mountPath") for m in c.get("volumeMounts") or []] for c in _all(sent)}
    for c in every:
        paths = [m["mountPath"].rstrip("/") for m in c.get("volumeMounts") or []]
        if len(paths) != len(set(paths)) and len(had_paths.get(c["name"], [])) == len(
            set(had_paths.get(c["name"], []))
        ):
            out.append(f"container {c['name']}: a mountPath twice")
        for p in c.get("ports") or []:
            if "name" in p and not re.fullmatch(r"(?!.*--)(?=.*[a-z])[a-z0-9](?:[a-z0-9-]{0,13}[a-z0-9])?", p["name"]):
                out.append(f"container {c['name']}: port name {p['name']!r}")
    return out


API_TOKEN = {
    "name": "kube-api-access-x7k2p",
    "projected": {"sources": [{"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                              {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}}]},
}  # fmt: skip


def as_the_api_server_sends(pod: dict[str, Any], token: bool) -> dict[str, Any]:
    """With ``token``, what the ServiceAccount admission plugin (before webhooks) adds: its token
    volume, mounted in every container."""
    pod = copy.deepcopy(pod)
    if token:
        spec = pod["spec"]
        spec["volumes"] = [*(spec.get("volumes") or []), copy.deepcopy(API_TOKEN)]
        for c in (spec.get("initContainers") or []) + spec["containers"]:
            mount = {
                "name": API_TOKEN["name"],
                "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
                "readOnly": True,
            }
            c["volumeMounts"] = [*(c.get("volumeMounts") or []), mount]
    return pod


@settings(FUZZ, max_examples=500)  # (most generated pods are refused: this many to admit enough)
@given(pod_strategy, st.booleans())
def test_no_admitted_pod_leaves_the_agent_a_way_around_the_sidecar(pod: dict[str, Any], token: bool) -> None:
    pod = as_the_api_server_sends(pod, token)
    result = mutate(copy.deepcopy(pod), POLICY, CONFIG)
    if result.pod is None:
        event("refused" if not result.allowed else "skipped")
        return
    event("injected")
    assert holes(result.pod, pod) == []


NAMES = [*VOLUME_NAMES, "sandgate-ca", "sandgate-policy", "sandgate-vault-ca"]
debug_container = st.fixed_dictionaries(
    {"name": st.sampled_from(["debugger", "dbg2"]), "image": st.just("busybox")},
    optional={
        "securityContext": security_context,
        "volumeMounts": st.lists(st.fixed_dictionaries({"name": st.sampled_from(NAMES), "mountPath": st.just("/d")},
                                                       optional={"readOnly": st.booleans()}), max_size=2),
        "targetContainerName": st.sampled_from(["agent", k.SIDECAR, k.CAPTURE]),
    },
)  # fmt: skip


@st.composite
def updates(draw: st.DrawFn, pod: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """One update an agent's owner could send: an annotation edited or deleted, a container's image
    changed (Sandgate's too), a debug container added."""
    new = copy.deepcopy(pod)
    what = draw(st.sampled_from(["annotation", "image", "debug"]))
    if what == "debug":
        new["spec"].setdefault("ephemeralContainers", []).append(draw(debug_container))
        return new, draw(st.sampled_from(["ephemeralcontainers", "ephemeralcontainers", ""]))
    if what == "annotation":
        annotations = new["metadata"].setdefault("annotations", {})
        key = draw(st.sampled_from([k.STATUS_ANNOTATION, k.POLICY_ANNOTATION, "team"]))
        if draw(st.booleans()):
            annotations.pop(key, None)
        else:
            annotations[key] = draw(st.sampled_from(["x", "default", k.STATUS_INJECTED]))
        return new, ""
    every = (new["spec"].get("initContainers") or []) + new["spec"]["containers"]
    draw(st.sampled_from(every))["image"] = "attacker.example/x:1"
    return new, ""


@FUZZ
@given(pod_strategy, st.booleans(), st.data())
def test_no_admitted_sequence_of_updates_opens_an_injected_pod(
    pod: dict[str, Any], token: bool, data: st.DataObject
) -> None:
    sent = as_the_api_server_sends(pod, token)
    result = mutate(copy.deepcopy(sent), POLICY, CONFIG)
    if result.pod is None:
        return
    current = result.pod
    for _ in range(3):
        new, subresource = data.draw(updates(current))
        if review_update(current, new, CONFIG, subresource=subresource).allowed:
            event(f"update allowed ({subresource or 'pods'})")
            current = new
    assert holes(current, sent) == []
    assert [c for c in _all(current) if c["name"] in k.OUR_CONTAINERS] == [
        c for c in _all(result.pod) if c["name"] in k.OUR_CONTAINERS
    ]


def _all(pod: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod["spec"]
    return (spec.get("initContainers") or []) + spec["containers"] + (spec.get("ephemeralContainers") or [])
