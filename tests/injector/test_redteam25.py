"""Red team 25: the Kubernetes side (the pure injector), attacked from outside with pod specs and
updates a pod author or ``kubectl debug`` can send.

Each test asserts an invariant -- the agent runs only behind the sidecar (capture, gVisor, no way
around or to undo them); no container but the sidecar can read the real keys or the credential
the sidecar presents to Vault; every admitted pod is one the API server accepts; the webhook
answers in bounded time -- so a failing test names a break. What broke, fixed since: a pod's own
``serviceAccountToken`` projection (audience ``vault``: the sidecar's very credential), volumes
the node mounts from a server the pod names (nfs, iscsi, cephfs, gitRepo...), debug containers
mounting the sidecar's volumes or free to gain privileges, the update checks switched off by
deleting the status annotation, a port name of 16 characters (every injected pod invalid), a
patch diff quadratic in the number of volumes, duplicate env entries (the kubelet lets the last
one win), and Windows pods patched into pods the API server refuses. End to end through the real
webhook: tests/webhook/test_webhook.py.
"""

from __future__ import annotations

import copy
import re
import time
from typing import Any

import jsonpatch
import pytest

from injector import constants as k
from injector.config import parse_config
from injector.mutate import mutate, review_connect, review_update
from tests.injector.test_mutate import CONFIG, POLICY

CONFIG_OLD = parse_config("nativeSidecars: never\n", base=CONFIG)
PH = "sk-sandgate-openai-placeholder"


def agent_pod(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "a", "namespace": "agents"},
        "spec": {"containers": [{"name": "agent", "image": "example.com/agent:1"}], **spec},
    }


def injected(pod: dict[str, Any] | None = None, config: Any = CONFIG) -> dict[str, Any]:
    r = mutate(pod or agent_pod(), POLICY, config, namespace="agents")
    assert r.allowed and r.pod is not None, r.message
    return r.pod


def mounting(pod: dict[str, Any], volume: str) -> list[str]:
    spec = pod["spec"]
    every = (spec.get("initContainers") or []) + spec["containers"] + (spec.get("ephemeralContainers") or [])
    return [c["name"] for c in every if any(m.get("name") == volume for m in c.get("volumeMounts") or [])]


# -- invariant 2: the Vault credential ---------------------------------------------------------


@pytest.mark.parametrize("audience", ["vault", None], ids=["vault-audience", "api-audience"])
def test_rt25_a_pods_own_service_account_token_is_refused(audience: str | None) -> None:
    """The sidecar logs in to Vault with the pod's service-account token (audience ``vault``);
    the pod's own projection of that token into the agent is the same credential. Without an
    audience it is an API token, which ``automountServiceAccountToken: false`` is there to keep
    away (and which Vault accepts from a role with no audience)."""
    token: dict[str, Any] = {"path": "t", "expirationSeconds": 3600}
    if audience:
        token["audience"] = audience
    pod = agent_pod(volumes=[{"name": "tok", "projected": {"sources": [{"serviceAccountToken": token}]}}])
    pod["spec"]["containers"][0]["volumeMounts"] = [{"name": "tok", "mountPath": "/tok", "readOnly": True}]
    r = mutate(pod, POLICY, CONFIG, namespace="agents")
    assert not r.allowed, "a pod's own service-account token projection is admitted"
    assert "spec.volumes[0] (tok)" in r.message and "serviceAccountToken" in r.message


@pytest.mark.parametrize(
    "source",
    [
        {"nfs": {"server": "198.18.0.9", "path": "/exfil"}},
        {"iscsi": {"targetPortal": "198.18.0.9:3260", "iqn": "iqn.2001-04.com.example:x", "lun": 0}},
        {"cephfs": {"monitors": ["198.18.0.9:6789"]}},
        {"rbd": {"monitors": ["198.18.0.9:6789"], "image": "x"}},
        {"glusterfs": {"endpoints": "e", "path": "p"}},
        {"gitRepo": {"repository": "https://198.18.0.9/x.git"}},
        {"csi": {"driver": "nfs.csi.k8s.io", "volumeAttributes": {"server": "198.18.0.9"}}},
        {"flexVolume": {"driver": "example/x"}},
        {"someFutureSource": {}},
    ],
    ids=lambda s: next(iter(s)),
)
def test_rt25_volumes_the_node_mounts_from_a_server_the_pod_names_are_refused(source: dict[str, Any]) -> None:
    """The node, not the pod's network namespace, talks to that server: a channel no capture rule
    sees. Only volume sources local to the node or set up by the cluster's admin are admitted."""
    pod = agent_pod(volumes=[{"name": "x", **source}])
    pod["spec"]["containers"][0]["volumeMounts"] = [{"name": "x", "mountPath": "/x"}]
    r = mutate(pod, POLICY, CONFIG, namespace="agents")
    assert not r.allowed, f"a {next(iter(source))} volume is admitted"
    assert "spec.volumes[0] (x)" in r.message


