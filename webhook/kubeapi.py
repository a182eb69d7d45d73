"""The webhook's own calls to the Kubernetes API, through the official client: a thin adapter.

Only what the certificate manager (webhook/certs.py) and the start-up version probe need: one
Secret (get, create, update), the two webhook configurations (get, JSON Patch) and ``/version``.
Callers see the wire format (plain dicts, base64 Secret data) and one exception, :class:`KubeError`,
so nothing above this module imports ``kubernetes``, and the tests drive this very adapter against
a fake API server over real TLS. The client is synchronous: call it off the event loop.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any, Literal

from proxy import jsonstrict
from proxy.infile import read_bounded

__all__ = ["KubeAPI", "KubeError", "WebhookKind", "kubernetes_version"]

log = logging.getLogger("sandgate.webhook.kube")

WebhookKind = Literal["mutating", "validating"]

MAX_KUBECONFIG_BYTES = 1 << 20  # a kubeconfig: a few KiB, certificates inline
_TIMEOUT = (5.0, 15.0)  # connect, read: a hung API server must not stall start-up or the loop forever


class KubeError(Exception):
    """An API call that did not succeed. ``status`` is the HTTP status, None when unreachable."""

    def __init__(self, status: int | None, message: str) -> None:
        super().__init__(message)
        self.status = status


class KubeAPI:
    def __init__(self, api_client: Any) -> None:
        from kubernetes import client

        self.api_client = api_client
        self.core = client.CoreV1Api(api_client)
        self._admission = client.AdmissionregistrationV1Api(api_client)
        self._version = client.VersionApi(api_client)

    @classmethod
    def connect(cls, kubeconfig: Path | None = None) -> KubeAPI:
        """The in-cluster service account, or a kubeconfig file (running outside a cluster)."""
        from kubernetes import client, config

        where = f"--kubeconfig {kubeconfig}" if kubeconfig else "the in-cluster service account"
        try:
            if kubeconfig is not None:
                read_bounded(kubeconfig, MAX_KUBECONFIG_BYTES)  # (regular and bounded: a FIFO hung, red team 63)
                return cls(config.new_client_from_config(config_file=str(kubeconfig)))  # type: ignore[no-untyped-call]
            configuration = client.Configuration()
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            return cls(client.ApiClient(configuration))
        except OSError as e:
            raise KubeError(None, f"cannot configure the Kubernetes client from {where}: {e.strerror or e}") from None
        except (config.ConfigException, ValueError) as e:
            raise KubeError(None, f"cannot configure the Kubernetes client from {where}: {e}") from None
        except Exception as e:
            # The client's loader is not total (`clusters: 5` is a TypeError, bytes that are
            # no YAML its parser's error); its words are not shown: they may quote what the file
            # holds, a token among it.
            raise KubeError(
                None,
                f"cannot configure the Kubernetes client from {where}: not a kubeconfig it can read"
                f" ({type(e).__name__} in its loader)",
            ) from None

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            response = fn(*args, _preload_content=False, _request_timeout=_TIMEOUT, **kwargs)
        except ApiException as e:
            raise KubeError(e.status, f"{what}: {e.status} {_reason(e.body) or e.reason}") from None
        except HTTPError as e:
            raise KubeError(None, f"{what}: the API server is unreachable ({type(e).__name__})") from None
        try:
            return jsonstrict.loads(response.data)
        except jsonstrict.NotJson:
            raise KubeError(None, f"{what}: the API server answered something that is not JSON") from None

    # -- /version ---------------------------------------------------------------------------

    def server_version(self) -> str:
        """``MAJOR.MINOR`` of the API server, e.g. "1.30" (managed clusters answer minor "30+")."""
        info = self._call("GET /version", self._version.get_code)
        major = re.sub(r"\D", "", str(info.get("major", "")))
        minor = re.sub(r"\D", "", str(info.get("minor", "")))
        if not (major and minor):
            found = re.match(r"v?(\d+)\.(\d+)", str(info.get("gitVersion", "")))
            if not found:
                raise KubeError(None, "GET /version: no version in the answer")
            major, minor = found.groups()
        return f"{int(major)}.{int(minor)}"

    # -- the TLS Secret ---------------------------------------------------------------------

    def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            secret: dict[str, Any] = self._call(
                f"get secret {namespace}/{name}", self.core.read_namespaced_secret, name, namespace
            )
        except KubeError as e:
            if e.status == 404:
                return None
            raise
        return secret

    def replace_secret(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        """Update; ``KubeError(409)`` when ``metadata.resourceVersion`` is no longer current."""
        name = body["metadata"]["name"]
        replaced: dict[str, Any] = self._call(
            f"update secret {namespace}/{name}", self.core.replace_namespaced_secret, name, namespace, body
        )
        return replaced

    # -- the two webhook configurations -----------------------------------------------------

    def get_webhook_configuration(self, kind: WebhookKind, name: str) -> dict[str, Any]:
        read = (
            self._admission.read_mutating_webhook_configuration
            if kind == "mutating"
            else self._admission.read_validating_webhook_configuration
        )
        configuration: dict[str, Any] = self._call(f"get {kind}webhookconfiguration {name}", read, name)
        return configuration

    def patch_webhook_configuration(self, kind: WebhookKind, name: str, patch: list[dict[str, Any]]) -> None:
        update = (
            self._admission.patch_mutating_webhook_configuration
            if kind == "mutating"
            else self._admission.patch_validating_webhook_configuration
        )
        self._call(f"patch {kind}webhookconfiguration {name}", update, name, patch,
                   _content_type="application/json-patch+json")  # fmt: skip


def _reason(body: Any) -> str:
    """The API server's Status message (it names what is missing or forbidden), if any."""
    try:
        message = jsonstrict.loads(body).get("message", "")
    except (jsonstrict.NotJson, AttributeError):
        return ""
    return str(message)[:300]


def kubernetes_version(api: KubeAPI, configured: str) -> str:
    """The API server's version (for nativeSidecars: auto), read once at start; ``configured``
    (``--kubernetes-version``) when it cannot be read, and the log says so."""
    try:
        version = api.server_version()
    except KubeError as e:
        effect = (f"using the configured {configured}" if configured else
                  "no version configured either: the proxy is injected as a regular container")  # fmt: skip
        log.warning(json.dumps({"event": "kubernetes_version", "source": "configured", "version": configured,
                                "error": str(e), "detail": f"cannot read the server version; {effect}"}))  # fmt: skip
        return configured
    log.info(json.dumps({"event": "kubernetes_version", "source": "server", "version": version}))
    return version
