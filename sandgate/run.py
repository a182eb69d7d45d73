"""``sandgate run -- CMD``: run a command under an EgressPolicy on this machine, the way a pod runs it.

Three isolation levels, chosen by ``--gvisor`` and privileges:

- **gvisor** (root, runsc installed; ``--gvisor auto`` picks it): CMD and the proxy in one gVisor
  sandbox, capture installed inside gVisor, the sandbox's network a namespace of our own whose
  only way out is the relay (sandgate.sandbox);
- **netns** (root, no runsc, or ``--gvisor off``): the same without gVisor, in network, PID, mount
  and IPC namespaces of the sandbox's own (sandgate.sandbox_init): CMD sees no process outside, and
  every process it starts dies with the sandbox's PID 1;
- **explicit** (not root, or ``--explicit-proxy``): the proxy on loopback and CMD told about it by
  ``HTTPS_PROXY``; cooperative only, and ``run`` says so on every start.

In every mode CMD sees the policy's placeholders in its ``agentEnv`` variables and the per-run CA
in the usual trust variables, never the variables secrets are read from nor ``VAULT_*``; CMD's exit
status is ``run``'s (128+N after signal N); SIGINT/SIGTERM reach CMD and then everything is torn
down: processes, the namespace and its veth, the runsc container and its state directory.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from injector import constants as k
from proxy.infile import MAX_PEM_BYTES, read_bounded
from proxy.policy.load import PolicyInvalid, parse_policy, read_policy_text
from proxy.policy.model import Policy
from sandgate.procs import SignalForwarder, die_with_parent, exit_code, relay_lines, stop_process
from sandgate.sandbox_init import drop_to

WARNING = (
    "sandgate run: WARNING: explicit-proxy mode: CMD reaches the network through the proxy because HTTPS_PROXY tells "
    "it to; a program that ignores HTTPS_PROXY is NOT stopped. Run as root for a sealed network namespace "
    "(and install runsc for gVisor)."
)
CA_IN_SANDBOX = "ca.crt"
RUN_PREFIX = "sandgate-run-"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def isolation(args: argparse.Namespace) -> str:
    """'gvisor' | 'netns' | 'explicit', or raise ValueError with what is missing."""
    root = os.geteuid() == 0
    if args.explicit_proxy:
        if args.gvisor == "on":
            raise ValueError("--gvisor on and --explicit-proxy contradict each other")
        return "explicit"
    if args.gvisor == "on":
        if not root:
            raise ValueError("--gvisor on needs root (a network namespace and runsc)")
        if shutil.which("runsc") is None:
            raise ValueError("--gvisor on: runsc not found on PATH (Debian: apt-get install runsc)")
        return "gvisor"
    if not root:
        return "explicit"
    return "gvisor" if args.gvisor == "auto" and shutil.which("runsc") else "netns"


def _user(args: argparse.Namespace) -> tuple[int, int]:
    if args.user:
        uid_s, _, gid_s = args.user.partition(":")  # (checked by the parser: sandgate.cli._user_spec)
        uid = int(uid_s)
        return uid, int(gid_s) if gid_s else uid
    if os.environ.get("SUDO_UID", "").isdigit():
        return int(os.environ["SUDO_UID"]), int(os.environ.get("SUDO_GID", os.environ["SUDO_UID"]))
    return 65534, 65534


def main(args: argparse.Namespace) -> int:
    _not_dumpable()
    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        print(
            "sandgate run: give the command after --, e.g. sandgate run --policy p.yaml -- python agent.py",
            file=sys.stderr,
        )
        return 2
    try:
        text = read_policy_text(str(args.policy))  # read once: what is checked is what runs
        as_written = parse_policy(text, str(args.policy))  # valid as written (errors name its fields)
        args.sources_as_written = frozenset(
            s.source.env for s in as_written.secrets if s.source.kind == "env" and s.source.env
        )
        args.policy_text = effective_policy(text, args.secrets_from)
        policy = parse_policy(args.policy_text, str(args.policy))
    except PolicyInvalid as e:
        print(f"sandgate run: invalid policy\n{e}", file=sys.stderr)
        return 2
    except ValueError as e:
        print(f"sandgate run: --secrets-from {args.secrets_from}: {e}", file=sys.stderr)
        return 2
    try:  # (read once too, bounded: red team 63's --upstream-ca /dev/zero was copied until the disk was full)
        args.upstream_ca_pems = [read_bounded(ca, MAX_PEM_BYTES) for ca in args.upstream_ca]
    except OSError as e:
        print(f"sandgate run: --upstream-ca {e.filename}: cannot read: {e.strerror}", file=sys.stderr)
        return 2
    try:
        mode = isolation(args)
        uid, gid = _user(args)
    except ValueError as e:
        print(f"sandgate run: {e}", file=sys.stderr)
        return 2
    root = os.geteuid() == 0
    if (mode != "explicit" or root) and 0 in (uid, gid):
        why = (
            "as root (root could remove capture, or read the proxy's keys): pass --user UID[:GID]"
            if uid == 0
            else "in group 0 (root's group: what it may read and write, CMD could): pass --user UID:GID with another GID"
        )
        print(f"sandgate run: CMD must not run {why}", file=sys.stderr)
        return 2
    if mode == "explicit" and not root and args.user and (uid, gid) != (os.getuid(), os.getgid()):
        print(f"sandgate run: --user {args.user} needs root; without it CMD runs as you", file=sys.stderr)
        return 2
    if mode != "explicit" and _writable_by(Path(args.policy), uid, gid):
        print(
            f"sandgate run: warning: uid {uid}, who runs CMD, can change {args.policy}: a CMD could write the "
            "next run's policy (bind a key to its own host). Keep the policy where CMD cannot write it.",
            file=sys.stderr,
        )
    try:
        outputs = _open_outputs(args)
    except ValueError as e:
        print(f"sandgate run: {e}", file=sys.stderr)
        return 2
    forward = SignalForwarder()  # before anything starts: no window where a signal is lost
    _collect_stale_runs()
    try:
        with tempfile.TemporaryDirectory(prefix=RUN_PREFIX) as tmp:
            (Path(tmp) / "run.pid").write_text(str(os.getpid()))
            args.audit_path = None
            follower = None
            if args.audit_fd is not None:
                from sandgate.outfile import Follower

                (Path(tmp) / "audit").mkdir(mode=0o700)
                args.audit_path = str(Path(tmp) / "audit" / "audit.jsonl")
                follower = Follower(Path(args.audit_path), args.audit_fd)
            try:
                if mode == "explicit":
                    return _run_explicit(args, policy, cmd, Path(tmp), forward, (uid, gid) if root else None)
                return _run_sandboxed(args, policy, cmd, Path(tmp), mode, uid, gid, forward)
            finally:
                if follower is not None:
                    follower.stop()
    finally:
        forward.restore()
        for fd in outputs:
            os.close(fd)


def _not_dumpable() -> None:
    """run's /proc files (its environment, where a key to read from may be) become root's: CMD of
    run's own user (explicit mode) cannot read them (red team 46), as the proxy does for itself."""
    import ctypes

    pr_set_dumpable = 4
    if ctypes.CDLL(None, use_errno=True).prctl(pr_set_dumpable, 0, 0, 0, 0) != 0:
        print("sandgate run: warning: prctl(PR_SET_DUMPABLE, 0) failed", file=sys.stderr)


