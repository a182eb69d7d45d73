"""Hermetic networking for the test session.

As root, the whole pytest process moves into a private network and mount namespace at start-up:
only a loopback interface exists (nothing can reach any other address), /etc/hosts maps the test
names (api.openai.com, ...) to loopback stand-ins (for clients), and /etc/resolv.conf points at
127.0.0.1:53, where the session's nameserver answers the same names (the proxy never reads
/etc/hosts) and records every query, so tests can prove that a name was never asked about.
Subprocesses inherit all of it.
"""

from __future__ import annotations

import atexit
import os
import shutil

from sandgate.hermetic import setup_private_network, unshare_self
from tests.support.listeners import DnsSink

HOSTS = {
    "api.openai.com": "127.0.0.2",
    "echo.example.com": "127.0.0.3",
    "files.example.org": "127.0.0.4",
    "x.example.com": "127.0.0.5",
    "attacker.test": "127.0.0.6",
    "badtls.example.com": "127.0.0.8",
    "reflector.example.com": "127.0.0.9",
    "vault.example.com": "127.0.0.10",  # a stand-in answering on 8200, for the Vault client's name resolution  # tests/support/reflector.py: hostile, reflects the key everywhere
    # Allowed names that resolve to non-public addresses: never dialled (A09). Nothing routes
    # there in this namespace either.
    "internal.example.com": "10.1.2.3",
    "metadata.example.com": "169.254.169.254",
    "mapped.example.com": "::ffff:127.0.0.2",
}

_isolated = False
NAMESERVER: DnsSink | None = None  # the session's only resolver, once isolated


def isolate() -> bool:
    """Enter the private namespaces and start their nameserver; False when not root (network
    tests then skip)."""
    global _isolated, NAMESERVER
    if _isolated:
        return True
    if os.geteuid() != 0:
        return False
    unshare_self()
    netfiles = setup_private_network(HOSTS)
    atexit.register(shutil.rmtree, netfiles, True)
    NAMESERVER = DnsSink()
    atexit.register(NAMESERVER.close)
    _isolated = True
    return True