@pytest.mark.parametrize(
    "source",
    [
        {},
        {"emptyDir": {}},
        {"configMap": {"name": "c"}},
        {"secret": {"secretName": "s"}},
        {"downwardAPI": {"items": [{"path": "n", "fieldRef": {"fieldPath": "metadata.name"}}]}},
        {"persistentVolumeClaim": {"claimName": "work"}},
        {"projected": {"sources": [{"configMap": {"name": "c"}}, {"secret": {"name": "s"}}]}},
    ],
    ids=lambda s: next(iter(s), "default"),
)
def test_rt25_local_volumes_stay_admitted(source: dict[str, Any]) -> None:
    pod = agent_pod(volumes=[{"name": "x", **source}])
    pod["spec"]["containers"][0]["volumeMounts"] = [{"name": "x", "mountPath": "/x"}]
    assert mounting(injected(pod), "x") == ["agent"]


# -- kubectl debug (pods/ephemeralcontainers) ------------------------------------------------------

SAFE_DEBUG = {
    "runAsUser": 1000,
    "runAsGroup": 1000,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
}


def debug(old: dict[str, Any], **container: Any) -> dict[str, Any]:
    new = copy.deepcopy(old)
    new["spec"].setdefault("ephemeralContainers", []).append({"name": "debugger", "image": "busybox", **container})
    return new


@pytest.mark.parametrize("volume", [k.VOLUME_VAULT_TOKEN, k.VOLUME_CONF, k.VOLUME_POLICY])
def test_rt25_a_debug_container_cannot_mount_the_sidecars_volumes(volume: str) -> None:
    """The Vault token file is world-readable (the pod's containers run as different UIDs); the
    confdir holds the CA key, writable."""
    old = injected()
    new = debug(old, securityContext=SAFE_DEBUG, volumeMounts=[{"name": volume, "mountPath": "/x", "readOnly": True}])
    v = review_update(old, new, CONFIG, subresource="ephemeralcontainers")
    assert not v.allowed, f"a debug container mounting {volume} is admitted"
    assert volume in v.message


def test_rt25_a_debug_container_may_read_the_ca_certificate() -> None:
    old = injected()
    new = debug(
        old, securityContext=SAFE_DEBUG, volumeMounts=[{"name": k.VOLUME_CA, "mountPath": "/ca", "readOnly": True}]
    )
    assert review_update(old, new, CONFIG, subresource="ephemeralcontainers").allowed


@pytest.mark.parametrize("escalation", [None, True], ids=["unset", "true"])
def test_rt25_a_debug_container_cannot_gain_privileges(escalation: bool | None) -> None:
    """Unset, ``allowPrivilegeEscalation`` is true: a setuid binary in the debug image becomes root
    and then the proxy's UID, whose traffic capture lets through."""
    old = injected()
    sc: dict[str, Any] = {"runAsUser": 1000}
    if escalation is not None:
        sc["allowPrivilegeEscalation"] = escalation
    v = review_update(old, debug(old, securityContext=sc), CONFIG, subresource="ephemeralcontainers")
    assert not v.allowed and "allowPrivilegeEscalation" in v.message