def _writable_by(path: Path, uid: int, gid: int) -> bool:
    """Whether ``uid`` (group ``gid``) could change the file at ``path``: write it, or replace it
    in its directory (what a later run reads)."""
    import stat

    def writable(st: os.stat_result) -> bool:
        return bool(st.st_uid == uid or st.st_mode & stat.S_IWOTH or (st.st_gid == gid and st.st_mode & stat.S_IWGRP))

    try:
        return writable(path.stat()) or writable(path.resolve().parent.stat())
    except OSError:
        return False


def _open_outputs(args: argparse.Namespace) -> list[int]:
    """--metrics-out and --audit-log, opened now, before CMD (whose user may write their
    directory) exists: run writes them as root through these descriptors, so nothing CMD does can
    redirect the write (sandgate.outfile). Sets args.metrics_fd and args.audit_fd. Raises
    ValueError naming the option."""
    from sandgate.outfile import OutputRefused, open_output

    opened: list[int] = []
    args.metrics_fd, args.audit_fd = None, None
    try:
        for option, path, append in (("--metrics-out", args.metrics_out, False), ("--audit-log", args.audit_log, True)):
            if path is None:
                continue
            try:
                fd = open_output(path, append=append)
            except OutputRefused as e:
                raise ValueError(f"{option} {path}: refused: {e}") from None
            except OSError as e:
                raise ValueError(f"{option} {path}: {e.strerror}") from None
            opened.append(fd)
            if append:
                args.audit_fd = fd  # (the proxy writes the run's own file; sandgate.outfile.Follower copies it here)
            else:
                args.metrics_fd = fd
    except BaseException:
        for fd in opened:
            os.close(fd)
        raise
    return opened


