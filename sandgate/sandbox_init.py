"""``sandgate _sandbox-init PLAN``: PID 1 of a ``sandgate run`` sandbox (network namespace or gVisor).

It does what the injector's init container and sidecar do in a pod, in that order: install
capture (``sandgate capture``, the proxy's UID 0 exempt, DNS blocked), start the proxy in
transparent mode behind the relay, then run CMD as an unprivileged UID with no_new_privs. CMD's
exit status becomes ours; SIGINT/SIGTERM go to CMD; the proxy is stopped after CMD, once
``--metrics-out`` (if asked) has its final scrape.

The plan is a JSON file written by ``sandgate run`` (see sandgate.run). It holds no secret: the
proxy reads its Vault token / secret variables from our environment, which CMD never gets.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

from sandgate.procs import (
    STOP_GRACE,
    SignalForwarder,
    die_with_parent,
    exit_code,
    relay_lines,
    set_pdeathsig,
    stop_process,
)


def say(msg: str) -> None:
    print(f"sandgate run: {msg}", file=sys.stderr, flush=True)


def _own_namespaces(forward: SignalForwarder, grace: float) -> int | None:
    """Network-namespace mode (gVisor has all this from runsc): a PID, mount and IPC namespace of
    the sandbox's own, so that CMD can see, signal, trace or read no process outside it (its user's
    shell holding the real key, say), and so that nothing CMD starts outlives the sandbox: when our
    PID 1 exits, the kernel kills every process in its namespace, whatever namespaces of its own
    (user, network) such a process has made.

    We fork: the child is PID 1 of the new namespace and carries on (None); this process stays
    outside, passes signals on and returns PID 1's status. If this process dies (even by SIGKILL),
    PID 1 gets SIGKILL; if it is told to stop (SIGTERM, or the kernel's PR_SET_PDEATHSIG when
    `run` dies), PID 1 gets the signal and ``grace`` seconds, then SIGKILL. Fails closed: no
    namespaces, no CMD (125)."""
    try:
        os.unshare(os.CLONE_NEWPID | os.CLONE_NEWNS | os.CLONE_NEWIPC)
    except OSError as e:
        say(f"cannot create the sandbox's PID, mount and IPC namespaces ({e.strerror}), not starting CMD")
        return 125
    alive_r, alive_w = os.pipe()  # PID 1 sees EOF on it once we are gone
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        os.close(alive_w)
        set_pdeathsig(signal.SIGKILL)
        if select.select([alive_r], [], [], 0)[0]:  # we died before the line above took effect
            os._exit(137)
        os.close(alive_r)
        return None
    os.close(alive_r)

    def on_signal(sig: int) -> None:
        os.kill(pid, sig)
        if sig in (signal.SIGINT, signal.SIGTERM) and not signal.getitimer(signal.ITIMER_REAL)[0]:
            signal.setitimer(signal.ITIMER_REAL, grace)

    signal.signal(signal.SIGALRM, lambda *_: os.kill(pid, signal.SIGKILL))
    forward.attach(on_signal)
    _, status = os.waitpid(pid, 0)  # returns once every process in the namespace is gone
    return exit_code(-os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status))


def _private_mounts(files: dict[str, str]) -> None:
    """In PID 1's own mount namespace: a /proc of the sandbox's PID namespace only, in which CMD sees
    only its own processes (hidepid=2: not the proxy's, not ours); no other procfs (it would show
    the host's processes); an empty /run; /etc/hosts and /etc/resolv.conf the sandbox's. (gVisor
    mode gets its mounts from the OCI spec.)"""
    subprocess.run(["mount", "--make-rprivate", "/"], check=True)
    with open("/proc/self/mounts") as f:
        others = [line.split()[1] for line in f if line.split()[2] == "proc" and line.split()[1] != "/proc"]
    for mountpoint in sorted(others, reverse=True):
        subprocess.run(["umount", "-l", mountpoint.replace("\\040", " ")], check=True)
    subprocess.run(["mount", "-t", "proc", "-o", "nosuid,nodev,noexec,hidepid=2", "proc", "/proc"], check=True)
    # The host's /run holds its system services' sockets (a resolver, the system bus), reachable by
    # path from any network namespace: a channel past the capture (red team 28). Ours is empty.
    for run in ("/run", "/var/run"):
        if os.path.isdir(run) and not os.path.islink(run):
            subprocess.run(["mount", "-t", "tmpfs", "-o", "nosuid,nodev,mode=755", "tmpfs", run], check=True)
    for dest, source in files.items():
        target = os.path.realpath(dest)  # (/etc/resolv.conf is often a link into /run, now empty)
        if not os.path.exists(target):
            os.makedirs(os.path.dirname(target), exist_ok=True)
            Path(target).touch()
        subprocess.run(["mount", "--bind", source, dest], check=True)


def drop_to(uid: int, gid: int) -> Any:
    no_user_namespaces = _no_user_namespaces()  # (made here: CMD's uid may not read the modules it needs)

    def preexec() -> None:
        import ctypes

        # A session of its own, without a controlling terminal: the user's terminal stays CMD's
        # stdin and stdout, but TIOCSTI into it (characters the user's shell reads as typed once
        # run returns, and runs outside the sandbox: red team 46) needs it to be CMD's own.
        # (Ctrl-C reaches run, which forwards it; /dev/tty does not open.)
        os.setsid()
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
        die_with_parent()  # (after: a change of uid or gid clears the parent-death signal)
        pr_set_no_new_privs = 38
        if ctypes.CDLL(None, use_errno=True).prctl(pr_set_no_new_privs, 1, 0, 0, 0) != 0:
            os._exit(126)
        try:
            no_user_namespaces.load()
        except Exception:  # (a filter the kernel refuses: CMD does not start)
            os._exit(126)
        try:
            os.unshare(os.CLONE_NEWUSER)
        except OSError:
            return  # (refused, as it must be)
        os._exit(126)  # fail closed: the filter did not hold

    return preexec


CLONE_NEWUSER = 0x10000000


def _no_user_namespaces() -> Any:
    """A seccomp filter, to load in CMD, that refuses it (and everything it starts) a user
    namespace, and entering another's: gVisor checks CAP_NET_ADMIN in the caller's own user
    namespace, so "root" in a new one rewrote the sandbox's netfilter tables and took the capture
    away for every process in it (red team 46). ``unshare`` and ``setns`` are refused whole (without
    a capability nothing else they do is open to CMD), ``clone`` with CLONE_NEWUSER; ``clone3``, whose
    flags a filter cannot read, answers ENOSYS, on which libc falls back to ``clone``. Syscalls of
    other ABIs (32-bit) kill the caller (libseccomp's default for an architecture not in the filter).
    Programs that sandbox themselves with user namespaces (bubblewrap, Chromium's sandbox) cannot
    do so under CMD."""
    import errno

    import pyseccomp as seccomp

    f = seccomp.SyscallFilter(seccomp.ALLOW)
    f.add_rule(seccomp.ERRNO(errno.EPERM), "unshare")
    f.add_rule(seccomp.ERRNO(errno.EPERM), "setns")
    f.add_rule(seccomp.ERRNO(errno.EPERM), "clone", seccomp.Arg(0, seccomp.MASKED_EQ, CLONE_NEWUSER, CLONE_NEWUSER))
    f.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
    return f


def main(plan_path: str) -> int:
    # Installed first: as PID 1 of a gVisor sandbox, a signal without a handler would be ignored.
    forward = SignalForwarder()
    plan = json.loads(Path(plan_path).read_text())
    if plan.get("own_namespaces"):
        outer = _own_namespaces(forward, float(plan.get("stop_grace", STOP_GRACE)))
        if outer is not None:
            return outer
        try:
            _private_mounts(plan.get("private_files") or {})
        except (OSError, subprocess.CalledProcessError) as e:
            say(f"cannot set up the sandbox's mounts ({e}), not starting CMD")
            return 125
    capture = subprocess.run(
        [sys.executable, "-P", "-m", "sandgate", "capture", "--proxy-uid", "0", "--proxy-port", str(plan["proxy_port"]),
         "--ports", ",".join(map(str, plan["ports"])), "--dns", "block"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if capture.returncode != 0:
        say(f"capture failed, not starting CMD:\n{capture.stderr.strip()}")
        return 125
    say(capture.stdout.strip().removeprefix("sandgate capture: "))
    from sandgate.dnsserver import DnsServer, sink

    DnsServer(sink(plan["sink"]))  # lives as long as we do
    proxy = subprocess.Popen(
        [sys.executable, "-P", "-m", "sandgate", "proxy", *plan["proxy_args"]],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, preexec_fn=die_with_parent,
    )  # fmt: skip
    try:
        assert proxy.stdout is not None
        line = proxy.stdout.readline().decode().strip()
        if not line.startswith("sandgate proxy ready"):
            proxy.wait(30)
            say(f"the proxy did not start (exit {proxy.returncode}), not starting CMD")
            return 125
        say(line)
        relay_lines(proxy.stdout, sys.stderr)  # its audit lines, unless --audit-log took them
        try:
            child = subprocess.Popen(
                plan["cmd"], env=plan["cmd_env"], cwd=plan["cwd"], preexec_fn=drop_to(plan["uid"], plan["gid"])
            )
        except OSError as e:
            say(f"cannot run {plan['cmd'][0]} in {plan['cwd']} as uid {plan['uid']}: {e.strerror}")
            return 127
        except subprocess.SubprocessError:  # (the switch of user in preexec_fn failed: red team 45)
            say(f"cannot run {plan['cmd'][0]} as uid {plan['uid']}, gid {plan['gid']}: the switch of user failed")
            return 127
        forward.attach(child.send_signal)
        rc = exit_code(child.wait())
        if plan.get("metrics_out"):
            scrape_metrics(plan["metrics_url"], Path(plan["metrics_out"]))
        return rc
    finally:
        stop_process(proxy)


def fetch_metrics(url: str) -> bytes:
    """``--metrics-out``: the proxy's final /metrics; a failure is said (and gives nothing), not fatal."""
    try:
        return bytes(urllib.request.urlopen(url, timeout=5).read())
    except OSError as e:
        say(f"--metrics-out: could not scrape the proxy: {e}")
        return b""


def scrape_metrics(url: str, out: Path) -> None:
    """The final scrape into ``out``, in the run's own directory (only root can write there)."""
    out.write_bytes(fetch_metrics(url))