def test_rt25_a_debug_container_cannot_take_the_proxys_group_or_target_the_sidecar() -> None:
    old = injected()
    sc = {**SAFE_DEBUG, "runAsGroup": CONFIG.proxy_gid}
    v = review_update(old, debug(old, securityContext=sc), CONFIG, subresource="ephemeralcontainers")
    assert not v.allowed and "runAsGroup" in v.message
    v = review_update(
        old,
        debug(old, securityContext=SAFE_DEBUG, targetContainerName=k.SIDECAR),
        CONFIG,
        subresource="ephemeralcontainers",
    )
    assert not v.allowed and "targetContainerName" in v.message
    v = review_update(
        old,
        debug(old, securityContext=SAFE_DEBUG, targetContainerName="agent"),
        CONFIG,
        subresource="ephemeralcontainers",
    )
    assert v.allowed, v.message


# -- the status annotation ------------------------------------------------------------------------


@pytest.mark.parametrize("config", [CONFIG, CONFIG_OLD], ids=["native", "container"])
def test_rt25_deleting_the_status_annotation_does_not_switch_off_the_update_checks(config: Any) -> None:
    """Annotations are mutable: the checks of an injected pod's updates key on what it is (our
    containers in its spec), and the annotations we wrote cannot be changed."""
    pod0 = injected(config=config)
    pod1 = copy.deepcopy(pod0)
    del pod1["metadata"]["annotations"][k.STATUS_ANNOTATION]
    step1 = review_update(pod0, pod1, config)
    assert not step1.allowed and k.STATUS_ANNOTATION in step1.message
    pod2 = copy.deepcopy(pod1)  # as if step 1 had been let through
    sidecar = next(
        c for c in pod2["spec"].get("initContainers", []) + pod2["spec"]["containers"] if c["name"] == k.SIDECAR
    )
    sidecar["image"] = "attacker.example/evil:latest"
    assert not review_update(pod1, pod2, config).allowed, "the sidecar's image is replaced"
    root = {"privileged": True, "runAsUser": 0, "capabilities": {"add": ["NET_ADMIN"]}}
    assert not review_update(pod1, debug(pod1, securityContext=root), config, subresource="ephemeralcontainers").allowed
    pod3 = copy.deepcopy(pod0)
    pod3["metadata"]["annotations"][k.POLICY_ANNOTATION] = "other"
    assert not review_update(pod0, pod3, config).allowed, "the policy annotation no longer says which policy is served"


def test_rt25_other_annotations_and_the_agents_image_may_change() -> None:
    pod0 = injected()
    pod1 = copy.deepcopy(pod0)
    pod1["metadata"]["annotations"]["team"] = "x"
    pod1["spec"]["containers"][0]["image"] = "example.com/agent:2"
    assert review_update(pod0, pod1, CONFIG).allowed


# -- invariant 3: a pod the API server accepts -----------------------------------------------------

_IANA_SVC_NAME = re.compile(r"(?!.*--)[a-z0-9](?:[a-z0-9-]{0,13}[a-z0-9])?")


@pytest.mark.parametrize("config", [CONFIG, CONFIG_OLD], ids=["native", "container"])
def test_rt25_injected_port_names_are_what_the_api_server_accepts(config: Any) -> None:
    """Kubernetes' IsValidPortName: at most 15 characters, lowercase letters, digits and single
    hyphens, at least one letter (kubernetes-validate's schema does not say so)."""
    spec = injected(config=config)["spec"]
    names = [p["name"] for c in spec.get("initContainers", []) + spec["containers"] for p in c.get("ports") or []]
    assert names
    for name in names:
        assert _IANA_SVC_NAME.fullmatch(name) and re.search("[a-z]", name), (
            f"port name {name!r} is refused by the API server"
        )


def test_rt25_a_windows_pod_is_refused_with_a_reason() -> None:
    """gVisor and the capture are Linux's; the fields injected are ones the API server refuses for
    ``spec.os.name: windows``."""
    r = mutate(agent_pod(os={"name": "windows"}), POLICY, CONFIG, namespace="agents")
    assert not r.allowed and "spec.os.name" in r.message
    assert mutate(agent_pod(os={"name": "linux"}), POLICY, CONFIG, namespace="agents").allowed


