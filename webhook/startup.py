"""The webhook's start-up against its cluster, between the CLI and the server.

It sets up the JSON log lines, connects to the API server (in-cluster, or ``--kubeconfig``), reads
the server version for ``nativeSidecars: auto`` (falling back to ``--kubernetes-version``, and
saying so), and builds the certificate manager when the webhook owns its certificate
(``--tls-secret``). Bad arguments end here with a message and an exit status, not a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import logging
import sys

from injector.config import InjectorConfig
from webhook.certs import CertificateManager, Timing
from webhook.kubeapi import KubeAPI, KubeError, kubernetes_version

__all__ = ["connect"]


def connect(
    args: argparse.Namespace, config: InjectorConfig
) -> int | tuple[InjectorConfig, KubeAPI | None, CertificateManager | None]:
    """(config with the server's version, the API or None without a cluster, the certificate manager
    or None without --tls-secret), or an exit status after a message."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logging.getLogger("sandgate").addHandler(handler)
    logging.getLogger("sandgate").setLevel(logging.INFO)
    if args.policy_dir and not (args.kubeconfig or args.tls_secret):
        return config, None, None  # no cluster: policies from files, the configured version
    try:
        api = KubeAPI.connect(args.kubeconfig)
    except KubeError as e:
        print(f"sandgate webhook: {e}", file=sys.stderr)
        return 2
    if config.native_sidecars == "auto":
        config = dataclasses.replace(config, kubernetes_version=kubernetes_version(api, config.kubernetes_version))
    if not args.tls_secret:
        return config, api, None
    missing = [
        f"--{f.replace('_', '-')}" for f in ("namespace", "service", "webhook_configuration") if not getattr(args, f)
    ]
    if missing or args.tls_validity_days < 1 or args.tls_check_interval <= 0:
        print(f"sandgate webhook: --tls-secret needs {', '.join(missing) or 'a positive --tls-validity-days and --tls-check-interval'}",
              file=sys.stderr)  # fmt: skip
        return 2
    try:
        manager = CertificateManager(
            api, namespace=args.namespace, secret=args.tls_secret, service=args.service,
            webhook_configuration=args.webhook_configuration, cert_file=args.tls_cert, key_file=args.tls_key,
            timing=Timing(validity=datetime.timedelta(days=args.tls_validity_days),
                          settle=datetime.timedelta(seconds=5 * args.tls_check_interval)),
            interval=args.tls_check_interval,
        )  # fmt: skip
    except ValueError as e:
        print(f"sandgate webhook: --tls-cert/--tls-key: {e}", file=sys.stderr)
        return 2
    return config, api, manager