def secret_env_name(secret: str) -> str:
    """Where ``--secrets-from env`` reads a secret: SANDGATE_SECRET_<NAME> (openai ->
    SANDGATE_SECRET_OPENAI, github-app -> SANDGATE_SECRET_GITHUB_APP)."""
    return "SANDGATE_SECRET_" + "".join(c if c.isalnum() else "_" for c in secret.upper())


def effective_policy(text: str, secrets_from: str) -> str:
    """The policy the proxy runs: as written (``policy``), every secret from the environment
    (``env``, for a laptop without Vault), or checked to take every secret from Vault (``vault``,
    so that a local run fetches exactly what the cluster will). Raises ValueError."""
    if secrets_from == "policy":
        return text
    import yaml

    doc = _document(text)
    secrets = (doc.get("spec") or {}).get("secrets") or [] if isinstance(doc, dict) else []
    for i, secret in enumerate(secrets):
        name = secret.get("name", f"#{i}")
        if secrets_from == "env":
            secret["source"] = {"env": secret_env_name(str(name))}
        elif "vault" not in (secret.get("source") or {}):
            kind = ", ".join(secret.get("source") or {}) or "missing"
            raise ValueError(f"spec.secrets[{i}] ({name}): its source is {kind}, not vault")
    return text if secrets_from == "vault" else str(yaml.safe_dump(doc, sort_keys=False))


def _document(text: str) -> Any:
    """The policy's document read as ``parse_policy`` reads it (already checked: the same loader,
    total, timestamps kept as text). Raises PolicyInvalid (a ValueError)."""
    from proxy.policy.yamlsafe import decode, load_documents

    docs = load_documents(decode(text, "policy"), "policy")
    return docs[0] if docs else None


SECRET_ENV_FILE = "proxy-env.json"


def sealed_secrets(policy_text: str, uid: int, gid: int) -> tuple[str, dict[str, str]]:
    """For the sealed modes: what the proxy needs that CMD must never see, kept out of every
    process environment in the sandbox (gVisor lets any process read /proc/PID/environ of another
    UID's process). Returns the policy with file sources turned into env sources (the value is
    read here, once: the file may not even be visible inside the sandbox) and the values for the
    proxy's --env-file: those env sources, VAULT_* and BAO_*. Raises ValueError for a secret file
    that CMD's user could read for itself."""
    import stat

    import yaml

    doc = _document(policy_text)
    values: dict[str, str] = {}
    changed = False
    for i, secret in enumerate(((doc or {}).get("spec") or {}).get("secrets") or []):
        source = secret.get("source") or {}
        if "env" in source and str(source["env"]) in os.environ:
            values[str(source["env"])] = os.environ[str(source["env"])]
        elif "file" in source:
            path = Path(str(source["file"]))
            try:
                st = path.stat()
                data = path.read_text()
            except OSError:
                continue  # the proxy reports it (and, with --require-secrets, refuses to start)
            mode = st.st_mode
            if st.st_uid == uid or mode & stat.S_IROTH or (st.st_gid == gid and mode & stat.S_IRGRP):
                raise ValueError(
                    f"spec.secrets[{i}]: {path} is readable by uid {uid}, who runs CMD: CMD could read the real "
                    f"value. Make it root's and private (chown root: {path}; chmod 600 {path}), or use --user"
                )
            name = secret_env_name(str(secret.get("name", f"#{i}")))
            values[name] = data[:-1] if data.endswith("\n") else data
            secret["source"] = {"env": name}
            changed = True
    values.update({k: v for k, v in os.environ.items() if k.startswith(("VAULT_", "BAO_"))})
    return (str(yaml.safe_dump(doc, sort_keys=False)) if changed else policy_text), values


