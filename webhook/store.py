"""Where the webhook finds EgressPolicies: a directory (tests, local clusters) or ConfigMaps.

Both answer ``get(namespace, name)`` with a Policy, a MissingPolicy or a BrokenPolicy. A name that
is not a DNS-1123 label (what a ConfigMap's name can be, and what a policy's is) cannot name a
policy: it is missing, and the pod is refused with the usual message naming what to create, before
it reaches a file system path or the API server.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from injector import constants as k
from injector.mutate import BrokenPolicy, MissingPolicy
from injector.shape import is_policy_name
from injector.yamldepth import yaml_deeper_than
from proxy.policy.load import PolicyInvalid, parse_policy
from proxy.policy.model import Policy

Lookup = Policy | MissingPolicy | BrokenPolicy

__all__ = [
    "ConfigMapStore",
    "DirectoryStore",
    "Lookup",
    "PolicyStore",
    "PolicyUnreadable",
    "StoreUnavailable",
    "parse_stored",
]

# A policy is a few levels deep; PyYAML composes recursively and would end in a RecursionError.
_MAX_POLICY_DEPTH = 32
_API_TIMEOUT = 5.0  # seconds; the API server gives the whole admission 10 by default


class PolicyStore(Protocol):
    def get(self, namespace: str, name: str) -> Lookup: ...


class StoreUnavailable(Exception):
    """The store cannot be used at all (e.g. the ConfigMap store outside a cluster)."""


class PolicyUnreadable(Exception):
    """The webhook may not read policies in this namespace (RBAC): the pod's answer says so."""


def parse_stored(name: str, text: str, source: str) -> Lookup:
    """A stored policy's text, parsed; its name must be the one it is stored under."""
    if yaml_deeper_than(text, _MAX_POLICY_DEPTH):
        return BrokenPolicy(name, (f"{source}: nested deeper than {_MAX_POLICY_DEPTH} levels; no EgressPolicy is",))
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
        if not is_policy_name(name):
            return MissingPolicy(name)
        folders = [self.root / namespace] if is_policy_name(namespace) else []
        for path in [folder / f"{name}.yaml" for folder in folders] + [self.root / f"{name}.yaml"]:
            if path.is_file():
                try:
                    text = path.read_text(encoding="utf-8")
                except UnicodeDecodeError:
                    return BrokenPolicy(name, (f"{path}: not UTF-8 text",))
                return parse_stored(name, text, str(path))
        return MissingPolicy(name)


class ConfigMapStore:
    """ConfigMaps labelled ``sandgate.dev/policy=true`` with the policy under ``policy.yaml``, read
    with the official client. A thin adapter: everything it returns goes through the same parser."""

    def __init__(self, api: Any) -> None:
        self.api = api  # kubernetes.client.CoreV1Api

    @classmethod
    def in_cluster(cls) -> ConfigMapStore:
        from kubernetes import client, config

        try:
            config.load_incluster_config()  # type: ignore[no-untyped-call]
        except config.ConfigException as e:
            raise StoreUnavailable(
                f"not running in a cluster ({e}); pass --policy-dir DIR to read policies from files"
            ) from None
        return cls(client.CoreV1Api())

    def get(self, namespace: str, name: str) -> Lookup:
        from kubernetes.client.exceptions import ApiException

        if not (is_policy_name(name) and is_policy_name(namespace)):
            return MissingPolicy(name)
        try:
            cm = self.api.read_namespaced_config_map(name, namespace, _request_timeout=_API_TIMEOUT)
        except ApiException as e:
            if e.status == 404:
                return MissingPolicy(name)
            if e.status == 403:
                raise PolicyUnreadable(
                    f"Sandgate's webhook may not read policy ConfigMaps in namespace {namespace!r}: add it to the "
                    "chart's webhook.policyNamespaces (or leave that list empty)"
                ) from None
            raise
        labels = (cm.metadata.labels or {}) if cm.metadata else {}
        if labels.get(k.POLICY_CONFIGMAP_LABEL) != "true" or k.POLICY_CONFIGMAP_KEY not in (cm.data or {}):
            return MissingPolicy(name)
        return parse_stored(name, cm.data[k.POLICY_CONFIGMAP_KEY], f"configmap {namespace}/{name}")