def test_rt25_duplicate_env_entries_cannot_override_the_placeholder() -> None:
    """The kubelet lets the last entry of a name win."""
    pod = agent_pod()
    pod["spec"]["containers"][0]["env"] = [
        {"name": "OPENAI_API_KEY", "value": "x"},
        {"name": "HOME", "value": "/h"},
        {"name": "OPENAI_API_KEY", "valueFrom": {"secretKeyRef": {"name": "openai", "key": "api_key"}}},
        {"name": "SSL_CERT_FILE", "value": "/a"},
        {"name": "SSL_CERT_FILE", "value": "/b"},
    ]
    env = injected(pod)["spec"]["containers"][0]["env"]
    assert [e for e in env if e["name"] == "OPENAI_API_KEY"] == [{"name": "OPENAI_API_KEY", "value": PH}]
    assert [e for e in env if e["name"] == "SSL_CERT_FILE"] == [{"name": "SSL_CERT_FILE", "value": k.CA_FILE}]
    assert {"name": "HOME", "value": "/h"} in env


# -- bounded time ----------------------------------------------------------------------------------


def test_rt25_the_patch_of_a_large_pod_costs_linear_time() -> None:
    """Volumes alternating ``sandgate-*`` and other names made the patch diff quadratic: 12,000 of
    them (~450 KiB, far below the API server's 3 MiB) took over 10 s, on the webhook's loop."""

    def pod(n: int) -> dict[str, Any]:
        vols = [{"name": f"sandgate-{i}" if i % 2 else f"v{i}", "emptyDir": {}} for i in range(n)]
        p = agent_pod(volumes=vols)
        p["spec"]["containers"][0]["volumeMounts"] = [{"name": v["name"], "mountPath": f"/m/{v['name']}"} for v in vols]
        return p

    def cost(n: int) -> float:
        sent = pod(n)
        t = time.perf_counter()
        r = mutate(sent, POLICY, CONFIG, namespace="agents")
        took = time.perf_counter() - t
        assert r.allowed and jsonpatch.apply_patch(sent, r.patch) == r.pod
        return took

    small, large = min(cost(1_500) for _ in range(3)), min(cost(12_000) for _ in range(3))
    assert large < 1.0 and large / small < 8 * 3, f"1,500 volumes: {small:.3f} s; 12,000: {large:.3f} s"


# -- kubectl exec / attach into the sidecar ------------------------------------------------------


@pytest.mark.parametrize("subresource", ["exec", "attach"])
@pytest.mark.parametrize("container", [k.SIDECAR, k.CAPTURE])
def test_rt25_kubectl_exec_into_sandgates_containers_is_refused(subresource: str, container: str) -> None:
    """The sidecar holds the Vault token and the real keys: whoever may exec into a pod's agent
    (an agent platform running commands in its sandbox) does not get them by naming our container."""
    kind = "PodExecOptions" if subresource == "exec" else "PodAttachOptions"
    v = review_connect(subresource, {"kind": kind, "container": container, "command": ["cat", "/x"]})
    assert not v.allowed and container in v.message


@pytest.mark.parametrize("options", [{"container": "agent"}, {}, {"container": ["sandgate-proxy"]}])
def test_rt25_kubectl_exec_into_the_agent_is_admitted(options: Any) -> None:
    """(Without a container the API server picks the pod's only ordinary container, or refuses:
    never a native sidecar, and never sandgate-proxy, which sits beside the agent when not native.)"""
    assert review_connect("exec", options).allowed
    assert review_connect("portforward", {"ports": [15001]}).allowed


@pytest.mark.parametrize("options", [None, "junk"])
def test_rt45_an_exec_without_its_options_is_refused(options: Any) -> None:
    """Red team 45 (F13) changed this answer: these were admitted. Options that are missing (or
    not an object) are not options without a container: the API server always sends them, and
    without them the container cannot be told, so the exec is refused naming the field."""
    v = review_connect("exec", options)
    assert not v.allowed and "request.object" in v.message


# -- red team 27: what the fixes above left ------------------------------------------------------


def as_the_api_server_sends_it() -> dict[str, Any]:
    """A pod after the API server's ServiceAccount admission plugin, which runs before mutating
    webhooks: its API token volume, mounted in every container."""
    vol = {
        "name": "kube-api-access-x7k2p",
        "projected": {
            "defaultMode": 420,
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {
                    "downwardAPI": {
                        "items": [
                            {"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}
                        ]
                    }
                },
            ],
        },
    }
    mount = {"name": vol["name"], "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": True}
    pod = agent_pod(serviceAccountName="default", volumes=[vol])
    pod["spec"]["initContainers"] = [{"name": "setup", "image": "example.com/setup:1", "volumeMounts": [mount]}]
    pod["spec"]["containers"][0]["volumeMounts"] = [mount]
    return pod