def _collect_stale_runs() -> None:
    """A run killed by SIGKILL cannot remove its directory (it holds the per-run CA's key): the
    next run does, for every directory of ours whose run is gone."""
    for d in Path(tempfile.gettempdir()).glob(f"{RUN_PREFIX}*"):
        try:
            if d.stat().st_uid != os.geteuid():
                continue
            pid = int((d / "run.pid").read_text())
        except (OSError, ValueError):
            continue
        try:
            os.kill(pid, 0)
            alive = Path(f"/proc/{pid}/cmdline").read_bytes().find(b"sandgate") >= 0
        except (ProcessLookupError, PermissionError, OSError):
            alive = False
        if not alive:
            shutil.rmtree(d, ignore_errors=True)


def _proxy_args(args: argparse.Namespace, confdir: Path) -> list[str]:
    """The proxy reads copies in the run's directory (a gVisor sandbox sees only that, and the
    policy CMD runs under cannot change during the run)."""
    inputs = confdir.parent / "in"
    inputs.mkdir(mode=0o700, exist_ok=True)  # the proxy's only (CMD could have made a CA path a link to a secret)
    policy = inputs / "policy.yaml"
    policy.write_text(args.policy_text)
    cas = [inputs / f"upstream-ca-{i}.pem" for i in range(len(args.upstream_ca_pems))]
    for path, pem in zip(cas, args.upstream_ca_pems, strict=True):
        path.write_bytes(pem)
    return [
        "--policy", str(policy), "--confdir", str(confdir), "--require-secrets",
        *(["--audit-log", args.audit_path] if args.audit_path else []),
        *[a for ca in cas for a in ("--upstream-ca", str(ca))],
        *[a for cidr in args.allow_private for a in ("--allow-private", cidr)],
    ]  # fmt: skip


def _run_explicit(
    args: argparse.Namespace,
    policy: Policy,
    cmd: list[str],
    tmp: Path,
    forward: SignalForwarder,
    user: tuple[int, int] | None,
) -> int:
    """``user``: whom CMD runs as, when run is root (as in the sealed modes: red team 46 found it
    ignored, CMD root, reading the keys from the proxy's environment); else CMD runs as run's user."""
    print(WARNING, file=sys.stderr, flush=True)
    confdir = tmp / "conf"
    port, metrics_port = _free_port(), _free_port()
    proxy_cmd = [
        sys.executable, "-P", "-m", "sandgate", "proxy", *_proxy_args(args, confdir),
        "--listen-port", str(port), "--metrics-port", str(metrics_port),
    ]  # fmt: skip
    proxy = subprocess.Popen(proxy_cmd, stdout=subprocess.PIPE, start_new_session=True, preexec_fn=die_with_parent)
    try:
        assert proxy.stdout is not None
        line = proxy.stdout.readline().decode()
        if not line.startswith("sandgate proxy ready"):
            proxy.wait(10)
            print(f"sandgate run: the proxy did not start (exit {proxy.returncode})", file=sys.stderr)
            return 125
        print(f"sandgate run: {line.strip()}", file=sys.stderr, flush=True)
        relay_lines(proxy.stdout, sys.stderr)  # its audit lines, unless --audit-log took them
        ca = confdir / "ca.crt"
        if user is not None:  # (a copy CMD's uid may read: the conf directory, with the CA key, is root's)
            public = tmp / "public"
            public.mkdir(mode=0o755)
            tmp.chmod(0o711)
            shutil.copyfile(ca, public / "ca.crt")
            (public / "ca.crt").chmod(0o644)
            ca = public / "ca.crt"
        env = agent_env(policy, ca, as_written=args.sources_as_written)
        for name in k.PROXY_ENV:
            env[name] = f"http://127.0.0.1:{port}"
        for name in k.NO_PROXY_ENV:
            env[name] = "localhost,127.0.0.1,::1"
        try:
            child = subprocess.Popen(cmd, env=env, preexec_fn=die_with_parent if user is None else drop_to(*user))
        except OSError as e:
            print(f"sandgate run: cannot run {cmd[0]}: {e.strerror}", file=sys.stderr)
            return 127
        forward.attach(child.send_signal)
        rc = exit_code(child.wait())
        if args.metrics_fd is not None:
            from sandgate.outfile import write_all
            from sandgate.sandbox_init import fetch_metrics

            write_all(args.metrics_fd, fetch_metrics(f"http://127.0.0.1:{metrics_port}/metrics"))
        return rc
    finally:
        stop_process(proxy)


