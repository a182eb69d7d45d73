"""The ``sandgate`` command line. Subcommands import their modules lazily so ``--help`` is quick."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from pathlib import Path

from proxy.version import version
from sandgate.procs import STOP_GRACE


def _size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    t = text.strip().lower().removesuffix("ib").removesuffix("b")
    try:
        size = int(float(t[:-1]) * units[t[-1]]) if t and t[-1] in units else int(t)
    except (ValueError, OverflowError):
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (write e.g. 64k, 32m)") from None
    if not 0 < size <= 1 << 40:
        raise argparse.ArgumentTypeError(f"{text!r}: give a size above 0, at most 1t")
    return size


def _whole(low: int, high: int, what: str) -> Callable[[str], int]:
    """An argparse type: a whole number from ``low`` to ``high``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a {what}: {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text!r}: a {what} is {low} to {high}")
        return value

    return parse


_port = _whole(0, 65535, "port number")
_dest_port = _whole(1, 65535, "port number")  # (one to send to: 0 picks nothing)
_count = _whole(1, 1 << 31, "whole number")


_YEAR = 365 * 86400.0


def _seconds(text: str) -> float:
    """A duration: a finite number of seconds above 0 (NaN and inf would make every comparison
    with it false, or a timer that never fires)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value <= _YEAR:  # (False for NaN)
        raise argparse.ArgumentTypeError(f"{text!r}: give a number of seconds above 0, at most a year ({_YEAR:g})")
    return value


def _hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"not HOST:PORT: {text!r}")
    if any(c.isspace() for c in host):  # (red team 63: "a b:1" was taken, and every dial failed later)
        raise argparse.ArgumentTypeError(f"not HOST:PORT: {text!r} (a blank in the host)")
    return _host(host), int(port)


def _secret_size(text: str) -> int:
    """--max-secret-bytes: at least a value's shortest (red team 63: 7 was taken, and every value,
    8 characters at least, was then secret_invalid)."""
    from proxy.core.secret import MIN_SECRET_CHARS

    size = _size(text)
    if size < MIN_SECRET_CHARS:
        raise argparse.ArgumentTypeError(f"{text!r}: a secret value has {MIN_SECRET_CHARS} characters at least")
    return size


def _host(text: str) -> str:
    """An address or a host name to listen on ('' for all): a name the idna codec refuses (an empty
    label, a..b; a label over 63 characters) made getaddrinfo raise UnicodeError, a traceback
    (red team 45)."""
    import ipaddress

    if not text:
        return text
    try:
        ipaddress.ip_address(text)
        return text
    except ValueError:
        pass
    try:
        text.encode("idna")
    except UnicodeError:
        raise argparse.ArgumentTypeError(
            f"not an address or a host name: {text[:80]!r} (an empty label, or one over 63 characters)"
        ) from None
    return text


MAX_ID = 4294967294  # a UID or GID to the kernel; (uid_t)-1 means "leave it" to setuid
_id = _whole(0, MAX_ID, "UID")


def _user_spec(text: str) -> str:
    """``UID[:GID]``, numbers the kernel takes: a UID it refused was found out only once the whole
    sandbox stood, as a traceback (red team 45)."""
    uid, _, gid = text.partition(":")
    for n in (uid, gid) if gid else (uid,):
        if not (n.isascii() and n.isdigit()) or int(n) > MAX_ID:
            raise argparse.ArgumentTypeError(
                f"{text[:40]!r}: give UID[:GID], numbers 0 to {MAX_ID} (e.g. 1000 or 1000:1000)"
            )
    return text


def _cidr(text: str) -> str:
    import ipaddress

    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def _grace(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError("give a number of seconds above 0, at most 3600")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sandgate",
        description="Run untrusted AI agents with real credentials: an egress proxy that swaps placeholder keys "
        "for real ones only toward the hosts each key is bound to, and denies everything else.",
    )
    p.add_argument("--version", action="version", version=f"sandgate {version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    px = sub.add_parser(
        "proxy",
        help="run the egress proxy sidecar",
        description="Run the egress proxy sidecar for one EgressPolicy. Prints one line starting with "
        "'sandgate proxy ready:' when it serves; exits 2 on bad configuration. Audit records (JSON lines) follow "
        "on stdout, or go to --audit-log; diagnostics go to stderr.",
        epilog="environment: SANDGATE_NATIVE=1 requires the per-request modules compiled (./scripts/compile; the "
        "image sets it), 0 runs them as plain Python whatever is built; unset, whatever is built. The ready line "
        "ends in datapath=compiled or datapath=python.",
    )
    px.add_argument("--policy", required=True, type=Path, help="EgressPolicy YAML file (reloaded when it changes)")
    px.add_argument(
        "--mode",
        choices=["regular", "transparent"],
        default="regular",
        help="regular: agents use HTTPS_PROXY; transparent: traffic arrives via iptables REDIRECT (default: regular)",
    )
    px.add_argument(
        "--listen-host", type=_host, default="127.0.0.1", help="address to listen on; '' for all (default: 127.0.0.1)"
    )
    px.add_argument("--listen-port", type=_port, default=8080, help="proxy port; 0 picks a free one (default: 8080)")
    px.add_argument(
        "--metrics-host",
        type=_host,
        default="127.0.0.1",
        help="address of the Prometheus endpoint (default: 127.0.0.1)",
    )
    px.add_argument("--metrics-port", type=_port, default=15090, help="Prometheus /metrics port (default: 15090)")
    px.add_argument(
        "--confdir",
        type=Path,
        help="where the per-proxy CA lives (its key never leaves it); agents trust CONFDIR/ca.crt. An existing "
        "directory or CA key must be ours and not writable or readable by others (default: a private per-user "
        "directory, $XDG_RUNTIME_DIR/sandgate-proxy or $TMPDIR/sandgate-proxy-UID, mode 0700)",
    )
    px.add_argument(
        "--ca-cert-out",
        type=Path,
        help="also write the CA certificate (never the key) here once ready; in a pod, the volume agents mount",
    )
    px.add_argument(
        "--upstream-ca",
        type=Path,
        action="append",
        default=[],
        help="extra CA (PEM) to trust for upstream TLS, on top of the system CAs; repeatable",
    )
    px.add_argument(
        "--allow-private",
        type=_cidr,
        action="append",
        default=[],
        metavar="CIDR",
        help="let the proxy dial this otherwise-denied non-public range (e.g. an internal API); repeatable",
    )
    px.add_argument(
        "--audit-log",
        type=Path,
        help="append the audit records (one JSON line per decision, schema sandgate.audit/v1) to this file "
        "(default: stdout, after the ready line; diagnostics always go to stderr)",
    )
    px.add_argument("--max-header-bytes", type=_size, default="64k", help="request header limit -> 431 (default: 64k)")
    px.add_argument("--max-request-body", type=_size, default="32m", help="request body limit -> 413 (default: 32m)")
    px.add_argument("--max-connections", type=_count, default=512, help="concurrent client connections (default: 512)")
    px.add_argument(
        "--header-timeout",
        type=_seconds,
        default=30.0,
        metavar="SECONDS",
        help="a request head must arrive within this time of its first byte -> 408 (default: 30)",
    )
    px.add_argument(
        "--idle-timeout",
        type=_seconds,
        default=300.0,
        metavar="SECONDS",
        help="close connections silent for this long (default: 300)",
    )
    px.add_argument(
        "--secret-refresh",
        type=_seconds,
        default=60.0,
        metavar="SECONDS",
        help="re-fetch every secret this often, in the background (default: 60)",
    )
    px.add_argument(
        "--max-secret-bytes",
        type=_secret_size,
        default="8k",
        help="a secret value longer than this is secret_invalid and never used (default: 8k)",
    )
    px.add_argument(
        "--secret-max-stale",
        type=_seconds,
        default=300.0,
        metavar="SECONDS",
        help="serve a value at most this long after it was last fetched (while its source is unreachable), then "
        "fail closed; longer than --secret-refresh (default: 300)",
    )
    vg = px.add_argument_group(
        "vault / openbao",
        "Used for `source: {vault: ...}` secrets. Flags fall back to VAULT_ADDR, "
        "VAULT_TOKEN, VAULT_NAMESPACE, VAULT_CACERT, VAULT_ROLE_ID.",
    )
    vg.add_argument("--vault-addr", help="https://... of Vault/OpenBao (env VAULT_ADDR)")
    vg.add_argument(
        "--vault-auth",
        choices=["token", "approle", "kubernetes"],
        default="token",
        help="token: VAULT_TOKEN; approle: --vault-role is the role_id, with --vault-secret-id-file; "
        "kubernetes: --vault-role with --vault-jwt-file (default: token)",
    )
    vg.add_argument("--vault-role", help="AppRole role_id, or the Kubernetes auth role name")
    vg.add_argument("--vault-secret-id-file", help="file holding the AppRole secret_id")
    vg.add_argument(
        "--vault-jwt-file",
        default="/var/run/secrets/sandgate/vault/token",
        help="projected service-account token for Kubernetes auth (default: /var/run/secrets/sandgate/vault/token)",
    )
    vg.add_argument("--vault-auth-mount", help="mount path of the auth method (default: approle / kubernetes)")
    vg.add_argument("--vault-namespace", help="Vault Enterprise / OpenBao namespace (env VAULT_NAMESPACE)")
    vg.add_argument(
        "--vault-cacert", help="CA bundle to verify Vault's certificate (env VAULT_CACERT; default: system CAs)"
    )
    vg.add_argument(
        "--vault-timeout",
        type=_seconds,
        default=5.0,
        metavar="SECONDS",
        help="for the whole of each secret read or token renewal, a login included (default: 5)",
    )
    vg.add_argument(
        "--vault-allow-http", action="store_true", help="allow a plain-http VAULT_ADDR (local development only)"
    )
    vg.add_argument(
        "--vault-proxy",
        metavar="URL",
        help="reach Vault through this HTTP proxy (http://HOST:PORT, CONNECT); HTTPS_PROXY and the other "
        "proxy variables of the environment are never used for Vault",
    )
    px.add_argument(
        "--require-secrets",
        action="store_true",
        help="exit 3 at start if any secret of the policy cannot be fetched (default: serve, failing those requests closed)",
    )
    px.add_argument(
        "--env-file",
        type=Path,
        metavar="FILE",
        help="a JSON object of environment variables (secrets, VAULT_TOKEN) to load after start; the file is "
        "removed once read (set by `sandgate run`: nothing secret in any process's initial environment)",
    )
    px.add_argument(
        "--upstream-relay",
        type=_hostport,
        metavar="HOST:PORT",
        help="resolve names and open every upstream connection through this Sandgate relay (set by `sandgate run` "
        "for a proxy inside a sealed sandbox; see proxy/relay.py)",
    )

    wh = sub.add_parser(
        "webhook",
        help="run the admission webhook (injects the sidecar, validates policy ConfigMaps)",
        description="Serve AdmissionReview v1 over HTTPS: POST /mutate (pods), POST /validate (policy ConfigMaps), "
        "/healthz, /readyz, /metrics. The certificate is reloaded when its files change.",
    )
    wh.add_argument("--tls-cert", required=True, type=Path, help="serving certificate (PEM)")
    wh.add_argument("--tls-key", required=True, type=Path, help="its private key (PEM)")
    wh.add_argument("--host", default="0.0.0.0", help="listen address (default: 0.0.0.0)")
    wh.add_argument("--port", type=_port, default=8443, help="listen port (default: 8443)")
    wh.add_argument("--config", type=Path, help="injector settings YAML (see README; default: built-in defaults)")
    wh.add_argument(
        "--policy-dir",
        type=Path,
        help="read policies from DIR/<namespace>/<name>.yaml or DIR/<name>.yaml instead of ConfigMaps",
    )
    wh.add_argument("--kubernetes-version", help="the cluster's version (e.g. 1.30), for nativeSidecars: auto")
    wh.add_argument(
        "--policy-writer",
        action="append",
        default=[],
        metavar="group:NAME|user:NAME",
        help="who may create or change policy ConfigMaps; repeatable (default: nobody)",
    )
    wh.add_argument(
        "--kubeconfig", type=Path, help="reach the API server through this kubeconfig (default: in-cluster)"
    )
    tls = wh.add_argument_group(
        "a certificate the webhook owns (instead of --tls-cert/--tls-key files from cert-manager)",
        "Keep the serving certificate in a Secret (which must exist: the chart renders it empty; renewed a third "
        "before expiry), write it to "
        "--tls-cert/--tls-key, and keep its CA in the caBundle of both webhook configurations.",
    )
    tls.add_argument("--tls-secret", metavar="NAME", help="the Secret, in --namespace")
    tls.add_argument("--namespace", help="namespace of the Secret and of the Service")
    tls.add_argument("--service", help="the webhook's Service: the certificate names SERVICE.NAMESPACE.svc")
    tls.add_argument("--webhook-configuration", metavar="NAME",
                     help="the MutatingWebhookConfiguration and ValidatingWebhookConfiguration of this name")  # fmt: skip
    tls.add_argument(
        "--tls-validity-days", type=_count, default=365, help="validity of each CA and certificate (default: 365)"
    )
    tls.add_argument("--tls-check-interval", type=_seconds, default=60.0,
                     help="seconds between checks of the Secret and the caBundles; each rotation step waits five (default: 60)")  # fmt: skip

    rn = sub.add_parser(
        "run",
        help="run a command under a policy on this machine, sealed like a pod (gVisor / network namespace)",
        description="Run CMD the way a pod runs an agent: as root, CMD and the proxy share a sealed network namespace "
        "(inside one gVisor sandbox when runsc is installed; without it, also PID, mount and IPC namespaces of their "
        "own, but CMD runs as its user on the host's files) whose only way out is the proxy; without root, the proxy "
        "is only announced to CMD through HTTPS_PROXY (cooperative; a warning says so). CMD sees the policy's "
        "placeholders and the per-run CA, never the real values. Exits with CMD's status (128+N after signal N); "
        "Ctrl-C/SIGTERM reach CMD, then everything run started is removed.",
        epilog="exit status: CMD's; 2 usage or policy error; 125 the sandbox or proxy could not start; 127 CMD not found",
    )
    rn.add_argument("--policy", required=True, type=Path, help="EgressPolicy YAML file")
    rn.add_argument(
        "--gvisor",
        choices=["auto", "on", "off"],
        default="auto",
        help="auto: gVisor if root and runsc is installed, else a network namespace if root; on: gVisor or fail; "
        "off: never gVisor (default: auto)",
    )
    rn.add_argument(
        "--explicit-proxy",
        action="store_true",
        help="do not isolate: only set HTTPS_PROXY for CMD (cooperative; the default without root)",
    )
    rn.add_argument(
        "--user",
        type=_user_spec,
        metavar="UID[:GID]",
        help="who CMD runs as inside the sandbox; never 0 (default: $SUDO_UID:$SUDO_GID, else 65534)",
    )
    rn.add_argument(
        "--secrets-from",
        choices=["policy", "env", "vault"],
        default="policy",
        help="policy: each secret from the source the policy names; env: every secret from SANDGATE_SECRET_<NAME> "
        "(e.g. SANDGATE_SECRET_OPENAI), whatever the policy says; vault: require every secret to come from Vault "
        "(VAULT_ADDR, VAULT_TOKEN, ...) (default: policy)",
    )
    rn.add_argument("--audit-log", type=Path, help="append the proxy's audit lines to this file")
    rn.add_argument("--metrics-out", type=Path, help="write the proxy's final /metrics here after CMD exits")
    rn.add_argument("--stop-grace", type=_grace, default=STOP_GRACE, metavar="SECONDS",
                    help=f"after Ctrl-C or SIGTERM, how long CMD gets to end before the sandbox is killed "
                         f"(default {STOP_GRACE:g})")  # fmt: skip
    rn.add_argument(
        "--upstream-ca", type=Path, action="append", default=[], help="extra CA to trust upstream; repeatable"
    )
    rn.add_argument("--allow-private", type=_cidr, action="append", default=[], metavar="CIDR",
                    help="let the proxy dial this non-public range; repeatable")  # fmt: skip
    rn.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD ...", help="the command to run")

    cap = sub.add_parser(
        "capture",
        help="install and verify the pod's traffic capture (iptables, IPv4 and IPv6)",
        description="Run as root with NET_ADMIN in the pod's network namespace before any agent code. Installs "
        "one REDIRECT rule per port for every UID but the proxy's, drops all other egress, then verifies "
        "both functionally. Exits 1 if capture is not in force.",
    )
    cap.add_argument("--proxy-uid", type=_id, required=True, help="the proxy's UID: its traffic is not captured")
    cap.add_argument("--proxy-port", type=_dest_port, required=True, help="the proxy's transparent listener port")
    cap.add_argument("--ports", default="80,443", help="TCP ports to capture, comma-separated (default: 80,443)")
    cap.add_argument(
        "--dns",
        choices=["allow-resolvers", "block"],
        default="allow-resolvers",
        help="allow DNS to the resolvers in /etc/resolv.conf, or block all DNS (default: allow-resolvers)",
    )
    cap.add_argument("--iptables", help="iptables binary (default: iptables-legacy, else iptables)")
    cap.add_argument("--ip6tables", help="ip6tables binary (default: ip6tables-legacy, else ip6tables)")
    cap.add_argument("--probe-uid", type=_id, default=65534, help="UID of the verification probe (default: 65534)")
    cap.add_argument(
        "--probe-v4", default="192.0.2.1", help="documentation address the probe dials (default: 192.0.2.1)"
    )
    cap.add_argument(
        "--probe-v6", default="2001:db8::1", help="documentation address the probe dials (default: 2001:db8::1)"
    )
    cap.add_argument("--no-verify", action="store_true", help="skip the functional check (not for production)")

    pol = sub.add_parser(
        "policy",
        help="check and test EgressPolicy files offline; print their JSON Schema",
        description="Policy work for a policy repository's CI. FILE may be '-' (stdin); a file may hold an "
        "EgressPolicy, the policy ConfigMap the cluster uses, or several YAML documents. See docs/policy.md.",
        epilog="exit status: 0 all passed; 1 an invalid policy, a failing case, or a warning under --strict; "
        "2 could not run (unreadable file, bad cases file, invalid policy under test, bad flags)",
    )
    psub = pol.add_subparsers(dest="policy_command", required=True, metavar="ACTION")
    chk = psub.add_parser(
        "check",
        help="validate policy files: every problem with its field and fix",
        description="Validate policies as the proxy and the webhook will: every problem with its field and what to "
        "write instead, and warnings for what is valid but likely a mistake (a non-standard HTTP method).",
        epilog="exit status: 0 all valid; 1 a policy is invalid (or has warnings, with --strict); 2 a file could "
        "not be read",
    )
    chk.add_argument("files", nargs="+", metavar="FILE", help="policy file, policy ConfigMap manifest, or '-'")
    chk.add_argument("--strict", action="store_true", help="fail on warnings too")
    tst = psub.add_parser(
        "test",
        help="run request cases through the proxy's own decision and swap logic",
        description="Simulate requests (method, URL, headers) against a policy, offline, with the same code the "
        "proxy runs. Each case states what it expects (decision, reason, swapped, secret); unknown keys, unknown "
        "secrets or reasons and cases without expectations are errors, never silent passes.",
        epilog="exit status: 0 every case passed; 1 a case failed; 2 could not run (unreadable file, invalid "
        "policy, bad cases file)",
    )
    tst.add_argument("policy", metavar="FILE", help="policy file, policy ConfigMap manifest, or '-'")
    tst.add_argument("--cases", required=True, metavar="CASES", help="YAML file of cases (see docs/policy.md), or '-'")
    for cmd in (chk, tst):
        cmd.add_argument(
            "-o", "--output", choices=["text", "json"], default="text", help="report format on stdout (default: text)"
        )
        cmd.add_argument("--junit", metavar="FILE", help="also write a JUnit XML report to FILE")
    psub.add_parser(
        "schema",
        help="print the JSON Schema (draft 2020-12) of an EgressPolicy, for editors",
        description="Print the JSON Schema of an EgressPolicy document, generated from the loader's own field "
        "table. In an editor with yaml-language-server: '# yaml-language-server: $schema=egresspolicy.schema.json'.",
    )

    sub.add_parser(
        "demo",
        help="one-command local demo: a key swapped, a host denied, the metrics shown",
        description="Starts a local stand-in for an LLM API, runs the proxy with a demo policy, and walks an agent "
        "through a swap, an exfiltration attempt and a denied host; prints a report. Needs no network.",
    )
    # Internal: PID 1 of a `sandgate run` sandbox (no help, so not listed).
    sub.add_parser("_sandbox-init").add_argument("plan")
    return p


def _load_env_file(path: Path) -> None:
    """Secrets for the proxy that must not be in any process's initial environment (readable in
    /proc/PID/environ, under gVisor even by other UIDs): a JSON object of names to values, loaded
    into our environment after start, then the file is removed."""
    import os

    from proxy import jsonstrict

    try:
        text = path.read_text()
    finally:
        path.unlink(missing_ok=True)  # (read or not: it holds secrets, and nothing else will remove it)
    try:
        values = jsonstrict.loads(text)
    except jsonstrict.NotJson as e:
        raise ValueError(f"must be a JSON object of strings (this one is not JSON: {e})") from None
    if not isinstance(values, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and k and "=" not in k and "\0" not in k + v
        for k, v in values.items()
    ):
        raise ValueError("must be a JSON object of strings (names without '=' or NUL)")
    os.environ.update(values)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "proxy":
        import os

        if args.secret_max_stale <= args.secret_refresh:
            print(
                f"sandgate proxy: --secret-max-stale ({args.secret_max_stale:g} s) must be longer than --secret-refresh "
                f"({args.secret_refresh:g} s): a value is served at most --secret-max-stale seconds after it was last "
                "fetched, so healthy values would lapse between refreshes",
                file=sys.stderr,
            )
            return 2

        if args.env_file is not None:
            try:
                _load_env_file(args.env_file)
            except (OSError, ValueError) as e:
                print(f"sandgate proxy: --env-file {args.env_file}: {e}", file=sys.stderr)
                return 2

        from proxy.runtime import Limits
        from proxy.sidecar import ProxyConfig, run

        vault = None
        if args.vault_addr or os.environ.get("VAULT_ADDR"):
            from proxy.secrets.vault import settings_from

            vault = settings_from(args, dict(os.environ))

        cfg = ProxyConfig(
            policy=args.policy,
            mode=args.mode,
            listen_host=args.listen_host,
            listen_port=args.listen_port,
            metrics_host=args.metrics_host,
            metrics_port=args.metrics_port,
            confdir=args.confdir,
            ca_cert_out=args.ca_cert_out,
            upstream_ca=tuple(args.upstream_ca),
            allow_private=tuple(args.allow_private),
            audit_log=args.audit_log,
            limits=Limits(
                args.max_header_bytes,
                args.max_request_body,
                args.max_connections,
                args.header_timeout,
                args.idle_timeout,
            ),
            require_secrets=args.require_secrets,
            vault=vault,
            secret_refresh=args.secret_refresh,
            secret_max_stale=args.secret_max_stale,
            max_secret_bytes=args.max_secret_bytes,
            upstream_relay=args.upstream_relay,
        )
        return run(cfg)
    if args.command == "_sandbox-init":
        from sandgate.sandbox_init import main as init_main

        return init_main(args.plan)
    if args.command == "run":
        from sandgate.run import main as run_main

        return run_main(args)
    if args.command == "capture":
        from sandgate.capture import main as capture_main

        return capture_main(args)
    if args.command == "webhook":
        return _webhook(args)
    if args.command == "policy":
        return _policy(args)
    if args.command == "demo":
        from sandgate.demo import main as demo_main

        return demo_main()
    return 2


def _policy(args: argparse.Namespace) -> int:
    import os

    from proxy import policytool

    try:
        if args.policy_command == "check":
            return policytool.check(args.files, strict=args.strict, output=args.output, junit=args.junit)
        if args.policy_command == "test":
            return policytool.test(args.policy, args.cases, output=args.output, junit=args.junit)
        sys.stdout.write(policytool.schema_text())
        sys.stdout.flush()
        return 0
    except BrokenPipeError:
        # The reader (`| head`) went away: say nothing more, and keep Python's exit-time flush quiet.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 2


def _webhook(args: argparse.Namespace) -> int:
    from injector.config import ConfigError, InjectorConfig, parse_config
    from proxy.infile import read_bounded
    from proxy.policy.yamlsafe import MAX_BYTES
    from webhook.app import Settings, serve
    from webhook.certs import TASK, MissingSecret
    from webhook.kubeapi import KubeError
    from webhook.startup import connect
    from webhook.store import ConfigMapStore, DirectoryStore, PolicyStore

    try:
        # (bounded, and only a regular file: red team 63's --config /dev/zero read gigabytes, a FIFO hung)
        text = read_bounded(args.config, MAX_BYTES).decode("utf-8") if args.config else None
        config = parse_config(text) if text is not None else InjectorConfig()
    except OSError as e:
        print(f"sandgate webhook: --config: cannot read {args.config}: {e.strerror}", file=sys.stderr)
        return 2
    except (UnicodeDecodeError, ConfigError) as e:
        print(f"sandgate webhook: --config {args.config}: {e}", file=sys.stderr)
        return 2
    if args.kubernetes_version:
        try:
            config = parse_config("", config, overrides={"kubernetesVersion": args.kubernetes_version})
        except ConfigError as e:
            print(f"sandgate webhook: --kubernetes-version: {e}", file=sys.stderr)
            return 2
    started = connect(args, config)
    if isinstance(started, int):
        return started
    config, api, manager = started
    store: PolicyStore = DirectoryStore(args.policy_dir) if args.policy_dir or api is None else ConfigMapStore(api.core)
    background = ((TASK, manager.run),) if manager else ()
    settings = Settings(config=config, store=store, policy_writers=tuple(args.policy_writer), background=background)

    async def main() -> int:
        if manager is not None:
            try:
                await manager.reconcile()  # the certificate exists and is trusted before the server loads it
            except (KubeError, MissingSecret, OSError) as e:
                print(f"sandgate webhook: --tls-secret {args.tls_secret}: {e}", file=sys.stderr)
                return 2
        return await serve(settings, args.tls_cert, args.tls_key, args.host, args.port)

    return asyncio.run(main())


if __name__ == "__main__":
    sys.exit(main())
