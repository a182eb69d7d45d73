"""Where the webhook finds EgressPolicies: a directory (tests, local clusters) or ConfigMaps.

Both answer ``get(namespace, name)`` with a Policy, a MissingPolicy or a BrokenPolicy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from injector import constants as k
from injector.mutate import BrokenPolicy, MissingPolicy
from proxy.policy.load import PolicyInvalid, parse_policy
from proxy.policy.model import Policy

Lookup = Policy | MissingPolicy | BrokenPolicy


class PolicyStore(Protocol):
    def get(self, namespace: str, name: str) -> Lookup: ...


def _parse(name: str, text: str, source: str) -> Lookup:
    try:
        policy = parse_policy(text, source=source)
    except PolicyInvalid as e:
        return BrokenPolicy(name, tuple(str(x) for x in e.errors))
    if policy.name != name:
        return BrokenPolicy(
            name, (f"metadata.name: is {policy.name!r}; the ConfigMap and the policy must have the same name",)
        )
    return policy


class DirectoryStore:
    """``<dir>/<namespace>/<name>.yaml``, else ``<dir>/<name>.yaml`` (one policy for every namespace)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def get(self, namespace: str, name: str) -> Lookup:
        if "/" in name or name.startswith("."):
            return MissingPolicy(name)
        for path in (self.root / namespace / f"{name}.yaml", self.root / f"{name}.yaml"):
            if path.is_file():
                return _parse(name, path.read_text(encoding="utf-8"), str(path))
        return MissingPolicy(name)


class ConfigMapStore:
    """ConfigMaps labelled ``sandgate.dev/policy=true`` with the policy under ``policy.yaml``, read
    with the official client. A thin adapter: everything it returns goes through the same parser."""

    def __init__(self, api: Any) -> None:
        self.api = api  # kubernetes.client.CoreV1Api

    @classmethod
    def in_cluster(cls) -> ConfigMapStore:
        from kubernetes import client, config

        config.load_incluster_config()  # type: ignore[no-untyped-call]
        return cls(client.CoreV1Api())

    def get(self, namespace: str, name: str) -> Lookup:
        from kubernetes.client.exceptions import ApiException

        try:
            cm = self.api.read_namespaced_config_map(name, namespace)
        except ApiException as e:
            if e.status == 404:
                return MissingPolicy(name)
            raise
        labels = (cm.metadata.labels or {}) if cm.metadata else {}
        if labels.get(k.POLICY_CONFIGMAP_LABEL) != "true" or k.POLICY_CONFIGMAP_KEY not in (cm.data or {}):
            return MissingPolicy(name)
        return _parse(name, cm.data[k.POLICY_CONFIGMAP_KEY], f"configmap {namespace}/{name}")