def _run_sandboxed(
    args: argparse.Namespace,
    policy: Policy,
    cmd: list[str],
    tmp: Path,
    mode: str,
    uid: int,
    gid: int,
    forward: SignalForwarder,
) -> int:
    from proxy.netcheck import AddressPolicy
    from proxy.relay import Relay
    from sandgate import sandbox

    ports = sorted({p for rule in policy.allow for p in rule.ports})
    try:
        vault = _vault_destination(os.environ.get("VAULT_ADDR"))
        args.policy_text, secret_values = sealed_secrets(args.policy_text, uid, gid)
    except ValueError as e:
        print(f"sandgate run: {e}", file=sys.stderr)
        return 2
    net = None
    relay_thread = None
    try:
        net = sandbox.SandboxNet.create()
        relay = Relay(net.sandbox_ip, ports, AddressPolicy(args.allow_private), exact=[vault] if vault else [])
        relay_thread = _RelayThread(relay, net.host_ip)
        relay_addr = relay_thread.start_relay(sandbox.RELAY_PORT)
        shared = tmp / "shared"  # what the sandbox may write and we read: CA, metrics scrape
        shared.mkdir()
        os.chmod(tmp, 0o711)  # CMD may reach shared/ (the CA) by name; it cannot list or read the rest
        confdir = tmp / "conf"
        env_file = tmp / SECRET_ENV_FILE
        fd = os.open(env_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(secret_values, out)
        (tmp / "hosts").write_text(sandbox.HOSTS_FILE)
        (tmp / "resolv.conf").write_text(sandbox.RESOLV_CONF)
        for f in (tmp / "hosts", tmp / "resolv.conf"):
            f.chmod(0o644)
        env = agent_env(policy, shared / CA_IN_SANDBOX, secret_values.values(), args.sources_as_written)
        for name in (*k.PROXY_ENV, *k.NO_PROXY_ENV):
            env.pop(name, None)
        metrics_url = f"http://{net.sandbox_ip}:{sandbox.METRICS_PORT}/metrics"
        plan: dict[str, Any] = {
            "ports": ports,
            "proxy_port": sandbox.PROXY_PORT,
            "proxy_args": [
                *_proxy_args(args, confdir), "--mode", "transparent", "--listen-port", str(sandbox.PROXY_PORT),
                "--metrics-host", net.sandbox_ip, "--metrics-port", str(sandbox.METRICS_PORT),
                "--upstream-relay", f"{relay_addr[0]}:{relay_addr[1]}", "--ca-cert-out", str(shared / CA_IN_SANDBOX),
                "--env-file", str(env_file),
                # (the sandbox's loopback is not the host's: Vault is reached through the relay)
                *(["--vault-proxy", f"http://{relay_addr[0]}:{relay_addr[1]}"] if vault else []),
            ],
            "cmd": cmd, "cmd_env": env, "cwd": os.getcwd(), "uid": uid, "gid": gid, "stop_grace": args.stop_grace,
            "metrics_url": metrics_url, "sink": sandbox.SINK,
            "metrics_out": str(shared / "metrics.txt") if args.metrics_fd is not None else None,
        }  # fmt: skip
        os.chmod(shared, 0o755)
        if mode == "netns":
            plan["own_namespaces"] = True
            plan["private_files"] = {"/etc/hosts": str(tmp / "hosts"), "/etc/resolv.conf": str(tmp / "resolv.conf")}
        plan_file = tmp / "plan.json"
        plan_file.write_text(json.dumps(plan))
        proxy_env = _proxy_env(tmp / "in", secret_values, policy, args.sources_as_written)
        # -P (here and for every process run starts): not the working directory first on the path,
        # where an earlier run's CMD may have left a `sandgate` to be run as root.
        init = [sys.executable, "-P", "-m", "sandgate", "_sandbox-init", str(plan_file)]
        where = f"network namespace {net.netns} (link {net.sandbox_ip} <-> relay {relay_addr[0]}:{relay_addr[1]})"
        print(
            f"sandgate run: {'gVisor sandbox in ' if mode == 'gvisor' else ''}{where}; CMD as uid {uid}",
            file=sys.stderr,
            flush=True,
        )
        if mode == "netns":
            child = subprocess.Popen(
                ["nsenter", f"--net={net.netns}", *init], env=proxy_env, preexec_fn=die_with_parent
            )
            forward.attach(_with_deadline(child.send_signal, child, args.stop_grace))
            rc = exit_code(child.wait())
        else:
            rc = _run_gvisor(args, init, tmp, net, plan, proxy_env, forward)
        if args.metrics_fd is not None:
            _copy_metrics(shared / "metrics.txt", args.metrics_fd)
        return rc
    except (sandbox.SandboxError, OSError) as e:
        print(f"sandgate run: cannot build the sandbox: {e}", file=sys.stderr)
        return 125
    finally:
        if relay_thread is not None:
            relay_thread.stop()
        if net is not None:
            net.close()


def _copy_metrics(scrape: Path, out: int) -> None:
    """The sandbox's final scrape (in shared/, which only root can write) into --metrics-out,
    through the descriptor opened before CMD started."""
    from sandgate.outfile import write_all

    try:
        fd = os.open(scrape, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    with os.fdopen(fd, "rb") as f:
        write_all(out, f.read())


def _vault_destination(addr: str | None) -> tuple[str, int] | None:
    """VAULT_ADDR's host and port: the one named destination the relay lets the proxy reach."""
    import urllib.parse

    if not addr:
        return None
    try:
        u = urllib.parse.urlsplit(addr)
        port = u.port
    except ValueError as e:  # (https://[::1, a port out of range)
        raise ValueError(f"VAULT_ADDR is not a URL ({e})") from None
    if u.scheme not in ("https", "http") or not u.hostname:
        raise ValueError("VAULT_ADDR is not a URL like https://vault.example:8200")
    return u.hostname, port or (443 if u.scheme == "https" else 80)


def _proxy_env(inputs: Path, secret: dict[str, str], policy: Policy, as_written: frozenset[str]) -> dict[str, str]:
    """The sandbox init's (and so the proxy's) environment: ours without anything secret (that
    goes through --env-file; nor a real value under another name: gVisor lets CMD read root's
    /proc/PID/environ), without proxy variables (the Vault client is given the relay with
    --vault-proxy), and VAULT_CACERT copied in."""
    holds = secret_holder(_known_values(policy, as_written, secret.values()))
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in secret and name not in as_written and not holds(value)
    }
    for name in (*k.PROXY_ENV, *k.NO_PROXY_ENV):
        env.pop(name, None)
    if os.environ.get("VAULT_CACERT"):
        env["VAULT_CACERT"] = shutil.copyfile(os.environ["VAULT_CACERT"], inputs / "vault-ca.pem").as_posix()
    return env


def _run_gvisor(
    args: argparse.Namespace,
    init: list[str],
    tmp: Path,
    net: Any,
    plan: dict[str, Any],
    env: dict[str, str],
    forward: SignalForwarder,
) -> int:
    from sandgate import sandbox

    runsc = sandbox.Runsc(str(shutil.which("runsc")), tmp / "runsc-state", tmp / "bundle", f"sandgate-{os.getpid()}")
    binds: list[tuple[str, str, bool]] = [
        (str(tmp / "hosts"), "/etc/hosts", False),
        (str(tmp / "resolv.conf"), "/etc/resolv.conf", False),
        (str(tmp), str(tmp), True),  # plan, confdir, shared (the run's private directory: 0700, root's)
    ]
    if plan["cwd"] not in ("/",):
        binds.append((plan["cwd"], plan["cwd"], True))
    binds += [(d, d, False) for d in _masked_but_needed()]
    spec = sandbox.oci_spec(init, env, plan["cwd"], net.netns, binds)
    runsc.write_bundle(spec)
    (runsc.bundle / "config.json").chmod(0o600)  # it carries the proxy's environment (e.g. VAULT_TOKEN)
    try:
        child = runsc.start()
        forward.attach(_with_deadline(runsc.kill, child, args.stop_grace, lambda: runsc.kill(signal.SIGKILL)))
        return exit_code(child.wait())
    finally:
        runsc.delete()


MASKED = ("/tmp", "/run")  # private tmpfs in the gVisor sandbox


def _masked_but_needed() -> list[str]:
    """Our own interpreter and code, if they live under a directory the sandbox masks (a checkout
    in /tmp, say): bound read-only at the same path, or the sandbox's init could not start."""
    import sandgate

    wanted = {sys.prefix, sys.base_prefix, os.path.dirname(os.path.realpath(sys.executable))}
    wanted.add(str(Path(sandgate.__file__).resolve().parents[1]))
    wanted.update(p for p in sys.path if p and os.path.isdir(p))
    under = sorted(
        {os.path.realpath(p) for p in wanted if any(os.path.realpath(p).startswith(m + "/") for m in MASKED)}
    )
    out: list[str] = []
    for p in under:  # sorted: a parent comes before its children, which it already covers
        if not any(p.startswith(q + "/") for q in out):
            out.append(p)
    return out


def _with_deadline(
    send: Callable[[int], Any], child: subprocess.Popen[bytes], grace: float, kill: Callable[[], Any] | None = None
) -> Callable[[int], None]:
    """Pass a signal on; if the sandbox has not ended ``grace`` seconds later (CMD ignores
    SIGTERM, or the signal came before the sandbox's PID 1 could handle it), kill it: Ctrl-C and
    SIGTERM always tear everything down."""

    def on_signal(sig: int) -> None:
        send(sig)
        if sig in (signal.SIGINT, signal.SIGTERM):
            timer = threading.Timer(grace, lambda: child.poll() is None and (kill or child.kill)())
            timer.daemon = True
            timer.start()

    return on_signal


class _RelayThread:
    """The relay's event loop, in a thread of ``run`` itself: it lives exactly as long as ``run``."""

    def __init__(self, relay: Any, host: str) -> None:
        self.relay, self.host = relay, host
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="sandgate-relay", daemon=True)

    def start_relay(self, port: int) -> tuple[str, int]:
        self.thread.start()
        return asyncio.run_coroutine_threadsafe(self.relay.start(self.host, port), self.loop).result(10)  # type: ignore[no-any-return]

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.relay.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def secret_holder(values: Iterable[str]) -> Callable[[str], bool]:
    """Whether a text holds one of ``values``, or 16 characters in a row of one, in any form the
    proxy's outbound guard reads (any case, base64 -- Basic credentials' ``user:key`` too --, hex,
    percent- or JSON-escaped...: red team 30), with the proxy's own finder."""
    from proxy.core.scrub import views
    from proxy.core.values import Finder

    finder = Finder.for_values(((f"value{i}", v, "") for i, v in enumerate(values) if v), runs=True)

    def holds(text: str) -> bool:
        data = text.encode("utf-8", "surrogateescape")
        return finder.search(data) is not None or any(finder.search(view) is not None for view in views(data))

    return holds


