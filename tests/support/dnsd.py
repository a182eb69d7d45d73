"""``python -m tests.support.dnsd HOSTS_JSON``: a nameserver for a test network namespace (the proxy
never reads /etc/hosts), answering the names in HOSTS_JSON (name -> [addresses]) on 127.0.0.1:53.
Prints "dns ready" and serves until killed."""

from __future__ import annotations

import json
import signal
import sys

from sandgate.dnsserver import DnsServer, table

if __name__ == "__main__":
    server = DnsServer(table(json.loads(sys.argv[1])), ttl=0)
    print("dns ready", flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    server.close()
