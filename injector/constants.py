"""Every label, annotation, name and path of the Kubernetes contract, in one place (ARCHITECTURE.md
"Kubernetes contract"). Users, the chart and the tests rely on these strings."""

from __future__ import annotations

NAMESPACE_LABEL = "sandgate.dev/inject"  # on a namespace: "enabled" opts every pod in
NAMESPACE_LABEL_VALUE = "enabled"
POLICY_ANNOTATION = "sandgate.dev/policy"  # on a pod: which EgressPolicy (default "default")
DEFAULT_POLICY = "default"
STATUS_ANNOTATION = "sandgate.dev/status"  # written by the webhook
STATUS_INJECTED = "injected"
POLICY_CONFIGMAP_LABEL = "sandgate.dev/policy"  # on a ConfigMap: "true" marks a policy
POLICY_CONFIGMAP_KEY = "policy.yaml"

SIDECAR = "sandgate-proxy"
METRICS_PORT_NAME = "sg-metrics"  # the sidecar's /metrics port (an IANA service name: 15 characters at most)
CAPTURE = "sandgate-capture"
OUR_CONTAINERS = frozenset({SIDECAR, CAPTURE})

VOLUME_CONF = "sandgate-conf"  # the sidecar's confdir: the CA key lives here; sidecar only
VOLUME_CA = "sandgate-ca"  # the CA certificate alone, shared read-only with agents
VOLUME_POLICY = "sandgate-policy"  # the policy ConfigMap; sidecar only
VOLUME_VAULT_TOKEN = "sandgate-vault-token"  # projected service-account token; sidecar only
VOLUME_VAULT_CA = "sandgate-vault-ca"  # vaultCACertConfigMap's ca.crt, to verify Vault; sidecar only

CONF_DIR = "/var/run/sandgate/conf"
CA_DIR = "/var/run/sandgate/ca"
CA_FILE = f"{CA_DIR}/ca.crt"
POLICY_DIR = "/etc/sandgate/policy"
VAULT_TOKEN_DIR = "/var/run/secrets/sandgate/vault"
VAULT_TOKEN_FILE = f"{VAULT_TOKEN_DIR}/token"
VAULT_CA_DIR = "/etc/sandgate/vault-ca"
VAULT_CA_FILE = f"{VAULT_CA_DIR}/ca.crt"

# Environment variables that point common TLS stacks at the per-pod CA.
CA_ENV = (
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
    "GIT_SSL_CAINFO",
    "AWS_CA_BUNDLE",
)
PROXY_ENV = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")
NO_PROXY_ENV = ("NO_PROXY", "no_proxy")

# Pod metadata that other meshes or older versions of us use to opt out or tune interception:
# never honoured, and refused so nobody believes it works (SECURITY-CASES D03).
IGNORED_OPT_OUTS = (
    "sandgate.dev/inject",
    "sidecar.istio.io/inject",
    "traffic.sidecar.istio.io/excludeOutboundIPRanges",
    "traffic.sidecar.istio.io/excludeOutboundPorts",
)
