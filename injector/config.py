"""The webhook's injection settings: one YAML file, every key optional, defaults documented here.

The file is checked once, when the webhook starts: every key's type and range (ports, UIDs and
GIDs, lists that are lists), unknown keys refused (with the closest known one), and the settings
that must agree with each other. A problem is a :class:`ConfigError` naming the key and what to
write; past :func:`parse_config` the injector trusts the values.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, TypedDict

from pydantic import ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError, with_config

from injector.shape import describe_error, json_type
from injector.yamldepth import yaml_deeper_than
from proxy.policy.errors import PolicyInvalid
from proxy.policy.yamlsafe import load_documents

__all__ = ["ConfigError", "InjectorConfig", "parse_config"]


class ConfigError(ValueError):
    pass


VAULT_ROLE_DEFAULT = "{namespace}.{policy}"


@dataclass(frozen=True)
class InjectorConfig:
    image: str = "ghcr.io/sandgate/sandgate:0.1.0"  # one image: sidecar and capture
    image_pull_policy: str = "IfNotPresent"
    mode: str = "transparent"  # transparent (iptables capture) | explicit (HTTPS_PROXY env only)
    runtime_class: str = "gvisor"  # forced on every pod; "" leaves runtimeClassName alone
    gke_sandbox: bool = False  # add GKE Sandbox's nodeSelector and toleration
    native_sidecars: str = "auto"  # auto | always | never
    kubernetes_version: str = ""  # e.g. "1.30"; "auto" decisions need it (told, or discovered by the webhook)
    proxy_uid: int = 1337  # the sidecar's UID, and its GID
    agent_uid: int = 1000  # runAsUser given to agents that leave it unset
    agent_gid: int = 1000  # runAsGroup given to agents when neither they nor the pod set one
    proxy_port: int = 15001
    metrics_port: int = 15090
    redirect_ports: tuple[int, ...] = (80, 443)
    vault_addr: str = ""
    # Kubernetes auth role; {namespace} and {policy} stand for the pod's. One role per namespace and
    # policy: a role shared by namespaces is one that any of their service accounts logs in to.
    vault_role: str = VAULT_ROLE_DEFAULT
    vault_auth_mount: str = "kubernetes"
    # Audience of the sidecar's projected service-account token: Sandgate's alone (the chart lets only
    # the kubelet request it, and only Sandgate's sidecars project it), so not a shared one like "vault".
    vault_audience: str = "sandgate-vault"
    vault_cacert_configmap: str = ""  # a ConfigMap (in the pod's namespace) with key ca.crt to verify Vault
    token_expiration_seconds: int = 3600
    exempt_namespaces: tuple[str, ...] = ("kube-system",)
    exempt_labels: dict[str, str] = field(default_factory=dict)  # pods with all of these are not injected
    resources: dict[str, Any] = field(
        default_factory=lambda: {
            "requests": {"cpu": "50m", "memory": "96Mi"},
            "limits": {"cpu": "1", "memory": "256Mi"},
        }
    )

    @property
    def proxy_gid(self) -> int:
        return self.proxy_uid  # the sidecar runs as proxyUID:proxyUID

    def vault_role_for(self, namespace: str, policy: str) -> str:
        """The Vault role the sidecar of a pod in ``namespace`` serving ``policy`` logs in as."""
        return self.vault_role.replace("{namespace}", namespace).replace("{policy}", policy)

    def native_sidecars_enabled(self) -> bool:
        if self.native_sidecars == "always":
            return True
        if self.native_sidecars == "never":
            return False
        major, _, minor = self.kubernetes_version.removeprefix("v").partition(".")
        try:
            # Native sidecars (SidecarContainers) are on by default from Kubernetes 1.29.
            return (int(major), int(re.split(r"\D", minor)[0] or 0)) >= (1, 29)
        except ValueError:
            return False


_DNS_LABEL = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
_DNS_SUBDOMAIN = rf"{_DNS_LABEL}(\.{_DNS_LABEL})*"
# The API server's own limits: UIDs and GIDs are int64 but must fit in 0..2^31-1; a projected
# token lives at least 10 minutes and at most 2^32 seconds.
Port = Annotated[int, Field(ge=1, le=65535)]
Id = Annotated[int, Field(ge=1, le=2**31 - 1)]
NonEmpty = Annotated[str, StringConstraints(min_length=1, pattern=r"^\S+$")]
Subdomain = Annotated[str, StringConstraints(max_length=253, pattern=rf"^({_DNS_SUBDOMAIN})?$")]
Label = Annotated[str, StringConstraints(pattern=rf"^{_DNS_LABEL}$")]
_QUANTITY = re.compile(r"^[+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)(([KMGTPE]i)|[numkMGTPE]|[eE][-+]?[0-9]+)?$")
_RESOURCE_NAME = re.compile(rf"^({_DNS_SUBDOMAIN}/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


@with_config(ConfigDict(strict=True, extra="forbid"))
class _Resources(TypedDict, total=False):
    requests: dict[str, Any]
    limits: dict[str, Any]


@with_config(ConfigDict(strict=True, extra="forbid"))
class _Document(TypedDict, total=False):
    image: NonEmpty
    imagePullPolicy: Literal["Always", "IfNotPresent", "Never"]
    mode: Literal["transparent", "explicit"]
    runtimeClassName: Subdomain
    gkeSandbox: bool
    nativeSidecars: Literal["auto", "always", "never"]
    kubernetesVersion: Annotated[str, StringConstraints(pattern=r"^(v?[0-9]+\.[0-9]+(\.[0-9]+)?([-+]\S*)?)?$")]
    proxyUID: Id
    agentUID: Id
    agentGID: Id
    proxyPort: Port
    metricsPort: Port
    redirectPorts: Annotated[list[Port], Field(min_length=1)]
    vaultAddr: Annotated[str, StringConstraints(pattern=r"^(https?://\S+)?$")]
    vaultRole: Annotated[str, StringConstraints(pattern=r"^([A-Za-z0-9_.-]|\{namespace\}|\{policy\})+$")]
    vaultAuthMount: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")]
    vaultAudience: NonEmpty
    vaultCACertConfigMap: Subdomain
    tokenExpirationSeconds: Annotated[int, Field(ge=600, le=2**32)]
    exemptNamespaces: list[Label]
    exemptLabels: dict[str, str]
    resources: _Resources


_DOCUMENT = TypeAdapter(_Document)

_KEYS = {
    "image": "image", "imagePullPolicy": "image_pull_policy", "mode": "mode", "runtimeClassName": "runtime_class",
    "gkeSandbox": "gke_sandbox", "nativeSidecars": "native_sidecars", "kubernetesVersion": "kubernetes_version",
    "proxyUID": "proxy_uid", "agentUID": "agent_uid", "agentGID": "agent_gid", "proxyPort": "proxy_port",
    "metricsPort": "metrics_port", "redirectPorts": "redirect_ports", "vaultAddr": "vault_addr",
    "vaultRole": "vault_role", "vaultAuthMount": "vault_auth_mount", "vaultAudience": "vault_audience",
    "vaultCACertConfigMap": "vault_cacert_configmap", "tokenExpirationSeconds": "token_expiration_seconds",
    "exemptNamespaces": "exempt_namespaces", "exemptLabels": "exempt_labels", "resources": "resources",
}  # fmt: skip
assert set(_KEYS) == set(_Document.__annotations__)

# What to write, for the values a type alone explains badly.
_PORT = "a TCP port, 1..65535"
_ID = "an ID in 1..2147483647 (0 is root)"
_HINTS = {
    "proxyPort": _PORT,
    "metricsPort": _PORT,
    "redirectPorts[]": _PORT,
    "proxyUID": _ID,
    "agentUID": _ID,
    "agentGID": _ID,
    "image": "an image reference, e.g. ghcr.io/sandgate/sandgate@sha256:...",
    "runtimeClassName": "a RuntimeClass name (a DNS subdomain), or '' to leave runtimeClassName alone",
    "kubernetesVersion": "a version like '1.30'",
    "vaultAddr": "a URL like https://vault.vault.svc:8200, or ''",
    "vaultRole": "a Vault role name (letters, digits, '_', '-', '.'), where {namespace} and {policy} stand for the "
    "pod's, e.g. the default '{namespace}.{policy}'",
    "vaultAuthMount": "a Vault auth mount path, e.g. kubernetes",
    "vaultAudience": "the audience Vault's Kubernetes role expects, e.g. sandgate-vault",
    "vaultCACertConfigMap": "a ConfigMap name, or ''",
    "exemptNamespaces[]": "a namespace name",
    "tokenExpirationSeconds": "seconds, 600 (Kubernetes' minimum) or more",
}
_MAX_DEPTH = 16


def parse_config(
    text: str, base: InjectorConfig | None = None, *, overrides: dict[str, Any] | None = None
) -> InjectorConfig:
    """The keys written in ``text`` (and ``overrides``, e.g. from flags) over ``base`` (default:
    the documented defaults), or a :class:`ConfigError` listing every problem."""
    if yaml_deeper_than(text, _MAX_DEPTH):
        raise ConfigError(f"nested deeper than {_MAX_DEPTH} levels; the webhook config is a flat mapping")
    # The policies' reader: total (a tag PyYAML's constructors choke on, "!!bool 1", is a problem with
    # its line, not a traceback: red team 45), a key written twice refused, timestamps kept as text.
    try:
        docs = load_documents(text, "--config")
    except PolicyInvalid as e:
        raise ConfigError("; ".join(f"not valid YAML: {x.message}" for x in e.errors)) from None
    if len(docs) > 1:
        raise ConfigError(f"holds {len(docs)} YAML documents; the webhook config is one mapping")
    doc = docs[0] if docs else {}
    if not isinstance(doc, dict):
        raise ConfigError(f"the webhook config must be a mapping of settings (got {json_type(doc)})")
    doc = {**doc, **(overrides or {})}
    problems = _problems(doc)
    if problems:
        raise ConfigError("; ".join(problems))
    kwargs: dict[str, Any] = {}
    for key, value in doc.items():
        name = _KEYS[key]
        if name in ("redirect_ports", "exempt_namespaces"):
            value = tuple(dict.fromkeys(value))
        elif name == "kubernetes_version":
            value = value.removeprefix("v")
        elif name == "resources":
            value = {kind: {res: str(q) for res, q in amounts.items()} for kind, amounts in value.items()}
        kwargs[name] = value
    cfg = dataclasses.replace(base or InjectorConfig(), **kwargs)
    problems = _conflicts(cfg)
    if problems:
        raise ConfigError("; ".join(problems))
    return cfg


def _problems(doc: dict[Any, Any]) -> list[str]:
    out = []
    unknown = [key for key in doc if key not in _KEYS]
    for key in unknown:
        close = difflib.get_close_matches(str(key), list(_KEYS), n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}?" if close else f"known keys: {', '.join(_KEYS)}"
        out.append(f"{str(key)[:60]!r} is not a setting; {hint}")
    known = {key: value for key, value in doc.items() if key in _KEYS}
    try:
        _DOCUMENT.validate_python(known)
    except ValidationError as e:
        for error in e.errors(include_url=False):
            out.append(_explain(error, known))
    else:
        out += _resource_problems(known.get("resources") or {})
    return out


def _explain(error: Any, doc: dict[str, Any]) -> str:
    loc = tuple(error["loc"])
    key, value = loc[0], doc.get(str(loc[0]))
    if len(loc) == 1 and error["type"] == "list_type" and isinstance(value, str | int) and not isinstance(value, bool):
        return f"{key} must be a list (got {json_type(value)}): write a list: [{str(value)[:60]}]"
    got = error.get("input")
    # YAML reads 1.30 as the number 1.3: the fix is quotes.
    quote = ": quote it" if error["type"] == "string_type" and isinstance(got, int | float) else ""
    generic = str(key) + "".join("[]" if isinstance(p, int) else f".{p}" for p in loc[1:])
    if generic in _HINTS:
        where = str(key) + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc[1:])
        shown = got if isinstance(got, int) and not isinstance(got, bool) else json_type(got)
        return f"{where} must be {_HINTS[generic]} (got {shown}){quote}"
    return describe_error(error, maps=frozenset({"exemptLabels"}), root="the webhook config") + quote


def _resource_problems(resources: dict[str, dict[str, Any]]) -> list[str]:
    out = []
    for kind, amounts in resources.items():
        for name, quantity in amounts.items():
            if not _RESOURCE_NAME.match(name):
                out.append(f"resources.{kind}: {name[:60]!r} is not a resource name (e.g. cpu, memory)")
            elif isinstance(quantity, bool) or not isinstance(quantity, int | float | str):
                out.append(f"resources.{kind}.{name} must be a quantity like 100m or 128Mi (got {json_type(quantity)})")
            elif (isinstance(quantity, str) and not _QUANTITY.match(quantity)) or (
                not isinstance(quantity, str) and (quantity < 0 or quantity != quantity)
            ):
                out.append(f"resources.{kind}.{name} must be a quantity like 100m or 128Mi")
    return out


def _conflicts(cfg: InjectorConfig) -> list[str]:
    out = []
    if cfg.proxy_uid == cfg.agent_uid:
        out.append(f"proxyUID and agentUID are both {cfg.proxy_uid}: agents would run as the proxy, uncaptured")
    if cfg.agent_gid == cfg.proxy_gid:
        out.append(f"agentGID is {cfg.agent_gid}, the proxy's GID (proxyUID): give agents another group")
    if cfg.proxy_port == cfg.metrics_port:
        out.append(f"proxyPort and metricsPort are both {cfg.proxy_port}: give each its own port")
    return out