def test_rt27_an_ordinary_pod_is_admitted_without_its_api_token() -> None:
    """Every pod not opting out of automount comes with the token volume (red team 25's fix refused
    them all; before it, every agent had an API token, ``automountServiceAccountToken: false``
    coming too late): the volume and its mounts are taken out."""
    sent = as_the_api_server_sends_it()
    out = injected(copy.deepcopy(sent))
    assert jsonpatch.apply_patch(sent, mutate(sent, POLICY, CONFIG, namespace="agents").patch) == out
    assert "kube-api-access-x7k2p" not in {v["name"] for v in out["spec"]["volumes"]}
    assert mounting(out, "kube-api-access-x7k2p") == []
    assert out["spec"]["automountServiceAccountToken"] is False
    again = mutate(copy.deepcopy(out), POLICY, CONFIG, namespace="agents")  # (a reinvocation)
    assert again.allowed and again.skipped == "already injected"


def test_rt27_a_mount_where_the_ca_goes_is_refused_with_a_reason() -> None:
    pod = agent_pod(volumes=[{"name": "certs", "emptyDir": {}}])
    pod["spec"]["containers"][0]["volumeMounts"] = [{"name": "certs", "mountPath": k.CA_DIR + "/"}]
    r = mutate(pod, POLICY, CONFIG, namespace="agents")
    assert not r.allowed and k.CA_DIR in r.message


def test_rt27_a_device_of_a_volume_named_like_ours_is_refused() -> None:
    """A user volume named ``sandgate-*`` is replaced by ours: a block device naming it would be
    left pointing at nothing (or at our emptyDir)."""
    pod = agent_pod(volumes=[{"name": "sandgate-data", "persistentVolumeClaim": {"claimName": "blk"}}])
    pod["spec"]["containers"][0]["volumeDevices"] = [{"name": "sandgate-data", "devicePath": "/dev/xvda"}]
    r = mutate(pod, POLICY, CONFIG, namespace="agents")
    assert not r.allowed and "volumeDevices" in r.message


@pytest.mark.parametrize(
    ("spec", "field"),
    [({"dnsPolicy": "Default"}, "dnsPolicy"), ({"resources": {"limits": {"cpu": "500m"}}}, "spec.resources")],
    ids=["node-resolvers", "pod-level-resources"],
)
def test_rt27_what_the_sandbox_cannot_keep_is_refused_with_a_reason(spec: dict[str, Any], field: str) -> None:
    """``dnsPolicy: Default``: the node's resolvers, which the capture would let agents reach.
    Pod-level resources: the sidecar's own limits could exceed them (the API server refuses)."""
    r = mutate(agent_pod(**spec), POLICY, CONFIG, namespace="agents")
    assert not r.allowed and field in r.message


def test_rt27_a_debug_container_says_its_group() -> None:
    """Left unset (and by the pod), its group is the image's: the proxy's, maybe."""
    old = injected()
    ungrouped = {key: value for key, value in SAFE_DEBUG.items() if key != "runAsGroup"}
    v = review_update(old, debug(old, securityContext=ungrouped), CONFIG, subresource="ephemeralcontainers")
    assert not v.allowed and "runAsGroup" in v.message
    grouped = debug(old, securityContext=SAFE_DEBUG)
    assert review_update(old, grouped, CONFIG, subresource="ephemeralcontainers").allowed


@pytest.mark.parametrize(
    "damage",
    [
        ("os", ["linux"]),
        ("volumes", [{"name": "v", "projected": "x"}]),
        ("volumes", [{"name": "v", "projected": {"sources": "x"}}]),
        ("volumes", [{"name": "v", "projected": {"sources": ["x"]}}]),
        ("containers", [{"name": "a", "volumeDevices": "x"}]),
    ],
    ids=["os-list", "projected-string", "sources-string", "source-string", "devices-string"],
)
def test_rt27_fields_the_new_rules_read_are_checked_for_their_type(damage: tuple[str, Any]) -> None:
    pod = agent_pod(**{damage[0]: damage[1]})
    r = mutate(pod, POLICY, CONFIG, namespace="agents")
    assert not r.allowed and f"spec.{damage[0]}" in r.message


