"""The injector's settings file: every key checked for type and range when the webhook starts, each
problem named with what to write instead."""

from __future__ import annotations

import pytest

from injector.config import ConfigError, InjectorConfig, parse_config


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "exemptNamespaces: kube-system",
            "exemptNamespaces must be a list (got a string): write a list: [kube-system]",
        ),
        ("redirectPorts: 443", "redirectPorts must be a list (got a number): write a list: [443]"),
        ("redirectPorts: []", "redirectPorts must not be empty"),
        ("redirectPorts: [80, true]", "redirectPorts[1] must be a TCP port, 1..65535 (got a boolean)"),
        ("proxyPort: x", "proxyPort must be a TCP port, 1..65535 (got a string)"),
        ("proxyPort: '15001'", "proxyPort must be a TCP port, 1..65535 (got a string)"),
        ("metricsPort: 70000", "metricsPort must be a TCP port, 1..65535 (got 70000)"),
        ("proxyUID: 0", "proxyUID must be an ID in 1..2147483647 (0 is root) (got 0)"),
        ("agentUID: 0", "agentUID must be an ID in 1..2147483647 (0 is root) (got 0)"),
        ("agentGID: -1", "agentGID must be an ID in 1..2147483647 (0 is root) (got -1)"),
        ("agentUID: 1337", "proxyUID and agentUID are both 1337"),
        ("agentGID: 1337", "agentGID is 1337, the proxy's GID (proxyUID)"),
        ("proxyPort: 15090", "proxyPort and metricsPort are both 15090"),
        ("gkeSandbox: 'true'", "gkeSandbox must be true or false (got a string)"),
        ("mode: Transparent", "mode must be 'transparent' or 'explicit'"),
        ("nativeSidecars: yes", "nativeSidecars must be 'auto', 'always' or 'never'"),
        ("imagePullPolicy: always", "imagePullPolicy must be 'Always', 'IfNotPresent' or 'Never'"),
        ("image: ''", "image must be an image reference"),
        ("runtimeClassName: gVisor", "runtimeClassName must be a RuntimeClass name"),
        ("kubernetesVersion: latest", "kubernetesVersion must be a version like '1.30'"),
        ("kubernetesVersion: 1.30", "kubernetesVersion must be a version like '1.30' (got a number): quote it"),
        ("vaultAddr: vault:8200", "vaultAddr must be a URL like https://vault.vault.svc:8200"),
        ("vaultRole: ''", "vaultRole must be a Vault role name (letters, digits, '_', '-', '.'), where {namespace}"),
        ("vaultRole: '{namespace}/{policy}'", "vaultRole must be a Vault role name"),
        ("vaultRole: '{ns}.{policy}'", "vaultRole must be a Vault role name"),
        ("vaultRole: 'agents {policy}'", "vaultRole must be a Vault role name"),
        (
            "tokenExpirationSeconds: 60",
            "tokenExpirationSeconds must be seconds, 600 (Kubernetes' minimum) or more (got 60)",
        ),
        ("exemptNamespaces: [Kube_System]", "exemptNamespaces[0] must be a namespace name"),
        ("exemptLabels: {team: 7}", "exemptLabels[team] must be a string (got a number)"),
        ("exemptLabels: [team]", "exemptLabels must be an object (got a list)"),
        ("resources: {limits: {cpu: lots}}", "resources.limits.cpu must be a quantity like 100m or 128Mi"),
        (
            "resources: {limits: {cpu: true}}",
            "resources.limits.cpu must be a quantity like 100m or 128Mi (got a boolean)",
        ),
        ("resources: {limit: {cpu: 1}}", "resources.limit is not a known field"),
        ("proxyUid: 2000", "'proxyUid' is not a setting; did you mean proxyUID?"),
        ("sidecarImage: x", "'sidecarImage' is not a setting; known keys: image,"),
        ("- image: x", "the webhook config must be a mapping of settings (got a list)"),
        ("image: [", "not valid YAML"),
        ("resources: " + "[" * 100_000 + "]" * 100_000, "nested deeper than 16 levels"),
    ],
    ids=lambda v: v[:40] if len(v) < 200 else "deeply-nested",
)
def test_a_bad_setting_is_refused_with_what_to_write(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(text)
    assert message in str(e.value)


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as e:
        parse_config("proxyPort: x\nexemptNamespaces: kube-system\nbogus: 1")
    assert "proxyPort" in str(e.value) and "exemptNamespaces" in str(e.value) and "bogus" in str(e.value)


def test_settings_are_read_with_their_types() -> None:
    cfg = parse_config(
        "exemptNamespaces: [kube-system, sandgate-system, kube-system]\nredirectPorts: [443, 80, 443]\n"
        "agentGID: 2000\nkubernetesVersion: v1.31.2-gke.100\nresources: {limits: {cpu: 2, memory: 1Gi}}\n"
    )
    assert cfg.exempt_namespaces == ("kube-system", "sandgate-system") and cfg.redirect_ports == (443, 80)
    assert cfg.agent_gid == 2000 and cfg.native_sidecars_enabled()
    assert cfg.resources == {"limits": {"cpu": "2", "memory": "1Gi"}}  # a Pod's quantities are strings


def test_an_empty_file_is_the_documented_defaults() -> None:
    assert parse_config("") == parse_config("# nothing set\n") == InjectorConfig()


def test_overrides_from_flags_are_checked_like_the_file() -> None:
    assert parse_config("", overrides={"kubernetesVersion": "1.30"}).kubernetes_version == "1.30"
    with pytest.raises(ConfigError, match="kubernetesVersion must be a version"):
        parse_config("", overrides={"kubernetesVersion": "one-thirty"})
