"""``mutate(pod, policy, config) -> MutationResult``: the whole admission decision for one pod.

Pure: a pod dict in, a mutated copy and a JSON patch (a diff, so it always applies to the original;
:mod:`injector.patch`) out. Eligibility first (operation, the pod's shape, exemptions, already
injected), then the rules that would let an agent escape the sandbox (each refusal names the field
and the fix), then the injection itself. Whatever the input, the answer is a verdict or a patch, never an exception: a pod
the injector cannot read is refused by :func:`injector.shape.check_pod`, and past that check the
code trusts the types it declares (``null`` reading as absent).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from injector import constants as k
from injector.config import InjectorConfig
from injector.patch import json_patch
from injector.shape import DNS_LABEL_WORDS, check_pod, is_policy_name
from proxy.identity import POD_IDENTITY_ENV
from proxy.policy.model import Policy

__all__ = [
    "BrokenPolicy",
    "MissingPolicy",
    "MutationResult",
    "mutate",
    "policy_name",
    "review_connect",
    "review_update",
]

Pod = dict[str, Any]

# Capabilities that would let an agent undo or sidestep capture (D09).
_FORBIDDEN_CAPS = frozenset(
    {"ALL", "NET_ADMIN", "NET_RAW", "SYS_ADMIN", "SYS_PTRACE", "SETUID", "SETGID", "BPF", "SYS_MODULE"}
)
# Pod Security "baseline": what an agent's container may add (less SETUID and SETGID, above), the
# sysctls it may set, the SELinux types it may ask for. The namespace of transparent mode runs
# "privileged" for the capture container, so the webhook holds agents to baseline itself (red team 31).
_BASELINE_CAPS = frozenset(
    {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE", "SETFCAP",
     "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}
) - _FORBIDDEN_CAPS  # fmt: skip
_SAFE_SYSCTLS = frozenset(
    {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
     "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
     "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
     "net.ipv4.tcp_keepalive_probes"}
)  # fmt: skip
_SELINUX_TYPES = frozenset({"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"})
_APPARMOR_ANNOTATION = "container.apparmor.security.beta.kubernetes.io/"

# Volume sources a sandbox may use: what Pod Security's "restricted" profile allows but ``csi``,
# local to the node or storage the cluster's admin set up (a claim). The others (nfs, iscsi,
# cephfs, gitRepo, an inline csi driver...) have the node talk to a server the pod names: a channel
# outside capture (red team 25). A source not known here is refused too.
_VOLUME_SOURCES = frozenset(
    {"emptyDir", "configMap", "secret", "downwardAPI", "projected", "persistentVolumeClaim", "ephemeral", "image"}
)
# In a projected volume, never ``serviceAccountToken``: with audience ``vault`` it is the very
# credential the sidecar logs in to Vault with, without one an API token (red team 25).
_PROJECTED_SOURCES = frozenset({"configMap", "secret", "downwardAPI", "clusterTrustBundle"})


@dataclass(frozen=True)
class MissingPolicy:
    name: str


@dataclass(frozen=True)
class BrokenPolicy:
    name: str
    errors: tuple[str, ...]


@dataclass(frozen=True)
class MutationResult:
    allowed: bool
    message: str = ""
    pod: Pod | None = None  # the mutated pod; None when nothing changes
    patch: list[dict[str, Any]] = field(default_factory=list)
    skipped: str | None = None  # why the pod is admitted unchanged


def policy_name(pod: Pod) -> str:
    return str(((pod.get("metadata") or {}).get("annotations") or {}).get(k.POLICY_ANNOTATION) or k.DEFAULT_POLICY)


def _deny(message: str) -> MutationResult:
    return MutationResult(allowed=False, message=message)


def mutate(
    pod: Pod,
    policy: Policy | MissingPolicy | BrokenPolicy,
    config: InjectorConfig,
    *,
    operation: str = "CREATE",
    namespace: str = "",
) -> MutationResult:
    if operation != "CREATE":
        return MutationResult(allowed=True, skipped=f"{operation} is not mutated")
    unreadable = check_pod(pod)
    if unreadable:
        return _deny("; ".join(unreadable))
    meta = pod.get("metadata") or {}
    ns = namespace or meta.get("namespace") or ""
    if ns in config.exempt_namespaces:
        return MutationResult(allowed=True, skipped=f"namespace {ns} is exempt")
    labels = meta.get("labels") or {}
    if config.exempt_labels and all(labels.get(key) == value for key, value in config.exempt_labels.items()):
        # Not sandboxed, but never with the sidecars' credential: a token for Vault's audience is
        # what every sidecar of the namespace logs in with (only the kubelet may request one there).
        for i, vol in enumerate((pod.get("spec") or {}).get("volumes") or []):
            for j, projection in enumerate((vol.get("projected") or {}).get("sources") or []):
                token = projection.get("serviceAccountToken")
                if isinstance(token, dict) and token.get("audience") == config.vault_audience:
                    return _deny(
                        f"spec.volumes[{i}].projected.sources[{j}].serviceAccountToken: audience "
                        f"{config.vault_audience!r} is the Sandgate sidecars' Vault credential; an exempt pod "
                        "may not have it"
                    )
        return MutationResult(allowed=True, skipped="pod carries the exempt labels")

    if isinstance(policy, MissingPolicy):
        name = policy.name if len(policy.name) <= 63 else policy.name[:60] + "..."  # a refusal is not an echo
        fix = "" if is_policy_name(policy.name) else f" (a policy's name is a DNS-1123 label: {DNS_LABEL_WORDS})"
        return _deny(
            f"metadata.annotations[{k.POLICY_ANNOTATION}]: no EgressPolicy {name!r} in namespace {ns!r}. Create a ConfigMap "
            f"named {name!r} there, labelled {k.POLICY_CONFIGMAP_LABEL}=true, with the policy under the key "
            f"{k.POLICY_CONFIGMAP_KEY!r}, or point the annotation at an existing policy{fix}"
        )
    if isinstance(policy, BrokenPolicy):
        return _deny(f"EgressPolicy {policy.name!r} is invalid: " + "; ".join(policy.errors))

    problems = _violations(pod, config)
    if problems:
        return _deny("; ".join(problems))

    if not ns and "{namespace}" in config.vault_role and _uses_vault(policy, config):
        return _deny("metadata.namespace: the pod's namespace is not known, and its Vault role is named after it")
    mutated = _inject(copy.deepcopy(pod), policy, config, ns)
    if _already_injected(pod, mutated):
        return MutationResult(allowed=True, skipped="already injected")
    ours = [c.get("name") for c in _all_containers(pod) if c.get("name") in k.OUR_CONTAINERS]
    if ours:
        # A pod cannot bring its own "sidecar" (with its own image and args) to skip or hijack ours.
        return _deny(f"spec: a container named {ours[0]!r} is reserved for Sandgate's injected sidecar; rename it")
    patch = json_patch(pod, mutated)
    return MutationResult(allowed=True, pod=mutated, patch=patch)


def _all_containers(pod: Pod) -> list[dict[str, Any]]:
    spec = pod.get("spec") or {}
    return (
        list(spec.get("initContainers") or [])
        + list(spec.get("containers") or [])
        + list(spec.get("ephemeralContainers") or [])
    )


def _already_injected(original: Pod, mutated: Pod) -> bool:
    """Injected before (a reinvocation, or `kubectl apply` of an injected pod): our status annotation
    AND our containers exactly as we would inject them now. Either alone is a forgery."""
    status = ((original.get("metadata") or {}).get("annotations") or {}).get(k.STATUS_ANNOTATION)
    return status == k.STATUS_INJECTED and original == mutated


def _violations(pod: Pod, config: InjectorConfig) -> list[str]:
    spec = pod.get("spec") or {}
    out = []
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(key):
            out.append(f"spec.{key}: true would put the agent outside the pod's network or process sandbox; remove it")
    if spec.get("shareProcessNamespace"):
        out.append("spec.shareProcessNamespace: true lets agents read the proxy's memory; remove it")
    requested = spec.get("runtimeClassName")
    if config.runtime_class and requested is not None and requested != config.runtime_class:
        out.append(
            f"spec.runtimeClassName: {requested!r} is not allowed here; remove it (Sandgate sets {config.runtime_class!r})"
        )
    if spec.get("hostAliases"):
        out.append("spec.hostAliases: would redirect host names the proxy resolves; remove it")
    if ((spec.get("dnsConfig") or {}).get("nameservers")) or spec.get("dnsPolicy") == "None":
        out.append(
            "spec.dnsConfig.nameservers / dnsPolicy: None: a custom resolver is not allowed in a sandbox; remove it"
        )
    if (spec.get("dnsConfig") or {}).get("searches"):
        out.append(
            "spec.dnsConfig.searches: search domains of the pod's own would steer the names the sidecar resolves "
            "(its Vault's too) to hosts they choose; remove them and write full names"
        )
    if spec.get("dnsPolicy") == "Default":
        out.append(
            "spec.dnsPolicy: Default gives the node's resolvers, which the capture would let agents reach; "
            "use ClusterFirst (or remove it)"
        )
    if spec.get("resources"):
        out.append(
            "spec.resources: pod-level resources would have to make room for Sandgate's sidecar; "
            "set resources per container instead"
        )
    os_name = (spec.get("os") or {}).get("name")
    if os_name is not None and os_name != "linux":
        out.append(f"spec.os.name: {os_name!r}: Sandgate's sandbox (gVisor, the traffic capture) is Linux only")
    for i, vol in enumerate(spec.get("volumes") or []):
        out += _volume_problems(f"spec.volumes[{i}] ({vol.get('name')})", vol)
    pod_sc = spec.get("securityContext") or {}
    out += _baseline_context("spec.securityContext", pod_sc)
    for i, sysctl in enumerate(pod_sc.get("sysctls") or []):
        if sysctl.get("name") not in _SAFE_SYSCTLS:
            out.append(
                f"spec.securityContext.sysctls[{i}]: {str(sysctl.get('name'))[:63]!r} is not one of Pod Security "
                f"baseline's safe sysctls ({', '.join(sorted(_SAFE_SYSCTLS))}); remove it"
            )
    for key, value in ((pod.get("metadata") or {}).get("annotations") or {}).items():
        if (
            key.startswith(_APPARMOR_ANNOTATION)
            and value not in ("", "runtime/default")
            and not value.startswith("localhost/")
        ):
            out.append(
                f"metadata.annotations[{key[:120]}]: AppArmor {value[:40]!r} is not allowed; use runtime/default"
            )
    if pod_sc.get("runAsUser") in (0, config.proxy_uid):
        out.append(
            f"spec.securityContext.runAsUser: {pod_sc['runAsUser']} is {_uid_words(pod_sc['runAsUser'], config)}; use another UID"
        )
    for key in ("runAsGroup", "fsGroup"):
        if pod_sc.get(key) == config.proxy_gid:
            out.append(f"spec.securityContext.{key}: {config.proxy_gid} is the proxy's group; use another GID")
    if config.proxy_gid in (pod_sc.get("supplementalGroups") or []):
        out.append(f"spec.securityContext.supplementalGroups: {config.proxy_gid} is the proxy's group; remove it")
    for kind in ("initContainers", "containers"):
        for i, c in enumerate(spec.get(kind) or []):
            if c.get("name") in k.OUR_CONTAINERS:
                continue
            where = f"spec.{kind}[{i}] ({c.get('name')})"
            out += _container_problems(where, c, config)
            for m in c.get("volumeMounts") or []:
                if not _replaced(m) and str(m.get("mountPath", "")).rstrip("/") == k.CA_DIR:
                    out.append(
                        f"{where}.volumeMounts: {k.CA_DIR} is where Sandgate mounts its CA certificate; mount elsewhere"
                    )
            for d in c.get("volumeDevices") or []:
                if str(d.get("name", "")).startswith("sandgate-"):
                    out.append(
                        f"{where}.volumeDevices: {d.get('name')!r}: names beginning sandgate- are Sandgate's "
                        "(its volumes replace yours); rename the volume"
                    )
    return out


def _replaced(vol: dict[str, Any]) -> bool:
    """A volume (or a mount of it) that injection takes out: ours (``sandgate-*``), put back as we
    make them, and the API token volume the API server's ServiceAccount plugin adds (it runs
    before webhooks, so ``automountServiceAccountToken: false`` comes too late: red team 27)."""
    name = str(vol.get("name", ""))
    if name.startswith("sandgate-"):
        return True
    return name.startswith("kube-api-access-") and any(
        "serviceAccountToken" in p for p in (vol.get("projected") or {}).get("sources") or []
    )


def _volume_problems(where: str, vol: dict[str, Any]) -> list[str]:
    """A volume whose source a sandbox may not use (see _VOLUME_SOURCES). Ours (``sandgate-*``)
    are replaced whatever they hold, but a hostPath is refused under any name."""
    sources = [key for key in vol if key != "name"]
    if "hostPath" in sources:
        return [f"{where}: hostPath volumes are not allowed in a sandbox; use an emptyDir or a PVC"]
    if _replaced(vol):
        return []
    for source in sources:
        if source not in _VOLUME_SOURCES:
            return [
                f"{where}: a {source} volume is mounted by the node from outside the pod's traffic capture; "
                f"use one of {', '.join(sorted(_VOLUME_SOURCES))} (a PersistentVolumeClaim for shared storage)"
            ]
    for j, projection in enumerate((vol.get("projected") or {}).get("sources") or []):
        for source in projection:
            if source == "serviceAccountToken":
                return [
                    f"{where}.projected.sources[{j}].serviceAccountToken: a service-account token would let the agent "
                    "log in as the pod (to Vault, as the sidecar does, or to the API server); remove it"
                ]
            if source not in _PROJECTED_SOURCES:
                return [f"{where}.projected.sources[{j}].{source}: not allowed in a sandbox; remove it"]
    return []


def _container_problems(
    where: str, c: dict[str, Any], config: InjectorConfig, *, debug: bool = False, pod_group: Any = None
) -> list[str]:
    """What would let a container of the agent's escape capture or reach the sidecar's secrets. A
    debug (ephemeral) container is never mutated, so it must say what the injector would set:
    ``allowPrivilegeEscalation: false``, a ``runAsUser`` and (unless the pod's ``pod_group`` does)
    a ``runAsGroup``, else the image's; and it mounts none of our volumes but the CA certificate
    (at creation they are taken from agents' containers)."""
    out = []
    sc = c.get("securityContext") or {}
    if sc.get("privileged"):
        out.append(f"{where}.securityContext.privileged: true; remove it")
    if sc.get("allowPrivilegeEscalation") is True or (debug and sc.get("allowPrivilegeEscalation") is not False):
        out.append(
            f"{where}.securityContext.allowPrivilegeEscalation: "
            f"{'true' if sc.get('allowPrivilegeEscalation') else 'unset (true)'} lets a setuid binary become root, "
            "then the proxy's UID; set it to false"
        )
    added = {str(cap).upper().removeprefix("CAP_") for cap in ((sc.get("capabilities") or {}).get("add") or [])}
    for cap in sorted(added & _FORBIDDEN_CAPS):
        out.append(
            f"{where}.securityContext.capabilities.add: {cap} would let the agent bypass or undo capture; remove it"
        )
    for cap in sorted(added - _FORBIDDEN_CAPS - _BASELINE_CAPS):
        out.append(
            f"{where}.securityContext.capabilities.add: {cap[:40]} is not in Pod Security baseline's list "
            f"({', '.join(sorted(_BASELINE_CAPS))}); remove it"
        )
    out += _baseline_context(f"{where}.securityContext", sc)
    if sc.get("procMount") not in (None, "Default"):
        out.append(f"{where}.securityContext.procMount: only Default (a masked /proc) is allowed; remove it")
    if sc.get("runAsUser") in (0, config.proxy_uid):
        out.append(
            f"{where}.securityContext.runAsUser: {sc['runAsUser']} is {_uid_words(sc['runAsUser'], config)}; use another UID"
        )
    elif debug and sc.get("runAsUser") is None:
        out.append(
            f"{where}.securityContext.runAsUser: set a UID that is neither root nor the proxy's ({config.proxy_uid})"
        )
    dropped = {str(d).upper().removeprefix("CAP_") for d in (sc.get("capabilities") or {}).get("drop") or []}
    if debug and "ALL" not in dropped:
        out.append(
            f"{where}.securityContext.capabilities.drop: include ALL (the runtime's defaults hold SETUID and NET_RAW, "
            "which gVisor leaves to a non-root process)"
        )
    if sc.get("runAsGroup") == config.proxy_gid:
        out.append(f"{where}.securityContext.runAsGroup: {config.proxy_gid} is the proxy's group; use another GID")
    elif debug and sc.get("runAsGroup") is None and pod_group is None:
        out.append(
            f"{where}.securityContext.runAsGroup: set a GID other than the proxy's ({config.proxy_gid}): "
            "left unset, the image's is taken"
        )
    if any(p.get("hostPort") for p in c.get("ports") or []):
        out.append(f"{where}.ports[].hostPort: not allowed in a sandbox; remove it")
    if any(p.get("name") == k.METRICS_PORT_NAME for p in c.get("ports") or []):
        out.append(
            f"{where}.ports[].name: {k.METRICS_PORT_NAME!r} is the sidecar's metrics port (what Sandgate's "
            "PodMonitor scrapes); name yours otherwise"
        )
    if debug:
        if c.get("targetContainerName") in k.OUR_CONTAINERS:
            out.append(f"{where}.targetContainerName: {c['targetContainerName']!r} is Sandgate's; target the agent's")
        for m in c.get("volumeMounts") or []:
            name = str(m.get("name", ""))
            if name.startswith("sandgate-") and not (name == k.VOLUME_CA and m.get("readOnly") is True):
                out.append(
                    f"{where}.volumeMounts: {name!r} is the sidecar's (its credentials, its CA key, its policy); "
                    f"remove it (only {k.VOLUME_CA!r}, read-only, is shared)"
                )
    return out


def _baseline_context(where: str, sc: dict[str, Any]) -> list[str]:
    """The pod's or a container's securityContext against Pod Security baseline: no unconfined
    seccomp or AppArmor, no SELinux user, role or type of one's own."""
    out = []
    for key in ("seccompProfile", "appArmorProfile"):
        if (sc.get(key) or {}).get("type") == "Unconfined":
            out.append(f"{where}.{key}.type: Unconfined is not allowed; use RuntimeDefault (or remove it)")
    selinux = sc.get("seLinuxOptions") or {}
    if selinux.get("type") not in (None, *_SELINUX_TYPES):
        out.append(f"{where}.seLinuxOptions.type: only {', '.join(sorted(t for t in _SELINUX_TYPES if t))} are allowed")
    for key in ("user", "role"):
        if selinux.get(key):
            out.append(f"{where}.seLinuxOptions.{key}: may not be set; remove it")
    return out


def _uid_words(uid: int, config: InjectorConfig) -> str:
    return "root, which can become the proxy's UID" if uid == 0 else "the proxy's UID, whose traffic is never captured"


def _field(parent: dict[str, Any], key: str, empty: Any) -> Any:
    """``parent[key]``, created as ``empty`` when absent or null (setdefault keeps a null)."""
    if parent.get(key) is None:
        parent[key] = empty
    return parent[key]


def _env_set(env: list[dict[str, Any]], name: str, value: str) -> None:
    """``name`` set to ``value``, in the place of its first entry, and its other entries gone (the
    kubelet lets the last one win)."""
    at = next((i for i, e in enumerate(env) if e.get("name") == name), len(env))
    env[at:] = [{"name": name, "value": value}, *(e for e in env[at + 1 :] if e.get("name") != name)]


def _uses_vault(policy: Policy, config: InjectorConfig) -> bool:
    return bool(config.vault_addr) and any(s.source.kind == "vault" for s in policy.secrets)


def _inject(pod: Pod, policy: Policy, config: InjectorConfig, namespace: str) -> Pod:
    meta = _field(pod, "metadata", {})
    annotations = _field(meta, "annotations", {})
    annotations[k.STATUS_ANNOTATION] = k.STATUS_INJECTED
    annotations[k.POLICY_ANNOTATION] = policy.name
    spec = _field(pod, "spec", {})
    if config.runtime_class:
        spec["runtimeClassName"] = config.runtime_class
    if config.gke_sandbox:
        _field(spec, "nodeSelector", {})["sandbox.gke.io/runtime"] = "gvisor"
        tol = {"key": "sandbox.gke.io/runtime", "operator": "Equal", "value": "gvisor", "effect": "NoSchedule"}
        tolerations = _field(spec, "tolerations", [])
        if tol not in tolerations:
            tolerations.append(tol)
    spec["automountServiceAccountToken"] = False

    uses_vault = _uses_vault(policy, config)
    volumes = [v for v in spec.get("volumes") or [] if not _replaced(v)]
    gone = {v.get("name") for v in spec.get("volumes") or [] if _replaced(v)}
    volumes += [
        {"name": k.VOLUME_CONF, "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
        {"name": k.VOLUME_CA, "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
        {
            "name": k.VOLUME_POLICY,
            "configMap": {"name": policy.name, "items": [{"key": k.POLICY_CONFIGMAP_KEY, "path": "policy.yaml"}]},
        },
    ]
    if uses_vault:
        token = {
            "audience": config.vault_audience,
            "expirationSeconds": config.token_expiration_seconds,
            "path": "token",
        }
        volumes.append({"name": k.VOLUME_VAULT_TOKEN, "projected": {"sources": [{"serviceAccountToken": token}]}})
        if config.vault_cacert_configmap:
            ca = {"name": config.vault_cacert_configmap, "items": [{"key": "ca.crt", "path": "ca.crt"}]}
            volumes.append({"name": k.VOLUME_VAULT_CA, "configMap": ca})
    spec["volumes"] = volumes

    explicit = config.mode == "explicit"
    user_inits = [c for c in spec.get("initContainers") or [] if c.get("name") not in k.OUR_CONTAINERS]
    user_containers = [c for c in spec.get("containers") or [] if c.get("name") not in k.OUR_CONTAINERS]
    pod_sc = spec.get("securityContext") or {}
    for c in user_inits + user_containers:
        _agent(c, policy, config, explicit, pod_sc, gone)
    sidecar = _sidecar(policy, config, uses_vault, namespace)
    ours_init = [] if explicit else [_capture(config)]
    if config.native_sidecars_enabled():
        sidecar["restartPolicy"] = "Always"
        spec["initContainers"] = [sidecar, *ours_init, *user_inits]
        spec["containers"] = user_containers
    else:
        # Without native sidecars the proxy is an ordinary container, first in line; its postStart
        # hook holds the start of the next containers until it serves. Capture (an init container)
        # is in force before it, so anything earlier meets a closed port: it fails closed.
        sidecar["lifecycle"] = {"postStart": {"exec": {"command": ["/bin/sh", "-c", _WAIT]}}}
        spec["initContainers"] = [*ours_init, *user_inits]
        spec["containers"] = [sidecar, *user_containers]
    if not spec["initContainers"]:
        del spec["initContainers"]
    return pod


_WAIT = f"i=0; until test -s {k.CA_FILE}; do i=$((i+1)); [ $i -gt 600 ] && exit 1; sleep 0.1; done"


def _agent(
    c: dict[str, Any], policy: Policy, config: InjectorConfig, explicit: bool, pod_sc: dict[str, Any], gone: set[Any]
) -> None:
    env = _field(c, "env", [])
    for name in k.CA_ENV:
        _env_set(env, name, k.CA_FILE)
    if explicit:
        for name in k.PROXY_ENV:
            _env_set(env, name, f"http://127.0.0.1:{config.proxy_port}")
        for name in k.NO_PROXY_ENV:
            _env_set(env, name, "localhost,127.0.0.1,::1")
    for secret in policy.secrets:
        for name in secret.agent_env:
            _env_set(env, name, secret.placeholder)
    mounts = [
        m
        for m in c.get("volumeMounts") or []
        if m.get("name") not in gone and not str(m.get("name", "")).startswith("sandgate-")
    ]
    mounts.append({"name": k.VOLUME_CA, "mountPath": k.CA_DIR, "readOnly": True})
    c["volumeMounts"] = mounts
    sc = _field(c, "securityContext", {})
    if sc.get("allowPrivilegeEscalation") is None:
        sc["allowPrivilegeEscalation"] = False
    if sc.get("runAsUser") is None:
        sc["runAsUser"] = config.agent_uid  # never root, never the proxy's UID (D10)
    if sc.get("runAsGroup") is None and pod_sc.get("runAsGroup") is None:
        # Left unset, the group comes from the image's /etc/passwd, or is 0 for a UID it does not
        # list: never the proxy's group (D10). A group the pod chose (not the proxy's: refused) stays.
        sc["runAsGroup"] = config.agent_gid
    # The runtime's default capabilities dropped (what the pod adds, baseline's and checked, stays):
    # runc takes them from a non-root process at exec, gVisor does not, and with SETUID the agent
    # became the proxy's UID, which capture lets out (red team 46). And the runtime's seccomp
    # profile, which refuses a user namespace (gVisor applies it with oci-seccomp: docs/install.md).
    caps = _field(sc, "capabilities", {})
    drop = list(caps.get("drop") or [])
    if "ALL" not in {str(d).upper().removeprefix("CAP_") for d in drop}:
        caps["drop"] = [*drop, "ALL"]
    if sc.get("seccompProfile") is None and pod_sc.get("seccompProfile") is None:
        sc["seccompProfile"] = {"type": "RuntimeDefault"}


def _locked_down(uid: int) -> dict[str, Any]:
    return {
        "runAsUser": uid, "runAsGroup": uid, "runAsNonRoot": True, "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"},
    }  # fmt: skip


def _sidecar(policy: Policy, config: InjectorConfig, uses_vault: bool, namespace: str) -> dict[str, Any]:
    args = [
        "proxy", "--policy", f"{k.POLICY_DIR}/policy.yaml", "--mode", "regular" if config.mode == "explicit" else "transparent",
        "--listen-host", "127.0.0.1", "--listen-port", str(config.proxy_port), "--metrics-host", "0.0.0.0",
        "--metrics-port", str(config.metrics_port), "--confdir", k.CONF_DIR, "--ca-cert-out", k.CA_FILE, "--require-secrets",
    ]  # fmt: skip
    mounts = [
        {"name": k.VOLUME_CONF, "mountPath": k.CONF_DIR},
        {"name": k.VOLUME_CA, "mountPath": k.CA_DIR},
        {"name": k.VOLUME_POLICY, "mountPath": k.POLICY_DIR, "readOnly": True},
    ]
    if uses_vault:
        args += ["--vault-addr", config.vault_addr, "--vault-auth", "kubernetes", "--vault-role", config.vault_role_for(namespace, policy.name),
                 "--vault-auth-mount", config.vault_auth_mount, "--vault-jwt-file", k.VAULT_TOKEN_FILE]  # fmt: skip
        mounts.append({"name": k.VOLUME_VAULT_TOKEN, "mountPath": k.VAULT_TOKEN_DIR, "readOnly": True})
        if config.vault_cacert_configmap:
            args += ["--vault-cacert", k.VAULT_CA_FILE]
            mounts.append({"name": k.VOLUME_VAULT_CA, "mountPath": k.VAULT_CA_DIR, "readOnly": True})
    # Who the sidecar serves, for its audit records: from immutable pod fields, sidecar only.
    identity = [
        {"name": var, "valueFrom": {"fieldRef": {"fieldPath": path}}} for var, path in POD_IDENTITY_ENV.values()
    ]
    return {
        "name": k.SIDECAR,
        "image": config.image,
        "imagePullPolicy": config.image_pull_policy,
        "args": args,
        "env": identity,
        "ports": [{"name": k.METRICS_PORT_NAME, "containerPort": config.metrics_port, "protocol": "TCP"}],
        "volumeMounts": mounts,
        "resources": copy.deepcopy(config.resources),
        "securityContext": _locked_down(config.proxy_uid),
        "startupProbe": {
            "exec": {"command": ["/bin/sh", "-c", f"test -s {k.CA_FILE}"]},
            "periodSeconds": 1,
            "failureThreshold": 60,
            "timeoutSeconds": 1,
        },
    }


def _capture(config: InjectorConfig) -> dict[str, Any]:
    sc = _locked_down(0)
    sc.update({"runAsNonRoot": False, "capabilities": {"drop": ["ALL"], "add": ["NET_ADMIN", "NET_RAW"]}})
    return {
        "name": k.CAPTURE,
        "image": config.image,
        "imagePullPolicy": config.image_pull_policy,
        "args": [
            "capture",
            "--proxy-uid",
            str(config.proxy_uid),
            "--proxy-port",
            str(config.proxy_port),
            "--ports",
            ",".join(str(p) for p in config.redirect_ports),
        ],
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"cpu": "200m", "memory": "64Mi"}},
        "securityContext": sc,
    }


def review_update(old: Pod, new: Pod, config: InjectorConfig, *, subresource: str = "") -> MutationResult:
    """UPDATEs of an injected pod: the mutable fields an agent's owner could use to undo us.

    A pod is injected when our containers are in its spec (immutable in that respect), whatever
    its annotations say: they are mutable, and deleting the status annotation switched off these
    checks (red team 25). On such a pod:

    - a new debug container (``kubectl debug``, ``pods/ephemeralcontainers``) follows the rules of
      an agent's container, and says itself what the injector would set (D05);
    - our own containers cannot change (``kubectl set image ... sandgate-proxy=...``, D06), nor the
      annotations we wrote (which policy the pod is served, that it is injected).

    ``subresource`` is the review's (``ephemeralcontainers`` for ``kubectl debug``): the checks are
    the same for every one, so that they do not rest on which fields the API server lets each change.
    """
    unreadable = check_pod(new) or check_pod(old)
    if unreadable:
        return _deny("; ".join(unreadable))

    def ours(pod: Pod) -> list[dict[str, Any]]:
        return [c for c in _all_containers(pod) if c.get("name") in k.OUR_CONTAINERS]

    def annotations(pod: Pod) -> dict[str, Any]:
        return (pod.get("metadata") or {}).get("annotations") or {}

    was = ours(old)
    if not was and annotations(old).get(k.STATUS_ANNOTATION) != k.STATUS_INJECTED:
        return MutationResult(allowed=True, skipped="not an injected pod")
    # (The API server takes debug containers through the subresource only; checked whatever the
    # subresource, so that this does not rest on it.)
    before = {c.get("name") for c in (old.get("spec") or {}).get("ephemeralContainers") or []}
    pod_group = (((new.get("spec") or {}).get("securityContext")) or {}).get("runAsGroup")
    problems = [
        problem
        for i, c in enumerate((new.get("spec") or {}).get("ephemeralContainers") or [])
        if c.get("name") not in before
        for problem in _container_problems(
            f"spec.ephemeralContainers[{i}] ({c.get('name')})", c, config, debug=True, pod_group=pod_group
        )
    ]
    if was != ours(new):
        problems.append(
            "spec: Sandgate's containers (sandgate-proxy, sandgate-capture) cannot be changed on a running pod"
        )
    for key in (k.STATUS_ANNOTATION, k.POLICY_ANNOTATION):
        if annotations(old).get(key) != annotations(new).get(key):
            problems.append(f"metadata.annotations[{key}] is Sandgate's and cannot be changed on a running pod")
    return _deny("; ".join(problems)) if problems else MutationResult(allowed=True)


def review_connect(subresource: str, options: Any) -> MutationResult:
    """CONNECTs: ``kubectl exec`` and ``attach`` (``options``: PodExecOptions, PodAttachOptions) into
    Sandgate's containers are refused; the sidecar holds the Vault token and the real keys, and
    whoever may run commands in the agent's container (an agent platform) must not get them by
    naming ours. Without a container the API server picks the pod's only ordinary container or
    refuses: never ours (a native sidecar is an init container; otherwise it sits beside the agent).
    Without the options at all (which the API server always sends) the container cannot be told:
    refused."""
    if subresource not in ("exec", "attach"):
        return MutationResult(allowed=True, skipped=f"CONNECT {subresource or 'pods'} is not checked")
    if not isinstance(options, dict):  # (the API server always sends them: red team 45)
        return _deny(
            f"request.object: a CONNECT {subresource} carries its options (which container); "
            "Sandgate cannot judge it without them"
        )
    container = options.get("container")
    if isinstance(container, str) and container in k.OUR_CONTAINERS:
        return _deny(
            f"{subresource} into {container!r}: Sandgate's containers hold the Vault credential and the keys; "
            "use the agent's container (the sidecar's logs and metrics tell what it does)"
        )
    return MutationResult(allowed=True)