def test_rt27_a_debug_containers_target_is_checked_for_its_type() -> None:
    old = injected()
    new = debug(old, securityContext=SAFE_DEBUG, targetContainerName=[k.SIDECAR])
    v = review_update(old, new, CONFIG, subresource="ephemeralcontainers")
    assert not v.allowed and "targetContainerName" in v.message


def test_rt31_an_agent_port_named_like_the_sidecars_metrics_port_is_refused() -> None:
    """The chart's PodMonitor scrapes that name: an agent's own series would feed the audit rules."""
    pod = agent_pod()
    pod["spec"]["containers"][0]["ports"] = [{"name": k.METRICS_PORT_NAME, "containerPort": 9000}]
    r = mutate(pod, POLICY, CONFIG, namespace="agents")
    assert not r.allowed and k.METRICS_PORT_NAME in r.message


# -- red team 31: agents held to Pod Security baseline (their namespace runs privileged) -----------


def _agent_sc(**sc: Any) -> dict[str, Any]:
    pod = agent_pod()
    pod["spec"]["containers"][0]["securityContext"] = sc
    return pod


def _annotated(annotations: dict[str, str]) -> dict[str, Any]:
    pod = agent_pod()
    pod["metadata"]["annotations"] = annotations
    return pod


BEYOND_BASELINE = {
    "pod-seccomp-unconfined": (agent_pod(securityContext={"seccompProfile": {"type": "Unconfined"}}), "seccompProfile"),
    "seccomp-unconfined": (_agent_sc(seccompProfile={"type": "Unconfined"}), "seccompProfile"),
    "pod-apparmor-unconfined": (agent_pod(securityContext={"appArmorProfile": {"type": "Unconfined"}}), "appArmor"),
    "apparmor-unconfined": (_agent_sc(appArmorProfile={"type": "Unconfined"}), "appArmorProfile"),
    "apparmor-annotation": (
        _annotated({"container.apparmor.security.beta.kubernetes.io/agent": "unconfined"}),
        "AppArmor",
    ),
    "proc-unmasked": (_agent_sc(procMount="Unmasked"), "procMount"),
    "sysctl-unsafe": (agent_pod(securityContext={"sysctls": [{"name": "kernel.msgmax", "value": "1"}]}), "sysctls"),
    "sysctl-net-core": (
        agent_pod(securityContext={"sysctls": [{"name": "net.core.somaxconn", "value": "1"}]}),
        "sysctls",
    ),
    "cap-dac-read-search": (_agent_sc(capabilities={"add": ["DAC_READ_SEARCH"]}), "DAC_READ_SEARCH"),
    "cap-sys-time": (_agent_sc(capabilities={"add": ["CAP_SYS_TIME"]}), "SYS_TIME"),
    "cap-lower-case": (_agent_sc(capabilities={"add": ["sys_rawio"]}), "SYS_RAWIO"),
    "selinux-type": (_agent_sc(seLinuxOptions={"type": "spc_t"}), "seLinuxOptions.type"),
    "selinux-user": (agent_pod(securityContext={"seLinuxOptions": {"user": "system_u"}}), "seLinuxOptions.user"),
    "selinux-role": (_agent_sc(seLinuxOptions={"role": "sysadm_r"}), "seLinuxOptions.role"),
}
WITHIN_BASELINE = {
    "seccomp-runtime-default": agent_pod(securityContext={"seccompProfile": {"type": "RuntimeDefault"}}),
    "seccomp-localhost": _agent_sc(seccompProfile={"type": "Localhost", "localhostProfile": "agents.json"}),
    "apparmor-runtime-default": _agent_sc(appArmorProfile={"type": "RuntimeDefault"}),
    "apparmor-annotation-localhost": _annotated(
        {"container.apparmor.security.beta.kubernetes.io/agent": "localhost/x"}
    ),
    "proc-default": _agent_sc(procMount="Default"),
    "sysctl-safe": agent_pod(securityContext={"sysctls": [{"name": "net.ipv4.ip_local_port_range", "value": "1 2"}]}),
    "caps-baseline": _agent_sc(capabilities={"add": ["NET_BIND_SERVICE", "CHOWN", "KILL"], "drop": ["ALL"]}),
    "selinux-level": _agent_sc(seLinuxOptions={"type": "container_t", "level": "s0:c1,c2"}),
}


