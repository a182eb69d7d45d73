"""The webhook's injection settings: one YAML file, every key optional, defaults documented here."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import yaml

__all__ = ["ConfigError", "InjectorConfig", "parse_config"]


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class InjectorConfig:
    image: str = "ghcr.io/sandgate/sandgate:0.1.0"  # one image: sidecar and capture
    image_pull_policy: str = "IfNotPresent"
    mode: str = "transparent"  # transparent (iptables capture) | explicit (HTTPS_PROXY env only)
    runtime_class: str = "gvisor"  # forced on every pod; "" leaves runtimeClassName alone
    gke_sandbox: bool = False  # add GKE Sandbox's nodeSelector and toleration
    native_sidecars: str = "auto"  # auto | always | never
    kubernetes_version: str = ""  # e.g. "1.30"; "auto" decisions need it (told, or discovered by the webhook)
    proxy_uid: int = 1337
    agent_uid: int = 1000  # runAsUser given to agents that leave it unset
    proxy_port: int = 15001
    metrics_port: int = 15090
    redirect_ports: tuple[int, ...] = (80, 443)
    vault_addr: str = ""
    vault_role: str = ""  # Kubernetes auth role; "" -> the policy's name
    vault_auth_mount: str = "kubernetes"
    vault_audience: str = "vault"  # audience of the projected service-account token
    vault_cacert_configmap: str = ""  # a ConfigMap with key ca.crt to verify Vault
    token_expiration_seconds: int = 3600
    exempt_namespaces: tuple[str, ...] = ("kube-system",)
    exempt_labels: dict[str, str] = field(default_factory=dict)  # pods with all of these are not injected
    resources: dict[str, Any] = field(
        default_factory=lambda: {
            "requests": {"cpu": "50m", "memory": "96Mi"},
            "limits": {"cpu": "1", "memory": "256Mi"},
        }
    )

    def native_sidecars_enabled(self) -> bool:
        if self.native_sidecars == "always":
            return True
        if self.native_sidecars == "never":
            return False
        major, _, minor = self.kubernetes_version.partition(".")
        try:
            # Native sidecars (SidecarContainers) are on by default from Kubernetes 1.29.
            return (int(major), int(minor.split(".")[0] or 0)) >= (1, 29)
        except ValueError:
            return False


_KEYS = {
    "image": "image", "imagePullPolicy": "image_pull_policy", "mode": "mode", "runtimeClassName": "runtime_class",
    "gkeSandbox": "gke_sandbox", "nativeSidecars": "native_sidecars", "kubernetesVersion": "kubernetes_version",
    "proxyUID": "proxy_uid", "agentUID": "agent_uid", "proxyPort": "proxy_port", "metricsPort": "metrics_port",
    "redirectPorts": "redirect_ports", "vaultAddr": "vault_addr", "vaultRole": "vault_role",
    "vaultAuthMount": "vault_auth_mount", "vaultAudience": "vault_audience",
    "vaultCACertConfigMap": "vault_cacert_configmap", "tokenExpirationSeconds": "token_expiration_seconds",
    "exemptNamespaces": "exempt_namespaces", "exemptLabels": "exempt_labels", "resources": "resources",
}  # fmt: skip


def parse_config(text: str, base: InjectorConfig | None = None) -> InjectorConfig:
    """The keys written in ``text`` over ``base`` (default: the documented defaults)."""
    doc = yaml.safe_load(text) or {}
    if not isinstance(doc, dict):
        raise ConfigError("the webhook config must be a mapping")
    unknown = sorted(set(doc) - set(_KEYS))
    if unknown:
        raise ConfigError(f"unknown keys {unknown}; known: {', '.join(sorted(_KEYS))}")
    kwargs: dict[str, Any] = {}
    for key, value in doc.items():
        name = _KEYS[key]
        if name in ("redirect_ports", "exempt_namespaces"):
            value = tuple(value)
        kwargs[name] = value
    cfg = dataclasses.replace(base or InjectorConfig(), **kwargs)
    if cfg.mode not in ("transparent", "explicit"):
        raise ConfigError("mode: write 'transparent' or 'explicit'")
    if cfg.native_sidecars not in ("auto", "always", "never"):
        raise ConfigError("nativeSidecars: write 'auto', 'always' or 'never'")
    if cfg.proxy_uid in (0, cfg.agent_uid):
        raise ConfigError("proxyUID must be non-zero and differ from agentUID")
    if not all(isinstance(p, int) and 0 < p < 65536 for p in cfg.redirect_ports) or not cfg.redirect_ports:
        raise ConfigError("redirectPorts: a non-empty list of TCP ports, e.g. [80, 443]")
    return cfg