def _known_values(policy: Policy, as_written: Iterable[str], extra: Iterable[str] = ()) -> set[str]:
    """The real values `run` can know: its env sources' (after --secrets-from, and ``as_written``),
    VAULT_* and BAO_* (tokens, secret ids), and ``extra`` (file sources read for the env file)."""
    names = {s.source.env for s in policy.secrets if s.source.kind == "env" and s.source.env} | set(as_written)
    values = {os.environ[n] for n in names if os.environ.get(n)}
    values |= {v for n, v in os.environ.items() if n.startswith(("VAULT_", "BAO_")) and v}
    return values | {v for v in extra if v}


def agent_env(
    policy: Policy, ca: Path, secret_values: Iterable[str] = (), as_written: frozenset[str] = frozenset()
) -> dict[str, str]:
    """CMD's environment: ours, without the variables secrets are read from (by the policy run
    and by the policy ``as_written``, before --secrets-from), VAULT_* and BAO_*, and any other
    variable holding a real value `run` knows (exported under another name too: red team 28),
    plus the per-run CA in the trust variables and the placeholders in each secret's agentEnv."""
    secret_sources = {s.source.env for s in policy.secrets if s.source.kind == "env"} | as_written
    holds = secret_holder(_known_values(policy, as_written, secret_values))
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in secret_sources and not name.startswith(("VAULT_", "BAO_")) and not holds(value)
    }
    for name in k.CA_ENV:
        env[name] = str(ca)
    for secret in policy.secrets:
        for name in secret.agent_env:
            env[name] = secret.placeholder
    return env