@pytest.mark.parametrize("case", list(BEYOND_BASELINE))
def test_rt31_what_pod_security_baseline_refuses_is_refused_for_agents_and_debug_containers(case: str) -> None:
    pod, field = BEYOND_BASELINE[case]
    r = mutate(copy.deepcopy(pod), POLICY, CONFIG, namespace="agents")
    assert not r.allowed and field in r.message, r.message
    sc = pod["spec"]["containers"][0].get("securityContext")
    if sc:  # the same container added by kubectl debug to a running injected pod
        caps = {**SAFE_DEBUG["capabilities"], **sc.get("capabilities", {})}  # (the case's adds, and the drop)
        v = review_update(
            injected(), debug(injected(), securityContext=sc | SAFE_DEBUG | {"capabilities": caps}), CONFIG
        )
        assert not v.allowed and field in v.message, v.message


@pytest.mark.parametrize("case", list(WITHIN_BASELINE))
def test_rt31_what_baseline_allows_stays_admitted(case: str) -> None:
    r = mutate(copy.deepcopy(WITHIN_BASELINE[case]), POLICY, CONFIG, namespace="agents")
    assert r.allowed and r.pod is not None, r.message


@pytest.mark.parametrize(
    ("where", "value"),
    [("seccompProfile", "Unconfined"), ("seLinuxOptions", {"type": 7}), ("sysctls", {"name": "x"}), ("procMount", 1)],
)
def test_rt31_the_baseline_fields_are_checked_for_their_type(where: str, value: Any) -> None:
    pod = agent_pod(securityContext={where: value}) if where == "sysctls" else _agent_sc(**{where: value})
    r = mutate(pod, POLICY, CONFIG, namespace="agents")
    assert not r.allowed and where in r.message, r.message


def test_an_exempt_pod_is_not_sandboxed_but_never_gets_the_sidecars_vault_credential() -> None:
    """exemptLabels skip injection, and pod labels are the pod author's: such a pod projecting a
    token for Vault's audience would log in as the namespace's role (the kubelet requests it)."""
    config = parse_config("exemptLabels: {ci.example.com/system: 'true'}", base=CONFIG)
    token = {"serviceAccountToken": {"audience": CONFIG.vault_audience, "path": "t"}}
    pod = agent_pod(volumes=[{"name": "t", "projected": {"sources": [{"configMap": {"name": "c"}}, token]}}])
    pod["metadata"]["labels"] = {"ci.example.com/system": "true"}
    r = mutate(copy.deepcopy(pod), POLICY, config, namespace="agents")
    assert not r.allowed and "projected.sources[1].serviceAccountToken" in r.message
    api_token = {"serviceAccountToken": {"path": "t"}}  # the API server's audience: not Sandgate's business here
    pod["spec"]["volumes"][0]["projected"]["sources"][1] = api_token
    assert mutate(copy.deepcopy(pod), POLICY, config, namespace="agents").skipped == "pod carries the exempt labels"
    pod["spec"]["volumes"][0]["projected"]["sources"][1] = {"serviceAccountToken": "junk"}
    assert mutate(copy.deepcopy(pod), POLICY, config, namespace="agents").allowed  # an answer, not a crash


def test_rt34_search_domains_of_the_pods_own_are_refused() -> None:
    """With a search domain the tenant controls, the sidecar's resolver would try vault.example.com
    under it first: TLS stops it, unless the tenant also chose the CA (vaultCACertConfigMap)."""
    r = mutate(agent_pod(dnsConfig={"searches": ["attacker.example"]}), POLICY, CONFIG, namespace="agents")
    assert not r.allowed and "spec.dnsConfig.searches" in r.message
    assert mutate(agent_pod(dnsConfig={"options": [{"name": "ndots", "value": "2"}]}), POLICY, CONFIG,
                  namespace="agents").allowed  # fmt: skip
    bad = mutate(agent_pod(dnsConfig={"searches": "attacker.example"}), POLICY, CONFIG, namespace="agents")
    assert not bad.allowed and "spec.dnsConfig.searches" in bad.message  # a string: named, not a crash
