"""Who the sidecar serves: the pod's identity, for every audit record.

The injector passes these to the sidecar container only, from immutable pod fields through the
downward API (``fieldRef``), never from labels or annotations a tenant could set. A proxy run outside
a pod (``sandgate run``, ``sandgate proxy`` by hand) leaves them unset and audit records say null.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

__all__ = ["POD_IDENTITY_ENV", "pod_identity"]

# audit field -> (environment variable, downward API fieldPath)
POD_IDENTITY_ENV: dict[str, tuple[str, str]] = {
    "namespace": ("SANDGATE_POD_NAMESPACE", "metadata.namespace"),
    "pod": ("SANDGATE_POD_NAME", "metadata.name"),
    "pod_uid": ("SANDGATE_POD_UID", "metadata.uid"),
    "service_account": ("SANDGATE_SERVICE_ACCOUNT", "spec.serviceAccountName"),
    "node": ("SANDGATE_NODE_NAME", "spec.nodeName"),
}


def pod_identity(environ: Mapping[str, str] | None = None) -> dict[str, str | None]:
    env = os.environ if environ is None else environ
    return {field: (env.get(var) or None) for field, (var, _) in POD_IDENTITY_ENV.items()}
